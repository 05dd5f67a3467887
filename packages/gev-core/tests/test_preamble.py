"""A listener's preamble over real sockets: bytes consumed before anyone hears of the connection."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import pytest
from gev_core import (
    Handler,
    LineProtocol,
    PreambleConnection,
    ProtocolError,
    Server,
    get_plugin_manager,
    hookimpl,
)
from gev_core.testing import connect, recv_exactly, serve


class Announce:
    """A tiny preamble: ``FROM <ip> <port>\\n`` names the real client (like the PROXY protocol).

    Peers from ``direct`` are served without one.
    """

    name = "announce"

    def __init__(
        self,
        *,
        max_size: int = 64,
        timeout: float | None = 10.0,
        direct: tuple[str, ...] = (),
        refuse: tuple[str, ...] = (),
    ) -> None:
        self.max_size = max_size
        self.timeout = timeout
        self.direct = direct
        self.refuse = refuse
        self.feeds = 0

    def start(self, conn: PreambleConnection) -> bool:
        host = conn.remote_address[0]
        if host in self.refuse:
            raise ProtocolError(f"{host} may not connect here")
        return host not in self.direct

    def feed(self, conn: PreambleConnection, data: bytes) -> int | None:
        self.feeds += 1
        end = data.find(b"\n")
        if end < 0:
            return None
        words = data[:end].split()
        if len(words) != 3 or words[0] != b"FROM":
            raise ProtocolError(f"not an announcement: {bytes(data[:end])[:32]!r}")
        conn.set_peer_address((words[1].decode(), int(words[2])))
        conn.set("announced", True)
        return end + 1


class Recorder(Handler):
    """Echoes with the peer's address; records what on_connect and on_close saw."""

    def __init__(self) -> None:
        self.connected: list[tuple[str, Any, Any, Any]] = []
        self.closed: list[str | None] = []
        self.done = threading.Event()

    def on_connect(self, conn: Any) -> None:
        self.connected.append(
            (conn.peer_addr, conn.remote_address, conn.proxy_address, conn.get("announced"))
        )

    def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
        return conn.peer_addr.encode() + b" " + bytes(data)

    def on_close(self, conn: Any) -> None:
        self.closed.append(conn.close_reason)
        self.done.set()


class MadeHook:
    """A plugin that records what ``gev_connection_made`` sees."""

    def __init__(self) -> None:
        self.peers: list[str] = []

    @hookimpl
    def gev_connection_made(self, connection: Any) -> None:
        self.peers.append(connection.peer_addr)


def _closed_by_server(sock: socket.socket, timeout: float = 20.0) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True


def _wait(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def _server_with(preamble: Any, handler: Handler, **kwargs: Any) -> Any:
    server_kwargs = dict(kwargs)
    pm = server_kwargs.pop("plugins", None) or get_plugin_manager(autoload=False)
    # The way a plugin installs it: from gev_configure, before the loops exist.

    class Installer:
        @hookimpl
        def gev_configure(self, config: Any) -> None:
            config.server.set_preamble(preamble)

    pm.register(Installer(), name="installer")
    return serve(handler, plugins=pm, **server_kwargs)


@pytest.mark.parametrize("split", [False, True], ids=["one-read", "byte-by-byte"])
def test_the_handler_and_the_plugins_see_the_announced_peer(split: bool) -> None:
    handler = Recorder()
    preamble = Announce()
    hook = MadeHook()
    pm = get_plugin_manager(autoload=False)
    pm.register(hook, name="made")
    with _server_with(preamble, handler, plugins=pm) as srv, connect(srv) as sock:
        own = sock.getsockname()
        header = b"FROM 203.0.113.7 4711\n"
        if split:
            for i in range(len(header)):
                sock.sendall(header[i : i + 1])
                time.sleep(0.002)
            sock.sendall(b"hello")
        else:
            sock.sendall(header + b"hello")  # the rest goes on to the protocol
        expected = b"203.0.113.7:4711 hello"
        assert recv_exactly(sock, len(expected)) == expected
        assert srv.preamble is preamble
    assert handler.connected == [("203.0.113.7:4711", ("203.0.113.7", 4711), own, True)]
    assert hook.peers == ["203.0.113.7:4711"]
    if split:
        assert preamble.feeds > 1


def test_a_framed_protocol_gets_the_bytes_after_the_preamble() -> None:
    handler = Recorder()
    with (
        _server_with(Announce(), handler, protocol=LineProtocol()) as srv,
        connect(srv) as sock,
    ):
        sock.sendall(b"FROM 198.51.100.1 80\none\ntwo\n")
        expected = b"198.51.100.1:80 one\n198.51.100.1:80 two\n"
        assert recv_exactly(sock, len(expected)) == expected


def test_a_peer_the_preamble_does_not_apply_to_is_served_directly() -> None:
    handler = Recorder()
    with (
        _server_with(Announce(direct=("127.0.0.1",)), handler) as srv,
        connect(srv) as sock,
    ):
        sock.sendall(b"FROM 203.0.113.7 4711\n")  # not a preamble here: a message
        own = sock.getsockname()
        expected = f"{own[0]}:{own[1]} FROM 203.0.113.7 4711\n".encode()
        assert recv_exactly(sock, len(expected)) == expected
    assert handler.connected == [(f"{own[0]}:{own[1]}", own, None, None)]


def _refused(
    caplog: pytest.LogCaptureFixture,
    preamble: Announce,
    send: bytes | None,
    reason: str,
    log: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="gev")
    handler = Recorder()
    with _server_with(preamble, handler) as srv:
        with connect(srv) as bad:
            if send is not None:
                bad.sendall(send)
            assert _closed_by_server(bad)
        loop = srv.loops[0]
        _wait(lambda: getattr(loop.stats, f"closed_{reason}") == 1)
        # Only that connection: the next one is served.
        with connect(srv) as good:
            good.sendall(b"FROM 192.0.2.1 1\nok")
            assert recv_exactly(good, 14) == b"192.0.2.1:1 ok"
        assert loop.stats.accepted == 2
    # The handler never heard of the refused one.
    assert [c[0] for c in handler.connected] == ["192.0.2.1:1"]
    assert reason not in handler.closed
    lines = [r for r in caplog.records if r.name == "gev" and log in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert lines[0].levelno == logging.WARNING
    assert lines[0].exc_info is None  # the peer's fault: one line, no traceback


def test_a_malformed_preamble_closes_that_connection_with_a_logged_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _refused(caplog, Announce(), b"HELLO there\n", "protocol_error", "not an announcement")


def test_a_preamble_longer_than_its_max_size_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _refused(
        caplog,
        Announce(max_size=32),
        b"FROM " + b"9" * 200,
        "protocol_error",
        "no complete announce preamble in its first",
    )


def test_a_preamble_that_does_not_arrive_in_time_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _refused(
        caplog,
        Announce(timeout=0.2),
        b"FROM 1.2",
        "idle",
        "no complete announce preamble within",
    )


def test_a_preamble_may_refuse_a_peer_at_the_accept(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gev")
    handler = Recorder()
    with _server_with(Announce(refuse=("127.0.0.1",)), handler) as srv:
        with connect(srv) as sock:
            assert _closed_by_server(sock)
        _wait(lambda: srv.loops[0].stats.closed_protocol_error == 1)
    assert handler.connected == []
    assert any("may not connect here" in r.getMessage() for r in caplog.records)


def test_a_connection_in_its_preamble_does_not_hold_up_a_stop() -> None:
    handler = Recorder()
    pm = get_plugin_manager(autoload=False)
    server = Server(handler, address=("127.0.0.1", 0), plugins=pm)
    server.set_preamble(Announce(timeout=None))
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    assert server.wait_started(10)
    with connect(server) as sock:
        sock.sendall(b"FROM")
        _wait(lambda: server.connection_count == 1)
        server.stop(timeout=10)
        thread.join(20)
        assert not thread.is_alive()
        assert _closed_by_server(sock)
    assert server.loops[0].stats.closed_stop == 1
    assert handler.connected == []


@pytest.mark.parametrize(
    ("attrs", "error"),
    [
        ({"name": ""}, TypeError),
        ({"max_size": 0}, ValueError),
        ({"timeout": 0}, ValueError),
        ({"feed": None}, TypeError),
    ],
)
def test_set_preamble_refuses_an_incomplete_object(attrs: dict[str, Any], error: type) -> None:
    preamble = Announce()
    for key, value in attrs.items():
        setattr(preamble, key, value)
    pm = get_plugin_manager(autoload=False)
    server = Server(Recorder(), address=("127.0.0.1", 0), plugins=pm)
    try:
        with pytest.raises(error):
            server.set_preamble(preamble)
        assert server.preamble is None
        server.set_preamble(Announce())
        server.set_preamble(None)
        assert server.preamble is None
    finally:
        server.stop()
