"""Test helpers: a real ``redis-server`` on an ephemeral loopback port, in a temporary directory.

::

    with RedisServer() as redis:          # skips nothing: raises if redis-server is missing
        bridge = RedisBridge(redis.url)
        ...
        redis.stop()                      # Redis goes away (SIGKILL: nothing is saved)
        redis.start()                     # and comes back, empty, on the same port

Persistence is off (no RDB, no AOF), as for a cache-like Redis: a restart loses every entry,
which is the harsh case for the bridge.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from types import TracebackType

__all__ = ["RedisServer", "redis_server_path"]


def redis_server_path() -> str | None:
    """Where ``redis-server`` is, or ``None``."""
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A ``redis-server`` child process on 127.0.0.1.

    :param port: the port; 0 picks a free one (kept across :meth:`stop` / :meth:`start`).
    :param executable: the ``redis-server`` binary (default: found on ``PATH``).
    """

    def __init__(self, port: int = 0, executable: str | None = None) -> None:
        path = executable or redis_server_path()
        if path is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.executable = path
        self.port = port or _free_port()
        self._dir = tempfile.mkdtemp(prefix="gev-redis-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = os.path.join(self._dir, "redis.log")

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start it (again) and wait until it answers ``PING``."""
        if self.running:
            return
        args = [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self._dir,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", self._log,
        ]  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            if self._wait_ready(deadline):
                return
            # The port may still be held by the previous instance's closing sockets: retry.
            self._proc.kill()
            self._proc.wait()
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}: {self.log()}")
            time.sleep(0.1)

    def _wait_ready(self, deadline: float) -> bool:
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Kill it at once (SIGKILL: no shutdown, nothing saved) and wait until it is gone."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        self._proc = None

    def log(self) -> str:
        """What redis-server logged (the last 2000 characters)."""
        try:
            with open(self._log, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def close(self) -> None:
        """Stop it and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
