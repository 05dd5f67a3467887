"""Fan-out benchmark: one publisher, N WebSocket subscribers, a native client verifying every
delivery (bench/fanout.c), servers side by side.

    python bench/fanout.py --servers gev,websockets,picows --subs 1000,10000 --repeat 3
    python bench/fanout.py --callgrind --servers gev,gev-loop,picows,websockets --subs 1000

Wall-clock mode: each (round, subscribers, in-flight, server) starts a fresh server pinned to
--server-cpu, runs the client pinned to --client-cpu, samples the server's CPU time at the
client's window markers, and reports deliveries/s, publish-to-delivery latency (median, p99)
and server CPU per delivery. --inflight 1 is the latency scenario (one message in flight, the
next published once every subscriber has the previous one); a larger window is the
throughput scenario.

--callgrind: user-space instructions per delivery, counted by valgrind's callgrind over a
short and a long run (the difference cancels start-up and the subscribers' handshakes); load
independent, so usable on a busy machine. With --window, one run instead, counted only between
the client's window markers (after --warmup, for --duration): steadier, as no handshake or
garbage collection of the set-up falls into the difference.

Run from the repository root with a Python that has picows, uvloop and websockets (``hatch
run bench:python bench/fanout.py ...`` or the bench environment's interpreter). The servers
import this tree's packages (packages/*/src on PYTHONPATH), or with ``--no-src-path`` what
``--python``'s environment has installed (the compiled wheels).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as common  # noqa: E402  (bench/run.py: spawning, pinning, /proc sampling)

ROOT = BENCH.parent
SERVERS = {
    "gev": ["{python}", "gev_fanout.py", "--port", "{port}"],
    "gev-loop": ["{python}", "gev_fanout.py", "--port", "{port}", "--mode", "loop"],
    "websockets": ["{python}", "websockets_broadcast.py", "--port", "{port}"],
    "picows": ["{python}", "picows_broadcast.py", "--port", "{port}"],
}


def build() -> Path:
    out = BENCH / ".build" / "fanout"
    out.parent.mkdir(exist_ok=True)
    src = BENCH / "fanout.c"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-o", str(out), str(src)], check=True)
    return out


def server_cmd(name: str, python: str, port: int) -> list[str]:
    return [a.format(python=python, port=port) for a in SERVERS[name]]


def client_cmd(args: argparse.Namespace, port: int, subs: int, inflight: int) -> list[str]:
    return [
        str(build()),
        "--port", str(port),
        "--subs", str(subs),
        "--size", str(args.size),
        "--inflight", str(inflight),
        "--duration", str(args.duration),
        "--warmup", str(args.warmup),
        "--json", "--markers",
    ]  # fmt: skip


@dataclass
class Result:
    server: str
    subs: int
    inflight: int
    ok: bool = False
    error: str = ""
    rate: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    cpu_us: float = 0.0
    user_us: float = 0.0
    sys_us: float = 0.0
    server_util: float = 0.0
    client_util: float = 0.0
    raw: dict = field(default_factory=dict)


def one_run(args: argparse.Namespace, name: str, subs: int, inflight: int) -> Result:
    res = Result(name, subs, inflight)
    port = common.free_port()
    logs = BENCH / ".build" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = open(logs / f"fanout-{name}-{subs}-{inflight}.log", "ab")  # noqa: SIM115
    server = common.spawn(
        server_cmd(name, args.python, port),
        args.server_cpu,
        args.sched,
        subs + 256,
        stdout=log_file,
        stderr=log_file,
        cwd=BENCH / "servers",
        env=common.server_env(not args.no_src_path),
    )
    try:
        common.wait_port(port, server, 60)
        client = common.spawn(
            client_cmd(args, port, subs, inflight),
            args.client_cpu,
            args.sched,
            subs + 256,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        timer = threading.Timer(
            args.warmup + args.duration + 240, lambda: common.kill_group(client, 0.2)
        )
        timer.start()
        samples = {}
        try:
            assert client.stdout is not None and client.stderr is not None
            for raw in client.stdout:
                line = raw.decode(errors="replace").strip()
                if line in ("window-start", "window-end"):
                    samples[line] = (time.monotonic(), common.group_cpu_seconds(server.pid))
                elif line.startswith("{"):
                    res.raw = json.loads(line)
            client.wait()
            err = client.stderr.read().decode(errors="replace").strip()
        finally:
            timer.cancel()
            common.kill_group(client, grace=0.2)
        j = res.raw
        if client.returncode != 0 or not j or j.get("errors", 1):
            res.error = (j.get("error") if j else "") or err or f"exit {client.returncode}"
            return res
        (t0, (u0, k0)), (t1, (u1, k1)) = samples["window-start"], samples["window-end"]
        n = j["deliveries"]
        res.ok = n > 0
        res.rate = j["deliveries_per_s"]
        res.p50_us, res.p99_us = j["lat_p50_us"], j["lat_p99_us"]
        res.user_us = (u1 - u0) / n * 1e6
        res.sys_us = (k1 - k0) / n * 1e6
        res.cpu_us = res.user_us + res.sys_us
        res.server_util = ((u1 - u0) + (k1 - k0)) / (t1 - t0)
        res.client_util = j["client_cpu"]
        return res
    finally:
        common.kill_group(server)
        log_file.close()


def median(xs: list[float]) -> float:
    return common.median(xs) if xs else float("nan")


def report(results: list[Result], baseline: str) -> str:
    out = [
        "| subs | in flight | server | deliveries/s (median, min-max) | p50 ms | p99 ms |"
        " server CPU µs/delivery (user+sys) | server CPU | client CPU |"
        f" deliveries/s vs {baseline} | CPU/delivery vs {baseline} |",
        "|---:|---:|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    keys = sorted({(r.subs, r.inflight) for r in results})
    for subs, inflight in keys:
        rows = {}
        for name in dict.fromkeys(r.server for r in results):
            runs = [r for r in results if (r.server, r.subs, r.inflight) == (name, subs, inflight)]
            good = [r for r in runs if r.ok]
            if not good:
                errors = "; ".join(sorted({r.error for r in runs}))[:120]
                out.append(f"| {subs} | {inflight} | {name} | failed: {errors} | | | | | | | |")
                continue
            rows[name] = {
                "rate": median([r.rate for r in good]),
                "lo": min(r.rate for r in good),
                "hi": max(r.rate for r in good),
                "p50": median([r.p50_us for r in good]) / 1000,
                "p99": median([r.p99_us for r in good]) / 1000,
                "cpu": median([r.cpu_us for r in good]),
                "user": median([r.user_us for r in good]),
                "sys": median([r.sys_us for r in good]),
                "su": median([r.server_util for r in good]),
                "cu": median([r.client_util for r in good]),
            }
        base = rows.get(baseline)
        for name, v in rows.items():
            rate_ratio = f"{v['rate'] / base['rate']:.2f}x" if base else ""
            cpu_ratio = f"{v['cpu'] / base['cpu']:.2f}x" if base and base["cpu"] else ""
            spread = f"{v['lo']:,.0f}-{v['hi']:,.0f}"
            cpu = f"{v['cpu']:.2f} ({v['user']:.2f}+{v['sys']:.2f})"
            out.append(
                f"| {subs} | {inflight} | {name} | {v['rate']:,.0f} ({spread})"
                f" | {v['p50']:.1f} | {v['p99']:.1f} | {cpu}"
                f" | {v['su']:.0%} | {v['cu']:.0%} | {rate_ratio} | {cpu_ratio} |"
            )
    return "\n".join(out)


# ------------------------------------------------------------------------------ callgrind


def callgrind_run(
    args: argparse.Namespace, name: str, subs: int, inflight: int, seconds: float
) -> tuple[int, int]:
    """(instructions, deliveries) of one server lifetime under callgrind."""
    port = common.free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             *server_cmd(name, args.python, port)],
            cwd=BENCH / "servers",
            env=common.server_env(not args.no_src_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            common.wait_port(port, server, 180)
            cmd = client_cmd(args, port, subs, inflight)
            cmd[cmd.index("--duration") + 1] = str(seconds)
            cmd[cmd.index("--warmup") + 1] = "0"
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 600)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
            if proc.returncode != 0 or not lines:
                raise SystemExit(
                    f"{name}: client failed: {proc.stdout[-500:]} {proc.stderr[-500:]}"
                )
            deliveries = int(json.loads(lines[-1])["total_deliveries"])
        finally:
            os.killpg(server.pid, signal.SIGINT)
            try:
                server.wait(300)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        text = out.read_text(errors="replace")
        m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
        if not m:
            raise SystemExit(f"no callgrind totals for {name}")
        return int(m.group(1)), deliveries


def callgrind_window(
    args: argparse.Namespace, name: str, subs: int, inflight: int
) -> tuple[int, int]:
    """(instructions, deliveries) of the client's measuring window alone, under callgrind.

    The counters are zeroed at the client's window-start marker and dumped at window-end
    (``callgrind_control``), so neither the handshakes nor start-up nor exit are counted.
    """
    port = common.free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             *server_cmd(name, args.python, port)],
            cwd=BENCH / "servers",
            env=common.server_env(not args.no_src_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            common.wait_port(port, server, 180)
            client = subprocess.Popen(
                client_cmd(args, port, subs, inflight), stdout=subprocess.PIPE, text=True
            )
            result = {}
            assert client.stdout is not None
            for line in client.stdout:
                line = line.strip()
                if line == "window-start":
                    subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True,
                                   capture_output=True)  # fmt: skip
                elif line == "window-end":
                    subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True,
                                   capture_output=True)  # fmt: skip
                elif line.startswith("{"):
                    result = json.loads(line)
            client.wait()
            if client.returncode != 0 or not result or result.get("errors", 1):
                raise SystemExit(f"{name}: client failed: {result}")
        finally:
            os.killpg(server.pid, signal.SIGINT)
            try:
                server.wait(300)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        text = Path(f"{out}.1").read_text(errors="replace")
        m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
        if not m:
            raise SystemExit(f"no callgrind totals for {name}")
        return int(m.group(1)), int(result["deliveries"])


def callgrind(args: argparse.Namespace) -> None:
    rows = []
    for subs in args.subs:
        for inflight in args.inflight:
            for name in args.servers:
                if args.window:
                    ir, n = callgrind_window(args, name, subs, inflight)
                    print(
                        f"{name:12s} subs={subs:<6d} inflight={inflight:<4d} {ir / max(1, n):9.0f}"
                        f" instructions/delivery  ({n} deliveries in the window)",
                        flush=True,
                    )
                    continue
                ir1, d1 = callgrind_run(args, name, subs, inflight, args.short)
                ir2, d2 = callgrind_run(args, name, subs, inflight, args.long)
                per = (ir2 - ir1) / max(1, d2 - d1)
                rows.append((subs, inflight, name, per, d1, d2))
                print(
                    f"{name:12s} subs={subs:<6d} inflight={inflight:<4d} {per:9.0f} instructions"
                    f"/delivery  ({d1} and {d2} deliveries)",
                    flush=True,
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", default="gev,websockets,picows")
    ap.add_argument("--subs", default="1000,10000", help="subscriber counts")
    ap.add_argument("--inflight", default="1,64", help="messages in flight (1 = latency)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--baseline", default="picows")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument(
        "--no-src-path",
        action="store_true",
        help="run the gev code installed in --python's environment (e.g. built wheels), not"
        " this tree's packages/*/src",
    )
    ap.add_argument("--server-cpu", type=common.parse_cpus, default=frozenset({0}))
    ap.add_argument("--client-cpu", type=common.parse_cpus, default=frozenset({1}))
    ap.add_argument("--sched", choices=["fifo", "normal"], default="fifo")
    ap.add_argument("--json-out", help="write every run's raw numbers here")
    ap.add_argument("--markdown", help="append the report to this file")
    ap.add_argument("--callgrind", action="store_true", help="instructions per delivery")
    ap.add_argument("--short", type=float, default=2.0, help="--callgrind: short run, s")
    ap.add_argument("--long", type=float, default=6.0, help="--callgrind: long run, s")
    ap.add_argument(
        "--window",
        action="store_true",
        help="--callgrind: count only the client's window (--warmup, then --duration), zeroing"
        " and dumping the counters with callgrind_control, instead of two server lifetimes",
    )
    args = ap.parse_args()
    args.servers = [s for s in args.servers.split(",") if s]
    unknown = [s for s in args.servers if s not in SERVERS]
    if unknown:
        ap.error(f"unknown servers {unknown}; known: {sorted(SERVERS)}")
    args.subs = [int(x) for x in args.subs.split(",")]
    args.inflight = [int(x) for x in args.inflight.split(",")]
    args.sched = common.Sched(args.sched, 10)
    signal.signal(signal.SIGINT, common._on_signal)
    signal.signal(signal.SIGTERM, common._on_signal)
    build()
    if args.callgrind:
        callgrind(args)
        return
    results: list[Result] = []
    try:
        for rnd in range(args.repeat):
            for subs in args.subs:
                for inflight in args.inflight:
                    order = (
                        args.servers[rnd % len(args.servers) :]
                        + args.servers[: rnd % len(args.servers)]
                    )
                    for name in order:
                        common.log(f"round {rnd + 1}: {name} subs={subs} inflight={inflight}")
                        res = one_run(args, name, subs, inflight)
                        if not res.ok:
                            common.log(f"  failed: {res.error}")
                        else:
                            common.log(
                                f"  {res.rate:,.0f} deliveries/s, p50 {res.p50_us / 1000:.1f} ms,"
                                f" p99 {res.p99_us / 1000:.1f} ms, {res.cpu_us:.2f} µs CPU each"
                            )
                        results.append(res)
    finally:
        common.kill_all()
    info = common.env_info(args.python)
    header = (
        f"fan-out, {args.size} B messages, {args.repeat} round(s) of {args.duration:g} s;"
        f" server CPU {common.fmt_cpus(args.server_cpu)}, client CPU"
        f" {common.fmt_cpus(args.client_cpu)}, sched {args.sched.policy};"
        f" {info.get('python', '')} {info.get('cpu', '')}"
    )
    text = f"{header}\n\n{report(results, args.baseline)}\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write(text + "\n")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump([r.__dict__ for r in results], f, indent=1)


if __name__ == "__main__":
    main()
