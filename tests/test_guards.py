"""The sample API's guarded routes (docs/getting-started.md "The sample API's routes")
over HTTP: who passes, who is refused, why."""

from __future__ import annotations

import httpx
import pytest

from entra_guard.testing import FakeEntraID, FakeKey

from .conftest import assert_refused, bearer

pytestmark = pytest.mark.in_process

OTHER_TENANT = "0b1f2a3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"


def get(client: httpx.Client, url: str, token: str) -> httpx.Response:
    return client.get(url, headers=bearer(token))


# -- GET /items: scope Items.Read (delegated) or app role Items.Read.All (app-only) ------------


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_items_delegated_with_scope(
    api: str, client: httpx.Client, fake_entra: FakeEntraID, version: str
) -> None:
    token = fake_entra.token(version=version, scopes=["Items.Read"])
    response = get(client, f"{api}/items", token)
    assert response.status_code == 200, response.text
    assert response.json()["items"]


def test_items_delegated_with_one_of_several_scopes(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    token = fake_entra.token(scopes=["User.Read", "Items.Read", "Items.Write"])
    assert get(client, f"{api}/items", token).status_code == 200


def test_items_delegated_wrong_scope(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    response = get(client, f"{api}/items", fake_entra.token(scopes=["Items.Write"]))
    assert_refused(response, 403, "insufficient_scope")
    assert 'scope="Items.Read"' in response.headers["www-authenticate"]


def test_items_scope_names_are_case_sensitive(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    response = get(client, f"{api}/items", fake_entra.token(scopes=["items.read"]))
    assert_refused(response, 403, "insufficient_scope")


def test_items_delegated_token_with_only_the_app_role(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    """A user holding the daemon's app role does not pass: delegated tokens need the scope."""
    token = fake_entra.token(scopes=["User.Read"], roles=["Items.Read.All"])
    assert_refused(get(client, f"{api}/items", token), 403, "insufficient_scope")


def test_items_app_only_with_app_role(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    token = fake_entra.token(app_only=True, roles=["Items.Read.All"])
    assert get(client, f"{api}/items", token).status_code == 200


def test_items_app_only_with_role_named_like_the_scope(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    """An app never passes on the delegated scope's name."""
    token = fake_entra.token(app_only=True, roles=["Items.Read"])
    assert_refused(get(client, f"{api}/items", token), 403, "missing_role")


def test_items_app_only_with_other_role(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    token = fake_entra.token(app_only=True, roles=["Admin"])
    assert_refused(get(client, f"{api}/items", token), 403, "missing_role")


def test_items_app_only_without_idtyp_is_still_app_only(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    """No ``idtyp`` optional claim: no ``scp`` still means app-only."""
    token = fake_entra.token(app_only=True, roles=["Items.Read"], idtyp=None)
    assert_refused(get(client, f"{api}/items", token), 403, "missing_role")
    token = fake_entra.token(app_only=True, roles=["Items.Read.All"], idtyp=None)
    assert get(client, f"{api}/items", token).status_code == 200


def test_items_without_token(api: str, client: httpx.Client) -> None:
    assert_refused(client.get(f"{api}/items"), 401, "missing_token")


def test_items_other_tenant(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    """Another tenant's token on the single-tenant sample API fails validation first."""
    token = fake_entra.token(scopes=["Items.Read"], tenant_id=OTHER_TENANT)
    assert_refused(get(client, f"{api}/items", token), 401, "invalid_issuer")


def test_items_forged_token_is_401_not_403(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    """Authorization only ever looks at verified claims (no scope oracle on forgeries)."""
    forged = fake_entra.token(scopes=["Other"], key=FakeKey.generate())
    assert_refused(get(client, f"{api}/items", forged), 401, "invalid_signature")


def test_items_expired_token_is_401(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    token = fake_entra.token(scopes=["Items.Read"], expires_in=-3600)
    assert_refused(get(client, f"{api}/items", token), 401, "token_expired")


# -- POST /items: scope Items.Write --------------------------------------------------------------


def test_post_items_with_write_scope(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    token = fake_entra.token(scopes=["Items.Write"])
    response = client.post(f"{api}/items", headers=bearer(token), json={"name": "pear"})
    assert 200 <= response.status_code < 300, response.text
    assert response.json()["item"] == {"name": "pear"}
    empty = client.post(f"{api}/items", headers=bearer(token))
    assert 200 <= empty.status_code < 300, empty.text


def test_post_items_with_read_scope_only(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    token = fake_entra.token(scopes=["Items.Read"])
    response = client.post(f"{api}/items", headers=bearer(token), json={"name": "pear"})
    assert_refused(response, 403, "insufficient_scope")
    assert 'scope="Items.Write"' in response.headers["www-authenticate"]


def test_post_items_app_only_token(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(app_only=True, roles=["Items.Read.All", "Items.Write"])
    assert_refused(client.post(f"{api}/items", headers=bearer(token)), 403, "insufficient_scope")


def test_post_items_refusal_beats_body_validation(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    """A refused caller learns nothing about the body schema (403, not 422).

    The body is JSON that the schema refuses: malformed JSON sent as JSON is a 422
    before any dependency runs on every FastAPI version (docs/supported-versions.md).
    """
    token = fake_entra.token(scopes=["Items.Read"])
    response = client.post(f"{api}/items", headers=bearer(token), json=["not", "an", "object"])
    assert_refused(response, 403, "insufficient_scope")
    assert_refused(client.post(f"{api}/items", json=["not", "an", "object"]), 401, "missing_token")
    # The schema does refuse it once the caller passes.
    writer = fake_entra.token(scopes=["Items.Write"])
    response = client.post(f"{api}/items", headers=bearer(writer), json=["not", "an", "object"])
    assert response.status_code == 422, response.text


# -- GET /admin: app role Admin -------------------------------------------------------------------


def test_admin_app_with_admin_role(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(app_only=True, roles=["Admin"])
    assert get(client, f"{api}/admin", token).status_code == 200


def test_admin_user_assigned_admin_role(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    token = fake_entra.token(scopes=["Items.Read"], roles=["Admin"])
    assert get(client, f"{api}/admin", token).status_code == 200


def test_admin_scope_named_admin_is_not_the_role(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    token = fake_entra.token(scopes=["Admin"])
    response = get(client, f"{api}/admin", token)
    assert_refused(response, 403, "missing_role")
    assert "insufficient_scope" not in response.headers.get("www-authenticate", "")


def test_admin_other_role(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(app_only=True, roles=["Items.Read.All"])
    assert_refused(get(client, f"{api}/admin", token), 403, "missing_role")


def test_admin_without_token(api: str, client: httpx.Client) -> None:
    assert_refused(client.get(f"{api}/admin"), 401, "missing_token")


def test_health_and_me_stay_as_they_were(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    assert client.get(f"{api}/health", headers=bearer("x.y.z")).json() == {"status": "ok"}
    token = fake_entra.token(scopes=["Nothing.Useful"])
    assert get(client, f"{api}/me", token).json()["scopes"] == ["Nothing.Useful"]
