"""Hooks for metrics: subclass ``AuthObserver`` and pass it to ``EntraAuth``.

Every method is a no-op here, so an observer overrides only what it counts.
Hooks run inline on the request path: keep them cheap and never raise.
"""

from __future__ import annotations


class AuthObserver:
    def authenticated(self, *, cached: bool, seconds: float) -> None:
        """A token was accepted (``cached``: answered by the verified-token cache)."""

    def rejected(self, code: str) -> None:
        """A request was refused with ``code`` (validation or guard)."""

    def metadata_fetch(self, *, document: str, ok: bool, seconds: float) -> None:
        """One discovery or JWKS document was fetched (``document``: v1, v2, jwks)."""

    def key_refresh(self, *, forced: bool) -> None:
        """The key set was reloaded (``forced``: because of an unknown ``kid``)."""

    def graph_call(self, *, ok: bool, seconds: float) -> None:
        """One call to Microsoft Graph or its token endpoint finished."""

    def groups_cache(self, *, hit: bool) -> None:
        """A groups overage look-up was answered from cache (``hit``) or not."""
