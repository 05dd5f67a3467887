"""Linux epoll backend.

Level-triggered on purpose: the reactor does exactly one read per readiness event (fairness
between connections), so whatever is left in the kernel buffer must be reported again on the next
poll, which edge-triggered mode would not do. Interest changes are rare by design: a connection is
registered for READ once and WRITE is added only while its output is backlogged, so ``modify``
stays off the hot path.

The event masks are epoll's own bits, so :meth:`poll` hands the kernel's list through untouched.
Where gev-core's C kernel is installed, ``poll`` is its ``epoll_wait`` on this epoll descriptor
instead of ``select.epoll.poll``: the same list, built without a format string per event, and
the GIL released only when the call may block (``_fdio.c``).
"""

from __future__ import annotations

import select
from collections.abc import Callable
from functools import partial

_epoll_wait: Callable[[int, float], list[tuple[int, int]]] | None
try:
    from ._fdio import epoll_wait as _epoll_wait
except ImportError:  # a pure install, GEV_PURE_PYTHON=1
    _epoll_wait = None

READ: int = select.EPOLLIN
WRITE: int = select.EPOLLOUT
ERROR: int = select.EPOLLERR | select.EPOLLHUP


class EpollPoller:
    __slots__ = ("_ep", "poll")

    name = "epoll"

    def __init__(self) -> None:
        self._ep = select.epoll()
        # A C callable: the loop calls ``poll(timeout)`` with no Python frame between.
        self.poll: Callable[[float], list[tuple[int, int]]] = (
            self._ep.poll if _epoll_wait is None else partial(_epoll_wait, self._ep.fileno())
        )

    def register(self, fd: int, mask: int) -> None:
        self._ep.register(fd, mask)

    def modify(self, fd: int, mask: int) -> None:
        self._ep.modify(fd, mask)

    def unregister(self, fd: int) -> None:
        try:
            self._ep.unregister(fd)
        except (OSError, ValueError):
            # Already gone (closed fd or closed poller): unregistering is idempotent for callers.
            pass

    def close(self) -> None:
        self._ep.close()
