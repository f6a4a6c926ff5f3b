"""The API's client credential (docs/downstream.md): secret, certificate,
federated token file; checked by the fake token endpoint and at start-up."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from pydantic import SecretStr, ValidationError

from entra_guard import EntraAuth, EntraSettings
from entra_guard._credentials import (
    CertificateCredential,
    FederatedTokenCredential,
    SecretCredential,
    load_credential,
)
from entra_guard.testing import FakeEntraID, make_client_certificate

from .conftest import bearer
from .test_obo import GRAPH, make_world, refused

ENDPOINT = "https://login.test/tenant/oauth2/v2.0/token"


def b64url_json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


@pytest.fixture
def pem_file(tmp_path: Path) -> Path:
    path = tmp_path / "api.pem"
    path.write_bytes(make_client_certificate())
    return path


def settings(**values: Any) -> EntraSettings:
    return EntraSettings(tenant_id="organizations", client_id="api-client", **values)


# -- start-up checks -----------------------------------------------------------------------


def test_two_credentials_at_once_fail_naming_both(pem_file: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        settings(client_secret="s", client_certificate_path=str(pem_file))
    assert "ENTRA_CLIENT_SECRET and ENTRA_CLIENT_CERTIFICATE_PATH" in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        settings(client_certificate_path=str(pem_file), federated_token_file=str(pem_file))
    assert "ENTRA_FEDERATED_TOKEN_FILE" in str(caught.value)


@pytest.mark.parametrize("name", ["client_certificate_path", "federated_token_file"])
def test_missing_files_fail_naming_the_setting(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        settings(**{name: str(tmp_path / "nope.pem")})
    assert f"ENTRA_{name.upper()}" in str(caught.value)


def test_key_without_certificate_fails_at_start_up(tmp_path: Path, pem_file: Path) -> None:
    key_only = pem_file.read_bytes().split(b"-----BEGIN CERTIFICATE-----")[0]
    path = tmp_path / "key.pem"
    path.write_bytes(key_only)
    with pytest.raises(ValueError, match=r"ENTRA_CLIENT_CERTIFICATE_PATH.*no PEM certificate"):
        EntraAuth(settings(client_certificate_path=str(path)))


@pytest.mark.parametrize(
    "content",
    [b"not a pem at all", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
)
def test_unreadable_pem_fails_at_start_up(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"ENTRA_CLIENT_CERTIFICATE_PATH.*PEM private key"):
        EntraAuth(settings(client_certificate_path=str(path)))


def test_certificate_of_another_key_fails(tmp_path: Path) -> None:
    one, other = make_client_certificate(), make_client_certificate()
    key = one.split(b"-----BEGIN CERTIFICATE-----")[0]
    cert = b"-----BEGIN CERTIFICATE-----" + other.split(b"-----BEGIN CERTIFICATE-----")[1]
    path = tmp_path / "mixed.pem"
    path.write_bytes(key + cert)
    with pytest.raises(ValueError, match="does not match the private key"):
        load_credential(settings(client_certificate_path=str(path)))


def test_empty_federated_token_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("\n")
    with pytest.raises(ValueError, match="ENTRA_FEDERATED_TOKEN_FILE"):
        EntraAuth(settings(federated_token_file=str(path)))


def test_credential_kinds_and_reprs(pem_file: Path, tmp_path: Path) -> None:
    assert load_credential(settings()) is None
    secret = load_credential(settings(client_secret="hunter2-secret"))
    assert isinstance(secret, SecretCredential) and "hunter2" not in repr(secret)
    cert = load_credential(settings(client_certificate_path=str(pem_file)))
    assert isinstance(cert, CertificateCredential) and "PRIVATE" not in repr(cert)
    token_file = tmp_path / "token"
    token_file.write_text("eyJfederated.token.value\n")
    federated = load_credential(settings(federated_token_file=str(token_file)))
    assert isinstance(federated, FederatedTokenCredential)
    assert "eyJfederated" not in repr(federated)
    assert federated.form_fields(ENDPOINT)["client_assertion"] == "eyJfederated.token.value"


# -- the client assertion --------------------------------------------------------------------


def test_client_assertion_shape_and_signature(pem_file: Path) -> None:
    pem = pem_file.read_bytes()
    credential = CertificateCredential("api-client", pem, clock=lambda: 1_700_000_000)
    fields = credential.form_fields(ENDPOINT)
    assert fields["client_assertion_type"] == (
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    )
    assert "client_secret" not in fields
    head, body, signature = fields["client_assertion"].split(".")
    header, claims = b64url_json(head), b64url_json(body)
    certificate = x509.load_pem_x509_certificate(pem)
    der = certificate.public_bytes(serialization.Encoding.DER)
    sha256 = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    assert header == {
        "alg": "RS256",
        "typ": "JWT",
        "x5t": base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode(),
        "x5t#S256": sha256,
    }
    assert claims["aud"] == ENDPOINT
    assert claims["iss"] == claims["sub"] == "api-client"
    assert claims["exp"] - claims["nbf"] <= 600 and claims["nbf"] == 1_700_000_000
    certificate.public_key().verify(  # type: ignore[call-arg, union-attr]
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
        f"{head}.{body}".encode(),
        padding.PKCS1v15(),  # type: ignore[arg-type]
        hashes.SHA256(),  # type: ignore[arg-type]
    )
    again = b64url_json(credential.form_fields(ENDPOINT)["client_assertion"].split(".")[1])
    assert again["jti"] != claims["jti"]


# -- against the fake token endpoint -----------------------------------------------------


async def test_certificate_credential_obo_and_graph_app_token(pem_file: Path) -> None:
    world, close = make_world(client_secret=None, client_certificate_path=str(pem_file))
    try:
        world.idp.add_client_certificate(world.idp.client_id, pem_file.read_bytes())
        response = await world.client.get("/graph/me", headers=bearer(world.user_token()))
        assert response.status_code == 200, response.text
        assert world.idp.client_refusals == []
        # the groups overage app token (client credentials) uses the same certificate
        oid = "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d"
        world.graph.set_groups(oid, ["g1"])
        principal = await world.auth.authenticate(world.user_token(object_id=oid, overage=True))
        assert await world.auth.group_ids(principal) == frozenset({"g1"})
        assert world.idp.client_refusals == []
    finally:
        await close()


async def test_an_unregistered_certificate_is_refused_by_the_fake(pem_file: Path) -> None:
    world, close = make_world(client_secret=None, client_certificate_path=str(pem_file))
    try:
        world.idp.add_client_certificate(world.idp.client_id, make_client_certificate())
        response = await world.client.get("/graph/me", headers=bearer(world.user_token()))
        refused(response, 503, "downstream_unavailable")
        assert world.idp.client_refusals == ["AADSTS700027"]
        assert world.idp.obo_grants == []
    finally:
        await close()


async def test_the_fake_refuses_a_replayed_or_foreign_assertion(pem_file: Path) -> None:
    import httpx

    idp = FakeEntraID()
    idp.add_client_certificate(idp.client_id, pem_file.read_bytes())
    credential = CertificateCredential(idp.client_id, pem_file.read_bytes())
    endpoint = f"http://login.test/{idp.tenant_id}/oauth2/v2.0/token"

    async def post(fields: dict[str, str]) -> int:
        transport = httpx.ASGITransport(app=idp.app)
        async with httpx.AsyncClient(transport=transport) as client:
            form = {"grant_type": "client_credentials", "scope": f"{GRAPH}/.default", **fields}
            return (await client.post(endpoint, data=form)).status_code

    fields = credential.form_fields(endpoint)
    assert await post(fields) == 200
    assert await post(fields) == 401  # same jti
    assert await post(credential.form_fields("http://elsewhere/token")) == 401
    assert idp.client_refusals == ["AADSTS7000215", "AADSTS700212"]


async def test_federated_token_file_rotated_mid_run_is_picked_up(tmp_path: Path) -> None:
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("federated-one")
    world, close = make_world(client_secret=None, federated_token_file=str(token_file))
    cid = world.idp.client_id
    try:
        world.idp.add_federated_token(cid, "federated-one")
        assert (await world.client.get("/graph/me", headers=bearer(world.user_token()))).is_success
        # the platform rotates the token: the old one stops working
        token_file.write_text("federated-two")
        stat = token_file.stat()
        os.utime(token_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        world.idp.remove_federated_token(cid, "federated-one")
        world.idp.add_federated_token(cid, "federated-two")
        response = await world.client.get("/graph/me", headers=bearer(world.user_token()))
        assert response.status_code == 200, response.text
        assert world.idp.client_refusals == []
        # the file disappears: fail closed, no 500
        token_file.unlink()
        response = await world.client.get("/graph/me", headers=bearer(world.user_token()))
        refused(response, 503, "downstream_unavailable")
    finally:
        await close()


def test_secret_credential_fields() -> None:
    fields = SecretCredential("api-client", SecretStr("s3")).form_fields(ENDPOINT)
    assert fields == {"client_id": "api-client", "client_secret": "s3"}
