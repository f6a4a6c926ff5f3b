"""Hooks for metrics: subclass ``AuthObserver`` and pass it to ``EntraAuth``.

    auth = EntraAuth(settings, observer=MyObserver())

Every method is a no-op here, so an observer overrides only what it counts.
Hooks run inline on the request path (and in background refresh tasks): keep
them cheap and never raise. They receive no token and no claim values, only
stable codes and timings, so an observer cannot leak a token by accident.

``entra_guard.contrib.prometheus.PrometheusObserver`` is a ready-made one.
``entra_guard.contrib.opentelemetry.OpenTelemetryObserver`` turns them into spans.
``CompositeObserver`` fans every event out to several observers.

Hooks may gain keyword arguments in later releases only through new hooks whose
default forwards to the old one (see ``authentication``), so an override written
against today's signature keeps working.

Durations are seconds (floats) measured with ``time.perf_counter`` or the
metadata cache's monotonic clock.
"""

from __future__ import annotations

from collections.abc import Iterable


class AuthObserver:
    """The event interface. All hooks are keyword-only and return nothing."""

    def authenticated(self, *, cached: bool, seconds: float) -> None:
        """A token was accepted (``cached``: answered by the verified-token cache)."""

    def authentication(
        self,
        *,
        cached: bool,
        seconds: float,
        code: str | None = None,
        token_version: str | None = None,
        user_id: str | None = None,
    ) -> None:
        """Every ``EntraAuth.authenticate()`` outcome, with what tracing needs.

        ``code`` is None for an accepted token, else the code it was refused with;
        ``token_version`` is ``1.0``/``2.0`` once verified; ``user_id`` is the caller's
        ``Principal.identity``, passed only for a verified token with ``log_pii`` on.
        The default forwards accepted tokens to ``authenticated``, so observers that
        override only that hook see the same events as before.
        """
        if code is None:
            self.authenticated(cached=cached, seconds=seconds)

    def rejected(self, code: str) -> None:
        """A request was refused with ``code`` (validation or guard; docs/troubleshooting.md
        "Codes")."""

    def token_cache(self, *, hit: bool) -> None:
        """The verified-token cache was consulted for a token: ``hit`` or miss."""

    def metadata_fetch(self, *, document: str, ok: bool, seconds: float) -> None:
        """One discovery or JWKS document was fetched (``document``: v1, v2, jwks).

        ``ok=False`` is a failed fetch (network error, HTTP error, unusable body).
        """

    def key_refresh(self, *, forced: bool) -> None:
        """The key set is being reloaded (``forced``: because of an unknown ``kid``;
        otherwise the periodic background refresh)."""

    def graph_call(self, *, ok: bool, seconds: float) -> None:
        """One call to Microsoft Graph or its token endpoint finished."""

    def obo_acquire(self, *, cached: bool, ok: bool, code: str | None, seconds: float) -> None:
        """One on-behalf-of token was acquired for a downstream API (``cached``: from
        the OBO token cache; ``code``: the refusal's code when ``ok`` is False)."""

    def groups_cache(self, *, hit: bool) -> None:
        """A groups overage look-up was answered from cache (``hit``) or not."""

    def shared_cache_degraded(self, *, reason: str) -> None:
        """The shared cache backend (Redis) failed: working in-process for a while."""

    def graph_response(self, *, status: int, resource_units: float | None) -> None:
        """Microsoft Graph answered (``status``; 429 is throttling) and charged
        ``resource_units`` (its ``x-ms-resource-unit`` header) against the app's budget."""


class CompositeObserver(AuthObserver):
    """Send every event to each of ``observers`` in turn (e.g. metrics + tracing)."""

    def __init__(self, observers: Iterable[AuthObserver]) -> None:
        self.observers: tuple[AuthObserver, ...] = tuple(observers)

    def authenticated(self, *, cached: bool, seconds: float) -> None:
        for observer in self.observers:
            observer.authenticated(cached=cached, seconds=seconds)

    def authentication(
        self,
        *,
        cached: bool,
        seconds: float,
        code: str | None = None,
        token_version: str | None = None,
        user_id: str | None = None,
    ) -> None:
        for observer in self.observers:
            observer.authentication(
                cached=cached,
                seconds=seconds,
                code=code,
                token_version=token_version,
                user_id=user_id,
            )

    def rejected(self, code: str) -> None:
        for observer in self.observers:
            observer.rejected(code)

    def token_cache(self, *, hit: bool) -> None:
        for observer in self.observers:
            observer.token_cache(hit=hit)

    def metadata_fetch(self, *, document: str, ok: bool, seconds: float) -> None:
        for observer in self.observers:
            observer.metadata_fetch(document=document, ok=ok, seconds=seconds)

    def key_refresh(self, *, forced: bool) -> None:
        for observer in self.observers:
            observer.key_refresh(forced=forced)

    def graph_call(self, *, ok: bool, seconds: float) -> None:
        for observer in self.observers:
            observer.graph_call(ok=ok, seconds=seconds)

    def obo_acquire(self, *, cached: bool, ok: bool, code: str | None, seconds: float) -> None:
        for observer in self.observers:
            observer.obo_acquire(cached=cached, ok=ok, code=code, seconds=seconds)

    def groups_cache(self, *, hit: bool) -> None:
        for observer in self.observers:
            observer.groups_cache(hit=hit)

    def shared_cache_degraded(self, *, reason: str) -> None:
        for observer in self.observers:
            observer.shared_cache_degraded(reason=reason)

    def graph_response(self, *, status: int, resource_units: float | None) -> None:
        for observer in self.observers:
            observer.graph_response(status=status, resource_units=resource_units)
