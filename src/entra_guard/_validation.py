"""Token validation, in the order the rules are applied (README "Security model").

1. strict parse of the compact JWS (size, shape, base64url, JSON header);
2. algorithm allow-list; ``jku``/``x5u``/``jwk`` are never looked at;
3. signing key chosen by ``kid`` (or ``x5t``) from the tenant's JWKS;
4. signature;
then, on the now-trusted claims: lifetime, issuer (+ ``tid``), audience,
``scp``/``roles`` presence, tenant allow-list. No claim is used for any
decision or look-up before the signature has been verified.

Each step is a small function so that the ``inspect`` CLI can replay them one
by one and show which one failed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ._crypto import SigningKey, b64url_decode
from ._errors import AuthError
from ._metadata import MetadataCache, TenantMetadata
from ._settings import GUID_RE, EntraSettings

#: Largest token we look at (README "Settings"); bigger ones are refused unparsed.
MAX_TOKEN_LENGTH = 16 * 1024


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A compact JWS split and its header decoded; nothing in it is trusted yet."""

    header: Mapping[str, Any]
    alg: str
    kid: str | None
    x5t: str | None
    signing_input: bytes
    payload_segment: str
    signature: bytes


@dataclass(frozen=True, slots=True)
class ValidatedToken:
    """Claims that passed every check, and what they were checked against."""

    claims: Mapping[str, Any]
    version: str
    key: SigningKey
    #: ``exp`` as a Unix timestamp.
    expires_at: float


def _malformed(detail: str) -> AuthError:
    return AuthError("malformed_token", detail)


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        # Two parsers could read two different values (IdM IDX40011 rejects these too).
        raise ValueError("duplicate member")
    return result


#: Built once: ``json.loads(..., object_pairs_hook=...)`` would build a decoder per call.
def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN / Infinity are Python extensions


_JSON_DECODER = json.JSONDecoder(
    object_pairs_hook=_object_without_duplicates, parse_constant=_no_constants
)


def decode_json_segment(segment: str, what: str) -> dict[str, Any]:
    try:
        raw = b64url_decode(segment)
        # Exactly what json.loads does with bytes (UTF-8/16/32 detection), minus the set-up.
        value = _JSON_DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _malformed(f"The token {what} is not base64url-encoded JSON") from exc
    if not isinstance(value, dict):
        raise _malformed(f"The token {what} is not a JSON object")
    return value


#: Header segments remembered per validator (a tenant's tokens share a handful of headers).
HEADER_CACHE_SIZE = 64
_HEADER_CACHE_MAX_SEGMENT = 512
_SCALARS = (str, int, float, bool, type(None))


def _decode_header(segment: str, cache: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """``decode_json_segment(segment, "header")``, memoized on the exact segment text.

    Only successful decodes of short, flat headers (scalar values, as Entra's
    ``typ``/``alg``/``kid``/``x5t``) are kept, and callers get a copy, so the
    result is the same as a fresh parse; every check on it still runs per token.
    """
    if cache is None:
        return decode_json_segment(segment, "header")
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


#: ``ParsedToken``'s fields, as a plain tuple for the hot path (saves ~1 µs per token).
_Parsed = tuple[dict[str, Any], str, str | None, str | None, bytes, str, bytes]


def parse_token(
    token: str,
    accepted_algorithms: tuple[str, ...],
    *,
    header_cache: dict[str, dict[str, Any]] | None = None,
) -> ParsedToken:
    """Rules 1-2: shape, size, header. Raises ``AuthError`` with its code.

    ``header_cache`` (owned by the caller, e.g. one ``TokenValidator``) skips
    re-decoding a header segment seen before; the outcome is the same.
    """
    header, alg, kid, x5t, signing_input, payload_segment, signature = _parse(
        token, accepted_algorithms, header_cache
    )
    return ParsedToken(
        header=header,
        alg=alg,
        kid=kid,
        x5t=x5t,
        signing_input=signing_input,
        payload_segment=payload_segment,
        signature=signature,
    )


def _parse(
    token: str,
    accepted_algorithms: tuple[str, ...],
    header_cache: dict[str, dict[str, Any]] | None,
) -> _Parsed:
    """``parse_token`` without building the dataclass."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise _malformed(f"The token is larger than {MAX_TOKEN_LENGTH} bytes")
    if not token.isascii():
        raise _malformed("The token contains non-ASCII characters")
    parts = token.split(".")
    if len(parts) == 5:
        raise _malformed("Encrypted (JWE) tokens are not accepted; send a signed access token")
    if len(parts) != 3 or not all(parts[:2]):
        raise _malformed("The token is not a compact JWS (header.payload.signature)")
    header_segment, payload_segment, signature_segment = parts
    header = _decode_header(header_segment, header_cache)
    alg = header.get("alg")
    if "enc" in header:
        raise _malformed("Encrypted (JWE) tokens are not accepted; send a signed access token")
    if not isinstance(alg, str) or alg not in accepted_algorithms:
        shown = alg if isinstance(alg, str) and len(alg) <= 16 and alg.isprintable() else "?"
        raise AuthError(
            "unsupported_algorithm",
            f"Algorithm {shown!r} is not accepted (allowed: {', '.join(accepted_algorithms)})",
        )
    if "crit" in header:
        raise _malformed("The token header lists critical extensions this API does not support")
    kid, x5t = header.get("kid"), header.get("x5t")
    if (kid is not None and not isinstance(kid, str)) or (
        x5t is not None and not isinstance(x5t, str)
    ):
        raise _malformed("The token header's 'kid'/'x5t' must be strings")
    try:
        signature = b64url_decode(signature_segment)
    except ValueError as exc:
        raise _malformed("The token signature is not base64url") from exc
    signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    return header, alg, kid, x5t, signing_input, payload_segment, signature


def verify_signature(parsed: ParsedToken, key: SigningKey) -> dict[str, Any]:
    """Rule 4. Returns the payload, decoded only once the signature holds."""
    return _verified_payload(
        parsed.alg, parsed.signing_input, parsed.signature, parsed.payload_segment, key
    )


def _verified_payload(
    alg: str, signing_input: bytes, signature: bytes, payload_segment: str, key: SigningKey
) -> dict[str, Any]:
    if not signature or not key.verify(alg, signing_input, signature):
        raise AuthError("invalid_signature", "The token signature does not verify")
    return decode_json_segment(payload_segment, "payload")


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _malformed(f"The '{name}' claim is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _malformed(f"The '{name}' claim is out of range")
    return number


def check_lifetime(claims: Mapping[str, Any], now: float, skew: float) -> float:
    """``exp`` is required; ``exp``/``nbf`` are compared with ``skew`` seconds of leeway."""
    exp = _number(claims, "exp")
    if exp is None:
        raise AuthError("token_expired", "The token has no 'exp' claim")
    if now > exp + skew:
        raise AuthError("token_expired", "The token has expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and now + skew < nbf:
        raise AuthError("token_not_yet_valid", "The token is not valid yet ('nbf')")
    return exp


def check_issuer(
    claims: Mapping[str, Any],
    metadata: TenantMetadata,
    key: SigningKey,
    settings: EntraSettings,
) -> str:
    """``iss`` must equal the metadata issuer for the token's ``tid``; returns the version."""
    iss, tid = claims.get("iss"), claims.get("tid")
    if not isinstance(iss, str) or not iss:
        raise AuthError("invalid_issuer", "The token has no 'iss' claim")
    if not isinstance(tid, str) or not GUID_RE.match(tid):
        raise AuthError("invalid_issuer", "The token's 'tid' claim is missing or not a GUID")
    if not settings.multi_tenant and tid != settings.tenant_id:
        raise AuthError("invalid_issuer", "The token was issued for another tenant")
    version = next(
        (
            v
            for v, template in metadata.issuers.items()
            if template.replace("{tenantid}", tid) == iss
        ),
        None,
    )
    if version is None:
        raise AuthError("invalid_issuer", "The token's issuer is not this API's tenant issuer")
    ver = claims.get("ver")
    if ver is not None and ver != version:
        raise AuthError("invalid_issuer", "The token's 'ver' does not match its issuer")
    if key.issuer is not None:
        # A key scoped to one tenant must not sign for another (Entra signing-key issuer rule).
        scoped = key.issuer.replace("{tenantid}", tid)
        if tid not in urlsplit(scoped).path.split("/"):
            raise AuthError("invalid_issuer", "The signing key is not valid for the token's tenant")
    return version


def check_audience(claims: Mapping[str, Any], audiences: frozenset[str]) -> None:
    aud = claims.get("aud")
    values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(isinstance(a, str) and a in audiences for a in values):
        raise AuthError("invalid_audience", "The token is not meant for this API ('aud')")


def check_scopes_or_roles(claims: Mapping[str, Any], allow_acl_tokens: bool) -> None:
    scp, roles = claims.get("scp"), claims.get("roles")
    if scp is not None and not isinstance(scp, str):
        raise _malformed("The 'scp' claim is not a string")
    if roles is not None and (
        not isinstance(roles, list) or not all(isinstance(r, str) for r in roles)
    ):
        raise _malformed("The 'roles' claim is not a list of strings")
    if not (scp and scp.strip()) and not roles and not allow_acl_tokens:
        raise AuthError(
            "missing_scope_or_role",
            "The token carries neither 'scp' nor 'roles' (an ID token, or no permission granted)",
        )


def check_allowed_tenant(claims: Mapping[str, Any], allowed: frozenset[str]) -> None:
    if allowed and claims.get("tid") not in allowed:
        raise AuthError("tenant_not_allowed", "The caller's tenant is not allowed to use this API")


class TokenValidator:
    """Applies every validation rule to one token."""

    def __init__(
        self,
        settings: EntraSettings,
        metadata: MetadataCache,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metadata = metadata
        self.clock = clock
        self.algorithms = tuple(settings.accepted_algorithms)
        self.audiences = frozenset(settings.audiences or ())
        self.allowed_tenants = frozenset(settings.allowed_tenants)
        self._headers: dict[str, dict[str, Any]] = {}

    async def validate(self, token: str) -> ValidatedToken:
        # parse_token + verify_signature, without the intermediate ParsedToken.
        _, alg, kid, x5t, signing_input, payload_segment, signature = _parse(
            token, self.algorithms, self._headers
        )
        if kid is None and x5t is None:
            raise AuthError("unknown_key", "The token header names no signing key ('kid')")
        key = await self.metadata.signing_key(kid, x5t)
        claims = _verified_payload(alg, signing_input, signature, payload_segment, key)
        metadata = self.metadata.current
        assert metadata is not None  # signing_key() loaded it
        expires_at = check_lifetime(claims, self.clock(), self.settings.clock_skew)
        version = check_issuer(claims, metadata, key, self.settings)
        check_audience(claims, self.audiences)
        check_scopes_or_roles(claims, self.settings.allow_acl_tokens)
        check_allowed_tenant(claims, self.allowed_tenants)
        return ValidatedToken(claims=claims, version=version, key=key, expires_at=expires_at)
