"""The offload thread pool: bounded threads, a bounded queue, waiters for room, shutdown."""

from __future__ import annotations

import threading
import time

import pytest
from gev_core._threadpool import ThreadPool

DEADLINE = 30.0


def wait_for(cond, timeout=DEADLINE, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


class Gate:
    """A job that blocks until released and records where and whether it ran."""

    def __init__(self, name="job", release=None):
        self.name = name
        self.release = release or threading.Event()
        self.started = threading.Event()
        self.done = threading.Event()
        self.thread = None

    def run(self):
        self.thread = threading.current_thread()
        self.started.set()
        self.release.wait(DEADLINE)
        self.done.set()

    def __repr__(self):
        return f"<Gate {self.name}>"


class Waiter:
    def __init__(self):
        self.calls = 0
        self.event = threading.Event()

    def room_available(self):
        self.calls += 1
        self.event.set()


@pytest.fixture
def pool():
    pools = []

    def make(threads, queue):
        p = ThreadPool(threads, queue, name="test-pool")
        pools.append(p)
        return p

    yield make
    for p in pools:
        p.shutdown(5)


def test_no_thread_before_the_first_job(pool):
    before = threading.active_count()
    p = pool(4, 4)
    assert p.threads == 0 and threading.active_count() == before
    job = Gate()
    job.release.set()
    assert p.submit(job)
    assert job.done.wait(DEADLINE)
    assert p.threads == 1
    assert job.thread.name.startswith("test-pool-") and job.thread.daemon


def test_threads_grow_to_the_limit_and_no_further(pool):
    p = pool(3, 100)
    release = threading.Event()
    jobs = [Gate(i, release) for i in range(10)]
    for job in jobs:
        assert p.submit(job)
    wait_for(lambda: sum(j.started.is_set() for j in jobs) == 3, what="3 jobs running")
    assert p.threads == 3
    assert p.queued == 7
    release.set()
    for job in jobs:
        assert job.done.wait(DEADLINE)
    assert p.threads == 3
    assert len({j.thread for j in jobs}) == 3


def test_idle_threads_are_reused(pool):
    p = pool(8, 8)
    for i in range(20):
        job = Gate(i)
        job.release.set()
        assert p.submit(job)
        assert job.done.wait(DEADLINE)
    assert p.threads == 1


def test_a_full_queue_refuses_and_wakes_waiters_in_order_one_per_taken_job(pool):
    p = pool(1, 2)
    release = threading.Event()
    running = Gate("running", release)
    assert p.submit(running)
    assert running.started.wait(DEADLINE)
    queued = [Gate(f"q{i}", release) for i in range(2)]
    for job in queued:
        assert p.submit(job)
    w1, w2 = Waiter(), Waiter()
    refused = Gate("refused", release)
    assert p.submit(refused, w1) is False
    assert p.submit(refused, w1) is False  # asking twice: still one wake-up
    assert p.submit(refused, w2) is False
    assert p.waiters == 2 and p.queued == 2
    release.set()
    assert w1.event.wait(DEADLINE) and w2.event.wait(DEADLINE)
    for job in [running, *queued]:
        assert job.done.wait(DEADLINE)
    assert (w1.calls, w2.calls) == (1, 1)
    assert not refused.started.is_set()  # refused means not queued
    assert p.submit(refused)
    assert refused.done.wait(DEADLINE)


def test_pass_room_and_forget(pool):
    p = pool(1, 1)
    release = threading.Event()
    assert p.submit(Gate("a", release))
    wait_for(lambda: p.queued == 0, what="a running")
    assert p.submit(Gate("b", release))
    w1, w2, w3 = Waiter(), Waiter(), Waiter()
    for w in (w1, w2, w3):
        assert not p.submit(Gate("x"), w)
    p.forget(w2)
    p.pass_room()  # as if w0 had been woken and could not use the room
    assert w1.calls == 1 and w3.calls == 0
    p.pass_room()
    assert w2.calls == 0 and w3.calls == 1
    release.set()


def test_shutdown_drops_queued_jobs_and_waits_for_running_ones(pool):
    p = pool(1, 5)
    running = Gate("running")
    assert p.submit(running)
    assert running.started.wait(DEADLINE)
    queued = [Gate(i) for i in range(3)]
    for job in queued:
        assert p.submit(job)
    threading.Timer(0.05, running.release.set).start()
    dropped, busy = p.shutdown(DEADLINE)
    assert (dropped, busy) == (3, 0)
    assert running.done.is_set()
    assert not any(j.started.is_set() for j in queued)
    with pytest.raises(RuntimeError):
        p.submit(Gate("late"))
    assert p.shutdown(1) == (0, 0)  # idempotent


def test_shutdown_is_bounded_when_a_job_never_ends(pool):
    p = pool(2, 2)
    stuck = Gate("stuck")
    assert p.submit(stuck)
    assert stuck.started.wait(DEADLINE)
    t0 = time.monotonic()
    dropped, busy = p.shutdown(0.1)
    assert busy == 1 and dropped == 0
    assert time.monotonic() - t0 < DEADLINE
    stuck.release.set()
    assert stuck.done.wait(DEADLINE)


def test_every_thread_ends_at_shutdown(pool):
    p = pool(4, 64)
    jobs = [Gate(i) for i in range(16)]
    for job in jobs:
        job.release.set()
        assert p.submit(job)
    for job in jobs:
        assert job.done.wait(DEADLINE)
    assert p.shutdown(DEADLINE) == (0, 0)
    assert not [t for t in threading.enumerate() if t.name.startswith("test-pool-")]


def test_a_job_that_raises_is_logged_and_the_thread_survives(pool, caplog):
    class Broken:
        def run(self):
            raise RuntimeError("bug in a job")

    p = pool(1, 4)
    assert p.submit(Broken())
    after = Gate("after")
    after.release.set()
    assert p.submit(after)
    assert after.done.wait(DEADLINE)
    assert p.threads == 1
    assert any("escaped its error handling" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("threads", "queue"), [(0, 1), (1, 0)])
def test_bounds_are_checked(threads, queue):
    with pytest.raises(ValueError):
        ThreadPool(threads, queue)
