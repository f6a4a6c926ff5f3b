"""Fakes of the customer-identity authorities: Entra External ID and Azure AD B2C.

They serve the documents and mint the token shapes of the real services
(docs/customer-identities.md), so an API under test runs
its real validation path:

- External ID (``https://<subdomain>.ciamlogin.com``): v2 discovery only (the
  v1 document is a 404, as there), and an issuer whose *host is the tenant
  GUID* (``https://<tid>.ciamlogin.com/<tid>/v2.0``) whatever name the
  authority was configured with.
- B2C (``https://<name>.b2clogin.com``): metadata and keys per user flow
  (``/<tenant>/<policy>/v2.0/.well-known/openid-configuration``, policy names
  case-insensitive), issuer ``https://<name>.b2clogin.com/<tid>/v2.0/``,
  tokens with ``tfp`` and ``"ver": "1.0"``, and no ``tid``/``oid`` by default.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._crypto import b64url_encode
from .._settings import EntraSettings
from ._idp import (
    DEFAULT_CLIENT_APP_ID,
    DEFAULT_CLIENT_ID,
    FakeEntraID,
    FakeKey,
    overridden,
    sign_token,
)

DEFAULT_CIAM_TENANT_ID = "3f0b4c2e-8a51-4d6b-9e7f-1a2b3c4d5e6f"
DEFAULT_B2C_TENANT_ID = "8c5d1e2f-3a4b-4c6d-8e9f-0a1b2c3d4e5f"
DEFAULT_B2C_POLICY = "B2C_1_signupsignin"


class FakeExternalID(FakeEntraID):
    """A fake Entra External ID (CIAM) tenant. Serve ``.app``; ``settings(url)`` trusts it."""

    __test__ = False

    def __init__(
        self,
        tenant_id: str = DEFAULT_CIAM_TENANT_ID,
        client_id: str = DEFAULT_CLIENT_ID,
        *,
        subdomain: str = "contoso",
        key: FakeKey | None = None,
    ) -> None:
        super().__init__(tenant_id, client_id, key=key)
        self.subdomain = subdomain
        self.app = Starlette(
            routes=[
                Route("/{tenant}/v2.0/.well-known/openid-configuration", self._ciam_discovery),
                Route("/{tenant}/discovery/v2.0/keys", self._jwks),
                Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
            ]
        )

    @property
    def issuer(self) -> str:
        return f"https://{self.tenant_id}.ciamlogin.com/{self.tenant_id}/v2.0"

    def _known_tenant(self, tenant: str) -> bool:
        return tenant.lower() in (self.tenant_id, f"{self.subdomain}.onmicrosoft.com")

    async def _ciam_discovery(self, request: Request) -> Response:
        injected = await self._injected(request)
        if injected is not None:
            return injected
        tenant = request.path_params["tenant"]
        if not self._known_tenant(tenant):
            return JSONResponse({"error": "invalid_tenant"}, status_code=400)
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
                "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token"],
                "subject_types_supported": ["pairwise"],
            }
        )

    def claims(self, **options: Any) -> dict[str, Any]:
        """Workforce-shaped v2 claims with the External ID issuer (GUID host)."""
        options.setdefault("version", "2.0")
        claims = super().claims(**options)
        if "iss" not in options:
            claims["iss"] = self.issuer
        return claims

    def settings(self, url: str, **overrides: Any) -> EntraSettings:
        """Trust this fake served at ``url``, by tenant GUID (``tenant_id=`` overrides)."""
        return super().settings(url, **overrides)


class FakeB2C(FakeEntraID):
    """A fake Azure AD B2C tenant with one or more user flows, each with its own key."""

    __test__ = False

    def __init__(
        self,
        tenant_id: str = DEFAULT_B2C_TENANT_ID,
        client_id: str = DEFAULT_CLIENT_ID,
        *,
        name: str = "contoso",
        policies: Iterable[str] = (DEFAULT_B2C_POLICY,),
    ) -> None:
        self.policies = list(policies)
        if not self.policies:
            raise ValueError("FakeB2C needs at least one policy")
        #: policy (lower-case) -> its signing key; tokens name their policy in ``tfp``.
        self.policy_keys: dict[str, FakeKey] = {
            p.lower(): FakeKey.generate() for p in self.policies
        }
        super().__init__(tenant_id, client_id, key=next(iter(self.policy_keys.values())))
        self.name = name
        self.app = Starlette(
            routes=[
                Route(
                    "/{tenant}/{policy}/v2.0/.well-known/openid-configuration",
                    self._b2c_discovery,
                ),
                Route("/{tenant}/{policy}/discovery/v2.0/keys", self._b2c_jwks),
            ]
        )

    @property
    def issuer(self) -> str:
        return f"https://{self.name}.b2clogin.com/{self.tenant_id}/v2.0/"

    @property
    def domain(self) -> str:
        return f"{self.name}.onmicrosoft.com"

    def _policy_key(self, request: Request) -> tuple[str, FakeKey] | None:
        tenant = request.path_params["tenant"].lower()
        if tenant not in (self.domain, self.tenant_id):
            return None
        policy = request.path_params["policy"].lower()
        key = self.policy_keys.get(policy)
        return (policy, key) if key is not None else None

    async def _b2c_discovery(self, request: Request) -> Response:
        injected = await self._injected(request)
        if injected is not None:
            return injected
        found = self._policy_key(request)
        if found is None:
            return JSONResponse({"error": "invalid_policy"}, status_code=404)
        tenant, policy = request.path_params["tenant"], request.path_params["policy"]
        base = f"{str(request.base_url).rstrip('/')}/{tenant}/{policy}"
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "response_types_supported": ["code", "code id_token", "code token", "id_token"],
                "scopes_supported": ["openid"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "claims_supported": ["oid", "sub", "tfp", "iss", "iat", "exp", "aud", "nbf"],
            }
        )

    async def _b2c_jwks(self, request: Request) -> Response:
        injected = await self._injected(request)
        if injected is not None:
            return injected
        found = self._policy_key(request)
        if found is None:
            return JSONResponse({"error": "invalid_policy"}, status_code=404)
        return JSONResponse({"keys": [found[1].public_jwk]})

    def claims(
        self,
        *,
        policy: str | None = None,
        scopes: Iterable[str] | None = None,
        object_id: str | None = None,
        audience: str | None = None,
        expires_in: float = 3600,
        legacy_acr: bool = False,
        with_tenant_claims: bool = False,
        **extra: Any,
    ) -> dict[str, Any]:
        """Claims of a B2C access token; ``extra`` adds or (with ``None``) removes claims."""
        now = int(time.time())
        oid = object_id or str(uuid.uuid4())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "exp": int(now + expires_in),
            "nbf": now - 5,
            "aud": audience or self.client_id,
            "sub": oid,
            "name": "Grace Hopper",
            "emails": ["grace@example.com"],
            "nonce": b64url_encode(secrets.token_bytes(12)),
            "scp": " ".join(scopes) if scopes is not None else "Items.Read",
            "azp": DEFAULT_CLIENT_APP_ID,
            "ver": "1.0",
            "iat": now - 5,
            "auth_time": now - 5,
        }
        claims["acr" if legacy_acr else "tfp"] = policy or self.policies[0]
        if with_tenant_claims:
            claims |= {"tid": self.tenant_id, "oid": oid}
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
        """Signed with the key of the token's policy (or ``key``)."""
        body = dict(claims) if claims is not None else self.claims(**claim_options)
        policy = str(body.get("tfp") or body.get("acr") or self.policies[0]).lower()
        signing_key = key or self.policy_keys.get(policy) or next(iter(self.policy_keys.values()))
        kid = signing_key.kid if key is None or key in self.policy_keys.values() else None
        head: dict[str, Any] = {"typ": "JWT", "alg": alg, "kid": kid or self._kid_of(policy)}
        return sign_token(overridden(head, header or {}), body, signing_key)

    def _kid_of(self, policy: str) -> str:
        key = self.policy_keys.get(policy) or next(iter(self.policy_keys.values()))
        return key.kid

    def settings(self, url: str, **overrides: Any) -> EntraSettings:
        """Trust this fake at ``url``: tenant by domain name, every policy configured."""
        values: dict[str, Any] = {
            "tenant_id": self.domain,
            "client_id": self.client_id,
            "authority_host": url,
            "b2c_policies": list(self.policies),
        }
        values.update(overrides)
        return EntraSettings(**values)
