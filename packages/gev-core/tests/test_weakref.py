"""Connections and event loops can be weakly referenced, and their weak references die with them.

Applications (and gev-pubsub) keep connections in a ``WeakSet`` or a ``WeakKeyDictionary``. In the
compiled build that support comes from the build hook's weakref patch (``hatch_build.py``,
``patch_weakref_dealloc``): without it, a weak reference that outlives its connection points at
freed memory on CPython < 3.12 (its callback never runs, and reading it crashes the process),
and ``weakref.ref(conn)`` raises TypeError on 3.12+. These tests run in both builds.
"""

from __future__ import annotations

import gc
import socket
import threading
import time
import weakref
from typing import Any

import gev_core
from gev_core import Connection, EventLoop, Handler
from gev_core.testing import connect, recv_exactly, serve

CYCLES = 300


class Tracking(Handler):
    """Keeps every connection weakly, the way applications and gev-pubsub do."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conns: weakref.WeakSet[Connection] = weakref.WeakSet()
        self.meta: weakref.WeakKeyDictionary[Connection, int] = weakref.WeakKeyDictionary()
        self.refs: list[weakref.ref[Connection]] = []
        self.loops: weakref.WeakSet[EventLoop] = weakref.WeakSet()
        self.opened = 0
        self.closed = 0
        self.dead = 0  # weakref callbacks run: one per connection freed

    def _died(self, _ref: Any) -> None:
        with self.lock:
            self.dead += 1

    def on_connect(self, conn: Connection) -> None:
        with self.lock:
            self.opened += 1
            self.conns.add(conn)
            self.meta[conn] = self.opened
            self.refs.append(weakref.ref(conn, self._died))
            self.loops.add(conn.loop)

    def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
        assert conn in self.conns and conn in self.meta
        return data

    def on_close(self, conn: Connection) -> None:
        with self.lock:
            self.closed += 1


def _wait_for(cond: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _check_containers(handler: Tracking) -> None:
    # Read the containers while connections die and new ones reuse their memory: a dangling
    # weak reference would hand back a freed or foreign object here. (A function of its own, so
    # that no local of the test keeps a connection alive.)
    for conn in list(handler.conns):
        assert type(conn) is Connection
        assert handler.meta.get(conn, 0) > 0


def test_weak_references_to_connections_die_with_them() -> None:
    handler = Tracking()
    with serve(handler) as server:
        for i in range(CYCLES):
            sock = connect(server)
            if i % 2:
                sock.sendall(b"hi")
                assert recv_exactly(sock, 2) == b"hi"
            if i % 3 == 2:  # an abortive close (RST) now and then
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
            sock.close()
            if i % 50 == 49:
                _check_containers(handler)
        assert _wait_for(lambda: handler.closed == CYCLES)
        # The loop's locals may refer to the connection it served last until its next event.
        assert _wait_for(lambda: (gc.collect(), handler.dead)[1] >= CYCLES - 2), (
            f"{CYCLES - handler.dead} of {CYCLES} weak-reference callbacks never ran"
        )
        assert len(handler.conns) <= 2
        assert len(handler.meta) <= 2
        assert sum(1 for ref in handler.refs if ref() is not None) <= 2
        assert len(handler.loops) >= 1
        assert all(type(loop) is EventLoop for loop in handler.loops)
    assert _wait_for(lambda: (gc.collect(), handler.dead)[1] == CYCLES)
    assert not list(handler.conns) and not list(handler.meta.items())


def test_weakref_ref_of_a_connection_and_of_its_loop() -> None:
    seen: dict[str, Any] = {}
    done = threading.Event()

    class Probe(Handler):
        def on_connect(self, conn: Connection) -> None:
            ref = weakref.ref(conn)
            seen["same"] = ref() is conn
            seen["loop"] = weakref.ref(conn.loop)() is conn.loop
            seen["ref"] = ref
            done.set()

    with serve(Probe()) as server:
        sock = connect(server)
        assert done.wait(10)
        sock.close()
        assert seen["same"] and seen["loop"]
        ref = seen.pop("ref")
    # (Until the loop's next event, its locals may still refer to the connection it served last.)
    assert _wait_for(lambda: (gc.collect(), ref() is None)[1], timeout=10)


def test_the_base_that_gives_compiled_classes_weakref_support_stays_interpreted() -> None:
    from gev_core import _base

    assert issubclass(Connection, _base.Weakrefable)
    assert issubclass(EventLoop, _base.Weakrefable)
    assert not gev_core._compiled.is_compiled(_base)
