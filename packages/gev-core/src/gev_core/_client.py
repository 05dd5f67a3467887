"""A client: gev's loops without a listener, for programs that only open connections."""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Any

from ._errors import GevError
from ._handler import Handler
from ._server import Server

__all__ = ["Client"]

#: Server arguments about listening, which a Client does not take.
_LISTENING = frozenset(
    {
        "address",
        "network",
        "reuse_port",
        "backlog",
        "unix_mode",
        "sock",
        "ssl",
        "tls_handshake_timeout",
        "select_timeout",
    }
)


class Client(Server):
    """Event loops that open connections (:meth:`connect`) and accept none.

    A :class:`~gev_core.Server` without a listener: the same loops, handlers, protocols, water
    marks, plugins and :meth:`connect`; started and stopped the same way, and also in the
    background::

        with Client(protocol="line") as client:      # start_background() ... stop()
            conn = client.connect("127.0.0.1:1833", handler=MyHandler()).result()
            conn.send("hello")

    :param handler: the default handler of its connections (default: a
        :class:`~gev_core.Handler`, which ignores messages); :meth:`connect` takes one per
        connection.
    :param handle_signals: as for a server, but off by default (a client is usually part of a
        larger program).
    :param kwargs: any other keyword argument of :class:`~gev_core.Server` that is not about
        listening (``num_loops``, ``protocol``, ``load_balance``, ``high_water``,
        ``low_water``, ``max_write_buffer``, ``idle_time``, ``count_traffic``, ``plugins``,
        ``options``...).
    :raises TypeError: a listening argument (``address``, ``sock``, ``backlog``, ``ssl``...):
        a client's TLS is per connection (``connect(ssl=...)``).
    """

    def __init__(self, handler: Any = None, *, handle_signals: bool = False, **kwargs: Any) -> None:
        wrong = sorted(_LISTENING & kwargs.keys())
        if wrong:
            raise TypeError(f"a Client does not listen: {', '.join(wrong)} not accepted")
        self._thread: threading.Thread | None = None
        self._errors: list[BaseException] = []
        super().__init__(
            handler if handler is not None else Handler(),
            handle_signals=handle_signals,
            **kwargs,
        )

    def _open_listener(
        self,
        address: str | tuple[str, int],
        network: str,
        reuse_port: bool,
        backlog: int,
        unix_mode: int | None,
        sock: socket.socket | None,
    ) -> socket.socket | None:
        return None

    @property
    def port(self) -> int:
        """A client has no port: raises :class:`~gev_core.GevError`."""
        raise GevError("a Client does not listen: it has no port")

    def start_background(self, timeout: float = 10.0) -> None:
        """Run :meth:`start` in a daemon thread, and return once the loops run.

        :raises RuntimeError: already started, or the loops did not start within ``timeout``.
        """
        if self._thread is not None:
            raise RuntimeError("a Client can be started once")

        def run() -> None:
            try:
                self.start()
            except BaseException as exc:  # re-raised by stop()
                self._errors.append(exc)

        self._thread = threading.Thread(target=run, name="gev-client", daemon=True)
        self._thread.start()
        if not self.wait_started(timeout):
            raise RuntimeError(f"the client's loops did not start within {timeout} s")

    def stop(self, timeout: float = 5.0, *, wait: bool = True) -> None:
        """Close every connection (``on_close`` runs for each, pending output is flushed for
        up to ``timeout`` seconds) and stop the loops; see :meth:`Server.stop
        <gev_core.Server.stop>`. An error that ended a background :meth:`start` is raised
        here."""
        super().stop(timeout, wait=wait)
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout + 5.0)
        if self._errors:
            raise self._errors.pop()

    def __enter__(self) -> Client:
        self.start_background()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Client loops={self.num_loops} protocol={self._protocol.name!r}>"
