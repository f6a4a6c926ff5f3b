"""Observer events and the Prometheus integration, driven over HTTP (in process).

Counters are read back from the sample app's ``/metrics`` endpoint (text
exposition format), so the whole chain is covered: middleware -> EntraAuth ->
observer -> prometheus-client -> HTTP.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from entra_guard import EntraAuth, EntraSettings
from entra_guard._metadata import MetadataCache
from entra_guard._observer import AuthObserver, CompositeObserver
from entra_guard.contrib.prometheus import PrometheusObserver
from entra_guard.testing import FakeEntraID
from tests.conftest import FINANCE_GROUP, ApiFactory, bearer

pytestmark = pytest.mark.in_process


def scrape(client: httpx.Client, api: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get(f"{api}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_sample_app_metrics_move_as_expected(
    start_api: ApiFactory,
    entra_settings: EntraSettings,
    fake_entra: FakeEntraID,
    client: httpx.Client,
) -> None:
    api = start_api(entra_settings)
    before = scrape(client, api)
    # warm-up at start-up fetched v2 + v1 discovery and the JWKS once, all fine
    for document in ("v1", "v2", "jwks"):
        assert value(before, "entra_guard_metadata_fetches_total", document=document, outcome="ok")
    assert value(before, "entra_guard_rejected_total", code="token_expired") == 0  # pre-declared

    token = fake_entra.token(scopes=["Items.Read"])
    for _ in range(3):
        assert client.get(f"{api}/me", headers=bearer(token)).status_code == 200
    assert client.get(f"{api}/me").status_code == 401
    expired = fake_entra.token(expires_in=-3600)
    assert client.get(f"{api}/me", headers=bearer(expired)).status_code == 401
    assert client.post(f"{api}/items", headers=bearer(token), json={}).status_code == 403
    unknown = fake_entra.token(header={"kid": "rotated-away"})
    assert client.get(f"{api}/me", headers=bearer(unknown)).status_code == 401

    after = scrape(client, api)
    # 3 x /me + the POST (the token is valid; the guard refuses it): 1 miss then hits
    assert value(after, "entra_guard_authenticated_total", cached="false") == 1
    assert value(after, "entra_guard_authenticated_total", cached="true") == 3
    assert value(after, "entra_guard_authentication_seconds_count", cached="false") == 1
    assert value(after, "entra_guard_token_cache_total", result="hit") == 3
    # misses: the first valid token, the expired one, the unknown-kid one
    assert value(after, "entra_guard_token_cache_total", result="miss") == 3
    assert value(after, "entra_guard_rejected_total", code="missing_token") == 1
    assert value(after, "entra_guard_rejected_total", code="token_expired") == 1
    assert value(after, "entra_guard_rejected_total", code="insufficient_scope") == 1
    assert value(after, "entra_guard_rejected_total", code="unknown_key") == 1
    assert value(after, "entra_guard_key_refreshes_total", forced="true") == 1
    assert value(
        after, "entra_guard_metadata_fetches_total", document="jwks", outcome="ok"
    ) == 1 + value(before, "entra_guard_metadata_fetches_total", document="jwks", outcome="ok")
    # labels are bounded: no tenant, user or token leaks into the metrics
    text = client.get(f"{api}/metrics").text
    assert fake_entra.tenant_id not in text and token.split(".")[2][:20] not in text


def test_metadata_failures_are_counted(
    start_api: ApiFactory, fresh_idp: tuple[FakeEntraID, str], client: httpx.Client
) -> None:
    idp, url = fresh_idp
    idp.fail(503)
    api = start_api(idp.settings(url))  # warm-up fails soft
    response = client.get(f"{api}/me", headers=bearer(idp.token()))
    assert response.status_code == 503
    samples = scrape(client, api)
    assert value(samples, "entra_guard_metadata_fetches_total", document="v2", outcome="error") >= 1
    assert value(samples, "entra_guard_rejected_total", code="idp_unavailable") == 1
    assert value(samples, "entra_guard_metadata_fetches_total", document="jwks", outcome="ok") == 0


@pytest.mark.over_sockets  # the engine alone, with its own HTTP client
async def test_periodic_refresh_is_a_key_refresh_event(
    entra_settings: EntraSettings, fake_entra: FakeEntraID
) -> None:
    now = [1000.0]
    metrics = PrometheusObserver()
    settings = entra_settings.model_copy(update={"metadata_refresh": 60.0})
    async with httpx.AsyncClient() as http:
        cache = MetadataCache(settings, http, observer=metrics, clock=lambda: now[0])
        await cache.get()
        assert metrics.value("entra_guard_key_refreshes_total", forced="false") == 0
        now[0] += 3600
        await cache.get()  # stale: serves the old snapshot, refreshes in the background
        assert metrics.value("entra_guard_key_refreshes_total", forced="false") == 1
        for _ in range(100):
            if (
                metrics.value("entra_guard_metadata_fetches_total", document="jwks", outcome="ok")
                == 2
            ):
                break
            await asyncio.sleep(0.01)
        assert (
            metrics.value("entra_guard_metadata_fetches_total", document="jwks", outcome="ok") == 2
        )
        assert metrics.value("entra_guard_metadata_fetch_seconds_count", document="v2") == 2
        await cache.aclose()


def test_graph_calls_and_groups_cache(
    start_api: ApiFactory,
    graph_settings: EntraSettings,
    fake_entra: FakeEntraID,
    fake_graph: Any,
    client: httpx.Client,
) -> None:
    api = start_api(graph_settings, finance_group_id=FINANCE_GROUP)
    oid = "5d2f7c8e-1a3b-4c5d-9e8f-0a1b2c3d4e5f"
    fake_graph.memberships[oid] = [FINANCE_GROUP]
    token = fake_entra.token(object_id=oid, overage=True)
    assert client.get(f"{api}/finance", headers=bearer(token)).status_code == 200
    assert client.get(f"{api}/finance", headers=bearer(token)).status_code == 200
    samples = scrape(client, api)
    assert value(samples, "entra_guard_graph_calls_total", outcome="ok") >= 1
    assert value(samples, "entra_guard_graph_calls_total", outcome="error") == 0
    assert value(samples, "entra_guard_graph_call_seconds_count") >= 1
    assert value(samples, "entra_guard_groups_cache_total", result="miss") == 1
    assert value(samples, "entra_guard_groups_cache_total", result="hit") == 1


def test_no_global_state_two_observers_coexist() -> None:
    first, second = PrometheusObserver(), PrometheusObserver()  # no "Duplicated timeseries"
    first.rejected("token_expired")
    assert first.value("entra_guard_rejected_total", code="token_expired") == 1
    assert second.value("entra_guard_rejected_total", code="token_expired") == 0
    body, content_type = first.exposition()
    assert b'entra_guard_rejected_total{code="token_expired"} 1.0' in body
    assert content_type.startswith("text/plain")


def test_custom_namespace() -> None:
    metrics = PrometheusObserver(namespace="myapi_auth")
    metrics.authenticated(cached=True, seconds=0.0001)
    assert metrics.value("myapi_auth_authenticated_total", cached="true") == 1


class Recorder(AuthObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def authenticated(self, *, cached: bool, seconds: float) -> None:
        self.events.append(("authenticated", cached))

    def token_cache(self, *, hit: bool) -> None:
        self.events.append(("token_cache", hit))

    def rejected(self, code: str) -> None:
        self.events.append(("rejected", code))


@pytest.mark.over_sockets  # the engine alone, with its own HTTP client
async def test_composite_observer_and_engine_events(
    entra_settings: EntraSettings, fake_entra: FakeEntraID
) -> None:
    recorder, metrics = Recorder(), PrometheusObserver()
    async with EntraAuth(entra_settings, observer=CompositeObserver([recorder, metrics])) as auth:
        token = fake_entra.token()
        await auth.authenticate(token)
        await auth.authenticate(token)
    assert recorder.events == [
        ("token_cache", False),
        ("authenticated", False),
        ("token_cache", True),
        ("authenticated", True),
    ]
    assert metrics.value("entra_guard_authenticated_total", cached="true") == 1
    assert metrics.value("entra_guard_metadata_fetches_total", document="v2", outcome="ok") == 1


def test_base_observer_is_a_no_op() -> None:
    observer = AuthObserver()
    observer.authenticated(cached=False, seconds=0.1)
    observer.rejected("missing_token")
    observer.token_cache(hit=True)
    observer.metadata_fetch(document="v2", ok=True, seconds=0.1)
    observer.key_refresh(forced=True)
    observer.graph_call(ok=False, seconds=0.1)
    observer.groups_cache(hit=False)


@pytest.mark.parametrize("code", ["token_expired", "missing_group"])
def test_rejected_codes_are_prelabelled(code: str) -> None:
    body, _ = PrometheusObserver().exposition()
    assert f'entra_guard_rejected_total{{code="{code}"}} 0.0'.encode() in body
