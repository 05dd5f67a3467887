"""Real TLS peers against gev servers with ``ssl=``: ``openssl s_client``, the ``websockets``
client over ``wss://``, headless Chromium, and the plugins over TLS (WebSocket, protobuf,
first-bytes selection, gev-pubsub fan-out, gev-timers idle reaping).

Chromium trusts the test certificate by its public key's hash only, and the test proves that
verification stays on for any other key. Failures a peer causes are logged by gev as one
WARNING line each, which the tests read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trustme")

from gev_core import Connection, Handler, get_plugin_manager
from gev_core.testing import (
    TLSCertificates,
    TLSFiles,
    connect,
    serve,
    tls_certificates,
    tls_connect,
)
from tls_peers import WSS_EXPECTED, chromium_wss, s_client, websockets_roundtrip

DEADLINE = 30.0


@pytest.fixture(scope="module")
def certs() -> TLSCertificates:
    return tls_certificates()


@pytest.fixture(scope="module")
def files(certs: TLSCertificates, tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return certs.write(tmp_path_factory.mktemp("tls"))


def wait_for(cond: Any, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class Echo(Handler):
    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str | None, str | None, Any]] = []
        self.closed = 0

    def on_connect(self, conn: Connection) -> None:
        self.seen.append(
            (conn.tls_version, conn.alpn_protocol, conn.server_name, conn.peer_certificate)
        )

    def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
        return data

    def on_close(self, conn: Connection) -> None:
        self.closed += 1


class LogLines(logging.Handler):
    """The records of the ``gev`` logger (whatever propagation another test configured)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def gev_log() -> Iterator[LogLines]:
    log = logging.getLogger("gev")
    handler = LogLines()
    level = log.level
    if log.getEffectiveLevel() > logging.WARNING:
        log.setLevel(logging.WARNING)
    log.addHandler(handler)
    yield handler
    log.removeHandler(handler)
    log.setLevel(level)


def closing_warnings(gev_log: LogLines) -> list[str]:
    return [
        r.getMessage()
        for r in list(gev_log.records)
        if r.name == "gev" and r.levelno == logging.WARNING and "closing" in r.getMessage()
    ]


# --------------------------------------------------------------------------- openssl s_client


@pytest.mark.parametrize("tls12", [False, True], ids=["tls13", "tls12"])
def test_s_client_echo(certs: TLSCertificates, files: TLSFiles, tls12: bool) -> None:
    handler = Echo()
    with serve(handler, ssl=certs.server_context(alpn=["echo/1", "http/1.1"])) as server:
        run = s_client(
            server.port, files.ca, send=b"hello gev\n", expect=b"hello gev\n", alpn="echo/1",
            tls12=tls12,
        )  # fmt: skip
        wait_for(lambda: handler.closed == 1)
    assert run.returncode == 0, run.stderr
    assert run.stdout == b"hello gev\n"
    assert run.field("Verification") == "OK"
    version = "TLSv1.2" if tls12 else "TLSv1.3"
    assert run.field("Protocol version") == version
    assert handler.seen == [(version, "echo/1", "localhost", None)]


def test_s_client_large_payload(certs: TLSCertificates, files: TLSFiles) -> None:
    payload = b"".join(b"%07d\n" % i for i in range(40_000))  # 320 KB: many records
    with serve(Echo(), ssl=certs.server_context()) as server:
        run = s_client(server.port, files.ca, send=payload, expect=payload[-8:])
    assert run.returncode == 0, run.stderr
    assert run.stdout == payload


def test_s_client_with_a_client_certificate(certs: TLSCertificates, files: TLSFiles) -> None:
    handler = Echo()
    with serve(handler, ssl=certs.server_context(verify_client="required")) as server:
        run = s_client(
            server.port, files.ca, send=b"mtls\n", expect=b"mtls\n", cert=files.client_cert,
            key=files.client_key,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    (seen,) = handler.seen
    subject = dict(item[0] for item in seen[3]["subject"])
    assert subject["commonName"] == "gev test client"


def test_s_client_without_the_required_client_certificate(
    certs: TLSCertificates, files: TLSFiles, gev_log: LogLines
) -> None:
    handler = Echo()
    with serve(handler, ssl=certs.server_context(verify_client="required")) as server:
        s_client(server.port, files.ca, send=b"no cert\n", timeout=20)
        wait_for(lambda: closing_warnings(gev_log))
    (message,) = closing_warnings(gev_log)
    assert "client certificate required, but the client sent none" in message
    assert handler.seen == []


def test_s_client_renegotiation_is_refused(
    certs: TLSCertificates, files: TLSFiles, gev_log: LogLines
) -> None:
    with serve(Echo(), ssl=certs.server_context()) as server:
        # TLS 1.2 (1.3 has no renegotiation); "R" on a line of its own: s_client renegotiates.
        run = s_client(
            server.port, files.ca, send=b"before\n", expect=b"before\n",
            then=((b"R\n", b""),), tls12=True, timeout=20,
        )  # fmt: skip
        wait_for(lambda: closing_warnings(gev_log))
    assert "RENEGOTIATING" in run.stderr
    assert "no renegotiation" in run.stderr  # the server said no; OpenSSL's client gives up
    (message,) = closing_warnings(gev_log)
    assert "renegotiation was refused" in message


def test_s_client_distrusting_the_server(
    certs: TLSCertificates, tmp_path: Path, gev_log: LogLines
) -> None:
    stranger = tls_certificates().write(tmp_path)
    with serve(Echo(), ssl=certs.server_context()) as server:
        run = s_client(server.port, stranger.ca, send=b"x\n", timeout=20)
        wait_for(lambda: closing_warnings(gev_log))
    assert run.returncode != 0
    assert "verify" in run.stderr.lower()
    (message,) = closing_warnings(gev_log)
    assert "the peer does not trust our certificate (unknown CA)" in message


# ---------------------------------------------------------------------- plugins over TLS


def test_websockets_client_over_wss(certs: TLSCertificates) -> None:
    gev_websocket = pytest.importorskip("gev_websocket")

    class WsEcho(gev_websocket.WebSocketHandler):  # type: ignore[misc]
        def on_message(self, conn: Any, data: Any) -> Any:
            kind = gev_websocket.MessageType.TEXT if isinstance(data, str) else 2
            return kind, data

    protocol = gev_websocket.WebSocketProtocol()
    with serve(WsEcho(), protocol=protocol, ssl=certs.server_context()) as server:
        url = f"wss://localhost:{server.port}/"
        big = bytes(range(256)) * 1000  # 256 KB: a message over many records
        replies = websockets_roundtrip(url, certs.client_context(), ["text ✓", b"\x00\x01", big])
        assert replies == ["text ✓", b"\x00\x01", big]
        with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify"):
            websockets_roundtrip(url, tls_certificates().client_context(), [])


def test_first_bytes_selection_runs_on_plaintext(certs: TLSCertificates) -> None:
    pytest.importorskip("gev_websocket")
    pytest.importorskip("gev_protobuf")
    import gev_protobuf.plugin  # the submodule itself: an attribute only once imported
    from gev_protobuf import FrameDecoder, pack_message

    class Tagged(Handler):
        def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
            if conn.protocol.name == "protobuf":
                return ctx, b"pb:" + data
            return data  # websocket: echo

    pm = get_plugin_manager(autoload=False)
    pm.register(gev_protobuf.plugin, name="protobuf")
    import gev_websocket.plugin

    pm.register(gev_websocket.plugin, name="websocket")
    ctx = certs.server_context()
    with serve(Tagged(), protocol=["websocket", "protobuf"], plugins=pm, ssl=ctx) as server:
        with tls_connect(server, certs) as pb:
            pb.sendall(pack_message("msg1", b"\x08\x01"))
            decoder = FrameDecoder()
            while (frame := decoder.next_frame()) is None:
                chunk = pb.recv(65536)
                assert chunk
                decoder.feed(chunk)
            assert frame == ("msg1", b"pb:\x08\x01")
        url = f"wss://localhost:{server.port}/"
        assert websockets_roundtrip(url, certs.client_context(), [b"ws"]) == [b"ws"]


def test_pubsub_publishes_to_tls_subscribers(certs: TLSCertificates) -> None:
    gev_websocket = pytest.importorskip("gev_websocket")
    from gev_pubsub import PubSub

    # The asyncio client: the sync one drives one SSLSocket from two threads (see
    # tls_peers.websockets_roundtrip), which lost a GET about once per run of this test.
    from websockets.asyncio.client import connect

    hub = PubSub()
    opened: list[Connection] = []

    class Room(gev_websocket.WebSocketHandler):  # type: ignore[misc]
        def on_open(self, conn: Connection) -> None:
            hub.subscribe(conn, "room")
            opened.append(conn)

        def on_message(self, conn: Connection, data: Any) -> Any:
            return gev_websocket.MessageType.TEXT, f"re: {data}"

    async def subscribers(url: str) -> None:
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(
                    connect(url, ssl=certs.client_context(), open_timeout=DEADLINE)
                )
                for _ in range(6)
            ]
            deadline = time.monotonic() + DEADLINE
            while len(opened) < 6:
                assert time.monotonic() < deadline, "timed out"
                await asyncio.sleep(0.01)
            expected: list[str | bytes] = []
            for i in range(40):
                message: str | bytes = f"news {i}" if i % 2 else bytes([i]) * 300
                hub.publish("room", message)
                expected.append(message)
            for c in clients:
                got = [await asyncio.wait_for(c.recv(), DEADLINE) for _ in expected]
                assert got == expected
                await c.send("own")  # the connection's own replies still decrypt after fan-out
                assert await asyncio.wait_for(c.recv(), DEADLINE) == "re: own"

    protocol = gev_websocket.WebSocketProtocol()
    try:
        with serve(Room(), protocol=protocol, ssl=certs.server_context(), num_loops=2) as server:
            asyncio.run(subscribers(f"wss://localhost:{server.port}/"))
    finally:
        hub.close()


def test_proxy_protocol_header_comes_before_tls(certs: TLSCertificates) -> None:
    gev_proxy_protocol = pytest.importorskip("gev_proxy_protocol")
    peers: list[tuple[str, Any, str | None]] = []

    class Peer(Echo):
        def on_connect(self, conn: Connection) -> None:
            peers.append((conn.peer_addr, conn.proxy_address, conn.tls_version))

    pm = get_plugin_manager(autoload=False)
    with serve(Peer(), ssl=certs.server_context(), plugins=pm) as server:
        server.set_preamble(gev_proxy_protocol.ProxyProtocol(trusted=["127.0.0.0/8"]))
        raw = connect(server)
        # The PROXY header in plaintext, then the TLS handshake on the same connection.
        raw.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 1833\r\n")
        with certs.client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"behind a proxy")
            assert tls.recv(100) == b"behind a proxy"
    ((peer, proxy, version),) = peers
    assert peer == "203.0.113.7:40000"
    assert proxy is not None and proxy[0] == "127.0.0.1"
    assert version == "TLSv1.3"


def test_idle_tls_connections_are_reaped(certs: TLSCertificates) -> None:
    pytest.importorskip("gev_timers")
    handler = Echo()
    with serve(handler, ssl=certs.server_context(), idle_time=0.3) as server:
        tls = tls_connect(server, certs)
        tls.sendall(b"ping")
        assert tls.recv(4) == b"ping"
        wait_for(lambda: handler.closed == 1)
        assert tls.recv(100) == b""
        tls.close()


# ----------------------------------------------------------------------- headless Chromium


@pytest.mark.slow
def test_chromium_opens_wss_to_gev(certs: TLSCertificates, tmp_path: Path) -> None:
    gev_websocket = pytest.importorskip("gev_websocket")

    class WsEcho(gev_websocket.WebSocketHandler):  # type: ignore[misc]
        def on_message(self, conn: Any, data: Any) -> Any:
            kind = gev_websocket.MessageType.TEXT if isinstance(data, str) else 2
            return kind, data

    page_context = certs.server_context()
    protocol = gev_websocket.WebSocketProtocol()
    with serve(WsEcho(), protocol=protocol, ssl=certs.server_context()) as server:
        url = f"wss://localhost:{server.port}/"
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
