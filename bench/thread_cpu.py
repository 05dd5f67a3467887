"""CPU time and context switches per request, per server thread, for the 1 ms-sleep service
(or any pbframe server): where a multi-threaded server spends its CPU.

``bench/run.py`` reports a server's CPU per request as a whole; gev's ``async def`` handlers
run on two threads (the gev loop and the asyncio companion), so this splits the figure by
thread. For each server it starts the command, drives it with loadgen (``--conns``
connections, one 64-byte ``pbframe`` request in flight each, every reply checked), and reads
``/proc/PID/task/*/stat`` and ``status`` at loadgen's window markers: user and system CPU µs
per request, and voluntary / involuntary context switches per request, for every thread that
ran in the window (threads are named: the loop thread is the process's main thread here, the
companion ``gev-asyncio``). Rounds of the servers given alternate, so a load change on a
shared machine hits them alike.

    python bench/thread_cpu.py --python VENV/bin/python --no-src-path \\
        --servers gev-sleep-async,uvloop-sleep-async --rounds 3 --duration 8

Server names and commands are ``bench/run.py``'s (``--server NAME=CMD`` adds one, CMD with
``{python}``, ``{bench}`` and ``{port}``). Linux only. Build loadgen first (``bench/run.py``
does it; or ``cd bench && python -c "import run; run.build('gcc')"``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import run as _run  # noqa: E402  (server table and loadgen path)

TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot(pid: int) -> dict[int, tuple[str, int, int, int, int]]:
    """tid -> (name, utime ticks, stime ticks, voluntary, involuntary switches)."""
    out = {}
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/stat") as f:
                stat = f.read()
            with open(f"{base}/{tid}/status") as f:
                status = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        ut, st = int(fields[11]), int(fields[12])
        vol = invol = 0
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                vol = int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                invol = int(line.split()[1])
        out[int(tid)] = (name, ut, st, vol, invol)
    return out


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server did not listen on {port}")


def one(cmd: list[str], env: dict[str, str], a: argparse.Namespace) -> dict:
    port = free_port()
    cmd = [c.format(python=a.python, bench=HERE, port=port) for c in cmd]
    if a.server_cpu:
        cmd = ["taskset", "-c", a.server_cpu, *cmd]
    srv = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port)
        lg_cmd = [
            str(_run.BUILD / "loadgen"), "--port", str(port), "--mode", "pbframe",
            "--conns", str(a.conns), "--size", "64", "--inflight", str(a.inflight),
            "--duration", str(a.duration), "--warmup", str(a.warmup), "--markers", "--json",
            "--latency", "--connect-timeout", "60",
        ]  # fmt: skip
        if a.client_cpu:
            lg_cmd = ["taskset", "-c", a.client_cpu, *lg_cmd]
        lg = subprocess.Popen(lg_cmd, stdout=subprocess.PIPE, text=True)
        assert lg.stdout is not None
        before = after = None
        result = None
        for line in lg.stdout:
            line = line.strip()
            if line == "window-start":
                before = snapshot(srv.pid)
            elif line == "window-end":
                after = snapshot(srv.pid)
            elif line.startswith("{"):
                result = json.loads(line)
        lg.wait()
        if before is None or after is None or result is None or result.get("error"):
            raise SystemExit(f"loadgen failed: {result}")
        n = result["messages"]
        threads = []
        for tid, (name, ut, st, vol, inv) in after.items():
            b = before.get(tid, (name, 0, 0, 0, 0))
            d = [ut - b[1], st - b[2], vol - b[3], inv - b[4]]
            if any(d):
                threads.append(
                    {
                        "thread": "main" if tid == srv.pid else name,
                        "user_us": d[0] / TICK * 1e6 / n,
                        "sys_us": d[1] / TICK * 1e6 / n,
                        "vcsw": d[2] / n,
                        "icsw": d[3] / n,
                    }
                )
        return {"rps": result.get("msgs_per_sec") or n / a.duration, "result": result,
                "threads": threads}  # fmt: skip
    finally:
        srv.terminate()
        try:
            srv.wait(10)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--no-src-path", action="store_true", help="do not put packages/*/src first")
    ap.add_argument("--servers", default="gev-sleep-async,uvloop-sleep-async")
    ap.add_argument("--server", action="append", default=[], help="NAME=CMD (shlex-split)")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--inflight", type=int, default=1)
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--server-cpu", default="0", help="taskset CPU list for the server ('' none)")
    ap.add_argument("--client-cpu", default="1", help="taskset CPU list for loadgen ('' none)")
    a = ap.parse_args()
    table = {name: spec["cmd"] for name, spec in _run.SERVERS.items()}
    for item in a.server:
        name, _, cmd = item.partition("=")
        table[name] = shlex.split(cmd)
    env = dict(os.environ)
    if not a.no_src_path:
        srcs = [str(p) for p in sorted((_run.ROOT / "packages").glob("*/src"))]
        env["PYTHONPATH"] = os.pathsep.join([*srcs, env.get("PYTHONPATH", "")])
    names = a.servers.split(",")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(a.rounds):
        for name in names:
            res = one(table[name], env, a)
            runs[name].append(res)
            lat = res["result"].get("latency_us") or {}
            total = sum(t["user_us"] + t["sys_us"] for t in res["threads"])
            print(
                f"{name} r{r}: {res['rps']:,.0f} req/s, p99 {lat.get('p99', 0):,.0f} µs,"
                f" CPU {total:.2f} µs/req",
                flush=True,
            )
            for t in sorted(res["threads"], key=lambda t: -(t["user_us"] + t["sys_us"])):
                print(
                    f"    {t['thread']:<16} user {t['user_us']:6.2f}  sys {t['sys_us']:6.2f}"
                    f"  vcsw {t['vcsw']:.3f}  icsw {t['icsw']:.3f}  /req",
                    flush=True,
                )
    print("\nmedians:")
    for name in names:
        rs = runs[name]
        tot = [sum(t["user_us"] + t["sys_us"] for t in r["threads"]) for r in rs]
        p99 = statistics.median((r["result"].get("latency_us") or {}).get("p99", 0) for r in rs)
        print(
            f"  {name:<22} {statistics.median(r['rps'] for r in rs):>10,.0f} req/s"
            f"  CPU {statistics.median(tot):6.2f} µs/req"
            f"  p99 {p99:>9,.0f} µs"
        )


if __name__ == "__main__":
    main()
