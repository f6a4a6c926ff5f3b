"""The API's own client credential at the token endpoint (docs/downstream.md).

One credential serves every token request entra-guard makes for the API:
on-behalf-of grants and the Graph app token of the groups overage. Three
kinds, exactly one configured:

- ``ENTRA_CLIENT_SECRET``: ``client_secret`` in the form.
- ``ENTRA_CLIENT_CERTIFICATE_PATH``: a PEM file with the private key and the
  certificate; each request carries a fresh client assertion (RS256 JWT with
  ``x5t#S256`` and ``x5t`` of the certificate, ``aud`` = the token endpoint,
  10 minutes, new ``jti``), signed with ``cryptography``.
- ``ENTRA_FEDERATED_TOKEN_FILE``: workload identity (Kubernetes/AKS); the
  file's content is the client assertion. The file is rotated by the platform,
  so its modification time is checked at each request and it is re-read when
  it changed.

Bad configuration fails when ``EntraAuth`` is built, naming the setting.
Nothing here ever puts a secret, a key or an assertion in a message or repr.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import SecretStr

from ._settings import EntraSettings

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Lifetime of a certificate client assertion, s (Entra accepts up to 10 minutes).
ASSERTION_LIFETIME = 600
#: Largest PEM or federated token file read, bytes.
MAX_CREDENTIAL_FILE = 256 * 1024


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class ClientCredential(Protocol):
    """Authenticates the API at the token endpoint: form fields to add to a request."""

    kind: str

    def form_fields(self, token_endpoint: str) -> dict[str, str]: ...


class SecretCredential:
    """``client_secret`` (the simplest; rotate it before it expires)."""

    kind = "client_secret"

    def __init__(self, client_id: str, secret: SecretStr) -> None:
        self._client_id = client_id
        self._secret = secret

    def form_fields(self, token_endpoint: str) -> dict[str, str]:
        return {"client_id": self._client_id, "client_secret": self._secret.get_secret_value()}

    def __repr__(self) -> str:
        return "SecretCredential(client_secret=***)"


class CertificateCredential:
    """A certificate registered on the app: signed client assertions, no shared secret."""

    kind = "certificate"

    def __init__(
        self,
        client_id: str,
        pem: bytes,
        *,
        setting: str = "ENTRA_CLIENT_CERTIFICATE_PATH",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client_id = client_id
        self._clock = clock
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise ValueError(
                f"{setting}: the file holds no readable, unencrypted PEM private key"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
            raise ValueError(f"{setting}: the private key must be RSA of at least 2048 bits")
        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise ValueError(
                f"{setting}: the file has a private key but no PEM certificate "
                "(put the key and the certificate in one file)"
            ) from None
        public = certificate.public_key()
        if not isinstance(public, rsa.RSAPublicKey) or (
            public.public_numbers() != key.public_key().public_numbers()
        ):
            raise ValueError(f"{setting}: the certificate does not match the private key")
        der = certificate.public_bytes(serialization.Encoding.DER)
        self._key = key
        self.thumbprint_sha256 = _b64url(hashlib.sha256(der).digest())
        self.thumbprint_sha1 = _b64url(hashlib.sha1(der, usedforsecurity=False).digest())
        self._header = _b64url(
            json.dumps(
                {
                    "alg": "RS256",
                    "typ": "JWT",
                    "x5t": self.thumbprint_sha1,
                    "x5t#S256": self.thumbprint_sha256,
                },
                separators=(",", ":"),
            ).encode()
        )

    @classmethod
    def from_file(
        cls, client_id: str, path: str, *, clock: Callable[[], float] = time.time
    ) -> CertificateCredential:
        return cls(client_id, _read_file(path, "ENTRA_CLIENT_CERTIFICATE_PATH"), clock=clock)

    def assertion(self, token_endpoint: str) -> str:
        """A fresh client assertion for ``token_endpoint`` (new ``jti`` every time)."""
        now = int(self._clock())
        claims = {
            "aud": token_endpoint,
            "iss": self._client_id,
            "sub": self._client_id,
            "jti": str(uuid.uuid4()),
            "iat": now,
            "nbf": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        body = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{self._header}.{body}".encode("ascii")
        signature = self._key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{self._header}.{body}.{_b64url(signature)}"

    def form_fields(self, token_endpoint: str) -> dict[str, str]:
        return {
            "client_id": self._client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(token_endpoint),
        }

    def __repr__(self) -> str:
        return f"CertificateCredential(x5t#S256={self.thumbprint_sha256!r})"


class FederatedTokenCredential:
    """Workload identity: the platform writes (and rotates) a token into a file."""

    kind = "federated_token"

    def __init__(self, client_id: str, path: str) -> None:
        self._client_id = client_id
        self.path = path
        self._mtime_ns: int | None = None
        self._assertion = ""
        self._load()  # fails at start-up when the file is missing or empty

    def _load(self) -> str:
        setting = "ENTRA_FEDERATED_TOKEN_FILE"
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            raise ValueError(f"{setting}: cannot read {self.path!r}") from None
        if mtime != self._mtime_ns:
            text = _read_file(self.path, setting).decode("ascii", "replace").strip()
            if not text or any(c.isspace() for c in text):
                raise ValueError(f"{setting}: {self.path!r} does not hold one token")
            self._assertion, self._mtime_ns = text, mtime
        return self._assertion

    def form_fields(self, token_endpoint: str) -> dict[str, str]:
        return {
            "client_id": self._client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self._load(),
        }

    def __repr__(self) -> str:
        return f"FederatedTokenCredential(path={self.path!r})"


def _read_file(path: str, setting: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CREDENTIAL_FILE + 1)
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path!r} ({exc.strerror})") from None
    if len(data) > MAX_CREDENTIAL_FILE:
        raise ValueError(f"{setting}: {path!r} is larger than {MAX_CREDENTIAL_FILE} bytes")
    return data


def load_credential(
    settings: EntraSettings, *, clock: Callable[[], float] = time.time
) -> ClientCredential | None:
    """The configured credential, or None; a ``ValueError`` naming the setting when broken."""
    configured = [
        name
        for name, value in (
            ("ENTRA_CLIENT_SECRET", settings.client_secret),
            ("ENTRA_CLIENT_CERTIFICATE_PATH", settings.client_certificate_path),
            ("ENTRA_FEDERATED_TOKEN_FILE", settings.federated_token_file),
        )
        if value is not None
    ]
    if len(configured) > 1:
        raise ValueError(f"Set only one client credential, got {' and '.join(configured)}")
    if settings.client_secret is not None:
        return SecretCredential(settings.client_id, settings.client_secret)
    if settings.client_certificate_path is not None:
        return CertificateCredential.from_file(
            settings.client_id, settings.client_certificate_path, clock=clock
        )
    if settings.federated_token_file is not None:
        return FederatedTokenCredential(settings.client_id, settings.federated_token_file)
    return None
