"""Azure AD B2C: metadata and keys per policy, tfp/acr, tokens without tid/oid, "ver": "1.0"
(docs/customer-identities.md)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from entra_guard._inspect import inspect_token
from entra_guard.testing import FakeB2C, FakeKey

from ._customer_apps import api_client, authority, bearer, customer_app
from .conftest import assert_refused

B2C = "http://contoso.b2clogin.localhost"
SIGN_UP, SIGN_IN, PROFILE = "B2C_1_signupsignin", "B2C_1A_signin", "B2C_1_profile"


@pytest.fixture(scope="module")
def b2c() -> FakeB2C:
    """Three policies published; the API below trusts the first two."""
    return FakeB2C(policies=(SIGN_UP, SIGN_IN, PROFILE))


def configured(b2c: FakeB2C, **overrides: object) -> dict[str, object]:
    return {"b2c_policies": [SIGN_UP, SIGN_IN], **overrides}


@pytest.mark.parametrize("policy", [SIGN_UP, SIGN_IN])
@pytest.mark.parametrize("legacy_acr", [False, True])
async def test_each_configured_policy_accepted(b2c: FakeB2C, policy: str, legacy_acr: bool) -> None:
    oid = str(uuid.uuid4())
    async with (
        authority(b2c, B2C, **configured(b2c)) as auth,
        api_client(customer_app(auth)) as client,
    ):
        token = b2c.token(policy=policy, object_id=oid, legacy_acr=legacy_acr, idp="google.com")
        claims = b2c.claims(policy=policy, legacy_acr=legacy_acr)
        assert claims["ver"] == "1.0" and "tid" not in claims and "oid" not in claims
        for _ in range(2):  # the second answer comes from the verified-token cache
            response = await client.get("/me", headers=bearer(token))
            assert response.status_code == 200, response.text
        me = response.json()
        assert me["policy"] == policy  # as configured
        assert me["issuer"] == b2c.issuer
        assert me["tenant_id"] == b2c.tenant_id  # from the issuer: the token has no tid
        assert me["object_id"] == oid  # no oid: the sub
        assert me["is_guest"] is False  # B2C's idp is the social provider, not a guest
        assert me["token_version"] == "2.0"
        assert (await client.get("/items", headers=bearer(token))).status_code == 200
        refused = await client.get("/admin", headers=bearer(token))
        assert_refused(refused, 403, "missing_role")


async def test_policy_names_are_case_insensitive(b2c: FakeB2C) -> None:
    settings = configured(b2c, b2c_policies=[SIGN_UP.lower(), SIGN_IN.upper()])
    async with authority(b2c, B2C, **settings) as auth, api_client(customer_app(auth)) as client:
        for named in (SIGN_UP.upper(), SIGN_IN.lower(), SIGN_IN):
            token = b2c.token(policy=named)
            response = await client.get("/me", headers=bearer(token))
            assert response.status_code == 200, response.text
            assert response.json()["policy"] in (SIGN_UP.lower(), SIGN_IN.upper())


async def test_unconfigured_policy_refused_without_a_fetch(b2c: FakeB2C) -> None:
    b2c.reset_hits()
    async with (
        authority(b2c, B2C, **configured(b2c)) as auth,
        api_client(customer_app(auth)) as client,
    ):
        for token in (
            b2c.token(policy=PROFILE),
            b2c.token(policy=PROFILE, legacy_acr=True),
            b2c.token(policy="../../evil"),
            b2c.token(tfp=None),  # names no policy
            b2c.token(tfp=["B2C_1_signupsignin"]),  # not a string
        ):
            response = await client.get("/me", headers=bearer(token))
            body = assert_refused(response, 401, "invalid_issuer")
            assert "policy" in body["detail"]
    assert b2c.hits_matching(PROFILE.lower()) == b2c.hits_matching(PROFILE) == 0
    assert b2c.hits_matching("evil") == 0


async def test_token_of_policy_x_signed_with_policy_y_key_refused(b2c: FakeB2C) -> None:
    """The keys must be the named policy's: Y's key (and kid) for a token naming X fails."""
    async with (
        authority(b2c, B2C, **configured(b2c)) as auth,
        api_client(customer_app(auth)) as client,
    ):
        assert (await client.get("/me", headers=bearer(b2c.token(policy=SIGN_IN)))).is_success
        y_key = b2c.policy_keys[SIGN_IN.lower()]
        claims = b2c.claims(policy=SIGN_UP)
        # Y's kid: not in X's JWKS.
        response = await client.get("/me", headers=bearer(b2c.token(claims, key=y_key)))
        assert_refused(response, 401, "unknown_key")
        # X's kid, Y's signature: does not verify.
        x_kid = b2c.policy_keys[SIGN_UP.lower()].kid
        forged = b2c.token(claims, key=y_key, header={"kid": x_kid})
        assert_refused(await client.get("/me", headers=bearer(forged)), 401, "invalid_signature")
        # An unpublished key naming X's kid.
        stranger = b2c.token(claims, key=FakeKey.generate(), header={"kid": x_kid})
        assert_refused(await client.get("/me", headers=bearer(stranger)), 401, "invalid_signature")


async def test_tenant_claims_when_present(b2c: FakeB2C) -> None:
    async with (
        authority(b2c, B2C, **configured(b2c)) as auth,
        api_client(customer_app(auth)) as client,
    ):
        oid = str(uuid.uuid4())
        token = b2c.token(with_tenant_claims=True, object_id=oid, sub="a-pairwise-sub")
        me = (await client.get("/me", headers=bearer(token))).json()
        assert me["tenant_id"] == b2c.tenant_id and me["object_id"] == oid
        assert me["subject"] == "a-pairwise-sub"
        other = b2c.token(tid=str(uuid.uuid4()))
        body = assert_refused(await client.get("/me", headers=bearer(other)), 401, "invalid_issuer")
        assert "another tenant" in body["detail"]
        not_guid = b2c.token(tid="contoso")
        assert_refused(await client.get("/me", headers=bearer(not_guid)), 401, "invalid_issuer")


@pytest.mark.parametrize("ver", ["1.0", "2.0", None])
async def test_ver_one_accepted(b2c: FakeB2C, ver: str | None) -> None:
    async with (
        authority(b2c, B2C, **configured(b2c)) as auth,
        api_client(customer_app(auth)) as client,
    ):
        token = b2c.token(ver=ver) if ver is not None else b2c.token(ver=None)
        assert (await client.get("/me", headers=bearer(token))).status_code == 200


async def test_other_issuer_or_version_refused(b2c: FakeB2C) -> None:
    async with (
        authority(b2c, B2C, **configured(b2c)) as auth,
        api_client(customer_app(auth)) as client,
    ):
        for token in (
            b2c.token(ver="3.0"),
            b2c.token(iss=f"https://contoso.b2clogin.com/{uuid.uuid4()}/v2.0/"),
            b2c.token(iss=f"https://login.microsoftonline.com/{b2c.tenant_id}/v2.0"),
            b2c.token(iss=None),
        ):
            response = await client.get("/me", headers=bearer(token))
            assert_refused(response, 401, "invalid_issuer")
        wrong_aud = b2c.token(audience=str(uuid.uuid4()))
        response = await client.get("/me", headers=bearer(wrong_aud))
        assert_refused(response, 401, "invalid_audience")


async def test_tenant_by_guid_and_metadata_per_policy() -> None:
    """Configured by GUID; each policy's documents fetched once (single-flight, cached),
    and one policy's outage leaves the other working."""
    b2c = FakeB2C(policies=(SIGN_UP, SIGN_IN))
    async with (
        authority(b2c, B2C, tenant_id=b2c.tenant_id) as auth,
        api_client(customer_app(auth)) as client,
    ):
        b2c.fail(503, path_contains=f"/{SIGN_IN}/")
        for _ in range(3):
            ok = await client.get("/me", headers=bearer(b2c.token(policy=SIGN_UP)))
            assert ok.status_code == 200, ok.text
        down = await client.get("/me", headers=bearer(b2c.token(policy=SIGN_IN)))
        assert_refused(down, 503, "idp_unavailable")
        discovery = f"/{b2c.tenant_id}/{SIGN_UP}/v2.0/.well-known/openid-configuration"
        assert b2c.hits[discovery] == 1
        assert b2c.hits[f"/{b2c.tenant_id}/{SIGN_UP}/discovery/v2.0/keys"] == 1
        assert (
            b2c.hits_matching("/.well-known/openid-configuration") == 2
        )  # one per policy (the failing one tried once); no v1
        b2c.recover()


async def test_inspect_explains_a_wrong_policy_token(b2c: FakeB2C) -> None:
    settings = b2c.settings(B2C, **configured(b2c))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=b2c.app), base_url=B2C) as http:
        good = await inspect_token(b2c.token(policy=SIGN_IN), settings, http_client=http)
        assert good.valid, good.failure
        report = await inspect_token(b2c.token(policy=PROFILE), settings, http_client=http)
    assert not report.valid and report.failed_rule == "policy"
    assert report.code == "invalid_issuer" and report.hint is not None
    assert "ENTRA_B2C_POLICIES" in report.hint and PROFILE in report.hint
    key_check = next(c for c in report.checks if c.name == "key")
    assert "no configured B2C policy" in (key_check.detail or "")


def test_inspect_cli_takes_b2c_policies() -> None:
    import argparse

    from entra_guard._inspect._cli import add_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--tenant-id=contoso.onmicrosoft.com",
            "--client-id=api",
            "--b2c-policy=B2C_1_signupsignin",
            "--b2c-policy=B2C_1A_signin",
        ]
    )
    settings = settings_from_args(args)
    assert settings.b2c_policies == [SIGN_UP, SIGN_IN] and settings.is_b2c
    assert settings.authority.endswith("/contoso.onmicrosoft.com/B2C_1_signupsignin")


async def test_policy_match_refuses_claims_of_another_policy_than_the_keys(b2c: FakeB2C) -> None:
    """Defence in depth once the signature holds (the routing already makes it so): the
    policy named by the verified claims must be the one whose keys verified them."""
    from entra_guard import AuthError
    from entra_guard._validation import Context, rule_policy, rule_policy_match

    async with authority(b2c, B2C, **configured(b2c)) as auth:
        validator = auth.validator
        ctx = Context("unused", 0.0)
        ctx.payload = {"tfp": SIGN_IN.lower()}
        rule_policy(validator, ctx)
        assert ctx.policy == SIGN_IN and ctx.source is auth.policies.get(SIGN_IN)  # type: ignore[union-attr]
        for claims in ({"tfp": SIGN_UP}, {"acr": SIGN_UP}, {}, {"tfp": PROFILE}):
            ctx.claims = claims
            with pytest.raises(AuthError) as info:
                rule_policy_match(validator, ctx)
            assert info.value.code == "invalid_issuer" and info.value.reason == "policy"
            assert info.value.status_code == 401
        ctx.claims = {"acr": SIGN_IN.upper()}
        rule_policy_match(validator, ctx)  # the legacy claim, another spelling: the same policy


async def test_swagger_ui_sign_in_names_the_first_policy(b2c: FakeB2C) -> None:
    from entra_guard import setup_openapi

    async with authority(b2c, B2C, **configured(b2c)) as auth:
        app = customer_app(auth)
        setup_openapi(app, auth)
        async with api_client(app) as client:
            schema = (await client.get("/openapi.json")).json()
    flows = next(iter(schema["components"]["securitySchemes"].values()))["flows"]
    base = f"{B2C}/{b2c.domain}/{SIGN_UP}/oauth2/v2.0"
    assert flows["authorizationCode"]["authorizationUrl"] == f"{base}/authorize"
    assert flows["authorizationCode"]["tokenUrl"] == f"{base}/token"


async def test_swagger_ui_sign_in_uses_the_endpoints_the_metadata_publishes(b2c: FakeB2C) -> None:
    """Once the policy's metadata is loaded, Swagger UI signs in at the endpoints it lists."""
    from entra_guard import setup_openapi

    async with authority(b2c, B2C, **configured(b2c)) as auth:
        assert await auth.warm_up()
        current = auth.metadata.current
        assert current is not None and current.authorization_endpoint
        app = customer_app(auth)
        setup_openapi(app, auth)
        async with api_client(app) as client:
            schema = (await client.get("/openapi.json")).json()
    flows = next(iter(schema["components"]["securitySchemes"].values()))["flows"]
    assert flows["authorizationCode"]["authorizationUrl"] == current.authorization_endpoint
    assert flows["authorizationCode"]["tokenUrl"] == current.token_endpoint
    assert SIGN_UP.lower() in current.authorization_endpoint.lower()
