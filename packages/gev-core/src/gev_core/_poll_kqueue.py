"""macOS / BSD kqueue backend.

kqueue keeps one filter per direction, so a READ|WRITE mask is two kevents. We remember each
fd's mask to add and delete exactly the filters that change (Go gev inverted its error checks here
and never removed the write filter, which made macOS spin). :meth:`poll` folds the kevents back into
``(fd, mask)`` pairs with the same bits as the epoll backend.
"""

from __future__ import annotations

import select
from typing import Any

READ = 0x001
WRITE = 0x004
ERROR = 0x008 | 0x010

_kq: Any = select  # select.kqueue only exists on BSD-family platforms


class KqueuePoller:
    __slots__ = ("_kq", "_masks")

    name = "kqueue"

    def __init__(self) -> None:
        self._kq = _kq.kqueue()
        self._masks: dict[int, int] = {}

    def _apply(self, fd: int, old: int, new: int) -> None:
        changes = []
        for bit, filt in ((READ, _kq.KQ_FILTER_READ), (WRITE, _kq.KQ_FILTER_WRITE)):
            if new & bit and not old & bit:
                changes.append(_kq.kevent(fd, filt, _kq.KQ_EV_ADD))
            elif old & bit and not new & bit:
                changes.append(_kq.kevent(fd, filt, _kq.KQ_EV_DELETE))
        if changes:
            self._kq.control(changes, 0, 0)

    def register(self, fd: int, mask: int) -> None:
        self._apply(fd, 0, mask)
        self._masks[fd] = mask

    def modify(self, fd: int, mask: int) -> None:
        self._apply(fd, self._masks.get(fd, 0), mask)
        self._masks[fd] = mask

    def unregister(self, fd: int) -> None:
        mask = self._masks.pop(fd, 0)
        try:
            self._apply(fd, mask, 0)
        except OSError:
            pass

    def poll(self, timeout: float = -1) -> list[tuple[int, int]]:
        kevents = self._kq.control(None, 1024, None if timeout < 0 else timeout)
        merged: dict[int, int] = {}
        for kev in kevents:
            bits = READ if kev.filter == _kq.KQ_FILTER_READ else WRITE
            if kev.flags & _kq.KQ_EV_EOF and kev.filter == _kq.KQ_FILTER_WRITE:
                bits |= ERROR
            if kev.flags & _kq.KQ_EV_ERROR:
                bits |= ERROR
            merged[kev.ident] = merged.get(kev.ident, 0) | bits
        return list(merged.items())

    def close(self) -> None:
        self._kq.close()
