"""The usual fix for a refusal, in one line, chosen by rule name, code and ``reason``.

Hints read what the token says about itself (``aud``, ``tid``, header fields)
to name the likely mistake; they never decide anything and never look at the
wording of an error's ``detail``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .._errors import AuthError
from .._settings import EntraSettings
from ._render import iso
from ._report import Report

#: ``aud`` values of first-party Microsoft APIs (tokens for them are not for you).
MICROSOFT_RESOURCES = {
    "00000003-0000-0000-c000-000000000000": "Microsoft Graph",
    "https://graph.microsoft.com": "Microsoft Graph",
    "00000002-0000-0000-c000-000000000000": "Azure AD Graph (retired)",
    "https://graph.windows.net": "Azure AD Graph (retired)",
    "797f4846-ba00-4fd7-ba43-dac1f8f63013": "Azure Resource Manager",
    "https://management.azure.com": "Azure Resource Manager",
    "https://management.core.windows.net": "Azure Resource Manager",
}
#: ``tid`` of personal Microsoft accounts.
MSA_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"

#: ``malformed_token`` hints by ``AuthError.reason``.
_MALFORMED = {
    "jwe": (
        "an encrypted token: token encryption is configured on the app registration; "
        "entra-guard validates signed (JWS) access tokens only"
    ),
    "too_large": "the token exceeds 16 KiB: usually too many group claims; use app roles",
    "non_canonical_base64": (
        "a segment is not in canonical base64url (unused bits set): the token was "
        "re-encoded or altered on its way; send it exactly as Entra ID issued it"
    ),
    "non_ascii": "the token contains non-ASCII characters: it was altered or mis-copied",
    "crit": "the header lists critical extensions ('crit'): not an Entra ID access token",
}


def _audiences(aud: Any) -> list[str]:
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []


def _microsoft_resource(claims: Mapping[str, Any]) -> str | None:
    for aud in _audiences(claims.get("aud")):
        name = MICROSOFT_RESOURCES.get(aud.rstrip("/").lower())
        if name is not None:
            return name
    return None


def _host(url: Any) -> str | None:
    return urlsplit(url).hostname if isinstance(url, str) else None


def hint_for(error: AuthError, report: Report, settings: EntraSettings) -> str:
    """The usual fix for ``error``, in one line, from what the token says about itself."""
    claims: Mapping[str, Any] = report.claims or {}
    header: Mapping[str, Any] = report.header or {}
    code, reason = error.code, error.reason
    resource = _microsoft_resource(claims)
    scope_hint = f"request a scope of this API (api://{settings.client_id}/<scope> or /.default)"
    if resource and code in ("unknown_key", "invalid_signature", "invalid_audience"):
        return f"this token is for {resource} (aud={claims.get('aud')}), not your API: {scope_hint}"
    if code == "malformed_token":
        return _MALFORMED.get(reason or "") or (
            "send the access token itself (header.payload.signature in base64url), "
            "not an authorization code, a refresh token or a truncated copy"
        )
    if code == "unsupported_algorithm":
        return (
            f"Entra ID signs access tokens with RS256; alg={header.get('alg')!r} means the "
            "token was not issued by Entra ID (or ENTRA_ACCEPTED_ALGORITHMS is too narrow)"
        )
    if code == "unknown_key":
        if reason == "no_kid":
            return "the header names no key (kid/x5t): not an Entra ID access token"
        return _cloud_hint(claims, report) or (
            "the tenant does not publish this kid: the token comes from another tenant or "
            "cloud, or is signed with an app-specific key (claims mapping)"
        )
    if code == "invalid_signature":
        if "nonce" in header:
            return (
                "the header has a 'nonce': a Microsoft Graph token, which only Graph can "
                f"validate; {scope_hint}"
            )
        return "the token was altered, or signed by a key other than the one its kid names"
    if code == "token_expired":
        if reason == "no_exp":
            return "the token has no 'exp': not an Entra ID access token"
        return (
            f"expired at {iso(claims.get('exp'))}: get a new token (MSAL renews it silently); "
            f"the API allows {settings.clock_skew}s of clock skew"
        )
    if code == "token_not_yet_valid":
        return (
            f"valid from {iso(claims.get('nbf'))} only: this machine's or the client's clock "
            f"is off by more than ENTRA_CLOCK_SKEW ({settings.clock_skew}s)"
        )
    if code == "invalid_issuer":
        if reason == "policy":
            return _policy_hint(claims, settings)
        if reason == "unknown_authority":
            return (
                f"iss={claims.get('iss')!r} is none of this API's authorities: add an "
                "EntraAuth for it to EntraAuthMiddleware(auth=[...]), or sign in with one of them"
            )
        return _issuer_hint(claims, settings, report)
    if code == "invalid_audience":
        accepted = ", ".join(settings.audiences or ())
        return (
            f"aud={claims.get('aud')!r} is another resource; accepted: {accepted}. The client "
            f"must {scope_hint}, or list your App ID URI in ENTRA_AUDIENCES"
        )
    if code == "missing_scope_or_role":
        return _kind_hint(claims)
    if code == "tenant_not_allowed":
        return f"tid={claims.get('tid')} is not in ENTRA_ALLOWED_TENANTS; add it if intended"
    if code == "client_not_allowed":
        app = claims.get("azp", claims.get("appid"))
        return f"the calling app {app!r} is not in ENTRA_ALLOWED_CLIENT_APPS; add it if intended"
    if code == "idp_unavailable":
        return (
            f"could not fetch {report.metadata['discovery_url'] if report.metadata else ''}: "
            "check ENTRA_TENANT_ID / ENTRA_AUTHORITY_HOST, the network, the proxy "
            "(ENTRA_HTTP_PROXY / HTTPS_PROXY) and the CA bundle (ENTRA_CA_BUNDLE)"
        )
    return error.detail


def _kind_hint(claims: Mapping[str, Any]) -> str:
    if claims.get("idtyp") == "app" or claims.get("azpacr") in ("1", "2"):
        return (
            "an app-only token without roles: assign an app role to the client app "
            "(API permissions -> Application permissions, admin consent)"
        )
    if "nonce" in claims or "at_hash" in claims or "c_hash" in claims:
        return "this is an ID token: send the access token for the API instead"
    return (
        "no scp/roles (an ID token, or nothing consented): send an access token for the "
        "API, or set ENTRA_ALLOW_ACL_TOKENS=true and check callers yourself"
    )


def _cloud_hint(claims: Mapping[str, Any], report: Report) -> str | None:
    """A token from another cloud: its ``iss`` host is none of the tenant's issuer hosts."""
    issuers = (report.metadata or {}).get("issuers") or {}
    ours = {_host(issuer) for issuer in issuers.values()} - {None}
    theirs = _host(claims.get("iss"))
    if not ours or theirs is None or theirs in ours:
        return None
    return (
        f"issued by {theirs}, but this API trusts {', '.join(sorted(str(h) for h in ours))}: "
        "set ENTRA_AUTHORITY_HOST to the token's cloud (national clouds differ)"
    )


def _policy_hint(claims: Mapping[str, Any], settings: EntraSettings) -> str:
    """B2C: the token's ``tfp``/``acr`` is not a configured policy (or not its signer's)."""
    named = claims.get("tfp", claims.get("acr"))
    configured = ", ".join(settings.b2c_policies)
    if not isinstance(named, str):
        return f"the token names no B2C policy ('tfp'/'acr'); ENTRA_B2C_POLICIES is {configured}"
    return (
        f"the token's B2C policy {named!r} is not in ENTRA_B2C_POLICIES ({configured}): add "
        "the user flow, or sign in through one of the configured ones"
    )


def _issuer_hint(claims: Mapping[str, Any], settings: EntraSettings, report: Report) -> str:
    iss, tid, ver = claims.get("iss"), claims.get("tid"), claims.get("ver")
    accepted = settings.accepted_token_versions
    if tid == MSA_TENANT_ID:
        return "a personal Microsoft account token (consumers tenant): not accepted by this API"
    if tid is None and settings.is_b2c:
        return _cloud_hint(claims, report) or (
            "the iss claim does not match the B2C policy's metadata issuer: check "
            "ENTRA_AUTHORITY_HOST and ENTRA_TENANT_ID (the token's tenant and b2clogin host)"
        )
    if not isinstance(tid, str):
        return "the token has no usable 'tid': not an Entra ID work/school access token"
    if not settings.multi_tenant and not settings.tenant_is_domain and tid != settings.tenant_id:
        return (
            f"issued by tenant {tid}, but ENTRA_TENANT_ID is {settings.tenant_id}: sign in to "
            "the right tenant, or make the API multi-tenant (ENTRA_TENANT_ID=organizations "
            "with ENTRA_ALLOWED_TENANTS)"
        )
    is_v1 = ver == "1.0" or (isinstance(iss, str) and iss.startswith("https://sts."))
    if is_v1 and "1.0" not in accepted:
        return (
            "token has ver 1.0 (v1 issuer): the app registration's "
            "accessTokenAcceptedVersion is null; set it to 2 in the manifest, or accept v1 "
            "tokens (ENTRA_ACCEPTED_TOKEN_VERSIONS=1.0,2.0)"
        )
    if not is_v1 and ver == "2.0" and "2.0" not in accepted:
        return "token has ver 2.0 but only v1 is accepted: add 2.0 to ENTRA_ACCEPTED_TOKEN_VERSIONS"
    return _cloud_hint(claims, report) or (
        "the iss/tid/ver claims do not match the tenant's metadata issuer for this tid"
    )
