from __future__ import annotations

import threading
import time

from gev_core import Handler
from gev_core.testing import connect, serve


class Counter(Handler):
    def __init__(self):
        self.per_loop = {}
        self.lock = threading.Lock()

    def on_connect(self, conn):
        with self.lock:
            self.per_loop[conn.loop.index] = self.per_loop.get(conn.loop.index, 0) + 1

    def on_message(self, conn, ctx, data):
        return data


def _open(server, n):
    socks = []
    for _ in range(n):
        s = connect(server)
        s.sendall(b"x")
        assert s.recv(1) == b"x"  # connected and served before the next one
        socks.append(s)
    return socks


def test_round_robin_counts():
    h = Counter()
    with serve(h, num_loops=4, load_balance="round-robin") as server:
        socks = _open(server, 9)
        assert h.per_loop == {0: 3, 1: 2, 2: 2, 3: 2}
        for s in socks:
            s.close()


def test_least_connections_counts():
    h = Counter()
    with serve(h, num_loops=4, load_balance="least-connections") as server:
        socks = _open(server, 200)
        assert h.per_loop == {0: 50, 1: 50, 2: 50, 3: 50}
        # Ties go to the lowest index, so socket i lives on loop i % 4. Free 20 slots on loop 0:
        # the next connections must all land there.
        for s in socks[0:80:4]:
            s.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and server.loops[0].connection_count > 30:
            time.sleep(0.01)
        assert [loop.connection_count for loop in server.loops] == [30, 50, 50, 50]
        more = _open(server, 4)
        assert [loop.connection_count for loop in server.loops] == [34, 50, 50, 50]
        assert h.per_loop[0] == 54
        for s in socks[80:] + [x for i, x in enumerate(socks[:80]) if i % 4] + more:
            s.close()


def test_custom_balancer():
    h = Counter()
    with serve(h, num_loops=3, load_balance=lambda loops: loops[2]) as server:
        socks = _open(server, 5)
        assert h.per_loop == {2: 5}
        for s in socks:
            s.close()
