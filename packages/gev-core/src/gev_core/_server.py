"""The server: a listening socket, ``num_loops`` event loops and the handler they call."""

from __future__ import annotations

import logging
import signal
import socket
import ssl as _ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any

from ._bind import SocketFile, bind_socket, format_address
from ._connection import Connection, Preamble
from ._errors import ConnectError, GevError
from ._jobs import AsyncHandler, OffloadService, coroutine_callbacks
from ._loop import EventLoop
from ._plugins import Config, GevPluginManager, ProtocolRegistry, get_plugin_manager
from ._protocol import DefaultProtocol, Protocol
from ._select import DEFAULT_SELECT_TIMEOUT, SelectingProtocol
from ._signals import capture_signals, signal_name
from ._stats import LoopStats
from ._tls import prepare_context

logger = logging.getLogger("gev")

LoadBalancer = Callable[[Sequence[EventLoop]], EventLoop]
ProtocolSpec = Protocol | type[Protocol] | str

_NO_TIMERS = "{what} needs a timer plugin, and none is installed: pip install gev-timers"

__all__ = ["Server", "least_connections", "round_robin"]


def round_robin() -> LoadBalancer:
    """Loops in turn: the first connection goes to loop 0 (gev's ``RoundRobin``)."""
    state = {"i": -1}

    def pick(loops: Sequence[EventLoop]) -> EventLoop:
        state["i"] = i = (state["i"] + 1) % len(loops)
        return loops[i]

    return pick


def least_connections() -> LoadBalancer:
    """The loop with the fewest connections; ties go to the lowest index (gev's
    ``LeastConnection``)."""

    def pick(loops: Sequence[EventLoop]) -> EventLoop:
        return min(loops, key=lambda loop: loop.connection_count)

    return pick


_BALANCERS: dict[str, Callable[[], LoadBalancer]] = {
    "round-robin": round_robin,
    "least-connections": least_connections,
}


class Server:
    """A non-blocking TCP server on the reactor pattern.

    :param handler: an object with ``on_message(conn, ctx, data) -> bytes | None`` and, optionally,
        ``on_connect(conn)`` and ``on_close(conn)`` (see :class:`~gev_core.Handler`).
    :param address: ``"host:port"``, ``":port"`` (all interfaces), ``"[::1]:port"``, a tuple,
        ``"unix:/path/to.sock"`` or (Linux) ``"unix:@name"`` in the abstract namespace. Port 0
        picks a free port; read it back from :attr:`port`. A Unix socket file left behind by a
        server that died is replaced; one a live server listens on is not (``OSError``); the
        file is removed when the server stops.
    :param network: ``"tcp"``, ``"tcp4"``, ``"tcp6"`` or ``"unix"`` (implied by ``"unix:"``).
    :param num_loops: event loops (threads). The default, 1, is the fastest under the GIL: the
        single loop also accepts, and more loop threads only add contention (see
        ``bench/RESULTS.md``).
        For more cores run worker processes.
    :param reuse_port: set ``SO_REUSEPORT`` so several processes can share the port.
    :param protocol: a :class:`Protocol` instance or class, or the name a plugin registered it
        under (``"websocket"``); or a list of them, to serve several protocols on one port, chosen
        per connection from its first bytes by the ``gev_select_protocol`` hook (the last one is
        the fallback). Default: :class:`DefaultProtocol`.
    :param load_balance: ``"round-robin"``, ``"least-connections"`` or a callable picking a loop
        from the list of loops, called on the accepting loop for each new connection.
    :param high_water: unsent bytes above which a connection stops reading (backpressure).
    :param low_water: unsent bytes at or below which it reads again.
    :param max_write_buffer: unsent bytes above which the connection is closed (the peer is not
        reading and the application keeps sending).
    :param max_read_buffer: unparsed bytes above which the connection is closed.
    :param max_buffered: bytes all connections together may hold buffered (read and write
        buffers, and what protocols report holding, such as WebSocket messages arriving in
        fragments); past it the connections holding the most are closed, each with a logged
        reason, until the total is back under it. Default: 16 times ``max_read_buffer +
        max_write_buffer`` (256 MiB with the defaults). With several loops each loop enforces
        an equal share.
    :param linger_timeout: when the server closes a connection whose peer has not closed its
        side, it sends FIN after the pending output and reads (and discards) until the peer's
        FIN, for at most this many seconds; then it closes. 0 closes at once (the kernel then
        answers unread input with RST, which can destroy the last bytes sent).
    :param select_timeout: with several protocols, seconds a connection may take to send the
        first bytes that choose its protocol before it is closed; ``None`` waits forever.
    :param tcp_nodelay: disable Nagle's algorithm on accepted TCP connections (on by default).
    :param backlog: ``listen()`` backlog.
    :param unix_mode: permissions of the Unix socket file (e.g. ``0o660``); default: the
        process's umask decides.
    :param idle_time: close connections with no traffic (either direction) for this many seconds;
        needs the gev-timers plugin.
    :param sock: serve an already bound and listening socket (e.g. inherited from a supervisor)
        instead of binding ``address``. Its owner, not the server, removes a Unix socket file.
    :param handle_signals: when ``start()`` runs in the main thread, SIGINT and SIGTERM stop the
        server gracefully.
    :param count_traffic: count bytes and messages in and out in every loop's
        :class:`~gev_core.LoopStats` (``loop.stats``); connection events are counted always.
        Off by default: each count costs a little on every message. A metrics plugin turns it
        on (:attr:`count_traffic`).

    Readiness, for health checks and load balancers: :attr:`ready` is true while the server
    accepts connections, and turns false the moment :meth:`drain` or :meth:`stop` begins (when
    the ``gev_server_stopping`` hook is called).
    :param ssl: serve TLS with this server-side ``ssl.SSLContext`` (build it with
        :func:`~gev_core.server_context`). Every protocol works unchanged over it, WebSocket
        as ``wss://``: handlers see plaintext, and a connection reaches the handler once its
        handshake has completed (ALPN, SNI and the client certificate are then on the
        connection: :attr:`~gev_core.Connection.alpn_protocol`...). The context is made safe
        in place: renegotiation refused, TLS 1.2 at least, the SNI name recorded (a
        ``sni_callback`` of your own is kept, but then ``server_name`` stays ``None``).
    :param tls_handshake_timeout: seconds a TLS client gets to complete its handshake before
        it is disconnected (a WARNING is logged); ``None`` waits forever.
    :param plugins: a plugin manager to use instead of building one (see
        :func:`gev_core.get_plugin_manager`).
    :param options: extra configuration for plugins (``config.options`` in their hooks).

    Handlers that block or await (see :meth:`Connection.offload <gev_core.Connection.offload>`
    and ``async def`` callbacks; nothing of this exists until a handler uses it):

    :param offload_threads: threads of the pool ``conn.offload`` runs blocking functions on
        (default ``min(32, CPUs + 4)``), started as work arrives.
    :param offload_queue: jobs waiting for a pool thread, server-wide; a connection whose job
        finds the queue full keeps it and stops reading until there is room.
    :param max_pending: replies one connection may owe (offloaded, or from ``async def
        on_message``) before it stops reading; also how many of its jobs run at once.
    :param max_tasks: coroutines running at once on the asyncio companion, server-wide; past
        it, as for ``offload_queue``.
    :param asyncio_loop: the companion's event loop: ``"auto"`` (uvloop when installed),
        ``"uvloop"`` or ``"asyncio"``.

    Whether ``on_message``, ``on_connect`` or ``on_close`` is a coroutine function is decided
    once, here: such callbacks run on the asyncio companion (a thread of its own); a handler
    whose callbacks are plain functions keeps the inline path.
    """

    def __init__(
        self,
        handler: Any,
        *,
        address: str | tuple[str, int] = "127.0.0.1:1833",
        network: str = "tcp",
        num_loops: int = 1,
        reuse_port: bool = False,
        protocol: ProtocolSpec | Sequence[ProtocolSpec] | None = None,
        load_balance: str | LoadBalancer = "round-robin",
        high_water: int = 64 * 1024,
        low_water: int = 16 * 1024,
        max_write_buffer: int = 8 * 1024 * 1024,
        max_read_buffer: int = 8 * 1024 * 1024,
        max_buffered: int | None = None,
        linger_timeout: float = 2.0,
        select_timeout: float | None = DEFAULT_SELECT_TIMEOUT,
        tcp_nodelay: bool = True,
        backlog: int = 1024,
        unix_mode: int | None = None,
        idle_time: float | None = None,
        sock: socket.socket | None = None,
        handle_signals: bool = True,
        ssl: _ssl.SSLContext | None = None,
        tls_handshake_timeout: float | None = 10.0,
        count_traffic: bool = False,
        poller: str | None = None,
        plugins: GevPluginManager | None = None,
        options: dict[str, Any] | None = None,
        offload_threads: int | None = None,
        offload_queue: int = 1024,
        max_pending: int = 32,
        max_tasks: int = 10_000,
        asyncio_loop: str = "auto",
    ) -> None:
        if not callable(getattr(handler, "on_message", None)):
            raise TypeError(f"handler {handler!r} has no on_message(conn, ctx, data) method")
        if num_loops < 1:
            raise ValueError("num_loops must be >= 1")
        if not 0 <= low_water <= high_water:
            raise ValueError("need 0 <= low_water <= high_water")
        if max_write_buffer < high_water:
            raise ValueError("max_write_buffer must be >= high_water")
        if max_buffered is None:
            max_buffered = 16 * (max_read_buffer + max_write_buffer)
        elif max_buffered <= 0:
            raise ValueError("max_buffered must be > 0 bytes")
        if not linger_timeout >= 0:
            raise ValueError("linger_timeout must be >= 0 seconds")
        if select_timeout is not None and not select_timeout > 0:
            raise ValueError("select_timeout must be > 0 seconds or None")
        self.handler = handler
        # Decided once per server: a handler with async def callbacks is served through its
        # AsyncHandler stand-in; any other keeps the inline path, untouched.
        self._dispatch_handler: Any = (
            AsyncHandler(handler) if coroutine_callbacks(handler) else handler
        )
        #: The thread pool and asyncio companion, each started on first use.
        self._offload = OffloadService(
            max_threads=offload_threads,
            max_queue=offload_queue,
            max_pending=max_pending,
            asyncio_loop=asyncio_loop,
            max_tasks=max_tasks,
        )
        #: When the connections must be gone (set by stop/drain): the offload machinery gets
        #: what is left of it (at least a second) once the loops are done.
        self._stop_deadline = 0.0
        self.network = network
        self.num_loops = num_loops
        self.reuse_port = reuse_port
        self.high_water = high_water
        self.low_water = low_water
        self.max_write_buffer = max_write_buffer
        self.max_read_buffer = max_read_buffer
        self.max_buffered = max_buffered
        self.linger_timeout = linger_timeout
        self.select_timeout = select_timeout
        self.tcp_nodelay = tcp_nodelay
        self.idle_time = idle_time
        self.handle_signals = handle_signals
        if ssl is not None:
            if not isinstance(ssl, _ssl.SSLContext):
                raise TypeError(f"ssl must be an ssl.SSLContext, not {ssl!r}")
            if ssl.protocol == _ssl.PROTOCOL_TLS_CLIENT:
                raise ValueError(
                    "ssl is a client context (PROTOCOL_TLS_CLIENT): build the server's with"
                    " gev_core.server_context() or ssl.create_default_context(Purpose.CLIENT_AUTH)"
                )
            prepare_context(ssl)
        if tls_handshake_timeout is not None and not tls_handshake_timeout > 0:
            raise ValueError("tls_handshake_timeout must be > 0 seconds or None")
        #: The TLS context connections are served with (``None``: plaintext).
        self.ssl_context: _ssl.SSLContext | None = ssl
        #: Seconds a TLS client has to complete its handshake (``None``: no limit).
        self.tls_handshake_timeout = tls_handshake_timeout
        self._count_traffic = bool(count_traffic)
        #: The listener's preamble (``set_preamble``); read by the loops at each accept.
        self._preamble: Preamble | None = None
        self.loops: list[EventLoop] = []
        self.pluginmanager = pm = plugins if plugins is not None else get_plugin_manager()
        self.config = Config(
            server=self,
            options={
                "address": address,
                "network": network,
                "num_loops": num_loops,
                "reuse_port": reuse_port,
                "idle_time": idle_time,
                **(options or {}),
            },
            pluginmanager=pm,
        )
        pm.hook.gev_configure.call_historic(kwargs={"config": self.config})
        self.protocols = ProtocolRegistry(pm)
        self._protocol = self._resolve_protocols(protocol)
        if idle_time is not None and idle_time <= 0:
            raise ValueError("idle_time must be > 0 seconds")
        if isinstance(load_balance, str):
            try:
                self._balancer = _BALANCERS[load_balance]()
            except KeyError:
                raise ValueError(
                    f"load_balance must be one of {sorted(_BALANCERS)} or a callable,"
                    f" not {load_balance!r}"
                ) from None
        elif callable(load_balance):
            self._balancer = load_balance
        else:
            raise TypeError("load_balance must be a name or a callable")
        #: Protocols of outbound connections given by name or class, made once each.
        self._outbound_protocols: dict[Any, Protocol] = {}
        self._outbound_lock = threading.Lock()
        #: The socket file to remove at stop: only one this server bound itself.
        self._socket_file: SocketFile | None = None
        self._listener = self._open_listener(address, network, reuse_port, backlog, unix_mode, sock)
        self._address: tuple[str, int] | str = ""
        if self._listener is not None:
            name = self._listener.getsockname()
            self._address = (name[0], name[1]) if isinstance(name, tuple) else format_address(name)
        self.loops = [EventLoop(self, i, poller) for i in range(num_loops)]
        if self._listener is not None:
            self.loops[0]._attach_listener(self._listener)
        self._threads: list[threading.Thread] = []
        self._started = threading.Event()
        self._stopped = threading.Event()
        #: Set on loop 0 once a drain has closed the listener (drain() waits for it).
        self._listener_detached = threading.Event()
        # Reentrant for the same reason as EventLoop._lock: a second SIGTERM may arrive while
        # the first one's handler, on the main thread, holds it.
        self._state_lock = threading.RLock()
        self._running = False
        self._stopping = False
        self._draining = False
        self._announced = False  # gev_server_stopping called
        # After the loops exist: a timer service builds per-loop state.
        self._timer_service: Any = pm.hook.gev_timer_service(server=self)
        if idle_time is not None and self._timer_service is None:
            self.stop()
            raise GevError(_NO_TIMERS.format(what="idle_time"))
        made = pm.hook.gev_connection_made
        lost = pm.hook.gev_connection_lost
        for loop in self.loops:
            # Resolved once: a hook nobody implements costs nothing per connection.
            if made.get_hookimpls():
                loop._connection_made_hooks = lambda conn, _h=made: _h(connection=conn)
            if lost.get_hookimpls():
                loop._connection_lost_hooks = lambda conn, _h=lost: _h(connection=conn)

    # ------------------------------------------------------------------ setup

    def _open_listener(
        self,
        address: str | tuple[str, int],
        network: str,
        reuse_port: bool,
        backlog: int,
        unix_mode: int | None,
        sock: socket.socket | None,
    ) -> socket.socket | None:
        """The listening socket (a :class:`~gev_core.Client` has none)."""
        if sock is not None:
            sock.setblocking(False)
            return sock
        listener = bind_socket(
            address,
            network=network,
            reuse_port=reuse_port,
            backlog=backlog,
            unix_mode=unix_mode,
        )
        self._socket_file = SocketFile.of(listener)
        return listener

    def _outbound_protocol(self, spec: ProtocolSpec | None) -> Protocol:
        """The protocol of an outbound connection: the server's by default; a name or a class
        is made once and shared, like the server's own."""
        if spec is None:
            protocol = self._protocol
            if isinstance(protocol, SelectingProtocol):
                raise ValueError(
                    "this server serves several protocols: pass connect() the one to speak"
                )
            return protocol
        if isinstance(spec, Protocol):
            return spec
        if not isinstance(spec, (str, type)):
            raise TypeError(
                f"protocol must be a Protocol instance or class or a name, not {spec!r}"
            )
        with self._outbound_lock:
            made = self._outbound_protocols.get(spec)
            if made is None:
                made = self._outbound_protocols[spec] = self._resolve_one(spec)
        return made

    def _resolve_one(self, spec: ProtocolSpec) -> Protocol:
        if isinstance(spec, str):
            return self.protocols.create(spec, self.config)
        if isinstance(spec, type) and issubclass(spec, Protocol):
            return spec()
        if isinstance(spec, Protocol):
            return spec
        raise TypeError(f"protocol must be a Protocol instance or class or a name, not {spec!r}")

    def _resolve_protocols(self, spec: ProtocolSpec | Sequence[ProtocolSpec] | None) -> Protocol:
        if spec is None:
            return DefaultProtocol()
        if isinstance(spec, (list, tuple)):
            protocols = [self._resolve_one(s) for s in spec]
            if len(protocols) == 1:
                return protocols[0]
            names = [p.name for p in protocols]
            if len(set(names)) != len(names) or not all(names):
                raise ValueError(f"protocols served together need distinct names, got {names}")
            return SelectingProtocol(
                protocols,
                self.pluginmanager.hook.gev_select_protocol,
                timeout=self.select_timeout,
                fallback_selects=self._has_selector(names[-1]),
            )
        return self._resolve_one(spec)  # type: ignore[arg-type]

    def _has_selector(self, name: str) -> bool:
        # Whether the plugin providing protocol ``name`` recognises its own first bytes.
        try:
            provider = self.protocols.provider(name)
        except KeyError:
            return False
        return "gev_select_protocol" in provider.hooks

    def _pick_loop(self) -> EventLoop:
        loops = self.loops
        if len(loops) == 1:
            return loops[0]
        loop = self._balancer(loops)
        if loop not in loops:
            raise RuntimeError(f"load balancer returned {loop!r}, not one of this server's loops")
        return loop

    # ------------------------------------------------------------------ public

    @property
    def address(self) -> tuple[str, int] | str:
        """The bound ``(host, port)``; for a Unix socket ``"unix:/path"`` or ``"unix:@name"``."""
        return self._address

    @property
    def port(self) -> int:
        """The bound TCP port (the one port 0 picked). A Unix-socket server has none."""
        if isinstance(self._address, str):
            raise GevError(f"a server on {self._address} has no port; see Server.address")
        return self._address[1]

    @property
    def ready(self) -> bool:
        """True while the server accepts connections: started, neither draining nor stopping.

        What a readiness probe (``/readyz``) reports. Any thread.
        """
        return (
            self._started.is_set()
            and not self._stopping
            and not self._draining
            and not self._stopped.is_set()
        )

    @property
    def draining(self) -> bool:
        """True once :meth:`drain` or :meth:`stop` has begun: no new connections are accepted."""
        return self._draining or self._stopping

    @property
    def protocol(self) -> Protocol:
        return self._protocol

    @property
    def connection_count(self) -> int:
        return sum(loop.connection_count for loop in self.loops)

    @property
    def count_traffic(self) -> bool:
        """Whether the loops count bytes and messages (``loop.stats``); settable at any time.

        Connection events (accepted, closed by reason, backpressure pauses, handler errors)
        are counted whatever this says. A metrics plugin sets it, typically in its
        ``gev_configure`` hook. Any thread: each loop sees the change from its next poll on.
        """
        return self._count_traffic

    @count_traffic.setter
    def count_traffic(self, on: bool) -> None:
        self._count_traffic = on = bool(on)
        for loop in self.loops:
            loop.stats.counting = on

    @property
    def stats(self) -> list[LoopStats]:
        """Every loop's counters (``loop.stats``), in loop order; read them from any thread."""
        return [loop.stats for loop in self.loops]

    @property
    def preamble(self) -> Preamble | None:
        """The listener's preamble (:meth:`set_preamble`), or ``None``."""
        return self._preamble

    def set_preamble(self, preamble: Preamble | None) -> None:
        """Make every connection accepted from now on start with ``preamble``'s bytes.

        A :class:`~gev_core.Preamble` (the PROXY protocol plugin installs one from its
        ``gev_configure`` hook) reads the raw first bytes of each connection before TLS,
        protocol selection or the protocol see any, and may set the connection's peer address
        (:meth:`Connection.set_peer_address`). The handler's ``on_connect``, the protocol's
        ``connection_made`` and the plugins' ``gev_connection_made`` run only once it is done;
        a preamble that fails, grows past its ``max_size`` or takes longer than its
        ``timeout`` closes that connection alone, with a logged reason. ``None`` removes it.

        :raises TypeError: ``preamble`` lacks what the :class:`~gev_core.Preamble` protocol
            requires.
        :raises ValueError: its ``max_size`` is not positive, or its ``timeout`` is neither
            ``None`` nor positive.
        """
        if preamble is not None:
            for method in ("start", "feed"):
                if not callable(getattr(preamble, method, None)):
                    raise TypeError(f"preamble {preamble!r} has no {method}() method")
            name = getattr(preamble, "name", None)
            if not isinstance(name, str) or not name:
                raise TypeError(f"preamble {preamble!r} needs a name (a non-empty str)")
            max_size = getattr(preamble, "max_size", None)
            if not isinstance(max_size, int) or max_size <= 0:
                raise ValueError(f"preamble max_size must be a positive int, not {max_size!r}")
            timeout = getattr(preamble, "timeout", None)
            if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
                raise ValueError(f"preamble timeout must be > 0 seconds or None, not {timeout!r}")
        self._preamble = preamble

    @property
    def timers(self) -> Any:
        """The timer service (from gev-timers); raises if no timer plugin is installed."""
        if self._timer_service is None:
            raise GevError(_NO_TIMERS.format(what="timers"))
        return self._timer_service

    def run_after(self, delay: float, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` once, ``delay`` seconds from now, on loop 0. Needs gev-timers."""
        if self._timer_service is None:
            raise GevError(_NO_TIMERS.format(what="Server.run_after"))
        return self._timer_service.run_after(delay, fn, *args)

    def run_every(self, interval: float, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` every ``interval`` s on loop 0, without drift. Needs gev-timers."""
        if self._timer_service is None:
            raise GevError(_NO_TIMERS.format(what="Server.run_every"))
        return self._timer_service.run_every(interval, fn, *args)

    def start(self) -> None:
        """Serve until :meth:`stop` is called (from another thread, a handler, or Ctrl-C). Blocks.

        Loop 0 runs in the calling thread; loops 1..n-1 get threads of their own.
        """
        with self._state_lock:
            if self._running or self._stopped.is_set():
                raise RuntimeError("a Server can be started once")
            self._running = True
        signals = (signal.SIGINT, signal.SIGTERM) if self.handle_signals else ()
        with capture_signals(self._on_signal, signals):
            try:
                self.pluginmanager.hook.gev_server_started(server=self)
                for loop in self.loops[1:]:
                    t = threading.Thread(
                        target=loop.run, name=f"gev-loop-{loop.index}", daemon=True
                    )
                    self._threads.append(t)
                    t.start()
                self._started.set()
                logger.info(
                    "%s (protocol %s, %d loop%s)",
                    "client started"
                    if self._listener is None
                    else f"listening on {format_address(self._address)}",
                    self._protocol.name,
                    self.num_loops,
                    "" if self.num_loops == 1 else "s",
                )
                self.loops[0].run()
            finally:
                for t in self._threads:
                    t.join()
                self._close_listener()
                # After the loops: async on_close coroutines get the rest of the stop timeout.
                self._offload.shutdown(max(1.0, self._stop_deadline - time.monotonic()))
                # Before _stopped: stop(wait=True) returns once the hooks have run too.
                try:
                    self.pluginmanager.hook.gev_server_stopped(server=self)
                except Exception:
                    logger.exception("a gev_server_stopped hook failed")
                self._stopped.set()

    def _on_signal(self, signum: int) -> None:
        logger.info("received %s; stopping", signal_name(signum))
        self.stop(wait=False)

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._socket_file is not None:
            self._socket_file.remove()
            self._socket_file = None

    def _loop_starting(self, loop: EventLoop) -> None:
        # On the loop's own thread, before it serves.
        if self._timer_service is not None:
            self._timer_service.install(loop)
        self.pluginmanager.hook.gev_loop_started(loop=loop)

    def connect(
        self,
        address: str | tuple[str, int],
        handler: Any = None,
        *,
        protocol: ProtocolSpec | None = None,
        ssl: _ssl.SSLContext | bool | None = None,
        server_hostname: str | None = None,
        timeout: float | None = 30.0,
        loop: EventLoop | None = None,
    ) -> Future[Connection]:
        """Open an outbound connection, served by one of this server's loops. Any thread.

        The connection is driven like an accepted one: ``handler``'s callbacks, the protocol's
        framing, water marks, idle reaping; :attr:`Connection.outbound
        <gev_core.Connection.outbound>` is true. The future's result is the connection once it
        is ready -- connected, its TLS handshake done, the protocol's ``connection_made`` and
        the handler's ``on_connect`` called -- so ``send`` works at once, from any thread.
        Waiting for it on one of the server's loop threads (it would wait for itself) raises
        ``RuntimeError``: a handler uses :meth:`EventLoop.connect <gev_core.EventLoop.connect>`
        with a callback.
        Cancelling the future before it is done abandons the attempt (no handler callback
        runs). Failures are the future's exception, and nothing is logged for them. May be
        called before :meth:`start`: the attempt begins when the loop runs (a :meth:`stop`
        before :meth:`start` fails it with :class:`~gev_core.ConnectError`).

        :param address: ``"host:port"``, ``"[v6]:port"``, ``(host, port)``, ``"unix:/path"``
            or (Linux) ``"unix:@name"``. A host name is resolved off the loop, in a small
            thread pool; the addresses it resolves to are tried in order.
        :param handler: the connection's handler (default: the server's).
        :param protocol: a :class:`~gev_core.Protocol` instance or class, or a registered name
            (``"line"``, ``"websocket"``...); default: the server's protocol.
        :param ssl: a client ``ssl.SSLContext`` (:func:`~gev_core.client_context`), or
            ``True`` for ``client_context()`` (the system's CAs); ``None``: plaintext.
        :param server_hostname: the name the server's certificate must match, sent as SNI
            (default: the address's host; a Unix address needs one when names are checked).
        :param timeout: seconds for the whole attempt (resolution, connect, TLS handshake);
            ``None``: no limit.
        :param loop: the loop to own the connection (default: the ``load_balance`` pick).
        :raises ValueError: a malformed address or timeout (at once, not through the future).
        :raises TypeError: ``handler`` has no ``on_message``, or a wrong ``ssl`` or
            ``protocol``.

        The future's exceptions: :class:`~gev_core.ConnectRefused`,
        :class:`~gev_core.ConnectTimeout`, :class:`~gev_core.ResolveError`, another
        :class:`~gev_core.ConnectError` (also when the server is stopping), or
        :class:`~gev_core.TLSError` for a failed handshake (an untrusted certificate, a name
        mismatch).
        """
        chosen = self._pick_loop() if loop is None else loop
        if chosen not in self.loops:
            raise ValueError(f"{chosen!r} is not one of this server's loops")
        future: Future[Connection] = _ConnectFuture(self.loops)
        if self._stopped.is_set():
            address_s = address if isinstance(address, str) else format_address(address)
            future.set_exception(
                ConnectError(f"connect to {address_s} abandoned: stopped", address=address_s)
            )
            return future
        attempt = chosen.connect(
            address,
            handler,
            callback=lambda conn, exc: _settle(future, conn, exc),
            protocol=protocol,
            ssl=ssl,
            server_hostname=server_hostname,
            timeout=timeout,
        )
        future.add_done_callback(lambda f: attempt.cancel() if f.cancelled() else None)
        if self._stopped.is_set() and not self._started.is_set():
            # stop() of a server that never started closed its loops while this call was
            # between the check above and the loop's registration: nothing will run the attempt.
            attempt._abandon()
        return future

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block until :meth:`start` is serving (useful when it runs in a thread)."""
        return self._started.wait(timeout)

    def stop(self, timeout: float = 5.0, *, wait: bool = True) -> None:
        """Stop accepting, flush pending output for up to ``timeout`` seconds, close everything.

        ``on_close`` runs for every connection. With ``wait`` (and called from outside the
        server's loops) this returns once :meth:`start` has returned.
        """
        deadline = time.monotonic() + timeout
        self._stop_deadline = deadline
        if self._stop_unstarted():
            return
        with self._state_lock:
            self._stopping = True
        self._announce_stopping()
        for loop in self.loops:
            loop.call_soon_threadsafe(loop._begin_stop, deadline)
            # A signal handler runs on loop 0's own thread while it sits in poll(): wake it anyway.
            loop.wakeup()
        if wait and not any(loop.in_loop_thread() for loop in self.loops):
            self._stopped.wait(timeout + 5.0)

    def drain(self, timeout: float = 30.0, *, stop_timeout: float = 5.0, wait: bool = True) -> None:
        """Stop accepting and let the open connections finish by themselves, then stop.

        What a rolling restart does to the worker it replaces. The listening socket is closed at
        once (:attr:`ready` turns false and ``gev_server_stopping`` is called); each connection
        is served as usual until its peer or the handler closes it. Once none is left, or after
        ``timeout`` seconds, the server stops as :meth:`stop` does, with ``stop_timeout`` for
        the remaining connections' output. Any thread; ``wait`` as for :meth:`stop`. Even
        without ``wait``, a call from outside the server's loops returns once the listener is
        closed (bounded by 5 s): a client connecting after it is refused.
        """
        deadline = time.monotonic() + timeout
        self._stop_deadline = deadline + stop_timeout
        if self._stop_unstarted():
            return
        with self._state_lock:
            if self._draining or self._stopping:
                return
            self._draining = True
        self._announce_stopping()
        logger.info(
            "draining: not accepting any more; open connections get up to %.3g s to finish",
            timeout,
        )
        loop0 = self.loops[0]
        loop0.call_soon_threadsafe(self._begin_drain, deadline, stop_timeout)
        loop0.wakeup()
        if not any(loop.in_loop_thread() for loop in self.loops):
            # The listener is closed on loop 0: returning before it is would let a client
            # connect right after drain() (the kernel still queues it for the listener).
            self._listener_detached.wait(5.0)
            if wait:
                self._stopped.wait(timeout + stop_timeout + 5.0)

    def _begin_drain(self, deadline: float, stop_timeout: float) -> None:
        # On loop 0, the accepting loop: every connection it accepted so far has been handed to
        # its loop already, so each loop's drain runs after the hand-over of its connections.
        for loop in self.loops[1:]:
            loop.call_soon_threadsafe(loop._begin_drain, deadline, stop_timeout)
        try:
            self.loops[0]._begin_drain(deadline, stop_timeout)
        finally:
            self._listener_detached.set()

    def _stop_unstarted(self) -> bool:
        """Close everything of a server that never started; False if it has started."""
        if self._started.is_set():
            return False
        with self._state_lock:
            if self._running:
                return False
            self._stopped.set()
        self._close_listener()
        for loop in self.loops:
            loop._close_all_now()
        self._offload.shutdown(0.0)
        return True

    def _announce_stopping(self) -> None:
        with self._state_lock:
            first = not self._announced
            self._announced = True
        if first:
            try:
                self.pluginmanager.hook.gev_server_stopping(server=self)
            except Exception:
                logger.exception("a gev_server_stopping hook failed")

    def __repr__(self) -> str:
        return f"<Server {self.address} loops={self.num_loops} protocol={self._protocol.name!r}>"


class _ConnectFuture(Future[Connection]):
    """The future of ``Server.connect``: waiting for it on one of the server's loop threads
    raises at once instead of waiting for itself."""

    def __init__(self, loops: list[EventLoop]) -> None:
        super().__init__()
        self._loops = loops

    def result(self, timeout: float | None = None) -> Connection:
        if not self.done() and any(loop.in_loop_thread() for loop in self._loops):
            raise RuntimeError(
                "waiting for a connect on the loop thread that makes it would wait forever:"
                " use EventLoop.connect(..., callback=...) in handlers"
            )
        return super().result(timeout)


def _settle(future: Future[Connection], conn: Connection | None, exc: BaseException | None) -> None:
    # On the loop thread: the attempt is over. A future cancelled meanwhile lets go of it.
    try:
        if exc is not None:
            future.set_exception(exc)
        elif conn is not None:
            future.set_result(conn)
    except InvalidStateError:  # cancelled while the connection got ready
        if conn is not None:
            conn.abort()
