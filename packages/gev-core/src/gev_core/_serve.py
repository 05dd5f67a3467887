"""Running a :class:`ServeConfig`: as a supervisor of workers, as one of them, or alone.

:func:`serve` is what ``gev serve`` dispatches to once it has parsed its arguments. In a single
process and in a worker, :func:`run_server` owns SIGINT/SIGTERM from before the socket exists
until the server has stopped, so that a signal at any moment stops it gracefully -- with
``on_close`` for every connection -- and never kills it half started.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from dataclasses import dataclass

from ._config import ServeConfig, StartupError
from ._errors import GevError
from ._plugins import GevPluginManager
from ._server import Server
from ._signals import capture_signals, signal_name
from ._workers import Supervisor, WorkerChannel, prepare_worker

logger = logging.getLogger("gev")

__all__ = ["WorkerArgs", "run_server", "serve"]


@dataclass(frozen=True)
class WorkerArgs:
    """What the supervisor tells a worker process about itself (internal ``gev serve`` flags)."""

    parent_pid: int
    index: int
    control_fd: int
    listen_fd: int


def serve(config: ServeConfig, pm: GevPluginManager, worker: WorkerArgs | None = None) -> int:
    """Serve ``config``; returns the exit status. Raises :class:`StartupError` if it cannot."""
    if config.tls:
        check_tls(config)
    if config.workers is not None and worker is None:
        try:
            return Supervisor(config, plugins=pm).run()
        except OSError as exc:
            raise StartupError(f"cannot listen on {config.display_address}: {exc}") from None
    return run_server(config, pm, worker)


def check_tls(config: ServeConfig) -> None:
    """Build the TLS context of ``config`` once, before anything starts, so that a missing file
    or a key that does not match its certificate stops ``gev serve`` with a usage error (exit 2)
    instead of failing in every worker.

    :raises StartupError: the context cannot be built.
    """
    try:
        config.ssl_context()
    except ValueError as exc:
        raise StartupError(f"TLS: {exc}", 2) from None


class _Stopper:
    """SIGINT/SIGTERM at any point of a process's life: before the server exists, it only
    records the request; after, it stops the server without waiting (it runs in a signal
    handler on the thread that serves)."""

    def __init__(self) -> None:
        self.requested = False
        self.server: Server | None = None

    def __call__(self, signum: int) -> None:
        logger.info("received %s; stopping", signal_name(signum))
        self.requested = True
        if self.server is not None:
            self.server.stop(wait=False)


def run_server(config: ServeConfig, pm: GevPluginManager, worker: WorkerArgs | None = None) -> int:
    """Serve ``config`` in this process until a signal or ``Server.stop``; 0 on a clean stop."""
    stopper = _Stopper()
    with capture_signals(stopper, (signal.SIGINT, signal.SIGTERM)):
        channel = None
        if worker is not None:
            if not prepare_worker(worker.parent_pid):
                logger.warning(
                    "supervisor (pid %d) is gone before this worker started", worker.parent_pid
                )
                return 1
            channel = WorkerChannel(worker.control_fd, worker.parent_pid)
        try:
            return _run(config, pm, worker, channel, stopper)
        finally:
            if channel is not None:
                channel.close()


def _build(config: ServeConfig, pm: GevPluginManager, worker: WorkerArgs | None) -> Server:
    handler = config.load_handler()
    kwargs = config.server_kwargs(worker.index if worker is not None else None)
    sock = socket.socket(fileno=worker.listen_fd) if worker is not None else None
    try:
        return Server(handler, **kwargs, sock=sock, handle_signals=False, plugins=pm)
    except OSError as exc:
        raise StartupError(f"cannot listen on {config.display_address}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise StartupError(str(exc), 2) from None
    except GevError as exc:
        raise StartupError(str(exc)) from None


def _run(
    config: ServeConfig,
    pm: GevPluginManager,
    worker: WorkerArgs | None,
    channel: WorkerChannel | None,
    stopper: _Stopper,
) -> int:
    server = _build(config, pm, worker)
    if worker is not None and channel is not None:
        if not channel.wait_for_go(lambda: stopper.requested):
            server.stop()
            return 0  # stopped before serving: nothing to drain
        logger.info("worker %d serving %s (pid %d)", worker.index, config.app, os.getpid())
        channel.watch(
            on_drain=lambda: server.drain(config.drain_timeout, wait=False),
            on_gone=lambda: server.stop(wait=False),
        )
    else:
        logger.info("serving %s (pid %d); Ctrl-C to stop", config.app, os.getpid())
    # Assigned before the check: a signal after it stops the server (and start() refuses to
    # run), a signal before it is seen by the check.
    stopper.server = server
    if stopper.requested:
        server.stop()
        return 0
    try:
        server.start()
    except RuntimeError:
        if not stopper.requested:
            raise
    logger.info("stopped")
    return 0
