"""The one rule table: docs/security.md "Validation rules", the inspector's checks and the
middleware's answers all come from ``_validation.RULES``."""

from __future__ import annotations

import random
import re

import httpx

from entra_guard import AuthError, EntraAuth
from entra_guard._errors import STATUS_BY_CODE
from entra_guard._inspect import CHECK_NAMES, inspect_token
from entra_guard._validation import RULE_NAMES, RULES
from entra_guard.testing import FakeEntraID
from tests._docs import table_after
from tests.conftest import run_coroutine
from tests.fuzz import IDP_URL, Mutator, _bases, in_process_auth


def _rules_table() -> list[tuple[str, list[str]]]:
    return [
        (name.strip("`"), re.findall(r"`([a-z_]+)`", codes))
        for name, codes in table_after("security", "validation-rules")
    ]


def test_docs_rules_table_is_the_rule_table() -> None:
    assert _rules_table() == [(rule.name, list(rule.codes)) for rule in RULES]


def test_rule_names_are_unique_and_codes_known() -> None:
    assert len(set(RULE_NAMES)) == len(RULE_NAMES)
    for rule in RULES:
        assert rule.codes and all(code in STATUS_BY_CODE for code in rule.codes)


def test_the_inspector_checks_are_the_rules() -> None:
    assert CHECK_NAMES == RULE_NAMES == tuple(rule.name for rule in RULES)
    assert RULE_NAMES.index("allowed_client_app") == RULE_NAMES.index("allowed_tenant") + 1


async def _agreement(count: int) -> list[str]:
    """The inspector's verdict and the middleware's answer, for mutated tokens."""
    idp = FakeEntraID()
    disagreements = []
    async with in_process_auth(idp) as auth:
        client = auth.http
        mutator = Mutator(idp, random.Random(7), _bases(idp))
        for _ in range(count):
            case = mutator.case()
            fresh = EntraAuth(idp.settings(IDP_URL), http_client=client)
            try:
                await fresh.validator.validate(case.token)
                code, detail = None, None
            except AuthError as exc:
                code, detail = exc.code, exc.detail
            report = await inspect_token(case.token, auth.settings, http_client=client)
            failed = [c for c in report.checks if c.reached and c.result == "fail"]
            shown = failed[0].code if failed else None
            if (report.code, report.detail, shown) != (code, detail, code):
                disagreements.append(f"{case.name}: api={code} inspect={report.code}/{shown}")
    return disagreements


def test_inspector_and_validator_never_disagree() -> None:
    assert run_coroutine(_agreement(300)) == []


def test_the_inspector_uses_reasons_for_hints() -> None:
    async def run() -> tuple[str | None, str | None]:
        idp = FakeEntraID()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=idp.app), base_url=IDP_URL
        ) as client:
            settings = idp.settings(IDP_URL)
            no_kid = await inspect_token(
                idp.token(header={"kid": None, "x5t": None}), settings, http_client=client
            )
            big = await inspect_token(idp.token(pad="x" * 17000), settings, http_client=client)
        return no_kid.hint, big.hint

    no_kid, big = run_coroutine(run())
    assert no_kid is not None and "names no key" in no_kid
    assert big is not None and "16 KiB" in big


def test_inspect_explains_client_not_allowed() -> None:
    """The allowed_client_app rule, as ``entra-guard inspect --allowed-client-app`` shows it."""
    import json

    async def run() -> dict[str, object]:
        idp = FakeEntraID()
        token = idp.token()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=idp.app), base_url=IDP_URL
        ) as client:
            settings = idp.settings(IDP_URL, allowed_client_apps=["someone-else"])
            report = await inspect_token(token, settings, http_client=client)
        return report.to_json()

    doc = json.loads(json.dumps(run_coroutine(run()), default=str))
    assert doc["code"] == "client_not_allowed" and doc["status"] == 403
    assert "ENTRA_ALLOWED_CLIENT_APPS" in doc["hint"]
    check = next(c for c in doc["checks"] if c["name"] == "allowed_client_app")
    assert check["result"] == "fail" and check["reached"]
    assert check["expected"] == ["someone-else"] and check["got"]
    assert doc["settings"]["allowed_client_apps"] == ["someone-else"]
