"""A fake Microsoft Entra ID: discovery (v1 + v2), JWKS, client credentials, token factory,
and a browser sign-in (authorization code + PKCE, in ``_authorize``).

It serves the same documents and mints the same token shapes as Entra ID, so
an API under test runs its real validation path over real HTTP. Counters and
failure injection let tests prove caching, single-flight and outage handling.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk as jose_jwk
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._crypto import b64url_encode
from .._settings import EntraSettings
from ._authorize import AuthorizationServer
from ._obo import OBO_GRANT_TYPE, OboTokenEndpoint

DEFAULT_TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
DEFAULT_CLIENT_ID = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
DEFAULT_CLIENT_APP_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
V2_ISSUER = "https://login.microsoftonline.com/{tenantid}/v2.0"
V1_ISSUER = "https://sts.windows.net/{tenantid}/"


class RsaSigner:
    """Signs JWS input with an RSA private key (only the fakes sign anything)."""

    def __init__(self, private_key_pem: bytes, alg: str = "RS256") -> None:
        self.alg = alg
        self._key = jose_jwk.construct(private_key_pem, algorithm=alg)

    def sign(self, signing_input: bytes) -> bytes:
        return bytes(self._key.sign(signing_input))


@dataclass
class FakeKey:
    """An RSA key pair the fake publishes (or keeps private, for forgeries)."""

    kid: str
    private_pem: bytes
    public_jwk: dict[str, Any]
    signer: RsaSigner

    @classmethod
    def generate(cls, kid: str | None = None, bits: int = 2048) -> FakeKey:
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cls.from_pem(pem, kid)

    @classmethod
    def from_pem(cls, pem: bytes, kid: str | None = None) -> FakeKey:
        """The key pair of an unencrypted PEM private key (e.g. shared by several workers);
        ``kid`` defaults to a digest of the public key, so every process agrees on it."""
        private = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private, rsa.RSAPrivateKey):
            raise ValueError("FakeKey needs an RSA private key")
        numbers = private.public_key().public_numbers()
        if kid is None:
            kid = b64url_encode(hashlib.sha256(str(numbers.n).encode()).digest()[:15])
        jwk = {
            "kty": "RSA",
            "use": "sig",
            "kid": kid,
            "x5t": kid,
            "n": b64url_encode(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": b64url_encode(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
            "issuer": V2_ISSUER,
        }
        return cls(kid=kid, private_pem=pem, public_jwk=jwk, signer=RsaSigner(pem))


@dataclass
class Failure:
    """An injected fault: ``status`` (e.g. 503) or ``hang`` on matching paths."""

    status: int | None = None
    hang: bool = False
    path_contains: str = ""
    remaining: int | None = None  # None: until ``recover()``


class FakeEntraID(OboTokenEndpoint):
    """Fake tenant(s) of Entra ID. Serve ``.app`` (e.g. with ``LiveServer``).

    ``token(...)`` mints access tokens exactly shaped like Entra's (v1 or v2,
    delegated or app-only, any claim overridden); ``hits`` counts requests by
    path; ``fail()``/``hang()``/``recover()`` inject outages; ``rotate_keys()``
    rolls the signing key as Entra does without notice.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        tenant_id: str = DEFAULT_TENANT_ID,
        client_id: str = DEFAULT_CLIENT_ID,
        *,
        key: FakeKey | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.keys: list[FakeKey] = [key or FakeKey.generate()]
        self.hits: Counter[str] = Counter()
        self.failure: Failure | None = None
        self.response_delay = 0.0
        #: client_id -> secret accepted by the token endpoint (client credentials).
        self.confidential_clients: dict[str, str] = {}
        #: app tokens issued by the token endpoint: token -> (tenant, scope, expires_at)
        self.issued_app_tokens: dict[str, tuple[str, str, float]] = {}
        self.app_token_lifetime = 3600
        self._lock = threading.Lock()
        #: Sign-in for browsers (docs/testing.md "Browser tests of your own API").
        self.authorization = AuthorizationServer(self)
        self._init_obo()
        self.app = Starlette(
            routes=[
                Route(
                    "/{tenant}/oauth2/v2.0/authorize",
                    self.authorization.authorize,
                    methods=["GET", "POST"],
                ),
                Route("/{tenant}/v2.0/.well-known/openid-configuration", self._discovery_v2),
                Route("/{tenant}/.well-known/openid-configuration", self._discovery_v1),
                Route("/{tenant}/discovery/v2.0/keys", self._jwks),
                Route("/{tenant}/discovery/keys", self._jwks),
                Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST", "OPTIONS"]),
            ]
        )

    # -- keys ---------------------------------------------------------------------

    @property
    def active_key(self) -> FakeKey:
        return self.keys[0]

    def rotate_keys(self, *, keep_old: bool = False) -> FakeKey:
        """Publish a new signing key (first in the JWKS); drop the old one unless kept."""
        new = FakeKey.generate()
        with self._lock:
            self.keys = [new, *self.keys] if keep_old else [new]
        return new

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk for k in self.keys]}

    # -- tokens -------------------------------------------------------------------

    def claims(
        self,
        *,
        version: str = "2.0",
        app_only: bool = False,
        scopes: Iterable[str] | None = None,
        roles: Iterable[str] | None = None,
        groups: Iterable[str] | None = None,
        overage: bool = False,
        claim_source: str | None = None,
        tenant_id: str | None = None,
        audience: str | None = None,
        object_id: str | None = None,
        expires_in: float = 3600,
        not_before: float | None = None,
        guest: bool = False,
        wids: Iterable[str] | None = None,
        acrs: Iterable[str] | None = None,
        client_capabilities: Iterable[str] | None = None,
        app_id: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Claims of an Entra access token; ``extra`` adds or (with ``None``) removes claims.

        ``acrs``: authentication contexts the sign-in satisfied; ``client_capabilities``:
        what the client declared (``["cp1"]``), emitted as ``xms_cc``; ``app_id``: the
        calling application (``azp`` in v2, ``appid`` in v1).
        """
        now = int(time.time())
        tid = tenant_id or (self.tenant_id if _is_guid(self.tenant_id) else DEFAULT_TENANT_ID)
        oid = object_id or str(uuid.uuid4())
        claims: dict[str, Any] = {
            "aud": audience or (self.client_id if version == "2.0" else f"api://{self.client_id}"),
            "iss": (V2_ISSUER if version == "2.0" else V1_ISSUER).replace("{tenantid}", tid),
            "iat": now - 5,
            "nbf": int(not_before) if not_before is not None else now - 5,
            "exp": int(now + expires_in),
            "aio": b64url_encode(secrets.token_bytes(24)),
            "oid": oid,
            "rh": "0.AAAA" + b64url_encode(secrets.token_bytes(12)),
            "sub": oid if app_only else b64url_encode(secrets.token_bytes(24)),
            "tid": tid,
            "uti": b64url_encode(secrets.token_bytes(12)),
            "ver": version,
        }
        client = app_id or DEFAULT_CLIENT_APP_ID
        if version == "2.0":
            claims |= {"azp": client, "azpacr": "1" if app_only else "0"}
        else:
            claims |= {"appid": client, "appidacr": "1" if app_only else "0"}
        if acrs is not None:
            claims["acrs"] = list(acrs)
        if client_capabilities is not None:
            claims["xms_cc"] = list(client_capabilities)
        if app_only:
            claims["idtyp"] = "app"
            app_roles = list(roles) if roles is not None else ["Items.Read.All"]
            if app_roles:
                claims["roles"] = app_roles
        else:
            claims["scp"] = " ".join(scopes) if scopes is not None else "Items.Read"
            if roles:
                claims["roles"] = list(roles)
            claims["name"] = "Ada Lovelace"
            if version == "2.0":
                claims["preferred_username"] = "ada@contoso.example"
            else:
                claims |= {"upn": "ada@contoso.example", "unique_name": "ada@contoso.example"}
                claims["amr"] = ["pwd", "mfa"]
            if guest:
                claims["idp"] = "https://sts.windows.net/9188040d-6c67-4c5b-b112-36a304b66dad/"
                claims["acct"] = 1
        if wids is not None:
            claims["wids"] = list(wids)
        if overage:
            claims["_claim_names"] = {"groups": "src1"}
            claims["_claim_sources"] = {
                "src1": {
                    "endpoint": claim_source
                    or f"https://graph.windows.net/{tid}/users/{oid}/getMemberObjects"
                }
            }
        elif groups is not None:
            claims["groups"] = list(groups)
        return overridden(claims, extra)

    def token(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        key: FakeKey | None = None,
        header: Mapping[str, Any] | None = None,
        alg: str = "RS256",
        **claim_options: Any,
    ) -> str:
        """Mint a signed token. ``claims`` replaces the default set; ``key`` signs
        with another (e.g. unpublished) key while naming the active ``kid``."""
        body = dict(claims) if claims is not None else self.claims(**claim_options)
        signing_key = key or self.active_key
        head: dict[str, Any] = {"typ": "JWT", "alg": alg, "kid": self.active_key.kid}
        if key is not None and key in self.keys:
            head["kid"] = key.kid
        if body.get("ver") == "1.0":
            head["x5t"] = head["kid"]
        return sign_token(overridden(head, header or {}), body, signing_key)

    def settings(self, url: str, **overrides: Any) -> EntraSettings:
        """``EntraSettings`` for an API that trusts this fake served at ``url``."""
        values: dict[str, Any] = {
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
            "authority_host": url,
        }
        values.update(overrides)
        return EntraSettings(**values)

    # -- faults -------------------------------------------------------------------

    def fail(self, status: int = 503, *, path_contains: str = "", times: int | None = None) -> None:
        """Answer ``status`` on matching paths (all by default), ``times`` times or until
        ``recover()``."""
        self.failure = Failure(status=status, path_contains=path_contains, remaining=times)

    def hang(self, *, path_contains: str = "") -> None:
        """Accept matching requests and never answer (until ``recover()``)."""
        self.failure = Failure(hang=True, path_contains=path_contains)

    def recover(self) -> None:
        self.failure = None

    def reset_hits(self) -> None:
        self.hits.clear()

    def hits_matching(self, fragment: str) -> int:
        return sum(n for path, n in self.hits.items() if fragment in path)

    # -- HTTP ---------------------------------------------------------------------

    async def _injected(self, request: Request) -> Response | None:
        with self._lock:
            self.hits[request.url.path] += 1
            failure = self.failure
            if failure is None or failure.path_contains not in request.url.path:
                failure = None
            elif failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self.failure = None
        if self.response_delay:
            await asyncio.sleep(self.response_delay)
        if failure is None:
            return None
        if failure.hang:
            for _ in range(600):  # bounded: at most 60 s, ends early on recover()
                if self.failure is None:
                    break
                await asyncio.sleep(0.1)
            return Response(status_code=504)
        return JSONResponse({"error": "injected"}, status_code=failure.status or 503)

    def _issuer_template(self, tenant: str, version: str) -> str:
        template = V2_ISSUER if version == "2.0" else V1_ISSUER
        if tenant in ("organizations", "common"):
            return template
        return template.replace("{tenantid}", tenant)

    def _discovery(self, request: Request, version: str) -> dict[str, Any]:
        tenant = request.path_params["tenant"]
        base = str(request.base_url).rstrip("/")
        keys = "discovery/v2.0/keys" if version == "2.0" else "discovery/keys"
        oauth = "oauth2/v2.0" if version == "2.0" else "oauth2"
        return {
            "issuer": self._issuer_template(tenant, version),
            "authorization_endpoint": f"{base}/{tenant}/{oauth}/authorize",
            "token_endpoint": f"{base}/{tenant}/{oauth}/token",
            "jwks_uri": f"{base}/{tenant}/{keys}",
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token"],
            "subject_types_supported": ["pairwise"],
            "tenant_region_scope": "EU",
        }

    async def _discovery_v2(self, request: Request) -> Response:
        return await self._injected(request) or JSONResponse(self._discovery(request, "2.0"))

    async def _discovery_v1(self, request: Request) -> Response:
        return await self._injected(request) or JSONResponse(self._discovery(request, "1.0"))

    async def _jwks(self, request: Request) -> Response:
        return await self._injected(request) or JSONResponse(self.jwks())

    async def _token(self, request: Request) -> Response:
        """The token endpoint: one function per ``grant_type``."""
        if request.method == "OPTIONS":  # a browser's CORS preflight (sign-in)
            return await self.authorization.token(request)
        injected = await self._injected(request)
        if injected is not None:
            return injected
        # Parsed by hand: Starlette's request.form() needs python-multipart, not a dependency.
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode("latin-1")).items()}
        grant_type = form.get("grant_type")
        if grant_type == "client_credentials":
            return self._client_credentials_grant(request, form)
        if grant_type == OBO_GRANT_TYPE:
            return await self._obo_grant(request, form)
        if grant_type == "authorization_code":
            return await self.authorization.authorization_code_grant(request, form)
        if grant_type == "refresh_token":
            return await self.authorization.refresh_token_grant(request, form)
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)

    def _client_credentials_grant(self, request: Request, form: dict[str, str]) -> Response:
        # A secret, a certificate assertion or a federated token (testing/_obo.py).
        refused = self._authenticate_client(request, form)
        if refused is not None:
            return refused
        scope = str(form.get("scope", ""))
        if not scope.endswith("/.default"):
            return JSONResponse({"error": "invalid_scope"}, status_code=400)
        token = "fake-app-token-" + secrets.token_urlsafe(24)
        tenant = request.path_params["tenant"]
        self.issued_app_tokens[token] = (tenant, scope, time.time() + self.app_token_lifetime)
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": self.app_token_lifetime,
                "ext_expires_in": self.app_token_lifetime,
                "access_token": token,
            }
        )


def overridden(values: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with ``overrides`` applied in place; an override of ``None`` removes the
    name (how tests write a token without ``kid``, ``tid``, ...)."""
    for name, value in overrides.items():
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value
    return values


def sign_token(header: Mapping[str, Any], claims: Mapping[str, Any], key: FakeKey) -> str:
    """Compact JWS of ``claims`` signed by ``key`` (header written as given)."""
    head = b64url_encode(json.dumps(header, separators=(",", ":")).encode())
    body = b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{head}.{body}".encode()
    return f"{head}.{body}.{b64url_encode(key.signer.sign(signing_input))}"


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
