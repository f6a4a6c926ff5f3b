"""FastAPI dependencies that authorize the caller the middleware authenticated.

Every guard is one ``async`` dependency taking only the ``HTTPConnection``, so
it works on HTTP and WebSocket routes, FastAPI never sends it to a thread pool,
and the dependency graph of a guarded route stays one node per guard. Each
guard returns the ``Principal``::

    @app.get("/items", dependencies=[Depends(require_scopes("Items.Read"))])
    @app.get("/me")
    async def me(user: Principal = Security(require_scopes("Items.Read"))): ...

Guards compose: ``require_scopes("A") & require_tenants(T)`` (all of) and
``require_roles("Admin") | require_groups(G)`` (any of), or ``all_of(...)`` /
``any_of(...)``. Failures raise ``AuthError`` (docs/troubleshooting.md "Codes"), which
``EntraAuthMiddleware`` renders; on a WebSocket the guard accepts and closes
the connection with code 1008 so browsers see the reason.

Guards are ``fastapi.security.base.SecurityBase`` instances, so FastAPI lists
every guarded route under the ``EntraID`` security scheme in OpenAPI;
``entra_guard.openapi.setup_openapi`` turns that into an OAuth2 sign-in with
each route's scopes.
"""

# No ``from __future__ import annotations`` here: FastAPI before 0.123.7 does not
# resolve string annotations of a callable instance, so it would take a guard's
# ``connection: "HTTPConnection"`` for a query parameter (docs/supported-versions.md).

import itertools
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from starlette.exceptions import WebSocketException
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket, WebSocketState

from ._errors import AuthError, ErrorCode
from ._middleware import (
    AUTH_KEY,
    ERROR_KEY,
    PRINCIPAL_KEY,
    bearer_token,
    log_rejection,
    missing_token,
)
from ._principal import Principal

#: Name of the OpenAPI security scheme every guard belongs to.
SCHEME_NAME = "EntraID"
#: Most scope alternatives a route lists in OpenAPI (beyond: one merged list).
_MAX_ALTERNATIVES = 16
_NO_SCOPES: frozenset[str] = frozenset()


def _names(values: Iterable[str] | str, what: str) -> tuple[str, ...]:
    """``("a", "b")`` from varargs or one iterable; a lone string is one name, not letters."""
    items = (values,) if isinstance(values, str) else tuple(values)
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"{what} must be non-empty strings, got {item!r}")
    return tuple(dict.fromkeys(item.strip() for item in items))


def _flatten(args: tuple[Any, ...]) -> tuple[str, ...]:
    """``require_x("a", "b")`` and ``require_x(["a", "b"])`` mean the same."""
    if len(args) == 1 and not isinstance(args[0], str):
        return tuple(args[0])
    return args


def _unauthenticated(scope: MutableMapping[str, Any]) -> AuthError:
    if ERROR_KEY not in scope:
        raise RuntimeError(
            "entra-guard guards need EntraAuthMiddleware: "
            "app.add_middleware(EntraAuthMiddleware, auth=auth)"
        )
    error = scope[ERROR_KEY]
    return error if error is not None else missing_token()


class Guard(SecurityBase):
    """Base class of every guard: an async dependency returning the ``Principal``.

    Subclasses implement ``check(principal, connection)``; it raises ``AuthError``
    to refuse. ``connection`` is the request or WebSocket (a Starlette
    ``HTTPConnection``: ``.url``, ``.headers``, ``.scope``...).
    """

    scheme_name = SCHEME_NAME
    model = HTTPBearerModel(
        bearerFormat="JWT", description="Microsoft Entra ID access token for this API"
    )

    async def __call__(self, connection: HTTPConnection) -> Principal:
        scope = connection.scope
        principal: Principal | None = scope.get(PRINCIPAL_KEY)
        try:
            if principal is None:
                raise _unauthenticated(scope)
            await self.check(principal, connection)
        except AuthError as exc:
            if isinstance(connection, WebSocket):
                await _refuse_websocket(connection, exc)
            raise
        return principal

    async def check(self, principal: Principal, connection: HTTPConnection) -> None:
        """Raise ``AuthError`` when ``principal`` may not pass (default: everyone passes)."""

    def admits(self, principal: Principal) -> bool:
        """True only when ``principal`` passes ``check`` for certain, told from the token
        alone (no I/O, no request): ``EntraRoute`` then skips the dependency call, which
        costs more than the check (docs/benchmarks.md, 2b). False: ask ``check``, which
        decides; the default, so a guard of your own is always asked."""
        return False

    #: ``admits`` is the whole answer: where it says no, ``check`` raises ``AuthError``
    #: and does nothing else (no I/O, no side effect), so ``any_of`` may skip this guard
    #: to reach one that admits. Only the built-in guards that read the token alone.
    _token_decides = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "check" in vars(cls) and "admits" not in vars(cls):
            # A subclass that changes ``check``: its parent's ``admits`` no longer
            # speaks for it, so it is asked every time.
            cls.admits = Guard.admits  # type: ignore[method-assign]
            cls._token_decides = False

    def scope_alternatives(self) -> list[frozenset[str]]:
        """Short scope names that satisfy the guard, as alternatives (for OpenAPI)."""
        return [_NO_SCOPES]

    def accepted_claims(self) -> dict[str, frozenset[str]]:
        """Claim values this guard (or a part of it) accepts, by claim name (``scp``,
        ``roles``, ``groups``, ``tid``, ``wids``): for tools that mint or offer tokens,
        such as a dev sign-in page. Never used to decide."""
        return {}

    def __and__(self, other: "Guard") -> "Guard":
        return all_of(self, other)

    def __or__(self, other: "Guard") -> "Guard":
        return any_of(self, other)


async def _refuse_websocket(websocket: WebSocket, exc: AuthError) -> None:
    """Accept, so the close frame reaches the client, then close with 1008 (policy)."""
    auth = websocket.scope.get(AUTH_KEY)
    if auth is not None:
        auth.observer.rejected(exc.code)
    log_rejection(websocket.scope, exc, auth)
    if websocket.client_state == WebSocketState.CONNECTING:
        await websocket.accept()
    raise WebSocketException(code=1008, reason=exc.code) from exc


class _Authenticated(Guard):
    _token_decides = True

    def admits(self, principal: Principal) -> bool:
        return True

    def __repr__(self) -> str:
        return "require_principal"


#: Any valid token: the ``Principal``, or 401 with the reason the token was refused.
require_principal = _Authenticated()


class _Scopes(Guard):
    _token_decides = True

    def __init__(self, scopes: tuple[str, ...]) -> None:
        if not scopes:
            raise ValueError("require_scopes needs at least one scope")
        self.scopes = frozenset(scopes)
        self._listed = scopes
        self._detail = f"This route needs one of the delegated scopes: {' '.join(scopes)}"

    async def check(self, principal: Principal, connection: HTTPConnection) -> None:
        if not self.admits(principal):
            raise AuthError("insufficient_scope", self._detail, scopes=self._listed)

    def admits(self, principal: Principal) -> bool:
        return not principal.is_app_only and not self.scopes.isdisjoint(principal.scopes)

    def scope_alternatives(self) -> list[frozenset[str]]:
        return [frozenset({s}) for s in self._listed]

    def accepted_claims(self) -> dict[str, frozenset[str]]:
        return {"scp": frozenset(self._listed)}

    def __repr__(self) -> str:
        return f"require_scopes{self._listed!r}"


def require_scopes(*scopes: str) -> Guard:
    """A delegated token carrying at least one of ``scopes`` (short names, e.g. ``Items.Read``).

    Failing: 403 ``insufficient_scope`` with ``WWW-Authenticate: Bearer
    error="insufficient_scope", scope="..."``. App-only tokens never pass.
    """
    return _Scopes(_names(_flatten(scopes), "scopes"))


class _Membership(Guard):
    """The caller holds at least one of ``wanted`` in one set of ``Principal``.

    One implementation behind ``require_roles``, ``require_tenants`` and
    ``require_directory_roles``: they differ only in the set they read, whether
    names are GUIDs (compared lower-cased; ``Principal`` lower-cases its own once)
    and the refusal.
    """

    _token_decides = True

    def __init__(
        self,
        name: str,
        wanted: tuple[str, ...],
        held: Callable[[Principal], frozenset[str]],
        *,
        claim: str,
        guids: bool,
        code: ErrorCode,
        detail: str,
    ) -> None:
        self._name = name
        self._listed = wanted
        self.wanted = frozenset(w.lower() for w in wanted) if guids else frozenset(wanted)
        self._held = held
        self._claim = claim
        self._code: ErrorCode = code
        self._detail = detail

    async def check(self, principal: Principal, connection: HTTPConnection) -> None:
        if not self.admits(principal):
            raise AuthError(self._code, self._detail)

    def admits(self, principal: Principal) -> bool:
        return not self.wanted.isdisjoint(self._held(principal))

    def accepted_claims(self) -> dict[str, frozenset[str]]:
        return {self._claim: frozenset(self._listed)}

    def __repr__(self) -> str:
        return f"{self._name}{self._listed!r}"


def _membership(
    name: str, values: tuple[Any, ...], what: str, *, detail: str, **kwargs: Any
) -> _Membership:
    """Validate the names; ``detail`` may say ``{names}``."""
    wanted = _names(_flatten(values), what)
    if not wanted:
        raise ValueError(f"{name} needs at least one {what.rstrip('s').replace('_', ' ')}")
    return _Membership(name, wanted, detail=detail.format(names=" ".join(wanted)), **kwargs)


def require_roles(*roles: str) -> Guard:
    """A token (user or app) with at least one of the app ``roles``; else 403 ``missing_role``."""
    return _membership(
        "require_roles",
        roles,
        "roles",
        held=_roles_of,
        claim="roles",
        guids=False,
        code="missing_role",
        detail="This route needs one of the app roles: {names}",
    )


def _roles_of(principal: Principal) -> frozenset[str]:
    return principal.roles


def _tenant_of(principal: Principal) -> frozenset[str]:
    return frozenset((principal.tenant_id,))


def _wids_of(principal: Principal) -> frozenset[str]:
    return principal.wids


class _ScopesOrAppRoles(Guard):
    _token_decides = True

    def __init__(self, scopes: tuple[str, ...], app_roles: tuple[str, ...]) -> None:
        if not scopes and not app_roles:
            raise ValueError("require_scopes_or_app_roles needs scopes, app_roles or both")
        self.scopes = frozenset(scopes)
        self.app_roles = frozenset(app_roles)
        self._scopes = scopes
        self._roles = app_roles

    async def check(self, principal: Principal, connection: HTTPConnection) -> None:
        if self.admits(principal):
            return
        if principal.is_app_only:
            detail = (
                f"App-only tokens need one of the app roles: {' '.join(self._roles)}"
                if self._roles
                else "This route does not accept app-only tokens"
            )
            raise AuthError("missing_role", detail)
        detail = (
            f"Delegated tokens need one of the scopes: {' '.join(self._scopes)}"
            if self._scopes
            else "This route does not accept delegated (user) tokens"
        )
        raise AuthError("insufficient_scope", detail, scopes=self._scopes)

    def admits(self, principal: Principal) -> bool:
        if principal.is_app_only:
            return not self.app_roles.isdisjoint(principal.roles)
        return not self.scopes.isdisjoint(principal.scopes)

    def scope_alternatives(self) -> list[frozenset[str]]:
        return [frozenset({s}) for s in self._scopes] or [_NO_SCOPES]

    def accepted_claims(self) -> dict[str, frozenset[str]]:
        return {"scp": frozenset(self._scopes), "roles": frozenset(self._roles)}

    def __repr__(self) -> str:
        return f"require_scopes_or_app_roles(scopes={self._scopes!r}, app_roles={self._roles!r})"


def require_scopes_or_app_roles(
    *, scopes: Iterable[str] | str = (), app_roles: Iterable[str] | str = ()
) -> Guard:
    """Delegated tokens need one of ``scopes``; app-only tokens one of ``app_roles``.

    The token type decides which list applies: a user holding an app role
    meant for daemons does not pass, nor does an app on a delegated scope.
    Failing: ``insufficient_scope`` (delegated) or ``missing_role`` (app-only).
    """
    return _ScopesOrAppRoles(_names(scopes, "scopes"), _names(app_roles, "app_roles"))


class _Groups(Guard):
    def __init__(self, groups: tuple[str, ...]) -> None:
        if not groups:
            raise ValueError("require_groups needs at least one group object id")
        self.groups = frozenset(g.lower() for g in groups)
        self._listed = groups

    def accepted_claims(self) -> dict[str, frozenset[str]]:
        return {"groups": self.groups}

    async def check(self, principal: Principal, connection: HTTPConnection) -> None:
        if self.admits(principal):
            return
        if principal.groups_overage:
            auth = connection.scope.get(AUTH_KEY)
            if auth is None:
                raise RuntimeError("require_groups needs EntraAuthMiddleware")
            resolved = await auth.group_ids(principal, token=bearer_token(connection.scope)[0])
            if not self.groups.isdisjoint(resolved):
                return
        raise AuthError("missing_group", "The caller is not a member of a group this route needs")

    def admits(self, principal: Principal) -> bool:
        # In the token (both sides lower-cased): no Graph call.
        return not self.groups.isdisjoint(principal.groups)

    def __repr__(self) -> str:
        return f"require_groups{self._listed!r}"


def require_groups(*group_ids: str) -> Guard:
    """Member (transitively) of at least one group, by object id; else 403 ``missing_group``.

    Answered from the token's ``groups`` claim; when the token carries the
    overage marker instead, memberships come from Microsoft Graph (needs
    ``ENTRA_CLIENT_SECRET``), cached per user. If Graph cannot answer: 503
    ``groups_unavailable`` (never a pass). Use object ids: names can change.
    """
    return _Groups(_names(_flatten(group_ids), "group_ids"))


def require_tenants(*tenant_ids: str) -> Guard:
    """The token's ``tid`` is one of ``tenant_ids``; else 403 ``tenant_not_allowed``."""
    return _membership(
        "require_tenants",
        tenant_ids,
        "tenant_ids",
        held=_tenant_of,
        claim="tid",
        guids=True,
        code="tenant_not_allowed",
        detail="The caller's tenant may not use this route",
    )


def require_directory_roles(*role_template_ids: str) -> Guard:
    """The token's ``wids`` hold one of the directory role *template* ids; else ``missing_role``.

    E.g. Global Administrator is ``62e90394-69f5-4237-9190-012177145e10``.
    Entra only emits ``wids`` when the app registration asks for it.
    """
    return _membership(
        "require_directory_roles",
        role_template_ids,
        "role_template_ids",
        held=_wids_of,
        claim="wids",
        guids=True,
        code="missing_role",
        detail="The caller does not hold a directory role this needs",
    )


class _TokenType(Guard):
    _token_decides = True

    def __init__(self, app_only: bool) -> None:
        self.app_only = app_only

    async def check(self, principal: Principal, connection: HTTPConnection) -> None:
        if not self.admits(principal):
            wanted = "an app-only" if self.app_only else "a delegated (user)"
            raise AuthError("wrong_token_type", f"This route needs {wanted} token")

    def admits(self, principal: Principal) -> bool:
        return principal.is_app_only == self.app_only

    def __repr__(self) -> str:
        return "require_app_only" if self.app_only else "require_delegated"


#: Only app-only tokens (client credentials: ``idtyp == "app"`` or no ``scp``).
require_app_only = _TokenType(app_only=True)
#: Only delegated tokens (a signed-in user).
require_delegated = _TokenType(app_only=False)


class _NoGuests(Guard):
    _token_decides = True

    async def check(self, principal: Principal, connection: HTTPConnection) -> None:
        if not self.admits(principal):
            raise AuthError("guest_not_allowed", "Guest users may not use this route")

    def admits(self, principal: Principal) -> bool:
        return not principal.is_guest

    def __repr__(self) -> str:
        return "refuse_guests"


#: Refuse guest (B2B) users: ``acct == 1`` or an ``idp`` other than the issuer.
refuse_guests = _NoGuests()


class _AllOf(Guard):
    def __init__(self, guards: tuple[Guard, ...]) -> None:
        self.guards = guards
        self._token_decides = all(guard._token_decides for guard in guards)

    async def check(self, principal: Principal, connection: HTTPConnection) -> None:
        for guard in self.guards:
            await guard.check(principal, connection)

    def admits(self, principal: Principal) -> bool:
        return all(guard.admits(principal) for guard in self.guards)

    def scope_alternatives(self) -> list[frozenset[str]]:
        combos: list[frozenset[str]] = [_NO_SCOPES]
        for guard in self.guards:
            combos = list(
                dict.fromkeys(
                    a | b for a, b in itertools.product(combos, guard.scope_alternatives())
                )
            )
            if len(combos) > _MAX_ALTERNATIVES:
                combos = [frozenset().union(*combos)]
        return combos

    def accepted_claims(self) -> dict[str, frozenset[str]]:
        return _merged_claims(self.guards)

    def __repr__(self) -> str:
        return f"all_of{self.guards!r}"


class _AnyOf(Guard):
    def __init__(self, guards: tuple[Guard, ...]) -> None:
        self.guards = guards
        self._token_decides = all(guard._token_decides for guard in guards)

    async def check(self, principal: Principal, connection: HTTPConnection) -> None:
        first: AuthError | None = None
        unavailable: AuthError | None = None
        for guard in self.guards:
            try:
                await guard.check(principal, connection)
            except AuthError as exc:
                first = first or exc
                if exc.status_code == 503:
                    unavailable = unavailable or exc
            else:
                return
        # Could not decide one alternative (503): say so rather than refuse for good.
        error = unavailable or first
        assert error is not None
        raise error

    def admits(self, principal: Principal) -> bool:
        # In ``check``'s order: an alternative before the one that admits may be skipped
        # only when it would refuse with ``AuthError`` and nothing else (a guard of your
        # own may raise something else, or record the call).
        for guard in self.guards:
            if guard.admits(principal):
                return True
            if not guard._token_decides:
                return False
        return False

    def scope_alternatives(self) -> list[frozenset[str]]:
        combos = list(
            dict.fromkeys(alt for guard in self.guards for alt in guard.scope_alternatives())
        )
        if len(combos) > _MAX_ALTERNATIVES:
            combos = [frozenset().union(*combos)]
        return combos

    def accepted_claims(self) -> dict[str, frozenset[str]]:
        return _merged_claims(self.guards)

    def __repr__(self) -> str:
        return f"any_of{self.guards!r}"


def _merged_claims(guards: Iterable[Guard]) -> dict[str, frozenset[str]]:
    merged: dict[str, frozenset[str]] = {}
    for guard in guards:
        for claim, values in guard.accepted_claims().items():
            merged[claim] = merged.get(claim, frozenset()) | values
    return merged


def _guards(guards: tuple[Guard, ...], kind: type[Guard]) -> tuple[Guard, ...]:
    if not guards:
        raise ValueError("combine at least one guard")
    out: list[Guard] = []
    for guard in guards:
        if not isinstance(guard, Guard):
            raise TypeError(f"not an entra-guard guard: {guard!r}")
        out.extend(guard.guards if type(guard) is kind else (guard,))  # type: ignore[attr-defined]
    return tuple(out)


def all_of(*guards: Guard) -> Guard:
    """Pass only when every guard passes (checked in order; the first refusal is raised)."""
    return _AllOf(_guards(guards, _AllOf))


def any_of(*guards: Guard) -> Guard:
    """Pass when one guard passes (in order; later ones are not evaluated, so Graph is
    only asked when nothing cheaper already decided)."""
    return _AnyOf(_guards(guards, _AnyOf))


__all__ = [
    "SCHEME_NAME",
    "Guard",
    "all_of",
    "any_of",
    "refuse_guests",
    "require_app_only",
    "require_delegated",
    "require_directory_roles",
    "require_groups",
    "require_principal",
    "require_roles",
    "require_scopes",
    "require_scopes_or_app_roles",
    "require_tenants",
]
