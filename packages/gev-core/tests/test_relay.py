"""``Connection.relay``: two connections joined by the core, over real sockets on loopback.

A gev server whose handler opens an upstream connection per client (``EventLoop.connect``)
and joins the two, in front of the threaded echo upstream of ``gev_core.testing``: bytes both
ways intact (plaintext and TLS on the client side), input a protocol kept before the join
passed on first, backpressure each way (a slow upstream stops the client from being read, a
client that does not read stops the upstream), a close on either side closing the other, and
the misuses refused.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gev_core import ConnectionClosed, Handler, LineProtocol
from gev_core.testing import echo_upstream, recv_exactly, serve

DEADLINE = 20.0
HIGH = 64 * 1024


def wait_for(cond: Any, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


class Upstream(Handler):
    """The upstream side's handler: relayed, so only its on_close should ever run."""

    def __init__(self, front: Front) -> None:
        self.front = front

    def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
        self.front.messages.append(bytes(data))
        return None

    def on_close(self, conn: Any) -> None:
        self.front.closed.append("upstream")


class Front(Handler):
    """Pauses each client, connects it to ``address`` and relays the two."""

    def __init__(self, address: Any) -> None:
        self.address = address
        self.messages: list[bytes] = []
        self.closed: list[str] = []
        self.pairs: list[tuple[Any, Any]] = []
        self.errors: list[BaseException] = []

    def on_connect(self, conn: Any) -> None:
        conn.pause_reading()
        conn.loop.connect(
            self.address, Upstream(self), callback=lambda up, exc: self.ready(conn, up, exc)
        )

    def ready(self, conn: Any, up: Any, exc: BaseException | None) -> None:
        if up is None:
            self.errors.append(exc)  # type: ignore[arg-type]
            conn.close()
            return
        conn.relay(up)
        self.pairs.append((conn, up))
        conn.resume_reading()

    def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
        self.messages.append(bytes(data))
        return None

    def on_close(self, conn: Any) -> None:
        self.closed.append("client")

    def pause_writing(self, conn: Any) -> None:  # replaced by the relay's
        self.messages.append(b"pause_writing called")


@pytest.fixture
def upstream() -> Iterator[Any]:
    with echo_upstream() as up:
        yield up


def _round_trip(sock: socket.socket, total: int) -> None:
    """Send ``total`` random bytes from a thread while reading them back; compare digests."""
    payload = os.urandom(total)
    sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
    sender.start()
    got = recv_exactly(sock, total)
    sender.join(DEADLINE)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()


def test_bytes_pass_both_ways_intact_and_no_handler_sees_them(upstream: Any) -> None:
    front = Front(upstream.address)
    with serve(front) as server, socket.create_connection(server.address[:2]) as s:
        s.settimeout(DEADLINE)
        s.sendall(b"hello")
        assert recv_exactly(s, 5) == b"hello"
        _round_trip(s, 8 * 1024 * 1024)
        assert front.messages == []


def test_tls_clients_are_relayed_as_plaintext(upstream: Any) -> None:
    pytest.importorskip("trustme")
    from gev_core.testing import tls_certificates, tls_connect

    certs = tls_certificates()
    front = Front(upstream.address)
    with serve(front, ssl=certs.server_context()) as server:
        with tls_connect(server, certs) as s:
            s.settimeout(DEADLINE)
            s.sendall(b"secret")
            assert recv_exactly(s, 6) == b"secret"
            # Not _round_trip: an SSLSocket must not be written and read by two threads at once
            # (one OpenSSL object), so chunks that fit the buffers go back and forth in turn.
            payload = os.urandom(1024 * 1024)
            for i in range(0, len(payload), 65536):
                s.sendall(payload[i : i + 65536])
                assert recv_exactly(s, 65536) == payload[i : i + 65536]
        wait_for(lambda: upstream.open == 0)
        assert upstream.received == 6 + 1024 * 1024  # plaintext upstream
        assert front.messages == []


def test_input_a_protocol_kept_is_relayed_first(upstream: Any) -> None:
    # A line-based handshake ("GO\n") followed at once, in the same read, by a partial line:
    # the protocol keeps the tail; relay() passes it on before anything read later.
    class Handshake(Front):
        def on_connect(self, conn: Any) -> None:
            pass

        def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
            assert bytes(data) == b"GO"
            conn.pause_reading()
            conn.loop.connect(
                self.address, Upstream(self), callback=lambda up, exc: self.ready(conn, up, exc)
            )
            return None

    front = Handshake(upstream.address)
    with (
        serve(front, protocol=LineProtocol()) as server,
        socket.create_connection(server.address[:2]) as s,
    ):
        s.settimeout(DEADLINE)
        s.sendall(b"GO\nno newline here")
        wait_for(lambda: front.pairs)
        s.sendall(b", then more\n")
        want = b"no newline here, then more\n"
        assert recv_exactly(s, len(want)) == want


def _send_until_stalled(sock: socket.socket, limit: int = 256 * 1024 * 1024) -> int:
    sock.setblocking(False)
    chunk = b"x" * 65536
    sent = 0
    idle_since = time.monotonic()
    while sent < limit:
        try:
            sent += sock.send(chunk)
            idle_since = time.monotonic()
        except BlockingIOError:
            if time.monotonic() - idle_since > 1.0:
                break
            time.sleep(0.01)
    sock.setblocking(True)
    return sent


def test_a_slow_upstream_stops_reading_the_client() -> None:
    with echo_upstream(read_paused=True) as upstream:
        front = Front(upstream.address)
        with (
            serve(front, high_water=HIGH, low_water=HIGH // 4) as server,
            socket.create_connection(server.address[:2]) as s,
        ):
            wait_for(lambda: front.pairs)
            client, up = front.pairs[0]
            sent = _send_until_stalled(s)
            assert sent < 256 * 1024 * 1024, "nothing pushed back"
            # The proxy holds at most about one high water mark (plus one read) for it.
            assert up.write_buffer_length <= HIGH + 64 * 1024
            assert client.reading_paused is False  # the relay's hold, not the application's
            upstream.resume()
            s.settimeout(DEADLINE)
            assert len(recv_exactly(s, sent)) == sent
            assert b"pause_writing called" not in front.messages


def test_a_client_that_does_not_read_stops_the_upstream(upstream: Any) -> None:
    front = Front(upstream.address)
    with (
        serve(front, high_water=HIGH, low_water=HIGH // 4) as server,
        socket.create_connection(server.address[:2]) as s,
    ):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        wait_for(lambda: front.pairs)
        client, _ = front.pairs[0]
        sent = _send_until_stalled(s)  # the echo sends it all back; we do not read
        assert sent < 256 * 1024 * 1024, "nothing pushed back"
        assert client.write_buffer_length <= HIGH + 64 * 1024
        s.settimeout(DEADLINE)
        assert len(recv_exactly(s, sent)) == sent


@pytest.mark.parametrize("side", ["client", "upstream"])
def test_a_close_on_either_side_closes_the_other(upstream: Any, side: str) -> None:
    front = Front(upstream.address)
    with serve(front) as server, socket.create_connection(server.address[:2]) as s:
        s.settimeout(DEADLINE)
        s.sendall(b"ping")
        assert recv_exactly(s, 4) == b"ping"
        if side == "client":
            s.close()
            wait_for(lambda: upstream.open == 0)
        else:
            upstream.close()  # every upstream connection goes away
            assert s.recv(10) == b""
        wait_for(lambda: sorted(front.closed) == ["client", "upstream"])
        client, up = front.pairs[0]
        assert client._relay_peer() is None and up._relay_peer() is None  # nothing refers back


def test_misuses_are_refused(upstream: Any) -> None:
    outcomes: list[str] = []
    done = threading.Event()

    class Checks(Front):
        def ready(self, conn: Any, up: Any, exc: BaseException | None) -> None:
            try:
                conn.relay(conn)
            except ValueError:
                outcomes.append("itself")
            conn.relay(up)
            try:
                up.relay(conn)
            except ValueError:
                outcomes.append("twice")
            self.pairs.append((conn, up))
            conn.resume_reading()
            done.set()

    front = Checks(upstream.address)
    with serve(front) as server, socket.create_connection(server.address[:2]):
        assert done.wait(DEADLINE)
        conn, up = front.pairs[0]
        with pytest.raises(RuntimeError):
            conn.relay(up)  # off the loop thread
    assert outcomes == ["itself", "twice"]


def test_a_closed_connection_cannot_be_relayed(upstream: Any) -> None:
    outcomes: list[str] = []

    class Late(Front):
        def ready(self, conn: Any, up: Any, exc: BaseException | None) -> None:
            up.close()  # deferred to the end of the batch: relay in a task after it
            conn.loop.call_soon(self.late, conn, up)

        def late(self, conn: Any, up: Any) -> None:
            try:
                conn.relay(up)
            except ConnectionClosed:
                outcomes.append("closed")
            conn.close()

    front = Late(upstream.address)
    with serve(front) as server, socket.create_connection(server.address[:2]) as s:
        s.settimeout(DEADLINE)
        assert s.recv(10) == b""
    assert outcomes == ["closed"]
