"""Test helpers: a real HAProxy in TCP mode in front of a server, on an ephemeral port.

::

    with HAProxy("127.0.0.1:1833", send_proxy="v2") as proxy:   # raises if haproxy is missing
        sock = socket.create_connection(proxy.address)           # through HAProxy to the server

The frontend's listening socket is made here (port 0: no port guessing) and handed to HAProxy
as an inherited descriptor (``bind fd@N``). HAProxy runs in the foreground (``-db``) with a
generated configuration in a temporary directory; it is ready once its stats socket answers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from types import TracebackType

__all__ = ["HAProxy", "haproxy_path"]

_SEND_PROXY = {None: "", "v1": " send-proxy", "v2": " send-proxy-v2"}


def haproxy_path() -> str | None:
    """Where ``haproxy`` is (``PATH``, then ``/usr/sbin``), or ``None``."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


def _backend_address(backend: str | tuple[str, int]) -> str:
    if isinstance(backend, tuple):
        host, port = backend[0], int(backend[1])
    elif backend.startswith("unix:"):
        return "unix@" + backend[len("unix:") :]
    else:
        host, _, port_s = backend.rpartition(":")
        host, port = host.strip("[]"), int(port_s)
    return f"ipv6@{host}:{port}" if ":" in host else f"{host}:{port}"


class HAProxy:
    """An ``haproxy`` child process forwarding a loopback port to ``backend`` in TCP mode.

    :param backend: the server: ``"host:port"``, ``(host, port)`` or ``"unix:/path"``.
    :param send_proxy: ``"v1"`` (``send-proxy``), ``"v2"`` (``send-proxy-v2``) or ``None``.
    :param proxy_v2_options: HAProxy's ``proxy-v2-options`` for the server line (``"ssl"``,
        ``"authority"``, ``"crc32c"``, ``"unique-id"``, ...).
    :param tls_certificate: a PEM file (certificate and key): the frontend terminates TLS.
    :param host: the frontend's address, ``"127.0.0.1"`` or ``"::1"``.
    :param frontend_lines: more configuration lines for the frontend (``unique-id-format``).
    :param executable: the ``haproxy`` binary (default: :func:`haproxy_path`).
    """

    def __init__(
        self,
        backend: str | tuple[str, int],
        *,
        send_proxy: str | None = "v2",
        proxy_v2_options: Sequence[str] = (),
        tls_certificate: str | None = None,
        host: str = "127.0.0.1",
        frontend_lines: Sequence[str] = (),
        executable: str | None = None,
    ) -> None:
        path = executable or haproxy_path()
        if path is None:
            raise FileNotFoundError("haproxy is not installed (apt-get install haproxy)")
        if send_proxy not in _SEND_PROXY:
            raise ValueError(f"send_proxy must be 'v1', 'v2' or None, not {send_proxy!r}")
        self.executable = path
        self._dir = tempfile.mkdtemp(prefix="gev-haproxy-")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(128)
        name = self._listener.getsockname()
        #: The frontend's ``(host, port)``: clients connect here.
        self.address: tuple[str, int] = (name[0], name[1])
        server = "server app " + _backend_address(backend) + _SEND_PROXY[send_proxy]
        if proxy_v2_options:
            server += " proxy-v2-options " + ",".join(proxy_v2_options)
        bind = f"bind fd@{self._listener.fileno()}"
        if tls_certificate is not None:
            bind += f" ssl crt {tls_certificate}"
        self.config = "\n".join(
            [
                "global",
                f"    stats socket {self._dir}/stats.sock mode 600 level admin",
                "    maxconn 4096",
                "defaults",
                "    mode tcp",
                "    timeout connect 5s",
                "    timeout client 60s",
                "    timeout server 60s",
                "frontend clients",
                f"    {bind}",
                *(f"    {line}" for line in frontend_lines),
                "    default_backend app",
                "backend app",
                f"    {server}",
                "",
            ]
        )
        self._cfg = os.path.join(self._dir, "haproxy.cfg")
        with open(self._cfg, "w") as f:
            f.write(self.config)
        self._stderr = os.path.join(self._dir, "haproxy.log")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start HAProxy and wait until it serves (its stats socket answers)."""
        if self.running:
            return
        with open(self._stderr, "ab") as err:
            self._proc = subprocess.Popen(
                [self.executable, "-db", "-f", self._cfg],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                pass_fds=[self._listener.fileno()],
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self._proc.returncode}: {self.log()}")
            if self._stats_answer():
                return
            time.sleep(0.05)
        raise RuntimeError(f"haproxy did not become ready: {self.log()}")

    def _stats_answer(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(os.path.join(self._dir, "stats.sock"))
                s.sendall(b"show info\n")
                return b"Name:" in s.recv(4096)
        except OSError:
            return False

    def stop(self) -> None:
        """Stop HAProxy (SIGTERM, then SIGKILL) and wait until it is gone."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._proc = None

    def log(self) -> str:
        """What HAProxy printed (the last 2000 characters) and its configuration."""
        try:
            with open(self._stderr, errors="replace") as f:
                text = f.read()[-2000:]
        except OSError:
            text = ""
        return f"{text}\n--- haproxy.cfg ---\n{self.config}"

    def close(self) -> None:
        """Stop it, close the frontend socket and remove the directory."""
        self.stop()
        self._listener.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> HAProxy:
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
