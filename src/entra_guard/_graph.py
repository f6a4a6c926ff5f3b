"""Groups overage: transitive group memberships from Microsoft Graph.

When a user is in too many groups, Entra leaves the ``groups`` claim out and
marks the token instead (``_claim_names.groups`` or ``hasgroups``). The
``_claim_sources`` URL in such a token is never fetched (it is a legacy
endpoint, and following a URL taken from a token is SSRF). Instead this
client asks Microsoft Graph at ``settings.graph_url`` with an app token from
the caller's tenant (client credentials):

    GET {graph_url}/v1.0/users/{oid}/transitiveMemberOf?$select=id&$top=999
    GET {graph_url}/v1.0/servicePrincipals/{oid}/transitiveMemberOf?...   (app-only)

following ``@odata.nextLink`` (only ever on ``graph_url``). Results are cached
per ``(tid, oid)`` for ``groups_cache_ttl`` seconds, concurrent look-ups of
one caller share a single Graph round trip, and 429/503 ``Retry-After`` is
honoured within a ~10 s budget per look-up. Anything else fails closed with
503 ``groups_unavailable``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ._credentials import ClientCredential, load_credential
from ._errors import AuthError
from ._http import FetchError, request_json
from ._logging import loggable
from ._observer import AuthObserver
from ._principal import Principal
from ._settings import GUID_RE, EntraSettings
from ._shared_cache import SharedCache

logger = logging.getLogger("entra_guard")

#: Total time one membership look-up may spend, retries and Retry-After waits included.
LOOKUP_BUDGET = 10.0
#: HTTP attempts per Graph or token request (the first one included).
MAX_ATTEMPTS = 4
#: Statuses worth retrying after a pause.
RETRYABLE = frozenset({429, 500, 502, 503, 504})
#: Distinct callers looked up at the same time (the rest wait their turn).
MAX_CONCURRENT_LOOKUPS = 16
#: Distinct callers waiting for a look-up; beyond this new ones get 503 at once.
MAX_PENDING_LOOKUPS = 1024
#: Pages of ``transitiveMemberOf`` followed at most (999 ids each).
MAX_PAGES = 200
#: App tokens are renewed this long before they expire.
TOKEN_RENEW_MARGIN = 300.0
#: Tenants whose app token is kept.
TOKEN_CACHE_SIZE = 1024
PAGE_SIZE = 999


class Endpoint(enum.Enum):
    """Which outbound call failed."""

    GRAPH = "Microsoft Graph"
    TOKEN = "the token endpoint"


class Cause(enum.Enum):
    """Why a membership look-up failed (for the log line; the client only sees 503)."""

    NO_OBJECT_ID = "the token has a groups overage marker but no usable 'oid'"
    NOT_CONFIGURED = (
        "groups overage needs Microsoft Graph: set ENTRA_CLIENT_SECRET (or a certificate "
        "or a federated token file) with the GroupMember.Read.All application permission "
        "granted, or ENTRA_GROUPS_VIA_OBO"
    )
    BUSY = "too many group look-ups in progress"
    THROTTLED = "Microsoft Graph is throttling this tenant; waiting for its Retry-After"
    TIMEOUT = "no answer within the look-up budget"
    UNREACHABLE = "could not be reached"
    REFUSED = (
        "refused the request: check ENTRA_CLIENT_SECRET and that the "
        "GroupMember.Read.All application permission is granted"
    )
    HTTP_ERROR = "answered an HTTP error"
    NO_ACCESS_TOKEN = "answered without an access_token"
    BAD_DOCUMENT = "answered an unexpected document"
    TOO_MANY_PAGES = "returned too many pages of groups"
    FOREIGN_NEXT_LINK = "returned a next link outside ENTRA_GRAPH_URL"
    UNEXPECTED = "failed unexpectedly"


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed look-up: logged once (``GraphClient._log``), then a fresh 503 per waiter."""

    cause: Cause
    endpoint: Endpoint | None = None
    status: int | None = None
    retry_after: float | None = None
    note: str | None = None

    def describe(self) -> str:
        parts = [self.endpoint.value] if self.endpoint is not None else []
        parts.append(self.cause.value)
        if self.status is not None:
            parts.append(f"(HTTP {self.status})")
        if self.note:
            parts.append(f"({self.note})")
        return " ".join(parts)

    def auth_error(self) -> AuthError:
        """Fail closed. The client never sees the cause (it may hint at configuration)."""
        seconds = None if self.retry_after is None else max(1, math.ceil(self.retry_after))
        return AuthError("groups_unavailable", UNAVAILABLE_DETAIL, retry_after=seconds)


class _Shared(Exception):
    """Carries a logged failure to every caller waiting on one look-up."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.cause.name)
        self.failure = failure


def graph_cache(settings: EntraSettings, clock: Callable[[], float]) -> SharedCache:
    """An in-process cache for a ``GraphClient`` built on its own (tests, tools)."""
    return SharedCache(
        settings.client_id,
        None,
        sizes={"groups": settings.groups_cache_size, "graph-token": TOKEN_CACHE_SIZE},
        clock=clock,
    )


class _LookupFailed(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.cause.name)
        self.failure = failure


#: What the client is told; the cause goes to the log only.
UNAVAILABLE_DETAIL = "Group membership could not be determined right now; try again later"


class GraphClient:
    """Resolves groups overage for one ``EntraAuth`` (created and closed by it)."""

    def __init__(
        self,
        settings: EntraSettings,
        http: httpx.AsyncClient,
        *,
        observer: AuthObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        budget: float = LOOKUP_BUDGET,
        credential: ClientCredential | None = None,
        cache: SharedCache | None = None,
    ) -> None:
        self.settings = settings
        #: The API's client credential (docs/downstream.md); default: the secret.
        self.credential = credential if credential is not None else load_credential(settings)
        self.http = http
        self.observer = observer or AuthObserver()
        self._clock = clock
        self.budget = budget
        #: Memberships, app tokens and throttling, shared by every worker when the cache
        #: has a backend (docs/operations.md "Running several workers and replicas").
        self.cache = cache if cache is not None else graph_cache(settings, clock)
        self._owns_cache = cache is None
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_LOOKUPS)

    # -- public ---------------------------------------------------------------------

    async def group_ids(self, principal: Principal) -> frozenset[str]:
        """Transitive group (and directory role) ids of the caller, lower-cased.

        Tokens without an overage marker answer from their own ``groups``
        claim; Graph is only asked when the token says it left groups out.
        """
        if not principal.groups_overage:
            return principal.groups  # lower-cased by Principal
        outcome = await self._outcome(principal)
        if isinstance(outcome, Failure):
            raise outcome.auth_error()
        return outcome

    async def _outcome(self, principal: Principal) -> frozenset[str] | Failure:
        tid, oid = principal.tenant_id, principal.object_id
        if oid is None or not GUID_RE.fullmatch(oid) or not GUID_RE.fullmatch(tid):
            return self._log(Failure(Cause.NO_OBJECT_ID), tid, oid)
        if self.credential is None:
            return self._log(Failure(Cause.NOT_CONFIGURED), tid, oid)
        key = f"{tid}/{oid}"
        local = self.cache.peek("groups", key)
        if local is not None:
            self.observer.groups_cache(hit=True)
            return frozenset(local)
        if self.cache.pending >= MAX_PENDING_LOOKUPS:
            return self._log(Failure(Cause.BUSY, retry_after=1), tid, oid)
        looked_up = False

        async def lookup() -> tuple[list[str], float]:
            nonlocal looked_up
            looked_up = True
            self.observer.groups_cache(hit=False)
            outcome = await self._shared_lookup(tid, oid, app_only=principal.is_app_only)
            if isinstance(outcome, Failure):
                raise _Shared(outcome)  # reaches every waiter; never cached
            return sorted(outcome), self.settings.groups_cache_ttl

        try:
            groups = await self.cache.get_or_compute("groups", key, lookup)
        except _Shared as shared:
            return shared.failure
        if not looked_up:  # answered by the shared cache or by another caller's look-up
            self.observer.groups_cache(hit=True)
        return frozenset(groups)

    async def _shared_lookup(
        self, tid: str, oid: str, *, app_only: bool
    ) -> frozenset[str] | Failure:
        """One look-up shared by every concurrent caller: its failure is logged here, once."""
        try:
            return await self._resolve(tid, oid, app_only=app_only)
        except _LookupFailed as exc:
            return self._log(exc.failure, tid, oid)
        except Exception as exc:  # a Graph answer we did not foresee: fail closed, never 500
            return self._log(Failure(Cause.UNEXPECTED, note=type(exc).__name__), tid, oid)

    @staticmethod
    def _log(failure: Failure, tid: str, oid: str | None) -> Failure:
        """The one log line of a failed look-up (docs/operations.md "Logging")."""
        logger.warning(
            "groups_unavailable: cause=%s tid=%s oid=%s: %s",
            failure.cause.name.lower(),
            loggable(tid),
            loggable(oid),
            failure.describe(),
        )
        return failure

    async def aclose(self) -> None:
        if self._owns_cache:
            await self.cache.aclose()

    # -- look-up --------------------------------------------------------------------

    async def _resolve(self, tid: str, oid: str, *, app_only: bool) -> frozenset[str]:
        not_before = await self.cache.get("graph-throttle", tid)
        if isinstance(not_before, float | int) and not_before > time.time():
            # Graph throttled this tenant (here or on another worker): honour its Retry-After.
            raise _LookupFailed(Failure(Cause.THROTTLED, retry_after=not_before - time.time()))
        deadline = self._clock() + self.budget
        async with self._slots:
            kind = "servicePrincipals" if app_only else "users"
            url: str | None = (
                f"{self.settings.graph_url}/v1.0/{kind}/{oid}/transitiveMemberOf"
                f"?$select=id&$top={PAGE_SIZE}"
            )
            ids: set[str] = set()
            pages = 0
            while url is not None:
                pages += 1
                if pages > MAX_PAGES:
                    raise _LookupFailed(Failure(Cause.TOO_MANY_PAGES, Endpoint.GRAPH))
                page = await self._graph_get(tid, url, deadline)
                ids.update(_page_ids(page))
                url = self._next_link(page)
        groups = frozenset(ids)
        logger.debug(
            "groups overage resolved: tid=%s oid=%s groups=%d",
            loggable(tid),
            loggable(oid),
            len(groups),
        )
        return groups

    def _next_link(self, page: Any) -> str | None:
        link = page.get("@odata.nextLink") if isinstance(page, dict) else None
        if link is None:
            return None
        if not isinstance(link, str) or not link.startswith(f"{self.settings.graph_url}/"):
            # Only ever talk to the configured Graph host: a link elsewhere is refused.
            raise _LookupFailed(Failure(Cause.FOREIGN_NEXT_LINK, Endpoint.GRAPH))
        return link

    async def _graph_get(self, tid: str, url: str, deadline: float) -> Any:
        renewed = False
        attempt = 0
        while True:
            attempt += 1
            token = await self._app_token(tid, deadline)
            try:
                return await self._call(
                    "GET",
                    url,
                    deadline,
                    Endpoint.GRAPH,
                    # A user waits for this answer (Graph throttling guidance).
                    headers={"authorization": f"Bearer {token}", "x-ms-throttle-priority": "high"},
                )
            except FetchError as exc:
                if exc.status == 401 and not renewed:
                    await self.cache.delete("graph-token", tid)  # revoked or expired early
                    renewed = True
                    continue
                await self._pause_or_fail(exc, tid, attempt, deadline, Endpoint.GRAPH)

    async def _app_token(self, tid: str, deadline: float) -> str:
        token = await self.cache.get_or_compute(
            "graph-token", tid, lambda: self._fetch_app_token(tid, deadline)
        )
        return str(token)

    async def _fetch_app_token(self, tid: str, deadline: float) -> tuple[str, float]:
        """Client credentials for Graph in the caller's tenant (the only token request)."""
        assert self.credential is not None  # checked before any look-up starts
        url = f"{self.settings.authority_host}/{tid}/oauth2/v2.0/token"
        attempt = 0
        while True:
            attempt += 1
            form = {
                "grant_type": "client_credentials",
                "scope": f"{self.settings.graph_url}/.default",
                **self.credential.form_fields(url),  # a fresh client assertion per attempt
            }
            try:
                body = await self._call("POST", url, deadline, Endpoint.TOKEN, data=form)
                break
            except FetchError as exc:
                await self._pause_or_fail(exc, tid, attempt, deadline, Endpoint.TOKEN)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise _LookupFailed(Failure(Cause.NO_ACCESS_TOKEN, Endpoint.TOKEN))
        lifetime = _token_lifetime(body)
        return token, max(lifetime - TOKEN_RENEW_MARGIN, lifetime / 2)

    async def _call(
        self, method: str, url: str, deadline: float, endpoint: Endpoint, **kwargs: Any
    ) -> Any:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise _LookupFailed(Failure(Cause.TIMEOUT, endpoint, retry_after=5))
        started = time.perf_counter()
        ok = False
        try:
            async with asyncio.timeout(remaining):
                on_response = self._charged if endpoint is Endpoint.GRAPH else None
                result = await request_json(
                    self.http, method, url, on_response=on_response, **kwargs
                )
            ok = True
            return result
        except TimeoutError:
            raise _LookupFailed(Failure(Cause.TIMEOUT, endpoint, retry_after=5)) from None
        finally:
            self.observer.graph_call(ok=ok, seconds=time.perf_counter() - started)

    def _charged(self, response: httpx.Response) -> None:
        """Graph's throttling signals, for the metrics (docs/operations.md "Metrics")."""
        units: float | None
        try:
            units = float(response.headers.get("x-ms-resource-unit", ""))
        except ValueError:
            units = None
        if units is not None and not (0 <= units < 1e6):
            units = None
        self.observer.graph_response(status=response.status_code, resource_units=units)

    async def _pause_or_fail(
        self, exc: FetchError, tid: str, attempt: int, deadline: float, endpoint: Endpoint
    ) -> None:
        """Sleep as asked (429/5xx) when the budget allows it, else raise ``_LookupFailed``.

        A ``Retry-After`` we cannot wait out is remembered for the tenant, so the
        next look-ups do not call Graph before it allows.
        """
        status = exc.status
        retryable = (status is None and not exc.bad_body) or status in RETRYABLE
        if exc.bad_body:
            cause = Cause.BAD_DOCUMENT
        elif status is None:
            cause = Cause.UNREACHABLE
        elif status in (401, 403) or (status == 400 and endpoint is Endpoint.TOKEN):
            cause = Cause.REFUSED
        else:
            cause = Cause.HTTP_ERROR
        wait = exc.retry_after if exc.retry_after is not None else min(0.25 * 2**attempt, 2.0)
        if not retryable or attempt >= MAX_ATTEMPTS or self._clock() + wait >= deadline:
            if exc.retry_after:
                # Every worker sharing the cache stops calling Graph for this tenant too.
                until = time.time() + exc.retry_after
                await self.cache.set("graph-throttle", tid, until, exc.retry_after)
            retry_after = exc.retry_after or (wait if retryable else None)
            raise _LookupFailed(Failure(cause, endpoint, status, retry_after))
        logger.warning(
            "groups overage look-up: %s; retrying in %.2fs",
            Failure(cause, endpoint, status).describe(),
            wait,
        )
        await asyncio.sleep(wait)


def _token_lifetime(body: dict[str, Any]) -> float:
    """``expires_in`` of a token response, bounded (1 day) and defaulted (3599 s)."""
    try:
        lifetime = float(body.get("expires_in", 3599))
    except (TypeError, ValueError, OverflowError):
        return 3599.0
    return min(lifetime, 86400.0) if math.isfinite(lifetime) else 3599.0


def _page_ids(page: Any) -> list[str]:
    if not isinstance(page, dict) or not isinstance(page.get("value"), list):
        raise _LookupFailed(Failure(Cause.BAD_DOCUMENT, Endpoint.GRAPH))
    return [
        item["id"].lower()
        for item in page["value"]
        if isinstance(item, dict) and isinstance(item.get("id"), str)
    ]
