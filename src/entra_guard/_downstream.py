"""FastAPI dependencies that call downstream APIs as the caller (docs/downstream.md).

    @app.get("/me/graph")
    async def me(graph: httpx.AsyncClient = Depends(downstream_client(GRAPH, scopes=[...]))):
        return (await graph.get("/v1.0/me")).json()

``downstream_token(*scopes)`` gives the on-behalf-of token itself;
``downstream_client(base_url, scopes=[...])`` gives an ``httpx.AsyncClient``
that sends it. The client is a per-request view of one pooled client per base
URL (owned and closed by ``EntraAuth``), so a request costs no new connection
pool. When the downstream API answers 401 with a claims challenge
(``error="insufficient_claims", claims="..."``: Continuous Access Evaluation),
the view acquires once more with those claims and retries once; a second
challenge becomes 401 ``insufficient_claims`` for the caller, who signs in
again with the claims.
"""

# No ``from __future__ import annotations`` here: FastAPI before 0.123.7 does not
# resolve string annotations of a callable instance (docs/supported-versions.md).

import re
from collections.abc import AsyncGenerator, Generator, Sequence

import httpx
from starlette.requests import HTTPConnection
from starlette.types import Scope

from ._auth import EntraAuth
from ._errors import AuthError
from ._middleware import AUTH_KEY, ERROR_KEY, PRINCIPAL_KEY
from ._obo import normalize_scopes
from ._principal import Principal
from ._token_cache import digest_bytes

_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*"([^"]*)"')


def claims_challenge(response: httpx.Response) -> str | None:
    """The ``claims`` of a 401 ``insufficient_claims`` challenge, else None."""
    if response.status_code != 401:
        return None
    for header in response.headers.get_list("www-authenticate"):
        params: dict[str, str] = dict(_PARAM.findall(header[:8192]))
        claims = params.get("claims")
        if params.get("error") == "insufficient_claims" and claims:
            return claims
    return None


class _CallerAuth(httpx.Auth):
    """Sends the caller's downstream token; answers one claims challenge."""

    requires_request_body = True  # the retry re-sends the body

    def __init__(
        self,
        auth: EntraAuth,
        token: bytes,
        principal: Principal,
        scopes: tuple[str, ...],
        access: str,
    ) -> None:
        self._auth = auth
        self._token = token
        self._principal = principal
        self._scopes = scopes
        self._access = access

    def __repr__(self) -> str:
        return f"_CallerAuth(scopes={self._scopes!r})"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise RuntimeError("downstream clients are async (httpx.AsyncClient)")
        yield request  # pragma: no cover

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["authorization"] = f"Bearer {self._access}"
        response = yield request
        challenge = claims_challenge(response)
        if challenge is None:
            return
        try:
            self._access = await self._auth.acquire_token_on_behalf_of(
                self._token.decode("ascii"), self._scopes, claims=challenge
            )
        except ValueError:  # the downstream API sent a claims value that is not JSON
            raise AuthError(
                "downstream_unavailable",
                "A downstream API answered an unreadable claims challenge",
                reason="bad_challenge",
            ) from None
        request.headers["authorization"] = f"Bearer {self._access}"
        response = yield request
        again = claims_challenge(response)
        if again is not None:
            raise AuthError(
                "insufficient_claims",
                "A downstream API needs more from the sign-in (Continuous Access "
                "Evaluation): sign in again with the claims challenge",
                claims=again,
                authorization_uri=self._auth.obo.authorize_endpoint(self._principal.tenant_id),
            )


def _caller(scope: Scope) -> tuple[EntraAuth, bytes, Principal]:
    """The ``EntraAuth``, the raw token and the caller the middleware validated for this
    request.

    Hot path (every request of a downstream route): the token stays bytes; it is
    decoded only when a grant is needed. A principal in the scope means the
    middleware accepted exactly one ``Authorization: Bearer <token>`` header, and a
    verified token is ASCII, so these bytes hash to the same cache key as the string.
    """
    auth: EntraAuth | None = scope.get(AUTH_KEY)
    if auth is None:
        raise RuntimeError(
            "downstream_token/downstream_client need EntraAuthMiddleware: "
            "app.add_middleware(EntraAuthMiddleware, auth=auth)"
        )
    principal: Principal | None = scope.get(PRINCIPAL_KEY)
    if principal is not None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return auth, value.partition(b" ")[2].strip(b" \t"), principal
    error = scope.get(ERROR_KEY)
    raise error if error is not None else AuthError("missing_token", "This route needs a token")


class downstream_token:  # a dependency factory, named like a function
    """``Depends(downstream_token("https://graph.microsoft.com/User.Read"))``: the caller's
    on-behalf-of token for those scopes (docs/downstream.md)."""

    def __init__(self, *scopes: str) -> None:
        self.scopes = normalize_scopes(scopes)

    async def __call__(self, connection: HTTPConnection) -> str:
        auth, token, principal = _caller(connection.scope)
        return await auth.obo.acquire(token, digest_bytes(token), principal, self.scopes)

    def __repr__(self) -> str:
        return f"downstream_token{self.scopes!r}"


class downstream_client:  # a dependency factory, named like a function
    """``Depends(downstream_client(base_url, scopes=[...]))``: an ``httpx.AsyncClient`` for
    ``base_url`` whose requests carry the caller's on-behalf-of token.

    ``transport`` replaces the network for this base URL (tests, an in-process fake).
    """

    def __init__(
        self,
        base_url: str,
        scopes: Sequence[str],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url must be an absolute http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.scopes = normalize_scopes(scopes)
        self.transport = transport

    async def __call__(self, connection: HTTPConnection) -> httpx.AsyncClient:
        auth, token, principal = _caller(connection.scope)
        access = await auth.obo.acquire(token, digest_bytes(token), principal, self.scopes)
        clients = auth.downstream
        return clients.view(
            clients.pool(self.base_url, self.transport),
            _CallerAuth(auth, token, principal, self.scopes, access),
        )

    def __repr__(self) -> str:
        return f"downstream_client({self.base_url!r}, scopes={list(self.scopes)!r})"


__all__ = ["downstream_client", "downstream_token"]
