"""Token fuzzing: mutate valid Entra tokens and send each through ``EntraAuth.authenticate``.

    python -m tests.fuzz 100000        # make fuzz (docs/security.md)

Valid v1/v2, delegated/app-only tokens from the fake Entra ID (served in process
through ``httpx.ASGITransport``: no sockets) are mutated: bit flips per segment,
segment swaps and truncation, base64 alphabet/padding/last-bit tricks,
alg/kid/x5t/crit/jku games, duplicate and deeply nested JSON, huge and
non-finite numbers, claims tampered under the original signature and re-signed
with the tenant's real key (then an independent oracle decides), JWE shapes,
sizes around 16 KiB, lone surrogates and non-ASCII.

A failure is: any exception other than ``AuthError`` (crash), an accepted token
whose text differs from a valid one unless the oracle says it must pass (wrongly
accepted), or a call over 50 ms twice in a row (slow; measured twice so that a
scheduler hiccup on a busy machine is not counted).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from entra_guard import AuthError, EntraAuth
from entra_guard._crypto import b64url_encode
from entra_guard.testing import FakeEntraID, FakeKey

#: The fake Entra ID's address; only ever reached through ASGITransport.
IDP_URL = "http://127.0.0.1:9"
SLOW_SECONDS = 0.050
MAX_TOKEN = 16 * 1024
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@asynccontextmanager
async def in_process_auth(
    idp: FakeEntraID, *, clock: Callable[[], float] | None = None, **overrides: Any
) -> AsyncIterator[EntraAuth]:
    """An ``EntraAuth`` trusting ``idp``, which it reaches in process (no socket)."""
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=idp.app), base_url=IDP_URL)
    options: dict[str, Any] = {} if clock is None else {"clock": clock}
    auth = EntraAuth(idp.settings(IDP_URL, **overrides), http_client=client, **options)
    try:
        yield auth
    finally:
        await auth.aclose()
        await client.aclose()


# -- the oracle: what a correct validator must accept (an independent, naive reading) ------


def _no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError("duplicate")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def oracle_accepts(
    header: dict[str, Any], payload: bytes, token: str, idp: FakeEntraID, now: float
) -> bool:
    """Must a token with this header and payload, signed by the tenant's key, pass?"""
    if len(token) > MAX_TOKEN or header.get("alg") != "RS256":
        return False
    if "crit" in header or "enc" in header:
        return False
    kid, x5t = header.get("kid"), header.get("x5t")
    if (kid is not None and not isinstance(kid, str)) or (
        x5t is not None and not isinstance(x5t, str)
    ):
        return False
    # the key is looked up by kid, else by x5t
    if kid is not None and kid != idp.active_key.kid:
        return False
    if kid is None and (x5t is None or x5t != idp.active_key.public_jwk.get("x5t")):
        return False
    try:
        claims = json.loads(payload, object_pairs_hook=_no_dupes, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return False
    if not isinstance(claims, dict):
        return False
    exp, nbf, skew = claims.get("exp"), claims.get("nbf"), 300
    if not _finite_number(exp) or now > float(exp) + skew:
        return False
    if nbf is not None and (not _finite_number(nbf) or now + skew < float(nbf)):
        return False
    tid, iss, ver = claims.get("tid"), claims.get("iss"), claims.get("ver")
    if tid != idp.tenant_id or not isinstance(tid, str) or not _GUID.fullmatch(tid):
        return False
    issuers = {
        "2.0": f"https://login.microsoftonline.com/{tid}/v2.0",
        "1.0": f"https://sts.windows.net/{tid}/",
    }
    version = next((v for v, i in issuers.items() if i == iss), None)
    if version is None or (ver is not None and ver != version):
        return False
    aud = claims.get("aud")
    auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(a in (idp.client_id, f"api://{idp.client_id}") for a in auds if isinstance(a, str)):
        return False
    scp, roles = claims.get("scp"), claims.get("roles")
    if scp is not None and not isinstance(scp, str):
        return False
    if roles is not None and not (
        isinstance(roles, list) and all(isinstance(r, str) for r in roles)
    ):
        return False
    return bool((scp and scp.strip()) or roles)


# -- mutations -----------------------------------------------------------------------------


@dataclass
class Case:
    """One fuzz input; ``signed`` holds (header, payload bytes) when re-signed with the real
    key, so that the oracle can decide; otherwise any acceptance is wrong."""

    name: str
    token: str
    signed: tuple[dict[str, Any], bytes] | None = None


def _b64(data: bytes) -> str:
    return b64url_encode(data)


def _unb64(segment: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@dataclass
class Mutator:
    idp: FakeEntraID
    rng: random.Random
    bases: list[tuple[str, dict[str, Any], dict[str, Any]]]  # token, header, claims
    rogue: FakeKey = field(default_factory=FakeKey.generate)

    def sign(self, name: str, header: dict[str, Any], payload: bytes) -> Case:
        head = _b64(json.dumps(header, separators=(",", ":")).encode())
        body = _b64(payload)
        signature = self.idp.active_key.signer.sign(f"{head}.{body}".encode())
        return Case(name, f"{head}.{body}.{_b64(signature)}", (header, payload))

    def case(self) -> Case:
        token, header, claims = self.rng.choice(self.bases)
        mutation = self.rng.choice(MUTATIONS)
        return mutation(self, token, dict(header), dict(claims))


def m_bitflip(m: Mutator, token: str, header: dict[str, Any], claims: dict[str, Any]) -> Case:
    parts = token.split(".")
    i = m.rng.randrange(3)
    raw = bytearray(_unb64(parts[i]))
    if raw:
        pos = m.rng.randrange(len(raw))
        raw[pos] ^= 1 << m.rng.randrange(8)
    parts[i] = _b64(bytes(raw))
    return Case(f"bitflip[{i}]", ".".join(parts))


def m_charflip(m: Mutator, token: str, header: dict[str, Any], claims: dict[str, Any]) -> Case:
    pos = m.rng.randrange(len(token))
    return Case("charflip", token[:pos] + m.rng.choice(_B64 + ".=+/ ") + token[pos + 1 :])


def m_swap(m: Mutator, token: str, header: dict[str, Any], claims: dict[str, Any]) -> Case:
    parts = token.split(".")
    i, j = m.rng.sample(range(3), 2)
    parts[i], parts[j] = parts[j], parts[i]
    return Case("swap", ".".join(parts))


def m_truncate(m: Mutator, token: str, header: dict[str, Any], claims: dict[str, Any]) -> Case:
    return Case("truncate", token[: m.rng.randrange(len(token))])


def m_segments(m: Mutator, token: str, header: dict[str, Any], claims: dict[str, Any]) -> Case:
    parts = token.split(".")
    shapes = [
        parts[:2],
        [*parts, ""],
        [*parts, parts[2]],
        ["", *parts[1:]],
        [parts[0], "", parts[2]],
        parts[:1] * 3,
        [*parts, "x", "y"],  # five segments: a JWE shape
    ]
    return Case("segments", ".".join(m.rng.choice(shapes)))


def m_alphabet(m: Mutator, token: str, header: dict[str, Any], claims: dict[str, Any]) -> Case:
    parts = token.split(".")
    i = m.rng.randrange(3)
    seg = parts[i]
    trick = m.rng.randrange(6)
    if trick == 0:
        seg = seg.replace("-", "+").replace("_", "/")
    elif trick == 1:
        seg += "=" * m.rng.randrange(1, 3)
    elif trick == 2:  # non-canonical last character (unused bits set)
        unused = {2: 4, 3: 2}.get(len(seg) % 4, 0)
        if unused:
            last = _B64.index(seg[-1])
            seg = seg[:-1] + _B64[(last & ~((1 << unused) - 1)) | m.rng.randrange(1, 1 << unused)]
    elif trick == 3:
        pos = m.rng.randrange(len(seg) + 1)
        seg = seg[:pos] + m.rng.choice([" ", "\n", "\t", "%", "*", "\\", "\x00"]) + seg[pos:]
    elif trick == 4:
        seg = seg + "A"  # length % 4 == 1 or a different length
    else:
        seg = seg.swapcase()
    parts[i] = seg
    return Case(f"alphabet{trick}[{i}]", ".".join(parts))


_HEADER_GAMES: list[tuple[str, Any]] = [
    ("alg", "none"),
    ("alg", "HS256"),
    ("alg", "RS384"),
    ("alg", "PS256"),
    ("alg", "rs256"),
    ("alg", "RS256 "),
    ("alg", ""),
    ("alg", None),
    ("alg", 256),
    ("alg", ["RS256"]),
    ("kid", "nope"),
    ("kid", None),
    ("kid", 1),
    ("kid", ["x"]),
    ("kid", "k" * 5000),
    ("kid", "../../etc/passwd"),
    ("x5t", "nope"),
    ("x5t", 1),
    ("crit", ["exp"]),
    ("crit", []),
    ("jku", "https://evil.example/keys"),
    ("x5u", "https://evil.example/cert"),
    ("jwk", {"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
    ("enc", "A256GCM"),
    ("zip", "DEF"),
    ("typ", "at+jwt"),
]


def m_header(m: Mutator, token: str, header: dict[str, Any], claims: dict[str, Any]) -> Case:
    name, value = m.rng.choice(_HEADER_GAMES)
    if value is None:
        header.pop(name, None)
    else:
        header[name] = value
    payload = json.dumps(claims, separators=(",", ":")).encode()
    how = m.rng.randrange(3)
    if how == 0:  # signed by the tenant's key: the oracle decides (jku/x5u/jwk are ignored)
        return m.sign(f"header-signed:{name}", header, payload)
    head = _b64(json.dumps(header, separators=(",", ":")).encode())
    body = _b64(payload)
    if how == 1:  # original signature
        return Case(f"header-orig:{name}", f"{head}.{body}.{token.split('.')[2]}")
    signature = m.rogue.signer.sign(f"{head}.{body}".encode())
    return Case(f"header-rogue:{name}", f"{head}.{body}.{_b64(signature)}")


def _now() -> int:
    return int(time.time())


def _claim_values(name: str) -> list[Any]:
    now = _now()
    values: dict[str, list[Any]] = {
        "exp": [now - 4000, now + 4000, now - 100, "9999999999", None, True, 0, 2**70, 1.5e308],
        "nbf": [now + 4000, now - 100, "0", None, -(2**63)],
        "iss": ["https://login.microsoftonline.com/common/v2.0", "", None, 1],
        "tid": ["00000000-0000-0000-0000-000000000000", "", None, ["x"]],
        "aud": ["api://other", [], ["x", 1], None, 7],
        "ver": ["1.0", "2.0", "3.0", None, 2],
        "scp": ["", " ", None, ["Items.Read"], "Admin"],
        "roles": [[], None, "Admin", [1], ["Admin"]],
        "azp": [None, "someone-else", 3],
        "oid": [None, "x\n", 5],
    }
    return values[name]


def m_claims(m: Mutator, token: str, header: dict[str, Any], claims: dict[str, Any]) -> Case:
    name = m.rng.choice(["exp", "nbf", "iss", "tid", "aud", "ver", "scp", "roles", "azp", "oid"])
    value = m.rng.choice(_claim_values(name))
    if name == "tid" and value is not None and m.rng.random() < 0.5:
        value = f"{claims['tid']}\n"
        claims["iss"] = str(claims["iss"]).replace(claims["tid"], value)
    if value is None:
        claims.pop(name, None)
    else:
        claims[name] = value
    payload = json.dumps(claims, separators=(",", ":")).encode()
    if m.rng.random() < 0.5:
        head, _, signature = token.split(".")
        return Case(f"claims-orig:{name}", f"{head}.{_b64(payload)}.{signature}")
    return m.sign(f"claims-signed:{name}", header, payload)


def m_json(m: Mutator, token: str, header: dict[str, Any], claims: dict[str, Any]) -> Case:
    text = json.dumps(claims, separators=(",", ":"))
    tricks = [
        text[:-1] + f',"tid":"{claims["tid"]}"}}',  # duplicate member
        text[:-1] + ',"x":' + "[" * 5000 + "]" * 5000 + "}",  # deep nesting
        text[:-1] + ',"x":' + "[" * 100_000 + "}",  # deeper, unterminated
        text.replace(f'"exp":{claims["exp"]}', '"exp":1e400'),
        text.replace(f'"exp":{claims["exp"]}', '"exp":NaN'),
        text.replace(f'"exp":{claims["exp"]}', '"exp":Infinity'),
        text.replace(f'"exp":{claims["exp"]}', '"exp":' + "9" * 5000),
        text.replace(f'"exp":{claims["exp"]}', '"exp":-0.0e-999999'),
        text[:-1] + ',"x":"\\ud800"}',  # escaped lone surrogate
        '["not","an","object"]',
        '"string"',
        "null",
        text + " ",
        " " + text,
        text[:-1],
        "\ufeff" + text,
        text.encode("utf-16").decode("latin-1"),
    ]
    index = m.rng.randrange(len(tricks))
    payload = tricks[index].encode("utf-8", "surrogatepass")
    if m.rng.random() < 0.8:
        return m.sign(f"json{index}", header, payload)
    head, _, signature = token.split(".")
    return Case(f"json{index}-orig", f"{head}.{_b64(payload)}.{signature}")


def m_size(m: Mutator, token: str, header: dict[str, Any], claims: dict[str, Any]) -> Case:
    base = len(m.sign("x", header, json.dumps(claims, separators=(",", ":")).encode()).token)
    target = MAX_TOKEN + m.rng.randrange(-8, 9)
    # each padding byte of JSON is 4/3 base64 characters
    pad = max(0, int((target - base - len(',"pad":""')) * 3 / 4))
    claims["pad"] = "p" * pad
    for _ in range(8):  # nudge to land exactly around the limit
        case = m.sign("size", header, json.dumps(claims, separators=(",", ":")).encode())
        if abs(len(case.token) - target) <= 2:
            break
        claims["pad"] = "p" * max(0, len(claims["pad"]) + (target - len(case.token)) * 3 // 4)
    if m.rng.random() < 0.3:
        case = Case("size-padded", case.token + "A" * m.rng.randrange(1, 64))
    return case


def m_text(m: Mutator, token: str, header: dict[str, Any], claims: dict[str, Any]) -> Case:
    pos = m.rng.randrange(len(token) + 1)
    junk = m.rng.choice(["\ud800", "\udfff", "é", "\u2028", "\x00", "\uffff", "\U0001d518", "\x7f"])
    return Case("text", token[:pos] + junk + token[pos:])


MUTATIONS: list[Callable[[Mutator, str, dict[str, Any], dict[str, Any]], Case]] = [
    m_bitflip,
    m_charflip,
    m_swap,
    m_truncate,
    m_segments,
    m_alphabet,
    m_header,
    m_claims,
    m_claims,
    m_json,
    m_size,
    m_text,
]


# -- the run -------------------------------------------------------------------------------


@dataclass
class FuzzResult:
    tried: int = 0
    crashes: list[str] = field(default_factory=list)
    wrongly_accepted: list[str] = field(default_factory=list)
    slow: list[str] = field(default_factory=list)
    accepted: int = 0

    def line(self) -> str:
        return (
            f"fuzz: {self.tried} tried, {len(self.crashes)} crashes, "
            f"{len(self.wrongly_accepted)} wrongly accepted, {len(self.slow)} slow"
        )

    @property
    def ok(self) -> bool:
        return not (self.crashes or self.wrongly_accepted or self.slow)


def _bases(idp: FakeEntraID) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    bases = []
    for version in ("1.0", "2.0"):
        for app_only in (False, True):
            claims = idp.claims(version=version, app_only=app_only, groups=["g1", "g2"])
            token = idp.token(claims)
            header = json.loads(_unb64(token.split(".")[0]))
            bases.append((token, header, claims))
    return bases


async def _timed(auth: EntraAuth, token: str) -> tuple[float, bool, BaseException | None]:
    started = time.perf_counter()
    try:
        await auth.authenticate(token)
        accepted, error = True, None
    except AuthError:
        accepted, error = False, None
    except Exception as exc:
        accepted, error = False, exc
    return time.perf_counter() - started, accepted, error


async def fuzz(count: int, seed: int = 0) -> FuzzResult:
    idp = FakeEntraID()
    rng = random.Random(seed)
    result = FuzzResult()
    async with in_process_auth(idp) as auth:
        assert await auth.warm_up()
        mutator = Mutator(idp, rng, _bases(idp))
        valid = {token for token, _, _ in mutator.bases}
        for token in valid:
            await auth.authenticate(token)
        for _ in range(count):
            case = mutator.case()
            result.tried += 1
            seconds, accepted, error = await _timed(auth, case.token)
            label = f"{case.name} ({len(case.token)} chars)"
            if error is not None:
                result.crashes.append(f"{label}: {type(error).__name__}: {error}"[:300])
                continue
            if seconds > SLOW_SECONDS:
                seconds, accepted, _ = await _timed(auth, case.token)  # once more: GC, scheduler
                if seconds > SLOW_SECONDS:
                    result.slow.append(f"{label}: {seconds * 1000:.0f} ms")
            if not accepted:
                continue
            result.accepted += 1
            if case.token in valid:
                continue
            if case.signed is None:
                result.wrongly_accepted.append(label)
                continue
            header, payload = case.signed
            if not oracle_accepts(header, payload, case.token, idp, time.time()):
                result.wrongly_accepted.append(label)
    return result


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 100_000
    seed = int(argv[1]) if len(argv) > 1 else 0
    started = time.perf_counter()
    result = asyncio.run(fuzz(count, seed))
    for kind, items in (
        ("crash", result.crashes),
        ("wrongly accepted", result.wrongly_accepted),
        ("slow", result.slow),
    ):
        for item in items[:20]:
            print(f"  {kind}: {item}", file=sys.stderr)
    print(f"{result.line()} ({result.accepted} accepted, {time.perf_counter() - started:.0f} s)")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
