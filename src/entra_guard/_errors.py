"""Every way a request can be refused, as one exception type with a stable code.

The codes and statuses are part of the public contract (docs/troubleshooting.md "Codes"); the
response shape follows RFC 6750 so clients can react to ``WWW-Authenticate``.
Nothing here ever includes the token itself.
"""

from __future__ import annotations

import json
from typing import Final, Literal, get_args

#: Every refusal code. A ``Literal`` so that mypy catches a misspelt code at the call site.
ErrorCode = Literal[
    "missing_token",
    "malformed_token",
    "unsupported_algorithm",
    "unknown_key",
    "invalid_signature",
    "token_expired",
    "token_not_yet_valid",
    "invalid_audience",
    "invalid_issuer",
    "missing_scope_or_role",
    "tenant_not_allowed",
    "insufficient_scope",
    "missing_role",
    "missing_group",
    "wrong_token_type",
    "guest_not_allowed",
    "idp_unavailable",
    "groups_unavailable",
    # Downstream calls on behalf of the caller (docs/downstream.md).
    "insufficient_claims",
    "consent_required",
    "downstream_unavailable",
    # Step-up and client controls (docs/step-up.md).
    "auth_context_required",
    "client_not_allowed",
]

#: code -> HTTP status. The one place the contract table lives in code.
STATUS_BY_CODE: Final[dict[ErrorCode, int]] = {
    "missing_token": 401,
    "malformed_token": 401,
    "unsupported_algorithm": 401,
    "unknown_key": 401,
    "invalid_signature": 401,
    "token_expired": 401,
    "token_not_yet_valid": 401,
    "invalid_audience": 401,
    "invalid_issuer": 401,
    "missing_scope_or_role": 401,
    "tenant_not_allowed": 403,
    "insufficient_scope": 403,
    "missing_role": 403,
    "missing_group": 403,
    "wrong_token_type": 403,  # require_app_only / require_delegated
    "guest_not_allowed": 403,  # refuse_guests
    "idp_unavailable": 503,
    "groups_unavailable": 503,
    "insufficient_claims": 401,  # a claims challenge the client answers by signing in again
    "consent_required": 403,
    "downstream_unavailable": 503,
    "auth_context_required": 403,
    "client_not_allowed": 403,
}

#: Seconds a client should wait before retrying a 503.
DEFAULT_RETRY_AFTER: Final[int] = 5


class AuthError(Exception):
    """A request was refused; ``code`` is stable, ``detail`` is for humans.

    ``detail`` must never contain the token (or any part of it): it is sent to
    the client and written to logs.
    """

    def __init__(
        self,
        code: ErrorCode,
        detail: str,
        *,
        scopes: tuple[str, ...] = (),
        retry_after: int | None = None,
        reason: str | None = None,
        claims: str | None = None,
        authorization_uri: str | None = None,
    ) -> None:
        if code not in STATUS_BY_CODE:
            raise ValueError(f"unknown AuthError code {code!r}")
        super().__init__(f"{code}: {detail}")
        self.code: ErrorCode = code
        self.detail = detail
        self.status_code = STATUS_BY_CODE[code]
        #: Scopes that would have satisfied the guard (for ``insufficient_scope``).
        self.scopes = scopes
        self.retry_after = retry_after if retry_after is not None else DEFAULT_RETRY_AFTER
        #: Finer machine-readable cause within ``code`` (e.g. ``jwe``, ``too_large``), or None.
        self.reason = reason
        #: ``insufficient_claims``: the base64 claims request and where to sign in again.
        self.claims = claims
        self.authorization_uri = authorization_uri

    def __repr__(self) -> str:
        return f"AuthError(code={self.code!r}, detail={self.detail!r})"

    def www_authenticate(self, resource_metadata: str | None = None) -> str | None:
        """RFC 6750 §3 challenge, or None where the status carries none.

        ``resource_metadata`` (RFC 9728 §5.1) is the URL of the protected-resource
        metadata document; it is added to every 401 challenge.
        """
        challenge = self._challenge()
        if resource_metadata is not None and self.status_code == 401 and challenge is not None:
            param = f'resource_metadata="{_quote(resource_metadata)}"'
            challenge = f"Bearer {param}" if challenge == "Bearer" else f"{challenge}, {param}"
        return challenge

    def _challenge(self) -> str | None:
        if self.code == "missing_token":
            return "Bearer"  # RFC 6750 §3.1: no error code when no token was sent
        if self.code == "insufficient_claims" and self.claims is not None:
            # The shape MSAL clients recognise (Microsoft's claims-challenge documentation).
            return (
                f'Bearer realm="", authorization_uri="{_quote(self.authorization_uri or "")}", '
                f'error="insufficient_claims", claims="{_quote(self.claims)}"'
            )
        if self.status_code == 401:
            return f'Bearer error="invalid_token", error_description="{_quote(self.detail)}"'
        if self.code == "insufficient_scope":
            scope = " ".join(self.scopes)
            return (
                f'Bearer error="insufficient_scope", '
                f'error_description="{_quote(self.detail)}", scope="{_quote(scope)}"'
            )
        return None

    def response_headers(self, resource_metadata: str | None = None) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", b"application/json")]
        challenge = self.www_authenticate(resource_metadata)
        if challenge is not None:
            headers.append((b"www-authenticate", challenge.encode("latin-1", "replace")))
        if self.status_code == 503:
            headers.append((b"retry-after", str(self.retry_after).encode()))
        return headers

    def response_body(self) -> bytes:
        return json.dumps({"detail": self.detail, "code": self.code}).encode()


def _quote(text: str) -> str:
    """Make ``text`` safe inside a quoted-string of a header (RFC 7230 §3.2.6)."""
    return "".join(c for c in text if c.isprintable() and c not in '"\\' and ord(c) < 128)


assert set(get_args(ErrorCode)) == set(STATUS_BY_CODE), "every code has exactly one status"
