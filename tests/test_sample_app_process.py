"""The sample app exactly as documented: ``uvicorn sample_app.main:app`` in its own process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from entra_guard.testing import FakeEntraID

from .conftest import assert_refused, bearer

ROOT = Path(__file__).resolve().parent.parent
DEV_ENV = {
    "ENTRA_DEV_MODE": "1",
    "ENTRA_TENANT_ID": "11111111-1111-1111-1111-111111111111",
    "ENTRA_CLIENT_ID": "22222222-2222-2222-2222-222222222222",
    "SAMPLE_FINANCE_GROUP_ID": "33333333-3333-3333-3333-333333333333",
}

Launcher = Callable[[dict[str, str]], str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_for(idp: FakeEntraID, url: str) -> dict[str, str]:
    """Point the app at a fake Entra ID (no dev mode)."""
    return {
        "ENTRA_TENANT_ID": idp.tenant_id,
        "ENTRA_CLIENT_ID": idp.client_id,
        "ENTRA_AUTHORITY_HOST": url,
    }


def uvicorn_command(port: int) -> list[str]:
    # The command of docs/getting-started.md "Point the same app at a real tenant": the
    # header limit lets a 16 KiB token reach the middleware.
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "sample_app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--h11-max-incomplete-event-size",
        "65536",
    ]


@pytest.fixture(scope="module")
def launch() -> Iterator[Launcher]:
    """Start the sample app with ``env``; tests asking for the same ``env`` share the
    process (a start costs seconds: interpreter, imports, warm-up)."""
    processes: list[subprocess.Popen[bytes]] = []
    started: dict[tuple[tuple[str, str], ...], tuple[str, subprocess.Popen[bytes]]] = {}

    def start(env: dict[str, str]) -> str:
        key = tuple(sorted(env.items()))
        if key in started and started[key][1].poll() is None:
            return started[key][0]
        port = free_port()
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("ENTRA_", "SAMPLE_"))}
        process = subprocess.Popen(
            uvicorn_command(port),
            cwd=ROOT,
            env={**clean, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(process.stdout.read().decode() if process.stdout else "died")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    started[key] = url, process
                    return url
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("sample app did not start")

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


def test_dev_mode_mints_tokens_that_the_app_accepts(launch: Launcher) -> None:
    url = launch(DEV_ENV)
    minted = httpx.post(f"{url}/_dev/token", json={"scopes": ["Items.Read"]}, timeout=10)
    assert minted.status_code == 200
    token = minted.json()["access_token"]
    me = httpx.get(f"{url}/me", headers=bearer(token), timeout=10)
    assert me.status_code == 200, me.text
    assert me.json()["tenant_id"] == DEV_ENV["ENTRA_TENANT_ID"]
    assert me.json()["scopes"] == ["Items.Read"]
    assert_refused(httpx.get(f"{url}/me", timeout=10), 401, "missing_token")


def test_without_dev_mode_there_is_no_dev_issuer(
    launch: Launcher, fake_entra: FakeEntraID, fake_entra_url: str
) -> None:
    url = launch(env_for(fake_entra, fake_entra_url))
    assert httpx.post(f"{url}/_dev/token", json={}, timeout=10).status_code == 404
    me = httpx.get(f"{url}/me", headers=bearer(fake_entra.token()), timeout=10)
    assert me.status_code == 200, me.text


def test_a_16_kib_token_reaches_the_middleware(
    launch: Launcher, fake_entra: FakeEntraID, fake_entra_url: str
) -> None:
    url = launch(env_for(fake_entra, fake_entra_url))
    short = fake_entra.token(padding="")
    token = fake_entra.token(padding="x" * ((16 * 1024 - len(short) - 16) * 3 // 4))
    assert 15 * 1024 < len(token) <= 16 * 1024
    assert httpx.get(f"{url}/me", headers=bearer(token), timeout=10).status_code == 200
    too_big = fake_entra.token(padding="x" * 13000)
    body = assert_refused(
        httpx.get(f"{url}/me", headers=bearer(too_big), timeout=10), 401, "malformed_token"
    )
    assert "larger" in body["detail"]


def test_bad_configuration_stops_start_up_with_a_clear_message() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTRA_")}
    env["ENTRA_TENANT_ID"] = "not-a-tenant"
    result = subprocess.run(
        uvicorn_command(free_port()),
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    output = result.stderr.decode()
    assert "ENTRA_TENANT_ID" in output
    assert "client_id" in output  # the missing ENTRA_CLIENT_ID is named too
