"""The asyncio companion: coroutines on a loop in a thread of their own, cancellation, the
server-wide bound, and a bounded stop that leaves no thread behind."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import pytest
from gev_core._companion import AsyncioCompanion, new_event_loop

DEADLINE = 30.0

LOOPS = ["asyncio", "uvloop"]


def wait_for(cond, timeout=DEADLINE, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


class CoJob:
    """A CoroutineJob that records its outcome."""

    def __init__(self, coro):
        self.coro = coro
        self.task = None
        self.cancelled = False
        self.outcome = None
        self.done = threading.Event()
        self.thread = None

    def coroutine(self):
        coro, self.coro = self.coro, None
        if self.cancelled:
            coro.close()
            return None
        return coro

    def started(self, task):
        self.task = task
        self.thread = threading.current_thread()

    def finished(self, task):
        if task.cancelled():
            self.outcome = ("cancelled", None)
        elif task.exception() is not None:
            self.outcome = ("error", task.exception())
        else:
            self.outcome = ("ok", task.result())
        self.done.set()


class Waiter:
    def __init__(self):
        self.event = threading.Event()

    def room_available(self):
        self.event.set()


@pytest.fixture(params=LOOPS)
def companion(request):
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    made = []

    def make(**kwargs):
        c = AsyncioCompanion(request.param, name="test-asyncio", **kwargs)
        made.append(c)
        c.start()
        return c

    yield make
    for c in made:
        c.stop(5)
    assert not [t for t in threading.enumerate() if t.name == "test-asyncio"]


def test_coroutines_run_on_the_companion_thread_and_report_back(companion):
    c = companion()

    async def add(a, b):
        await asyncio.sleep(0)
        return a + b

    job = CoJob(add(2, 3))
    assert c.submit(job)
    assert job.done.wait(DEADLINE)
    assert job.outcome == ("ok", 5)
    assert job.thread.name == "test-asyncio"
    assert job.thread is not threading.current_thread()


def test_the_loop_kind(companion, request):
    c = companion()
    want_uvloop = "uvloop" in request.node.callspec.id
    assert c.uses_uvloop is want_uvloop
    assert type(c.loop).__module__.startswith("uvloop" if want_uvloop else "asyncio")


def test_an_exception_is_the_outcome(companion):
    c = companion()

    async def boom():
        raise KeyError("nope")

    job = CoJob(boom())
    assert c.submit(job)
    assert job.done.wait(DEADLINE)
    kind, exc = job.outcome
    assert kind == "error" and isinstance(exc, KeyError)


def test_many_submitted_at_once_all_run_concurrently(companion):
    c = companion()
    gate = threading.Event()
    loop = c.loop
    started = []

    async def wait_gate(i):
        started.append(i)
        await loop.run_in_executor(None, gate.wait, DEADLINE)
        return i

    jobs = [CoJob(wait_gate(i)) for i in range(50)]
    for job in jobs:
        assert c.submit(job)
    wait_for(lambda: len(started) == 50, what="all 50 started")
    gate.set()
    for job in jobs:
        assert job.done.wait(DEADLINE)
    assert [j.outcome for j in jobs] == [("ok", i) for i in range(50)]
    assert c.active == 0


def test_cancel_reaches_the_running_coroutine(companion):
    c = companion()
    seen = []
    entered = threading.Event()

    async def forever():
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    job = CoJob(forever())
    assert c.submit(job)
    assert entered.wait(DEADLINE)
    c.cancel([job])
    assert job.done.wait(DEADLINE)
    assert job.outcome == ("cancelled", None)
    assert seen == ["cancelled"]


def test_a_job_cancelled_before_it_starts_never_runs(companion):
    c = companion()
    ran = []

    async def never():
        ran.append(1)

    job = CoJob(never())
    job.cancelled = True
    assert c.submit(job)
    wait_for(lambda: c.active == 0, what="the slot released")
    assert not ran and not job.done.is_set()


def test_run_after_waits_for_the_cancelled_ones(companion):
    c = companion()
    order = []
    entered = threading.Event()

    async def slow_to_die():
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # cleanup that awaits
            order.append("unwound")
            raise

    async def after():
        order.append("after")

    job = CoJob(slow_to_die())
    assert c.submit(job)
    assert entered.wait(DEADLINE)
    c.cancel([job])
    closing = CoJob(after())
    c.run_after([job], closing)
    assert closing.done.wait(DEADLINE)
    assert order == ["unwound", "after"]


def test_max_tasks_bounds_and_wakes_a_waiter(companion):
    c = companion(max_tasks=2)
    gate = asyncio.Event()
    loop = c.loop

    async def hold():
        await gate.wait()

    jobs = [CoJob(hold()) for _ in range(2)]
    for job in jobs:
        assert c.submit(job)
    waiter = Waiter()
    extra = CoJob(hold())
    assert c.submit(extra, waiter) is False
    assert not waiter.event.is_set()
    loop.call_soon_threadsafe(gate.set)
    assert waiter.event.wait(DEADLINE)
    assert c.submit(extra)
    assert extra.done.wait(DEADLINE)


def test_stop_lets_running_coroutines_finish_in_time(companion):
    c = companion()

    async def short():
        await asyncio.sleep(0.05)
        return "done"

    job = CoJob(short())
    assert c.submit(job)
    assert c.stop(DEADLINE) == 0
    assert job.outcome == ("ok", "done")
    late = short()
    with pytest.raises(RuntimeError):
        c.submit(CoJob(late))
    late.close()


def test_stop_cancels_what_outlives_the_deadline(companion):
    c = companion()
    entered = threading.Event()

    async def forever():
        entered.set()
        await asyncio.sleep(3600)

    job = CoJob(forever())
    assert c.submit(job)
    assert entered.wait(DEADLINE)
    t0 = time.monotonic()
    assert c.stop(0.05) == 1
    assert time.monotonic() - t0 < DEADLINE
    assert job.outcome == ("cancelled", None)


def test_stop_runs_what_was_submitted_just_before(companion):
    c = companion()

    async def quick():
        return 1

    jobs = [CoJob(quick()) for _ in range(20)]
    for job in jobs:
        assert c.submit(job)
    c.stop(DEADLINE)
    assert all(j.outcome == ("ok", 1) for j in jobs)


def test_a_coroutine_that_blocks_the_loop_is_left_behind_with_a_warning(companion, caplog):
    c = companion()
    release = threading.Event()
    entered = threading.Event()

    async def blocks():
        entered.set()
        release.wait(DEADLINE)  # the mistake: blocking inside async def

    assert c.submit(CoJob(blocks()))
    assert entered.wait(DEADLINE)
    import gev_core._companion as mod

    grace, mod.CANCEL_GRACE = mod.CANCEL_GRACE, 0.05
    try:
        c.stop(0.05)
    finally:
        mod.CANCEL_GRACE = grace
        release.set()
    assert any("did not stop" in r.getMessage() for r in caplog.records)
    wait_for(
        lambda: not [t for t in threading.enumerate() if t.name == "test-asyncio"],
        what="the thread to end once unblocked",
    )


def test_asyncio_to_thread_inside_a_coroutine_works_and_stops(companion):
    c = companion()

    async def uses_to_thread():
        return await asyncio.to_thread(lambda: threading.current_thread().name)

    job = CoJob(uses_to_thread())
    assert c.submit(job)
    assert job.done.wait(DEADLINE)
    kind, name = job.outcome
    assert kind == "ok" and name != "test-asyncio"


def test_errors_of_the_loop_itself_are_logged(companion, caplog):
    c = companion()

    async def leak_a_failed_task():
        asyncio.get_running_loop().create_task(asyncio.sleep(0)).add_done_callback(lambda _t: 1 / 0)
        await asyncio.sleep(0.01)

    job = CoJob(leak_a_failed_task())
    assert c.submit(job)
    assert job.done.wait(DEADLINE)
    wait_for(
        lambda: any("asyncio companion" in r.getMessage() for r in caplog.records),
        what="the loop's error logged",
    )


def test_asyncio_is_chosen_without_uvloop(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # "import uvloop" raises ImportError
    loop, is_uv = new_event_loop("auto")
    loop.close()
    assert not is_uv
    with pytest.raises(ImportError, match="pip install uvloop"):
        new_event_loop("uvloop")
    c = AsyncioCompanion("uvloop", name="test-asyncio")
    with pytest.raises(ImportError):
        c.start()
    c.stop(1)
    with pytest.raises(ValueError):
        new_event_loop("trio")


def test_start_is_idempotent_and_stop_of_a_never_started_one_is_a_no_op():
    c = AsyncioCompanion("asyncio", name="test-asyncio")
    assert c.stop(1) == 0
    with pytest.raises(RuntimeError):
        c.start()
    c2 = AsyncioCompanion("asyncio", name="test-asyncio")
    c2.start()
    loop = c2.loop
    c2.start()
    assert c2.loop is loop
    c2.stop(5)
    assert loop.is_closed()
