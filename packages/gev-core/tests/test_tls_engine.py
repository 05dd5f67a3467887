"""The sans-IO TLS engine, exhaustively and without sockets.

A server engine is paired in memory with a client -- another engine, or a bare
``ssl.SSLObject`` of the standard library so that the engine is not only tested against itself
(h11's ConnectionPair idea) -- and bytes are moved between them in chunks the test chooses,
hypothesis included.
"""

from __future__ import annotations

import itertools
import logging
import ssl
from collections.abc import Callable
from typing import Any

import pytest

trustme = pytest.importorskip("trustme")

from gev_core import ProtocolError, TLSError, client_context, server_context  # noqa: E402
from gev_core._tls import (  # noqa: E402
    DEFAULT_MAX_BUFFER,
    TLSEngine,
    describe_ssl_error,
    prepare_context,
    set_sni,
)
from gev_core.testing import TLSCertificates, tls_certificates  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

Chunker = Callable[[bytes], list[bytes]]


def whole(data: bytes) -> list[bytes]:
    return [data] if data else []


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


class StdlibClient:
    """The standard library's SSLObject with the engine's driving surface, as a reference peer."""

    def __init__(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        self.handshake_done = False
        self.peer_closed = False
        self._backlog: list[bytes] = []

    def start(self) -> bytes:
        self._step()
        return self.outgoing.read()

    def _step(self) -> None:
        if not self.handshake_done:
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                return
            self.handshake_done = True
            for data in self._backlog:
                self.obj.write(data)
            self._backlog.clear()

    def feed(self, data: bytes) -> bytes:
        self.incoming.write(data)
        self._step()
        if not self.handshake_done:
            return b""
        out = bytearray()
        while True:
            try:
                chunk = self.obj.read(65536)
            except ssl.SSLWantReadError:
                break
            if not chunk:
                self.peer_closed = True
                break
            out += chunk
        return bytes(out)

    def encrypt(self, data: bytes) -> bytes:
        if not self.handshake_done:
            self._backlog.append(data)
            return b""
        self.obj.write(data)
        return self.outgoing.read()

    @property
    def want_write(self) -> bool:
        return self.outgoing.pending > 0

    def take_output(self) -> bytes:
        return self.outgoing.read()

    def close(self) -> bytes:
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        return self.outgoing.read()


class Pair:
    """A server engine and a client, with the wire between them in each direction."""

    def __init__(
        self,
        server_ctx: ssl.SSLContext,
        client_ctx: ssl.SSLContext,
        *,
        hostname: str | None = "localhost",
        stdlib_client: bool = False,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        self.server = TLSEngine(server_ctx, server_side=True, max_buffer=max_buffer)
        self.client: Any = (
            StdlibClient(client_ctx, hostname)
            if stdlib_client
            else TLSEngine(client_ctx, server_side=False, server_hostname=hostname)
        )
        self.to_server = bytearray(self.client.start())
        self.to_client = bytearray()
        self.server_got = bytearray()
        self.client_got = bytearray()
        self.max_buffer = max_buffer

    def send_to_server(self, data: bytes) -> None:
        self.to_server += self.client.encrypt(data)

    def send_to_client(self, data: bytes) -> None:
        self.to_client += self.server.encrypt(data)

    def pump(self, chunker: Chunker = whole, rounds: int = 1000) -> None:
        """Move bytes until neither side has anything to say."""
        for _ in range(rounds):
            if not self.to_server and not self.to_client:
                return
            wire, self.to_server = bytes(self.to_server), bytearray()
            for chunk in chunker(wire):
                self.server_got += self.server.feed(chunk)
                assert self.server.buffered <= self.max_buffer
                if self.server.want_write:
                    self.to_client += self.server.take_output()
            wire, self.to_client = bytes(self.to_client), bytearray()
            for chunk in chunker(wire):
                self.client_got += self.client.feed(chunk)
                if self.client.want_write:
                    self.to_server += self.client.take_output()
        raise AssertionError("the pair kept talking")

    def handshake(self, chunker: Chunker = whole) -> None:
        self.pump(chunker)
        assert self.server.handshake_done and self.client.handshake_done


@pytest.fixture(scope="module")
def certs() -> TLSCertificates:
    return tls_certificates()


@pytest.fixture(scope="module")
def server_ctx(certs: TLSCertificates) -> ssl.SSLContext:
    return certs.server_context(alpn=["h2", "http/1.1"])


@pytest.fixture(scope="module")
def client_ctx(certs: TLSCertificates) -> ssl.SSLContext:
    return certs.client_context(alpn=["http/1.1"])


def tls12_client(certs: TLSCertificates) -> ssl.SSLContext:
    ctx = certs.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


# ------------------------------------------------------------------------------ handshake


@pytest.mark.parametrize("stdlib_client", [False, True], ids=["engine-client", "stdlib-client"])
@pytest.mark.parametrize("chunker", [whole, bytewise], ids=["whole", "bytewise"])
def test_handshake_tls13_reports_what_was_negotiated(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    stdlib_client: bool,
    chunker: Chunker,
) -> None:
    pair = Pair(server_ctx, client_ctx, stdlib_client=stdlib_client)
    assert not pair.server.handshake_done
    assert pair.server.version is None and pair.server.cipher is None
    assert pair.server.alpn_protocol is None and pair.server.peer_certificate is None
    pair.handshake(chunker)
    server = pair.server
    assert server.version == "TLSv1.3"
    assert server.cipher is not None and server.cipher[1] == "TLSv1.3"
    assert server.alpn_protocol == "http/1.1"
    assert server.server_name == "localhost"
    assert server.peer_certificate is None  # no client certificate asked for
    assert not server.session_reused
    assert "TLSv1.3" in repr(server) and "server" in repr(server)
    if not stdlib_client:
        client = pair.client
        assert client.server_name == "localhost"
        cert = client.peer_certificate
        assert ("DNS", "localhost") in cert["subjectAltName"]
        assert client.peer_certificate_der is not None


def test_handshake_tls12(certs: TLSCertificates, server_ctx: ssl.SSLContext) -> None:
    pair = Pair(server_ctx, tls12_client(certs))
    pair.handshake(bytewise)
    assert pair.server.version == pair.client.version == "TLSv1.2"
    pair.send_to_server(b"ping")
    pair.pump()
    assert pair.server_got == b"ping"


def test_tls13_only_server_refuses_a_tls12_client(certs: TLSCertificates) -> None:
    pair = Pair(certs.server_context(minimum_version="TLSv1.3"), tls12_client(certs))
    with pytest.raises(TLSError) as info:
        pair.pump()
    assert info.value.ssl_reason == "UNSUPPORTED_PROTOCOL"
    assert "TLS versions" in str(info.value)
    # The alert for the client is queued: a connection sends it before closing.
    alert = pair.server.take_output()
    with pytest.raises(TLSError, match="refused the TLS version"):
        pair.client.feed(alert)


def test_client_certificate_required_and_presented(certs: TLSCertificates) -> None:
    ctx = certs.server_context(verify_client="required")
    pair = Pair(ctx, certs.client_context(client_cert=True))
    pair.handshake()
    pair.send_to_server(b"hello")  # TLS 1.3: the server verifies the client's Finished here
    pair.pump()
    assert pair.server_got == b"hello"
    subject = dict(item[0] for item in pair.server.peer_certificate["subject"])
    assert subject["commonName"] == "gev test client"


@pytest.mark.parametrize("tls12", [False, True], ids=["tls13", "tls12"])
def test_client_certificate_required_but_missing(certs: TLSCertificates, tls12: bool) -> None:
    ctx = certs.server_context(verify_client="required")
    pair = Pair(ctx, tls12_client(certs) if tls12 else certs.client_context())
    with pytest.raises(TLSError) as info:
        pair.pump()
        pair.send_to_server(b"x")
        pair.pump()
    assert info.value.ssl_reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    assert "client certificate required" in str(info.value)


def test_unknown_ca_both_sides(server_ctx: ssl.SSLContext) -> None:
    stranger = trustme.CA()
    ctx = ssl.create_default_context()
    stranger.configure_trust(ctx)
    pair = Pair(server_ctx, ctx)
    with pytest.raises(TLSError) as client_side:
        pair.pump()
    assert client_side.value.ssl_reason == "CERTIFICATE_VERIFY_FAILED"
    assert "did not verify: unable to get local issuer certificate" in str(client_side.value)
    with pytest.raises(TLSError) as server_side:
        pair.server.feed(pair.client.take_output())
    assert server_side.value.ssl_reason == "TLSV1_ALERT_UNKNOWN_CA"
    assert str(server_side.value) == "the peer does not trust our certificate (unknown CA)"


def test_hostname_mismatch(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    pair = Pair(server_ctx, client_ctx, hostname="elsewhere.example")
    with pytest.raises(TLSError, match="Hostname mismatch"):
        pair.pump()


def test_alpn_without_overlap_negotiates_nothing(
    server_ctx: ssl.SSLContext, certs: TLSCertificates
) -> None:
    pair = Pair(server_ctx, certs.client_context(alpn=["spdy/1"]))
    pair.handshake()
    assert pair.server.alpn_protocol is None


def test_session_resumption(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    first = Pair(server_ctx, client_ctx)
    first.handshake()
    first.send_to_client(b"tickets arrive with data")  # TLS 1.3 tickets follow the handshake
    first.pump()
    session = first.client.session
    assert session is not None
    second_client = TLSEngine(
        client_ctx, server_side=False, server_hostname="localhost", session=session
    )
    pair = Pair(server_ctx, client_ctx)
    pair.client = second_client
    pair.to_server = bytearray(second_client.start())
    pair.handshake()
    assert pair.server.session_reused and second_client.session_reused


# --------------------------------------------------------------------------------- data


@pytest.mark.parametrize("size", [1, 64, 4096, 16384, 16385, 100_000, 1 << 20])
def test_data_both_ways(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, size: int) -> None:
    pair = Pair(server_ctx, client_ctx)
    pair.handshake()
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    pair.send_to_server(payload)
    pair.send_to_client(payload[::-1])
    pair.pump()
    assert pair.server_got == payload
    assert pair.client_got == payload[::-1]


def test_one_record_is_one_read(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    pair = Pair(server_ctx, client_ctx)
    pair.handshake()
    record = pair.client.encrypt(b"x" * 64)
    assert len(record) == 64 + 22  # 5 header + 1 content type + 16 tag (TLS 1.3, AES-GCM)
    assert pair.server.feed(record) == b"x" * 64
    assert not pair.server.want_write
    # Two records in one read, and a record split in two reads.
    two = pair.client.encrypt(b"a") + pair.client.encrypt(b"b")
    assert pair.server.feed(two) == b"ab"
    rec = pair.client.encrypt(b"split")
    assert pair.server.feed(rec[:7]) == b""
    assert pair.server.buffered <= 7  # OpenSSL may hold the partial record itself
    assert pair.server.feed(rec[7:]) == b"split"
    assert pair.server.buffered == 0


@pytest.mark.parametrize("stdlib_client", [False, True], ids=["engine-client", "stdlib-client"])
def test_writes_before_the_handshake_are_sent_after_it_in_order(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, stdlib_client: bool
) -> None:
    pair = Pair(server_ctx, client_ctx, stdlib_client=stdlib_client)
    assert pair.server.encrypt(b"greeting ") == b""
    assert pair.server.encrypt(bytearray(b"from ")) == b""
    assert pair.server.encrypt(memoryview(b"the server")) == b""
    assert pair.server.buffered == len(b"greeting from the server")
    pair.send_to_server(b"client speaks first")
    pair.handshake()
    pair.pump()
    assert pair.client_got == b"greeting from the server"
    assert pair.server_got == b"client speaks first"
    assert pair.server.buffered == 0


def test_early_writes_are_bounded(server_ctx: ssl.SSLContext) -> None:
    engine = TLSEngine(server_ctx, server_side=True, max_buffer=20_000)
    engine.encrypt(b"x" * 19_000)
    with pytest.raises(TLSError, match="before the TLS handshake completed exceed max_buffer"):
        engine.encrypt(b"x" * 2_000)
    assert engine.closed
    with pytest.raises(TLSError, match="closed"):
        engine.encrypt(b"more")


def test_max_buffer_must_hold_a_record(server_ctx: ssl.SSLContext) -> None:
    with pytest.raises(ValueError, match="one TLS record"):
        TLSEngine(server_ctx, server_side=True, max_buffer=1000)
    with pytest.raises(ValueError, match="client side only"):
        TLSEngine(server_ctx, server_side=True, server_hostname="x")


# ------------------------------------------------------------------------------ closing


@pytest.mark.parametrize("stdlib_client", [False, True], ids=["engine-client", "stdlib-client"])
def test_server_close_sends_close_notify_after_pending_output(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, stdlib_client: bool
) -> None:
    pair = Pair(server_ctx, client_ctx, stdlib_client=stdlib_client)
    pair.handshake()
    wire = pair.server.encrypt(b"last words") + pair.server.close()
    assert pair.server.closed and not pair.server.peer_closed
    assert pair.server.close() == b""  # idempotent
    assert pair.client.feed(wire) == b"last words"
    assert pair.client.peer_closed
    # Data after close_notify means nothing; the peer's own close_notify is accepted quietly.
    assert pair.server.feed(pair.client.close()) == b""


@pytest.mark.parametrize("stdlib_client", [False, True], ids=["engine-client", "stdlib-client"])
def test_shutdown_is_a_half_close(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, stdlib_client: bool
) -> None:
    pair = Pair(server_ctx, client_ctx, stdlib_client=stdlib_client)
    pair.handshake()
    wire = pair.server.encrypt(b"last words") + pair.server.shutdown()
    assert pair.server.write_shut and not pair.server.closed
    assert pair.server.shutdown() == b""  # idempotent
    with pytest.raises(TLSError, match="shut for writing"):
        pair.server.encrypt(b"more")
    assert pair.client.feed(wire) == b"last words"
    assert pair.client.peer_closed
    # The peer may go on sending after our close_notify: it still decrypts.
    assert pair.server.feed(pair.client.encrypt(b"still here")) == b"still here"
    assert pair.server.feed(pair.client.close()) == b""
    assert pair.server.peer_closed
    assert pair.server.close() == b""  # the close_notify went with shutdown


def test_shutdown_before_the_handshake_sends_nothing(server_ctx: ssl.SSLContext) -> None:
    engine = TLSEngine(server_ctx, server_side=True)
    assert engine.shutdown() == b""
    assert not engine.write_shut


def test_peer_close_notify_with_data_in_the_same_read(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    pair = Pair(server_ctx, client_ctx)
    pair.handshake()
    wire = pair.client.encrypt(b"bye") + pair.client.close()
    assert pair.server.feed(wire) == b"bye"
    assert pair.server.peer_closed and not pair.server.closed
    assert pair.server.feed(b"ignored") == b""
    assert pair.server.close()  # our close_notify, in reply
    pair.server.feed_eof()  # quiet: the peer said goodbye


def test_close_before_the_handshake_sends_nothing(server_ctx: ssl.SSLContext) -> None:
    engine = TLSEngine(server_ctx, server_side=True)
    engine.encrypt(b"never sent")
    assert engine.close() == b""
    assert engine.closed
    assert engine.feed(b"\x16\x03\x01") == b""


def test_eof_on_a_record_boundary_after_the_handshake_is_quiet(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    pair = Pair(server_ctx, client_ctx)
    pair.handshake()
    pair.server.feed(pair.client.encrypt(b"data"))
    pair.server.feed_eof()  # most clients close TCP without close_notify
    assert not pair.server.closed


def test_eof_in_the_middle_of_a_record_drops_only_that_record(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    pair = Pair(server_ctx, client_ctx)
    pair.handshake()
    whole_record = pair.client.encrypt(b"complete")
    record = pair.client.encrypt(b"cut short")
    assert pair.server.feed(whole_record + record[:10]) == b"complete"
    pair.server.feed_eof()  # a ragged EOF, as Python's ssl sockets treat it
    assert pair.server.feed(record[10:]) == b""


def test_eof_before_any_byte_is_quiet(server_ctx: ssl.SSLContext) -> None:
    # A TCP health check: connect, close. Nothing was started, so nothing was cut short.
    server = TLSEngine(server_ctx, server_side=True)
    assert server.feed(b"") == b""
    server.feed_eof()
    assert server.closed and server.peer_closed and not server.heard
    assert server.close() == b""


@pytest.mark.parametrize("cut", [1, 5, 100, -1])
def test_truncated_handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, cut: int
) -> None:
    client = TLSEngine(client_ctx, server_side=False, server_hostname="localhost")
    hello = client.start()
    server = TLSEngine(server_ctx, server_side=True)
    assert server.feed(hello[:cut]) == b""
    with pytest.raises(TLSError, match="during the TLS handshake") as info:
        server.feed_eof()
    assert isinstance(info.value, ProtocolError)  # the reactor closes with a logged reason


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("data", "reason", "words"),
    [
        (b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", "HTTP_REQUEST", "plaintext HTTP"),
        (b"POST /x HTTP/1.1\r\n\r\n", "HTTP_REQUEST", "plaintext HTTP"),
        (b"CONNECT example:443 HTTP/1.1\r\n\r\n", "HTTPS_PROXY_REQUEST", "proxy request"),
        (b"hello server\n", "WRONG_VERSION_NUMBER", "not TLS"),
        (b"\x00" * 64, "WRONG_VERSION_NUMBER", "not TLS"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "WRONG_VERSION_NUMBER", "not TLS"),
    ],
)
def test_not_tls_is_named(server_ctx: ssl.SSLContext, data: bytes, reason: str, words: str) -> None:
    engine = TLSEngine(server_ctx, server_side=True)
    with pytest.raises(TLSError, match=words) as info:
        engine.feed(data)
    assert info.value.ssl_reason == reason
    assert engine.closed
    assert engine.feed(b"more") == b""  # a failed engine takes nothing more


def test_garbage_handshake_record(server_ctx: ssl.SSLContext) -> None:
    engine = TLSEngine(server_ctx, server_side=True)
    # A handshake record whose ClientHello is nonsense.
    body = b"\x01\x00\x00\x10" + b"\xff" * 16
    with pytest.raises(TLSError) as info:
        engine.feed(b"\x16\x03\x01" + len(body).to_bytes(2, "big") + body)
    assert info.value.ssl_reason is not None
    assert "TLS" in str(info.value) or "malformed" in str(info.value)


def test_oversized_record_is_refused(server_ctx: ssl.SSLContext) -> None:
    engine = TLSEngine(server_ctx, server_side=True)
    with pytest.raises(TLSError, match=r"malformed TLS record|too long|not TLS"):
        engine.feed(b"\x16\x03\x01\xff\xff" + b"\x00" * 100)


def test_corrupted_record_after_the_handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    pair = Pair(server_ctx, client_ctx)
    pair.handshake()
    record = bytearray(pair.client.encrypt(b"tampered with"))
    record[10] ^= 0x40
    with pytest.raises(TLSError, match=r"corrupted TLS record|bad MAC|decrypt") as info:
        pair.server.feed(bytes(record))
    assert info.value.ssl_reason in {"DECRYPTION_FAILED_OR_BAD_RECORD_MAC", "BAD_RECORD_MAC"}


def test_describe_unknown_reasons() -> None:
    exc = ssl.SSLError(1, "[SSL: SOMETHING_NEW] something new")
    exc.reason = "SOMETHING_NEW"  # type: ignore[misc]
    assert describe_ssl_error(exc) == "TLS error: something new"
    alert = ssl.SSLError(1, "x")
    alert.reason = "TLSV1_ALERT_SOME_FUTURE_ALERT"  # type: ignore[misc]
    assert describe_ssl_error(alert) == "the peer sent a fatal alert: some_future_alert"
    assert "truncated" in describe_ssl_error(ssl.SSLEOFError(8, "EOF"))
    assert describe_ssl_error(ValueError("odd")) == "TLS error: odd"


# ------------------------------------------------------------------------------------ SNI


@pytest.fixture(scope="module")
def sni_setup(certs: TLSCertificates) -> tuple[ssl.SSLContext, dict[str, ssl.SSLContext]]:
    def ctx_for(*names: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certs.ca.issue_cert(*names).configure_cert(ctx)
        return ctx

    table = {
        "a.test": ctx_for("a.test"),
        "B.test": ctx_for("b.test"),
        "*.w.test": ctx_for("*.w.test"),
    }
    default = certs.server_context()
    return default, table


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.test", "a.test"),
        ("b.test", "b.test"),
        ("x.w.test", "*.w.test"),
        ("localhost", "localhost"),
    ],
)
def test_sni_mapping_chooses_the_certificate(
    certs: TLSCertificates,
    sni_setup: tuple[ssl.SSLContext, dict[str, ssl.SSLContext]],
    name: str,
    expected: str,
) -> None:
    _, table = sni_setup
    ctx = certs.server_context()
    set_sni(ctx, table)
    pair = Pair(ctx, certs.client_context(), hostname=name)
    pair.handshake()
    assert pair.server.server_name == name
    assert ("DNS", expected) in pair.client.peer_certificate["subjectAltName"]


def test_sni_through_server_context(
    certs: TLSCertificates, sni_setup: tuple[ssl.SSLContext, dict[str, ssl.SSLContext]]
) -> None:
    _, table = sni_setup
    files = certs.write(certs._files_or_temp().ca.rsplit("/", 1)[0])
    ctx = server_context(files.cert, files.key, sni=table)
    pair = Pair(ctx, certs.client_context(), hostname="a.test")
    pair.handshake()
    assert ("DNS", "a.test") in pair.client.peer_certificate["subjectAltName"]


def test_sni_callback_and_no_name(
    certs: TLSCertificates, sni_setup: tuple[ssl.SSLContext, dict[str, ssl.SSLContext]]
) -> None:
    _, table = sni_setup
    seen: list[str | None] = []

    def select(name: str | None) -> ssl.SSLContext | None:
        seen.append(name)
        return table["B.test"] if name == "b.test" else None

    ctx = certs.server_context()
    set_sni(ctx, select)
    pair = Pair(ctx, certs.client_context(), hostname="b.test")
    pair.handshake()
    assert ("DNS", "b.test") in pair.client.peer_certificate["subjectAltName"]
    # A client that sends no name (connects by address, no hostname check).
    client = certs.client_context()
    client.check_hostname = False
    pair = Pair(ctx, client, hostname=None)
    pair.handshake()
    assert pair.server.server_name is None
    assert seen == ["b.test", None]


def test_sni_selector_failure_fails_that_handshake_only(
    certs: TLSCertificates, caplog: pytest.LogCaptureFixture
) -> None:
    def select(name: str | None) -> ssl.SSLContext | None:
        raise RuntimeError("selector bug")

    ctx = certs.server_context()
    set_sni(ctx, select)
    pair = Pair(ctx, certs.client_context())
    with caplog.at_level(logging.ERROR, logger="gev"), pytest.raises(TLSError):
        pair.pump()
    assert "selector bug" in caplog.text
    ctx2 = certs.server_context()
    set_sni(ctx2, lambda name: "not a context")  # type: ignore[arg-type,return-value]
    with caplog.at_level(logging.ERROR, logger="gev"), pytest.raises(TLSError):
        Pair(ctx2, certs.client_context()).pump()
    assert "not an SSLContext" in caplog.text
    with pytest.raises(TypeError):
        set_sni(ctx2, 42)  # type: ignore[arg-type]


def test_prepare_context_hardens_a_foreign_context(certs: TLSCertificates) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    assert prepare_context(ctx) is ctx
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.sni_callback is not None
    own = ctx.sni_callback
    prepare_context(ctx)
    assert ctx.sni_callback is own  # an SNI callback already there is kept


def test_outbound_client_engine_with_client_context(
    certs: TLSCertificates, server_ctx: ssl.SSLContext
) -> None:
    files = certs._files_or_temp()
    pair = Pair(server_ctx, client_context(files.ca, alpn=["h2"]))
    pair.handshake()
    assert pair.client.alpn_protocol == "h2"
    assert pair.client.server_side is False


# ------------------------------------------------------------------------------ hypothesis


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    messages=st.lists(
        st.tuples(st.booleans(), st.binary(min_size=0, max_size=40_000)), min_size=0, max_size=8
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=12),
    early=st.binary(max_size=3000),
    tls12=st.booleans(),
    stdlib_client=st.booleans(),
    close_first=st.sampled_from(["server", "client"]),
)
def test_random_chunking_delivers_every_byte_in_order(
    certs: TLSCertificates,
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    messages: list[tuple[bool, bytes]],
    cuts: list[int],
    early: bytes,
    tls12: bool,
    stdlib_client: bool,
    close_first: str,
) -> None:
    pair = Pair(
        server_ctx,
        tls12_client(certs) if tls12 else client_ctx,
        stdlib_client=stdlib_client,
        max_buffer=64 * 1024,
    )

    def chunker(data: bytes) -> list[bytes]:
        return _split(data, cuts)

    want_server = bytearray(early)
    want_client = bytearray(early[::-1])
    pair.send_to_server(early)
    if early:
        pair.server.encrypt(early[::-1])  # early server writes: kept until the handshake
        pair.to_client += b""
    pair.handshake(chunker)
    pair.to_client += pair.server.take_output()
    for to_server, data in messages:
        if to_server:
            pair.send_to_server(data)
            want_server += data
        else:
            pair.send_to_client(data)
            want_client += data
    pair.pump(chunker)
    assert pair.server_got == want_server
    assert pair.client_got == want_client
    if close_first == "server":
        pair.to_client += pair.server.close()
        pair.pump(chunker)
        assert pair.client.peer_closed
    else:
        pair.to_server += pair.client.close()
        pair.pump(chunker)
        assert pair.server.peer_closed
