"""The fake token endpoint's client authentication and on-behalf-of grant.

Mixed into ``FakeEntraID``; kept apart from the discovery/keys fake. What it
checks, like Entra ID:

- the client: ``client_secret`` registered in ``confidential_clients``, or a
  ``client_assertion``: an RS256 JWT signed by a certificate registered with
  ``add_client_certificate`` (looked up by ``x5t#S256``/``x5t``), ``aud`` =
  this token endpoint, ``iss`` = ``sub`` = the client, unexpired, at most 10
  minutes long, ``jti`` never seen before; or a federated token registered with
  ``add_federated_token``. Anything else: 401 ``invalid_client``.
- the OBO ``assertion``: signed by this fake, unexpired, ``aud`` = the
  requesting client (its id or ``api://`` id), a user's token (app-only:
  400 ``invalid_grant``).

``fail_obo(...)`` makes the next grants answer ``interaction_required`` with
claims, ``AADSTS65001``, ``AADSTS500133``, 429 + ``Retry-After``, a 5xx, or
hang. Issued tokens are opaque strings recorded in ``issued_obo_tokens``
(``FakeGraph`` accepts them on ``/v1.0/me``).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._crypto import b64url_decode, b64url_encode

if TYPE_CHECKING:
    from ._idp import FakeKey

OBO_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_CLAIMS_CHALLENGE = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'

OboFaultKind = Literal[
    "interaction_required", "consent_required", "expired", "throttle", "error", "hang"
]


@dataclass
class OboGrant:
    """One token the fake issued on behalf of a user."""

    tenant_id: str
    object_id: str
    client_id: str
    scope: str
    expires_at: float
    claims: str | None  # the grant's ``claims`` parameter, as sent


@dataclass
class _OboFault:
    kind: OboFaultKind
    remaining: int | None
    claims: str
    retry_after: float
    status: int


@dataclass
class _Registrations:
    certificates: dict[str, list[x509.Certificate]] = field(default_factory=dict)
    federated: dict[str, set[str]] = field(default_factory=dict)


def _error(status: int, error: str, code: int, text: str, **extra: Any) -> Response:
    trace = secrets.token_hex(8)
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {trace}",
        "error_codes": [code],
        "timestamp": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "trace_id": trace,
        "correlation_id": trace,
        **extra,
    }
    return JSONResponse(body, status_code=status)


def _thumbprints(certificate: x509.Certificate) -> tuple[str, str]:
    der = certificate.public_bytes(serialization.Encoding.DER)
    return (
        b64url_encode(hashlib.sha256(der).digest()),
        b64url_encode(hashlib.sha1(der, usedforsecurity=False).digest()),
    )


def make_client_certificate(common_name: str = "entra-guard test client") -> bytes:
    """A new RSA-2048 key and self-signed certificate, as one PEM (key first)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + certificate.public_bytes(serialization.Encoding.PEM)


def _decode_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes] | None:
    """(header, claims, signing input, signature) of a compact JWS, or None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except ValueError:
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), signature


def _verify(public_key: Any, signing_input: bytes, signature: bytes) -> bool:
    try:
        public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError, TypeError, AttributeError):
        return False
    return True


class OboTokenEndpoint:
    """Client authentication and the OBO grant of ``FakeEntraID``'s token endpoint."""

    # Provided by FakeEntraID.
    keys: list[FakeKey]
    confidential_clients: dict[str, str]
    _lock: threading.Lock

    def _init_obo(self) -> None:
        self._registrations = _Registrations()
        self._seen_jtis: deque[str] = deque(maxlen=10_000)
        self._obo_fault: _OboFault | None = None
        self._public_keys: dict[str, Any] = {}
        #: token -> the grant that issued it
        self.issued_obo_tokens: dict[str, OboGrant] = {}
        #: every accepted OBO grant, in order
        self.obo_grants: list[OboGrant] = []
        #: why the token endpoint refused a client (``invalid_client``), in order
        self.client_refusals: list[str] = []
        self.obo_token_lifetime = 3600

    # -- set-up -----------------------------------------------------------------------

    def add_client_certificate(self, client_id: str, pem: bytes) -> None:
        """Register the certificate in ``pem`` (key may be there too) for ``client_id``."""
        certificate = x509.load_pem_x509_certificate(pem)
        self._registrations.certificates.setdefault(client_id, []).append(certificate)

    def add_federated_token(self, client_id: str, token: str) -> None:
        """Accept ``token`` as a client assertion of ``client_id`` (workload identity)."""
        self._registrations.federated.setdefault(client_id, set()).add(token.strip())

    def remove_federated_token(self, client_id: str, token: str) -> None:
        """Stop accepting ``token`` (it was rotated out)."""
        self._registrations.federated.get(client_id, set()).discard(token.strip())

    def fail_obo(
        self,
        kind: OboFaultKind,
        *,
        times: int | None = 1,
        claims: str = DEFAULT_CLAIMS_CHALLENGE,
        retry_after: float = 1,
        status: int = 503,
    ) -> None:
        """Answer the next ``times`` OBO grants (None: until ``recover_obo()``) with:
        ``interaction_required`` + ``claims``; ``consent_required`` (AADSTS65001);
        ``expired`` (AADSTS500133); ``throttle`` (429 + ``Retry-After``); ``error``
        (``status``, a 5xx); ``hang`` (no answer)."""
        self._obo_fault = _OboFault(kind, times, claims, retry_after, status)

    def recover_obo(self) -> None:
        self._obo_fault = None

    def obo_grants_for(self, object_id: str, scope: str | None = None) -> int:
        return sum(
            1
            for g in self.obo_grants
            if g.object_id == object_id and (scope is None or g.scope == scope)
        )

    # -- client authentication ----------------------------------------------------

    def _authenticate_client(self, request: Request, form: dict[str, str]) -> Response | None:
        """None when the client proved who it is, else the 401 ``invalid_client``."""
        client_id = form.get("client_id", "")
        if "client_secret" in form:
            if client_id and self.confidential_clients.get(client_id) == form["client_secret"]:
                return None
            return self._refuse_client(7000215, "Invalid client secret provided.")
        if form.get("client_assertion_type") != ASSERTION_TYPE or "client_assertion" not in form:
            return self._refuse_client(7000216, "client_secret or client_assertion is required.")
        assertion = form["client_assertion"]
        if assertion in self._registrations.federated.get(client_id, ()):
            return None
        decoded = _decode_jwt(assertion)
        if decoded is None:
            return self._refuse_client(50027, "The client assertion is not a valid JWT.")
        header, claims, signing_input, signature = decoded
        endpoint = str(request.url).split("?")[0]
        wanted = {header.get("x5t#S256"), header.get("x5t")} - {None}
        certificates = self._registrations.certificates.get(client_id, [])
        certificate = next((c for c in certificates if wanted & set(_thumbprints(c))), None)
        now = time.time()
        if header.get("alg") != "RS256" or certificate is None:
            return self._refuse_client(700027, "The certificate is not registered for the app.")
        if not _verify(certificate.public_key(), signing_input, signature):
            return self._refuse_client(700027, "Client assertion failed signature validation.")
        if claims.get("aud") != endpoint:
            return self._refuse_client(700212, "The assertion audience is not this endpoint.")
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            return self._refuse_client(700023, "The client assertion issuer is not the client.")
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
        if not isinstance(exp, int) or not isinstance(nbf, int) or exp <= now or exp - nbf > 600:
            return self._refuse_client(700024, "The client assertion is expired or too long.")
        jti = claims.get("jti")
        with self._lock:
            if not isinstance(jti, str) or jti in self._seen_jtis:
                return self._refuse_client(7000215, "The client assertion jti was replayed.")
            self._seen_jtis.append(jti)
        return None

    def _refuse_client(self, code: int, text: str) -> Response:
        self.client_refusals.append(f"AADSTS{code}")
        return _error(401, "invalid_client", code, text)

    # -- the on-behalf-of grant ---------------------------------------------------

    async def _obo_grant(self, request: Request, form: dict[str, str]) -> Response:
        refused = self._authenticate_client(request, form)
        if refused is not None:
            return refused
        if form.get("requested_token_use") != "on_behalf_of" or not form.get("assertion"):
            return _error(400, "invalid_request", 90014, "A required field is missing.")
        scope = form.get("scope", "").strip()
        if not scope:
            return _error(400, "invalid_request", 90014, "The scope field is missing.")
        user = self._check_user_assertion(form["assertion"], form.get("client_id", ""))
        if isinstance(user, Response):
            return user
        injected = await self._obo_injected()
        if injected is not None:
            return injected
        token = "fake-obo-token-" + secrets.token_urlsafe(24)
        grant = OboGrant(
            tenant_id=str(user.get("tid", request.path_params["tenant"])),
            object_id=str(user.get("oid", "")),
            client_id=form.get("client_id", ""),
            scope=scope,
            expires_at=time.time() + self.obo_token_lifetime,
            claims=form.get("claims"),
        )
        with self._lock:
            self.issued_obo_tokens[token] = grant
            self.obo_grants.append(grant)
        return JSONResponse(
            {
                "token_type": "Bearer",
                "scope": scope,
                "expires_in": self.obo_token_lifetime,
                "ext_expires_in": self.obo_token_lifetime,
                "access_token": token,
            }
        )

    def _check_user_assertion(self, assertion: str, client_id: str) -> dict[str, Any] | Response:
        decoded = _decode_jwt(assertion)
        if decoded is None:
            return _error(400, "invalid_grant", 50013, "Assertion is not a valid JWT.")
        header, claims, signing_input, signature = decoded
        signed = any(
            key.kid == header.get("kid")
            and _verify(self._public_key(key), signing_input, signature)
            for key in self.keys
        )
        if not signed:
            return _error(400, "invalid_grant", 50013, "Assertion failed signature validation.")
        if claims.get("aud") not in (client_id, f"api://{client_id}"):
            return _error(400, "invalid_grant", 50013, "Assertion audience is not the client.")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp <= time.time():
            return _error(400, "invalid_grant", 500133, "Assertion is not within its valid range.")
        if claims.get("idtyp") == "app" or "scp" not in claims:
            return _error(
                400, "invalid_grant", 7000114, "Application tokens cannot be used for OBO."
            )
        return claims

    def _public_key(self, key: FakeKey) -> Any:
        public = self._public_keys.get(key.kid)
        if public is None:
            public = serialization.load_pem_private_key(key.private_pem, None).public_key()
            self._public_keys[key.kid] = public
        return public

    async def _obo_injected(self) -> Response | None:
        with self._lock:
            fault = self._obo_fault
            if fault is not None and fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._obo_fault = None
        if fault is None:
            return None
        if fault.kind == "interaction_required":
            return _error(
                400,
                "interaction_required",
                50079,
                "Due to a configuration change made by your administrator, you must use "
                "multi-factor authentication.",
                claims=fault.claims,
                suberror="basic_action",
            )
        if fault.kind == "consent_required":
            return _error(
                400,
                "invalid_grant",
                65001,
                "The user or administrator has not consented to use the application.",
                suberror="consent_required",
            )
        if fault.kind == "expired":
            return _error(400, "invalid_grant", 500133, "Assertion is not within its valid range.")
        if fault.kind == "throttle":
            return JSONResponse(
                {"error": "temporarily_unavailable"},
                status_code=429,
                headers={"Retry-After": f"{fault.retry_after:g}"},
            )
        if fault.kind == "hang":
            for _ in range(600):  # bounded: at most 60 s, ends early on recover_obo()
                if self._obo_fault is None:
                    break
                await asyncio.sleep(0.1)
            return Response(status_code=504)
        return _error(fault.status, "server_error", 90033, "A transient error has occurred.")
