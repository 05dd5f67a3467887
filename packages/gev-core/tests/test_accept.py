"""Accepting: running out of file descriptors backs off instead of spinning, then recovers;
the addresses of connections from one host share its string."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from gev_core import Handler
from gev_core.testing import connect, serve

SERVER = textwrap.dedent(
    """
    import logging, resource, sys
    from gev_core import Handler, Server

    class Echo(Handler):
        def on_message(self, conn, ctx, data):
            return data

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))
    server = Server(Echo(), address=("127.0.0.1", 0))
    print(server.port, flush=True)
    server.start()
    """
)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_emfile_backs_off_without_spinning_and_recovers():
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        port = int(proc.stdout.readline())
        clients = []
        for _ in range(60):  # more than the server's 40 descriptors
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            clients.append(s)
        time.sleep(0.3)
        before = _cpu_seconds(proc.pid)
        time.sleep(1.5)
        burned = _cpu_seconds(proc.pid) - before
        assert burned < 0.3, f"server burned {burned:.2f}s CPU in 1.5s while out of descriptors"
        # The earliest clients were accepted and are served.
        clients[0].sendall(b"early")
        assert clients[0].recv(5) == b"early"
        # Free descriptors: the clients waiting in the backlog get accepted and served.
        for s in clients[:30]:
            s.close()
        late = clients[-1]
        late.settimeout(5)
        late.sendall(b"late")
        assert late.recv(4) == b"late"
        for s in clients[30:]:
            s.close()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "Too many open files" in err and "pausing accepts" in err


def test_connections_from_one_host_share_its_address_string():
    seen = []
    ready = threading.Event()

    class Keep(Handler):
        def on_connect(self, conn):
            seen.append(conn.remote_address)
            if len(seen) == 3:
                ready.set()

    with serve(Keep()) as server:
        clients = [connect(server) for _ in range(3)]
        try:
            assert ready.wait(5)
        finally:
            for c in clients:
                c.close()
    hosts = [address[0] for address in seen]
    assert hosts == ["127.0.0.1"] * 3
    # One str for the host, not one per accepted connection (64 bytes each, kept while open).
    assert hosts[0] is hosts[1] is hosts[2]
    assert len({address[1] for address in seen}) == 3


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_remote_address_is_the_peer_as_the_socket_module_gives_it(host):
    # A connection keeps an IPv4 peer as its host and port, not the tuple accept() made:
    # remote_address makes the same tuple again; an IPv6 peer's 4-tuple is kept as given.
    if host == "::1" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    seen = []
    ready = threading.Event()

    class Keep(Handler):
        def on_connect(self, conn):
            seen.append((conn.remote_address, conn.peer_addr, repr(conn)))
            ready.set()

    with serve(Keep(), address=(host, 0)) as server:
        client = connect(server)
        try:
            assert ready.wait(5)
            mine = client.getsockname()
        finally:
            client.close()
    (remote, peer, text) = seen[0]
    assert remote == mine and type(remote) is tuple
    if host == "::1":
        assert len(remote) == 4 and peer == f"[::1]:{mine[1]}"
    else:
        assert remote == ("127.0.0.1", mine[1]) and peer == f"127.0.0.1:{mine[1]}"
    assert f"peer={peer}" in text
