"""``EntraAuthMiddleware``: pure ASGI, one job: turn the bearer token into a caller.

It validates the token when one is sent and stores the outcome in the ASGI
scope; it does not refuse requests by itself, so public routes keep working
with a bad token. Guards (``entra_guard.guards``) read the outcome and raise
``AuthError``; this middleware turns any ``AuthError`` raised below it into
the docs/troubleshooting.md "Codes" response (HTTP) or a 1008 close (WebSocket).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._auth import EntraAuth
from ._authorities import AuthorityRouter
from ._errors import AuthError
from ._logging import loggable
from ._validation import MAX_TOKEN_LENGTH, decode_json_segment

logger = logging.getLogger("entra_guard")

#: ASGI scope keys (also reachable as ``request.scope[...]``).
PRINCIPAL_KEY = "entra_guard.principal"
ERROR_KEY = "entra_guard.error"
AUTH_KEY = "entra_guard.auth"

_ANONYMOUS = UnauthenticatedUser()
_RESPONSE_STARTED = frozenset(
    {"http.response.start", "websocket.accept", "websocket.close", "websocket.http.response.start"}
)


def missing_token() -> AuthError:
    """A fresh refusal per request: a shared instance would carry one request's
    traceback (and through it, its scope) into the next."""
    return AuthError("missing_token", "This route needs a bearer token")


def bearer_credentials(scope: Scope) -> tuple[bytes | None, AuthError | None]:
    """The token from ``Authorization: Bearer ...``, as the bytes that were sent; never
    from the query string or cookies."""
    raw = None
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            if raw is not None:
                return None, AuthError(
                    "malformed_token", "More than one Authorization header was sent"
                )
            raw = value
    if raw is None:
        return None, missing_token()
    scheme, _, credentials = raw.partition(b" ")
    if scheme.lower() != b"bearer":
        return None, missing_token()  # Basic, Negotiate, ...: not ours (RFC 6750 §3.1)
    credentials = credentials.strip(b" \t")
    if not credentials:
        return None, AuthError("missing_token", "The bearer token is empty")
    if len(credentials) > MAX_TOKEN_LENGTH:
        return None, AuthError(
            "malformed_token", f"The token is larger than {MAX_TOKEN_LENGTH} bytes"
        )
    return credentials, None


def bearer_token(scope: Scope) -> tuple[str | None, AuthError | None]:
    """``bearer_credentials`` as text (Latin-1, as HTTP sends header values)."""
    credentials, error = bearer_credentials(scope)
    return (None if credentials is None else credentials.decode("latin-1")), error


def unverified_kid(scope: Scope) -> str | None:
    """The ``kid`` (or ``x5t``) of the request's token header, for logs only."""
    token, _ = bearer_token(scope)
    if token is None:
        return None
    try:
        header = decode_json_segment(token.partition(".")[0], "header")
    except AuthError:
        return None
    kid = header.get("kid", header.get("x5t"))
    return kid if isinstance(kid, str) else None


def excluded_path(path: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or below one, by whole segments:
    ``/public`` covers ``/public`` and ``/public/x``, not ``/publications``."""
    for prefix in prefixes:
        if path == prefix or path.startswith(prefix + "/") or prefix == "":
            return True
    return False


def log_rejection(scope: Scope, exc: AuthError, auth: EntraAuth | None) -> None:
    """One INFO line per refusal, HTTP and WebSocket alike: code, kid, and tid/oid/app
    only once verified. Every value goes through ``loggable``, so a request can never
    forge a log line (docs/operations.md "Logging").

    Never the token; PII claims (name, UPN) only with ``log_pii``.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    principal = scope.get(PRINCIPAL_KEY)  # set only when the token verified
    fields: dict[str, Any] = {
        "code": exc.code,
        "status": exc.status_code,
        "path": loggable(scope.get("path", ""), 200),
        "kid": loggable(unverified_kid(scope)),
        "tid": loggable(getattr(principal, "tenant_id", None)),
        "oid": loggable(getattr(principal, "object_id", None)),
        "app": loggable(getattr(principal, "app_id", None)),
    }
    if scope.get("type") == "websocket":
        fields["status"] = 1008  # the close code
    if principal is not None and auth is not None and auth.settings.log_pii:
        fields["name"] = loggable(principal.name, 100)
        fields["upn"] = loggable(principal.preferred_username, 100)
    logger.info(
        "request rejected: %s",
        " ".join(f"{k}={v}" for k, v in fields.items()),
        extra={f"entra_{k}": v for k, v in fields.items()},
    )


class EntraAuthMiddleware:
    """``app.add_middleware(EntraAuthMiddleware, auth=auth)``, or ``auth=[a, b, ...]`` for
    several authorities (docs/customer-identities.md "Several authorities on one API"):
    the token's unverified ``iss`` picks the ``EntraAuth`` that validates it, and the
    scope's ``AUTH_KEY`` is the one that accepted it (the first one for refusals before
    that)."""

    def __init__(
        self,
        app: ASGIApp,
        auth: EntraAuth | Sequence[EntraAuth],
        exclude_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.router = AuthorityRouter((auth,) if isinstance(auth, EntraAuth) else tuple(auth))
        #: The first ``EntraAuth`` (the only one, usually).
        self.auth = self.router.primary
        self._single = len(self.router.auths) == 1
        # The header's bytes spare a cache hit two copies of the token; a subclass that
        # overrides ``authenticate`` gets the ``str`` it was written for.
        self._sends_bytes = type(self.auth).authenticate is EntraAuth.authenticate
        #: Whole-segment prefixes (a trailing ``/`` is ignored): see ``excluded_path``.
        self.exclude_paths = tuple(p.rstrip("/") for p in exclude_paths)
        # Start-up checks of the declared guards and RFC 9728 metadata (docs/step-up.md);
        # imported here: that module imports the guards, which import this one.
        from ._resource_metadata import ProtectedResource

        self.resource = ProtectedResource(self.router.auths)
        self._serves_metadata = self.resource.enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            if scope["type"] == "lifespan":
                receive = self.resource.lifespan_receive(scope, receive, send)
            await self.app(scope, receive, send)
            return
        if self._serves_metadata and self.resource.serves(scope):
            await self.resource.serve(scope, send)
            return
        scope[AUTH_KEY] = self.auth
        excluded = bool(self.exclude_paths) and excluded_path(
            scope.get("path", ""), self.exclude_paths
        )
        token, error = (None, missing_token()) if excluded else bearer_credentials(scope)
        principal = None
        if token is not None:
            try:
                if self._single:
                    principal = await self.auth.authenticate(
                        token if self._sends_bytes else token.decode("latin-1")
                    )
                else:
                    scope[AUTH_KEY], principal = await self.router.authenticate(
                        token.decode("latin-1")
                    )
            except AuthError as exc:
                # Without its traceback: the traceback holds this frame, which holds the
                # scope, which holds the error: a reference cycle per refused request,
                # left to the cyclic GC (full collections of ~35 ms under a bad-token load).
                error = exc.with_traceback(None)
        scope[PRINCIPAL_KEY] = principal
        scope[ERROR_KEY] = error
        if principal is not None:
            scope["user"] = principal
            # ``request.auth``: ``scp:<scope>`` and ``role:<app role>``, never one bare
            # namespace: Entra permission names can exist as both (``User.Read.All``), so
            # Starlette's ``@requires("role:Admin")`` must not be satisfied by a delegated
            # scope named ``Admin`` (docs/getting-started.md "Use it in your API"). Built once per
            # ``Principal`` (``auth_scopes``), which the verified-token cache keeps.
            scope["auth"] = AuthCredentials(principal.auth_scopes)
        else:
            scope["user"] = _ANONYMOUS
            scope["auth"] = AuthCredentials()  # its list is the request's to change

        started = False

        def send_tracking(message: Message) -> Awaitable[None]:
            # Hands back ``send``'s own awaitable: a coroutine of its own per message
            # would cost ~4,500 CPU instructions per request (docs/benchmarks.md, 2b).
            nonlocal started
            if message["type"] in _RESPONSE_STARTED:
                started = True
            return send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except AuthError as exc:
            if started:
                raise
            try:
                await self.reject(scope, send, exc)
            finally:
                exc.__traceback__ = None  # same cycle as above (guard frame -> scope -> error)

    async def reject(self, scope: Scope, send: Send, exc: AuthError) -> None:
        """Send the refusal: JSON + RFC 6750 headers, or a 1008 WebSocket close."""
        auth = scope.get(AUTH_KEY)
        if not isinstance(auth, EntraAuth):
            auth = self.auth
        auth.observer.rejected(exc.code)
        log_rejection(scope, exc, auth)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": exc.code})
            return
        body = exc.response_body()
        metadata_url = self.resource.url(scope) if exc.status_code == 401 else None
        headers = exc.response_headers(metadata_url)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})
