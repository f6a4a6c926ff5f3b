"""Outbound HTTP configuration really reaches the wire.

A tiny forward proxy on 127.0.0.1 (plain ``GET http://...`` and ``CONNECT``
tunnels) records what it relays; the fake Entra ID is also served over TLS
with a certificate from a throw-away CA, so the CA bundle, ``SSL_CERT_FILE``
and ``tls_verify`` settings are proven by real handshakes.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import select
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from entra_guard import AuthError, EntraAuth, EntraSettings
from entra_guard._http import build_client
from entra_guard.testing import FakeEntraID, FakeGraph, LiveServer

# -- a real forward proxy ------------------------------------------------------------------


HOP_BY_HOP = {"connection", "proxy-connection", "keep-alive", "host", "transfer-encoding"}


class _ProxyHandler(socketserver.StreamRequestHandler):
    server: RecordingProxy

    def handle(self) -> None:
        request_line = self.rfile.readline(65536).decode("latin-1").strip()
        headers = []
        while True:
            line = self.rfile.readline(65536)
            if line in (b"\r\n", b"\n", b""):
                break
            headers.append(line)
        with self.server.lock:
            self.server.requests.append(request_line)
        method, target, _ = request_line.split(" ", 2)
        if method == "CONNECT":
            self._tunnel(target)
        else:
            self._forward(method, target, headers)

    def _tunnel(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)), timeout=10)
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        sockets = [self.connection, upstream]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 10)
                if not readable:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is self.connection else self.connection).sendall(data)
        finally:
            upstream.close()

    def _forward(self, method: str, target: str, headers: list[bytes]) -> None:
        url = httpx.URL(target)
        forwarded = {}
        for line in headers:
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() not in HOP_BY_HOP:
                forwarded[name.strip()] = value.strip()
        length = int(forwarded.get("content-length", forwarded.get("Content-Length", "0")))
        body = self.rfile.read(length) if length else b""
        with httpx.Client(trust_env=False, timeout=10) as upstream:
            response = upstream.request(method, url, content=body, headers=forwarded)
        self.wfile.write(f"HTTP/1.1 {response.status_code} Relayed\r\n".encode())
        self.wfile.write(b"content-type: application/json\r\n")
        self.wfile.write(f"content-length: {len(response.content)}\r\n".encode())
        self.wfile.write(b"connection: close\r\n\r\n" + response.content)
        self.wfile.flush()


class RecordingProxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.requests: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


@pytest.fixture
def proxy() -> Iterator[RecordingProxy]:
    server = RecordingProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(autouse=True)
def _no_env_proxies_or_cas(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
            monkeypatch.delenv(name)


async def authenticate(settings: EntraSettings, token: str) -> str:
    async with EntraAuth(settings) as auth:
        return (await auth.authenticate(token)).tenant_id


# -- proxy ------------------------------------------------------------------------------------


async def test_proxy_setting_carries_every_metadata_request(
    entra_settings: EntraSettings, fake_entra: FakeEntraID, proxy: RecordingProxy
) -> None:
    settings = entra_settings.model_copy(update={"http_proxy": proxy.url})
    assert await authenticate(settings, fake_entra.token()) == fake_entra.tenant_id
    base = f"{settings.authority_host}/{settings.tenant_id}"
    assert sorted(proxy.requests) == sorted(
        [
            f"GET {base}/v2.0/.well-known/openid-configuration HTTP/1.1",
            f"GET {base}/.well-known/openid-configuration HTTP/1.1",
            f"GET {base}/discovery/v2.0/keys HTTP/1.1",
        ]
    )


async def test_proxy_environment_variables_are_honoured(
    entra_settings: EntraSettings,
    fake_entra: FakeEntraID,
    proxy: RecordingProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    assert await authenticate(entra_settings, fake_entra.token()) == fake_entra.tenant_id
    assert len(proxy.requests) == 3
    # ... and so is NO_PROXY
    proxy.requests.clear()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert await authenticate(entra_settings, fake_entra.token()) == fake_entra.tenant_id
    assert proxy.requests == []


async def test_graph_and_token_calls_go_through_the_proxy_too(
    graph_settings: EntraSettings,
    fake_entra: FakeEntraID,
    fake_graph: FakeGraph,
    proxy: RecordingProxy,
) -> None:
    oid = "0f1e2d3c-4b5a-4697-8877-665544332211"
    fake_graph.set_groups(oid, ["3f5c9b1e-2d4a-4e6f-8a7b-1c2d3e4f5a6b"])
    settings = graph_settings.model_copy(update={"http_proxy": proxy.url})
    async with EntraAuth(settings) as auth:
        principal = await auth.authenticate(fake_entra.token(object_id=oid, overage=True))
        groups = await auth.group_ids(principal)
    assert "3f5c9b1e-2d4a-4e6f-8a7b-1c2d3e4f5a6b" in groups
    relayed = [r.split(" ")[:2] for r in proxy.requests]
    assert [
        "POST",
        f"{settings.authority_host}/{fake_entra.tenant_id}/oauth2/v2.0/token",
    ] in relayed
    assert any(
        method == "GET" and url.startswith(f"{settings.graph_url}/v1.0/users/{oid}/")
        for method, url in relayed
    )


async def test_dead_proxy_is_idp_unavailable_not_a_crash(
    entra_settings: EntraSettings, fake_entra: FakeEntraID
) -> None:
    settings = entra_settings.model_copy(update={"http_proxy": "http://127.0.0.1:9"})
    with pytest.raises(AuthError) as info:
        await authenticate(settings, fake_entra.token())
    assert info.value.code == "idp_unavailable" and info.value.status_code == 503


async def test_timeout_setting_bounds_a_hanging_idp(
    fresh_idp: tuple[FakeEntraID, str],
) -> None:
    idp, url = fresh_idp
    idp.hang()
    try:
        started = time.monotonic()
        with pytest.raises(AuthError) as info:
            await authenticate(idp.settings(url, http_timeout=0.3), idp.token())
        assert info.value.code == "idp_unavailable"
        assert time.monotonic() - started < 3
    finally:
        idp.recover()


async def test_own_http_client_is_used_and_left_open(
    entra_settings: EntraSettings, fake_entra: FakeEntraID
) -> None:
    seen: list[str] = []

    async def record(request: httpx.Request) -> None:
        seen.append(request.url.path)

    async with httpx.AsyncClient(event_hooks={"request": [record]}) as mine:
        async with EntraAuth(entra_settings, http_client=mine) as auth:
            await auth.authenticate(fake_entra.token())
        assert not mine.is_closed  # the app owns it
        assert len(seen) == 3 and any(path.endswith("/keys") for path in seen)


# -- TLS ------------------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it."""
    directory = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("entra-guard test CA"))
        .issuer_name(_name("entra-guard test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {
        "ca": directory / "ca.pem",
        "cert": directory / "server.pem",
        "key": directory / "server.key",
    }
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture
def tls_idp(pki: dict[str, Path]) -> Iterator[tuple[FakeEntraID, str]]:
    idp = FakeEntraID()
    with LiveServer(idp.app, ssl_certfile=str(pki["cert"]), ssl_keyfile=str(pki["key"])) as server:
        yield idp, f"https://127.0.0.1:{server.port}"


async def test_private_ca_is_refused_by_default(tls_idp: tuple[FakeEntraID, str]) -> None:
    idp, url = tls_idp
    with pytest.raises(AuthError) as info:
        await authenticate(idp.settings(url), idp.token())
    assert info.value.code == "idp_unavailable"
    assert idp.hits_matching("openid-configuration") == 0  # the handshake already failed


async def test_ca_bundle_setting_is_used(
    tls_idp: tuple[FakeEntraID, str], pki: dict[str, Path]
) -> None:
    idp, url = tls_idp
    settings = idp.settings(url, ca_bundle=str(pki["ca"]))
    assert await authenticate(settings, idp.token()) == idp.tenant_id
    assert idp.hits_matching("/keys") == 1


async def test_ssl_cert_file_environment_is_honoured(
    tls_idp: tuple[FakeEntraID, str], pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    idp, url = tls_idp
    monkeypatch.setenv("SSL_CERT_FILE", str(pki["ca"]))
    assert await authenticate(idp.settings(url), idp.token()) == idp.tenant_id


async def test_https_through_a_connect_proxy_with_ca_bundle(
    tls_idp: tuple[FakeEntraID, str], pki: dict[str, Path], proxy: RecordingProxy
) -> None:
    idp, url = tls_idp
    settings = idp.settings(url, ca_bundle=str(pki["ca"]), http_proxy=proxy.url)
    assert await authenticate(settings, idp.token()) == idp.tenant_id
    host = url.removeprefix("https://")
    assert proxy.requests and all(r == f"CONNECT {host} HTTP/1.1" for r in proxy.requests)


async def test_tls_verify_off_works_but_warns_loudly(
    tls_idp: tuple[FakeEntraID, str], pki: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    idp, url = tls_idp
    settings = idp.settings(url, tls_verify=False, ca_bundle=str(pki["ca"]))
    with caplog.at_level(logging.WARNING, logger="entra_guard"):
        assert await authenticate(settings, idp.token()) == idp.tenant_id
    (warning,) = [r for r in caplog.records if "INSECURE" in r.getMessage()]
    assert warning.levelno == logging.WARNING and warning.name == "entra_guard.http"
    assert "ENTRA_CA_BUNDLE is ignored" in warning.getMessage()


def test_unreadable_ca_bundle_fails_at_start_up(
    entra_settings: EntraSettings, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ValueError, match="ENTRA_CA_BUNDLE"):
        build_client(entra_settings.model_copy(update={"ca_bundle": str(missing)}))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ValueError, match="ENTRA_CA_BUNDLE"):
        EntraAuth(entra_settings.model_copy(update={"ca_bundle": str(garbage)}))


async def test_timeout_setting_reaches_the_client(entra_settings: EntraSettings) -> None:
    client = build_client(entra_settings.model_copy(update={"http_timeout": 1.5}))
    try:
        assert client.timeout == httpx.Timeout(1.5)
        assert client.follow_redirects is False
    finally:
        await client.aclose()
