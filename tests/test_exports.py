"""The public surface, pinned: an export that appears or disappears is a deliberate change."""

from __future__ import annotations

import importlib
import pkgutil

import entra_guard
import entra_guard.contrib
import entra_guard.testing

PUBLIC = {
    "SCHEME_NAME",
    "STATUS_BY_CODE",
    "AuthError",
    "AuthObserver",
    "CompositeObserver",
    "EntraAuth",
    "EntraAuthMiddleware",
    "EntraRoute",
    "EntraSettings",
    "ErrorCode",
    "Guard",
    "Principal",
    "all_of",
    "any_of",
    "downstream_client",
    "downstream_token",
    "refuse_guests",
    "require_app_only",
    "require_auth_context",
    "require_client_apps",
    "require_delegated",
    "require_directory_roles",
    "require_groups",
    "require_principal",
    "require_roles",
    "require_scopes",
    "require_scopes_or_app_roles",
    "require_tenants",
    "serve_swagger_ui",
    "setup_openapi",
}

TESTING = {
    "DEFAULT_CLIENT_APP_ID",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_TENANT_ID",
    "V1_ISSUER",
    "V2_ISSUER",
    "AuthorizationServer",
    "FakeB2C",
    "FakeEntraID",
    "FakeExternalID",
    "FakeGraph",
    "FakeKey",
    "LiveServer",
    "OboGrant",
    "make_client_certificate",
    "SignInUser",
    "sign_token",
}


def test_package_exports_exactly_the_public_names() -> None:
    assert set(entra_guard.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(entra_guard, name) is not None


def test_public_classes_report_the_package_as_their_module() -> None:
    for name in PUBLIC:
        value = getattr(entra_guard, name)
        if isinstance(value, type):
            assert value.__module__ == "entra_guard", name


def test_testing_toolkit_exports() -> None:
    assert set(entra_guard.testing.__all__) == TESTING


def test_implementation_modules_are_private() -> None:
    """Only the package, ``testing``, ``contrib`` and the CLI entry point are public modules."""
    public_modules = {
        info.name
        for info in pkgutil.iter_modules(entra_guard.__path__)
        if not info.name.startswith("_")
    }
    assert public_modules <= {"testing", "contrib"}, public_modules
    for info in pkgutil.iter_modules(entra_guard.testing.__path__):
        assert info.name.startswith("_") or info.name == "pytest_plugin", info.name
    # contrib modules are public by design: each is an optional integration with its own extra
    for info in pkgutil.iter_modules(entra_guard.contrib.__path__):
        assert importlib.import_module(f"entra_guard.contrib.{info.name}") is not None


def test_production_code_never_imports_the_test_toolkit() -> None:
    import ast
    import pathlib

    root = pathlib.Path(entra_guard.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if "testing" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [(node.module or "")]
                relative = node.level > 0
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
                relative = False
            else:
                continue
            for name in names:
                if name.startswith("entra_guard.testing") or (
                    relative and name.split(".")[0] == "testing"
                ):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == [], offenders
