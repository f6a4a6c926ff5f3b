"""A fake Microsoft Graph for groups overage tests, beside ``FakeEntraID``.

    idp = FakeEntraID()
    graph = FakeGraph(idp)
    idp.confidential_clients[idp.client_id] = "s3cret"
    graph.set_groups(oid, ["<group id>", ...])
    with LiveServer(idp.app) as login, LiveServer(graph.app) as g:
        settings = idp.settings(login.url, graph_url=g.url, client_secret="s3cret")

It only accepts app tokens that ``idp``'s token endpoint issued (client
credentials, scope ``{this server}/.default``), serves
``/v1.0/{users|servicePrincipals}/{id}/transitiveMemberOf`` with
``@odata.nextLink`` paging, and can
throttle (429 + ``Retry-After``) or fail on demand. ``hits``,
``membership_lookups`` and ``tokens_used`` let tests count what the API did.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections import Counter
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._idp import FakeEntraID
from ._obo import OboGrant

#: What the fake's CAE challenge asks for (as Graph does after a revocation event).
CAE_CLAIMS = '{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}'

MAX_TOP = 999
DEFAULT_TOP = 100


@dataclass
class _Fault:
    status: int
    retry_after: float | None
    remaining: int | None  # None: until recover()


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


class FakeGraph:
    """Fake Microsoft Graph. Serve ``.app`` (e.g. with ``LiveServer``)."""

    __test__ = False

    def __init__(
        self, idp: FakeEntraID, *, memberships: MutableMapping[str, list[str]] | None = None
    ) -> None:
        self.idp = idp
        #: object id (user or service principal, lower-case) -> transitive group ids; pass
        #: your own mapping to share them (e.g. between the workers of a dev server)
        self.memberships: MutableMapping[str, list[str]] = (
            memberships if memberships is not None else {}
        )
        #: ``x-ms-throttle-priority`` of the requests received, with how often
        self.priorities: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()
        #: membership look-ups started (first pages)
        self.membership_lookups = 0
        #: app tokens presented, with how often
        self.tokens_used: Counter[str] = Counter()
        self.response_delay = 0.0
        #: base URL written into ``@odata.nextLink`` (default: this server), to test that
        #: a client never follows a link off its Graph host
        self.next_link_base: str | None = None
        self._fault: _Fault | None = None
        self._lock = threading.Lock()
        self._init_delegated()
        routes = [
            # Delegated (on-behalf-of) calls, before the ``{kind}/{oid}`` patterns.
            Route("/v1.0/me", self._me, methods=["GET"]),
            Route("/v1.0/me/getMemberObjects", self._my_member_objects, methods=["POST"]),
            Route("/v1.0/{kind}/{oid}/transitiveMemberOf", self._transitive, methods=["GET"]),
        ]
        self.app = Starlette(routes=routes)

    # -- set-up -----------------------------------------------------------------------

    def set_groups(self, object_id: str, group_ids: Iterable[str]) -> None:
        """The transitive memberships of a user or service principal."""
        self.memberships[object_id.lower()] = list(group_ids)

    def throttle(self, times: int = 1, *, retry_after: float = 1, status: int = 429) -> None:
        """Answer the next ``times`` Graph calls with ``status`` + ``Retry-After``."""
        self._fault = _Fault(status=status, retry_after=retry_after, remaining=times)

    def fail(self, status: int = 503, *, times: int | None = None) -> None:
        """Answer ``status`` (no ``Retry-After``) ``times`` times or until ``recover()``."""
        self._fault = _Fault(status=status, retry_after=None, remaining=times)

    def recover(self) -> None:
        self._fault = None

    def reset(self) -> None:
        """Forget faults, counters and memberships."""
        self._fault = None
        self.hits.clear()
        self.priorities.clear()
        self.tokens_used.clear()
        self.membership_lookups = 0
        self.memberships.clear()
        self.response_delay = 0.0
        self.next_link_base = None
        self._init_delegated()

    def tenants_used(self) -> set[str]:
        """Tenants of the app tokens presented."""
        issued = self.idp.issued_app_tokens
        return {issued[t][0] for t in self.tokens_used if t in issued}

    # -- HTTP -------------------------------------------------------------------------

    async def _gate(self, request: Request) -> Response | None:
        """Count, authenticate the app token, then apply an injected fault."""
        with self._lock:
            self.hits[request.url.path] += 1
            self.priorities[request.headers.get("x-ms-throttle-priority", "")] += 1
        if self.response_delay:
            await asyncio.sleep(self.response_delay)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _error(401, "InvalidAuthenticationToken", "Access token is empty.")
        issued = self.idp.issued_app_tokens.get(token)
        base = str(request.base_url).rstrip("/")
        if issued is None:
            return _error(401, "InvalidAuthenticationToken", "Access token validation failure.")
        _tenant, scope, expires_at = issued
        if expires_at <= time.time():
            return _error(401, "InvalidAuthenticationToken", "Lifetime validation failed.")
        if scope != f"{base}/.default":
            return _error(401, "InvalidAuthenticationToken", "Invalid audience.")
        with self._lock:
            self.tokens_used[token] += 1
            fault = self._fault
            if fault is not None and fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._fault = None
        if fault is None:
            return None
        headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
        if fault.status == 429:  # as Graph's identity service answers a throttled app
            headers["x-ms-throttle-scope"] = f"Tenant_Application/Read/{_tenant}"
        return _error(fault.status, "injected", "Injected failure.", headers)

    async def _groups_of(self, request: Request) -> list[str] | Response:
        """The caller's memberships, or the refusal (auth, injected fault, unknown oid)."""
        refused = await self._gate(request)
        if refused is not None:
            return refused
        kind, oid = request.path_params["kind"], request.path_params["oid"].lower()
        if kind not in ("users", "servicePrincipals"):
            return _error(400, "BadRequest", f"Unsupported segment {kind}")
        groups = self.memberships.get(oid)
        if groups is None:
            return _error(404, "Request_ResourceNotFound", f"Resource '{oid}' does not exist.")
        return groups

    async def _transitive(self, request: Request) -> Response:
        groups = await self._groups_of(request)
        if isinstance(groups, Response):
            return groups
        query = request.query_params
        try:
            top = min(int(query.get("$top", DEFAULT_TOP)), MAX_TOP)
            skip = int(query.get("$skiptoken", "0"))
        except ValueError:
            return _error(400, "BadRequest", "Invalid paging parameter")
        if skip == 0:
            with self._lock:
                self.membership_lookups += 1
        page = groups[skip : skip + top]
        body: dict[str, object] = {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#directoryObjects(id)",
            "value": [{"@odata.type": "#microsoft.graph.group", "id": g} for g in page],
        }
        if skip + top < len(groups):
            base = self.next_link_base or str(request.base_url).rstrip("/")
            body["@odata.nextLink"] = (
                f"{base}{request.url.path}?$select=id&$top={top}&$skiptoken={skip + top}"
            )
        # transitiveMemberOf costs 2 resource units, 1 with $select (Graph throttling docs).
        units = "1" if "$select" in query else "2"
        return JSONResponse(body, headers={"x-ms-resource-unit": units})

    # -- delegated calls with on-behalf-of tokens (docs/downstream.md) --

    def _init_delegated(self) -> None:
        self._cae_challenges = 0
        self.cae_claims = CAE_CLAIMS
        #: ``/v1.0/me`` answers (200s) served
        self.me_calls = 0

    def cae_challenge(self, times: int = 1, *, claims: str = CAE_CLAIMS) -> None:
        """Answer the next ``times`` delegated calls with a CAE claims challenge (401
        ``insufficient_claims``, ``claims`` = base64 of ``claims``)."""
        self._cae_challenges = times
        self.cae_claims = claims

    def _delegated_gate(self, request: Request) -> OboGrant | Response:
        """The OBO grant behind the request's token (User.Read on this Graph), or the 401."""
        with self._lock:
            self.hits[request.url.path] += 1
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        grant = self.idp.issued_obo_tokens.get(token) if scheme.lower() == "bearer" else None
        if grant is None or grant.expires_at <= time.time():
            return _error(401, "InvalidAuthenticationToken", "Access token validation failure.")
        base = str(request.base_url).rstrip("/")
        if not {f"{base}/User.Read", f"{base}/.default"} & set(grant.scope.split()):
            return _error(403, "Authorization_RequestDenied", "Insufficient privileges.")
        with self._lock:
            challenge = self._cae_challenges > 0
            if challenge:
                self._cae_challenges -= 1
            fault = self._fault  # throttle()/fail() apply to delegated calls too
            if fault is not None and fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._fault = None
        if fault is not None:
            headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            return _error(fault.status, "injected", "Injected failure.", headers)
        if challenge:
            encoded = base64.b64encode(self.cae_claims.encode()).decode()
            header = (
                'Bearer realm="", authorization_uri="https://login.microsoftonline.com/'
                f'common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000", '
                f'error="insufficient_claims", claims="{encoded}"'
            )
            return _error(
                401,
                "InvalidAuthenticationToken",
                "Continuous access evaluation resulted in challenge.",
                {"WWW-Authenticate": header},
            )
        return grant

    async def _me(self, request: Request) -> Response:
        grant = self._delegated_gate(request)
        if isinstance(grant, Response):
            return grant
        with self._lock:
            self.me_calls += 1
        return JSONResponse(
            {
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
                "id": grant.object_id,
                "displayName": "Ada Lovelace",
                "userPrincipalName": "ada@contoso.example",
            }
        )

    async def _my_member_objects(self, request: Request) -> Response:
        grant = self._delegated_gate(request)
        if isinstance(grant, Response):
            return grant
        with self._lock:
            self.membership_lookups += 1
        return JSONResponse({"value": list(self.memberships.get(grant.object_id.lower(), []))})
