"""Command line: ``entra-guard inspect`` (also ``python -m entra_guard inspect``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import _inspect as inspect_command

DESCRIPTION = "Tools for APIs protected by entra-guard."
INSPECT_HELP = (
    "Explain whether the API would accept an access token, check by check, and why not. "
    "Settings come from the ENTRA_* environment (like the app) or the flags below. "
    "Exit status: 0 valid, 1 rejected, 2 usage error or identity provider unreachable."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entra-guard", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    inspect_parser = commands.add_parser(
        "inspect", help="explain why a token is accepted or refused", description=INSPECT_HELP
    )
    inspect_command.add_arguments(inspect_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "inspect":
        parser.print_help(sys.stderr)
        return 2
    return inspect_command.run(args, sys.stdin, sys.stdout, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
