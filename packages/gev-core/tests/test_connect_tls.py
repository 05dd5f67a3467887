"""Outbound TLS (``connect(ssl=client_context(...))``) against a gev TLS server and Python's
``ssl``, with ``trustme`` certificates: verification, ALPN, and handshake failures reported to
the caller as ``TLSError`` (nothing logged)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("trustme")

from gev_core import Client, Connection, Handler, TLSError
from gev_core.testing import TLSCertificates, echo_upstream, serve, tls_certificates

DEADLINE = 20.0


class Echo(Handler):
    def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
        return data


class Recorder(Handler):
    def __init__(self) -> None:
        self.data = bytearray()
        self.lock = threading.Lock()
        self.connects = 0

    def on_connect(self, conn: Connection) -> None:
        self.connects += 1

    def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
        with self.lock:
            self.data += data
        return None

    def wait_bytes(self, n: int) -> bytes:
        deadline = time.monotonic() + DEADLINE
        while len(self.data) < n and time.monotonic() < deadline:
            time.sleep(0.005)
        with self.lock:
            return bytes(self.data)


@pytest.fixture(scope="module")
def certs() -> TLSCertificates:
    return tls_certificates()


@pytest.fixture
def client() -> Iterator[Client]:
    with Client() as c:
        yield c


def test_tls_to_a_gev_server_with_alpn(client: Client, certs: TLSCertificates) -> None:
    seen: list[str | None] = []

    class Server_(Echo):
        def on_connect(self, conn: Connection) -> None:
            seen.append(conn.alpn_protocol)

    with serve(Server_(), ssl=certs.server_context(alpn=["h2", "http/1.1"])) as server:
        rec = Recorder()
        conn = client.connect(
            ("127.0.0.1", server.port), rec, ssl=certs.client_context(alpn=["http/1.1"])
        ).result(DEADLINE)
        assert conn.tls_version in ("TLSv1.2", "TLSv1.3")
        assert conn.alpn_protocol == "http/1.1"
        assert conn.peer_certificate is not None  # the server's, verified
        payload = bytes(range(256)) * 1000
        conn.send(payload)
        assert rec.wait_bytes(len(payload)) == payload
        assert seen == ["http/1.1"]  # (the server finishes its handshake after the client)
        conn.close()


def test_tls_to_pythons_ssl_server_by_name(client: Client, certs: TLSCertificates) -> None:
    with echo_upstream(tls=certs.server_context()) as upstream:
        rec = Recorder()
        # "localhost" goes through the resolver, and is the name verified (and sent as SNI).
        conn = client.connect(f"localhost:{upstream.port}", rec, ssl=certs.client_context()).result(
            DEADLINE
        )
        assert rec.connects == 1
        conn.send(b"over TLS")
        assert rec.wait_bytes(8) == b"over TLS"
        conn.close()


def test_an_unknown_ca_fails_with_tls_error_and_logs_nothing(
    client: Client, certs: TLSCertificates, caplog: pytest.LogCaptureFixture
) -> None:
    strangers = tls_certificates()
    with (
        echo_upstream(tls=certs.server_context()) as upstream,
        caplog.at_level(logging.DEBUG, logger="gev"),
    ):
        rec = Recorder()
        future = client.connect(("127.0.0.1", upstream.port), rec, ssl=strangers.client_context())
        with pytest.raises(TLSError, match="verif") as info:
            future.result(DEADLINE)
        assert rec.connects == 0
    assert "certificate" in str(info.value)
    assert f"TLS to 127.0.0.1:{upstream.port} failed" in str(info.value)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_hostname_mismatch_fails(client: Client, certs: TLSCertificates) -> None:
    with serve(Echo(), ssl=certs.server_context()) as server:
        future = client.connect(
            ("127.0.0.1", server.port),
            ssl=certs.client_context(),
            server_hostname="not-this-one.example",
        )
        with pytest.raises(TLSError, match=r"(?i)hostname mismatch"):
            future.result(DEADLINE)


def test_tls_over_a_unix_socket_needs_a_server_hostname(
    client: Client, certs: TLSCertificates, tmp_path: Any
) -> None:
    address = f"unix:{tmp_path}/tls.sock"
    with serve(Echo(), address=address, ssl=certs.server_context()):
        with pytest.raises(ValueError, match="server_hostname"):
            client.connect(address, ssl=certs.client_context())
        rec = Recorder()
        conn = client.connect(
            address, rec, ssl=certs.client_context(), server_hostname="localhost"
        ).result(DEADLINE)
        conn.send(b"unix and TLS")
        assert rec.wait_bytes(12) == b"unix and TLS"
        conn.close()
