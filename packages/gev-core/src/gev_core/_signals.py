"""The one place gev installs signal handlers.

Python runs signal handlers on the main thread only, between two bytecodes of whatever it was
doing, so every handler gev installs does as little as possible: it records the signal (a
``deque`` append, a flag) or asks a server to stop without waiting, and the code that owns the
state acts on it. Off the main thread :func:`capture_signals` installs nothing and says so; the
caller is then stopped through its API (``Server.stop``, ``Supervisor.stop``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["capture_signals", "signal_name"]


def signal_name(signum: int) -> str:
    """``"SIGTERM"`` for ``signal.SIGTERM``; ``"signal 42"`` for a number Python has no name for."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@contextlib.contextmanager
def capture_signals(
    handler: Callable[[int], None],
    signals: Iterable[int],
    *,
    wakeup_fd: int | None = None,
) -> Iterator[bool]:
    """Call ``handler(signum)`` for ``signals`` inside the block; restore the old handlers after.

    :param wakeup_fd: also write each signal's number to this non-blocking fd
        (``signal.set_wakeup_fd``), so that a thread sleeping in ``select`` wakes up at once.
    :return: (as the ``with`` target) whether the handlers were installed: only the main thread
        can install them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return

    def on_signal(signum: int, frame: Any) -> None:
        handler(signum)

    previous: dict[int, Any] = {}
    previous_fd: int | None = None
    try:
        for sig in signals:
            previous[sig] = signal.signal(sig, on_signal)
        if wakeup_fd is not None:
            previous_fd = signal.set_wakeup_fd(wakeup_fd, warn_on_full_buffer=False)
        yield True
    finally:
        if previous_fd is not None:
            signal.set_wakeup_fd(previous_fd)
        for sig, old in previous.items():
            # None: a handler installed from C, which Python cannot put back.
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
