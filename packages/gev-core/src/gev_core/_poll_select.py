"""Portable fallback on :mod:`selectors`, for platforms with neither epoll nor kqueue.

Slower (a Python-level translation per event) but complete; the bits match the epoll backend.
"""

from __future__ import annotations

import selectors

READ = 0x001
WRITE = 0x004
ERROR = 0x008 | 0x010


def _to_sel(mask: int) -> int:
    return (selectors.EVENT_READ if mask & READ else 0) | (
        selectors.EVENT_WRITE if mask & WRITE else 0
    )


class SelectPoller:
    __slots__ = ("_parked", "_sel")

    name = "select"

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        # selectors refuses an empty interest set, so fds with no interest are only remembered.
        self._parked: set[int] = set()

    def register(self, fd: int, mask: int) -> None:
        events = _to_sel(mask)
        if events:
            self._sel.register(fd, events)
        else:
            self._parked.add(fd)

    def modify(self, fd: int, mask: int) -> None:
        self.unregister(fd)
        self.register(fd, mask)

    def unregister(self, fd: int) -> None:
        self._parked.discard(fd)
        try:
            self._sel.unregister(fd)
        except (KeyError, ValueError, OSError):
            pass

    def poll(self, timeout: float = -1) -> list[tuple[int, int]]:
        out = []
        for key, events in self._sel.select(None if timeout < 0 else timeout):
            bits = (READ if events & selectors.EVENT_READ else 0) | (
                WRITE if events & selectors.EVENT_WRITE else 0
            )
            out.append((key.fd, bits))
        return out

    def close(self) -> None:
        self._sel.close()
