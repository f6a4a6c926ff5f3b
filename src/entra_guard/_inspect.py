"""``entra-guard inspect``: explain, step by step, why the API accepts or refuses a token.

    entra-guard inspect < token.txt            # settings from ENTRA_* like the app
    entra-guard inspect --json --tenant-id ... --client-id ... "$TOKEN"

The inspector replays the very functions the middleware uses
(``entra_guard.validation``), in the same order, against metadata fetched the
same way (``MetadataCache`` over the client ``build_client`` makes), then
asks ``TokenValidator`` itself for the final code, so the verdict is exactly
what the API would answer. It prints the decoded header and claims (marked
untrusted until the signature verifies) but never the signature segment nor
the token itself.

Exit status: 0 valid, 1 rejected, 2 usage error or IdP unreachable
(``idp_unavailable``).

``--json`` prints one object (schema ``entra-guard.inspect/1``)::

    {
      "schema": "entra-guard.inspect/1",
      "valid": bool,
      "exit_code": 0 | 1 | 2,
      "code": str | null,          # the code the API would return (README "Codes")
      "status": int | null,        # its HTTP status (401/403/503)
      "detail": str | null,        # the API's "detail" text
      "hint": str | null,          # the usual fix, one line
      "error": str | null,         # usage/network problem (exit 2)
      "header": object | null,     # decoded JOSE header (never trusted)
      "claims": object | null,     # decoded payload
      "claims_trusted": bool,      # true once the signature verified
      "checks": [                  # in the order the middleware applies them
        {"name": "format" | "algorithm" | "key" | "signature" | "lifetime" |
                 "issuer" | "audience" | "scopes_or_roles" | "allowed_tenant",
         "result": "pass" | "fail" | "skipped",
         "reached": bool,          # false: the API stops before this check
         "code": str | null,       # failure code of this check
         "detail": str,
         "expected": any, "got": any}
      ],
      "settings": {...},           # the settings used (no secret)
      "metadata": {"discovery_url": str, "jwks_uri": str | null,
                   "issuers": {version: issuer}} | null
    }

Checks after the first failure are still evaluated where possible (on
untrusted claims if the signature did not verify) with ``reached: false``, so
one run shows every problem, but only the first one decides the code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from ._crypto import SigningKey
from ._errors import AuthError
from ._http import build_client
from ._metadata import MetadataCache, TenantMetadata
from ._settings import EntraSettings
from ._validation import (
    ParsedToken,
    TokenValidator,
    check_allowed_tenant,
    check_audience,
    check_issuer,
    check_lifetime,
    check_scopes_or_roles,
    decode_json_segment,
    parse_token,
    verify_signature,
)

SCHEMA = "entra-guard.inspect/1"
EXIT_VALID, EXIT_REJECTED, EXIT_ERROR = 0, 1, 2

CHECK_NAMES = (
    "format",
    "algorithm",
    "key",
    "signature",
    "lifetime",
    "issuer",
    "audience",
    "scopes_or_roles",
    "allowed_tenant",
)

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

_NO_KEY = SigningKey(kid=None, x5t=None, alg=None, issuer=None, fingerprint="")
_TIME_CLAIMS = ("exp", "nbf", "iat")


@dataclass
class Check:
    name: str
    result: str = "skipped"
    reached: bool = False
    code: str | None = None
    detail: str = ""
    expected: Any = None
    got: Any = None


@dataclass
class Report:
    valid: bool = False
    exit_code: int = EXIT_REJECTED
    code: str | None = None
    status: int | None = None
    detail: str | None = None
    hint: str | None = None
    error: str | None = None
    header: dict[str, Any] | None = None
    claims: dict[str, Any] | None = None
    claims_trusted: bool = False
    checks: list[Check] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **asdict(self)}


# -- the replay ------------------------------------------------------------------------


def normalize_token(raw: str) -> str:
    """Accept what people paste: surrounding whitespace, quotes, a ``Bearer`` prefix."""
    token = raw.strip().strip("\"'").strip()
    scheme, _, rest = token.partition(" ")
    if scheme.lower() == "bearer" and rest:
        token = rest.strip()
    return token


def _try_decode(segment: str | None) -> dict[str, Any] | None:
    if not segment:
        return None
    try:
        return decode_json_segment(segment, "segment")
    except AuthError:
        return None


def settings_summary(settings: EntraSettings) -> dict[str, Any]:
    return {
        "tenant_id": settings.tenant_id,
        "client_id": settings.client_id,
        "authority_host": settings.authority_host,
        "audiences": list(settings.audiences or ()),
        "allowed_tenants": list(settings.allowed_tenants),
        "accepted_algorithms": list(settings.accepted_algorithms),
        "accepted_token_versions": list(settings.accepted_token_versions),
        "clock_skew": settings.clock_skew,
        "allow_acl_tokens": settings.allow_acl_tokens,
    }


class _Replay:
    """Runs each rule once, recording a ``Check``; the first failure is "reached"."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.failed: AuthError | None = None

    def add(self, name: str, **fields: Any) -> Check:
        check = Check(name=name, reached=self.failed is None, **fields)
        self.report.checks.append(check)
        return check

    def run(self, name: str, rule: Callable[[], Any], **fields: Any) -> Any:
        check = self.add(name, **fields)
        try:
            value = rule()
        except AuthError as exc:
            self.fail(check, exc)
            return None
        check.result = "pass"
        return value

    def fail(self, check: Check, exc: AuthError) -> None:
        detail = f"{exc.detail}: {check.detail}" if check.name == "lifetime" else exc.detail
        check.result, check.code, check.detail = "fail", exc.code, detail
        if self.failed is None:
            self.failed = exc

    def skip(self, name: str, why: str) -> None:
        self.add(name, detail=why)


async def inspect_token(
    token: str,
    settings: EntraSettings,
    *,
    http_client: httpx.AsyncClient | None = None,
    now: float | None = None,
) -> Report:
    """Replay every validation rule on ``token``; never raises for a bad token."""
    now = time.time() if now is None else now
    token = normalize_token(token)
    segments = token.split(".")
    report = Report(settings=settings_summary(settings))
    report.header = _try_decode(segments[0])
    report.claims = _try_decode(segments[1]) if len(segments) > 1 else None
    replay = _Replay(report)
    algorithms = tuple(settings.accepted_algorithms)

    client = http_client if http_client is not None else build_client(settings)
    cache = MetadataCache(settings, client)
    try:
        # 1-2. shape and algorithm (one function in validation.py)
        parsed: ParsedToken | None = None
        try:
            parsed = parse_token(token, algorithms)
        except AuthError as exc:
            if exc.code == "unsupported_algorithm":
                replay.add("format", result="pass", detail="compact JWS with a JSON header")
                check = replay.add("algorithm", expected=list(algorithms))
                check.got = (report.header or {}).get("alg")
            else:
                check = replay.add("format")
                replay.add("algorithm", detail="not evaluated: the token could not be parsed")
            replay.fail(check, exc)
        else:
            replay.add("format", result="pass", detail="compact JWS with a JSON header")
            replay.add(
                "algorithm",
                result="pass",
                detail=f"{parsed.alg} is accepted",
                expected=list(algorithms),
                got=parsed.alg,
            )

        # 3. signing key, from the tenant's metadata exactly like the app
        key: SigningKey | None = None
        metadata_error: AuthError | None = None
        if parsed is not None:
            wanted = {"kid": parsed.kid, "x5t": parsed.x5t}
            check = replay.add("key", got=wanted)
            try:
                if parsed.kid is None and parsed.x5t is None:  # TokenValidator.validate's rule
                    raise AuthError("unknown_key", "The token header names no signing key ('kid')")
                key = await cache.signing_key(parsed.kid, parsed.x5t)
            except AuthError as exc:
                if exc.code == "idp_unavailable":
                    metadata_error = exc
                replay.fail(check, exc)
            else:
                check.result = "pass"
                check.detail = "found in the tenant's JWKS"
            if cache.current is not None:
                check.expected = sorted(cache.current.keys_by_kid)
        else:
            replay.skip("key", "not evaluated: the token could not be parsed")
        if cache.current is None and metadata_error is None:
            try:  # for expected-vs-got of the issuer, even when the API stops earlier
                await cache.get()
            except AuthError as exc:
                metadata_error = exc
        metadata = cache.current
        report.metadata = {
            "discovery_url": cache.discovery_url("2.0"),
            "jwks_uri": metadata.jwks_uri if metadata else None,
            "issuers": dict(metadata.issuers) if metadata else {},
        }

        # 4. signature: only now do the claims become trustworthy
        claims: Mapping[str, Any] | None = report.claims
        if parsed is not None and key is not None:
            verified = replay.run(
                "signature", lambda: verify_signature(parsed, key), detail="verifies"
            )
            if verified is not None:
                claims = verified
                report.claims = dict(verified)
                report.claims_trusted = True
        else:
            replay.skip("signature", "not evaluated: no signing key")

        _claim_checks(replay, claims, settings, metadata, key, now)

        # The API's own answer, from the validator itself (metadata is cached by now).
        if metadata_error is not None and replay.failed is metadata_error:
            verdict: AuthError | None = metadata_error
        else:
            try:
                await TokenValidator(settings, cache, clock=lambda: now).validate(token)
                verdict = None
            except AuthError as exc:
                verdict = exc
    finally:
        await cache.aclose()
        if http_client is None:
            await client.aclose()

    _verdict(report, verdict, settings, metadata_error)
    return report


def _claim_checks(
    replay: _Replay,
    claims: Mapping[str, Any] | None,
    settings: EntraSettings,
    metadata: TenantMetadata | None,
    key: SigningKey | None,
    now: float,
) -> None:
    """Rules 5-8 on the (verified, or else untrusted) claims."""
    if claims is None:
        for name in CHECK_NAMES[4:]:
            replay.skip(name, "not evaluated: the payload could not be decoded")
        return
    replay.run(
        "lifetime",
        lambda: check_lifetime(claims, now, settings.clock_skew),
        detail=_lifetime_detail(claims, now, settings.clock_skew),
        expected={"now": _iso(now), "clock_skew": settings.clock_skew},
        got={name: claims.get(name) for name in ("exp", "nbf") if name in claims},
    )
    tid = claims.get("tid")
    got_issuer = {"iss": claims.get("iss"), "tid": tid, "ver": claims.get("ver")}
    if metadata is None:
        replay.skip("issuer", "not evaluated: the tenant's metadata could not be fetched")
    else:
        fill = tid if isinstance(tid, str) else "{tenantid}"
        replay.run(
            "issuer",
            lambda: check_issuer(claims, metadata, key or _NO_KEY, settings),
            detail="matches the tenant's issuer",
            expected={v: i.replace("{tenantid}", fill) for v, i in metadata.issuers.items()},
            got=got_issuer,
        )
    replay.run(
        "audience",
        lambda: check_audience(claims, frozenset(settings.audiences or ())),
        detail="is this API",
        expected=list(settings.audiences or ()),
        got=claims.get("aud"),
    )
    replay.run(
        "scopes_or_roles",
        lambda: check_scopes_or_roles(claims, settings.allow_acl_tokens),
        detail="carries scp or roles" if not settings.allow_acl_tokens else "ACL tokens allowed",
        expected="scp or roles" + (" (not required: allow_acl_tokens)" * settings.allow_acl_tokens),
        got={"scp": claims.get("scp"), "roles": claims.get("roles")},
    )
    allowed = frozenset(settings.allowed_tenants)
    replay.run(
        "allowed_tenant",
        lambda: check_allowed_tenant(claims, allowed),
        detail="in the allow-list" if allowed else "no allow-list: every accepted tenant",
        expected=sorted(allowed) or None,
        got=tid,
    )


def _verdict(
    report: Report,
    verdict: AuthError | None,
    settings: EntraSettings,
    metadata_error: AuthError | None,
) -> None:
    if verdict is None:
        report.valid, report.exit_code = True, EXIT_VALID
        return
    report.code, report.status, report.detail = verdict.code, verdict.status_code, verdict.detail
    if verdict.code == "idp_unavailable":
        report.exit_code = EXIT_ERROR
        cause = verdict.__cause__ or (metadata_error.__cause__ if metadata_error else None)
        report.error = f"identity provider unreachable: {cause or verdict.detail}"
    else:
        report.exit_code = EXIT_REJECTED
    report.hint = hint_for(verdict, report, settings)


# -- hints -----------------------------------------------------------------------------


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
    code = error.code
    resource = _microsoft_resource(claims)
    scope_hint = f"request a scope of this API (api://{settings.client_id}/<scope> or /.default)"
    if resource and code in ("unknown_key", "invalid_signature", "invalid_audience"):
        return f"this token is for {resource} (aud={claims.get('aud')}), not your API: {scope_hint}"
    if code == "malformed_token":
        if "JWE" in error.detail:
            return (
                "an encrypted token: token encryption is configured on the app registration; "
                "entra-guard validates signed (JWS) access tokens only"
            )
        if "larger" in error.detail:
            return "the token exceeds 16 KiB: usually too many group claims; use app roles"
        return (
            "send the access token itself (header.payload.signature in base64url), "
            "not an authorization code, a refresh token or a truncated copy"
        )
    if code == "unsupported_algorithm":
        return (
            f"Entra ID signs access tokens with RS256; alg={header.get('alg')!r} means the "
            "token was not issued by Entra ID (or ENTRA_ACCEPTED_ALGORITHMS is too narrow)"
        )
    if code == "unknown_key":
        if "kid" not in header and "x5t" not in header:
            return "the header names no key (kid/x5t): not an Entra ID access token"
        cloud = _cloud_hint(claims, report)
        if cloud:
            return cloud
        return (
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
        if "exp" not in claims:
            return "the token has no 'exp': not an Entra ID access token"
        return (
            f"expired at {_iso(claims['exp'])}: get a new token (MSAL renews it silently); "
            f"the API allows {settings.clock_skew}s of clock skew"
        )
    if code == "token_not_yet_valid":
        return (
            f"valid from {_iso(claims.get('nbf'))} only: this machine's or the client's clock "
            f"is off by more than ENTRA_CLOCK_SKEW ({settings.clock_skew}s)"
        )
    if code == "invalid_issuer":
        return _issuer_hint(claims, settings, report)
    if code == "invalid_audience":
        accepted = ", ".join(settings.audiences or ())
        return (
            f"aud={claims.get('aud')!r} is another resource; accepted: {accepted}. The client "
            f"must {scope_hint}, or list your App ID URI in ENTRA_AUDIENCES"
        )
    if code == "missing_scope_or_role":
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
    if code == "tenant_not_allowed":
        return f"tid={claims.get('tid')} is not in ENTRA_ALLOWED_TENANTS; add it if intended"
    if code == "idp_unavailable":
        return (
            f"could not fetch {report.metadata['discovery_url'] if report.metadata else ''}: "
            "check ENTRA_TENANT_ID / ENTRA_AUTHORITY_HOST, the network, the proxy "
            "(ENTRA_HTTP_PROXY / HTTPS_PROXY) and the CA bundle (ENTRA_CA_BUNDLE)"
        )
    return error.detail


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


def _issuer_hint(claims: Mapping[str, Any], settings: EntraSettings, report: Report) -> str:
    iss, tid, ver = claims.get("iss"), claims.get("tid"), claims.get("ver")
    accepted = settings.accepted_token_versions
    if tid == MSA_TENANT_ID:
        return "a personal Microsoft account token (consumers tenant): not accepted by this API"
    if not isinstance(tid, str):
        return "the token has no usable 'tid': not an Entra ID work/school access token"
    if not settings.multi_tenant and tid != settings.tenant_id:
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


# -- rendering -------------------------------------------------------------------------


def _iso(ts: Any) -> str:
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return repr(ts)
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return repr(ts)


def _ago(delta: float) -> str:
    seconds = abs(int(delta))
    text = (
        f"{seconds}s"
        if seconds < 120
        else f"{seconds // 60}m"
        if seconds < 7200
        else f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    )
    return f"{text} ago" if delta < 0 else f"in {text}"


def _lifetime_detail(claims: Mapping[str, Any], now: float, skew: float) -> str:
    parts = []
    for name in ("exp", "nbf"):
        value = claims.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            parts.append(f"{name} {_iso(value)} ({_ago(value - now)})")
    return ", ".join(parts or ["no exp"]) + f"; clock skew {int(skew)}s"


_MARK = {"pass": "[ok]  ", "fail": "[FAIL]", "skipped": "[--]  "}


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _printable(text: str) -> str:
    """Token content is attacker-controlled: no terminal escape sequences reach the screen."""
    return "".join(c if c.isprintable() or c == "\n" else "?" for c in text)


def render_text(report: Report, out: TextIO) -> None:
    def w(text: str) -> None:
        out.write(_printable(text))

    if report.header is not None:
        w("Header (untrusted)\n")
        for name, value in report.header.items():
            w(f"  {name}: {_value(value)}\n")
    if report.claims is not None:
        trust = (
            "signature verified" if report.claims_trusted else "UNTRUSTED: signature not verified"
        )
        w(f"\nClaims ({trust})\n")
        for name, value in report.claims.items():
            extra = f"  ({_iso(value)})" if name in _TIME_CLAIMS else ""
            w(f"  {name}: {_value(value)}{extra}\n")
    w("\nChecks, in the order the API applies them\n")
    for check in report.checks:
        note = (
            "" if check.reached or check.result == "skipped" else "  (after the deciding failure)"
        )
        w(f"  {_MARK[check.result]} {check.name:<16} {check.detail}{note}\n")
        if check.result == "fail" or check.name in ("issuer", "audience"):
            if check.expected is not None:
                w(f"  {'':<6} {'':<16} expected: {_value(check.expected)}\n")
            if check.got is not None:
                w(f"  {'':<6} {'':<16} got:      {_value(check.got)}\n")
    w("\n")
    if report.valid:
        w("Verdict: VALID, the API accepts this token\n")
        return
    if report.code is not None and report.exit_code == EXIT_ERROR:
        w(f"Verdict: UNDECIDED, the API answers HTTP {report.status} code={report.code}\n")
        w(f"  {report.detail}\n")
    elif report.code is not None:
        w(f"Verdict: REJECTED, HTTP {report.status} code={report.code}\n")
        w(f"  {report.detail}\n")
    if report.error:
        w(f"Error: {report.error}\n")
    if report.hint:
        w(f"Hint: {report.hint}\n")


# -- command line ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "token",
        nargs="?",
        default="-",
        help="the access token, or '-' / nothing to read it from stdin (safer: no shell history)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("-v", "--verbose", action="store_true", help="show entra_guard logs")
    group = parser.add_argument_group("settings (default: the ENTRA_* environment, like the app)")
    flags: tuple[tuple[str, str, dict[str, Any]], ...] = (
        ("--tenant-id", "tenant_id", {}),
        ("--client-id", "client_id", {}),
        ("--authority-host", "authority_host", {}),
        ("--audience", "audiences", {"action": "append", "help": "repeatable"}),
        ("--allowed-tenant", "allowed_tenants", {"action": "append", "help": "repeatable"}),
        (
            "--accepted-token-version",
            "accepted_token_versions",
            {"action": "append", "choices": ["1.0", "2.0"]},
        ),
        ("--accepted-algorithm", "accepted_algorithms", {"action": "append"}),
        ("--clock-skew", "clock_skew", {"type": int}),
        ("--allow-acl-tokens", "allow_acl_tokens", {"action": "store_const", "const": True}),
        ("--http-timeout", "http_timeout", {"type": float}),
        ("--http-proxy", "http_proxy", {}),
        ("--ca-bundle", "ca_bundle", {}),
    )
    for flag, dest, options in flags:
        group.add_argument(flag, dest=dest, default=None, **options)


_SETTING_FIELDS = (
    "tenant_id",
    "client_id",
    "authority_host",
    "audiences",
    "allowed_tenants",
    "accepted_token_versions",
    "accepted_algorithms",
    "clock_skew",
    "allow_acl_tokens",
    "http_timeout",
    "http_proxy",
    "ca_bundle",
)


def settings_from_args(args: argparse.Namespace) -> EntraSettings:
    overrides = {
        name: getattr(args, name) for name in _SETTING_FIELDS if getattr(args, name) is not None
    }
    return EntraSettings(**overrides)


def _settings_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        if error["type"] == "missing":
            flag = "--" + name.replace("_", "-")
            lines.append(f"ENTRA_{name.upper()} (or {flag}) is required")
        else:
            lines.append(f"{name}: {error['msg']}")
    return "invalid settings: " + "; ".join(lines)


def _read_token(arg: str, stdin: TextIO) -> str | None:
    if arg != "-":
        return arg
    if stdin.isatty():
        return None
    return stdin.read()


def run(args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    """``entra-guard inspect`` with parsed ``args``; returns the exit status."""

    def usage(message: str) -> int:
        if args.json:
            report = Report(exit_code=EXIT_ERROR, error=message)
            stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
        stderr.write(f"entra-guard inspect: {message}\n")
        return EXIT_ERROR

    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        return usage(_settings_error(exc))
    except ValueError as exc:
        return usage(f"invalid settings: {exc}")
    raw = _read_token(args.token, stdin)
    if raw is None or not normalize_token(raw):
        return usage("no token: pass it as an argument or pipe it on stdin")

    package_logger = logging.getLogger("entra_guard")
    handler: logging.Handler = (
        logging.StreamHandler(stderr) if args.verbose else logging.NullHandler()
    )
    package_logger.addHandler(handler)
    previous_level = package_logger.level
    if args.verbose:
        package_logger.setLevel(logging.INFO)
    try:
        report = asyncio.run(inspect_token(raw, settings))
    except ValueError as exc:  # e.g. an unreadable CA bundle while building the client
        return usage(str(exc))
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(previous_level)

    if args.json:
        stdout.write(json.dumps(report.to_json(), indent=2, default=str) + "\n")
    else:
        render_text(report, stdout)
    return report.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="entra-guard inspect", description="Explain why a token is accepted or refused."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv), sys.stdin, sys.stdout, sys.stderr)


__all__ = ["SCHEMA", "Check", "Report", "hint_for", "inspect_token", "main", "run"]
