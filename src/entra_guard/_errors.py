"""Every way a request can be refused, as one exception type with a stable code.

The codes and statuses are part of the public contract (README "Codes"); the
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

    def __repr__(self) -> str:
        return f"AuthError(code={self.code!r}, detail={self.detail!r})"

    def www_authenticate(self) -> str | None:
        """RFC 6750 §3 challenge, or None where the status carries none."""
        if self.code == "missing_token":
            return "Bearer"  # RFC 6750 §3.1: no error code when no token was sent
        if self.status_code == 401:
            return f'Bearer error="invalid_token", error_description="{_quote(self.detail)}"'
        if self.code == "insufficient_scope":
            scope = " ".join(self.scopes)
            return (
                f'Bearer error="insufficient_scope", '
                f'error_description="{_quote(self.detail)}", scope="{_quote(scope)}"'
            )
        return None

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", b"application/json")]
        challenge = self.www_authenticate()
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
