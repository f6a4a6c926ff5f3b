"""Logging: one INFO line per refusal with code/kid/tid/oid/app/path, never a token or PII.

Requests go over HTTP to the sample API, served in process (no sockets),
so ``caplog`` sees every record it writes (all loggers, DEBUG and up).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from entra_guard import EntraAuth, EntraAuthMiddleware, EntraSettings
from entra_guard._middleware import ERROR_KEY
from entra_guard.testing import FakeEntraID
from tests._inprocess import entra_client_for
from tests.conftest import ApiFactory, bearer
from tests.test_cli import REJECTIONS

pytestmark = pytest.mark.in_process

PII = ("Ada Lovelace", "ada@contoso.example", "10.1.2.3", "ada.private@example.org")


def _pii_token(idp: FakeEntraID, **options: object) -> str:
    return idp.token(email=PII[3], ipaddr=PII[2], **options)  # type: ignore[arg-type]


def rejection_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("entra_guard") and r.getMessage().startswith("request rejected")
    ]


def assert_clean(caplog: pytest.LogCaptureFixture, token: str) -> None:
    """No record of any logger holds the token, a piece of it, or a PII claim value."""
    header, payload, signature = token.split(".")[:3]
    for record in caplog.records:
        text = record.getMessage() + " " + " ".join(str(v) for v in record.__dict__.values())
        for secret in (token, header, payload[:32], signature[:32], *PII):
            assert secret not in text, (secret, record.getMessage())


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.mark.parametrize(
    ("make", "code"),
    [(r[0], r[1]) for r in REJECTIONS],
    ids=[r[0].__name__[1:] for r in REJECTIONS],
)
def test_validation_failures_log_code_and_kid_only(
    api: str,
    fake_entra: FakeEntraID,
    client: httpx.Client,
    logs: pytest.LogCaptureFixture,
    make: Callable[[FakeEntraID], str],
    code: str,
) -> None:
    token = make(fake_entra)
    response = client.get(f"{api}/me", headers=bearer(token))
    assert response.json()["code"] == code
    (record,) = rejection_records(logs)
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert f"code={code} " in message and "path=/me" in message
    assert record.entra_code == code  # type: ignore[attr-defined]
    # the token was not verified: tid/oid/app are unknown, whatever the token claims
    assert "tid=- oid=- app=-" in message
    expected_kid = fake_entra.active_key.kid if code != "unknown_key" else "not-published"
    assert f"kid={expected_kid} " in message
    assert_clean(logs, token)


def test_missing_token_is_logged(
    api: str, client: httpx.Client, logs: pytest.LogCaptureFixture
) -> None:
    assert client.get(f"{api}/me").status_code == 401
    (record,) = rejection_records(logs)
    assert "code=missing_token status=401 path=/me kid=-" in record.getMessage()


def test_guard_failure_logs_verified_ids_without_pii(
    api: str, fake_entra: FakeEntraID, client: httpx.Client, logs: pytest.LogCaptureFixture
) -> None:
    oid = "3b9d1f0e-7c4a-4e2b-9d8f-6a5b4c3d2e1f"
    token = _pii_token(fake_entra, object_id=oid, scopes=["Items.Read"])
    assert client.post(f"{api}/items", headers=bearer(token), json={}).status_code == 403
    (record,) = rejection_records(logs)
    message = record.getMessage()
    assert "code=insufficient_scope status=403 path=/items" in message
    assert f"tid={fake_entra.tenant_id} oid={oid} app=04b07795-" in message
    assert "name=" not in message and "upn=" not in message
    assert_clean(logs, token)


def test_log_pii_setting_adds_name_and_upn(
    start_api: ApiFactory,
    entra_settings: EntraSettings,
    fake_entra: FakeEntraID,
    client: httpx.Client,
    logs: pytest.LogCaptureFixture,
) -> None:
    api = start_api(entra_settings.model_copy(update={"log_pii": True}))
    token = fake_entra.token(scopes=["Items.Read"])
    assert client.get(f"{api}/admin", headers=bearer(token)).status_code == 403
    (record,) = rejection_records(logs)
    assert "name=Ada?Lovelace upn=ada@contoso.example" in record.getMessage()
    # even then, never the token
    assert token.split(".")[2][:32] not in logs.text


def test_pii_of_unverified_tokens_is_never_logged_even_with_log_pii(
    start_api: ApiFactory,
    entra_settings: EntraSettings,
    fake_entra: FakeEntraID,
    client: httpx.Client,
    logs: pytest.LogCaptureFixture,
) -> None:
    api = start_api(entra_settings.model_copy(update={"log_pii": True}))
    token = _pii_token(fake_entra, expires_in=-3600)
    assert client.get(f"{api}/me", headers=bearer(token)).status_code == 401
    (record,) = rejection_records(logs)
    assert "tid=- oid=- app=-" in record.getMessage()
    assert_clean(logs, token)


def test_idp_unavailable_is_logged_with_metadata_failure(
    start_api: ApiFactory,
    fresh_idp: tuple[FakeEntraID, str],
    client: httpx.Client,
    logs: pytest.LogCaptureFixture,
) -> None:
    idp, url = fresh_idp
    idp.fail(503)
    api = start_api(idp.settings(url))
    token = _pii_token(idp)
    assert client.get(f"{api}/me", headers=bearer(token)).status_code == 503
    failures = [r for r in logs.records if "metadata fetch failed after" in r.getMessage()]
    assert failures and all(r.levelno >= logging.WARNING for r in failures)
    assert "HTTP 503" in failures[0].getMessage()
    assert any("warm-up failed" in r.getMessage() for r in logs.records)
    (record,) = rejection_records(logs)
    assert "code=idp_unavailable status=503" in record.getMessage()
    assert_clean(logs, token)


def test_metadata_loads_and_forced_refreshes_are_logged_with_durations(
    start_api: ApiFactory,
    fresh_idp: tuple[FakeEntraID, str],
    client: httpx.Client,
    logs: pytest.LogCaptureFixture,
) -> None:
    idp, url = fresh_idp
    api = start_api(idp.settings(url))
    loaded = [r for r in logs.records if r.getMessage().startswith("metadata loaded in ")]
    assert len(loaded) == 1 and loaded[0].levelno == logging.INFO
    assert loaded[0].name == "entra_guard.metadata"
    idp.rotate_keys()
    token = idp.token()
    assert client.get(f"{api}/me", headers=bearer(token)).status_code == 200
    messages = [r.getMessage() for r in logs.records if r.name.startswith("entra_guard")]
    assert f"unknown signing key kid={idp.active_key.kid}: refreshing the JWKS" in messages
    assert any(
        m.startswith("signing keys refreshed in ") and "s: 1 signing keys" in m for m in messages
    )


def test_attacker_controlled_values_cannot_forge_log_lines(
    start_api: ApiFactory,
    entra_settings: EntraSettings,
    fake_entra: FakeEntraID,
    client: httpx.Client,
    logs: pytest.LogCaptureFixture,
) -> None:
    auth = EntraAuth(entra_settings, http_client=entra_client_for(entra_settings))

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # any path reaches the middleware: no router
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await auth.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        raise scope[ERROR_KEY]

    app = EntraAuthMiddleware(inner, auth=auth)
    api = start_api(app=app)  # type: ignore[arg-type]
    token = fake_entra.token(header={"kid": "evil\nrequest rejected: code=none"})
    response = client.get(f"{api}/x%0d%0aforged%20line", headers=bearer(token))
    assert response.status_code == 401
    (record,) = rejection_records(logs)
    message = record.getMessage()
    assert "\n" not in message and "\r" not in message
    assert "kid=evil?request?rejected:?code=none " in message
    assert "path=/x??forged?line " in message
