"""The per-token fast paths give the same answers as the plain ones (README "Benchmarks")."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import FrozenInstanceError, dataclass, fields, replace
from typing import Any

import pytest

from entra_guard import AuthError, AuthObserver, EntraAuth, EntraSettings, Principal
from entra_guard._crypto import NonCanonicalBase64, b64url_decode, build_signing_key
from entra_guard._principal import INIT_FIELDS, principal_from_verified
from entra_guard._token_cache import (
    VerifiedTokenCache,
    digest_bytes,
    entry_cost,
    token_digest,
)
from entra_guard.testing import FakeEntraID


def test_guid_and_name_sets_lower_case_and_skip_what_is_not_a_string(
    fake_entra: FakeEntraID,
) -> None:
    claims = fake_entra.claims() | {
        "groups": ["AbC-1", "def-2", 3, None, {"x": 1}, "ΑΣ"],
        "wids": ["62E90394-69F5-4237-9190-012177145E10", ["nested"]],
        "roles": ["Admin", 1, "Reader"],
    }
    principal = Principal.from_claims(claims, "2.0")
    assert principal.groups == {"abc-1", "def-2", "ας"}
    assert principal.wids == {"62e90394-69f5-4237-9190-012177145e10"}
    assert principal.roles == {"Admin", "Reader"}
    assert principal.auth_scopes == tuple(
        sorted([*(f"scp:{s}" for s in principal.scopes), "role:Admin", "role:Reader"])
    )


def test_lower_case_guids_are_kept_as_sent_and_empty_lists_are_empty(
    fake_entra: FakeEntraID,
) -> None:
    groups = ["eeeeeeee-1111-2222-3333-ffffffffffff", "aaaaaaaa-1111-2222-3333-bbbbbbbbbbbb"]
    claims = fake_entra.claims(groups=groups) | {"wids": [], "roles": []}
    principal = Principal.from_claims(claims, "2.0")
    assert principal.groups == set(groups)
    # One string per GUID in a cached principal, not the claim's and a lower-cased copy.
    assert {id(g) for g in principal.groups} == {id(g) for g in claims["groups"]}
    assert principal.wids == principal.roles == frozenset()


def test_from_claims_copies_and_the_verified_path_wraps_its_own_dict(
    fake_entra: FakeEntraID,
) -> None:
    claims: dict[str, Any] = fake_entra.claims(groups=["EEEEEEEE-1111-2222-3333-FFFFFFFFFFFF"])
    copied = Principal.from_claims(claims, "2.0")
    claims["injected"] = "later"
    assert "injected" not in copied.claims

    owned = dict(claims)
    verified = principal_from_verified(owned, "2.0", tenant_id=None, issuer=None, policy=None)
    assert verified == Principal.from_claims(owned, "2.0")
    assert verified.auth_scopes == Principal.from_claims(owned, "2.0").auth_scopes
    assert dict(verified.claims) == owned
    with pytest.raises(TypeError):
        verified.claims["oid"] = "someone else"  # type: ignore[index]


class Recorder(AuthObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def token_cache(self, *, hit: bool) -> None:
        self.events.append(("token_cache", hit))

    def authentication(self, *, cached: bool, seconds: float, **kwargs: Any) -> None:
        self.events.append(("authentication", cached))
        assert seconds >= 0


@pytest.mark.over_sockets  # the engine alone, with its own HTTP client
async def test_without_a_result_cache_every_token_is_verified(
    fake_entra: FakeEntraID, fake_entra_url: str
) -> None:
    recorder = Recorder()
    settings = fake_entra.settings(fake_entra_url, token_cache_size=0)
    async with EntraAuth(settings, observer=recorder) as auth:
        token = fake_entra.token()
        first, second = await auth.authenticate(token), await auth.authenticate(token)
        assert first == second and first is not second
        with pytest.raises(AuthError) as refused:
            await auth.authenticate(token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB"))
        assert refused.value.code == "invalid_signature"
        assert len(auth._verified) == 0
    assert recorder.events == [("token_cache", False), ("authentication", False)] * 3


@pytest.mark.over_sockets
async def test_the_default_observer_path_caches_and_still_refuses(
    entra_settings: EntraSettings, fake_entra: FakeEntraID
) -> None:
    async with EntraAuth(entra_settings) as auth:
        assert type(auth.observer) is AuthObserver
        token = fake_entra.token()
        first = await auth.authenticate(token)
        assert await auth.authenticate(token) is first
        with pytest.raises(AuthError):
            await auth.authenticate(fake_entra.token(expires_in=-3600))
        # The RS256 check of the digest taken in the same pass as the cache key: another
        # payload under the same signature, or another signature, never verifies.
        head, _, signature = token.split(".")
        other_payload = fake_entra.token().split(".")[1]
        for forged in (f"{head}.{other_payload}.{signature}", fake_entra.token()[:-8] + "AAAAAAAA"):
            with pytest.raises(AuthError) as refused:
                await auth.authenticate(forged)
            assert refused.value.code == "invalid_signature"


@pytest.mark.over_sockets
async def test_the_header_bytes_and_the_text_are_one_token(
    fake_entra: FakeEntraID, fake_entra_url: str
) -> None:
    """The middleware passes the header's bytes (Latin-1, as HTTP sends them)."""
    for cache_size in (4096, 0):
        settings = fake_entra.settings(fake_entra_url, token_cache_size=cache_size)
        async with EntraAuth(settings) as auth:
            token = fake_entra.token()
            from_bytes = await auth.authenticate(token.encode())
            from_text = await auth.authenticate(token)
            assert from_text == from_bytes
            assert (from_text is from_bytes) == (cache_size > 0)  # one cache entry for both
            # Non-ASCII bytes are digested unscanned: they miss, and the rules refuse them.
            for hostile in (token.encode()[:-1] + b"\xe9", b"\xff" + token.encode()):
                with pytest.raises(AuthError) as refused:
                    await auth.authenticate(hostile)
                assert refused.value.code == "malformed_token"
            assert len(auth._verified) == (1 if cache_size else 0)


def test_the_fast_construction_sets_every_field_as_the_constructor_does(
    fake_entra: FakeEntraID,
) -> None:
    group, wid = "eeeeeeee-1111-2222-3333-ffffffffffff", "62e90394-69f5-4237-9190-012177145e10"
    claims = fake_entra.claims(scopes=["B", "A"], roles=["R"], groups=[group], wids=[wid])
    claims |= {"idp": "https://sts.windows.net/other/", "acct": 1}  # a guest, not overage
    built = principal_from_verified(dict(claims), "2.0", tenant_id=None, issuer=None, policy=None)
    expected = Principal(
        tenant_id=claims["tid"],
        object_id=claims["oid"],
        subject=claims["sub"],
        app_id=claims["azp"],
        is_app_only=False,
        scopes=frozenset({"A", "B"}),
        roles=frozenset({"R"}),
        groups=frozenset({group}),
        groups_overage=False,
        wids=frozenset({wid}),
        token_version="2.0",
        name="Ada Lovelace",
        preferred_username="ada@contoso.example",
        is_guest=True,
        claims=claims,
        issuer=claims["iss"],
        policy=None,
    )
    assert type(built) is Principal
    assert [f.name for f in fields(Principal) if f.init] == list(INIT_FIELDS)
    for f in fields(Principal):
        assert getattr(built, f.name) == getattr(expected, f.name), f.name
    assert built == expected
    with pytest.raises(FrozenInstanceError):
        built.scopes = frozenset({"Admin"})  # type: ignore[misc]


def test_subclasses_are_built_by_their_own_constructor(fake_entra: FakeEntraID) -> None:
    @dataclass(frozen=True, slots=True)
    class Tagged(Principal):
        tag: str = "mine"

    claims = fake_entra.claims(app_only=True)
    tagged = Tagged.from_claims(claims, "2.0")
    assert type(tagged) is Tagged and tagged.tag == "mine"
    assert tagged.is_app_only and tagged.auth_scopes == ("role:Items.Read.All",)
    assert tagged == Tagged(**{name: getattr(tagged, name) for name in INIT_FIELDS})


@pytest.mark.parametrize(
    "length", [0, 1, 1999, 2000, 2001, 2575, 3999, 4000, 4001, 6000, 16 * 1024]
)
def test_the_sliced_digest_is_the_sha256_of_the_whole_token(length: int) -> None:
    token = "".join(chr(ord("a") + i % 26) for i in range(length))
    expected = hashlib.sha256(token.encode()).digest()
    assert token_digest(token) == digest_bytes(token.encode()) == expected


def test_the_result_cache_keeps_its_byte_count_exact_through_replacement_and_eviction() -> None:
    cache: VerifiedTokenCache[str] = VerifiedTokenCache(3, max_bytes=3 * entry_cost(1000))
    lengths: dict[bytes, int] = {}

    def put(key: bytes, length: int) -> None:
        cache.set(key, key.hex(), expires_at=100.0, token_length=length)
        lengths[key] = length
        present = [k for k in lengths if k in cache._data]
        assert cache.total_bytes == sum(entry_cost(lengths[k]) for k in present)
        assert cache.total_bytes <= cache.max_bytes and len(cache) <= cache.max_entries

    put(b"a", 1000)
    put(b"b", 10)
    put(b"c", 10)
    put(b"b", 500)  # replaced, not added
    assert len(cache) == 3 and cache.get(b"b", 0.0) == b"b".hex()
    put(b"d", 10)  # over the count: the least recently used ("a") goes
    assert cache.get(b"a", 0.0) is None
    put(b"e", 2900)  # over the bytes: as many as needed go
    assert cache.get(b"e", 0.0) == b"e".hex() and len(cache) < 3
    cache.set(b"f", "too large", expires_at=100.0, token_length=10**6)  # never stored
    assert cache.get(b"f", 0.0) is None


@pytest.mark.parametrize(
    "data", [b"", b"\x00", b"ab", b"abc", b"\xfb\xff\xfe" * 50, bytes(range(256))]
)
def test_base64url_round_trips(data: bytes) -> None:
    segment = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    assert b64url_decode(segment) == data


@pytest.mark.parametrize(
    "segment",
    ["ab+c", "ab/c", "+abc", "abc/", "ab==", "abc=", "a=bc", "abcd====", "abc+", "ab c", "abé"],
)
def test_base64url_refuses_the_standard_alphabet_padding_and_strangers(segment: str) -> None:
    with pytest.raises(ValueError) as refused:
        b64url_decode(segment)
    assert not isinstance(refused.value, NonCanonicalBase64)


class _AcceptsAnything:
    def verify(self, msg: bytes, sig: bytes) -> bool:
        return True


def test_rs256_without_python_jose_checks_the_signing_input_and_nothing_else(
    fake_entra: FakeEntraID,
) -> None:
    jwk = {k: v for k, v in fake_entra.active_key.public_jwk.items() if k != "alg"}
    key = build_signing_key(jwk, ("RS256", "RS384"))
    assert key.rs256 is not None
    token = fake_entra.token()
    head, payload, signature_segment = token.split(".")
    signing_input, signature = f"{head}.{payload}".encode(), b64url_decode(signature_segment)
    assert key.verify("RS256", signing_input, signature)
    # RS256 never reaches python-jose (its verifier here accepts everything), yet only
    # the signed input and its own signature pass.
    direct = replace(key, verifiers={**key.verifiers, "RS256": _AcceptsAnything()})
    assert direct.verify("RS256", signing_input, signature)
    other_payload = fake_entra.token().split(".")[1]
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    for checked in (key, direct):
        assert not checked.verify("RS256", f"{head}.{other_payload}".encode(), signature)
        assert not checked.verify("RS256", signing_input, tampered)
        assert not checked.verify("RS256", signing_input, b"")
        assert not checked.verify("RS256", signing_input, signature + b"\x00")
    # The direct path is RS256 only: this RS256 signature does not verify under RS384, and
    # a key pinned to (or only allowed) RS384 has no direct path and refuses RS256.
    assert not key.verify("RS384", signing_input, signature)
    pinned = build_signing_key({**jwk, "alg": "RS384"}, ("RS256", "RS384"))
    assert pinned.rs256 is None
    assert not pinned.verify("RS256", signing_input, signature)
    only_rs384 = build_signing_key(jwk, ("RS384",))
    assert only_rs384.rs256 is None
    assert not only_rs384.verify("RS256", signing_input, signature)
