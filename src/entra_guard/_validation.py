"""Token validation: one ordered table of named rules (docs/security.md).

``RULES`` is the only place the order and the text of the rules live.
``TokenValidator`` runs it for the middleware; ``entra-guard inspect`` runs the
very same table (docs/troubleshooting.md "`entra-guard inspect`") and only adds expected/got
values and a hint per rule name, so the two can never disagree.

The rules share a small ``Context``: ``format`` decodes all three segments
strictly (the payload is decoded but not trusted), ``key`` picks the signing
key, ``signature`` verifies it and only then copies the payload into
``claims``, which every later rule reads. No claim is used for any decision or
look-up before the signature holds, but one: a B2C token's ``tfp``/``acr`` picks
which *configured* policy's keys check it (``policy``), and ``policy_match``
confirms it once the signature holds (docs/customer-identities.md).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from ._b2c import PolicyMetadata, token_policy
from ._crypto import NonCanonicalBase64, SigningKey, b64url_decode
from ._errors import AuthError, ErrorCode
from ._metadata import MetadataCache, TenantMetadata
from ._settings import GUID_RE, EntraSettings

#: Largest token we look at (docs/security.md, step 1); bigger ones are refused unparsed.
MAX_TOKEN_LENGTH = 16 * 1024


class Context:
    """What the rules learn about one token, in the order they learn it.

    ``payload`` is decoded by ``format`` but stays untrusted; ``claims`` is set
    by ``signature`` once the signature holds (the inspector may set it to the
    untrusted payload to show later problems, marked as such).
    """

    __slots__ = (
        "alg",
        "claims",
        "expires_at",
        "header",
        "issuer",
        "key",
        "kid",
        "metadata",
        "now",
        "payload",
        "policy",
        "signature",
        "signing_input",
        "source",
        "tenant_id",
        "token",
        "version",
        "x5t",
    )

    def __init__(self, token: str, now: float) -> None:
        self.token = token
        self.now = now
        self.header: dict[str, Any] | None = None
        self.alg: str | None = None
        self.kid: str | None = None
        self.x5t: str | None = None
        self.signing_input = b""
        self.signature = b""
        self.payload: dict[str, Any] | None = None
        self.key: SigningKey | None = None
        self.metadata: TenantMetadata | None = None
        self.claims: dict[str, Any] | None = None
        self.expires_at = 0.0
        self.version = ""
        #: The metadata the key is looked up in: the tenant's, or the B2C policy's.
        self.source: MetadataCache | None = None
        #: The configured B2C policy the token names (``None`` outside B2C).
        self.policy: str | None = None
        #: Set by ``issuer``: the tenant GUID (``tid``, or the issuer's for B2C) and ``iss``.
        self.tenant_id: str | None = None
        self.issuer: str | None = None


class ValidatedToken(NamedTuple):
    """Claims that passed every rule, and what they were checked against (a named tuple:
    built once per fresh token, where a frozen dataclass costs a ``__setattr__`` a field)."""

    #: The payload decoded for this token alone (no copy is shared with anything else).
    claims: dict[str, Any]
    version: str
    key: SigningKey
    #: ``exp`` as a Unix timestamp.
    expires_at: float
    #: The tenant GUID (the ``tid`` claim, or the issuer's when B2C leaves it out).
    tenant_id: str
    issuer: str
    #: The B2C policy (as configured), ``None`` outside B2C.
    policy: str | None = None


def _malformed(detail: str, reason: str) -> AuthError:
    return AuthError("malformed_token", detail, reason=reason)


# -- strict JSON -------------------------------------------------------------------------


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        # Two parsers could read two different values (IdM IDX40011 rejects these too).
        raise ValueError("duplicate member")
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN / Infinity are Python extensions


#: Built once: ``json.loads(..., object_pairs_hook=...)`` would build a decoder per call.
_JSON_DECODER = json.JSONDecoder(
    object_pairs_hook=_object_without_duplicates, parse_constant=_no_constants
)


def decode_json_segment(segment: str, what: str) -> dict[str, Any]:
    """A base64url (canonical) JSON object, strictly; ``AuthError`` malformed_token else."""
    try:
        raw = b64url_decode(segment)
    except NonCanonicalBase64 as exc:
        raise _malformed(
            f"The token {what} is not canonical base64url", "non_canonical_base64"
        ) from exc
    except ValueError as exc:
        raise _malformed(f"The token {what} is not base64url-encoded JSON", "not_base64") from exc
    try:
        # What json.loads does with bytes (UTF-8/16/32 detection), minus the set-up; "{" then
        # a non-zero byte is what detect_encoding answers "utf-8" for (no BOM, no UTF-16/32).
        encoding = "utf-8" if raw[:1] == b"{" and raw[1:2] != b"\0" else json.detect_encoding(raw)
        value = _JSON_DECODER.decode(raw.decode(encoding, "surrogatepass"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _malformed(f"The token {what} is not base64url-encoded JSON", "not_json") from exc
    if not isinstance(value, dict):
        raise _malformed(f"The token {what} is not a JSON object", "not_json_object")
    return value


#: Header segments remembered per validator (a tenant's tokens share a handful of headers).
HEADER_CACHE_SIZE = 64
_HEADER_CACHE_MAX_SEGMENT = 512
_SCALARS = (str, int, float, bool, type(None))


def _decode_header(segment: str, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``decode_json_segment(segment, "header")``, memoized on the exact segment text.

    Only successful decodes of short, flat headers (scalar values, as Entra's
    ``typ``/``alg``/``kid``/``x5t``) are kept, and callers get a copy, so the
    result is the same as a fresh parse; every rule on it still runs per token.
    """
    cached = cache.get(segment)
    if cached is not None:
        return dict(cached)
    header = decode_json_segment(segment, "header")
    if len(segment) <= _HEADER_CACHE_MAX_SEGMENT and all(
        isinstance(value, _SCALARS) for value in header.values()
    ):
        if len(cache) >= HEADER_CACHE_SIZE:
            cache.clear()
        cache[segment] = dict(header)
    return header


_JWE = "Encrypted (JWE) tokens are not accepted; send a signed access token"


# -- the rules -----------------------------------------------------------------------------


def rule_format(v: TokenValidator, ctx: Context) -> None:
    """Size, ASCII, three segments, each one canonical base64url; header and payload JSON."""
    token = ctx.token
    if len(token) > MAX_TOKEN_LENGTH:
        raise _malformed(f"The token is larger than {MAX_TOKEN_LENGTH} bytes", "too_large")
    if not token.isascii():  # before anything encodes it: lone surrogates end here
        raise _malformed("The token contains non-ASCII characters", "non_ascii")
    parts = token.split(".")
    if len(parts) == 5:
        raise _malformed(_JWE, "jwe")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise _malformed("The token is not a compact JWS (header.payload.signature)", "not_jws")
    header_segment, payload_segment, signature_segment = parts
    header = _decode_header(header_segment, v.header_cache)
    if "enc" in header:
        raise _malformed(_JWE, "jwe")
    if "crit" in header:
        raise _malformed(
            "The token header lists critical extensions this API does not support", "crit"
        )
    kid, x5t = header.get("kid"), header.get("x5t")
    if (kid is not None and not isinstance(kid, str)) or (
        x5t is not None and not isinstance(x5t, str)
    ):
        raise _malformed("The token header's 'kid'/'x5t' must be strings", "kid_type")
    ctx.header, ctx.kid, ctx.x5t = header, kid, x5t
    # Decoded now so that a broken payload is malformed whatever the header names; it is
    # not trusted (nor read) before the signature rule. Already set: the several-authorities
    # router decoded this very segment with the same function (``validate(payload=...)``).
    if ctx.payload is None:
        ctx.payload = decode_json_segment(payload_segment, "payload")
    try:
        ctx.signature = b64url_decode(signature_segment)
    except NonCanonicalBase64 as exc:
        raise _malformed(
            "The token signature is not canonical base64url", "non_canonical_base64"
        ) from exc
    except ValueError as exc:
        raise _malformed("The token signature is not base64url", "not_base64") from exc
    ctx.signing_input = token[: len(header_segment) + 1 + len(payload_segment)].encode("ascii")


def rule_algorithm(v: TokenValidator, ctx: Context) -> None:
    """``alg`` in the allow-list; the detail never repeats the token's own value."""
    assert ctx.header is not None
    alg = ctx.header.get("alg")
    if not isinstance(alg, str) or alg not in v.algorithms:
        raise AuthError(
            "unsupported_algorithm",
            f"The token's algorithm is not accepted (allowed: {', '.join(v.algorithms)})",
            reason="alg",
        )
    ctx.alg = alg


def rule_policy(v: TokenValidator, ctx: Context) -> None:
    """Where the keys come from: the tenant's metadata, or (B2C) the metadata of the
    configured policy the *unverified* ``tfp``/``acr`` names. Routing only, like the
    several-authorities ``iss``: a policy that is not configured is refused, never
    fetched (docs/customer-identities.md)."""
    if v.policies is None:
        ctx.source = v.metadata
        return
    cache = v.policies.get(token_policy(ctx.payload or {}))
    if cache is None:
        raise AuthError(
            "invalid_issuer",
            "The token's policy ('tfp'/'acr') is not one of this API's B2C policies",
            reason="policy",
        )
    ctx.source, ctx.policy = cache, cache.policy


async def rule_key(v: TokenValidator, ctx: Context) -> None:
    """The signing key named by ``kid`` (or ``x5t``) among the tenant's (or the B2C
    policy's) published keys."""
    if ctx.kid is None and ctx.x5t is None:
        raise AuthError(
            "unknown_key", "The token header names no signing key ('kid')", reason="no_kid"
        )
    source = ctx.source
    assert source is not None
    key = source.known_key(ctx.kid, ctx.x5t)
    ctx.key = key if key is not None else await source.signing_key(ctx.kid, ctx.x5t)
    ctx.metadata = source.current


def rule_signature(v: TokenValidator, ctx: Context) -> None:
    """Only once this holds does the payload become the claims."""
    key, alg = ctx.key, ctx.alg
    assert key is not None and alg is not None
    if not ctx.signature or not key.verify(alg, ctx.signing_input, ctx.signature):
        raise AuthError("invalid_signature", "The token signature does not verify")
    ctx.claims = ctx.payload


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _malformed(f"The '{name}' claim is not a number", "claim_type")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _malformed(f"The '{name}' claim is out of range", "claim_range")
    return number


def rule_lifetime(v: TokenValidator, ctx: Context) -> None:
    """``exp`` is required; ``exp``/``nbf`` are compared with ``clock_skew`` of leeway."""
    claims, now, skew = ctx.claims, ctx.now, v.clock_skew
    assert claims is not None
    exp = _number(claims, "exp")
    if exp is None:
        raise AuthError("token_expired", "The token has no 'exp' claim", reason="no_exp")
    if now > exp + skew:
        raise AuthError("token_expired", "The token has expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and now + skew < nbf:
        raise AuthError("token_not_yet_valid", "The token is not valid yet ('nbf')")
    ctx.expires_at = exp


def rule_issuer(v: TokenValidator, ctx: Context) -> None:
    """``iss`` equals the metadata issuer for the token's ``tid``; sets the version."""
    claims, metadata = ctx.claims, ctx.metadata
    assert claims is not None and metadata is not None
    iss, tid = claims.get("iss"), claims.get("tid")
    if not isinstance(iss, str) or not iss:
        raise AuthError("invalid_issuer", "The token has no 'iss' claim", reason="no_iss")
    if tid is None and v.is_b2c:
        tid = metadata.tenant_id  # B2C tokens may lack tid: the issuer names the tenant
    if not isinstance(tid, str) or not GUID_RE.fullmatch(tid):
        raise AuthError(
            "invalid_issuer", "The token's 'tid' claim is missing or not a GUID", reason="tid"
        )
    if not v.multi_tenant and tid != v.expected_tenant(metadata):
        raise AuthError(
            "invalid_issuer", "The token was issued for another tenant", reason="other_tenant"
        )
    version = next(
        (
            name
            for name, template in metadata.issuers.items()
            if template.replace("{tenantid}", tid) == iss
        ),
        None,
    )
    if version is None:
        raise AuthError(
            "invalid_issuer", "The token's issuer is not this API's tenant issuer", reason="iss"
        )
    ver = claims.get("ver")
    # B2C access tokens say "1.0" although they come from the v2 endpoints.
    if ver is not None and ver != version and not (v.is_b2c and ver == "1.0"):
        raise AuthError(
            "invalid_issuer", "The token's 'ver' does not match its issuer", reason="ver"
        )
    key = ctx.key  # None only when the inspector replays past a failed key rule
    if key is not None and key.issuer is not None:
        # A key scoped to one tenant must not sign for another (Entra signing-key issuer rule):
        # the tid must be a path segment of the key's issuer once {tenantid} is filled in.
        segments = v.issuer_path_segments(key.issuer)
        if tid not in segments and "{tenantid}" not in segments:
            raise AuthError(
                "invalid_issuer",
                "The signing key is not valid for the token's tenant",
                reason="key_tenant",
            )
    ctx.version, ctx.tenant_id, ctx.issuer = version, tid, iss


def rule_policy_match(v: TokenValidator, ctx: Context) -> None:
    """B2C, once the signature holds: the ``tfp``/``acr`` names a configured policy, the
    very one whose keys verified the token."""
    assert ctx.claims is not None
    if v.policies is None:
        return
    named = token_policy(ctx.claims)
    cache = v.policies.get(named)
    if cache is None or cache is not ctx.source:
        raise AuthError(
            "invalid_issuer",
            "The token's policy ('tfp'/'acr') is not the B2C policy whose keys signed it",
            reason="policy",
        )


def rule_audience(v: TokenValidator, ctx: Context) -> None:
    assert ctx.claims is not None
    aud = ctx.claims.get("aud")
    values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(isinstance(a, str) and a in v.audiences for a in values):
        raise AuthError("invalid_audience", "The token is not meant for this API ('aud')")


def rule_scopes_or_roles(v: TokenValidator, ctx: Context) -> None:
    assert ctx.claims is not None
    scp, roles = ctx.claims.get("scp"), ctx.claims.get("roles")
    if scp is not None and not isinstance(scp, str):
        raise _malformed("The 'scp' claim is not a string", "claim_type")
    if roles is not None and (
        not isinstance(roles, list) or not all(isinstance(r, str) for r in roles)
    ):
        raise _malformed("The 'roles' claim is not a list of strings", "claim_type")
    if not (scp and scp.strip()) and not roles and not v.allow_acl_tokens:
        raise AuthError(
            "missing_scope_or_role",
            "The token carries neither 'scp' nor 'roles' (an ID token, or no permission granted)",
        )


def rule_allowed_tenant(v: TokenValidator, ctx: Context) -> None:
    assert ctx.claims is not None
    tid = ctx.tenant_id or ctx.claims.get("tid")
    if v.allowed_tenants and tid not in v.allowed_tenants:
        raise AuthError("tenant_not_allowed", "The caller's tenant is not allowed to use this API")


def calling_app(claims: Mapping[str, Any]) -> Any:
    """The client app that asked for the token: ``azp`` (v2) or ``appid`` (v1)."""
    return claims.get("azp", claims.get("appid"))


def rule_allowed_client_app(v: TokenValidator, ctx: Context) -> None:
    """``allowed_client_apps`` (docs/settings.md): empty allows every app."""
    assert ctx.claims is not None
    if not v.allowed_client_apps:
        return
    app = calling_app(ctx.claims)
    if not isinstance(app, str) or app.lower() not in v.allowed_client_apps:
        raise AuthError(
            "client_not_allowed", "The calling application is not allowed to use this API"
        )


#: What a rule reads from the ``Context`` (the inspector skips a rule whose inputs are missing).
RuleCheck = Callable[["TokenValidator", Context], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class Rule:
    """One named step: the codes it can refuse with (docs/security.md "Validation rules")."""

    name: str
    codes: tuple[ErrorCode, ...]
    check: RuleCheck
    is_async: bool = False
    #: ``Context`` fields that must be set for the rule to be evaluated at all.
    needs: tuple[str, ...] = ()


_CLAIMS = ("claims",)

#: The validation rules, in the order they are applied. The middleware stops at the first
#: failure; the inspector shows every rule it can evaluate.
RULES: tuple[Rule, ...] = (
    Rule("format", ("malformed_token",), rule_format),
    Rule("algorithm", ("unsupported_algorithm",), rule_algorithm, needs=("header",)),
    Rule("policy", ("invalid_issuer",), rule_policy, needs=("header",)),
    Rule(
        "key",
        ("unknown_key", "idp_unavailable"),
        rule_key,
        is_async=True,
        needs=("header", "source"),
    ),
    Rule("signature", ("invalid_signature",), rule_signature, needs=("alg", "key", "payload")),
    Rule(
        "lifetime",
        ("token_expired", "token_not_yet_valid", "malformed_token"),
        rule_lifetime,
        needs=_CLAIMS,
    ),
    Rule("issuer", ("invalid_issuer",), rule_issuer, needs=("claims", "metadata")),
    Rule("policy_match", ("invalid_issuer",), rule_policy_match, needs=_CLAIMS),
    Rule("audience", ("invalid_audience",), rule_audience, needs=_CLAIMS),
    Rule(
        "scopes_or_roles",
        ("missing_scope_or_role", "malformed_token"),
        rule_scopes_or_roles,
        needs=_CLAIMS,
    ),
    Rule("allowed_tenant", ("tenant_not_allowed",), rule_allowed_tenant, needs=_CLAIMS),
    Rule("allowed_client_app", ("client_not_allowed",), rule_allowed_client_app, needs=_CLAIMS),
)

RULE_NAMES: tuple[str, ...] = tuple(rule.name for rule in RULES)


class TokenValidator:
    """Runs ``RULES`` on one token; holds what the rules compare against."""

    def __init__(
        self,
        settings: EntraSettings,
        metadata: MetadataCache,
        *,
        clock: Callable[[], float] | None = None,
        policies: PolicyMetadata | None = None,
    ) -> None:
        self.settings = settings
        self.metadata = metadata
        #: B2C: the metadata of each configured policy (``None`` outside B2C).
        self.policies = policies
        #: None: ``time.time()`` read at each call (so freezegun & co. move it).
        self.clock = clock
        self.clock_skew = settings.clock_skew
        self.algorithms = tuple(settings.accepted_algorithms)
        self.audiences = frozenset(settings.audiences or ())
        self.allowed_tenants = frozenset(settings.allowed_tenants)
        self.allowed_client_apps = frozenset(a.lower() for a in settings.allowed_client_apps)
        # Settings properties the rules ask per token (a regex match, a set look-up), once.
        self.multi_tenant = settings.multi_tenant
        self.tenant_is_domain = settings.tenant_is_domain
        self.is_b2c = settings.is_b2c
        self.allow_acl_tokens = settings.allow_acl_tokens
        self.header_cache: dict[str, dict[str, Any]] = {}
        self._issuer_paths: dict[str, frozenset[str]] = {}
        self._steps = tuple((rule.check, rule.is_async) for rule in RULES)

    def issuer_path_segments(self, issuer: str) -> frozenset[str]:
        """Path segments of a key's ``issuer`` (parsed once per issuer, not per token)."""
        segments = self._issuer_paths.get(issuer)
        if segments is None:
            if len(self._issuer_paths) >= HEADER_CACHE_SIZE:
                self._issuer_paths.clear()
            segments = frozenset(urlsplit(issuer).path.split("/"))
            self._issuer_paths[issuer] = segments
        return segments

    def now(self) -> float:
        return time.time() if self.clock is None else self.clock()

    def expected_tenant(self, metadata: TenantMetadata) -> str | None:
        """The single tenant's GUID: the setting, or (a domain name was configured) the GUID
        in the issuer of the metadata."""
        return metadata.tenant_id if self.tenant_is_domain else self.settings.tenant_id

    async def validate(
        self, token: str, now: float | None = None, *, payload: dict[str, Any] | None = None
    ) -> ValidatedToken:
        """Every rule, in order; ``now`` defaults to the clock read at this call.
        ``payload``: ``decode_json_segment`` of the token's payload segment, when the
        caller decoded it already (the router); never anything else."""
        ctx = Context(token, self.now() if now is None else now)
        ctx.payload = payload
        for check, is_async in self._steps:
            if is_async:
                await check(self, ctx)  # type: ignore[misc]
            else:
                check(self, ctx)
        assert ctx.claims is not None and ctx.key is not None
        assert ctx.tenant_id is not None and ctx.issuer is not None
        return ValidatedToken(
            claims=ctx.claims,
            version=ctx.version,
            key=ctx.key,
            expires_at=ctx.expires_at,
            tenant_id=ctx.tenant_id,
            issuer=ctx.issuer,
            policy=ctx.policy,
        )
