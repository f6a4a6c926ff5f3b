"""Key handling: the cryptography backend, weak or private keys in a JWKS, key reuse."""

from __future__ import annotations

import httpx
import pytest

from entra_guard.testing import FakeEntraID, FakeKey, LiveServer

from .conftest import ApiFactory, assert_refused, bearer

pytestmark = pytest.mark.in_process


def test_python_jose_uses_the_cryptography_backend() -> None:
    import jose.backends
    from jose.backends.cryptography_backend import CryptographyRSAKey

    assert jose.backends.RSAKey is CryptographyRSAKey


def test_weak_rsa_key_verifies_nothing(start_api: ApiFactory, client: httpx.Client) -> None:
    idp = FakeEntraID(key=FakeKey.generate(bits=1024))
    with LiveServer(idp.app) as server:
        api = start_api(idp.settings(server.url))
        assert_refused(
            client.get(f"{api}/me", headers=bearer(idp.token())), 401, "invalid_signature"
        )


@pytest.mark.parametrize(
    "change",
    [{"d": "AQAB"}, {"use": "enc"}, {"kty": "oct", "k": "c2VjcmV0"}],
    ids=["private-key-material", "encryption-key", "symmetric-key"],
)
def test_jwk_that_is_no_public_rsa_signing_key_verifies_nothing(
    start_api: ApiFactory,
    fresh_idp: tuple[FakeEntraID, str],
    client: httpx.Client,
    change: dict[str, str],
) -> None:
    idp, url = fresh_idp
    idp.active_key.public_jwk.update(change)
    api = start_api(idp.settings(url))
    assert_refused(client.get(f"{api}/me", headers=bearer(idp.token())), 401, "invalid_signature")


def test_two_published_keys_both_verify(
    start_api: ApiFactory, fresh_idp: tuple[FakeEntraID, str], client: httpx.Client
) -> None:
    idp, url = fresh_idp
    old = idp.active_key
    idp.rotate_keys(keep_old=True)
    api = start_api(idp.settings(url))
    assert client.get(f"{api}/me", headers=bearer(idp.token())).status_code == 200
    assert client.get(f"{api}/me", headers=bearer(idp.token(key=old))).status_code == 200
