"""Rendering of an inspection report as text (``--json`` is ``Report.to_json``).

Token content is attacker-controlled: every line goes through ``_printable`` so
no terminal escape sequence reaches the screen.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from ._report import EXIT_ERROR, Report

_TIME_CLAIMS = ("exp", "nbf", "iat")


def iso(ts: Any) -> str:
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return repr(ts)
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return repr(ts)


def _ago(delta: float) -> str:
    if not math.isfinite(delta):  # an absurd exp/nbf (e.g. 1e400) is shown, not a crash
        return "never"
    seconds = abs(int(delta))
    text = (
        f"{seconds}s"
        if seconds < 120
        else f"{seconds // 60}m"
        if seconds < 7200
        else f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    )
    return f"{text} ago" if delta < 0 else f"in {text}"


def lifetime_detail(claims: Mapping[str, Any], now: float, skew: float) -> str:
    parts = []
    for name in ("exp", "nbf"):
        value = claims.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            parts.append(f"{name} {iso(value)} ({_ago(value - now)})")
    return ", ".join(parts or ["no exp"]) + f"; clock skew {int(skew)}s"


_MARK = {"pass": "[ok]  ", "fail": "[FAIL]", "skipped": "[--]  "}


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _printable(text: str) -> str:
    """Token content is attacker-controlled: no terminal escape sequences reach the screen."""
    return "".join(c if c.isprintable() or c == "\n" else "?" for c in text)


def render_text(report: Report, out: TextIO) -> None:

    def w(text: str) -> None:
        out.write(_printable(text))

    if report.header is not None:
        w("Header (untrusted)\n")
        for name, value in report.header.items():
            w(f"  {name}: {_value(value)}\n")
    if report.claims is not None:
        trust = (
            "signature verified" if report.claims_trusted else "UNTRUSTED: signature not verified"
        )
        w(f"\nClaims ({trust})\n")
        for name, value in report.claims.items():
            extra = f"  ({iso(value)})" if name in _TIME_CLAIMS else ""
            w(f"  {name}: {_value(value)}{extra}\n")
    w("\nChecks, in the order the API applies them\n")
    for check in report.checks:
        note = (
            "" if check.reached or check.result == "skipped" else "  (after the deciding failure)"
        )
        w(f"  {_MARK[check.result]} {check.name:<16} {check.detail}{note}\n")
        if check.result == "fail" or check.name in ("issuer", "audience"):
            if check.expected is not None:
                w(f"  {'':<6} {'':<16} expected: {_value(check.expected)}\n")
            if check.got is not None:
                w(f"  {'':<6} {'':<16} got:      {_value(check.got)}\n")
    w("\n")
    if report.valid:
        w("Verdict: VALID, the API accepts this token\n")
        return
    if report.code is not None and report.exit_code == EXIT_ERROR:
        w(f"Verdict: UNDECIDED, the API answers HTTP {report.status} code={report.code}\n")
        w(f"  {report.detail}\n")
    elif report.code is not None:
        w(f"Verdict: REJECTED, HTTP {report.status} code={report.code}\n")
        w(f"  {report.detail}\n")
    if report.error:
        w(f"Error: {report.error}\n")
    if report.hint:
        w(f"Hint: {report.hint}\n")
