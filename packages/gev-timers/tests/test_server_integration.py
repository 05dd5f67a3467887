"""gev-timers plugged into a real gev server: timers on the loop, idle reaping over sockets."""

from __future__ import annotations

import itertools
import logging
import threading
import time

import pytest
from gev_core import Handler, get_plugin_manager
from gev_core.testing import connect, recv_exactly, serve
from gev_timers import plugin


def plugins():
    # Explicit registration works whether or not the entry point is installed.
    pm = get_plugin_manager(autoload=False)
    pm.register(plugin, name="timers")
    return pm


class Echo(Handler):
    def __init__(self):
        self.closed = []
        self.reasons = []
        self.lock = threading.Lock()

    def on_message(self, conn, ctx, data):
        return data

    def on_close(self, conn):
        with self.lock:
            self.closed.append(time.monotonic())
            self.reasons.append(conn.close_reason)


def test_run_every_on_the_loop_thread_and_cancel():
    ticks = []
    interval = 0.05
    with serve(Echo(), plugins=plugins()) as server:
        loop_thread = {}

        def tick():
            loop_thread["id"] = threading.get_ident()
            ticks.append(time.monotonic())

        start = time.monotonic()
        timer = server.run_every(interval, tick)
        time.sleep(0.6)
        timer.cancel()
        count = len(ticks)
        time.sleep(0.2)
        assert len(ticks) == count  # nothing after cancel
        assert server.loops[0]._thread_id == loop_thread["id"]
    # A loaded machine may skip periods (never run them late in a burst), so count loosely.
    assert 3 <= count <= 13
    # Never early, and on the grid: run n happens at or after start + n * interval, and the
    # slots used are strictly increasing (no drift accumulates, no double runs).
    slots = [(t - start) / interval for t in ticks]
    assert all(b > a for a, b in itertools.pairwise(slots))
    assert slots[0] >= 1 - 0.05
    assert max(slots) < 0.6 / interval + 1


def test_run_after_from_another_thread_wakes_an_idle_loop():
    fired = threading.Event()
    with serve(Echo(), plugins=plugins()) as server:
        time.sleep(0.1)  # the loop is blocked in poll with nothing scheduled
        started = time.monotonic()
        threading.Thread(target=server.run_after, args=(0.05, fired.set)).start()
        assert fired.wait(2)
        assert time.monotonic() - started < 0.5


def test_silent_client_is_reaped_and_on_close_runs(caplog):
    caplog.set_level(logging.INFO, logger="gev.timers")
    handler = Echo()
    # The client keeps its end open after the server's FIN: the server lets go of the
    # connection once its linger timeout is over.
    with (
        serve(handler, plugins=plugins(), idle_time=0.3, linger_timeout=0.3) as server,
        connect(server) as sock,
    ):
        host, port = sock.getsockname()[:2]
        peer = f"{host}:{port}"
        t0 = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(10) == b""
        elapsed = time.monotonic() - t0
        assert 0.25 <= elapsed < 1.0
        deadline = time.monotonic() + 2
        while not handler.closed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(handler.closed) == 1
        # Counted as idle, whatever happened after the reaper closed it.
        assert handler.reasons == ["idle"]
        assert server.loops[0].stats.closed_idle == 1
    # One INFO line per reap, naming the peer and how long it was silent.
    (record,) = [r for r in caplog.records if "idle connection" in r.getMessage()]
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert message.startswith(f"closing idle connection {peer}: no reads or writes for ")
    assert float(message.rsplit(" ", 2)[1]) >= 0.3


def test_reads_keep_a_connection_alive():
    with serve(Echo(), plugins=plugins(), idle_time=0.3) as server, connect(server) as sock:
        for _ in range(8):  # 0.8 s in all, never 0.3 s quiet
            sock.sendall(b"x")
            assert recv_exactly(sock, 1) == b"x"
            time.sleep(0.1)
        sock.sendall(b"still")
        assert recv_exactly(sock, 5) == b"still"


def test_writes_keep_a_connection_alive():
    # A push-only server: the client never sends, the server writes every 0.1 s.
    class Pusher(Handler):
        def on_connect(self, conn):
            def push():
                conn.send(b".")
                conn.run_after(0.1, push)

            conn.run_after(0.1, push)

        def on_message(self, conn, ctx, data):
            return None

    with serve(Pusher(), plugins=plugins(), idle_time=0.3) as server, connect(server) as sock:
        sock.settimeout(2)
        got = b""
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.9:
            got += sock.recv(100)
        assert got and set(got) == {ord(".")}


def test_conn_run_after_is_skipped_once_the_connection_closed():
    fired = []

    class Later(Handler):
        def on_connect(self, conn):
            conn.run_after(0.2, fired.append, "late")
            conn.run_after(0.01, fired.append, "early")

        def on_message(self, conn, ctx, data):
            return None

    with serve(Later(), plugins=plugins()) as server:
        sock = connect(server)
        time.sleep(0.1)
        sock.close()
        time.sleep(0.3)
    assert fired == ["early"]


def test_idle_time_option_from_config():
    with serve(Echo(), plugins=plugins(), options={"idle_time": 0.2}) as server:
        assert server.timers.idle_time == 0.2
        with connect(server) as sock:
            sock.settimeout(3)
            assert sock.recv(1) == b""


def test_bad_idle_time_is_refused():
    with pytest.raises(ValueError, match="idle_time"):
        serve(Echo(), plugins=plugins(), idle_time=-1).__enter__()


def test_many_idle_connections_are_reaped_in_one_batch():
    handler = Echo()
    with serve(handler, plugins=plugins(), idle_time=0.3, num_loops=2) as server:
        socks = [connect(server) for _ in range(200)]
        time.sleep(0.1)
        assert server.connection_count == 200
        deadline = time.monotonic() + 3
        while server.connection_count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.connection_count == 0
        for s in socks:
            s.settimeout(2)
            try:
                assert s.recv(1) == b""
            except ConnectionResetError:
                pass
            s.close()
    assert len(handler.closed) == 200


def test_plugin_is_discovered_through_its_entry_point():
    import importlib.metadata
    import os

    try:
        importlib.metadata.distribution("gev-timers")
    except importlib.metadata.PackageNotFoundError:
        if os.environ.get("CI"):
            raise
        pytest.skip("gev-timers is installed by the hatch test environment")
    pm = get_plugin_manager()
    assert pm.infos["timers"].distribution == "gev-timers"
    with serve(Echo(), plugins=pm, idle_time=5) as server:
        assert server.timers.idle_time == 5
