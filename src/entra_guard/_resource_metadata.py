"""The API as an OAuth protected resource: its declared guards and its RFC 9728 metadata.

``EntraAuthMiddleware`` holds one ``ProtectedResource``. It

- walks the app's routes for the guards they declare (``declared_guards``), and
  at ASGI lifespan start-up runs every guard's ``check_settings`` against the
  settings, so a misconfigured guard (an unmapped authentication context name)
  stops the app with a message instead of failing requests later;
- with ``ENTRA_RESOURCE_METADATA=true``, serves ``GET
  /.well-known/oauth-protected-resource`` (also under the ASGI ``root_path``)
  and gives every 401 challenge ``resource_metadata="<absolute URL>"``, so an
  OAuth client (an MCP client, say) that only knows the API's URL finds the
  authorization server and the scopes to request (docs/step-up.md).

The absolute URL comes from the request as the server saw it: ``scope["scheme"]``
(which uvicorn's proxy-headers middleware sets from ``X-Forwarded-Proto`` only
for ``--forwarded-allow-ips``) and the ``Host`` header. Neither a request nor
the configuration can put a quote or a control character into the header.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import fastapi.routing
from starlette.types import Message, Receive, Scope, Send

from ._auth import EntraAuth
from ._errors import AuthError
from ._guards import Guard
from ._openapi import route_guards, scope_prefix
from ._settings import EntraSettings

logger = logging.getLogger("entra_guard")

#: RFC 9728 §3: where the metadata document lives, relative to the API's root.
WELL_KNOWN_PATH = "/.well-known/oauth-protected-resource"
#: Nesting of mounted apps and routers walked for guards (a cycle cannot hang start-up).
_MAX_DEPTH = 16

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_RE = re.compile(
    rf"^(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]{{2,45}}\])(?::[0-9]{{1,5}})?$"
)
_ROOT_PATH_RE = re.compile(r"^(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*$")
_HTTP_SCHEME = {"http": "http", "ws": "http", "https": "https", "wss": "https"}
_DEFAULT_PORT = {"http": 80, "https": 443}


def iter_guards(guards: Iterable[Guard]) -> Iterator[Guard]:
    """Every guard, and the parts of ``all_of``/``any_of`` compositions, once each."""
    seen: set[int] = set()
    stack = list(guards)[::-1]
    while stack:
        guard = stack.pop()
        if id(guard) in seen:
            continue
        seen.add(id(guard))
        yield guard
        stack.extend(reversed(getattr(guard, "guards", ())))


def declared_guards(app: Any) -> list[Guard]:
    """The guards on every route of ``app`` (HTTP and WebSocket, included routers,
    ``EntraRoute`` route-level guards, mounted sub-apps), in declaration order."""
    found: dict[int, Guard] = {}
    _walk(getattr(app, "routes", ()), found, 0)
    return list(found.values())


def _walk(routes: Sequence[Any], found: dict[int, Guard], depth: int) -> None:
    if depth > _MAX_DEPTH:
        return
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    contexts = iter_route_contexts(routes) if iter_route_contexts is not None else routes
    for route in contexts:
        original = getattr(route, "original_route", route)
        guards: list[Guard] = list(getattr(original, "entra_guards", ()))
        dependant = getattr(route, "dependant", None)
        if dependant is not None:
            guards.extend(route_guards(dependant))
        for guard in guards:
            found.setdefault(id(guard), guard)
        nested = getattr(original, "routes", None)  # Mount, Router, a mounted app
        if isinstance(nested, Sequence) and not isinstance(nested, str):
            _walk(nested, found, depth + 1)


def declared_scopes(guards: Iterable[Guard], settings: EntraSettings) -> list[str]:
    """Full scope values (``api://{client_id}/Items.Read``) the declared guards accept."""
    prefix = scope_prefix(settings)
    names = {name for guard in guards for alt in guard.scope_alternatives() for name in alt}
    return sorted(prefix + name for name in names)


def check_guards(guards: Iterable[Guard], settings: EntraSettings) -> None:
    """Run each guard's ``check_settings`` (raises ``ValueError`` naming the problem)."""
    for guard in iter_guards(guards):
        check = getattr(guard, "check_settings", None)
        if callable(check):
            check(settings)


async def authorization_server(auth: EntraAuth) -> str:
    """The tenant's v2 issuer from its metadata; the authority URL for a multi-tenant
    template (``{tenantid}``) or while the metadata cannot be loaded."""
    settings = auth.settings
    try:
        issuer = (await auth.metadata.get()).issuers.get("2.0")
    except AuthError:
        issuer = None
    if isinstance(issuer, str) and "{" not in issuer:
        return issuer
    return f"{settings.authority}/v2.0"


class ProtectedResource:
    """The middleware's door to start-up checks and RFC 9728 (see the module docstring)."""

    def __init__(self, auths: EntraAuth | Sequence[EntraAuth]) -> None:
        self.auths: tuple[EntraAuth, ...] = (
            (auths,) if isinstance(auths, EntraAuth) else tuple(auths)
        )
        settings = self.auths[0].settings
        #: ``ENTRA_RESOURCE_METADATA`` (of the first ``EntraAuth`` when there are several).
        self.enabled = settings.resource_metadata
        self.resource = settings.resource_uri or f"api://{settings.client_id}"
        self._scopes: list[str] | None = None

    # -- start-up -----------------------------------------------------------------

    def prepare(self, app: Any) -> None:
        """Check every declared guard against the settings; remember the scopes."""
        guards = declared_guards(app)
        for auth in self.auths:
            check_guards(guards, auth.settings)
        self._scopes = declared_scopes(guards, self.auths[0].settings)

    def lifespan_receive(self, scope: Scope, receive: Receive, send: Send) -> Receive:
        """``receive`` for the app's lifespan: runs ``prepare`` on ``lifespan.startup``;
        a failure is reported as ``lifespan.startup.failed`` (uvicorn logs it and exits)."""
        app = scope.get("app")

        async def receive_checked() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup" and app is not None:
                try:
                    self.prepare(app)
                except Exception as exc:  # any failure must stop the start-up, not be ignored
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    raise
            return message

        return receive_checked

    # -- the document -------------------------------------------------------------

    def serves(self, scope: Scope) -> bool:
        """Is this request for the metadata document (when enabled)?"""
        if not self.enabled or scope["type"] != "http":
            return False
        path = str(scope.get("path", ""))
        return path == WELL_KNOWN_PATH or path == str(scope.get("root_path", "")) + WELL_KNOWN_PATH

    async def document(self, app: Any) -> dict[str, Any]:
        if self._scopes is None:
            self.prepare(app)
        servers = [await authorization_server(auth) for auth in self.auths]
        return {
            "resource": self.resource,
            "authorization_servers": list(dict.fromkeys(servers)),
            "scopes_supported": list(self._scopes or ()),
            "bearer_methods_supported": ["header"],
        }

    async def serve(self, scope: Scope, send: Send) -> None:
        """Answer ``GET``/``HEAD`` with the JSON document; other methods get 405."""
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            status, body = 405, b'{"detail": "Method Not Allowed"}'
            headers = [(b"allow", b"GET, HEAD")]
        else:
            document = await self.document(scope.get("app"))
            status, body = 200, json.dumps(document).encode()
            headers = [(b"cache-control", b"max-age=300")]
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    def url(self, scope: Scope) -> str | None:
        """Absolute URL of the document for this request, or None (disabled, or no usable
        host: a ``Host`` header that is not a host name is never echoed)."""
        if not self.enabled:
            return None
        scheme = _HTTP_SCHEME.get(str(scope.get("scheme", "http")), "http")
        host = _host(scope, scheme)
        if host is None:
            return None
        root_path = str(scope.get("root_path", ""))
        if root_path and (len(root_path) > 1024 or not _ROOT_PATH_RE.match(root_path)):
            root_path = ""
        return f"{scheme}://{host}{root_path.rstrip('/')}{WELL_KNOWN_PATH}"


def _host(scope: Scope, scheme: str) -> str | None:
    """The ``Host`` header when it is a valid host[:port]; else the server address."""
    for name, value in scope.get("headers", ()):
        if name == b"host":
            text: str = bytes(value).decode("latin-1")
            if len(text) <= 261 and _HOST_RE.match(text):
                return text
            break
    server = scope.get("server")
    if not server or not isinstance(server[0], str):
        return None
    address: str = server[0]
    port = server[1]
    if ":" in address:
        address = f"[{address}]"
    if not _HOST_RE.match(address):
        return None
    return address if port in (None, _DEFAULT_PORT[scheme]) else f"{address}:{port}"


__all__ = ["WELL_KNOWN_PATH", "ProtectedResource", "declared_guards", "iter_guards"]
