"""The server: a listening socket, ``num_loops`` event loops and the handler they call."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._errors import GevError
from ._loop import EventLoop
from ._plugins import Config, GevPluginManager, ProtocolRegistry, get_plugin_manager
from ._protocol import DefaultProtocol, Protocol
from ._select import SelectingProtocol

logger = logging.getLogger("gev")

LoadBalancer = Callable[[Sequence[EventLoop]], EventLoop]
ProtocolSpec = Protocol | type[Protocol] | str

_NO_TIMERS = "{what} needs a timer plugin, and none is installed: pip install gev-timers"

__all__ = ["Server", "least_connections", "parse_address", "round_robin"]


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


def parse_address(address: str | tuple[str, int], network: str = "tcp") -> tuple[int, Any]:
    """Resolve ``"host:port"``, ``":port"``, ``"[v6]:port"`` or ``(host, port)`` for ``network``.

    Returns ``(family, sockaddr)``. ``network`` is ``"tcp"`` (whichever family the host resolves
    to; all IPv4 interfaces for an empty host), ``"tcp4"`` or ``"tcp6"``.
    """
    if network not in ("tcp", "tcp4", "tcp6"):
        raise ValueError(f"network must be 'tcp', 'tcp4' or 'tcp6', not {network!r}")
    if isinstance(address, tuple):
        host, port = address[0], int(address[1])
    else:
        host, sep, port_s = address.rpartition(":")
        if not sep or not port_s.isdigit():
            raise ValueError(f"address {address!r} must look like 'host:port' or ':port'")
        port = int(port_s)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    family = {"tcp": socket.AF_UNSPEC, "tcp4": socket.AF_INET, "tcp6": socket.AF_INET6}[network]
    if not host:
        host = "::" if network == "tcp6" else "0.0.0.0"
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    fam, _, _, _, sockaddr = infos[0]
    return fam, sockaddr


class Server:
    """A non-blocking TCP server on the reactor pattern.

    :param handler: an object with ``on_message(conn, ctx, data) -> bytes | None`` and, optionally,
        ``on_connect(conn)`` and ``on_close(conn)`` (see :class:`~gev_core.Handler`).
    :param address: ``"host:port"``, ``":port"`` (all interfaces), ``"[::1]:port"`` or a tuple.
        Port 0 picks a free port; read it back from :attr:`port`.
    :param network: ``"tcp"``, ``"tcp4"`` or ``"tcp6"``.
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
    :param tcp_nodelay: disable Nagle's algorithm on accepted connections (on by default).
    :param backlog: ``listen()`` backlog.
    :param idle_time: close connections with no traffic (either direction) for this many seconds;
        needs the gev-timers plugin.
    :param sock: serve an already bound and listening socket (e.g. inherited from a supervisor)
        instead of binding ``address``.
    :param handle_signals: when ``start()`` runs in the main thread, SIGINT and SIGTERM stop the
        server gracefully.
    :param plugins: a plugin manager to use instead of building one (see
        :func:`gev_core.get_plugin_manager`).
    :param options: extra configuration for plugins (``config.options`` in their hooks).
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
        tcp_nodelay: bool = True,
        backlog: int = 1024,
        idle_time: float | None = None,
        sock: socket.socket | None = None,
        handle_signals: bool = True,
        poller: str | None = None,
        plugins: GevPluginManager | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        if not callable(getattr(handler, "on_message", None)):
            raise TypeError(f"handler {handler!r} has no on_message(conn, ctx, data) method")
        if num_loops < 1:
            raise ValueError("num_loops must be >= 1")
        if not 0 <= low_water <= high_water:
            raise ValueError("need 0 <= low_water <= high_water")
        if max_write_buffer < high_water:
            raise ValueError("max_write_buffer must be >= high_water")
        self.handler = handler
        self.network = network
        self.num_loops = num_loops
        self.reuse_port = reuse_port
        self.high_water = high_water
        self.low_water = low_water
        self.max_write_buffer = max_write_buffer
        self.max_read_buffer = max_read_buffer
        self.tcp_nodelay = tcp_nodelay
        self.idle_time = idle_time
        self.handle_signals = handle_signals
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
        # The inline read path is only valid for a protocol whose receive is DefaultProtocol's.
        self._fast_protocol: Protocol | None = (
            self._protocol if type(self._protocol).receive is DefaultProtocol.receive else None
        )
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
        if sock is not None:
            sock.setblocking(False)
            self._listener = sock
        else:
            self._listener = self._listen(address, network, reuse_port, backlog)
        name = self._listener.getsockname()
        self._address: tuple[str, int] = (name[0], name[1])
        self.loops = [EventLoop(self, i, poller) for i in range(num_loops)]
        self.loops[0]._attach_listener(self._listener)
        self._threads: list[threading.Thread] = []
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._state_lock = threading.Lock()
        self._running = False
        self._stopping = False
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
            return SelectingProtocol(protocols, self.pluginmanager.hook.gev_select_protocol)
        return self._resolve_one(spec)  # type: ignore[arg-type]

    @staticmethod
    def _listen(
        address: str | tuple[str, int], network: str, reuse_port: bool, backlog: int
    ) -> socket.socket:
        family, sockaddr = parse_address(address, network)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                if not hasattr(socket, "SO_REUSEPORT"):
                    raise OSError("SO_REUSEPORT is not supported on this platform")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and network == "tcp6":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

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
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        return self._address

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def protocol(self) -> Protocol:
        return self._protocol

    @property
    def connection_count(self) -> int:
        return sum(loop.connection_count for loop in self.loops)

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
        restore = self._install_signal_handlers()
        try:
            self.pluginmanager.hook.gev_server_started(server=self)
            for loop in self.loops[1:]:
                t = threading.Thread(target=loop.run, name=f"gev-loop-{loop.index}", daemon=True)
                self._threads.append(t)
                t.start()
            self._started.set()
            self.loops[0].run()
        finally:
            for t in self._threads:
                t.join()
            self._listener.close()
            restore()
            self._stopped.set()

    def _loop_starting(self, loop: EventLoop) -> None:
        # On the loop's own thread, before it serves.
        if self._timer_service is not None:
            self._timer_service.install(loop)
        self.pluginmanager.hook.gev_loop_started(loop=loop)

    def _install_signal_handlers(self) -> Callable[[], None]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return lambda: None
        import signal

        def on_signal(signum: int, frame: Any) -> None:
            logger.info("received %s; stopping", signal.Signals(signum).name)
            self.stop(wait=False)

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block until :meth:`start` is serving (useful when it runs in a thread)."""
        return self._started.wait(timeout)

    def stop(self, timeout: float = 5.0, *, wait: bool = True) -> None:
        """Stop accepting, flush pending output for up to ``timeout`` seconds, close everything.

        ``on_close`` runs for every connection. With ``wait`` (and called from outside the
        server's loops) this returns once :meth:`start` has returned.
        """
        deadline = time.monotonic() + timeout
        if not self._started.is_set():
            with self._state_lock:
                if not self._running:
                    self._stopped.set()
                    self._listener.close()
                    for loop in self.loops:
                        loop._close_all_now()
                    return
        with self._state_lock:
            first = not self._stopping
            self._stopping = True
        if first:
            try:
                self.pluginmanager.hook.gev_server_stopping(server=self)
            except Exception:
                logger.exception("a gev_server_stopping hook failed")
        for loop in self.loops:
            loop.call_soon_threadsafe(loop._begin_stop, deadline)
            # A signal handler runs on loop 0's own thread while it sits in poll(): wake it anyway.
            loop.wakeup()
        if wait and not any(loop.in_loop_thread() for loop in self.loops):
            self._stopped.wait(timeout + 5.0)

    def __repr__(self) -> str:
        return f"<Server {self.address} loops={self.num_loops} protocol={self._protocol.name!r}>"
