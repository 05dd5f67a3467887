"""Outbound connections: one attempt from an address to a ready :class:`Connection`.

Theory of operation. An attempt lives on one loop and runs on its thread from ``_start`` on:

1. *Resolve.* A ``unix:`` address and a literal IP need nothing; a host name goes to
   ``getaddrinfo`` in a small thread pool shared by every loop of the process (it blocks), and
   the result comes back to the loop with ``call_soon_threadsafe``.
2. *Connect*, each resolved address in order until one succeeds: a non-blocking socket, a
   ``connect`` that usually says ``EINPROGRESS``, then the socket's fd registered for WRITE in
   the loop's poller. The loop hands the event to the attempt (``EventLoop._on_internal``: the
   fd is not a connection yet), which reads ``SO_ERROR``.
3. *Ready.* The socket becomes a :class:`Connection` of the loop, like an accepted one: the
   same handler and protocol machinery, the same read strategies. With TLS it first sends its
   ClientHello and is read through the TLS stage; the connection's ``_connecting`` points back
   at the attempt until ``_establish`` (protocol ``connection_made``, the plugins, the
   handler's ``on_connect``) reports it ready, or ``_finalize`` reports it lost.

One timer (the loop's ``call_later``) bounds the whole attempt: resolution, connect and TLS
handshake. Every failure goes to the caller -- the callback, or the future of
``Server.connect`` -- and nothing is logged for it: whether a refused connection matters is the
caller's call. A cancelled attempt (or a stopping loop) closes its socket and, for a
cancellation, calls nothing.
"""

from __future__ import annotations

import errno
import socket
import ssl as _ssl
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ._bind import format_address, is_unix_address, parse_address
from ._connection import CLOSED, Connection
from ._errors import ConnectError, ConnectRefused, ConnectTimeout, ResolveError, TLSError
from ._jobs import AsyncHandler, coroutine_callbacks
from ._poll import WRITE
from ._protocol import Protocol
from ._sslcontext import client_context
from ._stats import R_LOCAL, R_STOP
from ._tls import TLSEngine

if TYPE_CHECKING:
    from ._loop import EventLoop, TimerHandle

__all__ = ["ConnectAttempt", "ConnectCallback"]

#: What ``EventLoop.connect`` calls once the attempt is over, on the loop thread: ``(conn,
#: None)`` for a ready connection, ``(None, exc)`` for a failure.
ConnectCallback = Callable[[Connection | None, BaseException | None], Any]

#: Threads of the shared resolver pool (``getaddrinfo`` blocks).
_RESOLVER_THREADS = 4
_resolver: ThreadPoolExecutor | None = None
_resolver_lock = threading.Lock()

_IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EINTR})

# Attempt states.
_NEW, _RESOLVING, _CONNECTING, _HANDSHAKE, _DONE = 0, 1, 2, 3, 4


def _resolver_pool() -> ThreadPoolExecutor:
    global _resolver
    with _resolver_lock:
        if _resolver is None:
            _resolver = ThreadPoolExecutor(_RESOLVER_THREADS, thread_name_prefix="gev-resolve")
        return _resolver


def _literal_family(host: str) -> int:
    """AF_INET or AF_INET6 for a literal IP address, else 0 (a name to resolve)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family
    return 0


def split_address(address: str | tuple[str, int]) -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"`` or ``(host, port)`` as ``(host, port)``.

    :raises ValueError: no host, or not an address.
    """
    if isinstance(address, tuple):
        host, port = str(address[0]), int(address[1])
    else:
        host, sep, port_s = address.rpartition(":")
        if not sep or not port_s.isdigit():
            raise ValueError(
                f"address {address!r} must look like 'host:port', '[v6]:port' or 'unix:/path'"
            )
        port = int(port_s)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
    if not host:
        raise ValueError(f"address {address!r} names no host to connect to")
    if not 0 < port <= 65535:
        raise ValueError(f"port {port} out of range")
    return host, port


class ConnectAttempt:
    """One outbound connection being opened by a loop (:meth:`EventLoop.connect
    <gev_core.EventLoop.connect>`); :meth:`cancel` abandons it.

    Built by ``EventLoop.connect`` (the arguments are checked there, in the caller's thread);
    everything else runs on the loop's thread.
    """

    __slots__ = (
        "_callback",
        "_conn",
        "_handler",
        "_hostname",
        "_last_error",
        "_loop",
        "_protocol",
        "_sock",
        "_ssl",
        "_state",
        "_targets",
        "_timeout",
        "_timer",
        "address",
        "host",
        "port",
    )

    def __init__(
        self,
        loop: EventLoop,
        address: str | tuple[str, int],
        handler: Any,
        *,
        callback: ConnectCallback,
        protocol: Protocol | type[Protocol] | str | None,
        ssl: _ssl.SSLContext | bool | None,
        server_hostname: str | None,
        timeout: float | None,
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be > 0 seconds or None")
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {callback!r}")
        self._loop = loop
        server = loop.server
        #: The address as given, formatted (``"host:port"``, ``"unix:/path"``): in every error.
        self.address = format_address(address) if isinstance(address, tuple) else address
        self._targets: list[tuple[int, Any]] | None
        if is_unix_address(address):
            family, path = parse_address(address)
            self.host, self.port = "", 0
            self._targets = [(family, path)]
        else:
            self.host, self.port = split_address(address)
            family = _literal_family(self.host)
            self._targets = [(family, (self.host, self.port))] if family else None
        if handler is None:
            self._handler: Any = loop._handler
        else:
            if not callable(getattr(handler, "on_message", None)):
                raise TypeError(f"handler {handler!r} has no on_message(conn, ctx, data) method")
            self._handler = AsyncHandler(handler) if coroutine_callbacks(handler) else handler
        self._protocol = server._outbound_protocol(protocol)
        if ssl is True:
            ssl = client_context()
        elif ssl is False:
            ssl = None
        if ssl is not None:
            if not isinstance(ssl, _ssl.SSLContext):
                raise TypeError(f"ssl must be an ssl.SSLContext, True or None, not {ssl!r}")
            if ssl.protocol == _ssl.PROTOCOL_TLS_SERVER:
                raise ValueError(
                    "ssl is a server context: build the client's with gev_core.client_context()"
                )
            if server_hostname is None and ssl.check_hostname:
                if not self.host:
                    raise ValueError(
                        f"TLS to {self.address} needs a server_hostname to verify the peer against"
                    )
                server_hostname = self.host
        self._ssl: _ssl.SSLContext | None = ssl
        self._hostname = server_hostname
        self._timeout = timeout
        self._callback: ConnectCallback | None = callback
        self._timer: TimerHandle | None = None
        self._sock: socket.socket | None = None
        self._conn: Connection | None = None
        self._last_error: OSError | None = None
        self._state = _NEW

    # ------------------------------------------------------------------ public

    @property
    def done(self) -> bool:
        """True once the attempt is over: ready, failed or cancelled."""
        return self._state == _DONE

    def cancel(self) -> None:
        """Abandon the attempt if it is not over yet: its socket is closed, and neither the
        callback nor any of the handler's callbacks is called. Any thread."""
        loop = self._loop
        if loop.in_loop_thread():
            self._cancel()
        else:
            loop.call_soon_threadsafe(self._cancel)

    def __repr__(self) -> str:
        state = ("new", "resolving", "connecting", "TLS handshake", "done")[self._state]
        return f"<ConnectAttempt {self.address} {state}>"

    # ------------------------------------------------------------------ loop thread

    def _start(self) -> None:
        if self._state != _NEW:
            return  # cancelled before it started
        loop = self._loop
        if loop._stopping:
            self._fail(
                ConnectError(f"connect to {self.address} abandoned: stopping", address=self.address)
            )
            return
        loop._attempts.add(self)
        if self._timeout is not None:
            self._timer = loop.call_later(self._timeout, self._expired)
        if self._targets is not None:
            self._state = _CONNECTING
            self._try_next()
            return
        self._state = _RESOLVING
        future = _resolver_pool().submit(
            socket.getaddrinfo, self.host, self.port, socket.AF_UNSPEC, socket.SOCK_STREAM
        )
        future.add_done_callback(self._resolved_elsewhere)

    def _resolved_elsewhere(self, future: Future[Any]) -> None:
        # On a resolver thread: back to the loop.
        self._loop.call_soon_threadsafe(self._resolved, future)

    def _resolved(self, future: Future[Any]) -> None:
        if self._state != _RESOLVING:
            return  # timed out, cancelled or abandoned meanwhile
        exc = future.exception()
        if exc is not None:
            error = ResolveError(
                f"connect to {self.address} failed: cannot resolve {self.host!r} ({exc})",
                address=self.address,
                errno=getattr(exc, "errno", None),
            )
            error.__cause__ = exc
            self._fail(error)
            return
        targets: list[tuple[int, Any]] = []
        for family, _, _, _, sockaddr in future.result():
            if (family, sockaddr) not in targets:
                targets.append((family, sockaddr))
        if not targets:
            self._fail(
                ResolveError(
                    f"connect to {self.address} failed: {self.host!r} has no address",
                    address=self.address,
                )
            )
            return
        self._targets = targets
        self._state = _CONNECTING
        self._try_next()

    def _try_next(self) -> None:
        # Connect to the next resolved address; after the last, fail with its error.
        targets = self._targets
        assert targets is not None
        while targets:
            family, sockaddr = targets.pop(0)
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:
                self._last_error = exc
                continue
            try:
                sock.setblocking(False)
                if family != socket.AF_UNIX and self._loop.server.tcp_nodelay:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                err = sock.connect_ex(sockaddr)
            except OSError as exc:
                sock.close()
                self._last_error = exc
                continue
            if err == 0:
                self._connected(sock, sockaddr)
                return
            if err in _IN_PROGRESS:
                self._sock = sock
                fd = sock.fileno()
                self._loop._connecting[fd] = self
                self._loop._poller.register(fd, WRITE)
                return
            sock.close()
            self._last_error = OSError(err, _strerror(err))
        self._fail(self._error())

    def _on_ready(self, ev: int) -> None:
        # The loop: the socket's connect is over (writable, or an error/hang-up event).
        sock = self._release_socket()
        if sock is None:
            return
        try:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError as exc:
            err = exc.errno or errno.EIO
        if err:
            sock.close()
            self._last_error = OSError(err, _strerror(err))
            self._try_next()
            return
        try:
            peer = sock.getpeername()
        except OSError as exc:  # gone again already
            sock.close()
            self._last_error = exc
            self._try_next()
            return
        self._connected(sock, peer)

    def _release_socket(self) -> socket.socket | None:
        sock = self._sock
        if sock is None:
            return None
        self._sock = None
        fd = sock.fileno()
        loop = self._loop
        loop._connecting.pop(fd, None)
        try:
            loop._poller.unregister(fd)
        except (KeyError, OSError, ValueError):
            pass
        return sock

    def _connected(self, sock: socket.socket, peer: Any) -> None:
        # TCP (or the Unix socket) is connected: the connection of this loop it becomes.
        loop = self._loop
        fd = sock.detach()
        loop._assigned_count += 1
        conn = self._conn = Connection(fd, peer, loop, self._handler, self._protocol)
        rare = conn._extra()
        rare.outbound = True
        rare.connecting = self
        loop._conns[conn._fd_obj] = conn  # its int object (see EventLoop._add)
        context = self._ssl
        if context is not None:
            self._state = _HANDSHAKE
            try:
                tls = TLSEngine(context, server_side=False, server_hostname=self._hostname)
                hello = tls.start()
            except Exception as exc:  # e.g. a malformed server_hostname
                conn._extra().connecting = None
                conn._abort(R_LOCAL)
                self._failed_with(exc)
                return
            conn._refresh()
            conn._mask = conn._interest()
            loop._poller.register(fd, conn._mask)
            conn._start_client_tls(tls, hello)
            return
        conn._refresh()
        conn._mask = conn._interest()
        loop._poller.register(fd, conn._mask)
        conn._establish()  # ready: _succeeded, or (it closed at once) _lost

    def _succeeded(self, conn: Connection) -> None:
        # Connection._establish: connected, handshake done, on_connect called.
        if self._state == _DONE:
            return
        self._finish()
        callback = self._callback
        self._callback = None
        self._conn = None
        if callback is not None:
            try:
                callback(conn, None)
            except Exception:
                from ._loop import logger

                logger.exception("the connect callback for %s failed", self.address)

    def _lost(self, conn: Connection) -> None:
        # Connection._finalize: it closed before it was ready.
        self._failed_with(
            ConnectError(
                f"connect to {self.address} failed: the connection closed before it was ready"
                f" ({conn.close_reason})",
                address=self.address,
            )
        )

    def _failed_with(self, exc: BaseException) -> None:
        # A TLS handshake that failed (a TLSError, reported with the address), or another error.
        self._conn = None
        if isinstance(exc, TLSError):
            error = TLSError(f"TLS to {self.address} failed: {exc}", ssl_reason=exc.ssl_reason)
            error.__cause__ = exc
            exc = error
        self._fail(exc)

    def _expired(self) -> None:
        self._timer = None
        if self._state == _DONE:
            return
        self._drop(R_LOCAL)
        self._fail(
            ConnectTimeout(
                f"connect to {self.address} timed out after {self._timeout:.3g} s",
                address=self.address,
                timeout=self._timeout or 0.0,
            )
        )

    def _cancel(self) -> None:
        if self._state == _DONE:
            return
        self._callback = None
        self._drop(R_LOCAL)
        self._finish()

    def _abandon(self) -> None:
        # The loop is stopping.
        if self._state == _DONE:
            return
        self._drop(R_STOP)
        self._fail(
            ConnectError(f"connect to {self.address} abandoned: stopping", address=self.address)
        )

    def _drop(self, reason: int) -> None:
        # Close whatever the attempt holds, without telling anyone.
        sock = self._release_socket()
        if sock is not None:
            sock.close()
        conn = self._conn
        self._conn = None
        if conn is not None and conn._state != CLOSED:
            conn._extra().connecting = None
            conn._abort(reason)

    def _finish(self) -> None:
        self._state = _DONE
        self._targets = None
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()
        self._loop._attempts.discard(self)

    def _fail(self, exc: BaseException) -> None:
        if self._state == _DONE:
            return
        self._finish()
        callback = self._callback
        self._callback = None
        if callback is not None:
            try:
                callback(None, exc)
            except Exception:
                from ._loop import logger

                logger.exception("the connect callback for %s failed", self.address)

    def _error(self) -> ConnectError:
        # Every address failed: the last one's error, in words.
        exc = self._last_error
        code = exc.errno if exc is not None else None
        if code == errno.ECONNREFUSED:
            return ConnectRefused(
                f"connect to {self.address} refused ({exc})", address=self.address, errno=code
            )
        if code == errno.ETIMEDOUT:
            return ConnectTimeout(
                f"connect to {self.address} timed out ({exc})",
                address=self.address,
                timeout=self._timeout or 0.0,
            )
        return ConnectError(
            f"connect to {self.address} failed ({exc})", address=self.address, errno=code
        )


def _strerror(code: int) -> str:
    import os

    return os.strerror(code)
