"""Outbound connections (``Server.connect``, ``EventLoop.connect``, ``Client``) over loopback.

Real sockets throughout: connects that succeed with each built-in protocol, that are refused,
that do not resolve, that hang until their timeout (a listener whose accept queue is full),
over Unix sockets and TLS (against a gev TLS server and Python's ``ssl``), cancelled, or
abandoned by a stop; the handler's callbacks for outbound connections; flow control
(``pause_reading`` and the ``pause_writing``/``resume_writing`` hooks); no descriptor leaks.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import CancelledError
from typing import Any

import pytest
from gev_core import (
    Client,
    ConnectError,
    Connection,
    ConnectRefused,
    ConnectTimeout,
    Handler,
    LengthFieldProtocol,
    ResolveError,
    Server,
    TLSError,
)
from gev_core._handler import writing_hooks
from gev_core.testing import echo_upstream, serve, unresponsive_address

DEADLINE = 20.0


class Echo(Handler):
    def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
        return data


class Recorder(Handler):
    """Keeps what arrives and the callbacks' order."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.messages: list[Any] = []
        self.closed = threading.Event()
        self.lock = threading.Lock()

    def on_connect(self, conn: Connection) -> None:
        self.events.append(f"connect outbound={conn.outbound}")

    def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
        with self.lock:
            self.messages.append(data)
        return None

    def on_close(self, conn: Connection) -> None:
        self.events.append("close")
        self.closed.set()

    def wait_bytes(self, n: int) -> bytes:
        deadline = time.monotonic() + DEADLINE
        while True:
            with self.lock:
                got = b"".join(bytes(m) for m in self.messages)
            if len(got) >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.005)

    def wait_messages(self, n: int) -> list[Any]:
        wait_for(lambda: len(self.messages) >= n)
        return list(self.messages)


def wait_for(cond: Any, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def client() -> Iterator[Client]:
    with Client() as c:
        yield c


# ---------------------------------------------------------------------- connect and talk


def test_connect_exchange_and_the_handler_callbacks(client: Client) -> None:
    accepted: list[bool] = []

    class Server_(Echo):
        def on_connect(self, conn: Connection) -> None:
            accepted.append(conn.outbound)

    with serve(Server_()) as server:
        rec = Recorder()
        conn = client.connect(server.address, rec, timeout=10).result(DEADLINE)
        assert conn.outbound and conn.connected
        assert rec.events == ["connect outbound=True"]  # on_connect ran before the result
        assert conn.peer_addr == f"127.0.0.1:{server.port}"
        conn.send(b"hello from the test thread")  # not the loop's thread
        assert rec.wait_bytes(26) == b"hello from the test thread"
        wait_for(lambda: accepted == [False])
        conn.close()
        assert rec.closed.wait(DEADLINE)
        assert rec.events == ["connect outbound=True", "close"]


def test_line_and_length_field_protocols_by_name_and_instance(client: Client) -> None:
    with serve(Echo(), protocol="line") as server:
        rec = Recorder()
        conn = client.connect(server.address, rec, protocol="line").result(DEADLINE)
        conn.send("one")
        conn.send("two")
        assert [bytes(m) for m in rec.wait_messages(2)] == [b"one", b"two"]
        conn.close()
    with serve(Echo(), protocol=LengthFieldProtocol()) as server:
        rec = Recorder()
        proto = LengthFieldProtocol()
        conn = client.connect(server.address, rec, protocol=proto).result(DEADLINE)
        assert conn.protocol is proto
        conn.send(b"x" * 100_000)
        assert [bytes(m) for m in rec.wait_messages(1)] == [b"x" * 100_000]
        conn.close()


def test_the_default_handler_and_protocol_are_the_servers() -> None:
    with echo_upstream() as upstream:
        rec = Recorder()
        with serve(rec, protocol="line") as server:
            conn = server.connect(upstream.address).result(DEADLINE)
            assert conn.handler is rec and conn.protocol is server.protocol
            conn.send("ping")
            assert [bytes(m) for m in rec.wait_messages(1)] == [b"ping"]
        assert rec.closed.is_set()  # the stop closed it, on_close ran


def test_unix_and_abstract_unix_addresses(client: Client, tmp_path: Any) -> None:
    names = [f"unix:{tmp_path}/s.sock"]
    if sys.platform.startswith("linux"):
        names.append(f"unix:@gev-test-{uuid.uuid4().hex}")
    for address in names:
        with serve(Echo(), address=address):
            rec = Recorder()
            conn = client.connect(address, rec).result(DEADLINE)
            conn.send(b"over unix")
            assert rec.wait_bytes(9) == b"over unix"
            conn.close()


# ---------------------------------------------------------------------- failures


def test_a_closed_port_is_refused_and_nothing_is_logged(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with caplog.at_level(logging.DEBUG, logger="gev"):
            future = client.connect(f"127.0.0.1:{port}")
            with pytest.raises(ConnectRefused) as info:
                future.result(DEADLINE)
    exc = info.value
    assert isinstance(exc, ConnectionRefusedError) and isinstance(exc, ConnectError)
    assert f"127.0.0.1:{port}" in str(exc) and exc.address == f"127.0.0.1:{port}"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_name_that_does_not_resolve(client: Client) -> None:
    with pytest.raises(ResolveError) as info:
        client.connect("no-such-host.invalid:80").result(DEADLINE)
    assert "no-such-host.invalid" in str(info.value)
    assert isinstance(info.value.__cause__, socket.gaierror)


def test_a_connect_that_hangs_times_out(client: Client) -> None:
    with unresponsive_address() as address:
        started = time.monotonic()
        with pytest.raises(ConnectTimeout) as info:
            client.connect(address, timeout=0.3).result(DEADLINE)
        assert 0.25 < time.monotonic() - started < 5
    assert isinstance(info.value, TimeoutError) and info.value.timeout == 0.3
    assert f"{address[0]}:{address[1]}" in str(info.value)


def test_a_missing_unix_socket_file(client: Client, tmp_path: Any) -> None:
    with pytest.raises(ConnectError, match="No such file"):
        client.connect(f"unix:{tmp_path}/absent.sock").result(DEADLINE)


def test_bad_arguments_fail_at_once(client: Client) -> None:
    with pytest.raises(ValueError):
        client.connect("no-port-here")
    with pytest.raises(ValueError):
        client.connect(":80")  # no host
    with pytest.raises(TypeError):
        client.connect("127.0.0.1:1", handler=object())
    with pytest.raises(ValueError):
        client.connect("127.0.0.1:1", timeout=0)


def test_failed_attempts_leak_no_descriptors(client: Client) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = s.getsockname()[1]
        client.connect(("127.0.0.1", refused)).exception(DEADLINE)  # warm up the loop
        before = open_fds()
        with unresponsive_address() as hanging:
            after_listener = open_fds()
            for _ in range(20):
                assert isinstance(
                    client.connect(("127.0.0.1", refused)).exception(DEADLINE), ConnectRefused
                )
            for _ in range(3):
                assert isinstance(
                    client.connect(hanging, timeout=0.05).exception(DEADLINE), ConnectTimeout
                )
            pending = [client.connect(hanging) for _ in range(3)]
            for future in pending:
                future.cancel()
            wait_for(lambda: open_fds() <= after_listener)
        assert isinstance(client.connect("x.invalid:1").exception(DEADLINE), ResolveError)
        wait_for(lambda: open_fds() <= before)


# ---------------------------------------------------------------------- cancel and stop


def test_cancelling_the_future_abandons_the_attempt(client: Client) -> None:
    rec = Recorder()
    with unresponsive_address() as address:
        before = open_fds()
        future = client.connect(address, rec)
        time.sleep(0.1)  # connecting now
        assert future.cancel()
        with pytest.raises(CancelledError):
            future.result(1)
        wait_for(lambda: open_fds() < before + 1)
        wait_for(lambda: not client.loops[0]._attempts)
    assert rec.events == []  # no handler callback for an abandoned attempt


def test_a_stop_fails_the_attempts_in_progress() -> None:
    before = open_fds()
    client = Client()
    client.start_background()
    with unresponsive_address() as address:
        future = client.connect(address)
        time.sleep(0.1)
        client.stop()
        with pytest.raises(ConnectError, match="stopping"):
            future.result(DEADLINE)
        with pytest.raises(ConnectError, match="stopped"):
            client.connect(address).result(DEADLINE)
    wait_for(lambda: open_fds() <= before)


def test_a_stop_before_start_fails_the_attempts_made_meanwhile() -> None:
    # connect() may be called before start(); a server stopped without ever starting must
    # still answer those futures instead of leaving their callers waiting forever.
    before = open_fds()
    client = Client()
    with unresponsive_address() as address:
        futures = [client.connect(address) for _ in range(3)]
        client.stop()
        for future in futures:
            with pytest.raises(ConnectError, match="stopping"):
                future.result(DEADLINE)
        with pytest.raises(ConnectError, match="stopped"):
            client.connect(address).result(DEADLINE)
    wait_for(lambda: open_fds() <= before)


def test_client_lifecycle() -> None:
    client = Client(protocol="line", num_loops=2)
    assert "Client" in repr(client)
    with pytest.raises(Exception, match="no port"):
        _ = client.port
    with pytest.raises(TypeError, match="does not listen"):
        Client(address="127.0.0.1:0")
    client.start_background()
    try:
        with pytest.raises(RuntimeError):
            client.start_background()
        with serve(Echo(), protocol="line") as server:
            recs = [Recorder() for _ in range(4)]
            conns = [client.connect(server.address, r).result(DEADLINE) for r in recs]
            assert {c.loop.index for c in conns} == {0, 1}  # round robin over the loops
            for i, conn in enumerate(conns):
                conn.send(f"hello {i}")
            for i, rec in enumerate(recs):
                assert [bytes(m) for m in rec.wait_messages(1)] == [b"hello %d" % i]
    finally:
        client.stop()
    assert all(r.closed.is_set() for r in recs)


# ---------------------------------------------------------------------- on the loop thread


def test_a_handler_connects_from_its_loop_with_a_callback() -> None:
    # For each message, a server opens a connection to an upstream from inside on_message
    # (EventLoop.connect, no future) and answers with what the upstream echoed.
    with echo_upstream() as upstream:

        class Relay(Handler):
            def __init__(self, client: Connection) -> None:
                self.client = client

            def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
                self.client.send(b"upstream says " + bytes(data))
                conn.close()
                return None

        class Front(Handler):
            def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
                payload = bytes(data)
                thread = threading.get_ident()

                def ready(up: Connection | None, exc: BaseException | None) -> None:
                    assert threading.get_ident() == thread  # the same loop thread
                    if up is None:
                        conn.send(f"failed: {exc}".encode())
                    else:
                        up.send(payload)

                conn.loop.connect(upstream.address, Relay(conn), callback=ready)
                conn.loop.connect("127.0.0.1:1", Relay(conn), callback=ready)
                return None

        with serve(Front()) as server, socket.create_connection(server.address[:2]) as s:
            s.settimeout(DEADLINE)
            s.sendall(b"hi")
            got = b""
            while b"upstream says hi" not in got or b"refused" not in got:
                chunk = s.recv(1000)
                assert chunk
                got += chunk


# ---------------------------------------------------------------------- flow control


def test_pause_writing_and_resume_writing_follow_the_water_marks() -> None:
    calls: list[str] = []
    conns: list[Connection] = []

    class Pusher(Handler):
        def on_connect(self, conn: Connection) -> None:
            conns.append(conn)

        def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
            return None

        def pause_writing(self, conn: Connection) -> None:
            calls.append("pause")

        def resume_writing(self, conn: Connection) -> None:
            calls.append("resume")

    with (
        serve(Pusher(), high_water=64 * 1024, low_water=16 * 1024) as server,
        socket.create_connection(server.address[:2]) as s,
    ):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        wait_for(lambda: conns)
        conn = conns[0]
        for _ in range(64):
            conn.write(b"x" * 64 * 1024)  # 4 MiB to a client that does not read yet
        wait_for(lambda: calls == ["pause"])
        got = 0
        s.settimeout(DEADLINE)
        while got < 64 * 64 * 1024:
            got += len(s.recv(1 << 20))
        wait_for(lambda: calls == ["pause", "resume"])


def test_handlers_without_the_hooks_pay_nothing() -> None:
    assert writing_hooks(Echo()) is None  # Handler's empty ones do not count
    assert writing_hooks(object()) is None

    class Half:
        def pause_writing(self, conn: Any) -> None: ...

    hooks = writing_hooks(Half())
    assert hooks is not None and hooks[1](None) is None


def test_pause_reading_stops_the_handler_and_resume_reading_delivers(client: Client) -> None:
    with serve(Echo()) as server:
        rec = Recorder()
        conn = client.connect(server.address, rec).result(DEADLINE)
        conn.pause_reading()
        wait_for(lambda: conn.reading_paused)
        conn.send(b"while paused")
        time.sleep(0.3)
        assert rec.messages == []  # the echo waits in the kernel
        conn.resume_reading()
        assert rec.wait_bytes(12) == b"while paused"
        assert not conn.reading_paused
        conn.close()


def test_tls_handshake_failures_close_before_the_handler_hears(client: Client) -> None:
    # (TLS tests proper are in test_connect_tls.py; this one needs no certificates.)
    with serve(Echo()) as plaintext:
        rec = Recorder()
        future = client.connect(
            plaintext.address, rec, ssl=True, server_hostname="localhost", timeout=5
        )
        exc = future.exception(DEADLINE)
        assert isinstance(exc, (TLSError, ConnectError)), exc
        assert rec.events == []


def test_server_connect_picks_a_loop_and_accepts_one() -> None:
    with echo_upstream() as upstream, serve(Echo(), num_loops=2) as server:
        conn = server.connect(upstream.address, Recorder(), loop=server.loops[1]).result(DEADLINE)
        assert conn.loop is server.loops[1]
        with pytest.raises(ValueError):
            server.connect(upstream.address, loop=Server(Echo(), address="127.0.0.1:0").loops[0])


def test_waiting_for_a_connect_on_the_loop_thread_raises_instead_of_hanging() -> None:
    errors: list[BaseException] = []

    class Impatient(Handler):
        def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
            future = server.connect(upstream.address)
            try:
                future.result(1)
            except RuntimeError as exc:
                errors.append(exc)
            return b"done"

    with (
        echo_upstream() as upstream,
        serve(Impatient()) as server,
        socket.create_connection(server.address[:2], timeout=DEADLINE) as s,
    ):
        s.sendall(b"go")
        assert s.recv(10) == b"done"
    assert errors and "EventLoop.connect" in str(errors[0])


def test_a_handler_with_pause_writing_keeps_its_connection_read() -> None:
    # It takes flow control over: above high_water the connection is still read (the handler
    # is told instead), where the core alone would stop reading it until the output drains.
    received = [0]
    calls: list[str] = []

    class Told(Echo):
        def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
            received[0] += len(data)
            return data

        def pause_writing(self, conn: Connection) -> None:
            calls.append("pause")

    total = 16 * 1024 * 1024
    with (
        serve(Told(), max_write_buffer=64 * 1024 * 1024, max_buffered=256 * 1024 * 1024) as server,
        socket.socket() as s,
    ):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)  # and never reads
        s.connect(server.address[:2])
        s.settimeout(DEADLINE)
        s.sendall(b"z" * total)  # completes only if the server keeps reading
        wait_for(lambda: received[0] == total)
    assert calls == ["pause"]
