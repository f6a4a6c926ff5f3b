"""entra-guard: Microsoft Entra ID access tokens for FastAPI / Starlette APIs."""

from .auth import EntraAuth
from .errors import AuthError
from .guards import require_principal
from .middleware import EntraAuthMiddleware
from .observer import AuthObserver
from .principal import Principal
from .settings import EntraSettings

__all__ = [
    "AuthError",
    "AuthObserver",
    "EntraAuth",
    "EntraAuthMiddleware",
    "EntraSettings",
    "Principal",
    "require_principal",
]
