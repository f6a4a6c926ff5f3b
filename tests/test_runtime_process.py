"""The demo as ``make run`` starts it, in its own process: what only a real server shows.

- a WebSocket handshake carrying a 15 KiB token is answered (issue 9 #9: the
  websockets parser behind uvicorn drops header lines over 8 KiB unless
  ``WEBSOCKETS_MAX_LINE_LENGTH`` is raised, which ``make run`` does);
- dev mode refuses to start on a non-loopback bind (issue 9 #4).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from .test_sample_app_process import DEV_ENV, ROOT, free_port

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make_run_command(host: str, port: int) -> str:
    """The shell line ``make run`` would execute (``make -n``: printed, not run)."""
    venv = Path(sys.executable).parent.parent
    printed = subprocess.run(
        ["make", "-n", "-s", "run", f"VENV={venv}", f"HOST={host}", f"PORT={port}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.replace("\\\n", " ")  # one shell line, as make hands it to the shell
    lines = [line for line in printed.splitlines() if "uvicorn sample_app.main:app" in line]
    assert len(lines) == 1, printed
    return lines[0]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ENTRA_", "SAMPLE_"))}


@pytest.fixture
def make_run() -> Iterator[Callable[[], str]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> str:
        port = free_port()
        process = subprocess.Popen(  # the Makefile's own recipe line
            make_run_command("127.0.0.1", port),
            shell=True,
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(process.stdout.read().decode() if process.stdout else "died")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    return url
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("make run did not start")

    yield start
    for process in processes:
        with contextlib.suppress(ProcessLookupError):  # the shell and uvicorn: our session
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stdout:
            process.stdout.close()


def mint_large_token(url: str, size: int) -> str:
    """A dev token of about ``size`` bytes (groups make it grow), with Items.Read."""
    groups = 100
    while True:
        body = {
            "scopes": ["Items.Read"],
            "groups": [f"00000000-0000-4000-8000-{i:012d}" for i in range(groups)],
        }
        token = httpx.post(f"{url}/_dev/token", json=body, timeout=10).json()["access_token"]
        if len(token) >= size:
            return str(token)
        groups += max(1, (size - len(token)) // 52)


def test_make_run_answers_a_websocket_handshake_with_a_15_kib_token(
    make_run: Callable[[], str],
) -> None:
    url = make_run()
    token = mint_large_token(url, 15 * 1024)
    assert 15 * 1024 <= len(token) < 16 * 1024
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{url}/items", headers=headers, timeout=10).status_code == 200
    with connect(
        url.replace("http://", "ws://") + "/ws/items",
        additional_headers=headers,
        open_timeout=10,
        max_size=2**20,
    ) as ws:
        assert json.loads(ws.recv(timeout=10))["items"]


def test_dev_mode_refuses_to_start_on_0_0_0_0() -> None:
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "sample_app.main:app",
        "--host",
        "0.0.0.0",  # the point of the test; it never binds
        "--port",
        str(free_port()),
    ]
    done = subprocess.run(
        command, cwd=ROOT, env={**_env(), **DEV_ENV}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "refuses to start on a non-loopback address" in done.stdout + done.stderr
