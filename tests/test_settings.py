"""Configuration errors are caught at start-up and name the setting."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from entra_guard import EntraSettings

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "6e74172b-be56-4843-9ff4-e66a39bb12e3"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ENTRA_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = EntraSettings(tenant_id=TENANT, client_id=CLIENT)
    assert settings.audiences == [CLIENT, f"api://{CLIENT}"]
    assert settings.accepted_algorithms == ["RS256"]
    assert settings.accepted_token_versions == ["1.0", "2.0"]
    assert settings.clock_skew == 300
    assert settings.http_timeout == 5
    assert settings.metadata_refresh == 86400
    assert settings.min_refresh_interval == 30
    assert settings.authority_host == "https://login.microsoftonline.com"
    assert settings.graph_url == "https://graph.microsoft.com"
    assert not settings.multi_tenant and not settings.allow_acl_tokens


def test_from_environment_lists_comma_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTRA_TENANT_ID", "organizations")
    monkeypatch.setenv("ENTRA_CLIENT_ID", CLIENT)
    monkeypatch.setenv("ENTRA_ALLOWED_TENANTS", f"{TENANT}, 0b1f2a3c-4d5e-4f60-8a7b-9c0d1e2f3a4b")
    monkeypatch.setenv("ENTRA_AUDIENCES", '["api://items", "items"]')
    monkeypatch.setenv("ENTRA_CLOCK_SKEW", "60")
    monkeypatch.setenv("ENTRA_AUTHORITY_HOST", "https://login.microsoftonline.us/")
    settings = EntraSettings()  # type: ignore[call-arg]
    assert settings.multi_tenant
    assert settings.allowed_tenants == [TENANT, "0b1f2a3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"]
    assert settings.audiences == ["api://items", "items"]
    assert settings.clock_skew == 60
    assert settings.authority_host == "https://login.microsoftonline.us"


def test_tenant_guid_is_normalised() -> None:
    assert EntraSettings(tenant_id=TENANT.upper(), client_id=CLIENT).tenant_id == TENANT


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({"tenant_id": TENANT}, "client_id"),
        ({"tenant_id": TENANT, "client_id": "  "}, "ENTRA_CLIENT_ID"),
        ({"tenant_id": "contoso", "client_id": CLIENT}, "ENTRA_TENANT_ID"),
        ({"tenant_id": "contoso..onmicrosoft.com", "client_id": CLIENT}, "ENTRA_TENANT_ID"),
        ({"tenant_id": "https://contoso.com", "client_id": CLIENT}, "ENTRA_TENANT_ID"),
        (
            {"tenant_id": TENANT, "client_id": CLIENT, "b2c_policies": ["B2C_1_x/../y"]},
            "ENTRA_B2C_POLICIES",
        ),
        (
            {"tenant_id": TENANT, "client_id": CLIENT, "b2c_policies": "B2C_1_a,b2c_1_A"},
            "ENTRA_B2C_POLICIES",
        ),
        (
            {"tenant_id": "organizations", "client_id": CLIENT, "b2c_policies": "B2C_1_a"},
            "ENTRA_B2C_POLICIES",
        ),
        ({"tenant_id": "consumers", "client_id": CLIENT}, "ENTRA_TENANT_ID"),
        (
            {"tenant_id": TENANT, "client_id": CLIENT, "authority_host": "http://login.example"},
            "ENTRA_AUTHORITY_HOST",
        ),
        (
            {"tenant_id": TENANT, "client_id": CLIENT, "graph_url": "ftp://graph"},
            "ENTRA_GRAPH_URL",
        ),
        ({"tenant_id": TENANT, "client_id": CLIENT, "audiences": []}, "ENTRA_AUDIENCES"),
        ({"tenant_id": TENANT, "client_id": CLIENT, "audiences": ""}, "ENTRA_AUDIENCES"),
        (
            {"tenant_id": TENANT, "client_id": CLIENT, "accepted_algorithms": ["HS256"]},
            "ENTRA_ACCEPTED_ALGORITHMS",
        ),
        (
            {"tenant_id": TENANT, "client_id": CLIENT, "accepted_algorithms": ["none"]},
            "ENTRA_ACCEPTED_ALGORITHMS",
        ),
        (
            {"tenant_id": TENANT, "client_id": CLIENT, "accepted_token_versions": ["3.0"]},
            "ENTRA_ACCEPTED_TOKEN_VERSIONS",
        ),
        (
            {"tenant_id": TENANT, "client_id": CLIENT, "allowed_tenants": ["contoso"]},
            "ENTRA_ALLOWED_TENANTS",
        ),
        (
            {
                "tenant_id": TENANT,
                "client_id": CLIENT,
                "allowed_tenants": ["0b1f2a3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"],
            },
            "ENTRA_ALLOWED_TENANTS",
        ),
        ({"tenant_id": TENANT, "client_id": CLIENT, "clock_skew": -1}, "clock_skew"),
    ],
)
def test_bad_configuration_names_the_setting(values: dict[str, object], names: str) -> None:
    with pytest.raises(ValidationError) as info:
        EntraSettings(**values)  # type: ignore[arg-type]
    assert names in str(info.value)


@pytest.mark.parametrize(
    "host", ["http://127.0.0.1:8080", "http://localhost:1234", "http://[::1]:5000"]
)
def test_http_is_only_for_loopback(host: str) -> None:
    assert (
        EntraSettings(tenant_id=TENANT, client_id=CLIENT, authority_host=host).authority_host
        == host
    )
