"""Entra External ID (CIAM): the GUID-host issuer, tenants by name, no v1 document
(docs/customer-identities.md)."""

from __future__ import annotations

import logging
import uuid

import pytest

from entra_guard.testing import FakeEntraID, FakeExternalID, FakeKey

from ._customer_apps import api_client, authority, bearer, customer_app
from .conftest import assert_refused

CIAM = "http://contoso.ciamlogin.localhost"
CUSTOM_DOMAIN = "http://login.contoso.localhost"


@pytest.fixture(scope="module")
def ciam() -> FakeExternalID:
    return FakeExternalID()


@pytest.mark.parametrize("url", [CIAM, CUSTOM_DOMAIN])
@pytest.mark.parametrize("by", ["guid", "name"])
async def test_token_accepted_with_the_guid_host_issuer(
    ciam: FakeExternalID, url: str, by: str
) -> None:
    tenant = ciam.tenant_id if by == "guid" else f"{ciam.subdomain}.onmicrosoft.com"
    async with authority(ciam, url, tenant_id=tenant) as auth:
        assert auth.settings.tenant_is_domain is (by == "name")
        async with api_client(customer_app(auth)) as client:
            oid = str(uuid.uuid4())
            response = await client.get("/me", headers=bearer(ciam.token(object_id=oid)))
            assert response.status_code == 200, response.text
            me = response.json()
            assert me["issuer"] == f"https://{ciam.tenant_id}.ciamlogin.com/{ciam.tenant_id}/v2.0"
            assert me["tenant_id"] == ciam.tenant_id and me["object_id"] == oid
            assert me["policy"] is None and me["token_version"] == "2.0"
            items = await client.get("/items", headers=bearer(ciam.token(scopes=["Items.Read"])))
            assert items.status_code == 200
            refused = await client.get("/items", headers=bearer(ciam.token(scopes=["Other"])))
            assert_refused(refused, 403, "insufficient_scope")


async def test_missing_v1_document_is_not_an_outage(
    ciam: FakeExternalID, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="entra_guard")
    async with authority(ciam, CIAM) as auth:
        assert "1.0" in auth.settings.accepted_token_versions  # the default asks for v1 too
        async with api_client(customer_app(auth)) as client:
            for _ in range(2):
                response = await client.get("/me", headers=bearer(ciam.token()))
                assert response.status_code == 200, response.text
        await auth.metadata._run(full=True)  # a full reload: no second log line
        assert auth.metadata.current is not None
        assert set(auth.metadata.current.issuers) == {"2.0"}
    messages = [r for r in caplog.records if r.name.startswith("entra_guard")]
    assert not [r for r in messages if r.levelno >= logging.WARNING], messages
    absent = [r for r in messages if "no v1 discovery document" in r.getMessage()]
    assert len(absent) == 1 and absent[0].levelno == logging.INFO


async def test_missing_v2_document_stays_an_outage() -> None:
    ciam = FakeExternalID()
    ciam.fail(404, path_contains="/v2.0/.well-known")
    async with authority(ciam, CIAM) as auth, api_client(customer_app(auth)) as client:
        response = await client.get("/me", headers=bearer(ciam.token()))
        assert_refused(response, 503, "idp_unavailable")


async def test_v1_outage_other_than_404_is_still_an_outage() -> None:
    """Only 404 means "not offered": a 500 on the v1 document is a failing IdP."""
    workforce = FakeEntraID()
    workforce.fail(500, path_contains="/.well-known/openid-configuration")
    url = "http://login.workforce.localhost"
    async with authority(workforce, url) as auth, api_client(customer_app(auth)) as client:
        response = await client.get("/me", headers=bearer(workforce.token()))
        assert_refused(response, 503, "idp_unavailable")


async def test_wrong_issuer_refused(ciam: FakeExternalID) -> None:
    async with authority(ciam, CIAM) as auth, api_client(customer_app(auth)) as client:
        workforce_iss = f"https://login.microsoftonline.com/{ciam.tenant_id}/v2.0"
        for iss in (workforce_iss, f"https://contoso.ciamlogin.com/{ciam.tenant_id}/v2.0"):
            response = await client.get("/me", headers=bearer(ciam.token(iss=iss)))
            body = assert_refused(response, 401, "invalid_issuer")
            assert "issuer" in body["detail"]


async def test_other_tenant_refused_when_configured_by_name(ciam: FakeExternalID) -> None:
    """By name, the single-tenant check uses the GUID of the metadata's issuer."""
    other = str(uuid.uuid4())
    tenant = f"{ciam.subdomain}.onmicrosoft.com"
    async with (
        authority(ciam, CIAM, tenant_id=tenant) as auth,
        api_client(customer_app(auth)) as client,
    ):
        response = await client.get("/me", headers=bearer(ciam.token(tenant_id=other)))
        body = assert_refused(response, 401, "invalid_issuer")
        assert "another tenant" in body["detail"]
        missing = await client.get("/me", headers=bearer(ciam.token(tid=None)))
        assert_refused(missing, 401, "invalid_issuer")


async def test_external_id_token_refused_by_a_workforce_api() -> None:
    """Same tenant, same keys: the workforce API's issuer is not the GUID-host one."""
    key = FakeKey.generate()
    ciam = FakeExternalID(key=key)
    workforce = FakeEntraID(tenant_id=ciam.tenant_id, key=key)
    url = "http://login.workforce.localhost"
    async with authority(workforce, url) as auth, api_client(customer_app(auth)) as client:
        assert (await client.get("/me", headers=bearer(workforce.token()))).status_code == 200
        response = await client.get("/me", headers=bearer(ciam.token()))
        assert_refused(response, 401, "invalid_issuer")
