"""The only module that talks to python-jose.

python-jose has a history of algorithm-confusion bugs, so it only ever sees
input we have already checked: keys are built once from RSA JWKs (never from
PEM strings or token headers), the algorithm is always named explicitly, and
signatures are verified on bytes our own parser produced. Swapping the JOSE
library means changing this file alone. RS256 (what Entra signs with) is checked
by ``cryptography`` directly, on the same key, and only where python-jose built an
RS256 verifier for it: the same check without python-jose's per-call overhead
(docs/benchmarks.md).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers
from cryptography.hazmat.primitives.hashes import SHA256
from jose import jwk as jose_jwk
from jose.exceptions import JOSEError

#: base64url -> standard alphabet (``+/=``, which base64url never has, -> ``!``, which
#: no base64 has), and the padding a segment of ``len % 4`` needs.
_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/!!!")
_PADDING = (b"", b"", b"==", b"=")
_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
#: Keys shorter than this are refused outright (NIST SP 800-131A).
MIN_RSA_BITS = 2048
_PKCS1V15 = PKCS1v15()
_SHA256 = SHA256()


class NonCanonicalBase64(ValueError):
    """A base64url segment with non-zero unused bits in its last character."""


#: Allowed last characters when the segment length is 2 or 3 mod 4: the bits the decoded
#: bytes do not use must be zero (RFC 4648 §3.5), else a segment has 4 or 16 spellings.
_CANONICAL_LAST = ("", "", frozenset("AQgw"), frozenset("AEIMQUYcgkosw048"))


def b64url_decode(segment: str) -> bytes:
    """Strict, canonical base64url (RFC 7515 §2): no padding, no foreign characters,
    unused bits zero.

    Hot path (three calls per token): the translation to the standard alphabet also
    turns the standard-only characters ``+/=`` into one that is in neither, so
    ``a2b_base64(strict_mode=True)`` refuses them along with every other character
    outside the alphabet; it does not look at the unused bits of the last character,
    so that is checked here (``NonCanonicalBase64``).
    """
    remainder = len(segment) % 4
    if remainder == 1:
        raise ValueError("not base64url")
    if remainder and segment[-1] not in _CANONICAL_LAST[remainder]:
        if segment[-1] in _ALPHABET:
            raise NonCanonicalBase64("base64url with non-zero unused bits")
        raise ValueError("not base64url")
    try:
        data = segment.encode("ascii").translate(_TO_STANDARD) + _PADDING[remainder]
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise ValueError("not base64url") from exc


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, eq=False, slots=True)
class SigningKey:
    """One published key of the IdP, parsed once and reused for every token.

    ``verifiers`` holds one prepared python-jose key per accepted algorithm;
    an empty map means the key exists but cannot verify (wrong ``kty`` / size).
    """

    kid: str | None
    x5t: str | None
    #: ``alg`` the JWK pins itself to, if any.
    alg: str | None
    #: ``issuer`` the JWK is scoped to (may contain ``{tenantid}``).
    issuer: str | None
    fingerprint: str
    verifiers: Mapping[str, Any] = field(default_factory=dict)
    #: The same RSA key as ``cryptography`` sees it, for RS256 checks without python-jose;
    #: only set next to an RS256 verifier.
    rs256: RSAPublicKey | None = None

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        """True only for a valid signature by this key under ``alg``."""
        if self.alg is not None and self.alg != alg:
            return False
        verifier = self.verifiers.get(alg)
        if verifier is None:
            return False
        if alg == "RS256" and self.rs256 is not None:
            try:
                self.rs256.verify(signature, signing_input, _PKCS1V15, _SHA256)
            except (InvalidSignature, ValueError, TypeError):
                return False
            return True
        try:
            return bool(verifier.verify(signing_input, signature))
        except (JOSEError, ValueError, TypeError):
            return False


def jwk_fingerprint(jwk: Mapping[str, Any]) -> str:
    """Identity of a JWK's key material, used to reuse parsed keys across refreshes."""
    subset = {k: jwk.get(k) for k in ("kty", "kid", "x5t", "alg", "issuer", "n", "e", "use")}
    return json.dumps(subset, sort_keys=True)


def build_signing_key(jwk: Mapping[str, Any], algorithms: tuple[str, ...]) -> SigningKey:
    """Parse one JWK from a JWKS document. Non-RSA or weak keys verify nothing."""
    kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else None
    x5t = jwk.get("x5t") if isinstance(jwk.get("x5t"), str) else None
    alg = jwk.get("alg") if isinstance(jwk.get("alg"), str) else None
    issuer = jwk.get("issuer") if isinstance(jwk.get("issuer"), str) else None
    verifiers: dict[str, Any] = {}
    usable = (
        jwk.get("kty") == "RSA"
        and jwk.get("use", "sig") == "sig"
        and isinstance(jwk.get("n"), str)
        and isinstance(jwk.get("e"), str)
        and "d" not in jwk  # a private key in a JWKS is a publishing accident: refuse it
    )
    if usable:
        try:
            modulus = b64url_decode(str(jwk["n"]))
        except ValueError:
            modulus = b""
        if len(modulus.lstrip(b"\0")) * 8 >= MIN_RSA_BITS:
            public = {"kty": "RSA", "n": jwk["n"], "e": jwk["e"]}
            for name in algorithms:
                if alg is not None and alg != name:
                    continue
                try:
                    verifiers[name] = jose_jwk.construct(public, algorithm=name)
                except (JOSEError, ValueError, TypeError):
                    continue
    rs256: RSAPublicKey | None = None
    if "RS256" in verifiers:
        try:
            exponent = int.from_bytes(b64url_decode(str(jwk["e"])), "big")
            rs256 = RSAPublicNumbers(exponent, int.from_bytes(modulus, "big")).public_key()
        except ValueError:  # python-jose took it, cryptography not: RS256 goes through jose
            rs256 = None
    return SigningKey(
        kid=kid,
        x5t=x5t,
        alg=alg,
        issuer=issuer,
        fingerprint=jwk_fingerprint(jwk),
        verifiers=verifiers,
        rs256=rs256,
    )
