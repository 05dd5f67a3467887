"""Helpers for testing gev servers and protocol plugins; also an opt-in pytest plugin.

Enable the fixtures in a ``conftest.py`` with ``pytest_plugins = ["gev_core.testing"]``. It is
not auto-loaded (no ``pytest11`` entry point), so it never touches unrelated test runs.

* :func:`serve` runs a real :class:`~gev_core.Server` on an ephemeral loopback port in a
  background thread, for tests that talk to it over real sockets.
* :class:`FakeConnection` and :func:`feed` drive a :class:`~gev_core.Protocol` without sockets:
  bytes in, messages and reply bytes out.
* :func:`tls_certificates` makes a throwaway CA and certificates (with ``trustme``, a test
  dependency: ``pip install trustme``) and the matching server and client ``ssl.SSLContext``;
  :func:`tls_connect` is a blocking TLS client. Fixture: ``gev_tls``.
* :class:`EchoUpstream` (:func:`echo_upstream`) is a plain threaded echo server on loopback,
  the far end for outbound connections (:meth:`~gev_core.Server.connect`) and proxies; and
  :func:`unresponsive_address` an address whose connects hang (for connect timeouts).
* :class:`RedisServer` runs a real, throwaway ``redis-server`` on an ephemeral loopback port,
  for handlers and plugins that talk to Redis (the ``gev_redis_server`` fixture skips without
  one, and fails under ``CI=true``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ._bind import parse_address
from ._connection import _note_counting
from ._protocol import Protocol
from ._server import Server
from ._sslcontext import client_context, server_context

__all__ = [
    "EchoUpstream",
    "FakeConnection",
    "RedisServer",
    "TLSCertificates",
    "TLSFiles",
    "connect",
    "echo_upstream",
    "feed",
    "recv_exactly",
    "redis_server_path",
    "serve",
    "tls_certificates",
    "tls_connect",
    "unresponsive_address",
]


@contextlib.contextmanager
def serve(handler: Any, **kwargs: Any) -> Iterator[Server]:
    """Run ``Server(handler, **kwargs)`` in a thread (port 0 on 127.0.0.1 unless told otherwise).

    The server is stopped (gracefully, 5 s) when the block exits; an exception that escaped the
    server thread is re-raised there.
    """
    kwargs.setdefault("address", ("127.0.0.1", 0))
    server = Server(handler, **kwargs)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.start()
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="gev-test-server", daemon=True)
    thread.start()
    server.wait_started(5)
    try:
        yield server
    finally:
        server.stop(timeout=5)
        thread.join(10)
        if thread.is_alive():
            raise RuntimeError("gev test server did not stop within 10 s")
        if errors:
            raise errors[0]


def connect(server: Server | tuple[str, int] | str, timeout: float = 10.0) -> socket.socket:
    """A blocking client socket connected to ``server`` (with a timeout).

    ``server`` is a :class:`~gev_core.Server` or an address: ``(host, port)`` (TCP_NODELAY is
    set), ``"unix:/path"`` or ``"unix:@name"``.
    """
    addr = server.address if isinstance(server, Server) else server
    if isinstance(addr, str):
        family, sockaddr = parse_address(addr)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
        except BaseException:
            sock.close()
            raise
        return sock
    sock = socket.create_connection(addr[:2], timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Read exactly ``n`` bytes; raise ``EOFError`` if the peer closes first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError(f"peer closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


# ---------------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class TLSFiles:
    """PEM files written by :meth:`TLSCertificates.write` (paths as strings)."""

    #: The CA certificate: what clients trust (``openssl s_client -CAfile``, ``cafile=``).
    ca: str
    #: The server's certificate chain (leaf first).
    cert: str
    #: The server's private key.
    key: str
    #: A client certificate chain signed by the same CA (for ``--verify-client``).
    client_cert: str
    #: Its private key.
    client_key: str


class TLSCertificates:
    """A throwaway CA with a server and a client certificate, for tests (made by ``trustme``).

    Build it with :func:`tls_certificates`. Keys are ECDSA P-256 and live in memory until
    :meth:`write` puts them into files (for ``openssl``, a browser, ``gev serve --certfile``).

    :param hostnames: names and IP addresses the server certificate is valid for.
    """

    def __init__(self, hostnames: Sequence[str] = ("localhost", "127.0.0.1", "::1")) -> None:
        try:
            import trustme
        except ImportError:  # pragma: no cover - trustme is a test dependency
            raise RuntimeError(
                "gev_core.testing's TLS helpers need trustme: pip install trustme"
            ) from None
        if not hostnames:
            raise ValueError("the server certificate needs at least one hostname")
        self.hostnames = tuple(hostnames)
        #: The ``trustme.CA`` (``issue_cert`` makes more certificates, e.g. for SNI tests).
        self.ca = trustme.CA()
        self._server = self.ca.issue_cert(*self.hostnames)
        self._client = self.ca.issue_cert("client@gev.test", common_name="gev test client")
        self._files: TLSFiles | None = None

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate, PEM."""
        return self.ca.cert_pem.bytes()

    def write(self, directory: str | os.PathLike[str]) -> TLSFiles:
        """Write the PEM files into ``directory`` (created if missing); returns their paths."""
        os.makedirs(directory, exist_ok=True)
        path = os.fspath(directory)
        files = TLSFiles(
            ca=os.path.join(path, "ca.pem"),
            cert=os.path.join(path, "server.pem"),
            key=os.path.join(path, "server.key"),
            client_cert=os.path.join(path, "client.pem"),
            client_key=os.path.join(path, "client.key"),
        )
        self.ca.cert_pem.write_to_path(files.ca)
        _write_chain(self._server.cert_chain_pems, files.cert)
        self._server.private_key_pem.write_to_path(files.key)
        _write_chain(self._client.cert_chain_pems, files.client_cert)
        self._client.private_key_pem.write_to_path(files.client_key)
        self._files = files
        return files

    def server_context(
        self,
        *,
        alpn: Sequence[str] | None = None,
        verify_client: str = "none",
        minimum_version: str = "TLSv1.2",
    ) -> ssl.SSLContext:
        """A server context for this certificate, built by :func:`~gev_core.server_context`
        (``verify_client`` checks client certificates against this CA)."""
        files = self._files_or_temp()
        return server_context(
            files.cert,
            files.key,
            ca_certs=files.ca if verify_client != "none" else None,
            verify_client=verify_client,
            alpn=alpn,
            minimum_version=minimum_version,
        )

    def client_context(
        self,
        *,
        alpn: Sequence[str] | None = None,
        client_cert: bool = False,
        minimum_version: str = "TLSv1.2",
    ) -> ssl.SSLContext:
        """A client context that trusts this CA only (and presents the client certificate when
        ``client_cert``), built by :func:`~gev_core.client_context`."""
        files = self._files_or_temp()
        return client_context(
            files.ca,
            certfile=files.client_cert if client_cert else None,
            keyfile=files.client_key if client_cert else None,
            alpn=alpn,
            minimum_version=minimum_version,
        )

    @property
    def spki_sha256(self) -> str:
        """Base64 of the SHA-256 of the server certificate's public key (SubjectPublicKeyInfo):
        what Chromium's ``--ignore-certificate-errors-spki-list`` takes to trust exactly this
        key, and HPKP-style pins are made of."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        cert = x509.load_pem_x509_certificate(self._server.cert_chain_pems[0].bytes())
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")

    def _files_or_temp(self) -> TLSFiles:
        if self._files is None:
            import tempfile

            # The ssl module loads certificates from files only; they stay for the process.
            self.write(tempfile.mkdtemp(prefix="gev-tls-"))
        assert self._files is not None
        return self._files


def _write_chain(pems: Sequence[Any], path: str) -> None:
    with open(path, "wb") as f:
        for pem in pems:
            f.write(pem.bytes())


def tls_certificates(*hostnames: str) -> TLSCertificates:
    """A fresh CA and certificates for ``hostnames`` (default ``localhost``, ``127.0.0.1``,
    ``::1``): see :class:`TLSCertificates`. Needs ``trustme``.

    ``certs.server_context()`` and ``certs.client_context()`` are then a matching pair.
    """
    return TLSCertificates(hostnames or ("localhost", "127.0.0.1", "::1"))


def tls_connect(
    server: Server | tuple[str, int] | str,
    context: ssl.SSLContext | TLSCertificates,
    *,
    server_hostname: str | None = "localhost",
    timeout: float = 10.0,
) -> ssl.SSLSocket:
    """A blocking TLS client socket connected to ``server``, handshake done.

    :param server: as for :func:`connect`.
    :param context: a client ``ssl.SSLContext``, or :class:`TLSCertificates` (its
        :meth:`~TLSCertificates.client_context`).
    :param server_hostname: the name to verify the certificate against, sent as SNI.
    :raises ssl.SSLError: the handshake failed (e.g. ``ssl.SSLCertVerificationError``).
    """
    ctx = context.client_context() if isinstance(context, TLSCertificates) else context
    sock = connect(server, timeout)
    try:
        return ctx.wrap_socket(sock, server_hostname=server_hostname)
    except BaseException:
        sock.close()
        raise


# ---------------------------------------------------------------------------- outbound


class EchoUpstream:
    """A plain threaded echo server on loopback: the peer of outbound connections in tests.

    Not gev: a thread per connection, blocking sockets, every byte sent back as it arrives.
    Start it with ``with EchoUpstream() as upstream:`` (or :func:`echo_upstream`); connect to
    :attr:`address`. :attr:`received` counts the bytes it read, :attr:`connections` the
    connections it accepted, and :attr:`open` those still open.

    :param address: ``(host, port)`` to listen on (port 0: a free one), or ``"unix:/path"``.
    :param read_paused: start with reading paused (:meth:`pause`): connections are accepted
        but not read, so their senders' buffers fill -- a slow upstream.
    :param tls: serve TLS with this server-side ``ssl.SSLContext``.
    """

    def __init__(
        self,
        address: tuple[str, int] | str = ("127.0.0.1", 0),
        *,
        read_paused: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if isinstance(address, str):
            family, sockaddr = parse_address(address)
        else:
            family, sockaddr = socket.AF_INET, address
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        if family != socket.AF_UNIX:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(sockaddr)
        self._sock.listen(128)
        name = self._sock.getsockname()
        #: Where it listens: ``(host, port)``, or the Unix address as given.
        self.address: tuple[str, int] | str = (
            (name[0], name[1]) if isinstance(name, tuple) else str(address)
        )
        self._tls = tls
        self._reading = threading.Event()
        if not read_paused:
            self._reading.set()
        self._lock = threading.Lock()
        self._clients: list[socket.socket] = []
        self._closed = False
        #: Bytes read from every connection so far.
        self.received = 0
        #: Connections accepted so far.
        self.connections = 0
        self._open = 0
        self._thread = threading.Thread(target=self._accept, name="echo-upstream", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        assert isinstance(self.address, tuple)
        return self.address[1]

    @property
    def open(self) -> int:
        """Connections accepted and not yet closed by either side."""
        with self._lock:
            return self._open

    def pause(self) -> None:
        """Stop reading (every connection): what is sent to it waits in the kernel's buffers."""
        self._reading.clear()

    def resume(self) -> None:
        """Read (and echo) again."""
        self._reading.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            if self._tls is not None:
                try:
                    client = self._tls.wrap_socket(client, server_side=True)
                except (OSError, ssl.SSLError):
                    client.close()
                    continue
            with self._lock:
                if self._closed:
                    client.close()
                    return
                self._clients.append(client)
                self.connections += 1
                self._open += 1
            threading.Thread(target=self._echo, args=(client,), daemon=True).start()

    def _echo(self, client: socket.socket) -> None:
        try:
            while True:
                self._reading.wait()
                data = client.recv(65536)
                if not data:
                    break
                with self._lock:
                    self.received += len(data)
                client.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open -= 1
                if client in self._clients:
                    self._clients.remove(client)
            client.close()

    def close(self) -> None:
        """Stop listening and close every connection."""
        with self._lock:
            self._closed = True
            clients = list(self._clients)
        self._sock.close()
        self._reading.set()
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()

    def __enter__(self) -> EchoUpstream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def echo_upstream(**kwargs: Any) -> Iterator[EchoUpstream]:
    """``with echo_upstream() as upstream:`` -- an :class:`EchoUpstream` (same arguments),
    closed when the block exits."""
    with EchoUpstream(**kwargs) as upstream:
        yield upstream


@contextlib.contextmanager
def unresponsive_address() -> Iterator[tuple[str, int]]:
    """A loopback ``(host, port)`` whose TCP connects hang: a listener that never accepts,
    with its accept queue filled. A connect to it neither succeeds nor fails until its
    timeout: what connect-timeout tests need, without an unroutable address (Linux).
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()[:2]
        # Fill the accept queue (and SYN queue overflow) with connects nobody accepts.
        for _ in range(8):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex(address)
            fillers.append(sock)
        time.sleep(0.05)
        yield address
    finally:
        for sock in fillers:
            sock.close()
        listener.close()


class _RecordingHandler:
    def __init__(self, reply: Any) -> None:
        self.messages: list[tuple[Any, Any]] = []
        self._reply = reply

    def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
        self.messages.append((ctx, data))
        return self._reply(conn, ctx, data) if self._reply is not None else None


class FakeConnection:
    """Just enough of a :class:`~gev_core.Connection` for a protocol's ``receive``/``unpack``.

    ``written`` collects raw writes, ``closed`` tells whether ``close``/``abort`` was called
    (and ``close_reason`` with which reason); ``messages_in``/``messages_out`` add up what the
    protocol reported with ``count_messages``, as a loop that counts traffic would (given a
    ``protocol``, its :attr:`~gev_core.Protocol.counting` is set, so that it reports);
    ``pinned_packer`` is what the protocol last gave ``pin_shared_packer``.
    """

    def __init__(self, handler: Any = None, protocol: Protocol | None = None) -> None:
        self.handler = handler if handler is not None else _RecordingHandler(None)
        self.protocol = protocol
        self.state: Any = None
        self.context: Any = None
        self.written = bytearray()
        self.closed = False
        self.close_reason: str | None = None
        self.messages_in = 0
        self.messages_out = 0
        self.pinned_packer: Any = None
        self._kv: dict[str, Any] = {}
        if protocol is not None:
            _note_counting(protocol)

    @property
    def closing(self) -> bool:
        return self.closed

    connected = property(lambda self: not self.closed)

    def write(self, data: Any) -> None:
        self.written += data

    def send(self, data: Any) -> None:
        assert self.protocol is not None
        self.written += self.protocol.pack(self, data)  # type: ignore[arg-type]

    def close(self, *, reason: str = "local") -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason

    abort = close

    def shutdown_write(self) -> None:
        self.close()

    def count_messages(self, received: int, sent: int = 0) -> None:
        self.messages_in += received
        self.messages_out += sent

    def pin_shared_packer(self, packer: Any) -> None:
        self.pinned_packer = packer

    def set(self, key: str, value: Any) -> None:
        self._kv[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        return self._kv.get(key, default)

    def delete(self, key: str) -> None:
        self._kv.pop(key, None)


def feed(
    protocol: Protocol, chunks: list[bytes], reply: Any = None
) -> tuple[list[tuple[Any, Any]], bytes]:
    """Push ``chunks`` through ``protocol`` the way the reactor would; no sockets.

    Unconsumed bytes are carried over to the next chunk exactly as the reactor's ring buffer does,
    and ``receive`` gets what the reactor would give it: ``bytes`` when nothing is carried over
    and the protocol sets ``accepts_bytes``, a ``memoryview`` otherwise.
    ``reply(conn, ctx, data)`` plays the handler's ``on_message``. Returns the messages the handler
    saw and every byte the protocol produced (replies and raw writes).
    """
    handler = _RecordingHandler(reply)
    conn = FakeConnection(handler, protocol)
    protocol.connection_made(conn)  # type: ignore[arg-type]
    pending = b""
    out: list[Any] = []
    takes_bytes = getattr(protocol, "accepts_bytes", False) is True
    for chunk in chunks:
        fresh = not pending
        pending += chunk
        data: bytes | memoryview = pending if takes_bytes and fresh else memoryview(pending)
        consumed = protocol.receive(conn, data, out)  # type: ignore[arg-type]
        pending = pending[consumed:]
        for item in out:
            conn.written += item
        out.clear()
    return handler.messages, bytes(conn.written)


# ---------------------------------------------------------------------------- redis-server


def redis_server_path() -> str | None:
    """Where ``redis-server`` is (on ``PATH``), or ``None``."""
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A ``redis-server`` child process on 127.0.0.1, in a temporary directory.

    ::

        with RedisServer() as redis:      # raises if redis-server is missing
            client = redis_client(redis.url)
            ...
            redis.stop()                  # Redis goes away (SIGKILL: nothing is saved)
            redis.start()                 # and comes back, empty, on the same port

    Persistence is off (no RDB, no AOF), as for a cache: a restart loses every entry.

    :param port: the port; 0 picks a free one (kept across :meth:`stop` / :meth:`start`).
    :param executable: the ``redis-server`` binary (default: found on ``PATH``).
    :raises FileNotFoundError: no ``redis-server``.
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
        """True while the process runs."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start it (again) and wait until it answers ``PING``.

        :raises RuntimeError: it did not answer within ``timeout`` seconds.
        """
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
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
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


# ---------------------------------------------------------------------------- pytest plugin

try:
    import pytest
except ImportError:  # pragma: no cover - the helpers above work without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def gev_serve() -> Any:
        """``with gev_serve(handler, **server_kwargs) as server:`` -- see :func:`serve`."""
        return serve

    @pytest.fixture(scope="session")
    def gev_tls() -> TLSCertificates:
        """A :class:`TLSCertificates` for ``localhost``/``127.0.0.1``/``::1``, shared by the
        session (skips the test when ``trustme`` is missing)."""
        pytest.importorskip("trustme")
        return tls_certificates()

    @pytest.fixture
    def gev_connect() -> Iterator[Any]:
        """``gev_connect(server)`` -> a connected blocking socket, closed after the test."""
        socks: list[socket.socket] = []

        def _connect(server: Any, timeout: float = 10.0) -> socket.socket:
            sock = connect(server, timeout)
            socks.append(sock)
            return sock

        yield _connect
        for sock in socks:
            sock.close()

    @pytest.fixture
    def gev_redis_server() -> Iterator[RedisServer]:
        """A fresh :class:`RedisServer`, stopped after the test. Skipped without
        ``redis-server`` on ``PATH``; under ``CI=true`` that fails instead."""
        if redis_server_path() is None:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail("redis-server must be installed in CI (tools/install-system-deps.sh)")
            pytest.skip("no redis-server on PATH (apt-get install redis-server)")
        with RedisServer() as server:
            yield server
