"""The command line of ``entra-guard inspect``: flags, settings, input, exit status.

    entra-guard inspect < token.txt            # settings from ENTRA_* like the app
    entra-guard inspect --json --tenant-id ... --client-id ... "$TOKEN"

Exit status: 0 valid, 1 rejected, 2 usage error or IdP unreachable
(``idp_unavailable``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from pydantic import ValidationError

from .._settings import EntraSettings
from ._render import render_text
from ._replay import inspect_token, normalize_token
from ._report import EXIT_ERROR, Report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "token",
        nargs="?",
        default="-",
        help="the access token, or '-' / nothing to read it from stdin (safer: no shell history)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("-v", "--verbose", action="store_true", help="show entra_guard logs")
    group = parser.add_argument_group("settings (default: the ENTRA_* environment, like the app)")
    flags: tuple[tuple[str, str, dict[str, Any]], ...] = (
        ("--tenant-id", "tenant_id", {}),
        ("--client-id", "client_id", {}),
        ("--authority-host", "authority_host", {}),
        ("--audience", "audiences", {"action": "append", "help": "repeatable"}),
        ("--allowed-tenant", "allowed_tenants", {"action": "append", "help": "repeatable"}),
        (
            "--allowed-client-app",
            "allowed_client_apps",
            {"action": "append", "help": "repeatable"},
        ),
        (
            "--accepted-token-version",
            "accepted_token_versions",
            {"action": "append", "choices": ["1.0", "2.0"]},
        ),
        ("--accepted-algorithm", "accepted_algorithms", {"action": "append"}),
        (
            "--b2c-policy",
            "b2c_policies",
            {"action": "append", "help": "repeatable: an Azure AD B2C user flow / policy"},
        ),
        ("--clock-skew", "clock_skew", {"type": int}),
        ("--allow-acl-tokens", "allow_acl_tokens", {"action": "store_const", "const": True}),
        ("--http-timeout", "http_timeout", {"type": float}),
        ("--http-proxy", "http_proxy", {}),
        ("--ca-bundle", "ca_bundle", {}),
    )
    for flag, dest, options in flags:
        group.add_argument(flag, dest=dest, default=None, **options)


_SETTING_FIELDS = (
    "tenant_id",
    "client_id",
    "authority_host",
    "audiences",
    "allowed_tenants",
    "allowed_client_apps",
    "accepted_token_versions",
    "accepted_algorithms",
    "b2c_policies",
    "clock_skew",
    "allow_acl_tokens",
    "http_timeout",
    "http_proxy",
    "ca_bundle",
)


def settings_from_args(args: argparse.Namespace) -> EntraSettings:
    overrides = {
        name: getattr(args, name) for name in _SETTING_FIELDS if getattr(args, name) is not None
    }
    return EntraSettings(**overrides)


def _settings_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        if error["type"] == "missing":
            flag = "--" + name.replace("_", "-")
            lines.append(f"ENTRA_{name.upper()} (or {flag}) is required")
        else:
            lines.append(f"{name}: {error['msg']}")
    return "invalid settings: " + "; ".join(lines)


def _read_token(arg: str, stdin: TextIO) -> str | None:
    if arg != "-":
        return arg
    if stdin.isatty():
        return None
    return stdin.read()


def run(args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    """``entra-guard inspect`` with parsed ``args``; returns the exit status."""

    def usage(message: str) -> int:
        if args.json:
            report = Report(exit_code=EXIT_ERROR, error=message)
            stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
        stderr.write(f"entra-guard inspect: {message}\n")
        return EXIT_ERROR

    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        return usage(_settings_error(exc))
    except ValueError as exc:
        return usage(f"invalid settings: {exc}")
    raw = _read_token(args.token, stdin)
    if raw is None or not normalize_token(raw):
        return usage("no token: pass it as an argument or pipe it on stdin")

    package_logger = logging.getLogger("entra_guard")
    handler: logging.Handler = (
        logging.StreamHandler(stderr) if args.verbose else logging.NullHandler()
    )
    package_logger.addHandler(handler)
    previous_level = package_logger.level
    if args.verbose:
        package_logger.setLevel(logging.INFO)
    try:
        report = asyncio.run(inspect_token(raw, settings))
    except ValueError as exc:  # e.g. an unreadable CA bundle while building the client
        return usage(str(exc))
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(previous_level)

    if args.json:
        stdout.write(json.dumps(report.to_json(), indent=2, default=str) + "\n")
    else:
        render_text(report, stdout)
    return report.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="entra-guard inspect", description="Explain why a token is accepted or refused."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv), sys.stdin, sys.stdout, sys.stderr)
