"""The batched hand-over between a gev loop and its runners (``LoopLink``).

Coroutines started during one batch of events cross to the asyncio companion in one
hand-over; results cross back with one wake-up for as many as arrive before the loop drains
them. Counters on the link make both observable; nothing here asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time

import pytest
from gev_core import Handler, LineProtocol
from gev_core._jobs import OffloadService
from gev_core.testing import connect, serve

DEADLINE = 30.0


def wait_for(cond, what="condition", timeout=DEADLINE, loop=None):
    """Wait for ``cond``; with ``loop``, running what was posted to it meanwhile."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if loop is not None:
            loop.run_posted()
        time.sleep(0.002)


class BatchLoop:
    """A LoopLike shaped like gev's loop where the link looks: ``_deferred`` (run after a
    batch) and ``_dispatching``; posted callbacks run when the test says so."""

    def __init__(self):
        self._deferred = []
        self._dispatching = False
        self.posted: queue.SimpleQueue = queue.SimpleQueue()

    def call_soon_threadsafe(self, fn, *args):
        self.posted.put((fn, args))

    def end_batch(self):
        self._dispatching = False
        deferred = self._deferred
        i = 0
        while i < len(deferred):
            fn, arg = deferred[i]
            i += 1
            fn(arg)
        deferred.clear()

    def run_posted(self):
        n = 0
        while True:
            try:
                fn, args = self.posted.get_nowait()
            except queue.Empty:
                return n
            fn(*args)
            n += 1


class Target:
    def __init__(self, service, loop):
        self.protocol = LineProtocol()
        self.written = bytearray()
        self._jobs = service.jobs_for(self, loop)

    def _jobs_write(self, data):
        self.written += data

    def _jobs_close(self):
        self._jobs.cancel()

    def _jobs_fail(self):
        self._jobs.cancel()

    def _jobs_state(self, busy, hold):
        pass

    def lines(self):
        return bytes(self.written).split(b"\n")[:-1]


@pytest.fixture
def service():
    svc = OffloadService(asyncio_loop="asyncio", max_threads=2)
    yield svc
    svc.shutdown(5)


def test_one_batch_of_coroutines_crosses_in_one_hand_over_and_comes_back_with_one_wake_up(
    service,
):
    loop = BatchLoop()
    targets = [Target(service, loop) for _ in range(10)]
    link = service.link_for(loop)
    assert all(t._jobs._link is link for t in targets)

    async def answer(i, k):
        return f"{i}.{k}"

    loop._dispatching = True
    for i, t in enumerate(targets):
        for k in range(3):
            t._jobs.run_coroutine(answer(i, k))
    companion = service.started_companion
    assert companion is not None
    assert companion.batches == 0 and len(link.starts) == 30  # nothing crossed yet
    loop.end_batch()
    assert companion.batches == 1 and link.handovers == 1 and not link.starts
    # Nothing runs on the loop meanwhile: every result rides on the first one's wake-up.
    wait_for(lambda: len(link.results) == 30, "all 30 results back")
    assert link.wakeups == 1 and loop.posted.qsize() == 1
    assert loop.run_posted() == 1
    for i, t in enumerate(targets):
        assert t.lines() == [f"{i}.{k}".encode() for k in range(3)]
    wait_for(lambda: companion.active == 0, "every place released")


def test_off_a_batch_a_coroutine_crosses_at_once(service):
    loop = BatchLoop()
    t = Target(service, loop)

    async def answer():
        return "now"

    t._jobs.run_coroutine(answer())  # not dispatching: no batch to wait for
    link = service.link_for(loop)
    assert link.handovers == 1 and not link.starts and not loop._deferred
    wait_for(lambda: len(link.results) == 1, "the result back")
    loop.run_posted()
    assert t.lines() == [b"now"]


def test_a_connection_cancelled_in_its_batch_never_runs_its_coroutines(service):
    loop = BatchLoop()
    gone, kept = Target(service, loop), Target(service, loop)
    ran = []

    async def answer(name):
        ran.append(name)
        return name

    loop._dispatching = True
    gone._jobs.run_coroutine(answer("gone"))
    kept._jobs.run_coroutine(answer("kept"))
    gone._jobs.cancel()  # closed in the same batch, before the hand-over
    loop.end_batch()
    wait_for(lambda: kept.lines() == [b"kept"], "kept answered", loop=loop)
    assert ran == ["kept"] and gone.lines() == []
    wait_for(lambda: service.started_companion.active == 0, "both places released")


def test_the_task_bound_still_holds_jobs_back_with_batching(service):
    svc = OffloadService(asyncio_loop="asyncio", max_tasks=2)
    try:
        loop = BatchLoop()
        t = Target(svc, loop)
        release = None
        started = threading.Event()

        async def slow(name):
            nonlocal release
            if release is None:
                release = asyncio.Event()
            started.set()
            await release.wait()
            return name

        loop._dispatching = True
        for name in ("a", "b", "c", "d"):
            t._jobs.run_coroutine(slow(name))
        assert t._jobs.held_jobs == 2 and t._jobs.holding  # two places only
        loop.end_batch()
        started.wait(DEADLINE)
        wait_for(lambda: release is not None, "the event made")
        svc.started_companion.loop.call_soon_threadsafe(release.set)
        wait_for(lambda: t.lines() == [b"a", b"b", b"c", b"d"], "all four, in order", loop=loop)
    finally:
        svc.shutdown(5)


def test_places_taken_for_a_batch_and_not_used_go_back_and_wake_a_waiter():
    # A batch takes its places in max_tasks in credits; what it did not use goes back when the
    # batch ends, and a connection of another loop refused meanwhile is woken to use it.
    svc = OffloadService(asyncio_loop="asyncio", max_tasks=3)
    try:
        a, b = BatchLoop(), BatchLoop()
        ta, tb = Target(svc, a), Target(svc, b)
        gate = None
        started = threading.Event()

        async def wait_gate(name):
            nonlocal gate
            if gate is None:
                gate = asyncio.Event()
            started.set()
            await gate.wait()
            return name

        a._dispatching = True
        ta._jobs.run_coroutine(wait_gate("a1"))
        ta._jobs.run_coroutine(wait_gate("a2"))  # takes the rest of the places as credit
        companion = svc.started_companion
        assert companion.active == 3 and svc.link_for(a).credit == 1
        tb._jobs.run_coroutine(wait_gate("b1"))  # another loop, off a batch: no place left
        assert tb._jobs.held_jobs == 1 and tb._jobs.holding
        a.end_batch()  # the unused place goes back, and b's connection is told
        assert svc.link_for(a).credit == 0
        wait_for(lambda: tb._jobs.held_jobs == 0, "b's job started", loop=b)
        assert companion.active == 3
        started.wait(DEADLINE)
        wait_for(lambda: gate is not None, "the event made")
        companion.loop.call_soon_threadsafe(gate.set)
        wait_for(lambda: ta.lines() == [b"a1", b"a2"], "a answered", loop=a)
        wait_for(lambda: tb.lines() == [b"b1"], "b answered", loop=b)
        wait_for(lambda: companion.active == 0, "every place released")
    finally:
        svc.shutdown(5)


class AsyncEcho(Handler):
    def __init__(self):
        self.gate: asyncio.Event | None = None
        self.waiting = 0

    async def on_message(self, conn, ctx, line):
        if self.gate is None:
            self.gate = asyncio.Event()
        self.waiting += 1
        await self.gate.wait()
        return line


def test_many_requests_in_one_read_from_many_connections_complete_in_order_with_few_crossings():
    handler = AsyncEcho()
    conns, per_conn = 40, 5
    total = conns * per_conn
    with serve(handler, protocol=LineProtocol(), num_loops=1) as server:
        socks = [connect(server) for _ in range(conns)]
        for i, s in enumerate(socks):
            s.sendall(b"".join(f"{i}:{k}\n".encode() for k in range(per_conn)))
        wait_for(lambda: handler.waiting == total, "every coroutine waiting at the gate")
        link = server._offload.link_for(server.loops[0])
        # One hand-over per batch of reads, never one per request.
        assert link.handovers <= conns < total
        companion = server._offload.started_companion
        gate = handler.gate
        companion.loop.call_soon_threadsafe(gate.set)  # every coroutine finishes at once
        for i, s in enumerate(socks):
            s.settimeout(DEADLINE)
            buf = b""
            while buf.count(b"\n") < per_conn:
                chunk = s.recv(65536)
                assert chunk, f"connection {i} closed early"
                buf += chunk
            assert buf.split(b"\n")[:per_conn] == [f"{i}:{k}".encode() for k in range(per_conn)]
        # The burst of results came back in a few wake-ups of the gev loop, not one each.
        assert link.wakeups <= total // 4, link
        for s in socks:
            s.close()
