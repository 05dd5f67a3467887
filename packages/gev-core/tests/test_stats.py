"""Each loop's counters (``loop.stats``) over a real echo: connections always, traffic on demand."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import pytest
from gev_core import CLOSE_REASONS, Handler, LineProtocol, LoopStats, Protocol
from gev_core.testing import connect, recv_exactly, serve

BIG = 1 << 20


class Echo(Handler):
    """Echoes; ``close`` closes, ``idle`` closes as idle, ``boom`` raises, ``quiet`` has no
    reply, ``big`` 1 MiB."""

    def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
        word = bytes(data).strip()
        if word == b"close":
            conn.close()
            return None
        if word == b"idle":
            conn.close(reason="idle")
            return None
        if word == b"boom":
            raise RuntimeError("boom")
        if word == b"quiet":
            return None
        if word == b"big":
            return b"z" * BIG
        return data


def _wait(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def _closed_by_server(sock: socket.socket, timeout: float = 20.0) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True


def _lockstep(sock: socket.socket, messages: list[bytes]) -> None:
    # One message in flight: each read of the server is exactly one message.
    for msg in messages:
        sock.sendall(msg)
        assert recv_exactly(sock, len(msg)) == msg


def _exercise(srv: Any, caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    """Traffic and one close of each kind we can cause; returns (bytes, messages) echoed."""
    stats = srv.loops[0].stats
    messages = [b"x" * n for n in (1, 7, 64, 1000, 4096)] * 4
    with connect(srv) as a, connect(srv) as b:
        _lockstep(a, messages)
        _lockstep(b, messages[:5])
    # eof: both clients closed their side first.
    _wait(lambda: stats.closed_eof == 2)
    with connect(srv) as c:
        c.sendall(b"close")
        assert _closed_by_server(c)
    _wait(lambda: stats.closed_local == 1)
    with connect(srv) as d:
        d.sendall(b"idle")
        assert _closed_by_server(d)
    _wait(lambda: stats.closed_idle == 1)
    with caplog.at_level(logging.CRITICAL, logger="gev"), connect(srv) as e:
        e.sendall(b"boom")
        assert _closed_by_server(e)
        _wait(lambda: stats.closed_handler_error == 1)
    echoed = messages + messages[:5]
    # The three closing commands were messages too, without a reply.
    return sum(map(len, echoed)), len(echoed)


def test_loop_stats_count_an_echo_while_counting(caplog: pytest.LogCaptureFixture) -> None:
    with serve(Echo(), count_traffic=True) as srv:
        assert srv.count_traffic
        stats = srv.loops[0].stats
        assert isinstance(stats, LoopStats) and stats.counting
        size, count = _exercise(srv, caplog)
        assert stats.accepted == 5
        assert stats.closed == 5
        assert stats.bytes_in == size + len(b"close") + len(b"idle") + len(b"boom")
        assert stats.bytes_out == size
        # "boom" never reached the end of on_message; "close" and "idle" did, replying nothing.
        assert stats.messages_in == count + 2
        assert stats.messages_out == count
        assert stats.handler_errors == 1
        assert stats.backpressure_pauses == 0
        snapshot = stats.as_dict()
        assert snapshot["closed_eof"] == 2
        assert {k for k in snapshot if k.startswith("closed_")} == {
            f"closed_{r}" for r in CLOSE_REASONS
        }
        assert srv.stats == [stats]


def test_loop_stats_count_connections_but_no_traffic_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with serve(Echo()) as srv:
        assert not srv.count_traffic
        stats = srv.loops[0].stats
        _exercise(srv, caplog)
        assert stats.accepted == 5
        assert (stats.closed_eof, stats.closed_local, stats.closed_idle) == (2, 1, 1)
        assert stats.closed_handler_error == stats.handler_errors == 1
        assert stats.bytes_in == stats.bytes_out == 0
        assert stats.messages_in == stats.messages_out == 0
        # Turned on while serving: counted from then on.
        srv.count_traffic = True
        with connect(srv) as sock:
            _lockstep(sock, [b"ping"] * 3)
        _wait(lambda: stats.closed_eof == 3)
        assert (stats.bytes_in, stats.bytes_out) == (12, 12)
        assert (stats.messages_in, stats.messages_out) == (3, 3)


def test_a_framed_protocol_counts_its_messages() -> None:
    with serve(Echo(), protocol=LineProtocol(), count_traffic=True) as srv:
        stats = srv.loops[0].stats
        with connect(srv) as sock:
            sock.sendall(b"a\nbb\nquiet\nccc\n")
            assert recv_exactly(sock, 9) == b"a\nbb\nccc\n"
        _wait(lambda: stats.closed_eof == 1)
        assert stats.messages_in == 4
        assert stats.messages_out == 3
        assert stats.bytes_in == 15
        assert stats.bytes_out == 9


def test_a_framed_protocol_counts_from_when_counting_is_turned_on() -> None:
    # Protocol.counting: the protocol skips count_messages until a loop that counts serves
    # it; turned on while a connection is open, that connection's next messages count.
    protocol = LineProtocol()
    with serve(Echo(), protocol=protocol) as srv:
        stats = srv.loops[0].stats
        with connect(srv) as sock:
            sock.sendall(b"a\n")
            assert recv_exactly(sock, 2) == b"a\n"
            assert protocol.counting is False
            assert stats.messages_in == 0
            srv.count_traffic = True
            sock.sendall(b"bb\nquiet\n")
            sock.sendall(b"ccc\n")
            assert recv_exactly(sock, 7) == b"bb\nccc\n"
            _wait(lambda: stats.messages_in == 3)
            assert protocol.counting is True
            assert stats.messages_out == 2
        with connect(srv) as sock:
            _lockstep(sock, [b"d\n"])
        _wait(lambda: stats.closed_eof == 2)
        assert (stats.messages_in, stats.messages_out) == (4, 3)


def test_a_protocol_set_on_the_connection_counts() -> None:
    # A protocol that no server was given (a handler or plugin swaps it in) learns that its
    # loop counts when it is set.
    swapped: list[LineProtocol] = []

    class Swap(Echo):
        def on_connect(self, conn: Any) -> None:
            swapped.append(LineProtocol())
            conn.protocol = swapped[-1]

    with serve(Swap(), count_traffic=True) as srv:
        stats = srv.loops[0].stats
        with connect(srv) as sock:
            sock.sendall(b"a\nquiet\nb\n")
            assert recv_exactly(sock, 4) == b"a\nb\n"
        _wait(lambda: stats.closed_eof == 1)
        assert swapped[0].counting is True
        assert (stats.messages_in, stats.messages_out) == (3, 2)


class _Reporting(Protocol):
    """A third-party protocol that reports every message whatever its ``counting`` says."""

    accepts_bytes = True

    def receive(self, conn: Any, data: Any, out: list[Any]) -> int:
        reply = conn.handler.on_message(conn, None, bytes(data))
        if reply is not None:
            out.append(reply)
        conn.count_messages(1, 0 if reply is None else 1)
        return len(data)


@pytest.mark.parametrize("counting", [False, True])
def test_a_protocol_that_always_reports_is_counted_exactly(counting: bool) -> None:
    with serve(Echo(), protocol=_Reporting(), count_traffic=counting) as srv:
        stats = srv.loops[0].stats
        with connect(srv) as sock:
            _lockstep(sock, [b"one", b"two", b"three"])
        _wait(lambda: stats.closed_eof == 1)
        assert (stats.messages_in, stats.messages_out) == ((3, 3) if counting else (0, 0))


def test_a_peer_that_does_not_read_counts_a_backpressure_pause() -> None:
    with serve(Echo(), count_traffic=True) as srv, connect(srv) as sock:
        stats = srv.loops[0].stats
        asked = 0
        # Ask for 1 MiB replies without reading them, one at a time, until the server's output
        # backs up past high_water and it stops reading from us.
        while stats.backpressure_pauses == 0:
            assert asked < 64, "the server never paused"
            sock.sendall(b"big")
            asked += 1
            _wait(lambda: stats.messages_in == asked)  # noqa: B023 (called at once)
        assert stats.backpressure_pauses == 1
        # Reading everything back resumes it; every byte arrives.
        assert recv_exactly(sock, asked * BIG) == b"z" * (asked * BIG)
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"


def test_close_reason_is_validated_and_recorded() -> None:
    reasons: list[str | None] = []

    class Recorder(Echo):
        def on_close(self, conn: Any) -> None:
            reasons.append(conn.close_reason)

        def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
            if bytes(data) == b"bad":
                with pytest.raises(ValueError, match="close reason must be one of"):
                    conn.close(reason="because")
                return b"refused"
            assert conn.close_reason is None
            return super().on_message(conn, ctx, data)

    with serve(Recorder()) as srv:
        with connect(srv) as sock:
            sock.sendall(b"bad")
            assert recv_exactly(sock, 7) == b"refused"
            sock.sendall(b"idle")
            assert _closed_by_server(sock)
        _wait(lambda: reasons == ["idle"])


def test_busy_time_grows_under_load_and_not_while_idle() -> None:
    # busy_ns: time outside the poll wait, counted only while counting; an idle loop blocks
    # in poll and adds nothing.
    with serve(Echo(), count_traffic=True) as srv:
        stats = srv.loops[0].stats
        with connect(srv) as sock:
            _lockstep(sock, [b"ping"] * 200)
            _wait(lambda: stats.messages_in == 200)
            assert stats.busy_ns > 0
            busy = stats.busy_ns
            time.sleep(0.3)  # idle, a connection open
            assert stats.busy_ns - busy < 50_000_000  # a stray wake-up at most, never 0.3 s
    with serve(Echo()) as srv:  # not counting: never read the clock
        with connect(srv) as sock:
            _lockstep(sock, [b"ping"] * 20)
        assert srv.loops[0].stats.busy_ns == 0
