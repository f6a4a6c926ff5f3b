"""Shared pieces of the benchmarks: realistic tokens, statistics, machine facts."""

from __future__ import annotations

import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from entra_guard.testing import FakeEntraID

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PEER_VENV = BENCH_DIR / ".venv-peer"
PEER_PYTHON = PEER_VENV / "bin" / "python"
SERVER_VENV = BENCH_DIR / ".venv-server"
SERVER_PYTHON = SERVER_VENV / "bin" / "python"

#: Fixed ids so every process of one run agrees on them.
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
SCOPE = "Items.Read"


def group_ids(count: int = 20) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


def realistic_claims(idp: FakeEntraID, **overrides: Any) -> dict[str, Any]:
    """A delegated v2 access token as Entra issues it: ~25 claims, 20 group GUIDs."""
    claims = idp.claims(
        scopes=[SCOPE, "Items.Write", "User.Read"],
        groups=group_ids(20),
        wids=["b79fbf4d-3ef9-4689-8143-76b194e85509"],
    )
    claims |= {
        "given_name": "Ada",
        "family_name": "Lovelace",
        "ipaddr": "203.0.113.42",
        "unique_name": "ada@contoso.example",
        "xms_tcdt": 1289241547,
        "xms_ftd": "B3hT9YdQp0yKuV8n2k1c0wAAAAAAAAAA",
        "acct": 0,
        "acrs": ["c1"],
    }
    claims.update(overrides)
    return claims


def realistic_token(idp: FakeEntraID, **overrides: Any) -> str:
    return idp.token(realistic_claims(idp, **overrides))


def http_scope(path: str, headers: Sequence[tuple[bytes, bytes]]) -> dict[str, Any]:
    """A fresh ASGI scope for ``GET path`` on 127.0.0.1:8000 (the in-process benchmarks)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": list(headers),
        "state": {},
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def time_batches(
    fn: Callable[[], object], *, batch: int, rounds: int, warmup: int = 1
) -> list[float]:
    """Mean ns per call of ``fn`` for each of ``rounds`` batches of ``batch`` calls."""
    for _ in range(warmup * batch):
        fn()
    out: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        for _ in range(batch):
            fn()
        out.append((time.perf_counter_ns() - started) / batch)
    return out


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def fmt_ns(ns: float) -> str:
    if ns >= 1_000_000:
        return f"{ns / 1_000_000:.2f} ms"
    if ns >= 1_000:
        return f"{ns / 1_000:.1f} µs"
    return f"{ns:.0f} ns"


def peak_rss_kib(pid: int | None = None) -> int:
    """Peak resident set size (VmHWM) of a process, in KiB."""
    path = Path(f"/proc/{pid or os.getpid()}/status")
    for line in path.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def rss_kib(pid: int | None = None) -> int:
    path = Path(f"/proc/{pid or os.getpid()}/status")
    for line in path.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
