#!/usr/bin/env python3
"""Benchmark driver: echo servers side by side under the native load generator.

Compiles bench/loadgen.c and the C servers into bench/.build/ (with OpenSSL from
libssl-dev when it is there: loadgen --tls and the C TLS echo), makes a certificate
for the TLS scenarios, then for every round, scenario and server (servers
interleaved round-robin):

  * starts the server pinned to one CPU (default CPU 0) in its own process
    group, waits until its port accepts connections,
  * runs loadgen pinned to another CPU (default CPU 1),
  * samples the server process group's utime+stime from /proc at the moment
    loadgen reports the start and the end of its measured window,
  * stops the server (the whole process group).

Per scenario it reports the median msgs/s, median server CPU us per message,
their min-max over the rounds and the ratios against a baseline server.

Stdlib only; Python 3.10+.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BUILD = BENCH / ".build"

# --------------------------------------------------------------------------
# registry

# Command templates.  Placeholders: {python} (--python), {port}, {root} (the
# repository), {bench} (bench/), {build} (bench/.build), {certfile} and
# {keyfile} (the TLS scenarios' certificate and key), {upstream} (the port of
# the proxy scenarios' upstream echo).  Servers run with the repository root
# as working directory.  Tags say which scenarios apply:
#   tcp: raw byte echo   pb: echoes gev-protobuf frames   ws: WebSocket echo
#   unix: raw byte echo on a Unix socket, with "unix_cmd" ({unix}: its path)
#   tls: byte echo over TLS, with "tls_cmd" (or a "cmd" that is TLS itself)
#   proxy: a TCP proxy to 127.0.0.1:{upstream}, where the driver runs c_echo
#   sleep: the 1 ms-sleep service (bench/servers/sleep_common.py): pbframe frames answered
#          after a piece of work in a thread pool (thread) or a coroutine (async)
# A raw byte echo also echoes pb frames unchanged, so the reference TCP
# servers are tagged pb as a no-parsing ceiling for the framing scenarios.
SERVERS: dict[str, dict] = {
    "gev": {
        "cmd": ["{python}", "{root}/examples/echo.py", "--port", "{port}"],
        "unix_cmd": ["{python}", "{root}/examples/echo.py", "--unix", "{unix}"],
        "tls_cmd": [
            *("{python}", "{root}/examples/echo.py", "--port", "{port}"),
            *("--certfile", "{certfile}", "--keyfile", "{keyfile}"),
        ],
        "tags": {"tcp", "unix", "tls"},
    },
    # Placeholders for gev's framed servers; override with --server if the
    # example scripts end up with other names.
    "gev-pb": {
        "cmd": ["{python}", "{root}/examples/protobuf_echo.py", "--port", "{port}"],
        "tags": {"pb"},
    },
    "gev-ws": {
        "cmd": ["{python}", "{root}/examples/websocket_echo.py", "--port", "{port}"],
        "tags": {"ws"},
    },
    "uvloop": {
        "cmd": ["{python}", "{bench}/servers/uvloop_echo.py", "--port", "{port}"],
        "unix_cmd": ["{python}", "{bench}/servers/uvloop_echo.py", "--unix", "{unix}"],
        "tls_cmd": [
            *("{python}", "{bench}/servers/uvloop_echo.py", "--port", "{port}"),
            *("--certfile", "{certfile}", "--keyfile", "{keyfile}"),
        ],
        "tags": {"tcp", "pb", "unix", "tls"},
    },
    "asyncio": {
        "cmd": ["{python}", "{bench}/servers/asyncio_echo.py", "--port", "{port}"],
        "unix_cmd": ["{python}", "{bench}/servers/asyncio_echo.py", "--unix", "{unix}"],
        "tls_cmd": [
            *("{python}", "{bench}/servers/asyncio_echo.py", "--port", "{port}"),
            *("--certfile", "{certfile}", "--keyfile", "{keyfile}"),
        ],
        "tags": {"tcp", "pb", "unix", "tls"},
    },
    # The TLS floor: epoll + OpenSSL in C (built only where libssl-dev is installed).
    "c-tls": {
        "cmd": [
            *("{build}/c_tls_echo", "--port", "{port}"),
            *("--certfile", "{certfile}", "--keyfile", "{keyfile}"),
        ],
        "tags": {"tls"},
    },
    # TCP reverse proxies in front of c_echo (the driver starts it on {upstream}).
    "asyncio-proxy": {
        "cmd": [
            *("{python}", "{bench}/servers/asyncio_proxy.py", "--port", "{port}"),
            *("--upstream", "127.0.0.1:{upstream}"),
        ],
        "tags": {"proxy"},
    },
    "uvloop-proxy": {
        "cmd": [
            *("{python}", "{bench}/servers/asyncio_proxy.py", "--loop", "uvloop"),
            *("--port", "{port}", "--upstream", "127.0.0.1:{upstream}"),
        ],
        "tags": {"proxy"},
    },
    # gev's proxy example (outbound connections, backpressure both ways).
    "gev-proxy": {
        "cmd": [
            *("{python}", "{root}/examples/proxy.py", "--listen", "127.0.0.1:{port}"),
            *("--upstream", "127.0.0.1:{upstream}"),
        ],
        "tags": {"proxy"},
    },
    # The same proxy forwarding in its handlers (what examples/proxy.py did before relay).
    "gev-proxy-handlers": {
        "cmd": [
            *("{python}", "{bench}/servers/gev_proxy_handlers.py", "--listen"),
            *("127.0.0.1:{port}", "--upstream", "127.0.0.1:{upstream}"),
        ],
        "tags": {"proxy"},
    },
    "bare-python": {
        "cmd": ["{python}", "{bench}/servers/bare_epoll_echo.py", "--port", "{port}"],
        "tags": {"tcp", "pb"},
    },
    "c": {
        "cmd": ["{build}/c_echo", "--port", "{port}"],
        "unix_cmd": ["{build}/c_echo", "--unix", "{unix}"],
        "tags": {"tcp", "pb", "unix"},
    },
    "picows": {
        "cmd": ["{python}", "{bench}/servers/picows_echo.py", "--port", "{port}"],
        "tags": {"ws"},
    },
    "websockets": {
        "cmd": ["{python}", "{bench}/servers/websockets_echo.py", "--port", "{port}"],
        "tags": {"ws"},
    },
    "wsproto": {
        "cmd": ["{python}", "{bench}/servers/wsproto_asyncio_echo.py", "--port", "{port}"],
        "tags": {"ws"},
    },
    # The 1 ms-sleep service: gev's offload pool and async handlers against asyncio + uvloop
    # doing the same work the same way (32 threads for the thread variants).
    "gev-sleep-thread": {
        "cmd": [
            "{python}",
            "{bench}/servers/gev_sleep.py",
            "--work",
            "thread",
            "--threads",
            "32",
            "--port",
            "{port}",
        ],
        "tags": {"sleep"},
    },
    "gev-sleep-async": {
        "cmd": ["{python}", "{bench}/servers/gev_sleep.py", "--work", "async", "--port", "{port}"],
        "tags": {"sleep"},
    },
    "uvloop-sleep-thread": {
        "cmd": [
            "{python}",
            "{bench}/servers/uvloop_sleep.py",
            "--work",
            "thread",
            "--threads",
            "32",
            "--port",
            "{port}",
        ],
        "tags": {"sleep"},
    },
    "uvloop-sleep-async": {
        "cmd": [
            "{python}",
            "{bench}/servers/uvloop_sleep.py",
            "--work",
            "async",
            "--port",
            "{port}",
        ],
        "tags": {"sleep"},
    },
    "uvloop-sleep-streams": {
        "cmd": [
            "{python}",
            "{bench}/servers/uvloop_sleep.py",
            "--work",
            "async",
            "--style",
            "streams",
            "--port",
            "{port}",
        ],
        "tags": {"sleep"},
    },
}

# The cost of gev-metrics: the same echo with the plugin enabled, loaded but off, and absent,
# and absent with gev-core's traffic counters on (count; bench/servers/gev_metrics_echo.py).
# Opt-in: they run only when named in --servers.
_METRICS_ECHO = ["{python}", "{bench}/servers/gev_metrics_echo.py", "--port", "{port}"]
for _state in ("on", "off", "none", "count"):
    SERVERS[f"gev-metrics-{_state}"] = {
        "cmd": [*_METRICS_ECHO, "--metrics", _state],
        "tags": {"tcp"},
        "opt_in": True,
    }


@dataclass
class Scenario:
    name: str
    mode: str  # loadgen mode: raw | ws | pbframe | hold
    conns: int
    size: int
    inflight: int
    needs: str  # server tag required: tcp | ws | pb | unix | tls | proxy | sleep | any
    latency: bool = False  # loadgen --latency: p50/p99 of the round trips

    @property
    def unix(self) -> bool:
        """Over a Unix socket (the server's unix_cmd, loadgen --unix) instead of TCP."""
        return self.needs == "unix"

    @property
    def tls(self) -> bool:
        """Over TLS 1.3 (the server's tls_cmd, loadgen --tls verifying the certificate)."""
        return self.needs == "tls"

    @property
    def proxy(self) -> bool:
        """Through the server, a proxy, to a C echo upstream the driver starts."""
        return self.needs == "proxy"

    def describe(self) -> str:
        if self.mode == "hold":
            return "hold N idle connections, server RSS per connection"
        k = f", {self.inflight} in flight" if self.inflight > 1 else ", 1 in flight"
        over = " over a Unix socket" if self.unix else ""
        over += " over TLS 1.3" if self.tls else ""
        over += " through the proxy to a C echo" if self.proxy else ""
        what = "1 ms of work per request, " if self.needs == "sleep" else ""
        lat = ", latency recorded" if self.latency else ""
        return f"{what}{self.mode}: {self.conns} conns, {self.size} B{k}{over}{lat}"


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("50x64", "raw", 50, 64, 1, "tcp"),
        Scenario("500x64", "raw", 500, 64, 1, "tcp"),
        Scenario("50x4k", "raw", 50, 4096, 1, "tcp"),
        Scenario("50x64x16", "raw", 50, 64, 16, "tcp"),
        Scenario("unix50x64", "raw", 50, 64, 1, "unix"),
        Scenario("unix50x4k", "raw", 50, 4096, 1, "unix"),
        Scenario("1000x64", "raw", 1000, 64, 1, "tcp"),
        Scenario("2000x64", "raw", 2000, 64, 1, "tcp"),
        Scenario("pb50x64", "pbframe", 50, 64, 1, "pb"),
        Scenario("ws50x64", "ws", 50, 64, 1, "ws"),
        Scenario("ws50x4k", "ws", 50, 4096, 1, "ws"),
        Scenario("ws500x64", "ws", 500, 64, 1, "ws"),
        Scenario("ws2000x64", "ws", 2000, 64, 1, "ws"),
        Scenario("tls50x64", "raw", 50, 64, 1, "tls"),
        Scenario("tls50x4k", "raw", 50, 4096, 1, "tls"),
        Scenario("proxy50x64", "raw", 50, 64, 1, "proxy"),
        Scenario("proxy50x4k", "raw", 50, 4096, 1, "proxy"),
        Scenario("memory", "hold", 10000, 32, 1, "any"),
        Scenario("sleep1000", "pbframe", 1000, 64, 1, "sleep", latency=True),
        Scenario("sleep1000x8", "pbframe", 1000, 64, 8, "sleep", latency=True),
    ]
}
# Not run unless asked for: memory (slow), 1000x64 (for the idle-reaping overhead comparison)
# and the connection-scaling points of the charts (2000x64, ws500x64, ws2000x64), the
# Unix-socket echo (recorded next to TCP loopback when asked for), and the 1 ms-sleep service
# (its own servers: --servers gev-sleep-async,uvloop-sleep-async ...).
EXTRA_SCENARIOS = (
    "memory",
    "1000x64",
    "2000x64",
    "ws500x64",
    "ws2000x64",
    "sleep1000",
    "sleep1000x8",
)
# TLS and proxy scenarios also run only when named (their servers are apart).
DEFAULT_SCENARIOS = [
    s
    for s in SCENARIOS
    if s not in EXTRA_SCENARIOS
    and not (SCENARIOS[s].unix or SCENARIOS[s].tls or SCENARIOS[s].proxy)
]

# --------------------------------------------------------------------------
# process handling

_live: dict[int, subprocess.Popen] = {}  # pgid -> process, killed on exit


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def kill_group(p: subprocess.Popen, grace: float = 2.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left."""
    pgid = p.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(pgid, signal.SIGKILL)  # children that ignored SIGTERM
    except ProcessLookupError:
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log(f"warning: process group {pgid} did not die")
    _live.pop(pgid, None)


def kill_all() -> None:
    for p in list(_live.values()):
        kill_group(p, grace=0.5)


def _on_signal(signum, frame):
    kill_all()
    raise SystemExit(128 + signum)


@dataclass
class Sched:
    policy: str  # "fifo" or "normal"
    prio: int


def parse_cpus(text: str) -> frozenset[int]:
    """CPU list as taskset -c takes it: "0", "0,1", "0-3"."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    if not cpus:
        raise argparse.ArgumentTypeError(f"empty CPU list {text!r}")
    return frozenset(cpus)


def fmt_cpus(cpus: frozenset[int]) -> str:
    return ",".join(map(str, sorted(cpus)))


def make_preexec(cpu: frozenset[int] | None, sched: Sched, nofile: int):
    def preexec() -> None:
        try:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            want = max(soft, nofile)
            if hard != resource.RLIM_INFINITY and want > hard:
                try:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
                except (ValueError, OSError):
                    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            else:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass
        if cpu is not None:
            os.sched_setaffinity(0, cpu)  # == taskset -c CPUS
        if sched.policy == "fifo":
            try:  # == chrt -f PRIO
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(sched.prio))
            except OSError:
                pass

    return preexec


def server_env(src_path: bool) -> dict[str, str]:
    """Environment for servers: the repo's packages/*/src first on PYTHONPATH,
    so the servers import the gev code of this tree without an install."""
    env = dict(os.environ)
    if src_path:
        srcs = sorted(str(p) for p in (ROOT / "packages").glob("*/src") if p.is_dir())
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join(srcs + ([old] if old else []))
    return env


def spawn(
    cmd: list[str],
    cpu: frozenset[int] | None,
    sched: Sched,
    nofile: int,
    stdout,
    stderr,
    cwd: Path = ROOT,
    env: dict | None = None,
) -> subprocess.Popen:
    p = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=make_preexec(cpu, sched, nofile),
    )
    _live[p.pid] = p
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _probe(endpoint: int | str) -> None:
    if isinstance(endpoint, int):
        socket.create_connection(("127.0.0.1", endpoint), timeout=0.5).close()
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        s.connect(endpoint)


def wait_port(endpoint: int | str, proc: subprocess.Popen, timeout: float) -> None:
    """Wait until the server accepts on ``endpoint``: a TCP port, or a Unix socket path."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening")
        try:
            _probe(endpoint)
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not accept on {endpoint} within {timeout:.0f} s")


# --------------------------------------------------------------------------
# /proc sampling

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm may contain spaces/parentheses: split after the last ')'
    return data[data.rindex(")") + 2 :].split()


def group_cpu_seconds(pgid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of every process in process group pgid,
    including children they have reaped (cutime/cstime)."""
    user = system = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        f = _stat_fields(entry)
        # after comm: [0]=state [1]=ppid [2]=pgrp ... [11]=utime [12]=stime
        # [13]=cutime [14]=cstime
        if f is None or int(f[2]) != pgid:
            continue
        user += int(f[11]) + int(f[13])
        system += int(f[12]) + int(f[14])
    return user / CLK_TCK, system / CLK_TCK


def system_busy_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds summed over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = f.readline().split()
    v = [int(x) for x in parts[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def group_rss_bytes(pgid: int) -> int:
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        f = _stat_fields(entry)
        if f is None or int(f[2]) != pgid:
            continue
        try:
            with open(f"/proc/{entry}/status") as st:
                for line in st:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


# --------------------------------------------------------------------------
# build


TLS_DIR = BUILD / "tls"
CERTFILE = TLS_DIR / "cert.pem"
KEYFILE = TLS_DIR / "key.pem"


def _compile(cc: str, src: Path, out: Path, flags: list[str], libs: list[str]) -> bool:
    """Compile unless up to date with the same flags (kept in OUT.flags); False on failure."""
    stamp = out.with_name(out.name + ".flags")
    want = " ".join(flags + libs)
    if (
        out.exists()
        and out.stat().st_mtime >= src.stat().st_mtime
        and stamp.exists()
        and stamp.read_text() == want
    ):
        return True
    cmd = [cc, "-O2", "-Wall", "-Wextra", *flags, "-o", str(out), str(src), *libs]
    log("build: " + " ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        log(r.stderr.strip())
        return False
    stamp.write_text(want)
    return True


def tls_available(cc: str) -> bool:
    """Whether OpenSSL's headers and libraries (libssl-dev) are there to compile against."""
    probe = BUILD / "tls_probe.c"
    probe.write_text("#include <openssl/ssl.h>\nint main(void){return SSL_CTX_new(0)!=0;}\n")
    r = subprocess.run(
        [cc, "-o", str(BUILD / "tls_probe"), str(probe), "-lssl", "-lcrypto"],
        capture_output=True,
    )
    return r.returncode == 0


def make_certificate() -> None:
    """A self-signed ECDSA P-256 certificate for localhost/127.0.0.1 (what every TLS server of
    the benchmark serves, and what loadgen verifies against)."""
    if CERTFILE.exists() and KEYFILE.exists():
        return
    TLS_DIR.mkdir(parents=True, exist_ok=True)
    cmd = [
        *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-nodes", "-days", "3650", "-subj", "/CN=localhost"),
        *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        *("-keyout", str(KEYFILE), "-out", str(CERTFILE)),
    ]
    log("tls: " + " ".join(cmd))
    subprocess.run(cmd, check=True, capture_output=True)


def build(cc: str, tls: bool = False) -> bool:
    """Build loadgen and the C servers; with OpenSSL when available. Returns whether loadgen
    speaks TLS. ``tls``: TLS is needed (fail without OpenSSL) and the certificate is made."""
    BUILD.mkdir(exist_ok=True)
    with_tls = tls_available(cc)
    if tls and not with_tls:
        raise SystemExit("TLS scenarios need OpenSSL's headers: apt-get install libssl-dev")
    tls_flags = (["-DWITH_TLS"], ["-lssl", "-lcrypto"]) if with_tls else ([], [])
    ok = _compile(cc, BENCH / "loadgen.c", BUILD / "loadgen", *tls_flags)
    ok = ok and _compile(cc, BENCH / "servers" / "c_echo.c", BUILD / "c_echo", [], [])
    if with_tls:
        ok = ok and _compile(
            cc, BENCH / "servers" / "c_tls_echo.c", BUILD / "c_tls_echo", [], ["-lssl", "-lcrypto"]
        )
    if not ok:
        raise SystemExit("build failed")
    r = subprocess.run([str(BUILD / "loadgen"), "--selftest"], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("loadgen --selftest failed:\n" + r.stdout + r.stderr)
    if tls:
        make_certificate()
    return with_tls


# --------------------------------------------------------------------------
# one measurement


@dataclass
class RunResult:
    server: str
    scenario: str
    round: int
    ok: bool
    error: str = ""
    msgs_per_sec: float = 0.0
    messages: int = 0
    server_cpu_s: float = 0.0
    us_per_msg: float = 0.0
    user_us_per_msg: float = 0.0
    sys_us_per_msg: float = 0.0
    server_util: float = 0.0
    client_util: float = 0.0
    other_util: float = 0.0
    steal_util: float = 0.0
    per_conn_min: int = 0
    per_conn_max: int = 0
    rss_before: int = 0
    rss_after: int = 0
    bytes_per_conn: float = 0.0
    held: int = 0
    p50_us: float = 0.0
    p99_us: float = 0.0
    extra: dict = field(default_factory=dict)


class Runner:
    def __init__(self, args, servers: dict[str, dict]):
        self.args = args
        self.servers = servers
        self.sched = Sched(args.sched, args.prio)
        self.env = server_env(not args.no_src_path)
        self.logdir = BUILD / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._sockdir: str | None = None

    def server_cmd(
        self, name: str, endpoint: int | str, sc: Scenario | None = None, upstream: int = 0
    ) -> list[str]:
        unix = isinstance(endpoint, str)
        subst = {
            "python": self.args.python,
            "port": "" if unix else str(endpoint),
            "unix": endpoint if unix else "",
            "root": str(ROOT),
            "bench": str(BENCH),
            "build": str(BUILD),
            "certfile": str(CERTFILE),
            "keyfile": str(KEYFILE),
            "upstream": str(upstream),
        }
        entry = self.servers[name]
        key = "unix_cmd" if unix else "cmd"
        if sc is not None and sc.tls and "tls_cmd" in entry:
            key = "tls_cmd"
        return [a.format(**subst) for a in entry[key]]

    def start_upstream(self, tag: str) -> tuple[subprocess.Popen, int, object]:
        """The proxy scenarios' upstream: bench's C echo, pinned to --upstream-cpu."""
        port = free_port()
        logf = open(self.logdir / f"upstream.{tag}.log", "wb")  # noqa: SIM115 (closed by caller)
        p = spawn(
            [str(BUILD / "c_echo"), "--port", str(port)],
            self.args.upstream_cpu,
            self.sched,
            65536,
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_port(port, p, self.args.start_timeout)
        except Exception:
            kill_group(p)
            logf.close()
            raise
        return p, port, logf

    def endpoint(self, name: str, sc: Scenario) -> int | str:
        """A free TCP port, or for a Unix-socket scenario a fresh socket path (short: it must
        fit in sun_path, wherever the repository lives)."""
        if not sc.unix:
            return free_port()
        if self._sockdir is None:
            self._sockdir = tempfile.mkdtemp(prefix="gev-bench-")
        path = os.path.join(self._sockdir, f"{name}.sock")
        if os.path.exists(path):
            os.unlink(path)
        return path

    def start_server(self, name: str, tag: str, sc: Scenario, upstream: int = 0):
        port = self.endpoint(name, sc)
        cmd = self.server_cmd(name, port, sc, upstream)
        logf = open(self.logdir / f"{name}.{tag}.log", "wb")  # noqa: SIM115 (closed by caller)
        logf.write(("$ " + shlex.join(cmd) + "\n").encode())
        logf.flush()
        p = spawn(
            cmd,
            self.args.server_cpu,
            self.sched,
            65536,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        try:
            wait_port(port, p, self.args.start_timeout)
        except Exception:
            kill_group(p)
            logf.close()
            raise
        return p, port, logf

    def loadgen_cmd(self, sc: Scenario, port: int | str, conns: int | None = None) -> list[str]:
        a = self.args
        cmd = [
            str(BUILD / "loadgen"),
            "--unix" if isinstance(port, str) else "--port",
            str(port),
            "--mode",
            sc.mode,
            "--conns",
            str(conns or sc.conns),
            "--size",
            str(sc.size),
            "--inflight",
            str(sc.inflight),
            "--json",
        ]
        if sc.tls:
            cmd += ["--tls", "--tls-ca", str(CERTFILE), "--tls-servername", "localhost"]
        if sc.mode == "hold":
            cmd += ["--duration", str(a.hold_timeout), "--connect-timeout", str(a.hold_timeout)]
        else:
            cmd += ["--duration", str(a.duration), "--warmup", str(a.warmup), "--markers"]
        if sc.latency:
            cmd.append("--latency")
        return cmd

    def run_one(self, name: str, sc: Scenario, rnd: int) -> RunResult:
        tag = f"{sc.name}.r{rnd}"
        up = None
        try:
            if sc.proxy:
                up = self.start_upstream(tag)
            p, port, logf = self.start_server(name, tag, sc, up[1] if up else 0)
        except Exception as e:
            if up is not None:
                kill_group(up[0])
                up[2].close()
            return RunResult(name, sc.name, rnd, False, f"start: {e}")
        try:
            if sc.mode == "hold":
                return self._memory(name, sc, rnd, p, port)
            return self._throughput(name, sc, rnd, p, port)
        finally:
            kill_group(p)
            logf.close()
            if up is not None:
                kill_group(up[0])
                up[2].close()

    def _throughput(self, name, sc, rnd, server, port) -> RunResult:
        a = self.args
        cmd = self.loadgen_cmd(sc, port)
        res = RunResult(name, sc.name, rnd, False)
        lg = spawn(
            cmd,
            a.client_cpu,
            self.sched,
            sc.conns + 64,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        limit = a.warmup + a.duration + 60
        timer = threading.Timer(limit, lambda: kill_group(lg, grace=0.2))
        timer.start()
        samples = {}
        try:
            for raw in lg.stdout:
                line = raw.decode(errors="replace").strip()
                if line in ("window-start", "window-end"):
                    # sample as soon as loadgen says so (the driver runs at a
                    # higher priority than loadgen and the server)
                    t = time.monotonic()
                    cpu = group_cpu_seconds(server.pid)
                    busy, steal = system_busy_seconds()
                    samples[line] = (t, cpu, busy, steal)
                elif line.startswith("{"):
                    res.extra = json.loads(line)
            lg.wait()
            err = lg.stderr.read().decode(errors="replace").strip()
        finally:
            timer.cancel()
            kill_group(lg, grace=0.2)
        j = res.extra
        if lg.returncode != 0 or not j or j.get("errors", 1) != 0:
            res.error = (j.get("error") if j else "") or err or f"loadgen exit {lg.returncode}"
            if server.poll() is not None:
                res.error += f" (server exited with {server.returncode})"
            return res
        if "window-start" not in samples or "window-end" not in samples:
            res.error = "loadgen did not report its window"
            return res
        (t0, (u0, k0), b0, s0) = samples["window-start"]
        (t1, (u1, k1), b1, s1) = samples["window-end"]
        wall = t1 - t0
        res.ok = True
        res.messages = j["messages"]
        res.msgs_per_sec = j["msgs_per_sec"]
        res.per_conn_min, res.per_conn_max = j["per_conn_min"], j["per_conn_max"]
        latency = j.get("latency_us")
        if latency:
            res.p50_us, res.p99_us = latency["p50"], latency["p99"]
        res.server_cpu_s = (u1 - u0) + (k1 - k0)
        if res.messages:
            res.us_per_msg = res.server_cpu_s / res.messages * 1e6
            res.user_us_per_msg = (u1 - u0) / res.messages * 1e6
            res.sys_us_per_msg = (k1 - k0) / res.messages * 1e6
        res.server_util = res.server_cpu_s / wall
        res.client_util = j["client_cpu"]
        # CPU used by anything else on the machine during the window
        res.other_util = max(0.0, (b1 - b0) / wall - res.server_util - res.client_util)
        res.steal_util = (s1 - s0) / wall
        return res

    def _memory(self, name, sc, rnd, server, port) -> RunResult:
        a = self.args
        res = RunResult(name, sc.name, rnd, False)
        tags = self.servers[name]["tags"]
        proto = (
            "ws"
            if ("ws" in tags and "tcp" not in tags)
            else "pbframe"
            if ("pb" in tags and "tcp" not in tags)
            else "raw"
        )
        n = a.memory_conns

        def hold(conns: int, until_held) -> tuple[subprocess.Popen, bool, str]:
            cmd = [*self.loadgen_cmd(sc, port, conns), "--hold-proto", proto]
            lg = spawn(
                cmd,
                a.client_cpu,
                self.sched,
                conns + 64,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            timer = threading.Timer(a.hold_timeout + 30, lambda: kill_group(lg, grace=0.2))
            timer.start()
            held = False
            for raw in lg.stdout:
                if raw.decode(errors="replace").startswith("held "):
                    held = True
                    break
            timer.cancel()
            if not held:
                kill_group(lg, grace=5)
                return lg, False, lg.stderr.read().decode(errors="replace").strip()
            until_held()
            return lg, True, ""

        # warm-up: a few connections so lazy imports/allocations are done
        lg, ok, err = hold(min(100, n), lambda: None)
        kill_group(lg, grace=0.5)
        if not ok:
            res.error = f"warm-up hold failed: {err}"
            return res
        time.sleep(a.settle)
        res.rss_before = group_rss_bytes(server.pid)

        def settle():
            # the server has echoed on every connection; also wait until it
            # holds >= n descriptors and RSS stops moving
            deadline = time.monotonic() + 10
            while fd_count(server.pid) < n and time.monotonic() < deadline:
                time.sleep(0.05)
            last = -1
            while time.monotonic() < deadline:
                time.sleep(a.settle)
                r = group_rss_bytes(server.pid)
                if abs(r - last) < 64 * 1024:
                    break
                last = r

        lg, ok, err = hold(n, settle)
        try:
            if not ok:
                res.error = f"hold {n} failed: {err}"
                return res
            res.rss_after = group_rss_bytes(server.pid)
            res.held = n
            res.bytes_per_conn = (res.rss_after - res.rss_before) / n
            res.ok = True
            return res
        finally:
            kill_group(lg, grace=0.5)


# --------------------------------------------------------------------------
# reporting

CLIENT_BOUND = 0.90
CLIENT_BOUND_MARK = "†"


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def fmt_us(x: float) -> str:
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def report_scenario(
    sc: Scenario, results: list[RunResult], servers: list[str], baseline: str | None
) -> str:
    out = [f"### {sc.name} — {sc.describe()}", ""]
    rows = {s: [r for r in results if r.server == s and r.scenario == sc.name] for s in servers}
    rows = {s: rs for s, rs in rows.items() if rs}
    if not rows:
        return ""
    if sc.mode == "hold":
        out.append(
            "| server | bytes/conn (median) | min-max | RSS before | RSS with N conns | runs ok |"
        )
        out.append("|---|---:|---:|---:|---:|---:|")
        for s, rs in rows.items():
            ok = [r for r in rs if r.ok]
            if not ok:
                out.append(f"| {s} | FAILED: {rs[0].error[:80]} | | | | 0/{len(rs)} |")
                continue
            b = [r.bytes_per_conn for r in ok]
            out.append(
                f"| {s} | {median(b):,.0f} | {min(b):,.0f}-{max(b):,.0f} | "
                f"{median([r.rss_before for r in ok]) / 2**20:.1f} MiB | "
                f"{median([r.rss_after for r in ok]) / 2**20:.1f} MiB | "
                f"{len(ok)}/{len(rs)} |"
            )
        out.append("")
        out.append(f"N = {ok[0].held if ok else '?'} idle connections (one verified echo each).")
        out.append("")
        return "\n".join(out)

    base = None
    if baseline in rows:
        bok = [r for r in rows[baseline] if r.ok]
        if bok:
            base = (median([r.msgs_per_sec for r in bok]), median([r.us_per_msg for r in bok]))
    hdr = "| server | msgs/s (median) | min-max | "
    sep = "|---|---:|---:|"
    if sc.latency:
        hdr += "p50 µs | p99 µs | p99 min-max | "
        sep += "---:|---:|---:|"
    hdr += (
        "server CPU µs/msg | min-max | "
        "user µs/msg | sys µs/msg | server CPU | client CPU | other CPU |"
    )
    sep += "---:|---:|---:|---:|---:|---:|---:|"
    if base:
        hdr += f" msgs/s vs {baseline} | µs/msg vs {baseline} | paired vs {baseline} |"
        sep += "---:|---:|---:|"
        base_by_round = {r.round: r.msgs_per_sec for r in rows[baseline] if r.ok}
    out += [hdr, sep]
    flagged = False
    for s, rs in rows.items():
        ok = [r for r in rs if r.ok]
        if not ok:
            out.append(f"| {s} | FAILED: {rs[0].error[:100]} |" + " |" * (sep.count("|") - 3))
            continue
        rate = [r.msgs_per_sec for r in ok]
        us = [r.us_per_msg for r in ok]
        m_rate, m_us = median(rate), median(us)
        m_cli = median([r.client_util for r in ok])
        flag = CLIENT_BOUND_MARK if m_cli >= CLIENT_BOUND else ""
        if flag:
            flagged = True
        line = f"| {s} | {fmt_rate(m_rate)}{flag} | {fmt_rate(min(rate))}-{fmt_rate(max(rate))} | "
        if sc.latency:
            p99 = [r.p99_us for r in ok]
            line += (
                f"{median([r.p50_us for r in ok]):,.0f} | {median(p99):,.0f} | "
                f"{min(p99):,.0f}-{max(p99):,.0f} | "
            )
        line += (
            f"{fmt_us(m_us)} | {fmt_us(min(us))}-{fmt_us(max(us))} | "
            f"{fmt_us(median([r.user_us_per_msg for r in ok]))} | "
            f"{fmt_us(median([r.sys_us_per_msg for r in ok]))} | "
            f"{median([r.server_util for r in ok]) * 100:.0f}% | "
            f"{m_cli * 100:.0f}% | "
            f"{median([r.other_util for r in ok]) * 100:.0f}% |"
        )
        if base:
            # Median of the per-round ratios: each round runs the servers back to back, so
            # this cancels the machine's slow drifts that the ratio of medians keeps.
            paired = [
                r.msgs_per_sec / base_by_round[r.round] for r in ok if base_by_round.get(r.round)
            ]
            line += (
                f" {ratio(m_rate, base[0])} | {ratio(m_us, base[1])} |"
                f" {median(paired):.2f}x ({min(paired):.2f}-{max(paired):.2f}) |"
                if paired
                else f" {ratio(m_rate, base[0])} | {ratio(m_us, base[1])} | - |"
            )
        if len(ok) < len(rs):
            first_err = next(r.error for r in rs if not r.ok)[:60]
            line += f" ({len(rs) - len(ok)} failed run(s): {first_err})"
        out.append(line)
    out.append("")
    if flagged:
        out.append(
            f"{CLIENT_BOUND_MARK} loadgen used >= {CLIENT_BOUND * 100:.0f}% of its CPU: "
            "client-bound, so msgs/s understates that server's capacity; "
            "compare server CPU µs/msg instead."
        )
        out.append("")
    return "\n".join(out)


def env_info(python: str, env: dict[str, str] | None = None) -> dict:
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["cpus"] = os.cpu_count()
    info["kernel"] = platform.release()
    probe = (
        "import sys, json\n"
        "from importlib import metadata\n"
        "v = {}\n"
        "for p in ('uvloop', 'picows', 'websockets', 'wsproto', 'aiofastnet'):\n"
        "    try: v[p] = metadata.version(p)\n"
        "    except Exception: pass\n"
        "gev = {}\n"
        "for p in ('gev_core', 'gev_ringbuffer', 'gev_timers', 'gev_protobuf', 'gev_websocket'):\n"
        "    try: gev[p] = bool(getattr(__import__(p), 'COMPILED', False))\n"
        "    except Exception: pass\n"
        "print(json.dumps({'python': sys.version.split()[0], "
        "'impl': sys.implementation.name, 'packages': v, 'gev_compiled': gev}))\n"
    )
    try:
        r = subprocess.run(
            [python, "-c", probe], capture_output=True, text=True, timeout=30, env=env
        )
        info.update(json.loads(r.stdout))
    except Exception as e:
        info["python"] = f"? ({e})"
    try:
        cc = subprocess.run(
            [os.environ.get("CC", "gcc"), "--version"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()
        info["cc"] = cc[0] if cc else "?"
    except Exception:
        info["cc"] = "?"
    return info


# --------------------------------------------------------------------------
# main


def portable(words: list[str]) -> list[str]:
    """A command as recorded in reports: paths inside the repository made relative to it, other
    absolute paths (an interpreter, a temporary file) cut to their last component."""
    out = []
    for word in words:
        path = Path(word)
        if path.is_absolute():
            try:
                word = str(path.resolve().relative_to(ROOT))
            except ValueError:
                word = path.name
        out.append(word)
    return out


def parse_server_override(spec: str) -> tuple[str, dict]:
    """NAME[:tag,tag]=CMD  (CMD is split like a shell would)."""
    if "=" not in spec:
        raise SystemExit(f"--server wants NAME=CMD, got {spec!r}")
    name, cmd = spec.split("=", 1)
    tags = {"tcp", "pb"}
    if ":" in name:
        name, t = name.split(":", 1)
        tags = {x for x in t.split(",") if x}
    return name, {"cmd": shlex.split(cmd), "tags": tags}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Echo-server benchmark driver (see bench/README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--servers", help="comma-separated server names (default: all registered)")
    ap.add_argument(
        "--scenarios",
        help="comma-separated scenario names "
        f"(default: {','.join(DEFAULT_SCENARIOS)};"
        f" also: {','.join(s for s in SCENARIOS if s not in DEFAULT_SCENARIOS)})",
    )
    ap.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="NAME[:TAGS]=CMD",
        help="add/override a server; CMD may use {python} {port} {root} "
        "{bench} {build}; TAGS default tcp,pb",
    )
    ap.add_argument("--python", default=sys.executable, help="Python for the Python servers")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (servers interleaved per round)")
    ap.add_argument("--duration", type=float, default=4.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=1.0, help="warmup seconds per run")
    ap.add_argument("--baseline", default="uvloop", help="server the ratios are relative to")
    ap.add_argument(
        "--server-cpu", type=parse_cpus, default="0", help="CPU(s) the server is pinned to: 0,1"
    )
    ap.add_argument("--client-cpu", type=parse_cpus, default="1", help="CPU(s) for loadgen")
    ap.add_argument(
        "--upstream-cpu",
        type=parse_cpus,
        default="1",
        help="CPU(s) of the proxy scenarios' upstream C echo (default: loadgen's core, so that "
        "the proxy under test has CPU 0 to itself)",
    )
    ap.add_argument(
        "--sched",
        choices=["fifo", "normal"],
        default="fifo",
        help="scheduling class for server and loadgen (fifo needs root/CAP_SYS_NICE)",
    )
    ap.add_argument("--prio", type=int, default=10, help="SCHED_FIFO priority for server/loadgen")
    ap.add_argument("--memory-conns", type=int, default=10000, help="connections for 'memory'")
    ap.add_argument(
        "--hold-timeout",
        type=float,
        default=120.0,
        help="upper bound for establishing/holding the memory connections",
    )
    ap.add_argument("--settle", type=float, default=0.5, help="seconds to let RSS settle")
    ap.add_argument("--start-timeout", type=float, default=20.0, help="server start timeout")
    ap.add_argument("--markdown", metavar="FILE", help="also append the report to FILE")
    ap.add_argument("--json-out", metavar="FILE", help="write every run's raw result as JSON")
    ap.add_argument(
        "--no-src-path",
        action="store_true",
        help="do not put packages/*/src on the servers' PYTHONPATH",
    )
    ap.add_argument("--cc", default=os.environ.get("CC", "gcc"), help="C compiler")
    ap.add_argument("--list", action="store_true", help="list servers and scenarios and exit")
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="check the arguments and print the plan (servers, scenarios, rounds), run nothing",
    )
    args = ap.parse_args(argv)

    servers = dict(SERVERS)
    for spec in args.server:
        name, entry = parse_server_override(spec)
        servers[name] = entry

    if args.list:
        for n, e in servers.items():
            print(f"server   {n:12s} tags={','.join(sorted(e['tags']))}  {shlex.join(e['cmd'])}")
        for n, s in SCENARIOS.items():
            print(f"scenario {n:12s} needs={s.needs:4s} {s.describe()}")
        return 0

    sel_servers = (
        args.servers.split(",")
        if args.servers
        else [n for n, e in servers.items() if not e.get("opt_in")]
    )
    for s in sel_servers:
        if s not in servers:
            raise SystemExit(f"unknown server {s!r}; known: {', '.join(servers)}")
    sel_scen = args.scenarios.split(",") if args.scenarios else list(DEFAULT_SCENARIOS)
    for s in sel_scen:
        if s not in SCENARIOS:
            raise SystemExit(f"unknown scenario {s!r}; known: {', '.join(SCENARIOS)}")
    if args.repeat < 1 or args.duration <= 0 or args.warmup < 0:
        raise SystemExit("--repeat must be >= 1, --duration > 0, --warmup >= 0")

    # skip servers whose script or binary does not exist
    runnable = []
    for s in sel_servers:
        subst = {
            "python": args.python,
            "port": "0",
            "unix": "",
            "root": str(ROOT),
            "bench": str(BENCH),
            "build": str(BUILD),
            "certfile": str(CERTFILE),
            "keyfile": str(KEYFILE),
            "upstream": "0",
        }
        argv0 = [a.format(**subst) for a in servers[s]["cmd"]]
        missing = [a for a in argv0[1:] if a.endswith(".py") and not (ROOT / a).exists()]
        if missing:
            log(f"warning: skipping server {s!r}: {missing[0]} does not exist")
            continue
        runnable.append(s)

    ncpu = os.cpu_count() or 1
    for c in args.server_cpu | args.client_cpu | args.upstream_cpu:
        if c >= ncpu:
            raise SystemExit(f"CPU {c} does not exist (this machine has {ncpu})")

    # jobs: round-robin, rotating the server order each round
    plan = []
    for rnd in range(args.repeat):
        for scn in sel_scen:
            sc = SCENARIOS[scn]
            elig = [
                s
                for s in runnable
                if sc.needs == "any"
                or (sc.needs in servers[s]["tags"] and (not sc.unix or "unix_cmd" in servers[s]))
            ]
            if not elig:
                continue
            k = rnd % len(elig)
            for s in elig[k:] + elig[:k]:
                plan.append((rnd, sc, s))
    if not plan:
        log("nothing to run (no server matches the selected scenarios)")
        return 1
    est = sum((args.warmup + args.duration + 1.5) if sc.mode != "hold" else 15 for _, sc, _ in plan)
    log(f"{len(plan)} runs, about {est / 60:.1f} min")
    if args.dry_run:
        for rnd, sc, s in plan:
            print(f"r{rnd} {sc.name} {s}")
        return 0

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    build(args.cc, tls=any(SCENARIOS[s].tls for s in sel_scen))

    if args.sched == "fifo":
        # the driver itself runs above server and loadgen so that it samples
        # /proc right when loadgen announces the window
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(min(args.prio + 10, 99)))
        except OSError as e:
            log(f"warning: cannot use SCHED_FIFO ({e}); falling back to --sched normal")
            args.sched = "normal"

    runner = Runner(args, servers)
    results: list[RunResult] = []
    t_start = time.time()
    try:
        for i, (rnd, sc, s) in enumerate(plan, 1):
            r = runner.run_one(s, sc, rnd)
            results.append(r)
            if not r.ok:
                status = "FAILED " + r.error
            elif sc.mode == "hold":
                status = (
                    f"{r.bytes_per_conn:,.0f} B/conn "
                    f"(RSS {r.rss_before / 2**20:.1f} -> {r.rss_after / 2**20:.1f} MiB)"
                )
            else:
                status = (
                    f"{r.msgs_per_sec:>10,.0f} msgs/s  {r.us_per_msg:6.2f} us/msg "
                    f"(user {r.user_us_per_msg:5.2f})  "
                    f"srv {r.server_util * 100:3.0f}%  cli {r.client_util * 100:3.0f}%  "
                    f"other {r.other_util * 100:3.0f}%"
                )
                if sc.latency:
                    status += f"  p50 {r.p50_us:,.0f} us  p99 {r.p99_us:,.0f} us"
            log(f"[{i}/{len(plan)}] r{rnd} {sc.name:9s} {s:12s} {status}")
    finally:
        kill_all()
        if runner._sockdir is not None:
            shutil.rmtree(runner._sockdir, ignore_errors=True)

    info = env_info(args.python, server_env(not args.no_src_path))
    lines = ["## Echo benchmark " + datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), ""]
    shown = ["python", os.path.relpath(__file__, ROOT)] + (
        argv if argv is not None else sys.argv[1:]
    )
    shown = portable(shown)
    lines.append("Command (from the repository root): `" + shlex.join(shown) + "`")
    lines.append("")
    pk = ", ".join(f"{k} {v}" for k, v in info.get("packages", {}).items()) or "none"
    lines.append(
        f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}, "
        f"took {(time.time() - t_start) / 60:.1f} min"
    )
    lines.append(
        f"- CPU: {info.get('cpu', '?')}, {info.get('cpus')} CPUs; kernel {info.get('kernel')}"
    )
    lines.append(f"- Python (servers): {info.get('impl', '')} {info.get('python')}; packages: {pk}")
    compiled = info.get("gev_compiled") or {}
    if compiled:
        lines.append(
            "- gev: "
            + ", ".join(f"{k} {'compiled' if v else 'pure'}" for k, v in sorted(compiled.items()))
        )
    lines.append(f"- Compiler: {info.get('cc')} (-O2)")
    lines.append(
        f"- Server on CPU {fmt_cpus(args.server_cpu)}, loadgen on CPU {fmt_cpus(args.client_cpu)}, "
        f"scheduling: {args.sched}" + (f" (SCHED_FIFO {args.prio})" if args.sched == "fifo" else "")
    )
    if any(SCENARIOS[s].tls for s in sel_scen):
        lines.append(
            "- TLS: TLS 1.3, every server serves the same self-signed ECDSA P-256 certificate"
            " with its TLS library's defaults; loadgen (OpenSSL) verifies it"
        )
    if any(SCENARIOS[s].proxy for s in sel_scen):
        lines.append(
            f"- Proxy: loadgen -> proxy (CPU {fmt_cpus(args.server_cpu)}) -> c_echo upstream"
            f" (CPU {fmt_cpus(args.upstream_cpu)}); µs/msg counts the proxy's CPU only"
        )
    if any(SCENARIOS[s].mode != "hold" for s in sel_scen):
        lines.append(
            f"- {args.repeat} round(s), servers interleaved; each run "
            f"{args.warmup:g} s warmup + {args.duration:g} s measured; "
            f"µs/msg = server utime+stime over the window / messages echoed"
        )
    if "memory" in sel_scen:
        lines.append(
            f"- memory: {args.repeat} round(s); {args.memory_conns} idle connections, "
            "RSS (VmRSS of the server's process group) after a 100-connection warm-up "
            "and with all connections held"
        )
    lines.append("")
    for scn in sel_scen:
        sec = report_scenario(SCENARIOS[scn], results, runnable, args.baseline)
        if sec:
            lines.append(sec)
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write(text + "\n")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(
                {
                    "env": info,
                    "argv": portable(sys.argv),
                    "command": shlex.join(shown),
                    "date": datetime.datetime.now().isoformat(timespec="seconds"),
                    "sched": args.sched,
                    "server_cpu": fmt_cpus(args.server_cpu),
                    "client_cpu": fmt_cpus(args.client_cpu),
                    "scenarios": {n: SCENARIOS[n].__dict__ for n in sel_scen},
                    "results": [r.__dict__ for r in results],
                },
                f,
                indent=1,
                default=list,
            )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
