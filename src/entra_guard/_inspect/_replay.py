"""The replay: run the middleware's own rule table on one token, recording each rule.

Nothing here decides validity: the verdict is the first ``AuthError`` the
table raises, exactly as ``TokenValidator`` would raise it. The replay only
keeps going after that failure (with ``reached: false``) where a rule's inputs
exist, on the untrusted payload if the signature did not hold, and records
expected/got values for each rule.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from .._b2c import PolicyMetadata, token_policy
from .._errors import AuthError
from .._http import build_client
from .._metadata import MetadataCache, TenantMetadata
from .._settings import EntraSettings
from .._validation import RULES, Context, TokenValidator, calling_app, decode_json_segment
from ._hints import hint_for
from ._render import iso, lifetime_detail
from ._report import EXIT_ERROR, EXIT_REJECTED, EXIT_VALID, Check, Report


def normalize_token(raw: str) -> str:
    """Accept what people paste: surrounding whitespace, quotes, a ``Bearer`` prefix."""
    token = raw.strip().strip("\"'").strip()
    scheme, _, rest = token.partition(" ")
    if scheme.lower() == "bearer" and rest:
        token = rest.strip()
    return token


def _try_decode(segments: list[str], index: int) -> dict[str, Any] | None:
    """Best-effort display of a segment, even when the rules refuse the token."""
    if len(segments) <= index or not segments[index]:
        return None
    try:
        return decode_json_segment(segments[index], "segment")
    except AuthError:
        return None


def settings_summary(settings: EntraSettings) -> dict[str, Any]:
    return {
        "tenant_id": settings.tenant_id,
        "client_id": settings.client_id,
        "authority_host": settings.authority_host,
        "audiences": list(settings.audiences or ()),
        "allowed_tenants": list(settings.allowed_tenants),
        "allowed_client_apps": list(settings.allowed_client_apps),
        "accepted_algorithms": list(settings.accepted_algorithms),
        "accepted_token_versions": list(settings.accepted_token_versions),
        "clock_skew": settings.clock_skew,
        "allow_acl_tokens": settings.allow_acl_tokens,
        "b2c_policies": list(settings.b2c_policies),
    }


# -- what each rule shows: detail on success, expected and got (keyed by rule name) ---------

Explained = tuple[str, Any, Any]


def _format(v: TokenValidator, ctx: Context) -> Explained:
    return "compact JWS, canonical base64url, JSON header and payload", None, None


def _algorithm(v: TokenValidator, ctx: Context) -> Explained:
    alg = (ctx.header or {}).get("alg")
    return f"{ctx.alg} is accepted", list(v.algorithms), alg


def _policy(v: TokenValidator, ctx: Context) -> Explained:
    if v.policies is None:
        return "not a B2C API: the tenant's keys", None, None
    got = token_policy(ctx.payload or {})
    return f"B2C policy {ctx.policy}: its keys", list(v.settings.b2c_policies), got


def _policy_match(v: TokenValidator, ctx: Context) -> Explained:
    if v.policies is None:
        return "not a B2C API", None, None
    got = token_policy(ctx.claims or {})
    return "names the policy whose keys verified it", ctx.policy, got


def _key(v: TokenValidator, ctx: Context) -> Explained:
    known = sorted(ctx.metadata.keys_by_kid) if ctx.metadata else None
    return "found in the tenant's JWKS", known, {"kid": ctx.kid, "x5t": ctx.x5t}


def _signature(v: TokenValidator, ctx: Context) -> Explained:
    return "verifies", None, None


def _lifetime(v: TokenValidator, ctx: Context) -> Explained:
    claims = ctx.claims or {}
    got = {name: claims.get(name) for name in ("exp", "nbf") if name in claims}
    detail = lifetime_detail(claims, ctx.now, v.clock_skew)
    return detail, {"now": iso(ctx.now), "clock_skew": v.clock_skew}, got


def _issuer(v: TokenValidator, ctx: Context) -> Explained:
    claims = ctx.claims or {}
    tid = claims.get("tid")
    fill = tid if isinstance(tid, str) else "{tenantid}"
    issuers = ctx.metadata.issuers if ctx.metadata else {}
    expected = {version: i.replace("{tenantid}", fill) for version, i in issuers.items()}
    got = {"iss": claims.get("iss"), "tid": tid, "ver": claims.get("ver")}
    return "matches the tenant's issuer", expected, got


def _audience(v: TokenValidator, ctx: Context) -> Explained:
    return "is this API", sorted(v.audiences), (ctx.claims or {}).get("aud")


def _scopes_or_roles(v: TokenValidator, ctx: Context) -> Explained:
    claims = ctx.claims or {}
    acl = v.settings.allow_acl_tokens
    detail = "ACL tokens allowed" if acl else "carries scp or roles"
    expected = "scp or roles" + (" (not required: allow_acl_tokens)" if acl else "")
    return detail, expected, {"scp": claims.get("scp"), "roles": claims.get("roles")}


def _allowed_tenant(v: TokenValidator, ctx: Context) -> Explained:
    allowed = sorted(v.allowed_tenants)
    detail = "in the allow-list" if allowed else "no allow-list: every accepted tenant"
    return detail, allowed or None, (ctx.claims or {}).get("tid")


def _allowed_client_app(v: TokenValidator, ctx: Context) -> Explained:
    allowed = sorted(v.allowed_client_apps)
    detail = "in the allow-list" if allowed else "no allow-list: every client app"
    return detail, allowed or None, calling_app(ctx.claims or {})


EXPLAIN: Mapping[str, Callable[[TokenValidator, Context], Explained]] = {
    "format": _format,
    "algorithm": _algorithm,
    "policy": _policy,
    "key": _key,
    "signature": _signature,
    "lifetime": _lifetime,
    "issuer": _issuer,
    "policy_match": _policy_match,
    "audience": _audience,
    "scopes_or_roles": _scopes_or_roles,
    "allowed_tenant": _allowed_tenant,
    "allowed_client_app": _allowed_client_app,
}

#: Why a rule was not evaluated, by the first ``Context`` field it lacks.
_NOT_EVALUATED = {
    "header": "not evaluated: the token could not be parsed",
    "alg": "not evaluated: the algorithm is not accepted",
    "source": "not evaluated: the token names no configured B2C policy",
    "key": "not evaluated: no signing key",
    "payload": "not evaluated: the payload could not be decoded",
    "claims": "not evaluated: the payload could not be decoded",
    "metadata": "not evaluated: the tenant's metadata could not be fetched",
}


async def inspect_token(
    token: str,
    settings: EntraSettings,
    *,
    http_client: httpx.AsyncClient | None = None,
    now: float | None = None,
) -> Report:
    """Run ``RULES`` on ``token`` like the middleware; never raises for a bad token."""
    now = time.time() if now is None else now
    token = normalize_token(token)
    segments = token.split(".")
    report = Report(settings=settings_summary(settings))
    report.header, report.claims = _try_decode(segments, 0), _try_decode(segments, 1)
    client = http_client if http_client is not None else build_client(settings)
    policies = PolicyMetadata(settings, client) if settings.is_b2c else None
    cache = policies.primary if policies is not None else MetadataCache(settings, client)
    validator = TokenValidator(settings, cache, clock=lambda: now, policies=policies)
    ctx = Context(token, now)
    try:
        for rule in RULES:
            if "claims" in rule.needs and ctx.claims is None and ctx.payload is not None:
                ctx.claims = ctx.payload  # past a failed key/signature: shown as untrusted
            check = Check(name=rule.name, reached=report.failure is None)
            report.checks.append(check)
            missing = next((n for n in rule.needs if getattr(ctx, n) is None), None)
            if missing is not None:
                check.detail = _NOT_EVALUATED[missing]
                continue
            try:
                outcome = rule.check(validator, ctx)
                if outcome is not None:
                    await outcome
            except AuthError as exc:
                _fail(report, check, rule.name, exc, validator, ctx)
            else:
                check.result = "pass"
                check.detail, check.expected, check.got = EXPLAIN[rule.name](validator, ctx)
                if rule.name == "signature" and report.failure is None:
                    report.claims_trusted = True
            if rule.name == "key" and ctx.metadata is None:
                ctx.metadata = await _load_metadata(ctx.source or cache)
                check.expected = EXPLAIN["key"](validator, ctx)[1]
        report.metadata = {
            "discovery_url": (ctx.source or cache).discovery_url("2.0"),
            "jwks_uri": ctx.metadata.jwks_uri if ctx.metadata else None,
            "issuers": dict(ctx.metadata.issuers) if ctx.metadata else {},
        }
    finally:
        for each in policies if policies is not None else (cache,):
            await each.aclose()
        if http_client is None:
            await client.aclose()
    if report.claims_trusted and ctx.claims is not None:
        report.claims = dict(ctx.claims)
    _verdict(report)
    if report.failure is not None:
        report.hint = hint_for(report.failure, report, settings)
    return report


def _fail(
    report: Report,
    check: Check,
    rule: str,
    exc: AuthError,
    validator: TokenValidator,
    ctx: Context,
) -> None:
    detail, check.expected, check.got = EXPLAIN[rule](validator, ctx)
    check.result, check.code = "fail", exc.code
    check.detail = f"{exc.detail}: {detail}" if rule == "lifetime" else exc.detail
    if report.failure is None:
        report.failure, report.failed_rule = exc, rule


async def _load_metadata(cache: MetadataCache) -> TenantMetadata | None:
    """Metadata for expected-vs-got of the issuer, even when the key rule did not pass
    (its failure, if any, is already the key rule's)."""
    try:
        return await cache.get()
    except AuthError:
        return None


def _verdict(report: Report) -> None:
    failure = report.failure
    if failure is None:
        report.valid, report.exit_code = True, EXIT_VALID
        return
    report.code, report.status, report.detail = failure.code, failure.status_code, failure.detail
    if failure.code == "idp_unavailable":
        report.exit_code = EXIT_ERROR
        report.error = f"identity provider unreachable: {failure.__cause__ or failure.detail}"
    else:
        report.exit_code = EXIT_REJECTED
