"""Worker processes: a supervisor runs M copies of ``gev serve`` that share one port.

Why processes: under the GIL, extra loop threads compete for one interpreter instead of adding a
core (``bench/RESULTS.md``); a process per core is how a pure-Python server scales out.

Why ``subprocess`` running ``python -m gev_core serve`` rather than ``fork``: the supervisor may
live in a threaded application, and a forked child inherits every lock in whatever state another
thread left it. A fresh interpreter per worker also imports the application itself, so workers
share nothing but the listening port.

How the port is shared (``port_sharing``):

* ``"reuse-port"`` (the default on Linux): the supervisor binds the address with ``SO_REUSEPORT``
  but never listens on it -- that reserves the port, reports "address in use" before any worker
  starts and turns port 0 into a real port -- and every worker binds the same address with
  ``SO_REUSEPORT`` and listens. The kernel spreads new connections over the workers' queues.
  A worker that dies takes the connections still waiting in its own backlog with it.
* ``"inherit"`` (elsewhere, where ``SO_REUSEPORT`` does not balance): the supervisor binds and
  listens; the workers poll that one listening socket, inherited through ``pass_fds``. Nothing
  queued is lost when a worker dies; whichever worker wakes first accepts.

Start-up handshake. Each worker gets one end of a socket pair. It loads plugins and the
application, builds its server on a bound socket that does not listen yet, sends ``r`` (ready)
and waits for ``g`` (go) before it listens and serves. The supervisor boots worker 0 alone, then
the others, and says go once all of them are ready (or :data:`RELEASE_TIMEOUT` after the first
was). Two reasons: a configuration error (bad ``MODULE:ATTR``, a broken plugin) is printed once
by worker 0, not M times, and stops the supervisor with that worker's exit code instead of a
restart loop; and no worker takes connections before the others can -- with long-lived
connections, whatever connects in the first second would otherwise stay on worker 0 for good.
In inherit mode the supervisor only calls ``listen()`` when it says go, for the same reason.

No orphans. On Linux each worker asks the kernel for ``SIGTERM`` when its parent dies
(``PR_SET_PDEATHSIG``), then checks that its parent is still the supervisor, which closes the
window between ``fork`` and that call. It does this itself, first thing after start-up, instead
of in a ``preexec_fn``: a ``preexec_fn`` runs Python between ``fork`` and ``exec`` and can
deadlock when the supervisor's process has other threads. Everywhere, a daemon thread in each
worker polls ``os.getppid()`` and stops the server gracefully once the supervisor is gone.

Nothing here is shared between threads except through ``deque`` appends and a wake-up pipe, so
the design holds without the GIL too.
"""

from __future__ import annotations

import logging
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._server import parse_address

logger = logging.getLogger("gev")

__all__ = [
    "PORT_SHARING_MODES",
    "Supervisor",
    "bind_socket",
    "default_port_sharing",
    "format_address",
    "prepare_worker",
    "serve_workers",
    "wait_for_go",
    "watch_parent",
]

PORT_SHARING_MODES = ("auto", "reuse-port", "inherit")

#: A worker that exits sooner than this after it was started counts as crashing quickly.
MIN_UPTIME = 5.0
#: First restart delay after a quick crash; doubled for each further quick crash in a row.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
#: Seconds after worker 0 is ready that the others get to be ready before serving starts
#: without the stragglers.
RELEASE_TIMEOUT = 10.0
#: How often a worker checks that its supervisor is still there (the portable orphan guard).
PARENT_POLL_INTERVAL = 0.5
#: ``listen()`` backlog, as ``Server``'s default.
BACKLOG = 1024
#: Upper bound on the supervisor's sleep: without signal delivery (not on the main thread) this
#: is how late a dead worker may be noticed.
_POLL_CAP = 0.5
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_READY = b"r"
_GO = b"g"


def default_port_sharing() -> str:
    """``"reuse-port"`` on Linux, ``"inherit"`` elsewhere.

    Only Linux balances connections over ``SO_REUSEPORT`` listeners; macOS and most BSDs accept
    the option but hand every connection to one of them.
    """
    if sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT"):
        return "reuse-port"
    return "inherit"


def format_address(sockaddr: Any) -> str:
    """``"host:port"`` (``"[v6]:port"``) from a socket address, as ``--address`` accepts it."""
    host, port = str(sockaddr[0]), int(sockaddr[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_socket(
    address: str | tuple[str, int],
    *,
    network: str = "tcp",
    reuse_port: bool = False,
    backlog: int | None = None,
) -> socket.socket:
    """A TCP socket bound to ``address``; listening only if ``backlog`` is given."""
    family, sockaddr = parse_address(address, network)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and network == "tcp6":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        if backlog is not None:
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


# ------------------------------------------------------------------------------------ worker side


def prepare_worker(parent_pid: int) -> bool:
    """In a worker, first thing: die with the supervisor. False if it is already gone."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
                logger.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        except (OSError, AttributeError) as exc:  # no libc to load: the watch thread remains
            logger.debug("prctl(PR_SET_PDEATHSIG) unavailable: %s", exc)
    # After prctl on purpose: a supervisor that died before the call will never send the signal,
    # and then our parent is no longer the supervisor.
    return os.getppid() == parent_pid


def wait_for_go(fd: int, stop_requested: Callable[[], bool]) -> bool:
    """Report ready on the control socket ``fd``, then wait for the supervisor's go.

    Returns False when the worker should not serve: ``stop_requested()`` turned true (a signal
    arrived meanwhile) or the supervisor closed its end (it is stopping or gone).
    """
    with socket.socket(fileno=fd) as ctl:
        try:
            ctl.sendall(_READY)
            while not stop_requested():
                # A timeout rather than a blocking recv: a signal handler cannot interrupt that
                # (PEP 475 retries it), and it must be able to cancel the start.
                readable, _, _ = select.select([ctl], [], [], 0.2)
                if readable:
                    return ctl.recv(1) == _GO
        except OSError:
            pass
    return False


def watch_parent(
    parent_pid: int,
    on_gone: Callable[[], None],
    done: threading.Event,
    interval: float = PARENT_POLL_INTERVAL,
) -> threading.Thread:
    """Call ``on_gone()`` once the process stops being a child of ``parent_pid``.

    Portable back-up for ``PR_SET_PDEATHSIG`` (and the only guard off Linux): an orphan is
    re-parented, so ``os.getppid()`` changes. Set ``done`` to end the thread.
    """

    def run() -> None:
        while not done.wait(interval):
            if os.getppid() != parent_pid:
                logger.warning("supervisor (pid %d) is gone; stopping", parent_pid)
                on_gone()
                return

    thread = threading.Thread(target=run, name="gev-parent-watch", daemon=True)
    thread.start()
    return thread


# -------------------------------------------------------------------------------- supervisor side


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    ctl: socket.socket | None = None  # the supervisor's end of the control socket pair
    started: float = 0.0
    ready: bool = False
    quick_exits: int = 0  # in a row
    restart_at: float | None = None


class Supervisor:
    """Run ``workers`` processes of ``python -m gev_core serve *serve_args`` on one port.

    :param serve_args: the ``gev serve`` arguments every worker gets (``MODULE:ATTR`` and
        options, including plugin options); the supervisor adds its own internal ones.
    :param workers: number of worker processes (>= 1).
    :param address: where to listen; port 0 picks a free port (see :attr:`address`).
    :param port_sharing: ``"auto"``, ``"reuse-port"`` or ``"inherit"`` (module docstring).
    :param graceful_timeout: seconds a stopping worker gets before it is killed; keep it above
        the workers' own drain time (``Server.stop``'s 5 s).
    :param python: interpreter for the workers (default: this one).
    :param env: environment for the workers (default: inherited).

    :meth:`run` blocks until the supervisor is stopped: by SIGTERM or SIGINT when it runs on the
    main thread, or by :meth:`stop` from any thread.
    """

    def __init__(
        self,
        serve_args: Sequence[str],
        workers: int,
        *,
        address: str | tuple[str, int] = "127.0.0.1:1833",
        network: str = "tcp",
        port_sharing: str = "auto",
        backlog: int = BACKLOG,
        graceful_timeout: float = 10.0,
        python: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if port_sharing not in PORT_SHARING_MODES:
            raise ValueError(f"port_sharing must be one of {PORT_SHARING_MODES}")
        if graceful_timeout < 0:
            raise ValueError("graceful_timeout must be >= 0")
        mode = default_port_sharing() if port_sharing == "auto" else port_sharing
        if mode == "reuse-port" and not hasattr(socket, "SO_REUSEPORT"):
            raise ValueError("SO_REUSEPORT is not supported on this platform; use 'inherit'")
        self.serve_args = list(serve_args)
        self.num_workers = workers
        self.port_sharing = mode
        self.graceful_timeout = graceful_timeout
        self.python = python or sys.executable
        self.env = env
        #: The bound ``"host:port"`` once :meth:`run` has bound it.
        self.address = ""
        self._address_spec = address
        self._network = network
        self._backlog = backlog
        self._workers = [_Worker(i) for i in range(workers)]
        # Appended to by signal handlers and other threads, drained by run(): deque operations
        # are atomic, so there is no lock a signal handler could deadlock on.
        self._requests: deque[str] = deque()
        self._wake_w = -1
        self._sock: socket.socket | None = None
        self._released = False  # go has been given: ready workers serve at once
        self._first_ready_at: float | None = None
        self._ran = False

    # ------------------------------------------------------------------ public

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers currently running."""
        return [w.proc.pid for w in self._workers if w.proc is not None]

    def stop(self, *, kill: bool = False) -> None:
        """Stop gracefully (SIGTERM to the workers); ``kill`` skips the grace. Any thread."""
        self._requests.append("kill" if kill else "stop")
        self._wake()

    def run(self) -> int:
        """Supervise until stopped. Returns 0, or the exit code of a worker that failed to boot.

        :raises OSError: the address could not be bound.
        """
        if self._ran:
            raise RuntimeError("a Supervisor runs once")
        self._ran = True
        wake_r, self._wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(self._wake_w, False)
        sel = selectors.DefaultSelector()
        sel.register(wake_r, selectors.EVENT_READ, None)
        # Before binding: once the port exists a client or a test may signal us at any moment.
        restore = self._install_signal_handlers()
        try:
            self._sock = bind_socket(
                self._address_spec,
                network=self._network,
                reuse_port=self.port_sharing == "reuse-port",
            )
            self.address = format_address(self._sock.getsockname())
            if self._requests:  # stopped while binding: start nothing
                return 0
            return self._supervise(sel)
        finally:
            restore()
            # Whatever happened above (even an exception), no worker outlives run().
            for w in self._workers:
                if w.proc is not None and w.proc.poll() is None:
                    logger.warning("killing worker %d (pid %d)", w.index, w.proc.pid)
                    w.proc.kill()
                    try:
                        w.proc.wait(5)
                    except subprocess.TimeoutExpired:
                        logger.error("worker %d (pid %d) survived SIGKILL", w.index, w.proc.pid)
                self._close_ctl(sel, w)
            sel.close()
            os.close(wake_r)
            os.close(self._wake_w)
            self._wake_w = -1
            if self._sock is not None:
                self._sock.close()

    # ------------------------------------------------------------------ internals

    def _wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"\0")
            except OSError:  # full (a wake-up is pending anyway) or already closed
                pass

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_stop(signum: int, frame: Any) -> None:
            self._requests.append(signal.Signals(signum).name)

        def on_child(signum: int, frame: Any) -> None:
            # Nothing to do: the wake-up fd has already ended the select, and the loop polls.
            pass

        handlers: dict[int, Callable[[int, Any], None]] = {
            signal.SIGINT: on_stop,
            signal.SIGTERM: on_stop,
        }
        if hasattr(signal, "SIGCHLD"):
            handlers[signal.SIGCHLD] = on_child
        previous = {sig: signal.signal(sig, fn) for sig, fn in handlers.items()}
        previous_fd = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

        def restore() -> None:
            signal.set_wakeup_fd(previous_fd)
            for sig, old in previous.items():
                if old is not None:
                    signal.signal(sig, old)

        return restore

    def _spawn(self, w: _Worker, sel: selectors.BaseSelector) -> None:
        assert self._sock is not None
        ours, theirs = socket.socketpair()
        cmd = [
            self.python,
            "-m",
            "gev_core",
            "serve",
            "--worker-of",
            str(os.getpid()),
            "--worker-index",
            str(w.index),
            "--worker-control-fd",
            str(theirs.fileno()),
        ]
        pass_fds = [theirs.fileno()]
        if self.port_sharing == "inherit":
            cmd += ["--worker-fd", str(self._sock.fileno())]
            pass_fds.append(self._sock.fileno())
        else:
            cmd += ["--worker-address", self.address]
        # Internal options first: after the user's arguments a "--" would make them positional.
        cmd += self.serve_args
        try:
            proc = subprocess.Popen(
                cmd, pass_fds=pass_fds, env=self.env, stdin=subprocess.DEVNULL, close_fds=True
            )
        except OSError as exc:
            ours.close()
            logger.error("cannot start worker %d: %s", w.index, exc)
            self._schedule_restart(w, time.monotonic(), quick=True)
            return
        finally:
            theirs.close()
        ours.setblocking(False)
        sel.register(ours, selectors.EVENT_READ, w)
        w.proc = proc
        w.ctl = ours
        w.ready = False
        w.started = time.monotonic()
        w.restart_at = None
        logger.info("started worker %d (pid %d)", w.index, proc.pid)

    def _read_ctl(self, w: _Worker, sel: selectors.BaseSelector) -> None:
        if w.ctl is None:
            return
        try:
            data = w.ctl.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker closed its end: it has its go, or it died
            self._close_ctl(sel, w)
            return
        if _READY in data and not w.ready and w.proc is not None:
            w.ready = True
            if self._first_ready_at is None:
                self._first_ready_at = time.monotonic()
            logger.debug("worker %d (pid %d) is ready", w.index, w.proc.pid)
            if self._released:
                self._go(w)

    def _go(self, w: _Worker) -> None:
        if w.ctl is not None:
            try:
                w.ctl.send(_GO)
            except OSError:  # it died meanwhile; reaping will tell
                pass

    def _release(self, now: float) -> None:
        """Let every ready worker serve; from now on each new one serves once it is ready."""
        assert self._sock is not None
        waiting = [w.index for w in self._workers if not w.ready]
        if waiting:
            logger.warning(
                "workers %s not ready %.0f s after worker 0; serving without them",
                waiting,
                RELEASE_TIMEOUT,
            )
        if self.port_sharing == "inherit":
            self._sock.listen(self._backlog)
        self._released = True
        for w in self._workers:
            if w.ready:
                self._go(w)
        logger.info(
            "serving on %s with %d worker(s)", self.address, sum(w.ready for w in self._workers)
        )

    @staticmethod
    def _close_ctl(sel: selectors.BaseSelector, w: _Worker) -> None:
        if w.ctl is not None:
            sel.unregister(w.ctl)
            w.ctl.close()
            w.ctl = None

    def _schedule_restart(self, w: _Worker, now: float, *, quick: bool) -> float:
        w.quick_exits = w.quick_exits + 1 if quick else 0
        delay = 0.0
        if w.quick_exits:
            delay = min(BACKOFF_FIRST * 2 ** (w.quick_exits - 1), BACKOFF_MAX)
        w.restart_at = now + delay
        return delay

    def _signal_all(self, sig: int) -> None:
        for w in self._workers:
            if w.proc is not None and w.proc.poll() is None:
                try:
                    w.proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def _supervise(self, sel: selectors.BaseSelector) -> int:
        logger.info(
            "supervisor (pid %d): %d worker(s) on %s, port shared by %s",
            os.getpid(),
            self.num_workers,
            self.address,
            self.port_sharing,
        )
        exit_code = 0
        stopping = False
        kill_at = 0.0
        booting = True  # only worker 0 started, until it is ready
        self._spawn(self._workers[0], sel)
        while True:
            now = time.monotonic()
            timeout = _POLL_CAP
            if stopping:
                timeout = min(timeout, max(0.0, kill_at - now))
            else:
                for w in self._workers:
                    if w.restart_at is not None:
                        timeout = min(timeout, max(0.0, w.restart_at - now))
            for key, _ in sel.select(timeout):
                if key.data is None:
                    try:
                        while os.read(key.fd, 512):
                            pass
                    except BlockingIOError:
                        pass
                else:
                    self._read_ctl(key.data, sel)
            now = time.monotonic()

            while self._requests:
                request = self._requests.popleft()
                if not stopping:
                    reason = "stop requested" if request in ("stop", "kill") else request
                    logger.info("%s: stopping %d worker(s)", reason, len(self.pids))
                    stopping = True
                    kill_at = now if request == "kill" else now + self.graceful_timeout
                    for w in self._workers:
                        w.restart_at = None
                    self._signal_all(signal.SIGTERM)
                elif request != "stop":
                    # A second signal (Ctrl-C again) or stop(kill=True): don't wait for the drain.
                    logger.warning("%s while stopping: killing the workers now", request)
                    kill_at = now

            for w in self._workers:
                if w.proc is None:
                    continue
                returncode = w.proc.poll()
                if returncode is None:
                    continue
                self._read_ctl(w, sel)  # a ready written just before dying still counts
                self._close_ctl(sel, w)
                pid, uptime = w.proc.pid, now - w.started
                w.proc = None
                w.ready = False
                what = _describe_exit(returncode)
                if stopping:
                    logger.info("worker %d (pid %d) %s", w.index, pid, what)
                elif self._first_ready_at is None:
                    # No worker ever got as far as serving: a configuration error, which
                    # restarting would only repeat.
                    logger.error(
                        "worker %d (pid %d) %s before it was ready; stopping", w.index, pid, what
                    )
                    exit_code = returncode if returncode > 0 else 1
                    stopping = True
                    kill_at = now + self.graceful_timeout
                    self._signal_all(signal.SIGTERM)
                else:
                    delay = self._schedule_restart(w, now, quick=uptime < MIN_UPTIME)
                    if w.quick_exits > 1:
                        logger.warning(
                            "worker %d (pid %d) %s after %.1f s; it keeps dying within %.0f s"
                            " of starting (%d times in a row), restarting it in %.1f s",
                            w.index,
                            pid,
                            what,
                            uptime,
                            MIN_UPTIME,
                            w.quick_exits,
                            delay,
                        )
                    else:
                        logger.warning(
                            "worker %d (pid %d) %s after %.1f s; restarting it%s",
                            w.index,
                            pid,
                            what,
                            uptime,
                            f" in {delay:.1f} s" if delay else "",
                        )

            if stopping:
                if all(w.proc is None for w in self._workers):
                    logger.info("all workers stopped")
                    return exit_code
                if now >= kill_at:
                    for w in self._workers:
                        if w.proc is not None:
                            logger.warning(
                                "worker %d (pid %d) still running; killing it", w.index, w.proc.pid
                            )
                    self._signal_all(signal.SIGKILL)
                    for w in self._workers:
                        if w.proc is not None:
                            try:
                                w.proc.wait(5)
                            except subprocess.TimeoutExpired:
                                continue  # run()'s finally tries once more and logs
                            self._close_ctl(sel, w)
                            w.proc = None
                    return exit_code
                continue

            if booting and self._first_ready_at is not None:
                booting = False
                for w in self._workers[1:]:
                    self._spawn(w, sel)
            if not self._released and self._first_ready_at is not None:
                everyone = all(w.ready for w in self._workers)
                if everyone or now - self._first_ready_at >= RELEASE_TIMEOUT:
                    self._release(now)
            if not booting:
                for w in self._workers:
                    if w.proc is None and w.restart_at is not None and w.restart_at <= now:
                        self._spawn(w, sel)


def serve_workers(
    app: str,
    workers: int,
    *,
    address: str | tuple[str, int] = "127.0.0.1:1833",
    protocol: str | Sequence[str] | None = None,
    loops: int = 1,
    app_dir: str | None = None,
    log_level: str = "info",
    port_sharing: str = "auto",
    graceful_timeout: float = 10.0,
    extra_args: Sequence[str] = (),
) -> int:
    """Serve ``app`` (``"module:attr"``, as for ``gev serve``) from ``workers`` processes.

    Each worker is a fresh ``python -m gev_core serve`` that imports ``app`` itself, so the
    handler is named, not passed: ``module`` must be importable from ``app_dir`` (default: the
    current directory) or ``sys.path``. ``protocol`` takes protocol names (several share the
    port); ``extra_args`` carries further ``gev serve`` options, such as plugin options
    (``["--idle-time", "30"]``). Blocks until SIGTERM/SIGINT (on the main thread) and returns the
    exit status: 0, or the exit code of a worker that failed to start.
    """
    addr = address if isinstance(address, str) else format_address(address)
    args = [app, "--address", addr, "--loops", str(loops), "--log-level", log_level]
    names = [protocol] if isinstance(protocol, str) else list(protocol or ())
    for name in names:
        args += ["--protocol", name]
    if app_dir is not None:
        args += ["--app-dir", app_dir]
    args += list(extra_args)
    supervisor = Supervisor(
        args,
        workers,
        address=addr,
        port_sharing=port_sharing,
        graceful_timeout=graceful_timeout,
    )
    return supervisor.run()
