"""Instructions per echoed message, counted by callgrind: a noise-free complement to run.py.

    python bench/callgrind_echo.py [--servers gev,uvloop,bare-python] [--conns 50] [--size 64]
    python bench/callgrind_echo.py --mode pbframe --servers gev-pb,uvloop
    python bench/callgrind_echo.py --mode ws --servers gev-ws,picows --size 4096
    python bench/callgrind_echo.py --python ENV/bin/python --no-src-path   # installed wheels
    python bench/callgrind_echo.py --tls --servers asyncio,uvloop          # TLS 1.3 echo
    python bench/callgrind_echo.py --mode pbframe --conns 200 \
        --servers gev-sleep-async,uvloop-sleep-async --baseline uvloop-sleep-async
    python bench/callgrind_echo.py --servers gev-proxy,uvloop-proxy --baseline uvloop-proxy
    python bench/callgrind_echo.py --servers gev --profile 25 --keep DIR   # where they go

Wall-clock numbers on a shared 2-core machine swing by +-30 %; instruction counts do not. Each
server runs under ``valgrind --tool=callgrind`` twice, driven by bench's native loadgen for a
short and a long window; instructions per message = (Ir_long - Ir_short) / (msgs_long -
msgs_short), which cancels interpreter start-up and shutdown. Counts user-space instructions of
the server process only (the kernel's share is not included). The proxies (``*-proxy``) forward
to bench's C echo (``c_echo``), started for each run as a separate process outside valgrind, as
run.py's proxy scenarios do: only the proxy's instructions are counted, per proxied message
(request in, upstream, reply back out).

``--profile N`` splits the figure by function: callgrind_annotate's self cost of each function
in both runs, differenced and divided the same way, the N largest printed (and everything else
summed). ``--keep DIR`` keeps the two callgrind outputs per server (NAME-<seconds>s.out)
for callgrind_annotate or KCachegrind.
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
from pathlib import Path

from run import CERTFILE, KEYFILE, build

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SERVERS = {
    "gev": ["{python}", str(ROOT / "examples" / "echo.py"), "--port", "{port}"],
    "uvloop": ["{python}", str(BENCH / "servers" / "uvloop_echo.py"), "--port", "{port}"],
    "asyncio": ["{python}", str(BENCH / "servers" / "asyncio_echo.py"), "--port", "{port}"],
    "bare-python": ["{python}", str(BENCH / "servers" / "bare_epoll_echo.py"), "--port", "{port}"],
    # Framed servers: run them with the loadgen --mode they speak (pbframe, ws).
    "gev-pb": ["{python}", str(ROOT / "examples" / "protobuf_echo.py"), "--port", "{port}"],
    # The same with the loops' traffic counters on (Server(count_traffic=True)).
    "gev-pb-count": [
        "{python}",
        str(ROOT / "examples" / "protobuf_echo.py"),
        "--count-traffic",
        "--port",
        "{port}",
    ],
    "gev-ws": ["{python}", str(ROOT / "examples" / "websocket_echo.py"), "--port", "{port}"],
    "picows": ["{python}", str(BENCH / "servers" / "picows_echo.py"), "--port", "{port}"],
    "websockets": ["{python}", str(BENCH / "servers" / "websockets_echo.py"), "--port", "{port}"],
    # gev-metrics enabled, loaded but off, absent (bench/servers/gev_metrics_echo.py); and
    # enabled with a sampler that never runs within the window: its per-message cost alone;
    # and absent with gev-core's traffic counters on (count): what the counting costs.
    **{
        f"gev-metrics-{state}": [
            "{python}",
            str(BENCH / "servers" / "gev_metrics_echo.py"),
            "--port",
            "{port}",
            "--metrics",
            state.removesuffix("-1h"),
            *(["--interval", "3600"] if "1h" in state else []),
        ]
        for state in ("on", "on-1h", "off", "none", "count")
    },
    # The 1 ms-sleep service (--mode pbframe): instructions per request answered after work in
    # a thread pool or a coroutine, every thread of the server counted.
    "gev-sleep-thread": [
        "{python}",
        str(BENCH / "servers" / "gev_sleep.py"),
        "--work",
        "thread",
        "--port",
        "{port}",
    ],
    "gev-sleep-async": [
        "{python}",
        str(BENCH / "servers" / "gev_sleep.py"),
        "--work",
        "async",
        "--port",
        "{port}",
    ],
    "uvloop-sleep-thread": [
        "{python}",
        str(BENCH / "servers" / "uvloop_sleep.py"),
        "--work",
        "thread",
        "--port",
        "{port}",
    ],
    "uvloop-sleep-async": [
        "{python}",
        str(BENCH / "servers" / "uvloop_sleep.py"),
        "--work",
        "async",
        "--port",
        "{port}",
    ],
    # TCP reverse proxies in front of bench's C echo ({upstream}: its port, started per run).
    "gev-proxy": [
        "{python}",
        str(ROOT / "examples" / "proxy.py"),
        "--listen",
        "127.0.0.1:{port}",
        "--upstream",
        "127.0.0.1:{upstream}",
    ],
    "gev-proxy-handlers": [
        "{python}",
        str(BENCH / "servers" / "gev_proxy_handlers.py"),
        "--listen",
        "127.0.0.1:{port}",
        "--upstream",
        "127.0.0.1:{upstream}",
    ],
    "uvloop-proxy": [
        "{python}",
        str(BENCH / "servers" / "asyncio_proxy.py"),
        "--loop",
        "uvloop",
        "--port",
        "{port}",
        "--upstream",
        "127.0.0.1:{upstream}",
    ],
    "asyncio-proxy": [
        "{python}",
        str(BENCH / "servers" / "asyncio_proxy.py"),
        "--port",
        "{port}",
        "--upstream",
        "127.0.0.1:{upstream}",
    ],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_loadgen(tls: bool = False) -> Path:
    # run.py's build: the same flags (OpenSSL when available), so the two never rebuild each
    # other's binary back and forth; with tls, the certificate too.
    build(os.environ.get("CC", "gcc"), tls=tls)
    return BENCH / ".build" / "loadgen"


def one_run(
    name: str,
    python: str,
    seconds: float,
    conns: int,
    size: int,
    mode: str,
    src_path: bool,
    tls: bool = False,
    keep: Path | None = None,
) -> tuple[int, int, dict[str, int]]:
    loadgen = build_loadgen(tls)  # and c_echo
    port = free_port()
    upstream = None
    if any("{upstream}" in a for a in SERVERS[name]):
        # The proxied-to echo: native, not under valgrind, so none of its work is counted.
        up_port = free_port()
        upstream = subprocess.Popen(
            [str(BENCH / ".build" / "c_echo"), "--port", str(up_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", up_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
    else:
        up_port = 0
    cmd = [a.format(python=python, port=port, upstream=up_port) for a in SERVERS[name]]
    tls_args = ["--tls", "--tls-ca", str(CERTFILE)] if tls else []
    if tls:  # every TCP echo server of the table takes these (gev's: examples/echo.py)
        cmd += ["--certfile", str(CERTFILE), "--keyfile", str(KEYFILE)]
        if name == "gev":
            # Under valgrind 50 handshakes take far longer than gev's default 10 s limit.
            cmd += ["--tls-handshake-timeout", "600"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        env = dict(os.environ)
        if src_path:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(p) for p in sorted((ROOT / "packages").glob("*/src"))]
                + [env.get("PYTHONPATH", "")]
            )
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # Generous: a server under valgrind starts ~50x slower, more on a busy machine.
            deadline = time.monotonic() + 600
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit(f"{name} did not start under valgrind") from None
                    time.sleep(0.2)
            lg = subprocess.run(
                [
                    str(loadgen),
                    *tls_args,
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
                    "0",
                    "--connect-timeout",
                    "300",
                    "--json",
                ],
                capture_output=True,
                text=True,
            )
            if lg.returncode != 0:
                raise SystemExit(f"loadgen failed against {name}: {lg.stdout}{lg.stderr}")
            msgs = int(json.loads(lg.stdout.strip().splitlines()[-1])["messages"])
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                # Not shutting down (the asyncio proxy can wait forever for a connection):
                # SIGTERM's default action ends it, and valgrind still writes its counts.
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(120)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            if upstream is not None:
                upstream.kill()
                upstream.wait()
        text = out.read_text(errors="replace")
        m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
        if not m:
            raise SystemExit(f"no callgrind totals for {name}")
        functions = by_function(out) if keep is not None else {}
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            out.replace(keep / f"{name}-{seconds:g}s.out")
        return int(m.group(1)), msgs, functions


def by_function(out: Path) -> dict[str, int]:
    """Self instructions by function (callgrind_annotate's table, every thread summed)."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", str(out)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    functions: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*?)\s*$", line)
        if m and ":" in m.group(2) and not m.group(2).startswith("PROGRAM TOTALS"):
            key = re.sub(r"^\S*/", "", m.group(2))  # file name without its directories
            functions[key] = functions.get(key, 0) + int(m.group(1).replace(",", ""))
    return functions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", default="gev,uvloop,bare-python")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--mode", default="raw", help="loadgen mode: raw, pbframe or ws")
    ap.add_argument("--baseline", default="uvloop", help="server the others are compared with")
    ap.add_argument(
        "--no-src-path",
        action="store_true",
        help="run the gev code installed in --python's environment (e.g. built wheels), "
        "not this tree's packages/*/src",
    )
    ap.add_argument("--tls", action="store_true", help="TLS 1.3 echo (servers get --certfile)")
    ap.add_argument("--short", type=float, default=2.0)
    ap.add_argument("--long", type=float, default=6.0)
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="print the N functions with the most instructions per message")
    ap.add_argument("--keep", type=Path, metavar="DIR", help="keep the callgrind outputs here")
    args = ap.parse_args()
    keep = args.keep
    if args.profile and keep is None:
        keep = Path(tempfile.mkdtemp(prefix="callgrind-echo-"))
    rows = []
    for name in args.servers.split(","):
        src = not args.no_src_path
        common = (args.conns, args.size, args.mode, src, args.tls)
        ir1, m1, f1 = one_run(name, args.python, args.short, *common, keep=keep)
        ir2, m2, f2 = one_run(name, args.python, args.long, *common, keep=keep)
        per = (ir2 - ir1) / max(1, m2 - m1)
        rows.append((name, per, m1, m2))
        print(f"{name:12s} {per:10.0f} instructions/msg  ({m1} and {m2} messages)", flush=True)
        if args.profile:
            split = {k: (f2.get(k, 0) - f1.get(k, 0)) / max(1, m2 - m1) for k in {*f1, *f2}}
            top = sorted(split.items(), key=lambda kv: -kv[1])[: args.profile]
            for fn, ins in top:
                print(f"    {ins:8.0f}  {fn}")
            rest = sum(split.values()) - sum(v for _, v in top)
            print(f"    {rest:8.0f}  (everything else)", flush=True)
    base = next((r[1] for r in rows if r[0] == args.baseline), None)
    if base:
        print()
        for name, per, *_ in rows:
            print(f"{name:12s} {per / base:5.2f}x {args.baseline}'s instructions per message")


if __name__ == "__main__":
    main()
