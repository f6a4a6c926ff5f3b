"""Configuration, read from ``ENTRA_*`` environment variables or passed in code.

Bad configuration fails at start-up with a message naming the setting, so a
typo never turns into a confusing 401 at request time.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from ._compat import NoDecode, SettingsBase

#: Anchored with ``\A``/``\Z`` (``$`` would match before a final newline); use ``fullmatch``.
GUID_RE = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
MULTI_TENANT_IDS = frozenset({"organizations", "common"})
SUPPORTED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512"})
TOKEN_VERSIONS = frozenset({"1.0", "2.0"})
#: A tenant's domain name (``contoso.onmicrosoft.com``, ``login.contoso.com``): lower-case
#: DNS labels, at least two of them (docs/customer-identities.md).
DOMAIN_RE = re.compile(
    r"\A(?=.{4,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?\Z"
)
#: A B2C user flow or custom policy id (it becomes a URL path segment).
B2C_POLICY_RE = re.compile(r"\A[A-Za-z0-9_.-]{1,100}\Z")

StrList = Annotated[list[str], NoDecode]


def _split_list(value: Any) -> Any:
    """Accept ``a,b`` and ``["a", "b"]`` alike (env vars are written both ways)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


def is_loopback_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_base_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"ENTRA_{name.upper()} must be an absolute https:// URL, got {value!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(
            f"ENTRA_{name.upper()} must use https:// (http:// is only allowed for "
            f"loopback hosts in tests and dev), got {value!r}"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"ENTRA_{name.upper()} must not carry a query or fragment")
    return value.rstrip("/")


#: A Conditional Access authentication context id, as in the token's ``acrs`` claim.
AUTH_CONTEXT_ID_RE = re.compile(r"^c[1-9][0-9]?$")
#: Characters that could break out of a header value or a quoted-string (and ``"``, ``\\``).
_UNSAFE_RE = re.compile(r'[\x00-\x1f\x7f"\\]')


def encryption_keys(value: str) -> list[bytes]:
    """``ENTRA_CACHE_ENCRYPTION_KEY``: base64 of 32 random bytes, comma-separated, newest
    first (docs/operations.md "Running several workers and replicas")."""
    keys = []
    for item in value.split(","):
        try:
            key = base64.b64decode(item.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                "ENTRA_CACHE_ENCRYPTION_KEY must be base64 of 32 random bytes "
                "(comma-separated, newest first)"
            ) from None
        if len(key) != 32:
            raise ValueError("ENTRA_CACHE_ENCRYPTION_KEY: each key must be 32 bytes, base64")
        keys.append(key)
    return keys


def check_label(what: str, value: str, *, max_length: int = 100) -> str:
    """A configured name that may reach a log line, a JSON body or an OpenAPI document:
    printable, no quotes or backslashes, bounded (no header injection through config)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be non-empty strings, got {value!r}")
    if _UNSAFE_RE.search(value) or not value.isprintable() or len(value) > max_length:
        raise ValueError(
            f"{what} must be printable, at most {max_length} characters, without quotes, "
            f"backslashes or control characters, got {value!r}"
        )
    return value.strip()


def check_auth_contexts(value: dict[str, str]) -> dict[str, str]:
    """``{"approve-payment": "c1"}``: names are labels, values authentication context ids."""
    out: dict[str, str] = {}
    for name, context in value.items():
        label = check_label("ENTRA_AUTH_CONTEXTS names", name)
        if AUTH_CONTEXT_ID_RE.match(label.lower()):
            raise ValueError(f"ENTRA_AUTH_CONTEXTS: the name {label!r} looks like an id")
        if (
            not isinstance(context, str)
            or _UNSAFE_RE.search(context)
            or not AUTH_CONTEXT_ID_RE.match(context.strip().lower())
        ):
            raise ValueError(
                f"ENTRA_AUTH_CONTEXTS[{label!r}] must be an authentication context id "
                f"c1...c99, got {context!r}"
            )
        out[label] = context.strip().lower()
    return out


def check_resource_uri(value: str) -> str:
    """An absolute URI without whitespace, quotes or control characters, nor a fragment."""
    text = value.strip(" ")
    parts = urlsplit(text)
    if (
        not parts.scheme
        or parts.fragment
        or "#" in text
        or len(text) > 2048
        or any(c.isspace() or c in '"\\<>' or not c.isprintable() for c in text)
        or (parts.scheme in ("http", "https") and not parts.hostname)
    ):
        raise ValueError(
            "ENTRA_RESOURCE_URI must be an absolute URI (api://... or https://...) without "
            f"spaces, quotes, control characters or a fragment, got {value!r}"
        )
    return text


class EntraSettings(SettingsBase):
    """Everything entra-guard needs to know about your app registration."""

    model_config = SettingsConfigDict(env_prefix="ENTRA_", extra="ignore", frozen=True)

    tenant_id: str = Field(
        description="Tenant GUID or domain name, or `organizations`/`common` (multi-tenant)."
    )
    client_id: str = Field(description="Application (client) ID of the API's app registration.")
    audiences: Annotated[list[str] | None, NoDecode] = Field(
        default=None,
        description="Accepted `aud` values; default `client_id` and `api://{client_id}`.",
    )
    allowed_tenants: StrList = Field(
        default_factory=list,
        description="Tenant GUIDs allowed to call (multi-tenant); empty allows every tenant.",
    )
    allowed_client_apps: StrList = Field(
        default_factory=list,
        description="Client app ids (`azp`/`appid`) allowed to call; empty allows every app.",
    )
    authority_host: str = Field(
        default="https://login.microsoftonline.com",
        description="Entra ID authority; national clouds: `https://login.microsoftonline.us`.",
    )
    graph_url: str = Field(
        default="https://graph.microsoft.com",
        description="Microsoft Graph endpoint used to resolve groups overage.",
    )
    client_secret: SecretStr | None = Field(
        default=None,
        description="Client secret: for groups overage (Graph) and on-behalf-of calls.",
    )
    clock_skew: int = Field(default=300, ge=0, le=3600, description="Leeway for `exp`/`nbf`, s.")
    allow_acl_tokens: bool = Field(
        default=False,
        description="Accept tokens without `scp`/`roles`; the app must then check callers.",
    )
    accepted_algorithms: StrList = Field(
        default_factory=lambda: ["RS256"], description="JWS `alg` allow-list (RSA only)."
    )
    accepted_token_versions: StrList = Field(
        default_factory=lambda: ["1.0", "2.0"], description="Accepted access token versions."
    )
    http_timeout: float = Field(default=5.0, gt=0, le=120, description="Outbound HTTP timeout, s.")
    metadata_refresh: float = Field(
        default=86400.0, ge=60, description="Background refresh of discovery and keys, s."
    )
    min_refresh_interval: float = Field(
        default=30.0,
        ge=0,
        le=60,
        description="Least time between unknown-`kid` JWKS refreshes, s (at most 60).",
    )
    token_cache_size: int = Field(
        default=4096, ge=0, description="Verified-token cache entries (0 disables it)."
    )
    groups_cache_ttl: float = Field(
        default=600.0, ge=0, description="How long resolved group memberships are reused, s."
    )
    groups_cache_size: int = Field(default=10000, ge=1, description="Group cache entries.")
    public_client_id: str | None = Field(
        default=None, description="Public (SPA) client id for the Swagger UI sign-in."
    )
    # Step-up and resource metadata (docs/step-up.md).
    auth_contexts: dict[str, str] = Field(
        default_factory=dict,
        description="Names for Conditional Access authentication contexts: `{name: c1..c99}`.",
    )
    resource_metadata: bool = Field(
        default=False, description="Serve RFC 9728 protected-resource metadata."
    )
    resource_uri: str | None = Field(
        default=None, description="RFC 9728 `resource`; default `api://{client_id}`."
    )
    b2c_policies: StrList = Field(
        default_factory=list,
        description="Azure AD B2C user flows / custom policies (case-insensitive); "
        "set for a B2C API.",
    )
    log_pii: bool = Field(default=False, description="Allow names/UPNs in log lines.")
    http_proxy: str | None = Field(default=None, description="Proxy URL for outbound calls.")
    ca_bundle: str | None = Field(default=None, description="CA bundle file for outbound TLS.")
    tls_verify: bool = Field(default=True, description="Verify TLS certificates (keep it on).")
    # Calling downstream APIs on behalf of the caller (docs/downstream.md).
    client_certificate_path: str | None = Field(
        default=None,
        description="PEM file with the API's private key and certificate (client assertion).",
    )
    federated_token_file: str | None = Field(
        default=None,
        description="Workload identity: file whose content is the client assertion.",
    )
    client_capabilities: StrList = Field(
        default_factory=list,
        description="Client capabilities declared in on-behalf-of grants (`cp1`: CAE).",
    )
    obo_cache_size: int = Field(
        default=10000, ge=0, description="Cached on-behalf-of tokens (0 disables the cache)."
    )
    groups_via_obo: bool = Field(
        default=False,
        description="Resolve groups overage with the caller's OBO token (delegated User.Read).",
    )
    cache_url: SecretStr | None = Field(
        default=None,
        description="Shared cache for every worker and replica: `redis://` or `rediss://` URL.",
    )
    cache_encryption_key: SecretStr | None = Field(
        default=None,
        description="Base64 32-byte AES-GCM keys, comma-separated, newest first (OBO in Redis).",
    )
    cache_timeout: float = Field(
        default=0.05, gt=0, le=5, description="Longest wait for the shared cache per call, s."
    )
    cache_l1_ttl: float = Field(
        default=5.0, ge=0, description="In-process copy of shared entries, s (0 turns L1 off)."
    )

    @field_validator(
        "audiences",
        "allowed_tenants",
        "allowed_client_apps",
        "accepted_algorithms",
        "b2c_policies",
        mode="before",
    )
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("client_capabilities", mode="before")
    @classmethod
    def _capabilities(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("client_certificate_path", "federated_token_file")
    @classmethod
    def _credential_file(cls, value: str | None, info: Any) -> str | None:
        if value is not None and not os.path.isfile(value):
            raise ValueError(f"ENTRA_{info.field_name.upper()}: no such file {value!r}")
        return value

    @field_validator("accepted_token_versions", mode="before")
    @classmethod
    def _versions(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, value: str) -> str:
        tenant = value.strip().lower()
        if tenant in MULTI_TENANT_IDS or GUID_RE.fullmatch(tenant) or DOMAIN_RE.fullmatch(tenant):
            return tenant
        raise ValueError(
            "ENTRA_TENANT_ID must be the tenant GUID or its domain name "
            "(contoso.onmicrosoft.com), or 'organizations'/'common' for a "
            f"multi-tenant API, got {value!r}"
        )

    @field_validator("b2c_policies")
    @classmethod
    def _b2c_policies(cls, value: list[str]) -> list[str]:
        policies = [p.strip() for p in value]
        bad = [p for p in policies if not B2C_POLICY_RE.fullmatch(p)]
        if bad:
            raise ValueError(
                "ENTRA_B2C_POLICIES must be user flow or custom policy ids (letters, digits, "
                f"'_', '-', '.'), got {bad!r}"
            )
        lowered = [p.lower() for p in policies]
        if len(set(lowered)) != len(lowered):
            raise ValueError(
                f"ENTRA_B2C_POLICIES lists a policy twice (names are case-insensitive): {value!r}"
            )
        return policies

    @field_validator("client_id")
    @classmethod
    def _client(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("ENTRA_CLIENT_ID must not be empty")
        return value.strip()

    @field_validator("allowed_tenants")
    @classmethod
    def _allowed(cls, value: list[str]) -> list[str]:
        tenants = [t.lower() for t in value]
        bad = [t for t in tenants if not GUID_RE.fullmatch(t)]
        if bad:
            raise ValueError(f"ENTRA_ALLOWED_TENANTS must be tenant GUIDs, got {bad!r}")
        return tenants

    @field_validator("accepted_algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if a not in SUPPORTED_ALGORITHMS]
        if bad or not value:
            raise ValueError(
                f"ENTRA_ACCEPTED_ALGORITHMS must be a non-empty subset of "
                f"{sorted(SUPPORTED_ALGORITHMS)}, got {value!r}"
            )
        return value

    @field_validator("accepted_token_versions")
    @classmethod
    def _token_versions(cls, value: list[str]) -> list[str]:
        if not value or any(v not in TOKEN_VERSIONS for v in value):
            raise ValueError(f"ENTRA_ACCEPTED_TOKEN_VERSIONS must be '1.0' and/or '2.0': {value!r}")
        return value

    @field_validator("authority_host", "graph_url")
    @classmethod
    def _urls(cls, value: str, info: Any) -> str:
        return _check_base_url(info.field_name, value)

    @field_validator("cache_url")
    @classmethod
    def _cache_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = urlsplit(value.get_secret_value()).scheme
            if scheme not in ("redis", "rediss", "unix"):
                raise ValueError("ENTRA_CACHE_URL must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("cache_encryption_key")
    @classmethod
    def _cache_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            encryption_keys(value.get_secret_value())  # fails at start-up, naming it
        return value

    @field_validator("http_proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https", "socks5"):
            raise ValueError(f"ENTRA_HTTP_PROXY must be a proxy URL, got {value!r}")
        return value

    @field_validator("auth_contexts")
    @classmethod
    def _auth_contexts(cls, value: dict[str, str]) -> dict[str, str]:
        return check_auth_contexts(value)

    @field_validator("resource_uri")
    @classmethod
    def _resource_uri(cls, value: str | None) -> str | None:
        return None if value is None else check_resource_uri(value)

    @model_validator(mode="after")
    def _defaults(self) -> EntraSettings:
        if self.cache_url is not None and self.cache_encryption_key is None:
            raise ValueError(
                "ENTRA_CACHE_ENCRYPTION_KEY is required with ENTRA_CACHE_URL: Graph app tokens "
                "and on-behalf-of tokens are sealed before they reach the shared cache "
                '(python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())")'
            )
        if self.audiences is None:
            object.__setattr__(self, "audiences", [self.client_id, f"api://{self.client_id}"])
        elif not self.audiences or any(not a.strip() for a in self.audiences):
            raise ValueError(
                "ENTRA_AUDIENCES must list at least one non-empty audience "
                "(leave it unset for the default: client id and api://{client id})"
            )
        credentials = [
            f"ENTRA_{name.upper()}"
            for name in ("client_secret", "client_certificate_path", "federated_token_file")
            if getattr(self, name) is not None
        ]
        if len(credentials) > 1:
            raise ValueError(f"Set only one client credential, got {' and '.join(credentials)}")
        if (
            self.allowed_tenants
            and not self.multi_tenant
            and self.allowed_tenants != [self.tenant_id]
        ):
            raise ValueError(
                "ENTRA_ALLOWED_TENANTS only applies to a multi-tenant ENTRA_TENANT_ID "
                "('organizations' or 'common')"
            )
        if self.b2c_policies and self.multi_tenant:
            raise ValueError(
                "ENTRA_B2C_POLICIES needs the B2C tenant in ENTRA_TENANT_ID (its GUID or "
                f"<name>.onmicrosoft.com), not {self.tenant_id!r}"
            )
        return self

    @property
    def multi_tenant(self) -> bool:
        return self.tenant_id in MULTI_TENANT_IDS

    @property
    def tenant_is_domain(self) -> bool:
        """``ENTRA_TENANT_ID`` is a domain name: the tenant GUID then comes from the
        issuer in the metadata (docs/customer-identities.md)."""
        return DOMAIN_RE.fullmatch(self.tenant_id) is not None

    @property
    def authority(self) -> str:
        """``{host}/{tenant}``, and ``/{first policy}`` for B2C (sign-in URLs' base)."""
        base = f"{self.authority_host}/{self.tenant_id}"
        return f"{base}/{self.b2c_policies[0]}" if self.b2c_policies else base

    @property
    def is_b2c(self) -> bool:
        """``ENTRA_B2C_POLICIES`` is set: metadata and keys per policy."""
        return bool(self.b2c_policies)
