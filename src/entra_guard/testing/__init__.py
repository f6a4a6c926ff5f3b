"""Test your own API against a fake Entra ID over real HTTP.

    from entra_guard.testing import FakeEntraID, LiveServer

    idp = FakeEntraID()
    with LiveServer(idp.app) as server:
        settings = idp.settings(server.url)
        token = idp.token(scopes=["Items.Read"])

Or, with pytest: ``pytest_plugins = ["entra_guard.testing.pytest_plugin"]`` and
use the ``fake_entra`` / ``fake_entra_url`` / ``entra_settings`` fixtures.
Needs the ``testing`` extra (``pip install entra-guard[testing]``).
"""

from ._authorize import AuthorizationServer, SignInUser
from ._customers import FakeB2C, FakeExternalID
from ._graph import FakeGraph
from ._idp import (
    DEFAULT_CLIENT_APP_ID,
    DEFAULT_CLIENT_ID,
    DEFAULT_TENANT_ID,
    V1_ISSUER,
    V2_ISSUER,
    FakeEntraID,
    FakeKey,
    sign_token,
)
from ._obo import OboGrant, make_client_certificate
from ._server import LiveServer

__all__ = [
    "DEFAULT_CLIENT_APP_ID",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_TENANT_ID",
    "V1_ISSUER",
    "V2_ISSUER",
    "AuthorizationServer",
    "FakeB2C",
    "FakeEntraID",
    "FakeExternalID",
    "FakeGraph",
    "FakeKey",
    "LiveServer",
    "OboGrant",
    "SignInUser",
    "make_client_certificate",
    "sign_token",
]
