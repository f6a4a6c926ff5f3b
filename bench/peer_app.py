"""The peer: the same route protected by fastapi-azure-auth 5.3.0.

Runs in its own venv (``bench/.venv-peer``, which has no entra-guard), so it
imports nothing from the project. ``openid_config_url`` (the documented
override for B2C) points it at the fake Entra ID on 127.0.0.1 instead of
login.microsoftonline.com.

    bench/.venv-peer/bin/python -m uvicorn --factory bench.peer_app:create
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Security

BODY = {"message": "hello"}


def create() -> FastAPI:
    # Imported by name: the project's own venv (where mypy runs) does not have it.
    azure_auth: Any = importlib.import_module("fastapi_azure_auth.auth")
    # The readiness probe sends a bogus token once; keep its traceback out of the output.
    logging.getLogger("fastapi_azure_auth").setLevel(logging.CRITICAL)
    tenant_id = os.environ["BENCH_TENANT_ID"]
    client_id = os.environ["BENCH_CLIENT_ID"]
    scope = os.environ["BENCH_SCOPE"]
    scheme = azure_auth.AzureAuthorizationCodeBearerBase(
        app_client_id=client_id,
        tenant_id=tenant_id,
        scopes={f"api://{client_id}/{scope}": scope},
        openid_config_url=(
            f"{os.environ['BENCH_IDP_URL']}/{tenant_id}/v2.0/.well-known/openid-configuration"
        ),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await scheme.openid_config.load_config()
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/hello", dependencies=[Security(scheme, scopes=[scope])])
    async def hello() -> dict[str, str]:
        return BODY

    return app
