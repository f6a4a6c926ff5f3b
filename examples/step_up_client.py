"""A client that answers a claims challenge (docs/step-up.md).

Against ``make run`` (the demo API with its built-in dev issuer):

    python examples/step_up_client.py            # or: ... http://127.0.0.1:8000

1. signs in (here: ``POST /_dev/token``) declaring the client capability ``cp1``,
2. calls ``POST /payments/approve``: 401 ``insufficient_claims``, the
   ``WWW-Authenticate`` header carries ``claims="<base64>"``,
3. decodes the claims request, signs in again asking for it (the dev issuer then
   puts the authentication context into ``acrs``), and
4. retries: 200.

With MSAL the two sign-ins are (``cp1`` makes Entra emit ``xms_cc``, so the API
knows the client can answer a challenge)::

    app = msal.PublicClientApplication(CLIENT_ID, authority=..., client_capabilities=["cp1"])
    result = app.acquire_token_interactive(SCOPES)
    ...  # 401 with error="insufficient_claims"
    challenge = base64.b64decode(claims).decode()
    result = app.acquire_token_interactive(SCOPES, claims_challenge=challenge)
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
from collections.abc import Callable
from typing import Any

import httpx

#: One auth-param of a challenge: name="quoted value" (quoted-pairs allowed) or name=token.
_PARAM = re.compile(r'([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def challenge_params(header: str) -> dict[str, str]:
    """Parameters of a ``Bearer`` challenge (this API sends exactly one challenge)."""
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "bearer":
        raise ValueError(f"not a Bearer challenge: {header!r}")
    return {
        name.lower(): re.sub(r"\\(.)", r"\1", quoted) if quoted or not token else token
        for name, quoted, token in _PARAM.findall(rest)
    }


async def sign_in(client: httpx.AsyncClient, claims_request: dict[str, Any] | None = None) -> str:
    """Stand-in for MSAL's sign-in: the dev issuer mints a token for what was asked.

    A real client passes ``claims_request`` as MSAL's ``claims_challenge`` and Entra
    runs the Conditional Access policy of that authentication context (e.g. MFA).
    """
    body: dict[str, Any] = {"scopes": ["Items.Read"], "client_capabilities": ["cp1"]}
    if claims_request is not None:
        acrs = claims_request.get("access_token", {}).get("acrs", {})
        wanted = acrs.get("values") or [acrs["value"]]
        body["acrs"] = list(wanted)
    response = await client.post("/_dev/token", json=body)
    response.raise_for_status()
    return str(response.json()["access_token"])


async def approve_payment(
    client: httpx.AsyncClient, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Call ``POST /payments/approve``, answering one claims challenge."""
    token = await sign_in(client)
    response = await client.post("/payments/approve", headers={"Authorization": f"Bearer {token}"})
    if response.status_code == 401 and "www-authenticate" in response.headers:
        header = response.headers["www-authenticate"]
        params = challenge_params(header)
        log(f"{response.status_code} {params.get('error')}: WWW-Authenticate: {header}")
        if params.get("error") == "insufficient_claims" and "claims" in params:
            claims = base64.b64decode(params["claims"]).decode()
            log(f"claims request: {claims}")
            log(f"sign in again at {params.get('authorization_uri')}")
            token = await sign_in(client, json.loads(claims))
            response = await client.post(
                "/payments/approve", headers={"Authorization": f"Bearer {token}"}
            )
    log(f"{response.status_code} {response.text}")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


async def main(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        await approve_payment(client)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"))
