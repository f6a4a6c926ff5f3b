"""The shortest path through the product: a token from the fake IdP reaches /me."""

from __future__ import annotations

import httpx
import pytest

from entra_guard.testing import FakeEntraID

from .conftest import assert_refused, bearer

pytestmark = pytest.mark.in_process


def test_me_with_valid_v2_token(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(
        scopes=["Items.Read"], object_id="0c9a3f0e-1a0b-4f45-9f7e-111111111111"
    )
    response = client.get(f"{api}/me", headers=bearer(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object_id"] == "0c9a3f0e-1a0b-4f45-9f7e-111111111111"
    assert body["scopes"] == ["Items.Read"]
    assert body["token_version"] == "2.0"
    assert "claims" not in body


def test_me_without_token(api: str, client: httpx.Client) -> None:
    assert_refused(client.get(f"{api}/me"), 401, "missing_token")


def test_health_ignores_bad_token(api: str, client: httpx.Client) -> None:
    response = client.get(f"{api}/health", headers=bearer("garbage"))
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
