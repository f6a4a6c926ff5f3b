"""FastAPI dependencies that authorize the caller the middleware authenticated.

Every guard is an ``async`` dependency taking only the ``HTTPConnection``, so it
works on HTTP and WebSocket routes and FastAPI never sends it to a thread pool.
Failures raise ``AuthError``; ``EntraAuthMiddleware`` renders them.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from .errors import AuthError
from .middleware import ERROR_KEY, PRINCIPAL_KEY
from .principal import Principal


async def require_principal(connection: HTTPConnection) -> Principal:
    """The validated caller, or 401 with the reason the token was refused."""
    principal = connection.scope.get(PRINCIPAL_KEY)
    if principal is not None:
        return principal  # type: ignore[no-any-return]
    if ERROR_KEY not in connection.scope:
        raise RuntimeError(
            "entra-guard guards need EntraAuthMiddleware: "
            "app.add_middleware(EntraAuthMiddleware, auth=auth)"
        )
    error = connection.scope[ERROR_KEY]
    raise error if error is not None else AuthError("missing_token", "This route needs a token")
