"""System calls per echoed (or proxied) message, counted by the kernel: the side callgrind misses.

    python bench/count_syscalls.py --servers gev-proxy,uvloop-proxy
    python bench/count_syscalls.py --python ENV/bin/python --no-src-path --servers gev,uvloop

callgrind_echo.py counts user-space instructions only; two servers that run about as many can
still differ in what they ask of the kernel (reads that find nothing, ``epoll_ctl`` toggles,
writes another server would have merged, wake-ups). This runs each server of callgrind_echo.py's
table natively (the proxies in front of bench's C echo, started per run), drives it with the
native loadgen, and counts the server process's system calls (every thread) over loadgen's
measured window with ``perf stat`` on the syscall tracepoints, attached at ``window-start`` and
stopped at ``window-end``: counts per message, reads and writes that returned ``EAGAIN``, and
the events per ``epoll_wait`` (from ``perf record`` of its return values in a second, short
window). Needs ``perf`` with access to tracepoints (root, or ``perf_event_paranoid`` <= -1).

Counts do not depend on the machine's load the way wall-clock rates do, but how many events one
poll returns does (a faster server, or a slower client, sees fewer per poll), and with it the
poll's share per message: compare servers in one run, and look at the events per poll too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

from callgrind_echo import BENCH, ROOT, SERVERS, build_loadgen, free_port

# Tracepoints counted (sys_enter_*), then the failing ones (sys_exit_* with a filter).
CALLS = (
    "read",
    "write",
    "recvfrom",
    "sendto",
    "readv",
    "writev",
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "futex",
    "getpid",
)
EAGAIN = ("read", "write", "recvfrom", "sendto")


def _wait_port(port: int, proc: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("server did not start") from None
            time.sleep(0.05)


def _loadgen(port: int, conns: int, size: int, mode: str, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(BENCH / ".build" / "loadgen"),
            "--port",
            str(port),
            "--conns",
            str(conns),
            "--size",
            str(size),
            "--mode",
            mode,
            "--duration",
            str(seconds),
            "--warmup",
            "1",
            "--markers",
            "--json",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def _window(lg: subprocess.Popen, perf: list[str]) -> tuple[int, str]:
    """Run ``perf`` over loadgen's measured window; returns (messages, perf's stderr)."""
    assert lg.stdout is not None
    for line in lg.stdout:
        if line.strip() == "window-start":
            break
    p = subprocess.Popen(perf, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = ""
    for line in lg.stdout:
        if line.strip() == "window-end":
            p.send_signal(signal.SIGINT)
        elif line.strip():
            last = line
    lg.wait()
    _, err = p.communicate(timeout=60)
    return int(json.loads(last)["messages"]), err


def one_run(name: str, python: str, conns: int, size: int, mode: str, seconds: float, src: bool):
    build_loadgen()
    port = free_port()
    upstream = None
    up_port = 0
    if any("{upstream}" in a for a in SERVERS[name]):
        up_port = free_port()
        upstream = subprocess.Popen(
            [str(BENCH / ".build" / "c_echo"), "--port", str(up_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(up_port, upstream)
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(p) for p in sorted((ROOT / "packages").glob("*/src"))]
            + [env.get("PYTHONPATH", "")]
        )
    cmd = [a.format(python=python, port=port, upstream=up_port) for a in SERVERS[name]]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, server)
        pid = str(server.pid)
        events = [f"syscalls:sys_enter_{c}" for c in CALLS]
        events += ["raw_syscalls:sys_enter", "context-switches"]
        perf = ["perf", "stat", "-x", ";", "-p", pid]
        for e in events:
            perf += ["-e", e]
        for c in EAGAIN:
            perf += ["-e", f"syscalls:sys_exit_{c}", "--filter", "ret == -11"]
        msgs, err = _window(_loadgen(port, conns, size, mode, seconds), perf)
        counts: dict[str, int] = {}
        for line in err.splitlines():
            f = line.split(";")
            if len(f) > 2 and f[0].strip().isdigit():
                ev = f[2]
                key = ev.rsplit("sys_enter_", 1)[-1] if "sys_enter_" in ev else ev
                if "sys_exit_" in ev:
                    key = ev.rsplit("sys_exit_", 1)[-1] + " EAGAIN"
                elif ev == "raw_syscalls:sys_enter":
                    key = "all"
                counts[key] = counts.get(key, 0) + int(f[0])
        # Events per poll: the return values of epoll_wait over a second, shorter window.
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "perf.data")
            rec = ["perf", "record", "-q", "-o", data, "-p", pid]
            rec += ["-e", "syscalls:sys_exit_epoll_wait", "-e", "syscalls:sys_exit_epoll_pwait"]
            _window(_loadgen(port, conns, size, mode, min(seconds, 2.0)), rec)
            script = subprocess.run(
                ["perf", "script", "-i", data, "-F", "trace"], capture_output=True, text=True
            ).stdout
        rets = [int(m) for m in re.findall(r"0x([0-9a-f]+)", script, re.I) for m in [int(m, 16)]]
        polls = [r for r in rets if r < 1 << 31]
        per_poll = sum(polls) / len(polls) if polls else 0.0
        empty = sum(1 for r in polls if r == 0) / len(polls) if polls else 0.0
        return msgs, counts, per_poll, empty
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if upstream is not None:
            upstream.kill()
            upstream.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", default="gev-proxy,uvloop-proxy")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--no-src-path", action="store_true", help="run the installed gev code")
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--mode", default="raw")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    keys = ["all", *CALLS, *(f"{c} EAGAIN" for c in EAGAIN), "context-switches"]
    for _ in range(args.repeat):
        for name in args.servers.split(","):
            msgs, counts, per_poll, empty = one_run(
                name,
                args.python,
                args.conns,
                args.size,
                args.mode,
                args.seconds,
                not args.no_src_path,
            )
            shown = ", ".join(f"{k} {counts[k] / msgs:.3f}" for k in keys if counts.get(k) and msgs)
            print(
                f"{name}: {msgs} msgs; per message: {shown}; "
                f"events per epoll_wait {per_poll:.2f} ({empty:.0%} empty)",
                flush=True,
            )


if __name__ == "__main__":
    main()
