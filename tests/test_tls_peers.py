"""Real TLS peers against gev's TLS engine and reference servers (the harness of tls_peers.py).

``openssl s_client`` and Python's ``ssl`` meet the sans-IO engine driven over real sockets
(:class:`tls_peers.EngineEchoServer`); the ``websockets`` client and headless Chromium are
proven against a ``websockets`` server over TLS, the reference a gev WebSocket server with TLS
will replace. Chromium trusts the test certificate by its public key's hash only, and the test
proves that verification stays on for any other key.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

pytest.importorskip("trustme")

from gev_core.testing import TLSCertificates, TLSFiles, tls_certificates, tls_connect
from tls_peers import (
    WSS_EXPECTED,
    EngineEchoServer,
    chromium_wss,
    s_client,
    websockets_echo_server,
    websockets_roundtrip,
)


@pytest.fixture(scope="module")
def certs() -> TLSCertificates:
    return tls_certificates()


@pytest.fixture(scope="module")
def files(certs: TLSCertificates, tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return certs.write(tmp_path_factory.mktemp("tls"))


# --------------------------------------------------------------------------- openssl s_client


@pytest.mark.parametrize("tls12", [False, True], ids=["tls13", "tls12"])
def test_s_client_echo(certs: TLSCertificates, files: TLSFiles, tls12: bool) -> None:
    with EngineEchoServer(certs.server_context(alpn=["echo/1", "http/1.1"])) as server:
        run = s_client(
            server.port, files.ca, send=b"hello gev\n", expect=b"hello gev\n", alpn="echo/1",
            tls12=tls12,
        )  # fmt: skip
        (record,) = server.wait(1)
    assert run.returncode == 0, run.stderr
    assert run.stdout == b"hello gev\n"
    assert run.field("Verification") == "OK"
    version = "TLSv1.2" if tls12 else "TLSv1.3"
    assert run.field("Protocol version") == version
    assert record.version == version
    assert record.alpn == "echo/1"
    assert record.server_name == "localhost"
    assert record.received == b"hello gev\n"
    assert record.failure is None
    assert record.peer_closed  # s_client sent close_notify at the end of its input


def test_s_client_large_payload(certs: TLSCertificates, files: TLSFiles) -> None:
    payload = b"".join(b"%07d\n" % i for i in range(40_000))  # 320 KB: many records
    with EngineEchoServer(certs.server_context()) as server:
        run = s_client(server.port, files.ca, send=payload, expect=payload[-8:])
        server.wait(1)
    assert run.returncode == 0, run.stderr
    assert run.stdout == payload


def test_s_client_with_a_client_certificate(certs: TLSCertificates, files: TLSFiles) -> None:
    with EngineEchoServer(certs.server_context(verify_client="required")) as server:
        run = s_client(
            server.port, files.ca, send=b"mtls\n", expect=b"mtls\n", cert=files.client_cert,
            key=files.client_key,
        )  # fmt: skip
        (record,) = server.wait(1)
    assert run.returncode == 0, run.stderr
    assert record.peer_certificate is not None
    subject = dict(item[0] for item in record.peer_certificate["subject"])
    assert subject["commonName"] == "gev test client"


def test_s_client_without_the_required_client_certificate(
    certs: TLSCertificates, files: TLSFiles
) -> None:
    with EngineEchoServer(certs.server_context(verify_client="required")) as server:
        s_client(server.port, files.ca, send=b"no cert\n", timeout=20)
        (record,) = server.wait(1)
    assert record.failure == "client certificate required, but the client sent none"


def test_s_client_renegotiation_is_refused(certs: TLSCertificates, files: TLSFiles) -> None:
    with EngineEchoServer(certs.server_context()) as server:
        # TLS 1.2 (1.3 has no renegotiation); "R" on a line of its own: s_client renegotiates.
        run = s_client(
            server.port, files.ca, send=b"before\n", expect=b"before\n",
            then=((b"R\n", b""),), tls12=True, timeout=20,
        )  # fmt: skip
        (record,) = server.wait(1)
    assert "RENEGOTIATING" in run.stderr
    assert "no renegotiation" in run.stderr  # the server said no; OpenSSL's client gives up
    assert record.received == b"before\n"
    assert record.failure == (
        "the peer aborted after its renegotiation was refused (handshake_failure)"
    )


def test_s_client_distrusting_the_server(certs: TLSCertificates, tmp_path: Path) -> None:
    stranger = tls_certificates().write(tmp_path)
    with EngineEchoServer(certs.server_context()) as server:
        run = s_client(server.port, stranger.ca, send=b"x\n", timeout=20)
        (record,) = server.wait(1)
    assert run.returncode != 0
    assert "verify" in run.stderr.lower()
    assert record.failure == "the peer does not trust our certificate (unknown CA)"


# ------------------------------------------------------------------------- Python's ssl


def test_python_ssl_client(certs: TLSCertificates) -> None:
    with EngineEchoServer(certs.server_context()) as server:
        with tls_connect(("127.0.0.1", server.port), certs) as tls:
            tls.sendall(b"from python")
            assert tls.recv(100) == b"from python"
            assert tls.version() == "TLSv1.3"
            tls.unwrap()  # close_notify, then the server's in reply
        (record,) = server.wait(1)
    assert record.peer_closed and record.failure is None


def test_python_ssl_client_rejects_an_unknown_ca(certs: TLSCertificates) -> None:
    with EngineEchoServer(certs.server_context()) as server:
        with pytest.raises(ssl.SSLCertVerificationError):
            tls_connect(("127.0.0.1", server.port), tls_certificates())
        (record,) = server.wait(1)
    assert record.failure == "the peer does not trust our certificate (unknown CA)"


@pytest.mark.parametrize(
    ("send", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", "plaintext HTTP sent to a TLS port"),
        (b"hello\r\n", "not TLS: the peer sent bytes that are not a TLS record"),
        (b"", "the peer closed the connection during the TLS handshake"),
    ],
    ids=["http", "plaintext", "silent-close"],
)
def test_bad_clients_get_a_reason(certs: TLSCertificates, send: bytes, reason: str) -> None:
    with EngineEchoServer(certs.server_context()) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(send)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(100)  # the server closes
        (record,) = server.wait(1)
    assert record.failure == reason


def test_truncated_client_hello(certs: TLSCertificates) -> None:
    client = certs.client_context().wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost"
    )
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    hello = outgoing.read()
    with EngineEchoServer(certs.server_context()) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(hello[: len(hello) // 2])
            sock.shutdown(socket.SHUT_WR)
            sock.recv(100)
        (record,) = server.wait(1)
    assert record.failure == "the peer closed the connection during the TLS handshake"


# ---------------------------------------------------------------------- websockets over wss


def test_websockets_client_over_wss(certs: TLSCertificates) -> None:
    with websockets_echo_server(certs.server_context()) as port:
        replies = websockets_roundtrip(
            f"wss://localhost:{port}/", certs.client_context(), ["text ✓", b"\x00\x01binary"]
        )
    assert replies == ["text ✓", b"\x00\x01binary"]


def test_websockets_client_refuses_an_untrusted_server(certs: TLSCertificates) -> None:
    with websockets_echo_server(certs.server_context()) as port, pytest.raises(ssl.SSLError):
        websockets_roundtrip(f"wss://localhost:{port}/", tls_certificates().client_context(), [])


# ----------------------------------------------------------------------- headless Chromium


@pytest.mark.slow
def test_chromium_trusts_exactly_the_test_key_over_wss(
    certs: TLSCertificates, tmp_path: Path
) -> None:
    page_context = certs.server_context()
    with websockets_echo_server(certs.server_context()) as port:
        url = f"wss://localhost:{port}/"
        run = chromium_wss(url, page_context, tmp_path / "trusting", trust_spki=certs.spki_sha256)
        assert run.reports == [WSS_EXPECTED], run.log[-3000:]
        assert f'<div id="result">{WSS_EXPECTED}</div>' in run.dom

        # Controls: verification is on. Without the flag, or trusting another key, the page
        # itself does not load (ERR_CERT_AUTHORITY_INVALID), so nothing reports.
        untrusting = chromium_wss(url, page_context, tmp_path / "plain", trust_spki=None)
        assert untrusting.reports == []
        assert "ERR_CERT_AUTHORITY_INVALID" in untrusting.log
        other = tls_certificates().spki_sha256
        wrong = chromium_wss(url, page_context, tmp_path / "other", trust_spki=other)
        assert wrong.reports == []
        assert "ERR_CERT_AUTHORITY_INVALID" in wrong.log
