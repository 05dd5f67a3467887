"""The PROXY protocol on a real gev Server: raw clients over loopback send the headers a proxy
would, and the handler, the connection and the loop's counters say what became of them."""

from __future__ import annotations

import logging
import queue
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gev_core import Handler, Server
from gev_core.testing import serve
from gev_proxy_protocol import ProxyHeader, encode_v1, encode_v2, proxy_header


class Recorder(Handler):
    """Keeps what ``on_connect`` saw; answers each message with the peer and the message."""

    def __init__(self) -> None:
        self.connected: queue.Queue[tuple[str, Any, ProxyHeader | None]] = queue.Queue()
        self.closed: queue.Queue[str | None] = queue.Queue()

    def on_connect(self, conn: Any) -> None:
        self.connected.put((conn.peer_addr, conn.proxy_address, proxy_header(conn)))

    def on_message(self, conn: Any, ctx: Any, data: Any) -> bytes:
        return conn.peer_addr.encode() + b" " + bytes(data)

    def on_close(self, conn: Any) -> None:
        self.closed.put(conn.close_reason)


def _server(handler: Recorder, **options: Any) -> Any:
    return serve(handler, options={"proxy_protocol": True, **options})


def _client(server: Server, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.settimeout(30)
    sock.bind((source, 0))
    sock.connect(server.address)
    return sock


def _reply(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def _closed_by_server(sock: socket.socket, send: bytes) -> None:
    """Send ``send`` and read until the server closes (it may have closed already, or reset)."""
    try:
        sock.sendall(send)
        while sock.recv(100):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass


def _closed_total(server: Server, reason: str) -> int:
    return sum(getattr(loop.stats, "closed_" + reason) for loop in server.loops)


def _wait_for(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.02)


@pytest.fixture
def gev_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger="gev"):
        yield caplog


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    def found() -> bool:
        return any(text in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)

    _wait_for(found, f"WARNING line with {text!r}")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_v1_sets_the_client_and_keeps_the_proxy() -> None:
    handler = Recorder()
    with _server(handler, proxy_protocol_trusted="127.0.0.0/8") as server, _client(server) as c:
        # The header and the client's first bytes in one segment, as HAProxy often sends them.
        c.sendall(encode_v1(("203.0.113.7", 4321), ("198.51.100.2", 443)) + b"hello")
        assert _reply(c, len(b"203.0.113.7:4321 hello")) == b"203.0.113.7:4321 hello"
        peer, proxy, header = handler.connected.get(timeout=10)
        assert peer == "203.0.113.7:4321", "on_connect already sees the client"
        assert proxy == c.getsockname()
        assert header is not None and header.version == 1
        assert header.destination == ("198.51.100.2", 443)
        c.sendall(b"again")
        assert _reply(c, len(b"203.0.113.7:4321 again")) == b"203.0.113.7:4321 again"


def test_v2_tlvs_readable_and_a_header_that_trickles_in() -> None:
    handler = Recorder()
    wire = encode_v2(
        ("2001:db8::5", 50000),
        ("2001:db8::1", 443),
        tlvs=[(0x01, b"h2"), (0x02, b"app.example"), (0x05, b"id-42"), (0xE0, b"tenant-7")],
        with_crc32c=True,
    )
    with _server(handler, proxy_protocol_trusted=["127.0.0.1"]) as server, _client(server) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(wire), 7):  # a slow proxy: the header in many small segments
            c.sendall(wire[i : i + 7])
            time.sleep(0.002)
        c.sendall(b"hi")
        assert _reply(c, len(b"[2001:db8::5]:50000 hi")) == b"[2001:db8::5]:50000 hi"
        peer, proxy, header = handler.connected.get(timeout=10)
        assert peer == "[2001:db8::5]:50000" and proxy == c.getsockname()
        assert header is not None and header.version == 2 and header.crc32c is not None
        assert header.alpn == b"h2" and header.authority == "app.example"
        assert header.unique_id == b"id-42" and header.tlv(0xE0) == b"tenant-7"


def test_a_local_header_keeps_the_real_endpoints() -> None:
    handler = Recorder()
    with _server(handler) as server, _client(server) as c:
        c.sendall(encode_v2(local=True) + b"check")
        me = "{}:{}".format(*c.getsockname())
        assert _reply(c, len(me) + 6) == f"{me} check".encode()
        peer, proxy, header = handler.connected.get(timeout=10)
        assert peer == me and proxy is None
        assert header is not None and header.command == "LOCAL"


@pytest.mark.parametrize(
    ("options", "send", "logged"),
    [
        pytest.param(
            {"proxy_protocol_trusted": "10.0.0.0/8"},
            encode_v1(("203.0.113.7", 1), ("198.51.100.2", 2)),
            "is not in the trusted proxy networks",
            id="untrusted-source",
        ),
        pytest.param({}, b"GET / HTTP/1.1\r\n\r\n", "not a PROXY protocol header", id="missing"),
        pytest.param(
            {}, b"PROXY TCP4 203.0.113.7 1.2.3.4\r\n", "must be 'PROXY TCP4", id="malformed-v1"
        ),
        pytest.param(
            {"proxy_protocol_max_size": 256},
            encode_v2(("203.0.113.7", 1), ("198.51.100.2", 2), tlvs=[(0xE0, b"x" * 300)]),
            "more than the maximum of 256",
            id="oversized-v2",
        ),
        pytest.param({}, b"PROXY TCP4 " + b"1" * 200, "no CRLF within 107 bytes", id="endless-v1"),
        pytest.param(
            {"proxy_protocol_version": "2"},
            encode_v1(("203.0.113.7", 1), ("198.51.100.2", 2)),
            "expected the v2 signature",
            id="version-not-accepted",
        ),
    ],
)
def test_a_bad_or_missing_header_closes_that_connection_with_a_logged_reason(
    gev_warnings: pytest.LogCaptureFixture, options: dict[str, Any], send: bytes, logged: str
) -> None:
    handler = Recorder()
    with _server(handler, **options) as server:
        with _client(server) as bad:
            _closed_by_server(bad, send)
        _logged(gev_warnings, logged)
        _wait_for(lambda: _closed_total(server, "protocol_error") == 1, "protocol_error close")
        assert handler.connected.empty(), "the application never heard of it"
        # The listener goes on serving proxied clients.
        if "proxy_protocol_trusted" not in options:
            with _client(server) as good:
                good.sendall(encode_v2(("192.0.2.1", 7), ("192.0.2.2", 8)) + b"ok")
                assert _reply(good, len(b"192.0.2.1:7 ok")) == b"192.0.2.1:7 ok"


def test_a_header_that_does_not_arrive_in_time(gev_warnings: pytest.LogCaptureFixture) -> None:
    handler = Recorder()
    with _server(handler, proxy_protocol_timeout=0.3) as server, _client(server) as c:
        _closed_by_server(c, b"PROXY TCP4 ")  # and nothing more
        _logged(gev_warnings, "no complete proxy-protocol preamble within")
        _wait_for(lambda: _closed_total(server, "idle") == 1, "idle close")
        assert handler.connected.empty()


def test_optional_policy_serves_untrusted_peers_directly() -> None:
    handler = Recorder()
    with _server(
        handler, proxy_protocol_policy="optional", proxy_protocol_trusted="127.0.0.2"
    ) as server:
        with _client(server, "127.0.0.3") as direct:
            lookalike = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"  # never taken for a header
            direct.sendall(lookalike)
            me = f"127.0.0.3:{direct.getsockname()[1]}"
            assert _reply(direct, len(me) + 1 + len(lookalike)) == f"{me} ".encode() + lookalike
        with _client(server, "127.0.0.2") as proxied:
            proxied.sendall(encode_v1(("203.0.113.9", 9), ("198.51.100.2", 2)) + b"x")
            assert _reply(proxied, len(b"203.0.113.9:9 x")) == b"203.0.113.9:9 x"
        seen = {handler.connected.get(timeout=10)[0] for _ in range(2)}
        assert seen == {me, "203.0.113.9:9"}
