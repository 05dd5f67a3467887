"""Micro-benchmark: schedule + cancel of many timers.

Compares, per timer, the cost of scheduling a callback and cancelling it with

* gev-timers  ``LoopTimers.run_after`` + ``Timer.cancel`` (on the loop thread)
* asyncio     ``loop.call_later`` + ``TimerHandle.cancel`` (loop created, never run)
* heapq       ``heappush([when, seq, fn, args])`` + ``entry[2] = None`` (lazy
              cancel flag, the ``heapq`` documentation's priority-queue recipe
              without the lookup dict; the cancel is inlined, no method call)

in two patterns:

* bulk:  schedule N timers, then cancel all N (N timers outstanding at once)
* pairs: schedule one timer and cancel it straight away, N times

Delays are drawn once, uniformly from 1 ms to 60 s (request and idle timeouts),
with a fixed seed, and shared by all implementations. The cyclic GC is
disabled inside timed regions (like ``timeit``) because with a million live
objects its collections would dominate and add noise. Runs are interleaved
and the median of ``--repeat`` runs is reported, in process CPU time unless
``--clock wall`` is given.

Note what the lazy variants leave behind after "cancel": asyncio and heapq
still hold all N entries (removed later, when popped, or by asyncio's
compaction when the loop runs); gev-timers has removed every timer and keeps
only its bounded set of (now empty) buckets.

Run from the repository root::

    PYTHONPATH=packages/gev-timers/src python packages/gev-timers/benchmarks/schedule_cancel.py
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import random
import statistics
import sys
import time
from collections.abc import Callable
from heapq import heapify, heappop, heappush
from typing import Any

from gev_timers import LoopTimers


def _callback() -> None:
    pass


# CPU time of this process by default: the machine may be shared, and time
# spent descheduled is not the code's cost. --clock wall switches to
# perf_counter.
_clock: Callable[[], float] = time.process_time


# ---------------------------------------------------------------------------
# Implementations: each returns the seconds schedule + cancel took, the number
# of entries the structure still holds after every timer was cancelled, and
# (bulk only) the seconds it then takes to get rid of them.
# ---------------------------------------------------------------------------
def gev_bulk(delays: list[float]) -> tuple[float, int, float]:
    timers = LoopTimers()
    timers.next_deadline()  # bind to this thread: the loop-thread fast path
    run_after = timers.run_after
    cb = _callback
    t0 = _clock()
    handles = [run_after(d, cb) for d in delays]
    for h in handles:
        h.cancel()
    dt = _clock() - t0
    left = len(timers)
    # Clean-up: let the loop reach the end of the horizon; only the emptied
    # buckets are left to discard.
    t0 = _clock()
    timers.run_due(timers.clock.now() + 3600.0)
    return dt, left, _clock() - t0


def gev_pairs(delays: list[float]) -> tuple[float, int, float]:
    timers = LoopTimers()
    timers.next_deadline()
    run_after = timers.run_after
    cb = _callback
    t0 = _clock()
    for d in delays:
        run_after(d, cb).cancel()
    dt = _clock() - t0
    return dt, len(timers), 0.0


def asyncio_bulk(delays: list[float]) -> tuple[float, int, float]:
    loop = asyncio.new_event_loop()
    try:
        call_later = loop.call_later
        cb = _callback
        t0 = _clock()
        handles = [call_later(d, cb) for d in delays]
        for h in handles:
            h.cancel()
        dt = _clock() - t0
        scheduled = loop._scheduled  # type: ignore[attr-defined]
        left = len(scheduled)
        # Clean-up: what BaseEventLoop._run_once does once more than half the
        # scheduled handles are cancelled (filter + heapify), without running
        # the loop.
        t0 = _clock()
        live = [h for h in scheduled if not h._cancelled]
        heapify(live)
        loop._scheduled = live  # type: ignore[attr-defined]
        return dt, left, _clock() - t0
    finally:
        loop.close()


def asyncio_pairs(delays: list[float]) -> tuple[float, int, float]:
    loop = asyncio.new_event_loop()
    try:
        call_later = loop.call_later
        cb = _callback
        t0 = _clock()
        for d in delays:
            call_later(d, cb).cancel()
        dt = _clock() - t0
        return dt, len(loop._scheduled), 0.0  # type: ignore[attr-defined]
    finally:
        loop.close()


class HeapTimers:
    """Minimal heap scheduler: the entry list is the handle; entry[2] = None cancels."""

    __slots__ = ("_count", "_heap", "_now")

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []
        self._count = itertools.count()
        self._now = time.monotonic

    def call_later(self, delay: float, fn: Callable[..., object], *args: object) -> list[Any]:
        entry = [self._now() + delay, next(self._count), fn, args]
        heappush(self._heap, entry)
        return entry


def heapq_bulk(delays: list[float]) -> tuple[float, int, float]:
    sched = HeapTimers()
    call_later = sched.call_later
    cb = _callback
    t0 = _clock()
    handles = [call_later(d, cb) for d in delays]
    for h in handles:
        h[2] = None
    dt = _clock() - t0
    heap = sched._heap
    left = len(heap)
    # Clean-up: a lazy heap pops dead entries as their time comes.
    t0 = _clock()
    while heap:
        heappop(heap)
    return dt, left, _clock() - t0


def heapq_pairs(delays: list[float]) -> tuple[float, int, float]:
    sched = HeapTimers()
    call_later = sched.call_later
    cb = _callback
    t0 = _clock()
    for d in delays:
        call_later(d, cb)[2] = None
    dt = _clock() - t0
    return dt, len(sched._heap), 0.0


IMPLS: dict[str, dict[str, Callable[[list[float]], tuple[float, int, float]]]] = {
    "bulk": {"gev-timers": gev_bulk, "asyncio": asyncio_bulk, "heapq+flag": heapq_bulk},
    "pairs": {"gev-timers": gev_pairs, "asyncio": asyncio_pairs, "heapq+flag": heapq_pairs},
}


def _timed(
    fn: Callable[[list[float]], tuple[float, int, float]], delays: list[float]
) -> tuple[float, int, float]:
    gc.collect()
    gc.disable()
    try:
        return fn(delays)
    finally:
        gc.enable()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="timers per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per implementation")
    parser.add_argument(
        "--clock", choices=["process", "wall"], default="process", help="what to time with"
    )
    args = parser.parse_args(argv)
    global _clock
    _clock = time.process_time if args.clock == "process" else time.perf_counter

    rng = random.Random(20240601)
    delays = [rng.uniform(0.001, 60.0) for _ in range(args.n)]
    print(
        f"Python {sys.version.split()[0]}, N = {args.n:,} timers, delays U(1 ms, 60 s), "
        f"median of {args.repeat} interleaved runs, GC off while timing, {args.clock} time"
    )

    for pattern, impls in IMPLS.items():
        times: dict[str, list[float]] = {name: [] for name in impls}
        cleanup: dict[str, list[float]] = {name: [] for name in impls}
        left: dict[str, int] = {}
        for fn in impls.values():  # warm-up: page in memory, fill caches
            _timed(fn, delays[: max(1, args.n // 10)])
        for _ in range(args.repeat):
            for name, fn in impls.items():
                dt, left[name], dc = _timed(fn, delays)
                times[name].append(dt)
                cleanup[name].append(dc)
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        base = medians["gev-timers"]
        print()
        print(f"{pattern}: schedule + cancel")
        header = (
            f"  {'implementation':<12} {'total s':>8} {'ns/timer':>9} {'vs gev':>7} "
            f"{'min s':>7} {'max s':>7} {'left':>10}"
        )
        if pattern == "bulk":
            header += f" {'clean-up s':>11} {'+clean-up vs gev':>17}"
        print(header)
        base_all = base + statistics.median(cleanup["gev-timers"])
        for name, med in medians.items():
            line = (
                f"  {name:<12} {med:>8.3f} {med / args.n * 1e9:>9.0f} {med / base:>6.2f}x "
                f"{min(times[name]):>7.3f} {max(times[name]):>7.3f} {left[name]:>10,}"
            )
            if pattern == "bulk":
                clean = statistics.median(cleanup[name])
                line += f" {clean:>11.3f} {(med + clean) / base_all:>16.2f}x"
            print(line)
    print()
    print(
        "'vs gev' > 1.00x means slower than gev-timers. 'left' = entries still held after\n"
        "cancelling all; 'clean-up' = time to discard them afterwards (gev: run_due past the\n"
        "horizon; asyncio: its filter + heapify compaction; heapq: popping the dead entries)."
    )


if __name__ == "__main__":
    main()
