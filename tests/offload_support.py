"""Harness for servers whose replies are produced later (offloaded to threads, or coroutines):
a pipelining client, a client that disconnects mid-request, and the service they talk to.

The service speaks lines. A request is ``ID GATE``; the server starts working on it (records
``ID`` as started), waits until the test opens the gate named ``GATE`` (``-`` is always open),
records ``ID`` as finished and answers ``ID``. Because the test opens gates in an order of its
choosing, "later requests finish first" is not left to timing: the order of completion is
whatever the test says, on any machine, under any load.

:class:`GateService` is the shared state a server implementation uses (blocking waits for
threads, awaitable waits for coroutines). :func:`reference_server` serves it with plain asyncio
-- replies in request order, a disconnect cancels the connection's coroutines -- and
``ordered=False`` gives a deliberately wrong one (replies as they finish, nothing cancelled),
so that the checks below are seen to fail on the defects they look for.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

DEADLINE = 30.0
OPEN = "-"
NL = b"\n"


class Abandoned(Exception):
    """A blocking job gave up: its client went away."""


class GateService:
    """Gates the test opens, and what the server did with each request (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._open: set[str] = {OPEN}
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self.started: list[str] = []
        self.finished: list[str] = []
        self.cancelled: list[str] = []

    # -- the test's side

    def release(self, *gates: str) -> None:
        """Open these gates, one after the other (in this order)."""
        for gate in gates:
            with self._cond:
                self._open.add(gate)
                waiters = self._waiters.pop(gate, [])
                self._cond.notify_all()
            for loop, event in waiters:
                loop.call_soon_threadsafe(event.set)

    def wait(self, what: str, ident: str, timeout: float = DEADLINE) -> None:
        """Wait until request ``ident`` is in ``started``, ``finished`` or ``cancelled``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while ident not in getattr(self, what):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"request {ident} never {what} ({self!r})")
                self._cond.wait(left)

    # -- the server's side

    def parse(self, line: bytes) -> tuple[str, str]:
        ident, _, gate = line.decode().partition(" ")
        return ident, gate or OPEN

    def record(self, what: str, ident: str) -> None:
        with self._cond:
            getattr(self, what).append(ident)
            self._cond.notify_all()

    def wait_blocking(self, gate: str, abandon: Callable[[], bool] | None = None) -> None:
        """For a thread: block until ``gate`` is open. ``abandon``, polled meanwhile, tells a
        job to give up (what a long job does with ``conn.closing``): raises
        :class:`Abandoned`."""
        deadline = time.monotonic() + DEADLINE
        with self._cond:
            while gate not in self._open:
                if abandon is not None and abandon():
                    raise Abandoned(gate)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"gate {gate} never opened")
                self._cond.wait(min(left, 0.02))

    async def wait_async(self, gate: str) -> None:
        """For a coroutine: await until ``gate`` is open."""
        event = asyncio.Event()
        with self._lock:
            if gate in self._open:
                return
            self._waiters.setdefault(gate, []).append((asyncio.get_running_loop(), event))
        await event.wait()

    def answer_blocking(self, line: bytes, abandon: Callable[[], bool] | None = None) -> bytes:
        """The whole request, for a pool thread; an abandoned one is recorded as cancelled."""
        ident, gate = self.parse(line)
        self.record("started", ident)
        try:
            self.wait_blocking(gate, abandon)
        except Abandoned:
            self.record("cancelled", ident)
            raise
        self.record("finished", ident)
        return ident.encode()

    async def answer_async(self, line: bytes) -> bytes:
        """The whole request, as a coroutine; a cancellation is recorded."""
        ident, gate = self.parse(line)
        self.record("started", ident)
        try:
            await self.wait_async(gate)
        except asyncio.CancelledError:
            self.record("cancelled", ident)
            raise
        self.record("finished", ident)
        return ident.encode()

    def __repr__(self) -> str:
        return (
            f"<GateService started={self.started} finished={self.finished}"
            f" cancelled={self.cancelled}>"
        )


# ---------------------------------------------------------------------- clients


def read_lines(sock: socket.socket, n: int, timeout: float = DEADLINE) -> list[bytes]:
    """Read exactly ``n`` lines (without their ``\\n``)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while buf.count(b"\n") < n:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"got {buf.count(NL)} of {n} replies: {buf!r}") from None
        if not chunk:
            raise AssertionError(f"closed after {buf.count(NL)} of {n} replies: {buf!r}")
        buf += chunk
    lines = buf.split(b"\n")
    assert lines[n:] == [b""], f"more than {n} replies: {buf!r}"
    return lines[:n]


def pipeline(
    address: tuple[str, int], requests: list[bytes], service: GateService, release: list[str]
) -> list[bytes]:
    """One connection, every request in one write; once all have started, open the gates in
    ``release`` order (each once the request it held finished); return the replies (checked to
    be in request order)."""
    with socket.create_connection(address, timeout=DEADLINE) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"".join(r + b"\n" for r in requests))
        for request in requests:
            service.wait("started", service.parse(request)[0])
        for gate in release:
            # One at a time, each request finished before the next gate opens: the order of
            # completion is the test's, even with several pool threads waiting.
            ident = next((i for i, g in map(service.parse, requests) if g == gate), None)
            service.release(gate)
            if ident is not None:
                service.wait("finished", ident)
        replies = read_lines(sock, len(requests))
    expected = [service.parse(r)[0].encode() for r in requests]
    assert replies == expected, f"replies out of request order: {replies} != {expected}"
    return replies


def disconnect_mid_request(
    address: tuple[str, int], service: GateService, ident: str = "long", reset: bool = False
) -> None:
    """Start a request that waits on a gate nobody opens, then go away: close (FIN), or with
    ``reset`` abort (RST). The server should cancel the request; check with
    ``service.wait("cancelled", ident)``."""
    sock = socket.create_connection(address, timeout=DEADLINE)
    try:
        sock.sendall(f"{ident} never-{ident}\n".encode())
        service.wait("started", ident)
        if reset:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    finally:
        sock.close()


# ---------------------------------------------------------------------- reference servers


class _Reference(asyncio.Protocol):
    def __init__(self, service: GateService, ordered: bool) -> None:
        self.service = service
        self.ordered = ordered
        self.buf = b""
        self.pending: deque[asyncio.Task[bytes]] = deque()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        loop = asyncio.get_running_loop()
        for line in lines:
            task = loop.create_task(self.service.answer_async(line))
            self.pending.append(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[bytes]) -> None:
        assert self.transport is not None
        if not self.ordered:
            if not task.cancelled():
                self.transport.write(task.result() + b"\n")
            return
        pending = self.pending
        while pending and pending[0].done():
            head = pending.popleft()
            if not head.cancelled() and not self.transport.is_closing():
                self.transport.write(head.result() + b"\n")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ordered:
            for task in self.pending:
                task.cancel()


@contextlib.contextmanager
def reference_server(service: GateService, ordered: bool = True) -> Iterator[tuple[str, int]]:
    """An asyncio server of the gate service in a thread; yields its address."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: list[asyncio.AbstractServer] = []

    async def start() -> None:
        server = await loop.create_server(lambda: _Reference(service, ordered), "127.0.0.1", 0)
        box.append(server)
        ready.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, name="reference-server", daemon=True)
    thread.start()
    assert ready.wait(DEADLINE)
    server = box[0]
    try:
        yield server.sockets[0].getsockname()[:2]
    finally:

        async def stop() -> None:
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            loop.stop()

        asyncio.run_coroutine_threadsafe(stop(), loop)
        thread.join(DEADLINE)
        loop.close()


# ---------------------------------------------------------------------- gev servers


@contextlib.contextmanager
def gev_server(
    service: GateService, work: str = "thread", **server_kwargs: Any
) -> Iterator[tuple[str, int]]:
    """gev serving the gate service (line protocol unless told otherwise): each request
    offloaded to the thread pool (``work="thread"``; the job gives up once its connection is
    closing), or answered by an ``async def on_message`` on the asyncio companion
    (``work="async"``). Yields the address."""
    from gev_core import LineProtocol
    from gev_core.testing import serve

    handler: Any
    if work == "thread":

        class Offloading:
            def on_message(self, conn: Any, ctx: Any, data: bytes) -> None:
                conn.offload(service.answer_blocking, data, lambda: conn.closing)

        handler = Offloading()
    else:

        class Awaiting:
            async def on_message(self, conn: Any, ctx: Any, data: bytes) -> bytes:
                return await service.answer_async(data)

        handler = Awaiting()
    server_kwargs.setdefault("protocol", LineProtocol())
    with serve(handler, **server_kwargs) as server:
        address = server.address
        assert isinstance(address, tuple)
        yield address
