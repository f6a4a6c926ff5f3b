"""``make bench`` / ``python -m bench``: every benchmark, one markdown table.

Each figure is a ratio against a baseline measured in the same run (the
machine is small and noisy). The table is printed and written to
``bench/results/latest.md``; raw numbers go to ``bench/results/latest.json``.

    python -m bench            # everything (~2-3 minutes)
    python -m bench --quick    # fewer rounds, 2,000 instead of 10,000 at scale
    python -m bench --only validation,asgi,otel,http,scale,obo,authorities
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from . import apps, asgi, authorities, obo, obo_http, otel, throughput, validation
from .common import RESULTS_DIR, ROOT, fmt_ns, machine, median
from .scale import CHUNK, ScaleResult, from_json

PARTS = ("validation", "asgi", "otel", "http", "scale", "obo", "authorities")


def _ok(met: bool) -> str:
    return "met" if met else "**MISSED**"


def _validation_table(r: validation.ValidationResult) -> list[str]:
    fresh_x = r.fresh_ns / r.floor_ns
    cached_vs_jose = r.jose_ns / r.cached_ns
    return [
        f"### 1. In-process validation ({r.token_bytes}-byte v2 token, {r.claims} claims, "
        f"20 group GUIDs, RS256/RSA-2048, warm keys; median of {r.rounds} interleaved rounds)",
        "",
        "| contender | per token | vs floor | target | |",
        "|---|---:|---:|---|---|",
        f"| floor: `cryptography` PKCS#1 v1.5 verify, pre-loaded key, + base64url/JSON "
        f"decode of header and payload | {fmt_ns(r.floor_ns)} | 1.00x | baseline | |",
        f"| naive python-jose `jwt.decode(token, jwk_dict, ...)` | {fmt_ns(r.jose_ns)} "
        f"| {r.jose_ns / r.floor_ns:.2f}x | | |",
        f"| `EntraAuth.authenticate()`, fresh token (no result cache) | {fmt_ns(r.fresh_ns)} "
        f"| {fresh_x:.2f}x | ≤ 1.5x floor | {_ok(fresh_x <= 1.5)} |",
        f"| `EntraAuth.authenticate()`, fresh token, result cache on, "
        f"{validation.ALIVE:,} distinct tokens alive | {fmt_ns(r.fresh_cached_ns)} "
        f"| {r.fresh_cached_ns / r.floor_ns:.2f}x | ≤ 1.4x floor "
        f"| {_ok(r.fresh_cached_ns / r.floor_ns <= 1.4)} |",
        f"| `EntraAuth.authenticate()`, repeated token (cache hit) | {fmt_ns(r.cached_ns)} "
        f"| {r.cached_ns / r.floor_ns:.3f}x ({cached_vs_jose:.0f}x faster than naive jose) "
        f"| ≤ 5 µs and ≥ 20x faster than naive jose "
        f"| {_ok(r.cached_ns <= 5000 and cached_vs_jose >= 20)} |",
    ]


def _http_table(results: list[throughput.ThroughputResult]) -> list[str]:
    first = results[0]
    lines = [
        f"### 2. HTTP throughput: `GET /hello`, uvicorn (1 worker) on 127.0.0.1, "
        f"load from {first.loadgen} in another process ({throughput.CONNECTIONS} connections, "
        f"{first.rounds} interleaved rounds x {first.duration:g} s per stack; ratios taken "
        "per round, medians; every request carries the same valid token)",
        "",
        "| uvicorn stack | app | requests/s | p99 | vs bare | target | |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for r in results:
        lines += _http_rows(r)
    for r in results:
        lines += [f"- {r.stack}: {note}" for note in r.notes]
    return lines


def _http_rows(r: throughput.ThroughputResult) -> list[str]:
    stack = {"h11": "h11 + asyncio", "httptools": "httptools + uvloop"}.get(r.stack, r.stack)
    lines = []
    bare = r.get("bare")
    for server in r.servers:
        rps = sorted(server.rps)[len(server.rps) // 2]
        p99 = sorted(server.p99_ms)[len(server.p99_ms) // 2]
        ratio = r.ratio(server.name, "bare") if bare else None
        target, verdict = "", ""
        if server.name == "guarded" and ratio is not None:
            target, verdict = "≥ 85 % of bare (aim 90 %)", _ok(ratio >= 0.85)
        if server.name == "bare":
            target = "baseline"
        shown = f"{ratio:.0%}" if ratio is not None else "n/a"
        lines.append(
            f"| {stack} | {server.label} | {rps:,.0f} | {p99:.2f} ms | {shown} | {target} "
            f"| {verdict} |"
        )
    vs_peer = r.ratio("guarded", "peer")
    if vs_peer is not None:
        lines.append(
            f"| {stack} | entra-guard vs fastapi-azure-auth | {vs_peer:.1f}x | | | ≥ 5x | "
            f"{_ok(vs_peer >= 5)} |"
        )
    return lines


def _asgi_table(r: asgi.AsgiResult) -> list[str]:
    return [
        f"### 2b. Same apps called in-process as ASGI (no server, no socket; median of "
        f"{r.rounds} interleaved rounds): what each layer adds per request",
        "",
        "| app | µs/request | vs bare | added |",
        "|---|---:|---:|---:|",
        f"| bare FastAPI | {r.bare_us:.1f} | 100% | |",
        f"| bare + 1 trivial async dependency (FastAPI's own cost) | {r.dependency_us:.1f} "
        f"| {r.bare_us / r.dependency_us:.0%} | +{r.dependency_us - r.bare_us:.1f} µs |",
        f"| entra-guard middleware + `{apps.guard_name(False)}` | {r.guarded_depends_us:.1f} "
        f"| {r.bare_us / r.guarded_depends_us:.0%} "
        f"| +{r.guarded_depends_us - r.bare_us:.1f} µs |",
        f"| entra-guard middleware + `{apps.guard_name()}` | {r.guarded_us:.1f} "
        f"| {r.bare_us / r.guarded_us:.0%} | +{r.guarded_us - r.bare_us:.1f} µs |",
    ]


def _scale_table(r: ScaleResult) -> list[str]:
    lines = [
        "### 3. Scale (own process; RSS growth over the resident set before the part, "
        "peak = VmHWM)",
        "",
        "| part | seen | cache size → entries | peak RSS growth | RSS growth, 2nd half "
        "| median latency, last 3k vs first 3k | |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    parts = [("distinct valid tokens (fresh verify each)", r.tokens)]
    if r.overage is not None:
        parts.append(("distinct users with groups overage (Graph look-up each)", r.overage))
    for label, part in parts:
        half = len(part.growth_by_chunk_kib) // 2
        second_half = part.growth_by_chunk_kib[-1] - part.growth_by_chunk_kib[half - 1]
        # Allocator noise aside, nothing may grow once the caches are full.
        bounded = part.cache_entries <= part.cache_size and second_half <= max(
            0.05 * part.peak_growth_kib, 512
        )
        flat = part.latency_growth <= 1.25
        per_item = median(part.us_by_chunk)
        lines.append(
            f"| {label} | {part.items:,} | {part.cache_size:,} → {part.cache_entries:,} "
            f"| {part.peak_growth_kib / 1024:.1f} MiB | {second_half / 1024:+.1f} MiB "
            f"| {part.latency_growth:.2f}x ({per_item:,.0f} µs/item) "
            f"| bounded: {_ok(bounded)}; flat: {_ok(flat)} |"
        )
    t = r.tokens
    lines.append(
        f"| token cache hit after {CHUNK:,} vs {t.items:,} tokens seen | | | | "
        f"| {t.hit_us_late / t.hit_us_early:.2f}x ({t.hit_us_early:.1f} → "
        f"{t.hit_us_late:.1f} µs) | {_ok(t.hit_us_late / t.hit_us_early <= 1.25)} |"
    )
    if r.overage is None:
        lines.append(f"- groups overage part: {r.overage_note}")
    else:
        lines.append(
            f"- overage: {r.overage.graph_lookups:,} Graph look-ups against the fake Graph "
            "(in-process, over loopback HTTP: the µs/item is mostly the fake's and httpx's "
            "cost); groups cache and token cache both sized "
            f"{r.overage.cache_size:,}"
        )
    return lines


def _run_scale(quick: bool) -> ScaleResult:
    args = ["2000", "2000", "1024", "1024"] if quick else []
    process = subprocess.run(
        [sys.executable, "-m", "bench.scale", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if process.returncode != 0:
        raise RuntimeError(f"bench.scale failed:\n{process.stderr[-3000:]}")
    return from_json(process.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller scale run")
    parser.add_argument("--only", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    args = parser.parse_args()
    only = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = only - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")

    started = time.monotonic()
    info = machine()
    now = datetime.now(UTC)
    sections: list[list[str]] = []
    raw: dict[str, Any] = {"machine": info, "date": now.isoformat(timespec="seconds")}

    def step(name: str) -> None:
        print(f"bench: {name} ... ({time.monotonic() - started:.0f} s)", flush=True)

    if "validation" in only:
        step("in-process validation")
        v = validation.run(rounds=7 if args.quick else 15)
        raw["validation"] = dataclasses.asdict(v)
        sections.append(_validation_table(v))
    if "http" in only:
        results = []
        for stack in throughput.STACKS:
            step(f"HTTP throughput, uvicorn {stack}")
            results.append(throughput.run(rounds=3 if args.quick else 9, stack=stack))
        raw["http"] = {
            r.stack: {
                "loadgen": r.loadgen,
                "servers": {s.name: {"rps": s.rps, "p99_ms": s.p99_ms} for s in r.servers},
            }
            for r in results
        }
        sections.append(_http_table(results))
    if "asgi" in only:
        step("in-process ASGI")
        a = asgi.run(rounds=5 if args.quick else 15)
        raw["asgi"] = dataclasses.asdict(a)
        sections.append(_asgi_table(a))
    if "otel" in only:
        step("tracing cost (OpenTelemetry)")
        o = otel.run(rounds=5 if args.quick else 15)
        raw["otel"] = dataclasses.asdict(o)
        sections.append(otel.table(o))
    if "scale" in only:
        step("scale (10,000 tokens, 10,000 overage users)")
        s = _run_scale(args.quick)
        raw["scale"] = dataclasses.asdict(s)
        sections.append(_scale_table(s))

    if "obo" in only:
        step("on-behalf-of downstream calls, in process")
        o = obo.run(rounds=5 if args.quick else 15)
        raw["obo"] = dataclasses.asdict(o)
        sections.append(obo.table(o))
        step("on-behalf-of routes over HTTP")
        oh = obo_http.run(rounds=3 if args.quick else 9)
        raw["obo_http"] = dataclasses.asdict(oh)
        sections.append(obo_http.table(oh))

    if "authorities" in only:
        step("several authorities, in process")
        au = authorities.run(rounds=11 if args.quick else 31)
        raw["authorities"] = dataclasses.asdict(au)
        sections.append(authorities.table(au))

    header = [
        "## entra-guard benchmarks",
        "",
        f"{now:%Y-%m-%d %H:%M} UTC · {info['cores']} cores · {info['cpu']} · "
        f"Python {info['python']} · {info['platform']}" + (" · `--quick`" if args.quick else ""),
    ]
    text = "\n".join(header + [line for section in sections for line in ["", *section]]) + "\n"
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "latest.md").write_text(text)
    (RESULTS_DIR / "latest.json").write_text(json.dumps(raw, indent=2) + "\n")
    print()
    print(text)
    print(f"bench: done in {time.monotonic() - started:.0f} s; table in bench/results/latest.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
