"""Every validation error code (docs/troubleshooting.md "Codes"), provoked over HTTP
against the sample API."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import pytest

from entra_guard.testing import FakeEntraID, FakeKey, sign_token

from .conftest import ApiFactory, assert_refused, bearer

pytestmark = pytest.mark.in_process

OTHER_TENANT = "0b1f2a3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: object) -> str:
    return b64(json.dumps(value).encode())


def me(client: httpx.Client, api: str, token: str) -> httpx.Response:
    return client.get(f"{api}/me", headers=bearer(token))


# -- missing_token ---------------------------------------------------------------


def test_no_authorization_header(api: str, client: httpx.Client) -> None:
    assert_refused(client.get(f"{api}/me"), 401, "missing_token")


def test_basic_scheme_is_not_a_bearer_token(api: str, client: httpx.Client) -> None:
    response = client.get(f"{api}/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_refused(response, 401, "missing_token")


def test_empty_bearer(api: str, client: httpx.Client) -> None:
    assert_refused(
        client.get(f"{api}/me", headers={"Authorization": "Bearer"}), 401, "missing_token"
    )


def test_token_in_query_string_or_cookie_is_ignored(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    token = fake_entra.token()
    response = client.get(
        f"{api}/me", params={"access_token": token}, headers={"Cookie": f"access_token={token}"}
    )
    body = assert_refused(response, 401, "missing_token")
    assert token not in json.dumps(body)


def test_scheme_is_case_insensitive(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    response = client.get(f"{api}/me", headers={"Authorization": f"bEaReR {fake_entra.token()}"})
    assert response.status_code == 200


# -- malformed_token -------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b",
        "a.b.c.d",
        "!!!.???.***",
        f"{b64(b'not json')}.{b64json({'a': 1})}.c2ln",
        f"{b64json([1, 2])}.{b64json({'a': 1})}.c2ln",
        f"{b64json({'alg': 'RS256'})}..c2ln",
    ],
    ids=[
        "one-part",
        "two-parts",
        "four-parts",
        "bad-base64",
        "header-not-json",
        "header-array",
        "empty-payload",
    ],
)
def test_malformed(api: str, client: httpx.Client, token: str) -> None:
    assert_refused(me(client, api, token), 401, "malformed_token")


def test_jwe_gets_a_clear_message(api: str, client: httpx.Client) -> None:
    jwe = ".".join([b64json({"alg": "RSA-OAEP", "enc": "A256GCM"}), "a", "b", "c", "d"])
    body = assert_refused(me(client, api, jwe), 401, "malformed_token")
    assert "JWE" in body["detail"]


def test_oversized_token(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(padding="x" * 17000)
    body = assert_refused(me(client, api, token), 401, "malformed_token")
    assert "larger" in body["detail"]


def test_sixteen_kib_token_is_accepted(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    short = fake_entra.token(padding="")
    token = fake_entra.token(padding="x" * ((16 * 1024 - len(short) - 16) * 3 // 4))
    assert 15 * 1024 < len(token) <= 16 * 1024
    assert me(client, api, token).status_code == 200


def test_duplicate_claims_are_refused(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    claims = fake_entra.claims()
    payload = json.dumps(claims)[:-1] + f', "tid": "{OTHER_TENANT}"}}'
    head = b64json({"typ": "JWT", "alg": "RS256", "kid": fake_entra.active_key.kid})
    body = b64(payload.encode())
    signature = fake_entra.active_key.signer.sign(f"{head}.{body}".encode())
    assert_refused(me(client, api, f"{head}.{body}.{b64(signature)}"), 401, "malformed_token")


def test_signed_payload_that_is_not_json(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    head = b64json({"typ": "JWT", "alg": "RS256", "kid": fake_entra.active_key.kid})
    body = b64(b"\xff\xfe not json")
    signature = fake_entra.active_key.signer.sign(f"{head}.{body}".encode())
    assert_refused(me(client, api, f"{head}.{body}.{b64(signature)}"), 401, "malformed_token")


def test_critical_header_extension(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(header={"crit": ["exp"]})
    assert_refused(me(client, api, token), 401, "malformed_token")


# -- unsupported_algorithm -------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "HS256", "RS512", "ES256", "PS256", None])
def test_unsupported_algorithm(
    api: str, client: httpx.Client, fake_entra: FakeEntraID, alg: str | None
) -> None:
    token = fake_entra.token(header={"alg": alg} if alg else {"alg": None})
    if alg == "none":
        token = token.rsplit(".", 1)[0] + "."
    assert_refused(me(client, api, token), 401, "unsupported_algorithm")


def test_hs256_signed_with_the_public_key_is_refused(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    """The classic algorithm-confusion forgery: HMAC keyed with the published RSA key."""
    import hashlib
    import hmac

    head = b64json({"typ": "JWT", "alg": "HS256", "kid": fake_entra.active_key.kid})
    body = b64json(fake_entra.claims())
    secret = json.dumps(fake_entra.active_key.public_jwk).encode()
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert_refused(me(client, api, f"{head}.{body}.{b64(mac)}"), 401, "unsupported_algorithm")


# -- unknown_key -----------------------------------------------------------------


def test_unknown_kid(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(header={"kid": "not-a-published-kid"})
    assert_refused(me(client, api, token), 401, "unknown_key")


def test_no_kid_at_all(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(header={"kid": None, "x5t": None})
    assert_refused(me(client, api, token), 401, "unknown_key")


# -- invalid_signature -----------------------------------------------------------


def test_signed_by_an_unpublished_key(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    rogue = FakeKey.generate()
    assert_refused(me(client, api, fake_entra.token(key=rogue)), 401, "invalid_signature")


def test_tampered_payload(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    head, _, signature = fake_entra.token(scopes=["Items.Read"]).split(".")
    forged = b64json(fake_entra.claims(scopes=["Items.Read", "Items.Write"], roles=["Admin"]))
    assert_refused(me(client, api, f"{head}.{forged}.{signature}"), 401, "invalid_signature")


def test_empty_signature(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token().rsplit(".", 1)[0] + "."
    assert_refused(me(client, api, token), 401, "invalid_signature")


def test_key_pinned_to_another_alg(
    start_api: ApiFactory, fresh_idp: tuple[FakeEntraID, str], client: httpx.Client
) -> None:
    idp, url = fresh_idp
    idp.active_key.public_jwk["alg"] = "RS384"
    api = start_api(idp.settings(url, accepted_algorithms=["RS256", "RS384"]))
    assert_refused(me(client, api, idp.token()), 401, "invalid_signature")


# -- token_expired / token_not_yet_valid -----------------------------------------


def test_expired(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(expires_in=-301)
    assert_refused(me(client, api, token), 401, "token_expired")


def test_expired_within_clock_skew_is_accepted(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    assert me(client, api, fake_entra.token(expires_in=-120)).status_code == 200


def test_exp_missing(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    assert_refused(me(client, api, fake_entra.token(exp=None)), 401, "token_expired")


def test_exp_not_a_number(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    assert_refused(me(client, api, fake_entra.token(exp="tomorrow")), 401, "malformed_token")


def test_not_yet_valid(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(not_before=time.time() + 3600, expires_in=7200)
    assert_refused(me(client, api, token), 401, "token_not_yet_valid")


def test_custom_clock_skew(
    start_api: ApiFactory, fake_entra: FakeEntraID, fake_entra_url: str, client: httpx.Client
) -> None:
    api = start_api(fake_entra.settings(fake_entra_url, clock_skew=0))
    assert_refused(me(client, api, fake_entra.token(expires_in=-5)), 401, "token_expired")


# -- invalid_audience ------------------------------------------------------------


@pytest.mark.parametrize(
    "audience",
    ["00000003-0000-0000-c000-000000000000", "api://someone-else", "https://graph.microsoft.com"],
)
def test_wrong_audience(
    api: str, client: httpx.Client, fake_entra: FakeEntraID, audience: str
) -> None:
    assert_refused(me(client, api, fake_entra.token(audience=audience)), 401, "invalid_audience")


def test_audience_missing(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    assert_refused(me(client, api, fake_entra.token(aud=None)), 401, "invalid_audience")


def test_custom_audiences_replace_the_default(
    start_api: ApiFactory, fake_entra: FakeEntraID, fake_entra_url: str, client: httpx.Client
) -> None:
    api = start_api(fake_entra.settings(fake_entra_url, audiences=["api://contoso-items"]))
    assert me(client, api, fake_entra.token(audience="api://contoso-items")).status_code == 200
    assert_refused(me(client, api, fake_entra.token()), 401, "invalid_audience")


# -- invalid_issuer --------------------------------------------------------------


def test_token_of_another_tenant_on_single_tenant_api(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    token = fake_entra.token(tenant_id=OTHER_TENANT)
    assert_refused(me(client, api, token), 401, "invalid_issuer")


def test_issuer_of_another_tenant_with_our_tid(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    iss = f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"
    assert_refused(me(client, api, fake_entra.token(iss=iss)), 401, "invalid_issuer")


@pytest.mark.parametrize(
    "iss",
    [
        "https://evil.example/{tid}/v2.0",
        "https://login.microsoftonline.com/{tid}/v2.0/",
        "https://login.microsoftonline.com/{tid}",
        None,
    ],
)
def test_issuer_must_match_exactly(
    api: str, client: httpx.Client, fake_entra: FakeEntraID, iss: str | None
) -> None:
    value = iss.format(tid=fake_entra.tenant_id) if iss else None
    assert_refused(me(client, api, fake_entra.token(iss=value)), 401, "invalid_issuer")


def test_tid_missing_or_not_a_guid(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    assert_refused(me(client, api, fake_entra.token(tid=None)), 401, "invalid_issuer")
    assert_refused(me(client, api, fake_entra.token(tid="contoso.com")), 401, "invalid_issuer")


def test_ver_contradicting_issuer(api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    assert_refused(me(client, api, fake_entra.token(ver="1.0")), 401, "invalid_issuer")


def test_v1_token_when_only_v2_is_accepted(
    start_api: ApiFactory, fake_entra: FakeEntraID, fake_entra_url: str, client: httpx.Client
) -> None:
    api = start_api(fake_entra.settings(fake_entra_url, accepted_token_versions=["2.0"]))
    assert me(client, api, fake_entra.token(version="2.0")).status_code == 200
    assert_refused(me(client, api, fake_entra.token(version="1.0")), 401, "invalid_issuer")


def test_key_scoped_to_another_tenant(
    start_api: ApiFactory, fresh_idp: tuple[FakeEntraID, str], client: httpx.Client
) -> None:
    idp, url = fresh_idp
    idp.active_key.public_jwk["issuer"] = f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"
    api = start_api(idp.settings(url))
    assert_refused(me(client, api, idp.token()), 401, "invalid_issuer")


# -- missing_scope_or_role -------------------------------------------------------


def test_id_token_like_without_scp_or_roles(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    token = fake_entra.token(scp=None, roles=None)
    assert_refused(me(client, api, token), 401, "missing_scope_or_role")
    assert_refused(me(client, api, fake_entra.token(scopes=[])), 401, "missing_scope_or_role")


def test_acl_tokens_when_allowed(
    start_api: ApiFactory, fake_entra: FakeEntraID, fake_entra_url: str, client: httpx.Client
) -> None:
    api = start_api(fake_entra.settings(fake_entra_url, allow_acl_tokens=True))
    response = me(client, api, fake_entra.token(app_only=True, roles=[]))
    assert response.status_code == 200
    assert response.json()["is_app_only"] is True
    assert response.json()["roles"] == []


# -- tenant_not_allowed ----------------------------------------------------------


def test_multi_tenant_allow_list(
    start_api: ApiFactory, fake_entra: FakeEntraID, fake_entra_url: str, client: httpx.Client
) -> None:
    allowed = str(uuid.uuid4())
    settings = fake_entra.settings(
        fake_entra_url, tenant_id="organizations", allowed_tenants=[allowed]
    )
    api = start_api(settings)
    ok = me(client, api, fake_entra.token(tenant_id=allowed))
    assert ok.status_code == 200 and ok.json()["tenant_id"] == allowed
    assert_refused(
        me(client, api, fake_entra.token(tenant_id=OTHER_TENANT)), 403, "tenant_not_allowed"
    )


# -- idp_unavailable -------------------------------------------------------------


def test_cold_and_unreachable_idp(
    start_api: ApiFactory, fresh_idp: tuple[FakeEntraID, str], client: httpx.Client
) -> None:
    idp, url = fresh_idp
    idp.fail(503)
    api = start_api(idp.settings(url))
    assert_refused(me(client, api, idp.token()), 503, "idp_unavailable")


def test_idp_that_is_not_listening(start_api: ApiFactory, client: httpx.Client) -> None:
    idp = FakeEntraID()
    api = start_api(idp.settings("http://127.0.0.1:9", http_timeout=1))
    assert_refused(me(client, api, idp.token()), 503, "idp_unavailable")


def test_error_bodies_never_echo_the_token(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    for token in (
        fake_entra.token(audience="api://other"),
        fake_entra.token(key=FakeKey.generate()),
        fake_entra.token(header={"alg": "HS256"}),
        "x" * 100,
    ):
        response = me(client, api, token)
        assert response.status_code == 401
        for part in token.split("."):
            if len(part) > 8:
                assert part not in response.text
                assert part not in str(response.headers)


def test_forged_header_alg_name_is_not_reflected_raw(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    token = sign_token(
        {"alg": 'RS256"\r\nX-Evil: 1', "kid": fake_entra.active_key.kid},
        fake_entra.claims(),
        fake_entra.active_key,
    )
    response = me(client, api, token)
    assert_refused(response, 401, "unsupported_algorithm")
    assert "x-evil" not in response.headers
