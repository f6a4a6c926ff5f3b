"""Principal fields for every token shape, as the sample API's /me returns them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from entra_guard.testing import DEFAULT_CLIENT_APP_ID, FakeEntraID

from .conftest import bearer

pytestmark = pytest.mark.in_process

GROUPS = ["9b8f5a44-7f1e-4a39-9a53-0f5c1c0e0001", "9b8f5a44-7f1e-4a39-9a53-0f5c1c0e0002"]


def me(client: httpx.Client, api: str, token: str) -> dict[str, Any]:
    response = client.get(f"{api}/me", headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_v2_delegated(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    oid = "1d7c8a0e-0000-4000-8000-000000000001"
    body = me(
        client,
        api,
        fake_entra.token(
            scopes=["Items.Write", "Items.Read"],
            object_id=oid,
            groups=GROUPS,
            wids=["62e90394-69f5-4237-9190-012177145e10"],
        ),
    )
    assert body["token_version"] == "2.0"
    assert body["tenant_id"] == fake_entra.tenant_id
    assert body["object_id"] == oid
    assert body["app_id"] == DEFAULT_CLIENT_APP_ID
    assert body["scopes"] == ["Items.Read", "Items.Write"]
    assert body["groups"] == GROUPS
    assert body["wids"] == ["62e90394-69f5-4237-9190-012177145e10"]
    assert body["is_app_only"] is False and body["is_guest"] is False
    assert body["groups_overage"] is False
    assert body["name"] == "Ada Lovelace"
    assert body["preferred_username"] == "ada@contoso.example"
    assert isinstance(body["subject"], str) and body["subject"]


def test_v1_delegated_uses_appid_and_api_audience(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    token = fake_entra.token(version="1.0", scopes=["user_impersonation"])
    body = me(client, api, token)
    assert body["token_version"] == "1.0"
    assert body["app_id"] == DEFAULT_CLIENT_APP_ID
    assert body["scopes"] == ["user_impersonation"]
    assert body["preferred_username"] == "ada@contoso.example"  # from upn


def test_v1_token_identified_by_x5t_only(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    token = fake_entra.token(version="1.0", header={"kid": None, "x5t": fake_entra.active_key.kid})
    assert me(client, api, token)["token_version"] == "1.0"


def test_v1_token_with_client_id_audience(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    token = fake_entra.token(version="1.0", audience=fake_entra.client_id)
    assert me(client, api, token)["token_version"] == "1.0"


def test_app_only_v2(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    body = me(client, api, fake_entra.token(app_only=True, roles=["Items.Read.All", "Admin"]))
    assert body["is_app_only"] is True
    assert body["scopes"] == []
    assert body["roles"] == ["Admin", "Items.Read.All"]
    assert body["name"] is None and body["preferred_username"] is None
    assert body["object_id"] == body["subject"]


def test_app_only_without_idtyp_is_detected_by_missing_scp(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    body = me(client, api, fake_entra.token(app_only=True, idtyp=None, version="1.0"))
    assert body["is_app_only"] is True


def test_delegated_user_with_app_roles_is_not_app_only(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    body = me(client, api, fake_entra.token(scopes=["Items.Read"], roles=["Admin"]))
    assert body["is_app_only"] is False
    assert body["roles"] == ["Admin"]


def test_guest_by_acct_and_by_idp(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    assert me(client, api, fake_entra.token(guest=True))["is_guest"] is True
    assert me(client, api, fake_entra.token(acct=1))["is_guest"] is True
    foreign_idp = fake_entra.token(idp="live.com")
    assert me(client, api, foreign_idp)["is_guest"] is True
    same_idp = fake_entra.token(
        idp=f"https://login.microsoftonline.com/{fake_entra.tenant_id}/v2.0"
    )
    assert me(client, api, same_idp)["is_guest"] is False


def test_overage_markers(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    overage = me(client, api, fake_entra.token(overage=True))
    assert overage["groups_overage"] is True and overage["groups"] == []
    implicit = me(client, api, fake_entra.token(hasgroups=True))
    assert implicit["groups_overage"] is True
