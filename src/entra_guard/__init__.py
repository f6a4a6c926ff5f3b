"""entra-guard: Microsoft Entra ID access tokens for FastAPI / Starlette APIs.

Everything public is importable from here (``entra_guard.testing`` and
``entra_guard.contrib.*`` hold the optional parts); the ``_``-prefixed
modules are implementation and may change in any release.
"""

from ._auth import EntraAuth
from ._client_apps import require_client_apps
from ._docs_assets import serve_swagger_ui
from ._downstream import downstream_client, downstream_token
from ._errors import STATUS_BY_CODE, AuthError, ErrorCode
from ._guards import (
    SCHEME_NAME,
    Guard,
    all_of,
    any_of,
    refuse_guests,
    require_app_only,
    require_delegated,
    require_directory_roles,
    require_groups,
    require_principal,
    require_roles,
    require_scopes,
    require_scopes_or_app_roles,
    require_tenants,
)
from ._middleware import EntraAuthMiddleware
from ._observer import AuthObserver, CompositeObserver
from ._openapi import setup_openapi
from ._principal import Principal
from ._routing import EntraRoute
from ._settings import EntraSettings
from ._step_up import require_auth_context

__all__ = [
    "SCHEME_NAME",
    "STATUS_BY_CODE",
    "AuthError",
    "AuthObserver",
    "CompositeObserver",
    "EntraAuth",
    "EntraAuthMiddleware",
    "EntraRoute",
    "EntraSettings",
    "ErrorCode",
    "Guard",
    "Principal",
    "all_of",
    "any_of",
    "downstream_client",
    "downstream_token",
    "refuse_guests",
    "require_app_only",
    "require_auth_context",
    "require_client_apps",
    "require_delegated",
    "require_directory_roles",
    "require_groups",
    "require_principal",
    "require_roles",
    "require_scopes",
    "require_scopes_or_app_roles",
    "require_tenants",
    "serve_swagger_ui",
    "setup_openapi",
]

# Public names report the package, not the private module they live in (as httpx does).
for _name in __all__:
    _value = globals()[_name]
    if hasattr(_value, "__module__") and isinstance(_value, type):
        _value.__module__ = "entra_guard"
del _name, _value
