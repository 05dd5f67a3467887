"""The harness for handlers whose replies come later (tests/offload_support.py), proven.

Each check runs against a correct server (plain asyncio: replies in request order, a
disconnect cancels the request) and must pass, and against a deliberately wrong one (replies
as they finish, nothing cancelled) and must fail: a check that cannot fail proves nothing.
gev joins ``SERVERS`` twice: requests offloaded to its thread pool (a job gives up once its
connection is closing: that is how blocking work learns of a disconnect), and an ``async def
on_message`` on its asyncio companion (the coroutine is cancelled). The Redis part runs
coroutines on gev's asyncio companion against a real ``redis-server`` through
``redis.asyncio``, in request order.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from offload_support import (
    GateService,
    disconnect_mid_request,
    gev_server,
    pipeline,
    reference_server,
)

SERVERS = {
    "asyncio-reference": reference_server,
    "gev-thread": lambda service: gev_server(service, "thread"),
    "gev-async": lambda service: gev_server(service, "async"),
}


@pytest.fixture(params=sorted(SERVERS))
def served(request):
    """``(service, address)`` of a correct server of the gate service."""
    service = GateService()
    with SERVERS[request.param](service) as address:
        yield service, address


@contextlib.contextmanager
def wrong_server():
    service = GateService()
    with reference_server(service, ordered=False) as address:
        yield service, address


def test_pipelined_requests_finishing_in_reverse_come_back_in_request_order(served):
    service, address = served
    ids = [str(i) for i in range(6)]
    requests = [f"{i} g{i}".encode() for i in ids]
    gates = [f"g{i}" for i in reversed(ids)]
    replies = pipeline(address, requests, service, release=gates)
    assert replies == [i.encode() for i in ids]
    # The scenario really happened: the server finished them last to first.
    assert service.finished == list(reversed(ids))


def test_the_pipeline_check_fails_on_replies_in_completion_order():
    with wrong_server() as (service, address):
        requests = [f"{i} g{i}".encode() for i in range(4)]
        with pytest.raises(AssertionError, match="out of request order"):
            pipeline(address, requests, service, release=["g3", "g2", "g1", "g0"])


def test_requests_without_gates_and_mixed_ones(served):
    service, address = served
    requests = [b"a", b"b g", b"c", b"d"]
    assert pipeline(address, requests, service, release=["g"]) == [b"a", b"b", b"c", b"d"]


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_a_client_disconnecting_mid_request_cancels_it(served, reset):
    service, address = served
    disconnect_mid_request(address, service, "long", reset=reset)
    service.wait("cancelled", "long")
    assert "long" not in service.finished


def test_the_disconnect_check_fails_when_nothing_is_cancelled():
    with wrong_server() as (service, address):
        disconnect_mid_request(address, service, "long")
        with pytest.raises(AssertionError, match="never cancelled"):
            service.wait("cancelled", "long", timeout=0.5)


# ---------------------------------------------------------------------- redis, for real


class _Loop:
    """Callbacks posted to 'the loop' run on this dedicated thread, in order."""

    def __init__(self):
        import queue

        self.q = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="fake-gev-loop", daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            item = self.q.get()
            if item is None:
                return
            fn, args = item
            fn(*args)

    def call_soon_threadsafe(self, fn, *args):
        self.q.put((fn, args))

    def close(self):
        self.q.put(None)
        self.thread.join(10)


class _Conn:
    def __init__(self, service, loop):
        from gev_core import LineProtocol

        self.protocol = LineProtocol()
        self.written = bytearray()
        self.closed = False
        self.jobs = service.jobs_for(self, loop)

    def _write(self, data):
        self.written += data

    def _close(self, _=None):
        self.closed = True
        self.jobs.cancel()

    def _abort(self, exc=None):
        self.closed = True
        self.jobs.cancel()

    def _jobs_write(self, data):
        self._write(data)

    def _jobs_close(self):
        self._close()

    def _jobs_fail(self):
        self._abort()

    def _jobs_state(self, busy, hold):
        pass


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_coroutines_on_the_companion_await_a_real_redis_in_request_order(
    gev_redis_server, loop_kind
):
    """What an ``async def on_message`` that looks keys up in Redis does, minus the socket:
    each request's coroutine awaits ``redis.asyncio`` on gev's asyncio companion; replies are
    framed in request order although Redis answers the keys' lookups in any order."""
    redis_asyncio = pytest.importorskip("redis.asyncio")
    if loop_kind == "uvloop":
        pytest.importorskip("uvloop")
    from gev_core._jobs import OffloadService

    service = OffloadService(asyncio_loop=loop_kind, max_pending=64)
    loop = _Loop()
    client = redis_asyncio.Redis.from_url(gev_redis_server.url)
    try:
        keys = [f"key:{i}" for i in range(200)]

        async def fill():
            await client.mset({k: f"value {k}" for k in keys})

        async def lookup(key, delay):
            await asyncio.sleep(delay)  # later keys often answer first
            value = await client.get(key)
            return value if value is not None else b"(nil)"

        companion = service.companion()
        asyncio.run_coroutine_threadsafe(fill(), companion.loop).result(30)
        conn = _Conn(service, loop)
        for i, key in enumerate([*keys, "missing"]):
            delay = (7 - i % 8) * 0.001
            loop.call_soon_threadsafe(conn.jobs.run_coroutine, lookup(key, delay))
        deadline = time.monotonic() + 30
        while (got := conn.written.count(b"\n")) < len(keys) + 1:
            assert time.monotonic() < deadline, f"only {got} replies"
            time.sleep(0.01)
        lines = bytes(conn.written).split(b"\n")[:-1]
        assert lines == [f"value {k}".encode() for k in keys] + [b"(nil)"]
        assert not conn.closed
        assert companion.uses_uvloop is (loop_kind == "uvloop")
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(client.aclose(), service.companion().loop).result(10)
        service.shutdown(5)
        loop.close()
