"""Chooses the poller backend for this platform, and the cross-thread wake-up.

Every backend has the same small interface (``register``, ``modify``, ``unregister``,
``poll(timeout) -> [(fd, mask)]``, ``close``) and the same mask bits (epoll's), so the loop never
branches on the platform. ``GEV_POLLER=select`` forces the portable fallback (tests use it).
"""

from __future__ import annotations

import os
import select
import sys
from typing import Protocol as _TypingProtocol

from . import _poll_select

READ = 0x001
WRITE = 0x004
ERROR = 0x008 | 0x010


class Poller(_TypingProtocol):
    name: str

    def register(self, fd: int, mask: int) -> None: ...
    def modify(self, fd: int, mask: int) -> None: ...
    def unregister(self, fd: int) -> None: ...
    def poll(self, timeout: float, /) -> list[tuple[int, int]]: ...
    def close(self) -> None: ...


def default_backend() -> str:
    forced = os.environ.get("GEV_POLLER", "").strip().lower()
    if forced:
        return forced
    if hasattr(select, "epoll"):
        return "epoll"
    if hasattr(select, "kqueue"):
        return "kqueue"
    return "select"


def make_poller(backend: str | None = None) -> Poller:
    backend = backend or default_backend()
    if backend == "epoll":
        from ._poll_epoll import EpollPoller

        return EpollPoller()
    if backend == "kqueue":
        from ._poll_kqueue import KqueuePoller

        return KqueuePoller()
    if backend == "select":
        return _poll_select.SelectPoller()
    raise ValueError(f"unknown poller backend {backend!r} (expected epoll, kqueue or select)")


class Waker:
    """Wakes a loop blocked in ``poll`` from another thread: an eventfd on Linux, a pipe elsewhere.

    Writers coalesce: the loop asks for at most one wake-up per batch of cross-thread tasks.
    """

    __slots__ = ("_rfd", "_wfd", "fd")

    def __init__(self) -> None:
        if sys.platform.startswith("linux") and hasattr(os, "eventfd"):
            self.fd = self._rfd = self._wfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:
            r, w = os.pipe()
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            self.fd, self._rfd, self._wfd = r, r, w

    def wake(self) -> None:
        try:
            os.write(self._wfd, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except (BlockingIOError, OSError):
            # A full pipe or a saturated eventfd already means "wake up": nothing is lost.
            pass

    def drain(self) -> None:
        try:
            while os.read(self._rfd, 4096):
                if self._rfd == self._wfd:  # eventfd: one read resets the counter
                    break
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        for fd in {self._rfd, self._wfd}:
            try:
                os.close(fd)
            except OSError:
                pass
