"""``entra-guard inspect``: explain, rule by rule, why the API accepts or refuses a token.

It runs the middleware's own rule table (``_validation.RULES``) against
metadata fetched the same way, so its verdict is the API's answer by
construction; it only adds expected/got values and a hint. It prints the
decoded header and claims (marked untrusted until the signature verifies) but
never the signature segment nor the token itself.

Modules by job: ``_replay`` (run the rules), ``_hints`` (the usual fix),
``_render`` (text output), ``_report`` (the ``--json`` schema), ``_cli``
(the command line).
"""

from __future__ import annotations

from .._validation import RULE_NAMES
from ._cli import add_arguments, main, run
from ._hints import hint_for
from ._replay import inspect_token, normalize_token
from ._report import SCHEMA, Check, Report

#: The checks of a report, in order: the validation rules themselves.
CHECK_NAMES = RULE_NAMES

__all__ = [
    "CHECK_NAMES",
    "SCHEMA",
    "Check",
    "Report",
    "add_arguments",
    "hint_for",
    "inspect_token",
    "main",
    "normalize_token",
    "run",
]
