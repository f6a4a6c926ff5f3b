"""Benchmark 2c, cross-check: instructions per request under callgrind (opt-in).

    python -m bench.instructions          # ~5-10 minutes; needs valgrind and a C compiler

Timings on a shared machine move with the other tenants; instruction counts do
not. The same contenders as ``bench/otel.py`` (same apps, same token, cache-hit
path) run in one process under ``valgrind --tool=callgrind``, which counts only
inside each batch of requests (a tiny helper library issues callgrind's client
requests around the batches). Instructions per request, and the share each
observer adds, come out identical from run to run on any load.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entra_guard.testing import FakeEntraID, LiveServer

from . import apps
from .common import CLIENT_ID, ROOT, TENANT_ID, realistic_token
from .otel import Message, _scope, observers

_HELPER = r"""
#include <valgrind/callgrind.h>
void cg_zero(void) { CALLGRIND_ZERO_STATS; }
void cg_on(void) { CALLGRIND_TOGGLE_COLLECT; }
void cg_off(void) { CALLGRIND_TOGGLE_COLLECT; }
void cg_dump(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }
"""


@dataclass(frozen=True)
class InstructionsResult:
    #: contender -> instructions per request (median of the rounds)
    per_request: dict[str, float]
    requests: int

    def added(self, name: str) -> float:
        """Share of instructions ``name`` adds over the baseline (0.28 = +28 %)."""
        return self.per_request[name] / self.per_request["baseline"] - 1


async def _child(library: str, requests: int, rounds: int) -> None:
    control = ctypes.CDLL(library)
    contenders, shutdown = observers()
    idp = FakeEntraID(tenant_id=TENANT_ID, client_id=CLIENT_ID)
    statuses: set[int] = set()

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    with LiveServer(idp.app) as server:
        os.environ["BENCH_IDP_URL"] = server.url
        token = realistic_token(idp)
        built = {name: apps.guarded(observer=observer) for name, observer in contenders.items()}
        async with AsyncExitStack() as stack:
            for app in built.values():
                await stack.enter_async_context(app.router.lifespan_context(app))
                for _ in range(50):  # warm-up: middleware stack built, token cached
                    await app(_scope(token), receive, send)
            for round_ in range(rounds):
                for name, app in built.items():
                    control.cg_zero()
                    control.cg_on()
                    for _ in range(requests):
                        await app(_scope(token), receive, send)
                    control.cg_off()
                    control.cg_dump(f"{name}/{round_}".encode())
    shutdown()
    if statuses != {200}:
        raise RuntimeError(f"in-process apps answered {sorted(statuses)}")


def run(requests: int = 300, rounds: int = 2) -> InstructionsResult:
    """Run the contenders under callgrind in a child process and read its dumps."""
    for tool in ("valgrind", "cc"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"bench.instructions needs {tool} (apt-get install valgrind gcc)")
    with tempfile.TemporaryDirectory() as tmp:
        source, library = Path(tmp, "cg.c"), Path(tmp, "libcg.so")
        source.write_text(_HELPER)
        subprocess.run(["cc", "-shared", "-fPIC", "-o", library, source], check=True)
        out = Path(tmp, "callgrind.out")
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "bench.instructions",
                "--child",
                str(library),
                str(requests),
                str(rounds),
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=3600,
        )
        counts: dict[str, list[float]] = {}
        for dump in Path(tmp).glob("callgrind.out.*"):
            text = dump.read_text()
            trigger = re.search(r"^desc: Trigger: Client Request: (\S+)/\d+$", text, re.M)
            total = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
            if trigger and total:
                counts.setdefault(trigger.group(1), []).append(int(total.group(1)) / requests)
    per_request = {name: sorted(values)[len(values) // 2] for name, values in counts.items()}
    return InstructionsResult(per_request=per_request, requests=requests)


def table(r: InstructionsResult) -> list[str]:
    labels: dict[str, Any] = {
        "baseline": "none",
        "prometheus": "`PrometheusObserver`",
        "otel": "`OpenTelemetryObserver()` (default: a hit marks the request's span)",
        "otel_hit_spans": "`OpenTelemetryObserver(trace_cache_hits=True)`: 1 SDK span per request",
    }
    lines = [
        "| observer | instructions/request (callgrind) | added |",
        "|---|---:|---:|",
    ]
    for name, label in labels.items():
        added = "" if name == "baseline" else f"{r.added(name):+.1%}"
        lines.append(f"| {label} | {r.per_request[name]:,.0f} | {added} |")
    return lines


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        library, requests, rounds = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        asyncio.run(_child(library, requests, rounds))
    else:
        result = run()
        print("\n".join(table(result)))
