"""Echo over real loopback sockets: byte-exact, many clients, both poller backends, IPv6."""

from __future__ import annotations

import os
import random
import socket
import threading

import pytest
from gev_core import Handler
from gev_core.testing import connect, recv_exactly, serve


class Echo(Handler):
    def on_message(self, conn, ctx, data):
        return data


def _client(server, sizes, errors):
    try:
        with connect(server) as sock:
            for size in sizes:
                payload = os.urandom(size)
                sender = threading.Thread(target=sock.sendall, args=(payload,))
                sender.start()
                got = recv_exactly(sock, size)
                sender.join()
                if got != payload:
                    errors.append(f"mismatch at size {size}")
    except Exception as exc:
        errors.append(repr(exc))


@pytest.mark.parametrize("num_loops", [1, 4])
def test_hundred_clients_random_sizes_byte_exact(num_loops):
    rng = random.Random(1833)
    plan = [
        [rng.choice([1, rng.randint(1, 4096), rng.randint(1, 1 << 20)]) for _ in range(3)]
        for _ in range(100)
    ]
    plan[0][0] = 1 << 20  # the largest size always runs
    errors: list[str] = []
    with serve(Echo(), num_loops=num_loops) as server:
        threads = [threading.Thread(target=_client, args=(server, sizes, errors)) for sizes in plan]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not errors


def test_select_backend_echo(monkeypatch):
    monkeypatch.setenv("GEV_POLLER", "select")
    with serve(Echo()) as server:
        assert server.loops[0]._poller.name == "select"
        errors: list[str] = []
        _client(server, [1, 70_000, 300_000], errors)
        assert not errors


def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no ::1 on this machine")
    with serve(Echo(), address="[::1]:0", network="tcp6") as server, connect(server) as sock:
        sock.sendall(b"ping6")
        assert recv_exactly(sock, 5) == b"ping6"


def test_nodelay_is_set_on_accepted_sockets():
    seen = {}

    class Probe(Handler):
        def on_connect(self, conn):
            s = socket.socket(fileno=conn.fileno())
            try:
                seen["nodelay"] = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            finally:
                s.detach()

    with serve(Probe()) as server, connect(server) as sock:
        sock.sendall(b"x")
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(1)
    assert seen["nodelay"] != 0


def test_one_read_is_one_message_whatever_the_sizes_before():
    # Reads start small and grow when one fills up (READ_SMALL_SIZE in _connection.py); a
    # message that arrived whole is still handed on in one piece, however small the ones
    # before it were, and small ones after large ones too.
    sizes = [1, 256, 257, 10, 3000, 64, 64, 255, 8000, 5, 300, 300, 1, 4096, 256, 2]
    seen: list[int] = []

    class Recorder(Handler):
        def on_message(self, conn, ctx, data):
            seen.append(len(data))
            return data

    with serve(Recorder()) as server, connect(server) as sock:
        for size in sizes:
            payload = os.urandom(size)
            sock.sendall(payload)
            assert recv_exactly(sock, size) == payload
    assert seen == sizes


@pytest.mark.parametrize("protocol", ["default", "line"])
@pytest.mark.parametrize("ending", ["eof", "reset"])
def test_a_full_small_read_whose_completing_read_meets_the_end(protocol, ending):
    # A first read of READ_SMALL_SIZE (256) bytes that fills up is completed at once by a read
    # of the rest (_read_rest). When the peer's FIN or RST is what that read meets, the 256
    # bytes are still handed on in one piece, and the connection then closes for that reason:
    # an EOF the next read meets again; an error (ECONNRESET on Linux, the RST after exactly
    # 256 unread bytes) is dealt with right after the batch. The loop is held by another
    # connection's handler while the bytes and the FIN or RST arrive, so both are waiting
    # when the loop reads.
    import queue
    import struct

    gate = threading.Event()
    holding = threading.Event()
    seen: list[int] = []
    connected: queue.Queue[object] = queue.Queue()
    closed: queue.Queue[str | None] = queue.Queue()
    payload = b"x" * 255 + b"\n"

    class Victim(Handler):
        def on_connect(self, conn):
            connected.put(conn)

        def on_message(self, conn, ctx, data):
            if bytes(data).startswith(b"hold"):
                holding.set()
                gate.wait(5)
                return b"held\n"
            seen.append(len(data))
            return None

        def on_close(self, conn):
            closed.put(conn.close_reason)

    with serve(Victim(), protocol=protocol) as server, connect(server) as holder:
        with connect(server) as sock:
            connected.get(timeout=5)
            connected.get(timeout=5)
            holder.sendall(b"hold\n")
            assert holding.wait(5)
            sock.sendall(payload)
            if ending == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                sock.shutdown(socket.SHUT_WR)
        gate.set()
        assert recv_exactly(holder, 5) == b"held\n"
        assert closed.get(timeout=5) == ending
    # The line protocol hands on the line without its "\n".
    assert seen == [256 if protocol == "default" else 255]
