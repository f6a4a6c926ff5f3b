"""Helpers for log lines that can never carry a token or, by default, PII.

Everything written by entra-guard goes to the ``entra_guard`` logger
hierarchy (``entra_guard``, ``entra_guard.metadata``, ``entra_guard.http``,
...). Values that come from a request (path, ``kid``) are attacker-controlled:
they are truncated and stripped of control characters so one request cannot
forge extra log lines.
"""

from __future__ import annotations

#: Claims that identify a person; logged only with ``EntraSettings.log_pii``.
PII_CLAIMS = frozenset(
    {
        "name",
        "upn",
        "preferred_username",
        "unique_name",
        "email",
        "ipaddr",
        "given_name",
        "family_name",
        "login_hint",
        "verified_primary_email",
        "verified_secondary_email",
    }
)


def loggable(value: object, limit: int = 64, *, words: bool = False) -> str:
    """``value`` as one safe, bounded log token (``-`` when absent).

    Every entra-guard log line passes what it did not write itself (request
    paths, ``kid``, upstream URLs and errors) through here. ``words=True`` keeps
    spaces, for messages; otherwise a value cannot look like two ``k=v`` fields.
    """
    if value is None:
        return "-"
    text = str(value)
    cleaned = "".join(
        c if c.isprintable() and c.isascii() and (words or c != " ") else "?" for c in text[:limit]
    )
    return cleaned + ("..." if len(text) > limit else "")
