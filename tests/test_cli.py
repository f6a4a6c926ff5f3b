"""``entra-guard inspect`` against the fake Entra ID over real HTTP.

Every verdict the validator can produce, the ``--json`` schema, exit codes,
the hint for the usual mistakes, agreement with what the API really answers,
and that neither the raw token nor its signature ever reaches the output.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from entra_guard.__main__ import main
from entra_guard._inspect import CHECK_NAMES, SCHEMA
from entra_guard.testing import FakeEntraID, FakeKey
from tests.conftest import bearer

OTHER_TENANT = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ENTRA_") or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


@pytest.fixture
def run(
    fake_entra: FakeEntraID, fake_entra_url: str, capsys: pytest.CaptureFixture[str]
) -> Iterator[Run]:
    """``run(token, *flags)`` -> (exit status, stdout, stderr), settings for the fake tenant."""

    def _run(token: str | None, *flags: str, settings: bool = True, stdin: str = "") -> Any:
        argv = ["inspect"]
        if settings:  # first, so that a test's own flags win
            argv += [
                "--tenant-id",
                fake_entra.tenant_id,
                "--client-id",
                fake_entra.client_id,
                "--authority-host",
                fake_entra_url,
            ]
        argv += flags
        if token is not None:
            argv.append(token)
        old_stdin = sys.stdin
        sys.stdin = io.StringIO(stdin)
        try:
            status = main(argv)
        finally:
            sys.stdin = old_stdin
        out, err = capsys.readouterr()
        return status, out, err

    yield _run


def assert_no_secret(token: str, *outputs: str) -> None:
    signature = max(token.split(".")[2:], key=len)  # the JWS signature (also inside a JWE)
    assert len(signature) > 40
    for text in outputs:
        assert token not in text
        assert signature not in text
        # not even a long piece of it
        assert signature[:24] not in text and signature[-24:] not in text


def assert_schema(doc: dict[str, Any]) -> None:
    """The documented ``--json`` shape (entra_guard/inspect.py docstring)."""
    assert doc["schema"] == SCHEMA
    expected_keys = {
        "schema",
        "valid",
        "exit_code",
        "code",
        "status",
        "detail",
        "hint",
        "error",
        "header",
        "claims",
        "claims_trusted",
        "checks",
        "settings",
        "metadata",
    }
    assert set(doc) == expected_keys
    assert isinstance(doc["valid"], bool)
    assert doc["exit_code"] in (0, 1, 2)
    assert doc["valid"] == (doc["exit_code"] == 0)
    if doc["valid"]:
        assert doc["code"] is None and doc["status"] is None and doc["hint"] is None
    elif doc["code"] is not None:
        assert isinstance(doc["status"], int) and isinstance(doc["detail"], str)
        assert isinstance(doc["hint"], str) and doc["hint"]
    assert isinstance(doc["claims_trusted"], bool)
    if not doc["checks"]:
        return
    assert [c["name"] for c in doc["checks"]] == list(CHECK_NAMES)
    reached_failures = []
    for check in doc["checks"]:
        assert set(check) == {"name", "result", "reached", "code", "detail", "expected", "got"}
        assert check["result"] in ("pass", "fail", "skipped")
        assert isinstance(check["reached"], bool)
        assert (check["code"] is not None) == (check["result"] == "fail")
        if check["reached"] and check["result"] == "fail":
            reached_failures.append(check["code"])
    # the step-by-step replay and the validator's own verdict agree
    assert reached_failures == ([] if doc["valid"] else [doc["code"]])
    # "reached" is a prefix: the API stops at the first failure
    reached = [c["reached"] for c in doc["checks"]]
    assert reached == sorted(reached, reverse=True)


def inspect_json(run: Run, token: str, *flags: str) -> tuple[int, dict[str, Any]]:
    status, out, err = run(token, "--json", *flags)
    assert_no_secret(token, out, err)
    doc = json.loads(out)
    assert_schema(doc)
    assert doc["exit_code"] == status
    return status, doc


def check(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in doc["checks"] if c["name"] == name)


# -- verdicts ----------------------------------------------------------------------------


def test_valid_token_exit_0_text_output(run: Run, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(scopes=["Items.Read"])
    status, out, err = run(token)
    assert status == 0, out + err
    assert_no_secret(token, out, err)
    assert "Verdict: VALID" in out
    assert "Claims (signature verified)" in out
    assert '"Items.Read"' in out
    assert "[FAIL]" not in out


def test_valid_token_json(run: Run, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(version="1.0")
    status, doc = inspect_json(run, token)
    assert status == 0
    assert doc["valid"] and doc["claims_trusted"]
    assert all(c["result"] == "pass" and c["reached"] for c in doc["checks"])
    assert doc["claims"]["ver"] == "1.0"
    assert doc["metadata"]["jwks_uri"].endswith("/discovery/v2.0/keys")
    assert check(doc, "issuer")["expected"]["1.0"] == doc["claims"]["iss"]


def _expired(idp: FakeEntraID) -> str:
    return idp.token(expires_in=-3600)


def _not_yet(idp: FakeEntraID) -> str:
    return idp.token(not_before=time.time() + 3600)


def _other_tenant(idp: FakeEntraID) -> str:
    return idp.token(tenant_id=OTHER_TENANT)


def _other_cloud(idp: FakeEntraID) -> str:
    return idp.token(iss=f"https://login.microsoftonline.us/{idp.tenant_id}/v2.0")


def _graph_aud(idp: FakeEntraID) -> str:
    return idp.token(audience=GRAPH_APP_ID)


def _other_aud(idp: FakeEntraID) -> str:
    return idp.token(audience="api://someone-else")


def _id_token(idp: FakeEntraID) -> str:
    return idp.token(scp=None, nonce="n-0S6_WzA2Mj", at_hash="77QmUPtjPfzWtF2AnpK9RQ")


def _app_without_roles(idp: FakeEntraID) -> str:
    return idp.token(app_only=True, roles=[])


def _unknown_kid(idp: FakeEntraID) -> str:
    return idp.token(header={"kid": "not-published"})


def _forged(idp: FakeEntraID) -> str:
    return idp.token(key=FakeKey.generate())


def _hs256(idp: FakeEntraID) -> str:
    return idp.token(alg="HS256")


def _jwe(idp: FakeEntraID) -> str:
    token = idp.token()
    return token + ".QUJD.REVG"


# (token factory, code, failing check, a piece of the hint)
REJECTIONS = [
    (_jwe, "malformed_token", "format", "encrypted"),
    (_hs256, "unsupported_algorithm", "algorithm", "RS256"),
    (_unknown_kid, "unknown_key", "key", "kid"),
    (_forged, "invalid_signature", "signature", "altered"),
    (_expired, "token_expired", "lifetime", "expired at"),
    (_not_yet, "token_not_yet_valid", "lifetime", "clock"),
    (_other_tenant, "invalid_issuer", "issuer", f"issued by tenant {OTHER_TENANT}"),
    (_other_cloud, "invalid_issuer", "issuer", "login.microsoftonline.us"),
    (_graph_aud, "invalid_audience", "audience", "Microsoft Graph"),
    (_other_aud, "invalid_audience", "audience", "ENTRA_AUDIENCES"),
    (_id_token, "missing_scope_or_role", "scopes_or_roles", "ID token"),
    (_app_without_roles, "missing_scope_or_role", "scopes_or_roles", "app role"),
]


@pytest.mark.parametrize(
    ("make", "code", "failing", "hint"), REJECTIONS, ids=[r[0].__name__[1:] for r in REJECTIONS]
)
def test_each_rejection_code_exit_1(
    run: Run,
    fake_entra: FakeEntraID,
    api: str,
    client: httpx.Client,
    make: Callable[[FakeEntraID], str],
    code: str,
    failing: str,
    hint: str,
) -> None:
    token = make(fake_entra)
    status, doc = inspect_json(run, token)
    assert status == 1
    assert doc["code"] == code
    assert hint in doc["hint"]
    failed = check(doc, failing)
    assert failed["result"] == "fail" and failed["reached"] and failed["code"] == code
    # exactly what the API answers for the same token
    answer = client.get(f"{api}/me", headers=bearer(token))
    assert answer.status_code == doc["status"]
    assert answer.json() == {"code": doc["code"], "detail": doc["detail"]}
    # the text output tells the same story
    text_status, out, err = run(token)
    assert text_status == 1
    assert_no_secret(token, out, err)
    assert f"code={code}" in out and "Hint:" in out


def test_v1_token_on_v2_only_api_explains_accepted_version(
    run: Run, fake_entra: FakeEntraID
) -> None:
    token = fake_entra.token(version="1.0")
    status, doc = inspect_json(run, token, "--accepted-token-version", "2.0")
    assert status == 1 and doc["code"] == "invalid_issuer"
    assert "accessTokenAcceptedVersion" in doc["hint"]
    issuer = check(doc, "issuer")
    assert issuer["got"]["ver"] == "1.0"
    assert list(issuer["expected"]) == ["2.0"]


def test_tenant_not_allowed_multi_tenant(run: Run, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token()
    flags = ["--tenant-id", "organizations", "--allowed-tenant", OTHER_TENANT]
    status, doc = inspect_json(run, token, *flags)
    assert status == 1 and doc["code"] == "tenant_not_allowed" and doc["status"] == 403
    assert "ENTRA_ALLOWED_TENANTS" in doc["hint"]
    assert check(doc, "issuer")["result"] == "pass"  # {tenantid} filled with the token's tid
    # and the same token is fine once its tenant is allowed
    status, doc = inspect_json(
        run, token, "--tenant-id", "organizations", "--allowed-tenant", fake_entra.tenant_id
    )
    assert status == 0, doc


def test_later_problems_are_shown_but_not_decisive(run: Run, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(expires_in=-3600, audience=GRAPH_APP_ID)
    _status, doc = inspect_json(run, token)
    assert doc["code"] == "token_expired"
    audience = check(doc, "audience")
    assert audience["result"] == "fail" and not audience["reached"]


def test_untrusted_claims_are_marked(run: Run, fake_entra: FakeEntraID) -> None:
    token = _forged(fake_entra)
    _status, doc = inspect_json(run, token)
    assert doc["code"] == "invalid_signature" and not doc["claims_trusted"]
    assert doc["claims"]["tid"] == fake_entra.tenant_id  # shown, but flagged untrusted
    _, out, _ = run(token)
    assert "UNTRUSTED" in out


def test_garbage_is_malformed_and_never_echoed(run: Run) -> None:
    secret = "s3cr3t-" * 12
    status, out, err = run(secret, "--json")
    assert status == 1
    assert secret not in out + err and "s3cr3t" not in out + err
    doc = json.loads(out)
    assert_schema(doc)
    assert doc["code"] == "malformed_token"
    assert doc["header"] is None and doc["claims"] is None


def test_terminal_escapes_in_a_token_never_reach_the_screen(
    run: Run, fake_entra: FakeEntraID
) -> None:
    token = fake_entra.token(**{"x\x1b[2Jevil": "\x1b]0;pwned\x07"})
    status, out, err = run(token)
    assert status == 0, out + err
    assert "\x1b" not in out and "\x07" not in out
    assert "x?[2Jevil" in out


def test_verbose_shows_library_logs_on_stderr_only_for_that_run(
    run: Run, fake_entra: FakeEntraID
) -> None:
    package_logger = logging.getLogger("entra_guard")
    handlers, level = list(package_logger.handlers), package_logger.level
    token = fake_entra.token(header={"kid": "gone"})
    status, out, err = run(token, "-v")
    assert status == 1
    assert "metadata loaded in" in err and "unknown signing key kid=gone" in err
    assert_no_secret(token, out, err)
    assert package_logger.handlers == handlers and package_logger.level == level
    _, _, quiet = run(token)
    assert quiet == ""


# -- input -------------------------------------------------------------------------------


def test_token_from_stdin_with_bearer_prefix(run: Run, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token()
    status, out, err = run(None, "--json", stdin=f"  Bearer {token}\n")
    assert status == 0, out + err
    assert_no_secret(token, out, err)
    assert json.loads(out)["valid"] is True


def test_dash_reads_stdin(run: Run, fake_entra: FakeEntraID) -> None:
    token = _expired(fake_entra)
    status, out, _ = run("-", "--json", stdin=token)
    assert status == 1 and json.loads(out)["code"] == "token_expired"


# -- exit 2: usage and network ----------------------------------------------------------------


def test_no_token_is_a_usage_error(run: Run) -> None:
    status, _out, err = run(None, stdin="   \n")
    assert status == 2
    assert "no token" in err


def test_missing_settings_is_a_usage_error(run: Run, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token()
    status, out, err = run(token, "--json", settings=False)
    assert status == 2
    assert "ENTRA_TENANT_ID (or --tenant-id) is required" in err
    doc = json.loads(out)
    assert_schema(doc)
    assert doc["exit_code"] == 2 and doc["error"]
    assert_no_secret(token, out, err)


def test_settings_come_from_the_environment(
    run: Run, fake_entra: FakeEntraID, fake_entra_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENTRA_TENANT_ID", fake_entra.tenant_id)
    monkeypatch.setenv("ENTRA_CLIENT_ID", fake_entra.client_id)
    monkeypatch.setenv("ENTRA_AUTHORITY_HOST", fake_entra_url)
    monkeypatch.setenv("ENTRA_AUDIENCES", "api://custom")
    token = fake_entra.token(audience="api://custom")
    status, out, err = run(token, "--json", settings=False)
    assert status == 0, out + err
    # a flag wins over the environment
    status, out, _ = run(token, "--json", "--audience", "api://other", settings=False)
    assert status == 1 and json.loads(out)["code"] == "invalid_audience"


def test_unknown_flag_exits_2(run: Run) -> None:
    with pytest.raises(SystemExit) as info:
        run("x", "--no-such-flag")
    assert info.value.code == 2


def test_idp_down_exits_2_with_idp_unavailable(run: Run, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token()
    fake_entra.fail(503)
    status, doc = inspect_json(run, token)
    assert status == 2
    assert doc["code"] == "idp_unavailable" and doc["status"] == 503
    assert "HTTP 503" in doc["error"]
    assert "ENTRA_AUTHORITY_HOST" in doc["hint"]
    assert check(doc, "key")["code"] == "idp_unavailable"


def test_unreachable_authority_exits_2(run: Run, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token()
    status, out, err = run(
        token,
        "--tenant-id",
        fake_entra.tenant_id,
        "--client-id",
        fake_entra.client_id,
        "--authority-host",
        "http://127.0.0.1:9",  # discard port: nothing listens
        settings=False,
    )
    assert status == 2
    assert "UNDECIDED" in out and "code=idp_unavailable" in out and "ConnectError" in out
    assert_no_secret(token, out, err)


def test_malformed_token_needs_no_network(run: Run, fake_entra: FakeEntraID) -> None:
    """The API answers malformed_token without metadata; so does the inspector (exit 1)."""
    token = _jwe(fake_entra)
    fake_entra.fail(503)
    status, doc = inspect_json(run, token)
    assert status == 1 and doc["code"] == "malformed_token"
    assert check(doc, "issuer")["result"] == "skipped"


# -- the real entry points --------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def _entry_env(idp: FakeEntraID, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTRA_")}
    env.update(
        ENTRA_TENANT_ID=idp.tenant_id, ENTRA_CLIENT_ID=idp.client_id, ENTRA_AUTHORITY_HOST=url
    )
    return env


def test_python_dash_m_reads_stdin(fake_entra: FakeEntraID, fake_entra_url: str) -> None:
    token = _expired(fake_entra)
    result = subprocess.run(
        [sys.executable, "-m", "entra_guard", "inspect", "--json"],
        input=token,
        capture_output=True,
        text=True,
        env=_entry_env(fake_entra, fake_entra_url),
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["code"] == "token_expired"
    assert_no_secret(token, result.stdout, result.stderr)


def test_console_script(fake_entra: FakeEntraID, fake_entra_url: str) -> None:
    script = Path(sys.executable).parent / "entra-guard"
    if not script.exists():
        pytest.skip("console script not installed (pip install -e .)")
    token = fake_entra.token()
    result = subprocess.run(
        [str(script), "inspect", token],
        capture_output=True,
        text=True,
        env=_entry_env(fake_entra, fake_entra_url),
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verdict: VALID" in result.stdout
    assert_no_secret(token, result.stdout, result.stderr)
    no_command = subprocess.run([str(script)], capture_output=True, text=True, timeout=60)
    assert no_command.returncode == 2 and "inspect" in no_command.stderr
