"""Python function calls (and, with ``--strace``, system calls) per request of the 1 ms-sleep
service: a load-independent measure of what a server's hand-over costs.

Wall-clock figures mean little on a shared machine; how many Python functions a server runs
per request, and how many ``futex`` calls (thread wake-ups) it makes, do not depend on the
load. For each variant this starts the service in a child process -- gev with ``conn.offload``
(``gev-thread``), gev with ``async def on_message`` on its asyncio companion (``gev-async``),
asyncio + uvloop with a task per request (``uvloop-async``, ``bench/servers/uvloop_sleep.py``'s
protocol) -- and drives it from this process: ``--conns`` connections, ``--inflight`` requests
of 64 bytes in flight on each (loadgen's ``pbframe`` frames), every reply checked in order.

The child counts Python-level ``call`` events of every server thread (``threading.setprofile``:
the loop threads, the asyncio companion, the pool threads; C functions are not counted) and the
count over the measured window (after a warm-up round, so connection set-up is excluded) is
divided by the requests answered in it. The profiler slows the server, which changes how many
requests one poll iteration sees; the figures are for comparing builds under the same
command. With ``--strace`` the same window is measured again without the profiler under
``strace -f -c`` attached to the child (every thread), and ``futex`` calls and all system calls
per request are reported.

    python bench/count_calls.py                      # all three variants
    python bench/count_calls.py --variants gev-async --conns 1000 --strace

Needs uvloop for ``uvloop-async`` and for gev's companion to run on uvloop (``--loop
asyncio`` for the plain asyncio loop). Run from the repository root; ``packages/*/src`` are
put on the path.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VARIANTS = ("gev-thread", "gev-async", "uvloop-async")
PAYLOAD = 64


# ---------------------------------------------------------------------- child: the server

_calls = 0
_by_code: dict = {}


def _count(frame, event, arg):  # the profile function: one Python call each time
    global _calls
    if event == "call":
        _calls += 1


def _count_by_code(frame, event, arg):  # --top: which functions, too
    global _calls
    if event == "call":
        _calls += 1
        code = frame.f_code
        _by_code[code] = _by_code.get(code, 0) + 1


def _gev_handler(work: str, delay: float):
    sys.path.insert(0, os.path.join(HERE, "servers"))
    import gev_sleep  # the benchmarked server's handler

    return gev_sleep.build(argparse.Namespace(work=work, sleep_ms=delay * 1000))


def _serve_gev(work: str, delay: float, loop_kind: str, ready) -> None:
    from gev_core import LengthFieldProtocol, Server

    server = Server(
        _gev_handler(work, delay),
        address=("127.0.0.1", 0),
        protocol=LengthFieldProtocol(4),
        offload_threads=32,
        asyncio_loop=loop_kind,
    )
    thread = threading.Thread(target=server.start, name="gev-main", daemon=True)
    thread.start()
    server.wait_started(10)
    ready(server.address[1], server.stop)


def _serve_uvloop(delay: float, loop_kind: str, ready) -> None:
    import asyncio

    sys.path.insert(0, os.path.join(HERE, "servers"))
    import uvloop_sleep  # the reference server's protocol

    args = argparse.Namespace(work="async", sleep_ms=delay * 1000, threads=32)
    if loop_kind == "asyncio":
        loop = asyncio.new_event_loop()
    else:
        import uvloop

        loop = uvloop.new_event_loop()
    started = threading.Event()
    port: list[int] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        work = uvloop_sleep.make_work(args, loop)
        server = loop.run_until_complete(
            loop.create_server(lambda: uvloop_sleep.SleepEcho(work), "127.0.0.1", 0)
        )
        port.append(server.sockets[0].getsockname()[1])
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="uvloop-main", daemon=True)
    thread.start()
    started.wait(10)
    ready(port[0], lambda: loop.call_soon_threadsafe(loop.stop))


def child(variant: str, delay: float, loop_kind: str, profile: bool, top: int) -> None:
    # This (main) thread answers the parent on stdin and is never profiled; the server's
    # threads are all started after threading.setprofile, so every one of them is.
    if profile:
        threading.setprofile(_count_by_code if top else _count)

    def ready(port: int, stop) -> None:
        print(port, flush=True)
        marks = []
        for line in sys.stdin:
            if line.strip() == "mark":
                marks.append(dict(_by_code))
                print(_calls, flush=True)
            else:
                break
        stop()
        if top and len(marks) >= 2:
            first, last = marks[-2], marks[-1]
            diff = {code: n - first.get(code, 0) for code, n in last.items()}
            ranked = sorted(diff.items(), key=lambda kv: -kv[1])[:top]
            for code, n in ranked:
                where = f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
                print(f"{n:9d}  {code.co_name} ({where})", file=sys.stderr)

    if variant == "uvloop-async":
        _serve_uvloop(delay, loop_kind, ready)
    else:
        _serve_gev(variant.split("-")[1], delay, loop_kind, ready)


# ---------------------------------------------------------------------- parent: the client


def drive(port: int, conns: int, inflight: int, requests: int) -> int:
    """Keep ``inflight`` requests outstanding on each of ``conns`` connections until
    ``requests`` replies arrived; every reply must be its request. Returns replies."""
    sel = selectors.DefaultSelector()
    socks = []
    header = PAYLOAD.to_bytes(4, "big")
    sent = 0
    state: dict[int, list] = {}
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
        # [socket, next seq to send, next seq expected, receive buffer]
        state[s.fileno()] = [s, 0, 0, bytearray()]
        sel.register(s, selectors.EVENT_READ)

    def frame(conn_id: int, seq: int) -> bytes:
        body = f"{conn_id}:{seq}:".encode().ljust(PAYLOAD, b".")
        return header + body

    size = 4 + PAYLOAD
    for fd, st in state.items():
        burst = b"".join(frame(fd, st[1] + k) for k in range(inflight))
        st[1] += inflight
        sent += inflight
        st[0].sendall(burst)
    done = 0
    deadline = time.monotonic() + 120
    while done < requests:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {done} of {requests} replies")
        for key, _ in sel.select(1.0):
            st = state[key.fd]
            data = st[0].recv(65536)
            if not data:
                raise SystemExit("the server closed a connection")
            buf = st[3]
            buf += data
            n = len(buf) // size
            more = []
            for k in range(n):
                got = bytes(buf[k * size : (k + 1) * size])
                if got != frame(key.fd, st[2]):
                    raise SystemExit(f"reply out of order or wrong: {got[:24]!r}")
                st[2] += 1
                done += 1
                if sent < requests:
                    more.append(frame(key.fd, st[1]))
                    st[1] += 1
                    sent += 1
            del buf[: n * size]
            if more:
                st[0].sendall(b"".join(more))
    # Let what is still in flight come back before the window closes.
    while any(st[2] < st[1] for st in state.values()):
        for key, _ in sel.select(1.0):
            st = state[key.fd]
            data = st[0].recv(65536)
            buf = st[3]
            buf += data
            n = len(buf) // size
            st[2] += n
            done += n
            del buf[: n * size]
    for s in socks:
        sel.unregister(s)
        s.close()
    return done


def measure(args, variant: str, profile: bool, strace: bool) -> dict:
    env = dict(os.environ)
    paths = sorted(glob.glob(os.path.join(ROOT, "packages", "*", "src")))
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable,
        __file__,
        "--child",
        variant,
        "--sleep-ms",
        str(args.sleep_ms),
        "--loop",
        args.loop,
    ]
    if not profile:
        cmd.append("--no-profile")
    elif args.top:
        cmd += ["--top", str(args.top)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    port = int(proc.stdout.readline())

    def mark() -> int:
        proc.stdin.write("mark\n")
        proc.stdin.flush()
        return int(proc.stdout.readline())

    result: dict = {}
    try:
        # Warm-up: every connection's set-up, first requests, the runners' threads.
        drive(port, args.conns, args.inflight, args.conns * args.inflight * 2)
        tracer = None
        out = None
        if strace:
            fd, out = tempfile.mkstemp(suffix=".strace")
            os.close(fd)
            tracer = subprocess.Popen(
                ["strace", "-f", "-c", "-o", out, "-p", str(proc.pid)],
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # attached to every thread
        # The window: the same connections' set-up again is not in it.
        drive(port, args.conns, args.inflight, args.conns * args.inflight)
        before = mark()
        t0 = time.monotonic()
        done = drive(port, args.conns, args.inflight, args.requests)
        elapsed = time.monotonic() - t0
        after = mark()
        # The second drive's connect/close is outside [before, after] except its own closes,
        # which are a few calls per connection: negligible next to requests.
        result = {"variant": variant, "requests": done, "seconds": elapsed}
        if profile:
            result["calls"] = (after - before) / done
        if tracer is not None and out is not None:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(30)
            result.update(_parse_strace(out, done))
            os.unlink(out)
    finally:
        try:
            proc.stdin.write("stop\n")
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return result


def _parse_strace(path: str, requests: int) -> dict:
    futex = total = 0
    with open(path) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\S+)$", line)
            if not m:
                continue
            calls, name = int(m.group(1)), m.group(2)
            if name == "total":
                total = calls
            elif name == "futex":
                futex = calls
    return {"futex": futex / requests, "syscalls": total / requests}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--conns", type=int, default=200)
    ap.add_argument("--inflight", type=int, default=1)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--sleep-ms", type=float, default=1.0)
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    ap.add_argument("--strace", action="store_true", help="also futex and system calls/request")
    ap.add_argument("--no-calls", action="store_true", help="skip the profiled run")
    ap.add_argument(
        "--top", type=int, default=0, help="print the N functions called most in the window"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--no-profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.sleep_ms / 1000.0, args.loop, not args.no_profile, args.top)
        return
    print(
        "| variant | conns x in flight | Python calls/request | futex/request |"
        " syscalls/request |\n|---|---|---:|---:|---:|"
    )
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
        row = {"calls": None}
        if not args.no_calls:
            row.update(measure(args, variant, True, False))
        if args.strace:
            row.update(measure(args, variant, False, True))
        calls = "-" if row.get("calls") is None else f"{row['calls']:.1f}"
        futex = f"{row['futex']:.2f}" if "futex" in row else "-"
        sysc = f"{row['syscalls']:.2f}" if "syscalls" in row else "-"
        print(
            f"| {variant} | {args.conns} x {args.inflight} | {calls} | {futex} | {sysc} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
