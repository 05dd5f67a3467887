"""Unix domain sockets: a Server on ``unix:/path`` and ``unix:@name``, over real sockets."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from gev_core import GevError, Handler, Server, get_plugin_manager, hookimpl
from gev_core._bind import SocketFile, bind_socket, format_address, parse_address
from gev_core.testing import connect, recv_exactly, serve

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
LINUX = sys.platform.startswith("linux")


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # Not tmp_path: a socket path must fit in sun_path (108 bytes), test names are long.
    path = Path(tempfile.mkdtemp(prefix="gev-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Echo(Handler):
    def __init__(self) -> None:
        self.peers: list[str] = []

    def on_connect(self, conn):  # type: ignore[no-untyped-def]
        self.peers.append(conn.peer_addr)

    def on_message(self, conn, ctx, data):  # type: ignore[no-untyped-def]
        return data


def _echo(server: Server | str) -> None:
    with connect(server) as sock:
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"


def test_parse_and_format_unix_addresses() -> None:
    assert parse_address("unix:/run/gev.sock") == (socket.AF_UNIX, "/run/gev.sock")
    assert parse_address("relative.sock", "unix") == (socket.AF_UNIX, "relative.sock")
    assert format_address("/run/gev.sock") == "unix:/run/gev.sock"
    assert format_address(b"\0name") == "unix:@name"
    assert format_address("") == "unix:"  # an unnamed client
    for bad in ("unix:", "unix:@"):
        with pytest.raises(ValueError, match="unix"):
            parse_address(bad)
    if LINUX:
        assert parse_address("unix:@gev") == (socket.AF_UNIX, "\0gev")
    else:
        with pytest.raises(ValueError, match="Linux only"):
            parse_address("unix:@gev")


def test_serves_on_a_socket_file_and_removes_it_on_stop(sockdir: Path) -> None:
    path = sockdir / "echo.sock"
    handler = Echo()
    with serve(handler, address=f"unix:{path}") as server:
        assert server.address == f"unix:{path}"
        assert stat.S_ISSOCK(path.stat().st_mode)
        _echo(server)
        _echo(f"unix:{path}")
        with pytest.raises(GevError, match="has no port"):
            _ = server.port
        assert "unix:" in repr(server)
    assert handler.peers == ["unix:", "unix:"]
    assert not path.exists(), "the socket file outlived a graceful stop"


def test_a_named_client_is_its_path(sockdir: Path) -> None:
    handler = Echo()
    with serve(handler, address=f"unix:{sockdir / 's'}") as server:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.bind(str(sockdir / "client"))
        client.settimeout(10)
        with client:
            client.connect(str(sockdir / "s"))
            client.sendall(b"x")
            assert recv_exactly(client, 1) == b"x"
        assert server.connection_count in (0, 1)
    assert handler.peers == [f"unix:{sockdir / 'client'}"]


@pytest.mark.skipif(not LINUX, reason="the abstract namespace is Linux's")
def test_abstract_namespace(sockdir: Path) -> None:
    name = f"gev-test-{uuid.uuid4().hex}"
    with serve(Echo(), address=f"unix:@{name}") as server:
        assert server.address == f"unix:@{name}"
        _echo(server)
        with pytest.raises(OSError):  # a name in use, like a port
            Server(Echo(), address=f"unix:@{name}")
    with serve(Echo(), address=f"unix:@{name}") as server:  # free again
        _echo(server)


def test_a_stale_socket_file_is_replaced(sockdir: Path) -> None:
    path = sockdir / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.listen()
    dead.close()  # a server that died: the file stays, nobody listens
    assert path.exists()
    with serve(Echo(), address=f"unix:{path}") as server:
        _echo(server)


def test_a_live_socket_is_not_taken_over(sockdir: Path) -> None:
    path = sockdir / "live.sock"
    with serve(Echo(), address=f"unix:{path}") as server:
        with pytest.raises(OSError, match=f"another server is listening on unix:{path}"):
            Server(Echo(), address=f"unix:{path}")
        _echo(server)  # the first one still serves, its file untouched


def test_a_file_that_is_not_a_socket_is_left_alone(sockdir: Path) -> None:
    path = sockdir / "data.txt"
    path.write_text("precious")
    with pytest.raises(OSError, match="not a socket"):
        Server(Echo(), address=f"unix:{path}")
    assert path.read_text() == "precious"


def test_unix_mode_sets_the_permissions(sockdir: Path) -> None:
    path = sockdir / "perm.sock"
    with serve(Echo(), address=f"unix:{path}", unix_mode=0o660) as server:
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        _echo(server)
    with pytest.raises(ValueError, match="unix_mode"):
        Server(Echo(), address=("127.0.0.1", 0), unix_mode=0o660)
    with pytest.raises(ValueError, match="SO_REUSEPORT"):
        Server(Echo(), address=f"unix:{path}", reuse_port=True)


def test_a_file_bound_again_by_another_server_is_not_removed(sockdir: Path) -> None:
    path = sockdir / "swap.sock"
    first = bind_socket(f"unix:{path}", backlog=8)
    owned = SocketFile.of(first)
    assert owned is not None
    first.close()
    second = bind_socket(f"unix:{path}", backlog=8)  # stale file replaced by a new server
    try:
        assert not owned.remove()  # not ours any more
        assert path.exists()
    finally:
        second.close()


def test_an_inherited_socket_file_is_left_to_its_owner(sockdir: Path) -> None:
    path = sockdir / "owned.sock"
    sock = bind_socket(f"unix:{path}", backlog=8)
    with serve(Echo(), sock=sock) as server:
        assert server.address == f"unix:{path}"
        _echo(server)
    assert path.exists()
    os.unlink(path)


def test_drain_serves_open_connections_refuses_new_ones_then_stops(sockdir: Path) -> None:
    stopping: list[bool] = []

    class Readiness:
        @hookimpl
        def gev_server_stopping(self, server):  # type: ignore[no-untyped-def]
            stopping.append(server.ready)

    pm = get_plugin_manager(autoload=False)
    pm.register(Readiness(), name="readiness")
    address = f"unix:{sockdir / 'drain.sock'}"
    server = Server(Echo(), address=address, plugins=pm)
    thread = threading.Thread(target=server.start)
    thread.start()
    try:
        assert server.wait_started(10)
        assert server.ready and not server.draining
        with connect(server) as old:
            old.sendall(b"1")
            assert recv_exactly(old, 1) == b"1"
            server.drain(timeout=30, wait=False)
            assert not server.ready and server.draining
            assert stopping == [False]  # the hook saw readiness already false
            with pytest.raises(OSError):  # the listener is closed: refused at once
                _echo(address)
            old.sendall(b"2")  # the open connection is still served
            assert recv_exactly(old, 1) == b"2"
            assert thread.is_alive()
        # Its last connection gone, the server stops without waiting for the timeout.
        thread.join(10)
        assert not thread.is_alive()
        assert stopping == [False]
    finally:
        server.stop()
        thread.join(10)


def test_drain_closes_what_is_left_when_the_time_is_up() -> None:
    with serve(Echo(), address=("127.0.0.1", 0), num_loops=2) as server:
        socks = [connect(server) for _ in range(4)]
        for s in socks:
            s.sendall(b"x")
            assert recv_exactly(s, 1) == b"x"
        server.drain(timeout=0.3)  # waits until start() has returned
        assert not server.ready
        for s in socks:
            s.settimeout(10)
            assert s.recv(1) == b""  # closed by the server once the drain time was up
            s.close()
