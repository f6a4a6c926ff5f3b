"""The inspection report: the ``--json`` schema ``entra-guard.inspect/1``.

::

    {
      "schema": "entra-guard.inspect/1",
      "valid": bool,
      "exit_code": 0 | 1 | 2,
      "code": str | null,          # the code the API would return (docs/troubleshooting.md "Codes")
      "status": int | null,        # its HTTP status (401/403/503)
      "detail": str | null,        # the API's "detail" text
      "hint": str | null,          # the usual fix, one line
      "error": str | null,         # usage/network problem (exit 2)
      "header": object | null,     # decoded JOSE header (never trusted)
      "claims": object | null,     # decoded payload
      "claims_trusted": bool,      # true once the signature verified
      "checks": [                  # the validation rules, in the order the middleware applies them
        {"name": "format" | "algorithm" | "key" | "signature" | "lifetime" | "issuer" |
                 "audience" | "scopes_or_roles" | "allowed_tenant" | "allowed_client_app",
         "result": "pass" | "fail" | "skipped",
         "reached": bool,          # false: the API stops before this rule
         "code": str | null,       # failure code of this rule
         "detail": str,
         "expected": any, "got": any}
      ],
      "settings": {...},           # the settings used (no secret)
      "metadata": {"discovery_url": str, "jwks_uri": str | null,
                   "issuers": {version: issuer}} | null
    }
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .._errors import AuthError

SCHEMA = "entra-guard.inspect/1"
EXIT_VALID, EXIT_REJECTED, EXIT_ERROR = 0, 1, 2
_INTERNAL = frozenset({"failed_rule", "failure"})


@dataclass
class Check:
    name: str
    result: str = "skipped"
    reached: bool = False
    code: str | None = None
    detail: str = ""
    expected: Any = None
    got: Any = None


@dataclass
class Report:
    valid: bool = False
    exit_code: int = EXIT_REJECTED
    code: str | None = None
    status: int | None = None
    detail: str | None = None
    hint: str | None = None
    error: str | None = None
    header: dict[str, Any] | None = None
    claims: dict[str, Any] | None = None
    claims_trusted: bool = False
    checks: list[Check] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None
    #: The rule whose failure decides the verdict (not part of the JSON schema).
    failed_rule: str | None = field(default=None, repr=False)
    failure: AuthError | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _INTERNAL}
        doc["checks"] = [asdict(check) for check in self.checks]
        return {"schema": SCHEMA, **doc}
