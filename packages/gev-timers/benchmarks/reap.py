"""Reaping 10,000 idle connections: how late, and at what server CPU cost.

    python packages/gev-timers/benchmarks/reap.py [--conns 10000] [--idle-time 2.0]

Runs a silent gev server with ``idle_time`` in a subprocess (pinned to CPU 0 when possible),
opens N connections from this process (recording when each was established), and waits for the
server to close every one. Reports how late each close came relative to
``connected + idle_time`` (median, p99, max) and the server's CPU time over the whole run.
Needs gev-timers installed (its entry point). Bounded: gives up after idle_time + 60 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import time

SERVER = """
import sys, time
from gev_core import Handler, Server

IDLE = float(sys.argv[2])
late = []

class Silent(Handler):
    def on_message(self, conn, ctx, data):
        return None

    def on_close(self, conn):
        # Measured where it happens: how long after its idle deadline was this connection closed?
        late.append(time.monotonic() - conn.last_active - IDLE)

server = Server(Silent(), address=("127.0.0.1", int(sys.argv[1])), idle_time=IDLE, backlog=4096)
print("ready", flush=True)
server.start()
print(" ".join("%.6f" % x for x in late), flush=True)
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=10_000)
    ap.add_argument("--idle-time", type=float, default=2.0)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The server inherits the raised descriptor limit.
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.conns * 2 + 100)), hard))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-c", SERVER, str(port), str(args.idle_time)]
    if os.path.exists("/usr/bin/taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        cpu0 = cpu_seconds(server.pid)
        sel = selectors.DefaultSelector()
        opened: dict[socket.socket, float] = {}
        late: list[float] = []

        def collect(timeout: float) -> None:
            for key, _ in sel.select(timeout):
                sock = key.fileobj
                try:
                    data = sock.recv(1)  # type: ignore[union-attr]
                except ConnectionResetError:
                    data = b""
                if not data:
                    late.append(time.monotonic() - opened[sock] - args.idle_time)  # type: ignore[index]
                    sel.unregister(sock)
                    sock.close()  # type: ignore[union-attr]

        for i in range(args.conns):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            opened[s] = time.monotonic()
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            if i % 100 == 99:
                collect(0)
        give_up = time.monotonic() + args.idle_time + 60
        while len(late) < args.conns and time.monotonic() < give_up:
            collect(0.5)
        cpu = cpu_seconds(server.pid) - cpu0
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=30)
    server_late = sorted(float(x) for x in out.split())
    if len(late) < args.conns:
        raise SystemExit(f"only {len(late)} of {args.conns} connections were reaped")
    if len(server_late) < args.conns:
        raise SystemExit(f"the server reported {len(server_late)} closes, not {args.conns}")
    late = server_late
    early = sum(1 for x in late if x < 0)
    print(f"connections reaped {len(late)}, idle_time {args.idle_time:.3f} s")
    print(
        f"lateness (server)  median {statistics.median(late) * 1000:.1f} ms,"
        f" p99 {late[int(len(late) * 0.99)] * 1000:.1f} ms, max {late[-1] * 1000:.1f} ms"
    )
    print(f"closed early       {early}")
    print(
        f"server CPU         {cpu:.3f} s in all ({cpu / len(late) * 1e6:.1f} µs per connection,"
        " accept + reap)"
    )


if __name__ == "__main__":
    main()
