"""TLS served by the reactor (``Server(ssl=...)``): Python's ``ssl`` client over loopback.

Handlers see plaintext for every protocol; the connection reaches the handler only once its
handshake completed, with the TLS facts on it; ``close`` sends close_notify after the pending
output; bad clients (plaintext, garbage, truncated or never-finished handshakes) each close
their own connection with one WARNING line, and the server goes on serving.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("trustme")

from gev_core import (
    Connection,
    Handler,
    LengthFieldProtocol,
    LineProtocol,
    Server,
    server_context,
    write_shared,
)
from gev_core.testing import (
    TLSCertificates,
    connect,
    serve,
    tls_certificates,
    tls_connect,
)

DEADLINE = 30.0


@pytest.fixture(scope="module")
def certs() -> TLSCertificates:
    return tls_certificates()


def wait_for(cond: Any, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def recv_all(sock: ssl.SSLSocket | socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


class Recorder(Handler):
    """Echoes; records what each callback saw of the connection's TLS state."""

    def __init__(self) -> None:
        self.connected: list[dict[str, Any]] = []
        self.closed = 0
        self.conns: list[Connection] = []

    def on_connect(self, conn: Connection) -> None:
        self.conns.append(conn)
        self.connected.append(
            {
                "version": conn.tls_version,
                "alpn": conn.alpn_protocol,
                "server_name": conn.server_name,
                "peer_certificate": conn.peer_certificate,
                "cipher": conn.ssl_object.cipher() if conn.ssl_object is not None else None,
            }
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


def drain(sock: socket.socket) -> None:
    """Read until the server closes (an alert may come first; a reset counts as closed)."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


def gev_warnings(gev_log: LogLines, text: str) -> list[logging.LogRecord]:
    return [
        r
        for r in list(gev_log.records)
        if r.name == "gev" and r.levelno == logging.WARNING and text in r.getMessage()
    ]


# ----------------------------------------------------------------------------- the basics


@pytest.mark.parametrize("version", ["TLSv1.3", "TLSv1.2"])
def test_echo_and_what_the_handler_sees(certs: TLSCertificates, version: str) -> None:
    handler = Recorder()
    ctx = certs.server_context(alpn=["echo/1", "http/1.1"])
    with serve(handler, ssl=ctx) as server:
        client_ctx = certs.client_context(alpn=["echo/1"])
        if version == "TLSv1.2":
            client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with tls_connect(server, client_ctx) as tls:
            for i in range(20):
                tls.sendall(b"message %d" % i)
                assert recv_all(tls, len(b"message %d" % i)) == b"message %d" % i
            assert tls.version() == version
        wait_for(lambda: handler.closed == 1)
    (seen,) = handler.connected
    assert seen["version"] == version
    assert seen["alpn"] == "echo/1"
    assert seen["server_name"] == "localhost"
    assert seen["peer_certificate"] is None  # none asked for
    assert seen["cipher"] is not None and seen["cipher"][1] == version


def test_client_certificate_is_on_the_connection(certs: TLSCertificates) -> None:
    handler = Recorder()
    with serve(handler, ssl=certs.server_context(verify_client="required")) as server:
        with tls_connect(server, certs.client_context(client_cert=True)) as tls:
            tls.sendall(b"mtls")
            assert recv_all(tls, 4) == b"mtls"
        # Without a certificate the handshake fails, and the handler never hears of it.
        with (
            pytest.raises((ssl.SSLError, OSError)),
            tls_connect(server, certs.client_context()) as tls,
        ):
            tls.sendall(b"x")
            tls.recv(1)  # TLS 1.3: the server's refusal arrives after the handshake
        wait_for(lambda: handler.closed == 1)
        time.sleep(0.1)
    (seen,) = handler.connected
    subject = dict(item[0] for item in seen["peer_certificate"]["subject"])
    assert subject["commonName"] == "gev test client"
    assert handler.closed == 1


def test_sni_chooses_the_certificate(certs: TLSCertificates, tmp_path: Any) -> None:
    other = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certs.ca.issue_cert("other.test").configure_cert(other)
    files = certs.write(tmp_path)
    ctx = server_context(files.cert, files.key, sni={"other.test": other})
    handler = Recorder()
    with serve(handler, ssl=ctx) as server:
        for name in ("other.test", "localhost"):
            with tls_connect(server, certs, server_hostname=name) as tls:
                tls.sendall(b"sni")
                assert recv_all(tls, 3) == b"sni"
                sans = [value for _, value in tls.getpeercert()["subjectAltName"]]
                assert (name in sans) and (("other.test" in sans) == (name == "other.test"))
    assert [seen["server_name"] for seen in handler.connected] == ["other.test", "localhost"]


def test_line_and_length_field_protocols_see_plaintext(certs: TLSCertificates) -> None:
    class Lines(Handler):
        def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
            return bytes(data).upper()

    with (
        serve(Lines(), protocol=LineProtocol(), ssl=certs.server_context()) as server,
        tls_connect(server, certs) as tls,
    ):
        # Lines split across TLS records and records carrying several lines.
        tls.sendall(b"one\ntw")
        tls.sendall(b"o\nthree\nfour\n")
        assert recv_all(tls, 19) == b"ONE\nTWO\nTHREE\nFOUR\n"

    big = bytes(range(256)) * 800  # 200 KiB: a dozen records each way
    with (
        serve(Lines(), protocol=LengthFieldProtocol(), ssl=certs.server_context()) as server,
        tls_connect(server, certs) as tls,
    ):
        frame = len(big).to_bytes(4, "big") + big
        tls.sendall(frame + frame[:10])
        tls.sendall(frame[10:])
        reply = big.upper()
        expected = len(reply).to_bytes(4, "big") + reply
        assert recv_all(tls, 2 * len(expected)) == 2 * expected


def test_several_loops_and_many_clients(certs: TLSCertificates) -> None:
    handler = Recorder()
    with serve(handler, ssl=certs.server_context(), num_loops=2) as server:
        clients = [tls_connect(server, certs) for _ in range(12)]
        try:
            for round_ in range(3):
                for i, tls in enumerate(clients):
                    tls.sendall(b"%d-%d" % (round_, i))
                for i, tls in enumerate(clients):
                    want = b"%d-%d" % (round_, i)
                    assert recv_all(tls, len(want)) == want
        finally:
            for tls in clients:
                tls.close()
        wait_for(lambda: handler.closed == 12)
        loops = {conn.loop for conn in handler.conns}
    assert len(loops) == 2


def test_rejects_a_client_context() -> None:
    with pytest.raises(ValueError, match="client context"):
        Server(Recorder(), address=("127.0.0.1", 0), ssl=ssl.create_default_context())
    with pytest.raises(TypeError):
        Server(Recorder(), address=("127.0.0.1", 0), ssl="cert.pem")  # type: ignore[arg-type]


def test_the_context_is_made_safe(certs: TLSCertificates, tmp_path: Any) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    files = certs.write(tmp_path)
    ctx.load_cert_chain(files.cert, files.key)
    server = Server(Recorder(), address=("127.0.0.1", 0), ssl=ctx)
    try:
        assert ctx.options & ssl.OP_NO_RENEGOTIATION
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        assert server.ssl_context is ctx
    finally:
        server.stop()


# ------------------------------------------------------------------------------ closing


def _strict(certs: TLSCertificates, server: Server) -> ssl.SSLSocket:
    # A client that tells close_notify (recv -> b"") from a bare TCP close (SSLEOFError).
    raw = connect(server)
    return certs.client_context().wrap_socket(
        raw, server_hostname="localhost", suppress_ragged_eofs=False
    )


def test_close_sends_close_notify_after_the_pending_output(certs: TLSCertificates) -> None:
    payload = b"z" * (3 * 1024 * 1024)

    class Goodbye(Handler):
        def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
            conn.send(payload)  # far more than the socket takes at once
            conn.close()
            return None

    with serve(Goodbye(), ssl=certs.server_context()) as server, _strict(certs, server) as tls:
        tls.sendall(b"bye")
        got = recv_all(tls, len(payload))
        assert got == payload
        assert tls.recv(100) == b""  # close_notify, not a truncation (SSLEOFError)


def test_shutdown_write_sends_close_notify_then_reads_on(certs: TLSCertificates) -> None:
    heard: list[bytes] = []

    class HalfClose(Handler):
        def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
            if bytes(data) == b"over":
                conn.send(b"out")
                conn.shutdown_write()
            else:
                heard.append(bytes(data))
            return None

    with serve(HalfClose(), ssl=certs.server_context()) as server, _strict(certs, server) as tls:
        tls.sendall(b"over")
        assert recv_all(tls, 3) == b"out"
        # close_notify before the FIN: the strict client reads an orderly end, not SSLEOFError.
        assert tls.recv(100) == b""
        tls.sendall(b"still heard")  # a half-close: the server goes on reading
        wait_for(lambda: b"".join(heard) == b"still heard")


def test_server_stop_closes_with_close_notify(certs: TLSCertificates) -> None:
    handler = Recorder()
    with serve(handler, ssl=certs.server_context()) as server:
        tls = _strict(certs, server)
        tls.sendall(b"hi")
        assert recv_all(tls, 2) == b"hi"
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        try:
            assert tls.recv(100) == b""
        finally:
            tls.close()
            stopper.join(DEADLINE)
    assert handler.closed == 1


def test_peer_close_notify_closes_the_connection(certs: TLSCertificates) -> None:
    handler = Recorder()
    with serve(handler, ssl=certs.server_context()) as server:
        with tls_connect(server, certs) as tls:
            tls.sendall(b"last")
            assert recv_all(tls, 4) == b"last"
            raw = tls.unwrap()  # our close_notify; the server answers with its own
            raw.close()
        wait_for(lambda: handler.closed == 1)
        assert handler.conns[0].close_reason == "eof"


# ------------------------------------------------------------------------- bad clients


@pytest.mark.parametrize(
    ("send", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", "plaintext HTTP sent to a TLS port"),
        (b"hello\r\n", "not TLS: the peer sent bytes that are not a TLS record"),
        (b"\x16\x03\x01\x00\x05\x01\xff\xff\xff\xff", "TLS"),
        (b"\x16\x03", "the peer closed the connection during the TLS handshake"),
    ],
    ids=["http", "plaintext", "garbage-hello", "cut-hello"],
)
def test_bad_clients_close_alone_with_one_warning(
    certs: TLSCertificates, gev_log: LogLines, send: bytes, reason: str
) -> None:
    handler = Recorder()
    with (
        serve(handler, ssl=certs.server_context()) as server,
        tls_connect(server, certs) as good,
    ):
        good.sendall(b"before")
        assert recv_all(good, 6) == b"before"
        with connect(server) as sock:
            sock.sendall(send)
            sock.shutdown(socket.SHUT_WR)
            drain(sock)
        wait_for(lambda: gev_warnings(gev_log, "closing"))
        # The other connection is untouched.
        good.sendall(b"after")
        assert recv_all(good, 5) == b"after"
    (record,) = gev_warnings(gev_log, "closing")
    assert reason in record.getMessage()
    assert record.exc_info is None
    assert len(handler.connected) == 1  # the bad client never reached the handler


def test_health_check_is_quiet(certs: TLSCertificates, gev_log: LogLines) -> None:
    # A load balancer's TCP check connects and closes without a byte: not a failed handshake,
    # and one WARNING per probe every few seconds would drown the log.
    handler = Recorder()
    with serve(handler, ssl=certs.server_context()) as server:
        for _ in range(3):
            with connect(server) as sock:
                sock.shutdown(socket.SHUT_WR)
                drain(sock)
        with tls_connect(server, certs) as good:  # and the server still serves
            good.sendall(b"ping")
            assert recv_all(good, 4) == b"ping"
        wait_for(lambda: handler.closed == 1)
        stats = server.loops[0].stats
        wait_for(lambda: stats.closed_eof >= 4)
    assert not gev_warnings(gev_log, "closing")
    assert len(handler.connected) == 1  # the probes never reached the handler


def test_on_close_still_sees_what_was_negotiated(certs: TLSCertificates) -> None:
    seen: list[Any] = []

    class Closer(Recorder):
        def on_close(self, conn: Connection) -> None:
            seen.append((conn.tls_version, conn.alpn_protocol, conn.server_name))
            super().on_close(conn)

    handler = Closer()
    with serve(handler, ssl=certs.server_context(alpn=["echo/1"])) as server:
        with tls_connect(server, certs.client_context(alpn=["echo/1"])) as tls:
            tls.sendall(b"x")
            assert recv_all(tls, 1) == b"x"
            version = tls.version()
        wait_for(lambda: handler.closed == 1)
        conn = handler.conns[0]
    assert seen == [(version, "echo/1", "localhost")]
    assert conn.tls_version is None  # the engine is let go of after on_close


def test_truncated_client_hello(certs: TLSCertificates, gev_log: LogLines) -> None:
    client = certs.client_context().wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost"
    )
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    hello = outgoing.read()
    with serve(Recorder(), ssl=certs.server_context()) as server:
        with connect(server) as sock:
            sock.sendall(hello[: len(hello) // 2])
            sock.shutdown(socket.SHUT_WR)
            drain(sock)
        wait_for(lambda: gev_warnings(gev_log, "closing"))
    (record,) = gev_warnings(gev_log, "closing")
    assert "the peer closed the connection during the TLS handshake" in record.getMessage()


def test_handshake_timeout(certs: TLSCertificates, gev_log: LogLines) -> None:
    handler = Recorder()
    with serve(handler, ssl=certs.server_context(), tls_handshake_timeout=0.3) as server:
        client = certs.client_context().wrap_bio(
            ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost"
        )
        with pytest.raises(ssl.SSLWantReadError):
            client.do_handshake()
        hello = outgoing.read()
        with connect(server) as silent, connect(server) as stalled:
            stalled.sendall(hello[:20])  # starts, never finishes
            # Both are closed by the server (no FIN from us: the timeout did it).
            drain(silent)
            drain(stalled)
        # A client that completes its handshake in time is served as usual.
        with tls_connect(server, certs) as tls:
            time.sleep(0.6)  # past the handshake timeout: it no longer applies
            tls.sendall(b"in time")
            assert recv_all(tls, 7) == b"in time"
    records = gev_warnings(gev_log, "TLS handshake not completed within 0.3 s")
    assert len(records) == 2
    assert all(r.exc_info is None for r in records)
    assert len(handler.connected) == 1


def test_handshake_timeout_is_on_by_default(certs: TLSCertificates) -> None:
    server = Server(Recorder(), address=("127.0.0.1", 0), ssl=certs.server_context())
    try:
        assert server.tls_handshake_timeout == 10.0
    finally:
        server.stop()
    with pytest.raises(ValueError):
        Server(Recorder(), address=("127.0.0.1", 0), tls_handshake_timeout=0)


# ----------------------------------------------------------------- backpressure, fan-out


class MemoryClient:
    """A TLS client over a raw non-blocking socket: it encrypts and sends without reading."""

    def __init__(self, certs: TLSCertificates, server: Server) -> None:
        self.sock = connect(server)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = certs.client_context().wrap_bio(
            self.incoming, self.outgoing, server_hostname="localhost"
        )
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                data = self.sock.recv(65536)
                assert data, "closed during the handshake"
                self.incoming.write(data)
        self.sock.sendall(self.outgoing.read())

    def encrypt(self, data: bytes) -> bytes:
        self.tls.write(data)
        return self.outgoing.read()

    def read_plain(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                buf += self.tls.read(65536)
                continue
            except ssl.SSLWantReadError:
                pass
            data = self.sock.recv(65536)
            assert data, f"closed after {len(buf)} of {n} bytes"
            self.incoming.write(data)
        return bytes(buf)


def test_backpressure_on_a_client_that_does_not_read(certs: TLSCertificates) -> None:
    with serve(
        Recorder(),
        protocol=LineProtocol(max_line_length=1 << 20),
        ssl=certs.server_context(),
        high_water=64 * 1024,
        low_water=16 * 1024,
    ) as server:
        client = MemoryClient(certs, server)
        client.sock.setblocking(False)
        line = b"y" * 16383 + b"\n"
        record = client.encrypt(line)
        pending = b""
        sent_lines = 0
        stalled_since = None
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            if not pending:
                pending = record if sent_lines == 0 else client.encrypt(line)
                sent_lines += 1
            try:
                n = client.sock.send(pending)
                pending = pending[n:]
                stalled_since = None
            except BlockingIOError:
                if stalled_since is None:
                    stalled_since = time.monotonic()
                elif time.monotonic() - stalled_since > 0.5:
                    break
                time.sleep(0.01)
        assert stalled_since is not None, "the server kept reading from a client that never reads"
        loop = server.loops[0]
        (conn,) = loop.connections
        assert loop.stats.backpressure_pauses >= 1
        # Bounded: the high-water mark plus what one read's replies add (ciphertext).
        assert conn.write_buffer_length < 64 * 1024 + 2 * 65536 + 4096
        # Reading resumes once the client reads: everything sent comes back, in order.
        client.sock.setblocking(True)
        client.sock.settimeout(DEADLINE)

        def finish() -> None:
            client.sock.sendall(pending)

        sender = threading.Thread(target=finish)
        sender.start()
        got = client.read_plain(sent_lines * len(line))
        sender.join(DEADLINE)
        assert got == line * sent_lines
        client.sock.close()


def test_write_shared_encrypts_per_connection(certs: TLSCertificates) -> None:
    handler = Recorder()
    with serve(handler, ssl=certs.server_context()) as server:
        clients = [tls_connect(server, certs) for _ in range(5)]
        try:
            wait_for(lambda: len(handler.conns) == 5)
            loop = server.loops[0]
            done = threading.Event()
            result: list[Any] = []

            def fan_out() -> None:
                frame = lambda packer: packer(b"to everyone")  # noqa: E731
                result.append(write_shared(handler.conns, frame, 1 << 20))
                done.set()

            loop.call_soon_threadsafe(fan_out)
            assert done.wait(DEADLINE)
            assert result[0][0] == 5
            for tls in clients:
                assert recv_all(tls, 11) == b"to everyone"
                tls.sendall(b"still fine")
                assert recv_all(tls, 10) == b"still fine"
        finally:
            for tls in clients:
                tls.close()


def test_pause_reading_in_on_connect_holds_the_plaintext_of_the_last_flight(
    certs: TLSCertificates,
) -> None:
    # A TLS 1.3 client's first bytes usually arrive in the same read as its Finished message,
    # before on_connect runs. A handler that pauses in on_connect (a proxy waiting for its
    # upstream) must not get them until it resumes, as without TLS, where they wait in the
    # kernel. Several clients: whether the bytes share the read is up to timing.
    class PauseOnConnect(Handler):
        def __init__(self) -> None:
            self.resumed: set[int] = set()
            self.early: list[bytes] = []

        def on_connect(self, conn: Connection) -> None:
            conn.pause_reading()
            conn.loop.call_later(0.05, self.resume, conn)

        def resume(self, conn: Connection) -> None:
            self.resumed.add(id(conn))
            conn.resume_reading()

        def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
            if id(conn) not in self.resumed:
                self.early.append(bytes(data))
            return data

    handler = PauseOnConnect()
    with serve(handler, ssl=certs.server_context()) as server:
        for i in range(10):
            with tls_connect(server, certs) as tls:
                tls.sendall(b"first %d" % i)
                assert recv_all(tls, len(b"first %d" % i)) == b"first %d" % i
    assert handler.early == []
