"""Outbound HTTP: one client for metadata, token and Graph calls, with hard limits."""

from __future__ import annotations

import json
import logging
import math
import ssl
from collections.abc import Callable
from typing import Any

import httpx

from ._settings import EntraSettings

logger = logging.getLogger("entra_guard.http")

#: Longest pause a server's ``Retry-After`` can impose on us, s (HTTP-date forms are ignored).
MAX_RETRY_AFTER = 300.0
#: Largest JSON document we accept from the IdP or Graph.
MAX_RESPONSE_BYTES = 2 * 1024 * 1024


class FetchError(Exception):
    """An outbound call failed; ``retry_after`` is set when the server asked for a pause.

    ``bad_body``: the server answered 200 with a body we cannot use (not JSON, too deep,
    too large). Asking again gets the same body, so callers do not retry it.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        bad_body: bool = False,
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.bad_body = bad_body


def build_client(settings: EntraSettings) -> httpx.AsyncClient:
    """The client entra-guard uses when the app does not pass its own.

    Proxy and CA settings from ``EntraSettings`` win; otherwise httpx honours
    the usual ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` and
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` environment variables. ``ca_bundle``
    replaces the default trust store. Turning ``tls_verify`` off logs a warning
    every time a client is built. Redirects are never followed: a redirect from
    the IdP is an error.
    """
    verify: ssl.SSLContext | bool = settings.tls_verify
    if not settings.tls_verify:
        logger.warning(
            "INSECURE: ENTRA_TLS_VERIFY is off, so anyone on the network path can serve "
            "signing keys and forge tokens this API will accept. Use ENTRA_CA_BUNDLE for a "
            "private or corporate CA instead.%s",
            " (ENTRA_CA_BUNDLE is ignored while verification is off)" if settings.ca_bundle else "",
        )
    elif settings.ca_bundle:
        try:
            verify = ssl.create_default_context(cafile=settings.ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"ENTRA_CA_BUNDLE={settings.ca_bundle!r} cannot be loaded as PEM CA "
                f"certificates: {exc}"
            ) from exc
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.http_timeout),
        proxy=settings.http_proxy,
        verify=verify,
        trust_env=True,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        headers={"user-agent": "entra-guard"},
    )


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


async def request_json(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    on_response: Callable[[httpx.Response], None] | None = None,
    **kwargs: Any,
) -> Any:
    """Send a request and return its JSON body; every failure is a ``FetchError``.

    ``on_response`` sees the status and headers first (e.g. Graph's throttling headers).
    """
    try:
        async with client.stream(method, url, **kwargs) as response:
            if on_response is not None:
                on_response(response)
            if response.status_code != 200:
                raise FetchError(
                    f"{method} {url} answered HTTP {response.status_code}",
                    status=response.status_code,
                    retry_after=retry_after_seconds(response),
                )
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise FetchError(
                        f"{method} {url}: response larger than {MAX_RESPONSE_BYTES} B",
                        bad_body=True,
                    )
    except httpx.HTTPError as exc:
        raise FetchError(f"{method} {url} failed: {type(exc).__name__}") from exc
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise FetchError(f"{method} {url}: response is not JSON", bad_body=True) from exc
