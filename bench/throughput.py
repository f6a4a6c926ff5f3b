"""Benchmark 2: HTTP throughput under uvicorn (one worker) on 127.0.0.1.

Three servers run side by side, each in its own process (pinned to the last
CPU when there are two or more), and a load generator in another process
(wrk, pinned to CPU 0; the Python ``bench.loadgen`` when wrk is missing) hits
them in interleaved rounds, rotating the order each round; ratios are taken
within each round (adjacent runs see the same machine load) and the median
over rounds is reported, which a noisy 2-core machine needs. Every request
carries the same realistic bearer token (a verified-token cache hit after the
first request, which is the steady state of a real API: clients reuse a token
for its hour of life). Figures: median requests/s and median p99 over rounds.
One more target hits the guarded server with a tampered signature (every
request parsed, RSA-verified and refused with 401): the refusal path under a
bad-token load.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from entra_guard.testing import FakeEntraID, LiveServer

from .apps import guard_name
from .common import (
    CLIENT_ID,
    PEER_PYTHON,
    ROOT,
    SCOPE,
    SERVER_PYTHON,
    TENANT_ID,
    median,
    peak_rss_kib,
)
from .common import realistic_token as make_token

CONNECTIONS = 16
#: uvicorn's two HTTP stacks: pure Python (its default without extras) and
#: ``uvicorn[standard]`` (httptools + uvloop, what production runs).
STACKS = {
    "h11": ["--http", "h11", "--loop", "asyncio"],
    "httptools": ["--http", "httptools", "--loop", "uvloop"],
}


@dataclass
class Server:
    name: str
    label: str
    process: subprocess.Popen[bytes]
    url: str
    rps: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    errors: int = 0
    peak_rss_kib: int = 0
    token: str = ""
    #: False for the refusal target: its 401s are the point, not errors.
    expect_ok: bool = True


@dataclass(frozen=True)
class ThroughputResult:
    servers: list[Server]
    loadgen: str
    rounds: int
    duration: float
    guard: str
    notes: list[str]
    stack: str

    def get(self, name: str) -> Server | None:
        return next((s for s in self.servers if s.name == name), None)

    def ratio(self, name: str, baseline: str) -> float | None:
        """Median over rounds of ``name``'s req/s divided by ``baseline``'s, same round."""
        a, b = self.get(name), self.get(baseline)
        if a is None or b is None or not a.rps or not b.rps:
            return None
        return median([x / y for x, y in zip(a.rps, b.rps, strict=True)])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pin(pid: int, cpu: int) -> None:
    cpus = os.cpu_count() or 1
    if cpus >= 2 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, {cpu % cpus})


def _start(
    name: str, label: str, python: Path, target: str, env: dict[str, str], stack: str
) -> Server:
    port = _free_port()
    command = [
        str(python), "-m", "uvicorn", "--factory", target,
        "--host", "127.0.0.1", "--port", str(port), *STACKS[stack],
        "--workers", "1", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env})
    _pin(process.pid, (os.cpu_count() or 1) - 1)
    return Server(name=name, label=label, process=process, url=f"http://127.0.0.1:{port}/hello")


def _wait_ready(server: Server, token: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.label} exited with {server.process.returncode}")
        try:
            response = httpx.get(server.url, headers={"Authorization": f"Bearer {token}"})
            if response.status_code == 200 and response.json() == {"message": "hello"}:
                # A wrong token must be refused, or the comparison means nothing.
                refused = httpx.get(server.url, headers={"Authorization": "Bearer x.y.z"})
                if server.name != "bare" and refused.status_code != 401:
                    raise RuntimeError(f"{server.label} accepted a bogus token")
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise RuntimeError(f"{server.label} did not become ready: {last}")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _wrk(url: str, token: str, duration: float) -> tuple[float, float, int]:
    command = [
        "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(duration))}s", "--latency",
        "-H", f"Authorization: Bearer {token}", url,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    _pin(process.pid, 0)
    out, _ = process.communicate(timeout=duration + 30)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s|m)\b", out)
    if rps is None or p99 is None:
        raise RuntimeError(f"could not parse wrk output:\n{out}")
    errors = 0
    for pattern in (r"Non-2xx or 3xx responses:\s+(\d+)", r"Socket errors:.*?(\d+)"):
        found = re.search(pattern, out)
        if found:
            errors += sum(int(n) for n in re.findall(r"\d+", found.group(0).split(":", 1)[1]))
    return float(rps.group(1)), float(p99.group(1)) * _UNITS[p99.group(2)], errors


def _python_loadgen(url: str, token: str, duration: float) -> tuple[float, float, int]:
    command = [
        sys.executable, "-m", "bench.loadgen", url,
        "--header", f"Authorization: Bearer {token}",
        "--connections", str(CONNECTIONS), "--duration", str(duration),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    _pin(process.pid, 0)
    out, _ = process.communicate(timeout=duration + 30)
    result = json.loads(out.strip().splitlines()[-1])
    return float(result["rps"]), float(result["p99_ms"]), int(result["errors"])


def run(rounds: int = 7, duration: float = 2.0, stack: str = "h11") -> ThroughputResult:
    """One interleaved comparison of the three servers on one uvicorn ``stack``."""
    notes: list[str] = []
    own_python = SERVER_PYTHON
    if not own_python.exists():
        if stack != "h11":
            raise RuntimeError(f"{SERVER_PYTHON} missing: run `python -m bench.peer_setup`")
        own_python = Path(sys.executable)
        notes.append(f"{SERVER_PYTHON} missing: ran the entra-guard apps from the project venv")
    loadgen = "wrk" if shutil.which("wrk") else "python (bench.loadgen)"
    if loadgen != "wrk":
        notes.append("wrk not found: used the Python load generator (lower ceiling)")
    measure = _wrk if loadgen == "wrk" else _python_loadgen
    idp = FakeEntraID(tenant_id=TENANT_ID, client_id=CLIENT_ID)
    servers: list[Server] = []
    targets: list[Server] = []
    with LiveServer(idp.app) as fake:
        token = make_token(idp)
        env = {
            "BENCH_IDP_URL": fake.url,
            "BENCH_TENANT_ID": TENANT_ID,
            "BENCH_CLIENT_ID": CLIENT_ID,
            "BENCH_SCOPE": SCOPE,
            "PYTHONPATH": str(ROOT),
        }
        try:
            servers.append(
                _start("bare", "bare FastAPI", own_python, "bench.apps:bare", env, stack)
            )
            servers.append(
                _start(
                    "guarded",
                    f"entra-guard ({guard_name()})",
                    own_python,
                    "bench.apps:guarded",
                    env,
                    stack,
                )
            )
            if PEER_PYTHON.exists():
                servers.append(
                    _start(
                        "peer",
                        "fastapi-azure-auth 5.3.0",
                        PEER_PYTHON,
                        "bench.peer_app:create",
                        env,
                        stack,
                    )
                )
            else:
                notes.append(f"{PEER_PYTHON} missing (run `make bench`): peer skipped")
            for server in servers:
                server.token = token
                _wait_ready(server, token)
                measure(server.url, token, 1.0)  # warm-up, discarded
            guarded = servers[1]
            refused = Server(
                name="refused",
                label="entra-guard, tampered signature (401)",
                process=guarded.process,
                url=guarded.url,
                token=token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB"),
                expect_ok=False,
            )
            targets = [*servers, refused]
            for index in range(rounds):
                order = targets[index % len(targets) :] + targets[: index % len(targets)]
                for target in order:
                    rps, p99, errors = measure(target.url, target.token, duration)
                    target.rps.append(rps)
                    target.p99_ms.append(p99)
                    target.errors += errors if target.expect_ok else 0
            for target in targets:
                target.peak_rss_kib = peak_rss_kib(target.process.pid)
                if target.errors:
                    notes.append(f"{target.label}: {target.errors} failed requests under load")
        finally:
            for server in servers:
                if server.process.poll() is None:
                    server.process.send_signal(signal.SIGINT)
            for server in servers:
                try:
                    server.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.process.kill()
                    server.process.wait()
    return ThroughputResult(
        servers=targets,
        loadgen=loadgen,
        rounds=rounds,
        duration=duration,
        guard=guard_name(),
        notes=notes,
        stack=stack,
    )


def summary(result: ThroughputResult) -> dict[str, tuple[float, float]]:
    return {s.name: (median(s.rps), median(s.p99_ms)) for s in result.servers}


if __name__ == "__main__":
    for stack_name in sys.argv[1:] or list(STACKS):
        outcome = run(stack=stack_name)
        for name, (rps, p99) in summary(outcome).items():
            ratio = outcome.ratio(name, "bare")
            print(f"{stack_name:9s} {name:8s} {rps:8.0f} req/s  p99 {p99:6.2f} ms  {ratio:.0%}")
        print(outcome.notes)
