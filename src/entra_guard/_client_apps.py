"""``require_client_apps``: which applications may call a route.

A token names the client application it was issued to (``azp`` in v2,
``appid`` in v1: ``Principal.app_id``). APIs with several clients (a SPA, a
mobile app, a daemon) often allow a sensitive route to only some of them;
with ``ENTRA_ALLOW_ACL_TOKENS`` such a list is the caller check the app owns
(docs/step-up.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.requests import HTTPConnection

from ._errors import AuthError
from ._guards import Guard
from ._principal import Principal
from ._settings import EntraSettings, check_label


class ClientAppsGuard(Guard):
    """``require_client_apps(...)``: ``Principal.app_id`` is listed (case-insensitive)."""

    _token_decides = True

    def __init__(self, app_ids: tuple[str, ...]) -> None:
        if not app_ids:
            raise ValueError("require_client_apps needs at least one application id")
        self.app_ids = frozenset(a.lower() for a in app_ids)
        self._listed = app_ids

    async def check(self, principal: Principal, connection: HTTPConnection) -> None:
        if not self.admits(principal):
            raise AuthError("client_not_allowed", "The calling application may not use this route")

    def admits(self, principal: Principal) -> bool:
        return principal.app_id is not None and principal.app_id.lower() in self.app_ids

    def openapi_extension(self, settings: EntraSettings) -> dict[str, list[str]]:
        return {"x-entra-client-apps": list(self._listed)}

    def openapi_note(self, settings: EntraSettings) -> str:
        return f"Only these client applications (`azp`/`appid`): {', '.join(self._listed)}."

    def __repr__(self) -> str:
        return f"require_client_apps{self._listed!r}"


def require_client_apps(*app_ids: str | Iterable[str]) -> Guard:
    """The calling application (``azp``, or ``appid`` in v1 tokens) is one of ``app_ids``
    (application/client ids); else 403 ``client_not_allowed``."""
    flat: tuple[Any, ...] = (
        tuple(app_ids[0]) if len(app_ids) == 1 and not isinstance(app_ids[0], str) else app_ids
    )
    listed = tuple(dict.fromkeys(check_label("require_client_apps ids", a) for a in flat))
    return ClientAppsGuard(listed)


__all__ = ["ClientAppsGuard", "require_client_apps"]
