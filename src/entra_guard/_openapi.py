"""OpenAPI and Swagger UI sign-in for an API protected by entra-guard.

    setup_openapi(app, auth)

declares an OAuth2 authorization-code (PKCE) security scheme with the
tenant's authorize/token endpoints and the API's scopes (full names,
``api://{client_id}/Items.Read``), lists on every guarded operation the
scopes its guards accept, and lets ``/docs`` sign in with
``ENTRA_PUBLIC_CLIENT_ID`` (a public "SPA" registration whose redirect URI is
``{your API}/docs/oauth2-redirect``). Routes without guards stay open.

Without ``setup_openapi`` guarded routes still show in OpenAPI, under an HTTP
bearer scheme (paste a token into Swagger UI's *Authorize* dialog).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from ._auth import EntraAuth
from ._guards import SCHEME_NAME, Guard, all_of
from ._settings import EntraSettings


def scope_prefix(settings: EntraSettings) -> str:
    """``api://{client_id}/`` or the App ID URI among the audiences, with a trailing slash."""
    for audience in settings.audiences or ():
        if "://" in audience:
            return audience.rstrip("/") + "/"
    return f"api://{settings.client_id}/"


def security_scheme(
    settings: EntraSettings,
    scopes: Mapping[str, str],
    *,
    authorization_url: str | None = None,
    token_url: str | None = None,
) -> dict[str, Any]:
    """The OpenAPI OAuth2 authorization-code scheme for this API's tenant.

    ``scopes`` maps full scope names to descriptions; ``authorization_url`` and
    ``token_url`` replace the tenant's endpoints (e.g. a dev sign-in served by the app).
    """
    base = f"{settings.authority}/oauth2/v2.0"
    return {
        "type": "oauth2",
        "description": "Microsoft Entra ID sign-in (authorization code with PKCE)",
        "flows": {
            "authorizationCode": {
                "authorizationUrl": authorization_url or f"{base}/authorize",
                "tokenUrl": token_url or f"{base}/token",
                "scopes": dict(scopes),
            }
        },
    }


def route_guards(dependant: Dependant) -> list[Guard]:
    """Every entra-guard guard in a route's dependency tree, in declaration order."""
    found: list[Guard] = []
    stack = [dependant]
    while stack:
        current = stack.pop()
        if isinstance(current.call, Guard) and current.call not in found:
            found.append(current.call)
        stack.extend(reversed(current.dependencies))
    return found


def setup_openapi(
    app: FastAPI,
    auth: EntraAuth | EntraSettings | Sequence[EntraAuth],
    *,
    scopes: Mapping[str, str] | Iterable[str] = (),
    scheme_name: str = SCHEME_NAME,
    authorization_url: str | None = None,
    token_url: str | None = None,
) -> None:
    """Give ``app``'s OpenAPI document and ``/docs`` an Entra ID sign-in.

    ``scopes``: extra short scope names (optionally with descriptions) to offer
    in the sign-in dialog; the scopes used by guards are always listed.
    ``authorization_url`` / ``token_url``: sign in elsewhere than the tenant
    (absolute, or a path of this app such as a dev-mode sign-in).
    """
    if isinstance(auth, Sequence):
        auth = auth[0]  # several authorities: Swagger UI signs in with the first one
    settings = auth.settings if isinstance(auth, EntraAuth) else auth
    prefix = scope_prefix(settings)
    extra: dict[str, str] = (
        dict(scopes) if isinstance(scopes, Mapping) else {s: f"{s} (delegated)" for s in scopes}
    )
    init = dict(app.swagger_ui_init_oauth or {})
    init["usePkceWithAuthorizationCodeGrant"] = True
    if settings.public_client_id:
        init["clientId"] = settings.public_client_id
    app.swagger_ui_init_oauth = init

    generate: Callable[[], dict[str, Any]] = app.openapi
    patched: list[int] = []

    def openapi() -> dict[str, Any]:
        schema = generate()
        if patched and patched[0] == id(schema):
            return schema
        published = _published_endpoints(auth)
        scheme = {
            "authorization_url": authorization_url or published[0],
            "token_url": token_url or published[1],
        }
        _patch(schema, app, prefix, extra, settings, scheme_name, scheme)
        patched[:] = [id(schema)]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _published_endpoints(auth: EntraAuth | EntraSettings) -> tuple[str | None, str | None]:
    """The authorize and token endpoints the authority's metadata publishes, once loaded
    (External ID custom domains, B2C user flows); None where it is not loaded yet, and the
    endpoints are then built from the settings."""
    current = auth.metadata.current if isinstance(auth, EntraAuth) else None
    if current is None or not current.authorization_endpoint or not current.token_endpoint:
        return None, None
    return current.authorization_endpoint, current.token_endpoint


def _api_routes(app: FastAPI) -> Iterator[tuple[Any, APIRoute]]:
    """``(effective route, original APIRoute)`` for every API route, included routers too.

    FastAPI >= 0.16x keeps included routers as one entry of ``app.routes`` and
    exposes their routes (with the router's prefix and dependencies applied)
    through ``iter_route_contexts``; older versions flatten them into ``app.routes``.
    """
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if iter_route_contexts is None:
        for route in app.routes:
            if isinstance(route, APIRoute):
                yield route, route
        return
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            yield context, context.original_route


def _patch(
    schema: dict[str, Any],
    app: FastAPI,
    prefix: str,
    extra: Mapping[str, str],
    settings: EntraSettings,
    scheme_name: str,
    urls: Mapping[str, str | None],
) -> None:
    declared = {prefix + name: text for name, text in extra.items()}
    paths = schema.get("paths", {})
    for route, original in _api_routes(app):
        if not route.include_in_schema:
            continue
        # EntraRoute keeps its route-level guards out of the dependency graph.
        guards = list(
            dict.fromkeys([*getattr(original, "entra_guards", ()), *route_guards(route.dependant)])
        )
        if not guards:
            continue
        alternatives = all_of(*guards).scope_alternatives()
        for alternative in alternatives:
            for name in alternative:
                declared.setdefault(prefix + name, f"{name} (delegated)")
        for method in route.methods or ():
            operation = paths.get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            others: dict[str, list[str]] = {}
            for requirement in operation.get("security", []):
                for name, values in requirement.items():
                    if name != scheme_name:
                        others[name] = values
            operation["security"] = [
                {**others, scheme_name: sorted(prefix + s for s in alternative)}
                for alternative in alternatives
            ]
            _describe(operation, guards, settings)
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[scheme_name] = security_scheme(
        settings, dict(sorted(declared.items())), **urls
    )


def _describe(operation: dict[str, Any], guards: list[Guard], settings: EntraSettings) -> None:
    """Requirements scopes cannot express (authentication context, client apps): an
    ``x-entra-*`` extension and a sentence in the description, from the guards'
    ``openapi_extension``/``openapi_note`` (docs/step-up.md)."""
    stack, notes = list(reversed(guards)), []
    while stack:
        guard = stack.pop()
        stack.extend(reversed(getattr(guard, "guards", ())))
        if hasattr(guard, "openapi_extension") and hasattr(guard, "openapi_note"):
            for key, values in guard.openapi_extension(settings).items():
                operation[key] = list(dict.fromkeys([*operation.get(key, []), *values]))
            notes.append(guard.openapi_note(settings))
    if notes:
        text = "\n\n".join(dict.fromkeys(notes))
        described = operation.get("description")
        operation["description"] = f"{described}\n\n{text}" if described else text


__all__ = ["route_guards", "scope_prefix", "security_scheme", "setup_openapi"]
