"""entra-guard: Microsoft Entra ID access tokens for FastAPI / Starlette APIs."""

from .auth import EntraAuth
from .errors import AuthError
from .guards import (
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
from .middleware import EntraAuthMiddleware
from .observer import AuthObserver
from .openapi import setup_openapi
from .principal import Principal
from .routing import EntraRoute
from .settings import EntraSettings

__all__ = [
    "AuthError",
    "AuthObserver",
    "EntraAuth",
    "EntraAuthMiddleware",
    "EntraRoute",
    "EntraSettings",
    "Guard",
    "Principal",
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
    "setup_openapi",
]
