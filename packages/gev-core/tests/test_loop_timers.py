"""``EventLoop.call_later``: the loop's own cancellable timers, for plugins and housekeeping."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from typing import Any

import pytest
from gev_core import Handler, TimerHandle
from gev_core.testing import serve


class Nothing(Handler):
    def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
        return None


class Payload:
    """Something a timer's arguments keep alive."""


def test_call_later_runs_on_the_loop_thread_in_deadline_order() -> None:
    ran: list[tuple[str, int]] = []
    done = threading.Event()
    with serve(Nothing()) as server:
        loop = server.loops[0]

        def note(name: str) -> None:
            ran.append((name, threading.get_ident()))
            if len(ran) == 3:
                done.set()

        handles = [loop.call_later(d, note, n) for d, n in ((0.2, "c"), (0.05, "a"), (0.1, "b"))]
        assert all(isinstance(h, TimerHandle) for h in handles)
        assert done.wait(10)
        assert [n for n, _ in ran] == ["a", "b", "c"]
        assert {t for _, t in ran} == {loop._thread_id}
        assert not any(h.cancelled for h in handles)
        assert not any(h.cancel() for h in handles)  # already ran: nothing to prevent


def test_a_cancelled_timer_never_runs_and_lets_go_of_its_arguments_at_once() -> None:
    ran = threading.Event()
    with serve(Nothing()) as server:
        loop = server.loops[0]
        payload = Payload()
        ref = weakref.ref(payload)
        handle = loop.call_later(0.2, lambda p: ran.set(), payload)
        del payload
        assert handle.cancel() is True
        assert handle.cancelled and handle.cancel() is False
        gc.disable()
        try:
            assert ref() is None  # not kept until the deadline passes
        finally:
            gc.enable()
        time.sleep(0.4)
        assert not ran.is_set()


def test_many_cancelled_timers_do_not_pile_up_in_the_heap() -> None:
    with serve(Nothing()) as server:
        loop = server.loops[0]
        done = threading.Event()

        def schedule_and_cancel() -> None:
            for _ in range(20):
                handles = [loop.call_later(3600, print) for _ in range(1000)]
                for h in handles:
                    h.cancel()
            done.set()

        loop.call_soon(schedule_and_cancel)
        assert done.wait(20)
        assert len(loop._timers) < 2000


def test_call_later_from_another_thread_wakes_the_loop() -> None:
    ran = threading.Event()
    with serve(Nothing()) as server:
        loop = server.loops[0]
        time.sleep(0.1)  # the loop now blocks in poll() with nothing scheduled
        handle = loop.call_later(0.05, ran.set)
        assert ran.wait(10)
        assert not handle.cancelled


def test_call_later_checks_its_delay() -> None:
    with serve(Nothing()) as server:
        for bad in (float("nan"), float("inf")):
            with pytest.raises(ValueError):
                server.loops[0].call_later(bad, print)
