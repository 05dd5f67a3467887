"""Worker processes: a supervisor runs M copies of ``gev serve`` that share one address.

Why processes: under the GIL, extra loop threads compete for one interpreter instead of adding a
core (``bench/RESULTS.md``); a process per core is how a pure-Python server scales out.

Why ``subprocess`` running ``python -m gev_core serve`` rather than ``fork``: the supervisor may
live in a threaded application, and a forked child inherits every lock in whatever state another
thread left it. A fresh interpreter per worker also imports the application itself -- which is
what lets a rolling restart load new code -- so workers share nothing but the listening sockets.

The supervisor owns the listening sockets
-----------------------------------------
Every listening socket is bound by the supervisor and inherited by the workers (``pass_fds``);
no worker ever binds. The sockets live as long as the supervisor, so a worker that exits -- by
a crash or replaced by a rolling restart -- never closes a listener, and the connections waiting
in its accept queue wait there for the next worker instead of being reset. How the workers
share the address (``port_sharing``):

* ``"reuse-port"`` (TCP on Linux, the default there): the supervisor opens one ``SO_REUSEPORT``
  listener per worker *slot*, all on the same address, and the kernel spreads new connections
  over their queues by a hash of the 4-tuple -- balancing that no user-space accept loop
  matches. Slot ``i``'s worker inherits listener ``i``; its replacement inherits the same one.
* ``"inherit"`` (Unix sockets, which cannot share a path, and systems where ``SO_REUSEPORT``
  does not balance): one listener, polled by every worker; whichever wakes first accepts.

Why not let each worker bind its own ``SO_REUSEPORT`` socket, as gev did before? Because closing
a listener resets every connection in its accept queue: the clients already completed their
handshake and get a ``RST``. The kernel can move them to another listener of the group only
with the ``net.ipv4.tcp_migrate_req`` sysctl, which is off by default and is a setting of the
machine, not of a library. Measured on loopback: of 20 clients queued on two ``SO_REUSEPORT``
listeners, closing one of them reset 11. With per-worker sockets every restart, planned or
not, would lose whatever was queued on the old worker.

Zero-downtime restarts (``SIGHUP``)
-----------------------------------
``SIGHUP`` to the supervisor replaces the workers one slot at a time: it starts a fresh worker
for the slot (new code loaded), waits for its "ready", says "go" to it -- now two processes
accept from the slot's listener -- and tells the old worker to drain over its control socket.
The old worker closes its descriptor of the listener (the socket stays open: the supervisor and
the new worker hold it), so from then on only the new worker takes the slot's connections;
nothing queued is lost, because the queue never belonged to the old worker. It keeps serving
its open connections until they end or ``drain_timeout`` passes, then stops as on ``SIGTERM``
and exits. Capacity never drops: a slot is handed over only once its new worker is ready.

A new worker that exits before it is ready (the new code does not import, say) or is not ready
within :data:`RELOAD_READY_TIMEOUT` aborts the reload: the workers still running keep serving the
code they have, and the supervisor logs why. A ``SIGHUP`` during a reload queues one more.
Upgrading gev itself needs a restart of the supervisor: old supervisor and new workers speak the
control protocol of their own versions.

Start-up handshake
------------------
Each worker gets one end of a socket pair. It loads plugins and the application, builds its
server on the inherited listener, sends ``r`` (ready) and waits for ``g`` (go) before it serves.
The supervisor boots worker 0 alone, then the others, and says go once all of them are ready (or
:data:`RELEASE_TIMEOUT` after the first was). Two reasons: a configuration error (bad
``MODULE:ATTR``, a broken plugin) is printed once by worker 0, not M times, and stops the
supervisor with that worker's exit code instead of a restart loop; and no worker takes
connections before the others can -- with long-lived connections, whatever connects in the
first second would otherwise stay on worker 0 for good. A listener only starts listening when
the first worker that serves it gets its go: until then the kernel leaves it out of the
``SO_REUSEPORT`` group, and connections go to the slots that are served.

Restarts. A worker that dies is started again at once; one that keeps dying within
:data:`MIN_UPTIME` of its start is restarted after a back-off that doubles up to
:data:`BACKOFF_MAX`. While the back-off runs, a ``reuse-port`` slot's listener is closed (its
queued clients get a reset and retry, landing on the other slots, instead of waiting many
seconds for a worker) and bound afresh, not listening, for the next worker.

No orphans. On Linux each worker asks the kernel for ``SIGTERM`` when its parent dies
(``PR_SET_PDEATHSIG``), then checks that its parent is still the supervisor, which closes the
window between ``fork`` and that call. It does this itself, first thing after start-up, instead
of in a ``preexec_fn``: a ``preexec_fn`` runs Python between ``fork`` and ``exec`` and can
deadlock when the supervisor's process has other threads. Everywhere, a thread in each worker
watches the control socket -- the end of file there means the supervisor is gone -- and polls
``os.getppid()``, and stops the server gracefully once the supervisor is gone.

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._bind import SocketFile, bind_socket, format_address
from ._config import ServeConfig
from ._signals import capture_signals, signal_name

if TYPE_CHECKING:
    from ._plugins import GevPluginManager

logger = logging.getLogger("gev")

__all__ = [
    "Supervisor",
    "WorkerChannel",
    "prepare_worker",
    "serve_workers",
]

#: A worker that exits sooner than this after it was started counts as crashing quickly.
MIN_UPTIME = 5.0
#: First restart delay after a quick crash; doubled for each further quick crash in a row.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
#: Seconds after worker 0 is ready that the others get to be ready before serving starts
#: without the stragglers.
RELEASE_TIMEOUT = 10.0
#: Seconds a worker started by a rolling restart gets to be ready before the reload is aborted.
RELOAD_READY_TIMEOUT = 60.0
#: How often a worker checks that its supervisor is still there (the portable orphan guard).
PARENT_POLL_INTERVAL = 0.5
#: Upper bound on the supervisor's sleep: without signal delivery (not on the main thread) this
#: is how late a dead worker may be noticed.
_POLL_CAP = 0.5
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# The control protocol, one byte each. Worker to supervisor: ready. Supervisor to worker: go
# (serve), drain (stop accepting, finish the open connections, exit).
_READY = b"r"
_GO = b"g"
_DRAIN = b"d"


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal_name(-returncode)}"
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


class WorkerChannel:
    """A worker's end of its control socket to the supervisor.

    :meth:`wait_for_go` is the start-up handshake; :meth:`watch` then runs a thread that turns
    the supervisor's drain request and its disappearance into calls.
    """

    def __init__(self, fd: int, parent_pid: int) -> None:
        self._sock = socket.socket(fileno=fd)
        self._parent = parent_pid
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def wait_for_go(self, stop_requested: Callable[[], bool]) -> bool:
        """Report ready, then wait for the supervisor's go.

        Returns False when the worker should not serve: ``stop_requested()`` turned true (a signal
        arrived meanwhile) or the supervisor closed its end (it is stopping or gone).
        """
        try:
            self._sock.sendall(_READY)
            while not stop_requested():
                # A timeout rather than a blocking recv: a signal handler cannot interrupt that
                # (PEP 475 retries it), and it must be able to cancel the start.
                readable, _, _ = select.select([self._sock], [], [], 0.2)
                if readable:
                    return self._sock.recv(1) == _GO
        except OSError:
            pass
        return False

    def watch(
        self,
        on_drain: Callable[[], None],
        on_gone: Callable[[], None],
        interval: float = PARENT_POLL_INTERVAL,
    ) -> threading.Thread:
        """Call ``on_drain()`` when the supervisor asks for a drain, ``on_gone()`` (once, then
        stop watching) when it is gone: end of file on the socket, or this process re-parented.
        """

        def run() -> None:
            while not self._done.is_set():
                try:
                    readable, _, _ = select.select([self._sock], [], [], interval)
                    data = self._sock.recv(64) if readable else None
                except OSError:
                    data = b""
                if data == b"" or os.getppid() != self._parent:
                    if not self._done.is_set():
                        logger.warning("supervisor (pid %d) is gone; stopping", self._parent)
                        on_gone()
                    return
                if data and _DRAIN in data:
                    on_drain()

        self._thread = threading.Thread(target=run, name="gev-worker-control", daemon=True)
        self._thread.start()
        return self._thread

    def close(self) -> None:
        """End the watch (without calling anything) and close the socket."""
        self._done.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(PARENT_POLL_INTERVAL * 4)
        self._sock.close()


# -------------------------------------------------------------------------------- supervisor side


@dataclass
class _Listener:
    sock: socket.socket
    listening: bool = False


@dataclass
class _Worker:
    slot: int
    proc: subprocess.Popen[bytes]
    ctl: socket.socket | None  # the supervisor's end of the control socket pair
    started: float
    ready: bool = False
    serving: bool = False  # has its go
    kill_at: float | None = None  # draining: killed if still running then
    reported: bool = False  # gev_worker_exited has been called for it


@dataclass
class _Slot:
    index: int
    listener: _Listener
    worker: _Worker | None = None
    quick_exits: int = 0  # in a row
    restart_at: float | None = None


@dataclass
class _Reload:
    queue: deque[int] = field(default_factory=deque)  # slots still to replace
    incoming: _Worker | None = None  # the new worker of the slot being replaced
    deadline: float = 0.0  # for ``incoming`` to be ready
    again: bool = False  # another SIGHUP arrived meanwhile


class Supervisor:
    """Run ``config.workers`` processes of ``python -m gev_core serve`` on one address.

    :param config: what to serve (``config.worker_args()`` is each worker's command line).
    :param python: interpreter for the workers (default: this one).
    :param env: environment for the workers (default: inherited).
    :param plugins: the plugin manager whose supervisor hooks to call
        (``gev_supervisor_started``, ``gev_worker_exited``, ``gev_supervisor_stopped``); ``gev
        serve`` passes its own. None: no hooks are called.

    :meth:`run` blocks until the supervisor is stopped: by SIGTERM or SIGINT when it runs on the
    main thread, or by :meth:`stop` from any thread. SIGHUP (or :meth:`reload`) replaces the
    workers one by one with fresh processes (see the module docstring).
    """

    def __init__(
        self,
        config: ServeConfig,
        *,
        python: str | None = None,
        env: dict[str, str] | None = None,
        plugins: GevPluginManager | None = None,
    ) -> None:
        if config.workers is None:
            raise ValueError("config.workers must be set for a Supervisor")
        self.config = config
        self.num_workers = config.workers
        self.port_sharing = config.sharing
        self.python = python or sys.executable
        self.env = env
        #: Variables added to every worker's environment (plugins set them in
        #: ``gev_supervisor_started``).
        self.worker_env: dict[str, str] = {}
        self.pluginmanager = plugins
        #: The bound address (``"host:port"`` or ``"unix:..."``) once :meth:`run` has bound it.
        self.address = ""
        self._slots: list[_Slot] = []
        self._retiring: list[_Worker] = []  # replaced by a reload, draining
        self._reload: _Reload | None = None
        # Appended to by signal handlers and other threads, drained by run(): deque operations
        # are atomic, so there is no lock a signal handler could deadlock on.
        self._requests: deque[str] = deque()
        self._wake_w = -1
        self._sel: selectors.BaseSelector | None = None
        self._socket_file: SocketFile | None = None
        self._booting = True  # only worker 0 started, until it is ready
        self._released = False  # go has been given: ready workers serve at once
        self._first_ready_at: float | None = None
        self._stopping = False
        self._kill_at = 0.0
        self._exit_code = 0
        self._ran = False

    # ------------------------------------------------------------------ public

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers currently running (draining ones included)."""
        return [w.proc.pid for w in self._all_workers()]

    @property
    def ready(self) -> bool:
        """True while workers serve and the supervisor is not stopping (a readiness probe)."""
        return (
            self._released
            and not self._stopping
            and any(s.worker is not None and s.worker.serving for s in self._slots)
        )

    @property
    def reloading(self) -> bool:
        """True while a rolling restart is replacing workers."""
        return self._reload is not None

    def stop(self, *, kill: bool = False) -> None:
        """Stop gracefully (SIGTERM to the workers); ``kill`` skips the grace. Any thread."""
        self._request("kill" if kill else "stop")

    def reload(self) -> None:
        """Replace the workers one by one with fresh processes (as SIGHUP does). Any thread."""
        self._request("hup")

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
        self._sel = selectors.DefaultSelector()
        self._sel.register(wake_r, selectors.EVENT_READ, None)
        signals = [signal.SIGINT, signal.SIGTERM]
        signals += [getattr(signal, n) for n in ("SIGHUP", "SIGCHLD") if hasattr(signal, n)]
        # Handlers before binding: once the port exists a client or a test may signal us.
        started = False
        with capture_signals(self._on_signal, signals, wakeup_fd=self._wake_w):
            try:
                self._bind()
                if any(r in ("int", "term", "stop", "kill") for r in self._requests):
                    return 0  # stopped while binding: start nothing
                if self.pluginmanager is not None:
                    started = True
                    self.pluginmanager.hook.gev_supervisor_started(supervisor=self)
                return self._supervise()
            finally:
                self._shutdown_now()
                if started:
                    self._call_hook("gev_supervisor_stopped")
                self._sel.close()
                os.close(wake_r)
                os.close(self._wake_w)
                self._wake_w = -1

    def _call_hook(self, name: str, **kwargs: object) -> None:
        if self.pluginmanager is None:
            return
        try:
            getattr(self.pluginmanager.hook, name)(supervisor=self, **kwargs)
        except Exception:
            logger.exception("a %s hook failed", name)

    def _report_exit(self, w: _Worker, returncode: int) -> None:
        if not w.reported:
            w.reported = True
            self._call_hook(
                "gev_worker_exited", index=w.slot, pid=w.proc.pid, returncode=returncode
            )

    # ------------------------------------------------------------------ signals and requests

    def _on_signal(self, signum: int) -> None:
        # In the signal handler: record only; run() acts on it (the wake-up fd woke it).
        self._requests.append(signal_name(signum)[3:].lower())

    def _request(self, name: str) -> None:
        self._requests.append(name)
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"\0")
            except OSError:  # full (a wake-up is pending anyway) or already closed
                pass

    def _handle_requests(self) -> None:
        while self._requests:
            name = self._requests.popleft()
            handler = getattr(self, f"handle_{name}", None)
            if handler is not None:
                handler()

    def handle_int(self) -> None:
        self._begin_stop("SIGINT", escalate=True)

    def handle_term(self) -> None:
        self._begin_stop("SIGTERM", escalate=True)

    def handle_stop(self) -> None:
        self._begin_stop("stop requested", escalate=False)

    def handle_kill(self) -> None:
        self._begin_stop("kill requested", escalate=True, now=True)

    def handle_hup(self) -> None:
        if self._stopping:
            logger.info("SIGHUP while stopping: ignored")
        elif self._reload is not None or not self._released:
            if self._reload is None:
                self._reload = _Reload()  # starts once the workers serve
            self._reload.again = True
            logger.info("SIGHUP: a rolling restart follows the one in progress")
        else:
            self._begin_reload()

    def handle_chld(self) -> None:
        # Nothing to do: the wake-up fd has ended the select, and the loop reaps.
        pass

    # ------------------------------------------------------------------ the loop

    def _supervise(self) -> int:
        logger.info(
            "supervisor (pid %d): %d worker(s) on %s, listener%s shared by %s",
            os.getpid(),
            self.num_workers,
            self.address,
            "" if self.port_sharing == "inherit" else "s",
            self.port_sharing,
        )
        self._spawn_into(self._slots[0])
        while True:
            self._wait(self._timeout())
            self._handle_requests()
            self._reap()
            if self._stopping:
                if self._stop_progress():
                    return self._exit_code
                continue
            self._boot_progress()
            self._restart_due()
            self._reload_progress()
            self._kill_overdue_drains()

    def _wait(self, timeout: float) -> None:
        assert self._sel is not None
        for key, _ in self._sel.select(timeout):
            if key.data is None:
                try:
                    while os.read(key.fd, 512):
                        pass
                except BlockingIOError:
                    pass
            else:
                self._read_ctl(key.data)

    def _timeout(self) -> float:
        now = time.monotonic()
        deadlines = [now + _POLL_CAP]
        if self._stopping:
            deadlines.append(self._kill_at)
        else:
            deadlines += [s.restart_at for s in self._slots if s.restart_at is not None]
            deadlines += [w.kill_at for w in self._retiring if w.kill_at is not None]
            if self._reload is not None and self._reload.incoming is not None:
                deadlines.append(self._reload.deadline)
            if not self._released and self._first_ready_at is not None:
                deadlines.append(self._first_ready_at + RELEASE_TIMEOUT)
        return max(0.0, min(deadlines) - now)

    # ------------------------------------------------------------------ listeners

    def _bind(self) -> None:
        # Bound now, listening only when a worker of theirs gets its go (module docstring).
        shared = self.port_sharing == "inherit"
        first = self.config.bind_socket(reuse_port=not shared, listen=False)
        self._socket_file = SocketFile.of(first)
        self.address = format_address(first.getsockname())
        listeners = [_Listener(first)]
        try:
            for _ in range(1, self.num_workers):
                listeners.append(listeners[0] if shared else _Listener(self._bind_slot()))
        except BaseException:
            for listener in listeners:
                listener.sock.close()
            raise
        self._slots = [_Slot(i, listeners[i]) for i in range(self.num_workers)]

    def _bind_slot(self) -> socket.socket:
        # Port 0 was turned into a real port by the first bind: the others take that one.
        return bind_socket(self.address, network=self.config.network, reuse_port=True)

    def _reset_listener(self, slot: _Slot) -> None:
        """Close a ``reuse-port`` slot's listener (resetting its queue) and bind a fresh one."""
        if self.port_sharing == "inherit" or not slot.listener.listening:
            return
        try:
            fresh = self._bind_slot()
        except OSError as exc:
            logger.error("cannot bind a new listener for worker %d: %s", slot.index, exc)
            return
        slot.listener.sock.close()
        slot.listener = _Listener(fresh)

    def _listen(self, listener: _Listener) -> None:
        if not listener.listening:
            listener.sock.listen(self.config.backlog)
            listener.listening = True

    # ------------------------------------------------------------------ workers

    def _all_workers(self) -> list[_Worker]:
        workers = [s.worker for s in self._slots if s.worker is not None]
        if self._reload is not None and self._reload.incoming is not None:
            workers.append(self._reload.incoming)
        return workers + self._retiring

    def _spawn(self, slot: _Slot) -> _Worker | None:
        assert self._sel is not None
        ours, theirs = socket.socketpair()
        listen_fd = slot.listener.sock.fileno()
        cmd = [
            self.python,
            "-m",
            "gev_core",
            "serve",
            "--worker-of",
            str(os.getpid()),
            "--worker-index",
            str(slot.index),
            "--worker-control-fd",
            str(theirs.fileno()),
            "--worker-fd",
            str(listen_fd),
        ]
        # Internal options first: after the user's arguments a "--" would make them positional.
        cmd += self.config.worker_args()
        env = self.env
        if self.worker_env:
            env = {**(os.environ if env is None else env), **self.worker_env}
        try:
            proc = subprocess.Popen(
                cmd,
                pass_fds=[theirs.fileno(), listen_fd],
                env=env,
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError as exc:
            ours.close()
            logger.error("cannot start worker %d: %s", slot.index, exc)
            return None
        finally:
            theirs.close()
        ours.setblocking(False)
        worker = _Worker(slot.index, proc, ours, time.monotonic())
        self._sel.register(ours, selectors.EVENT_READ, worker)
        logger.info("started worker %d (pid %d)", slot.index, proc.pid)
        return worker

    def _spawn_into(self, slot: _Slot) -> None:
        slot.restart_at = None
        slot.worker = self._spawn(slot)
        if slot.worker is None:
            self._schedule_restart(slot, time.monotonic(), quick=True)

    def _read_ctl(self, w: _Worker) -> None:
        if w.ctl is None:
            return
        try:
            data = w.ctl.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker closed its end: it is exiting
            self._close_ctl(w)
            return
        if _READY in data and not w.ready:
            w.ready = True
            if self._first_ready_at is None:
                self._first_ready_at = time.monotonic()
            logger.debug("worker %d (pid %d) is ready", w.slot, w.proc.pid)

    def _send(self, w: _Worker, message: bytes) -> None:
        if w.ctl is not None:
            try:
                w.ctl.send(message)
            except OSError:  # it died meanwhile; reaping will tell
                pass

    def _go(self, w: _Worker) -> None:
        self._listen(self._slots[w.slot].listener)
        self._send(w, _GO)
        w.serving = True

    def _close_ctl(self, w: _Worker) -> None:
        if w.ctl is not None:
            assert self._sel is not None
            self._sel.unregister(w.ctl)
            w.ctl.close()
            w.ctl = None

    def _signal_all(self, sig: int) -> None:
        for w in self._all_workers():
            if w.proc.poll() is None:
                try:
                    w.proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def _schedule_restart(self, slot: _Slot, now: float, *, quick: bool) -> float:
        slot.quick_exits = slot.quick_exits + 1 if quick else 0
        delay = 0.0
        if slot.quick_exits:
            delay = min(BACKOFF_FIRST * 2 ** (slot.quick_exits - 1), BACKOFF_MAX)
        slot.restart_at = now + delay
        if delay:
            self._reset_listener(slot)
        return delay

    # ------------------------------------------------------------------ reaping

    def _exited(self, w: _Worker) -> int | None:
        returncode = w.proc.poll()
        if returncode is not None:
            self._read_ctl(w)  # a ready written just before dying still counts
            self._close_ctl(w)
            self._report_exit(w, returncode)
        return returncode

    def _reap(self) -> None:
        now = time.monotonic()
        for w in list(self._retiring):
            returncode = self._exited(w)
            if returncode is not None:
                self._retiring.remove(w)
                logger.info(
                    "replaced worker %d (pid %d) %s", w.slot, w.proc.pid, _describe_exit(returncode)
                )
        reload = self._reload
        if reload is not None and reload.incoming is not None:
            returncode = self._exited(reload.incoming)
            if returncode is not None and self._stopping:
                reload.incoming = None
            elif returncode is not None:
                self._abort_reload(f"it {_describe_exit(returncode)} before it was ready")
        for slot in self._slots:
            current = slot.worker
            if current is None:
                continue
            returncode = self._exited(current)
            if returncode is not None:
                slot.worker = None
                self._worker_exited(slot, current, returncode, now)

    def _worker_exited(self, slot: _Slot, w: _Worker, returncode: int, now: float) -> None:
        what, uptime = _describe_exit(returncode), now - w.started
        if self._stopping:
            logger.info("worker %d (pid %d) %s", slot.index, w.proc.pid, what)
        elif self._first_ready_at is None:
            # No worker ever got as far as serving: a configuration error, which restarting
            # would only repeat.
            logger.error(
                "worker %d (pid %d) %s before it was ready; stopping", slot.index, w.proc.pid, what
            )
            self._exit_code = returncode if returncode > 0 else 1
            self._begin_stop(None, escalate=False)
        elif (
            self._reload is not None
            and self._reload.incoming is not None
            and (self._reload.incoming.slot == slot.index)
        ):
            logger.warning(
                "worker %d (pid %d) %s; its replacement is starting", slot.index, w.proc.pid, what
            )
        else:
            delay = self._schedule_restart(slot, now, quick=uptime < MIN_UPTIME)
            if slot.quick_exits > 1:
                logger.warning(
                    "worker %d (pid %d) %s after %.1f s; it keeps dying within %.0f s"
                    " of starting (%d times in a row), restarting it in %.1f s",
                    slot.index,
                    w.proc.pid,
                    what,
                    uptime,
                    MIN_UPTIME,
                    slot.quick_exits,
                    delay,
                )
            else:
                logger.warning(
                    "worker %d (pid %d) %s after %.1f s; restarting it%s",
                    slot.index,
                    w.proc.pid,
                    what,
                    uptime,
                    f" in {delay:.1f} s" if delay else "",
                )

    # ------------------------------------------------------------------ boot and restarts

    def _boot_progress(self) -> None:
        if self._first_ready_at is None:
            return
        if self._booting:
            self._booting = False
            for slot in self._slots[1:]:
                self._spawn_into(slot)
        if not self._released:
            workers = [s.worker for s in self._slots]
            everyone = all(w is not None and w.ready for w in workers)
            if everyone or time.monotonic() - self._first_ready_at >= RELEASE_TIMEOUT:
                self._release()
        if self._released:
            for slot in self._slots:
                if slot.worker is not None and slot.worker.ready and not slot.worker.serving:
                    self._go(slot.worker)

    def _release(self) -> None:
        """Let every ready worker serve; from now on each new one serves once it is ready."""
        waiting = [s.index for s in self._slots if s.worker is None or not s.worker.ready]
        if waiting:
            logger.warning(
                "workers %s not ready %.0f s after worker 0; serving without them",
                waiting,
                RELEASE_TIMEOUT,
            )
        self._released = True
        for slot in self._slots:
            if slot.worker is not None and slot.worker.ready:
                self._go(slot.worker)
        logger.info(
            "serving on %s with %d worker(s)",
            self.address,
            sum(s.worker is not None and s.worker.serving for s in self._slots),
        )
        if self._reload is not None:  # a SIGHUP during the boot
            self._reload = None
            self._begin_reload()

    def _restart_due(self) -> None:
        if self._booting:
            return
        now = time.monotonic()
        incoming = self._reload.incoming if self._reload is not None else None
        for slot in self._slots:
            due = slot.restart_at is not None and slot.restart_at <= now
            # A slot whose replacement is starting gets that one instead.
            if slot.worker is None and due and (incoming is None or incoming.slot != slot.index):
                self._spawn_into(slot)

    # ------------------------------------------------------------------ rolling restart

    def _begin_reload(self) -> None:
        logger.info(
            "SIGHUP: replacing %d worker(s) one by one (old ones drain for up to %.3g s)",
            len(self._slots),
            self.config.drain_timeout,
        )
        self._reload = _Reload(queue=deque(s.index for s in self._slots))

    def _reload_progress(self) -> None:
        reload = self._reload
        if reload is None or not self._released:
            return
        if reload.incoming is None:
            if not reload.queue:
                logger.info("rolling restart done: %d worker(s) serving", len(self._slots))
                self._reload = None
                if reload.again:
                    self._begin_reload()
                return
            incoming = self._spawn(self._slots[reload.queue[0]])
            if incoming is None:
                self._abort_reload("it could not be started")
                return
            reload.incoming = incoming
            reload.deadline = time.monotonic() + RELOAD_READY_TIMEOUT
            return
        new = reload.incoming
        if new.ready:
            reload.queue.popleft()
            reload.incoming = None
            self._hand_over(self._slots[new.slot], new)
        elif time.monotonic() >= reload.deadline:
            new.proc.kill()
            self._abort_reload(f"it was not ready within {RELOAD_READY_TIMEOUT:.0f} s")

    def _hand_over(self, slot: _Slot, new: _Worker) -> None:
        """Serve ``slot`` with ``new``; its old worker stops accepting and drains."""
        old, slot.worker = slot.worker, new
        slot.restart_at = None
        slot.quick_exits = 0
        # Go first: the slot's listener is never without a worker accepting from it.
        self._go(new)
        if old is None:
            logger.info("worker %d: pid %d started (new code)", slot.index, new.proc.pid)
            return
        self._send(old, _DRAIN)
        old.kill_at = time.monotonic() + self.config.drain_timeout + self.config.graceful_timeout
        self._retiring.append(old)
        logger.info(
            "worker %d: pid %d took over from pid %d, which drains its connections",
            slot.index,
            new.proc.pid,
            old.proc.pid,
        )

    def _abort_reload(self, why: str) -> None:
        reload = self._reload
        assert reload is not None
        new = reload.incoming
        if new is not None:
            self._close_ctl(new)
            if new.proc.poll() is None:
                new.proc.kill()
                new.proc.wait(5)
            if new.proc.returncode is not None:
                self._report_exit(new, new.proc.returncode)
            logger.error(
                "rolling restart aborted: the new worker %d (pid %d): %s; the running workers"
                " keep serving",
                new.slot,
                new.proc.pid,
                why,
            )
            slot = self._slots[new.slot]
            if slot.worker is None and slot.restart_at is None:  # it died meanwhile
                self._schedule_restart(slot, time.monotonic(), quick=True)
        else:
            logger.error("rolling restart aborted: a new worker: %s", why)
        self._reload = None

    def _kill_overdue_drains(self) -> None:
        now = time.monotonic()
        for w in self._retiring:
            if w.kill_at is not None and now >= w.kill_at and w.proc.poll() is None:
                logger.warning(
                    "replaced worker %d (pid %d) still running after its drain; killing it",
                    w.slot,
                    w.proc.pid,
                )
                w.proc.kill()
                w.kill_at = None

    # ------------------------------------------------------------------ stopping

    def _begin_stop(self, reason: str | None, *, escalate: bool, now: bool = False) -> None:
        if not self._stopping:
            if reason is not None:
                logger.info("%s: stopping %d worker(s)", reason, len(self.pids))
            self._stopping = True
            self._kill_at = time.monotonic() + (0.0 if now else self.config.graceful_timeout)
            for slot in self._slots:
                slot.restart_at = None
            self._signal_all(signal.SIGTERM)
        elif escalate:
            # A second signal (Ctrl-C again) or stop(kill=True): don't wait for the drain.
            logger.warning("%s while stopping: killing the workers now", reason)
            self._kill_at = time.monotonic()

    def _stop_progress(self) -> bool:
        """True once every worker is gone (killing the ones past the deadline)."""
        workers = self._all_workers()
        if not workers:
            logger.info("all workers stopped")
            return True
        if time.monotonic() < self._kill_at:
            return False
        for w in workers:
            logger.warning("worker %d (pid %d) still running; killing it", w.slot, w.proc.pid)
        self._signal_all(signal.SIGKILL)
        for w in workers:
            try:
                w.proc.wait(5)
            except subprocess.TimeoutExpired:
                continue  # run()'s finally tries once more and logs
        self._reap()
        return True

    def _shutdown_now(self) -> None:
        # Whatever happened (even an exception), no worker outlives run().
        for w in self._all_workers():
            if w.proc.poll() is None:
                logger.warning("killing worker %d (pid %d)", w.slot, w.proc.pid)
                w.proc.kill()
                try:
                    w.proc.wait(5)
                except subprocess.TimeoutExpired:
                    logger.error("worker %d (pid %d) survived SIGKILL", w.slot, w.proc.pid)
            self._close_ctl(w)
            if w.proc.returncode is not None:
                self._report_exit(w, w.proc.returncode)
        closed: set[int] = set()
        for slot in self._slots:
            if id(slot.listener) not in closed:
                closed.add(id(slot.listener))
                slot.listener.sock.close()
        if self._socket_file is not None:
            self._socket_file.remove()


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
    drain_timeout: float = 30.0,
    unix_mode: int | None = None,
    extra_args: Sequence[str] = (),
) -> int:
    """Serve ``app`` (``"module:attr"``, as for ``gev serve``) from ``workers`` processes.

    Each worker is a fresh ``python -m gev_core serve`` that imports ``app`` itself, so the
    handler is named, not passed: ``module`` must be importable from ``app_dir`` (default: the
    current directory) or ``sys.path``. ``address`` may be ``"unix:/path"``. ``protocol`` takes
    protocol names (several share the port); ``extra_args`` carries further ``gev serve``
    options, such as plugin options (``["--idle-time", "30"]``). Blocks until SIGTERM/SIGINT (on
    the main thread) and returns the exit status: 0, or the exit code of a worker that failed to
    start. SIGHUP replaces the workers one by one (a rolling restart that loads new code);
    a replaced worker drains its connections for up to ``drain_timeout`` seconds.

    Plugins are loaded as for ``gev serve`` (entry points, ``GEV_DISABLED_PLUGINS``...), and
    their supervisor hooks run in this process: ``extra_args=["--metrics-address",
    "127.0.0.1:9100"]`` serves gev-metrics' one scrape of every worker from here.

    :raises ValueError: ``extra_args`` are not valid ``gev serve`` options.
    :raises ~gev_core.PluginError: a plugin failed to load.
    """
    # As gev serve does: the plugins' supervisor hooks run here (metrics, for one), and their
    # options, given in extra_args, are parsed for them.
    from ._cli import plugin_options
    from ._plugins import get_plugin_manager

    pm = get_plugin_manager(strict=True)
    options = plugin_options(pm, extra_args)
    names = [protocol] if isinstance(protocol, str) else list(protocol or ())
    config = ServeConfig(
        app,
        address=address,
        protocols=names,
        loops=loops,
        workers=workers,
        port_sharing=port_sharing,
        graceful_timeout=graceful_timeout,
        drain_timeout=drain_timeout,
        unix_mode=unix_mode,
        app_dir=app_dir,
        log_level=log_level,
        extra_args=list(extra_args),
        options=options,
    )
    return Supervisor(config, plugins=pm).run()
