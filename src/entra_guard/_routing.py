"""``EntraRoute``: run route-level guards without FastAPI's dependency resolution.

A guard in ``dependencies=[Depends(require_scopes(...))]`` costs what any
FastAPI dependency costs to resolve (7-10 µs per request, measured in
``bench/``), several times the guard's own check. With
``APIRouter(route_class=EntraRoute)`` (or ``app.router.route_class``) the
guards listed in a route's or router's ``dependencies`` are taken out of
FastAPI's dependency graph and awaited directly, in the same order and with
the same refusals, before the endpoint and its other dependencies run.

Guards used as endpoint parameters (``user = Security(require_scopes(...))``)
stay ordinary dependencies: their value is needed. The route still lists its
guards in FastAPI's own OpenAPI (``security: [{"EntraID": [...]}]``), with or
without ``setup_openapi``: they are added back to the dependency tree OpenAPI
reads once the request handler, which does not resolve them, is built.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

import fastapi.routing
from fastapi import params
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_parameterless_sub_dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from ._guards import Guard
from ._middleware import PRINCIPAL_KEY

#: FastAPI before 0.137 includes a router by building new routes from each route's
#: ``dependencies`` (newer FastAPI keeps the route): there they must still list the
#: guards, or the included copy would run without them (docs/supported-versions.md).
_INCLUDE_COPIES_ROUTES = not hasattr(fastapi.routing, "_IncludedRouter")


class EntraRoute(APIRoute):
    """An ``APIRoute`` that awaits its route-level guards itself."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        dependencies: Sequence[params.Depends] | None = None,
        **kwargs: Any,
    ) -> None:
        kept: list[params.Depends] = []
        guards: list[params.Depends] = []
        for dependency in dependencies or ():
            if isinstance(dependency.dependency, Guard):
                guards.append(dependency)
            else:
                kept.append(dependency)
        #: The guards this route awaits before FastAPI resolves the rest.
        self.entra_guards: tuple[Guard, ...] = tuple(
            d.dependency for d in guards if isinstance(d.dependency, Guard)
        )
        self._guard_depends = tuple(guards)
        super().__init__(path, endpoint, dependencies=kept, **kwargs)
        #: The tree FastAPI resolves per request: without the guards.
        self.resolved_dependant = self.dependant
        # The handler is built; show the guards to OpenAPI again.
        self.dependant = self._listing_guards(self.dependant)
        if _INCLUDE_COPIES_ROUTES:
            # The dependant is built without the guards; a copy takes them out again.
            self.dependencies = list(dependencies or ())

    def _listing_guards(self, dependant: Dependant) -> Dependant:
        """``dependant`` with the route-level guards in front, for OpenAPI only."""
        if not self._guard_depends:
            return dependant
        path = self.path_format
        listed = [
            get_parameterless_sub_dependant(depends=d, path=path) for d in self._guard_depends
        ]
        return replace(dependant, dependencies=[*listed, *dependant.dependencies])

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        guards = self.entra_guards
        if not guards:
            return handler
        # FastAPI >= 0.16x builds a handler per inclusion in a router (an "effective
        # route context" with its own dependency tree): list the guards there too.
        context_var = getattr(fastapi.routing, "_effective_route_context_var", None)
        context = context_var.get() if context_var is not None else None
        if (
            context is not None
            and getattr(context, "original_route", None) is self
            and isinstance(getattr(context, "dependant", None), Dependant)
        ):
            context.dependant = self._listing_guards(context.dependant)

        async def guarded(request: Request) -> Response:
            principal = request.scope.get(PRINCIPAL_KEY)
            for guard in guards:
                # A guard that admits the caller from the token alone is not called: the
                # call (two coroutines) costs more than the check (docs/benchmarks.md, 2b).
                if principal is None or not guard.admits(principal):
                    await guard(request)
            return await handler(request)

        return guarded


__all__ = ["EntraRoute"]
