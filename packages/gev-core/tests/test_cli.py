"""The ``gev`` command and worker processes, end to end: real processes on real sockets.

Every process a test starts runs in a session of its own and is killed (the whole process group,
then any worker pid seen) when the test ends, whatever happened.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gev_core import serve_workers
from gev_core._cli import main
from gev_core._workers import WorkerChannel

ROOT = Path(__file__).resolve().parents[3]
SRC_DIRS = [ROOT / "packages" / "gev-core" / "src", ROOT / "packages" / "gev-ringbuffer" / "src"]
# Generous: a Python start-up can take seconds on a loaded CI machine.
BOOT_TIMEOUT = 60.0
LINUX = sys.platform.startswith("linux")

APP = """
import os
from pathlib import Path

from gev_core import Handler

MARKERS = os.environ.get("GEV_TEST_MARKERS")
VERSION = "v1"  # rewritten by the rolling-restart tests: which code a worker runs


class Echo(Handler):
    def on_message(self, conn, ctx, data):
        if bytes(data) == b"pid\\n":
            return b"%d\\n" % os.getpid()
        if bytes(data) == b"version\\n":
            return VERSION.encode() + b"\\n"
        if bytes(data) == b"crash\\n":
            os._exit(3)
        return data

    def on_close(self, conn):
        if MARKERS:  # which connections this process closed, for the graceful-stop tests
            port = conn.peer_addr.rpartition(":")[2]
            Path(MARKERS, f"{os.getpid()}-{port}").touch()


class Brackets(Handler):
    def on_message(self, conn, ctx, data):
        return b"[" + bytes(data) + b"]"


echo = Echo()


def make_echo():
    return Echo()


not_a_handler = 42


class NoMessage:
    pass


def make_nothing():
    return "nothing"
"""


def _env(extra_path: list[Path] | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # Works from a source tree and from an install alike: the tree's code comes first.
    paths = [str(p) for p in [*(extra_path or []), *SRC_DIRS]]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by its new parent) is dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if LINUX:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rpartition(")")[2].split()[0] not in ("Z", "X")
    return True


def _wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class Runner:
    """Starts ``python -m gev_core ...`` processes and guarantees they are gone afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []
        self.worker_pids: set[int] = set()
        (tmp_path / "app.py").write_text(APP)
        self.markers = tmp_path / "markers"
        self.markers.mkdir()
        self._logs = 0

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self._logs += 1
        log = (self.tmp_path / f"stderr-{self._logs}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "gev_core", *args],
            cwd=self.tmp_path,
            env=env or _env(GEV_TEST_MARKERS=str(self.markers)),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    @staticmethod
    def stderr(proc: subprocess.Popen[bytes]) -> str:
        return Path(proc.log_path).read_text()  # type: ignore[attr-defined]

    def wait_serving(self, proc: subprocess.Popen[bytes], port: int) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"exited with {proc.returncode}:\n{self.stderr(proc)}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"nothing listening on {port}:\n{self.stderr(proc)}")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(10)
        for pid in self.worker_pids:  # orphans left by a failed test (not in the group any more?)
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    r = Runner(tmp_path)
    try:
        yield r
    finally:
        r.close()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_line(sock: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError(f"closed after {buf!r}")
        buf += chunk
    return buf


def _ask_pid(sock: socket.socket) -> int:
    sock.sendall(b"pid\n")
    return int(_recv_line(sock))


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout)


# ------------------------------------------------------------------------------- gev serve


@pytest.mark.parametrize(
    "attr", ["Echo", "echo", "make_echo"], ids=["class", "instance", "factory"]
)
def test_serve_echoes_and_stops_gracefully_on_sigterm(runner: Runner, attr: str) -> None:
    port = _free_port()
    proc = runner.start("serve", f"app:{attr}", "--address", f"127.0.0.1:{port}")
    runner.wait_serving(proc, port)
    with _connect(port) as sock:
        sock.sendall(b"hello\n")
        assert _recv_line(sock) == b"hello\n"
        local_port = sock.getsockname()[1]
        assert _ask_pid(sock) == proc.pid
        assert _stop(proc) == 0
        assert sock.recv(10) == b""  # closed by the server as it stopped
    assert (runner.markers / f"{proc.pid}-{local_port}").exists(), "on_close did not run"
    err = runner.stderr(proc)
    assert f"serving app:{attr} (pid {proc.pid})" in err
    assert f"listening on 127.0.0.1:{port} (protocol default, 1 loop)" in err
    assert "received SIGTERM" in err


def test_serve_sigint_stops_too(runner: Runner) -> None:
    port = _free_port()
    proc = runner.start("serve", "app:Echo", "--address", f"127.0.0.1:{port}")
    runner.wait_serving(proc, port)
    assert _stop(proc, signal.SIGINT) == 0


def test_protocol_line_uses_the_builtin_line_framer(runner: Runner) -> None:
    port = _free_port()
    proc = runner.start(
        "serve", "app:Brackets", "--protocol", "line", "--address", f"127.0.0.1:{port}"
    )
    runner.wait_serving(proc, port)
    with _connect(port) as sock:
        sock.sendall(b"hello\nworld\n")
        got = b""
        while got.count(b"\n") < 2:
            got += sock.recv(4096)
        assert got == b"[hello]\n[world]\n"
    assert _stop(proc) == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuchmodule:Echo", "could not import module 'nosuchmodule'"),
        ("app:Missing", "module 'app' has no attribute 'Missing'"),
        ("app:not_a_handler", "'app:not_a_handler' is a int, not a handler"),
        ("app:NoMessage", "'app:NoMessage' is a class without an on_message"),
        ("app:make_nothing", "the factory 'app:make_nothing' returned str, not a handler"),
        ("app", "must look like MODULE:ATTR"),
    ],
)
def test_bad_application_exits_2_with_one_line(runner: Runner, spec: str, message: str) -> None:
    proc = runner.start("serve", spec, "--address", f"127.0.0.1:{_free_port()}")
    assert proc.wait(BOOT_TIMEOUT) == 2
    err = runner.stderr(proc)
    assert message in err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("gev: error:")] == [
        next(line for line in err.splitlines() if message in line)
    ]


def test_unknown_protocol_exits_2(runner: Runner) -> None:
    proc = runner.start("serve", "app:Echo", "--protocol", "nope")
    assert proc.wait(BOOT_TIMEOUT) == 2
    assert "unknown protocol 'nope'" in runner.stderr(proc)


def test_address_in_use_exits_1(runner: Runner) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = runner.start("serve", "app:Echo", "--address", f"127.0.0.1:{port}")
        assert proc.wait(BOOT_TIMEOUT) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in runner.stderr(proc)


def test_app_dir_puts_the_module_directory_first(runner: Runner, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "app2.py").write_text(APP)
    port = _free_port()
    proc = runner.start(
        "serve", "app2:Echo", "--app-dir", str(other), "--address", f"127.0.0.1:{port}"
    )
    runner.wait_serving(proc, port)
    assert _stop(proc) == 0


# --------------------------------------------------------------------------- plugins, version


def test_plugins_lists_the_builtin_plugin_and_its_protocols(capsys: pytest.CaptureFixture[str]):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "builtin  gev-core" in out
    assert "gev_register_protocols" in out
    for name in ("default", "length-field", "line"):
        assert f"  {name} " in out


def test_plugins_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    builtin = next(p for p in data["plugins"] if p["name"] == "builtin")
    assert builtin["builtin"] is True
    assert builtin["distribution"] == "gev-core"
    assert builtin["build"] in ("pure", "compiled")
    assert {"default", "length-field", "line"} <= set(builtin["protocols"])
    by_name = {p["name"]: p for p in data["protocols"]}
    assert by_name["line"] == {
        "name": "line",
        "plugin": "builtin",
        "class": "gev_core._protocol.LineProtocol",
    }


def test_version_lists_gev_core(capsys: pytest.CaptureFixture[str]) -> None:
    from gev_core import __version__

    assert main(["--version"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # Each gev package says whether it runs compiled code or pure Python.
    assert lines[0] in (f"gev-core {__version__} (pure)", f"gev-core {__version__} (compiled)")
    assert all(line.startswith("gev-") and len(line.split()) in (2, 3) for line in lines)
    build = dict(line.split(" ", 1) for line in lines)
    for name in ("gev-ringbuffer", "gev-core"):
        module = importlib.import_module(name.replace("-", "_"))
        assert build[name].endswith("(compiled)" if module.COMPILED else "(pure)")


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().err


def _fake_plugin(tmp_path: Path, source: str) -> Path:
    site = tmp_path / "site"
    (site / "gev_cli_test_plugin").mkdir(parents=True)
    (site / "gev_cli_test_plugin" / "__init__.py").write_text(textwrap.dedent(source))
    info = site / "gev_cli_test_plugin-7.7.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: gev-cli-test-plugin\nVersion: 7.7\n"
    )
    (info / "entry_points.txt").write_text("[gev]\nclitest = gev_cli_test_plugin\n")
    return site


def test_broken_plugin_stops_gev_serve_with_its_name_and_exit_1(
    runner: Runner, tmp_path: Path
) -> None:
    site = _fake_plugin(tmp_path, "raise ImportError('needs libfoo')\n")
    proc = runner.start("serve", "app:Echo", env=_env([site]))
    assert proc.wait(BOOT_TIMEOUT) == 1
    err = runner.stderr(proc)
    assert (
        "gev plugin 'clitest' (gev_cli_test_plugin) from distribution gev-cli-test-plugin 7.7"
        in err
    )
    assert "needs libfoo" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("raise ImportError('needs libfoo')\n", "failed to import: ImportError: needs libfoo"),
        (
            "from gev_core import hookimpl\n\n@hookimpl\ndef gev_regster_protocols():\n"
            "    return []\n",
            "unknown hook 'gev_regster_protocols'",
        ),
        (
            "from gev_core import hookimpl\n\n@hookimpl\ndef gev_register_protocols():\n"
            "    raise RuntimeError('boom')\n",
            "gev_register_protocols failed: RuntimeError: boom",
        ),
    ],
    ids=["import", "misspelled-hook", "registration"],
)
def test_plugins_lists_a_broken_plugin_with_its_error_and_exits_0(
    runner: Runner, tmp_path: Path, source: str, error: str
) -> None:
    site = _fake_plugin(tmp_path, source)
    proc = runner.start("plugins", env=_env([site]))
    assert proc.wait(BOOT_TIMEOUT) == 0
    out = runner.stderr(proc)  # stdout and stderr share the log
    assert "clitest  gev-cli-test-plugin 7.7  (entry point gev_cli_test_plugin)  BROKEN" in out
    assert error in out
    assert "builtin  gev-core" in out  # the others are listed as usual
    assert "gev: warning: 1 broken plugin(s): clitest" in out
    assert "Traceback" not in out

    proc = runner.start("plugins", "--json", env=_env([site]))
    assert proc.wait(BOOT_TIMEOUT) == 0
    text = runner.stderr(proc)
    data = json.loads(text[: text.rindex("}") + 1])
    by_name = {p["name"]: p for p in data["plugins"]}
    assert by_name["clitest"]["broken"] is True
    assert error in by_name["clitest"]["error"]
    assert by_name["builtin"]["broken"] is False and by_name["builtin"]["error"] is None


def test_plugins_into_a_closed_pipe_prints_no_traceback(tmp_path: Path) -> None:
    # What "gev plugins --json | head -1" does once head has exited: the reader is gone before
    # the output is written, so every write fails with EPIPE.
    proc = subprocess.Popen(
        [sys.executable, "-m", "gev_core", "plugins", "--json"],
        cwd=tmp_path,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(BOOT_TIMEOUT) == 141  # as a shell reports a process killed by SIGPIPE
    assert err == ""


def test_plugins_piped_into_head_shows_the_first_line_only(tmp_path: Path) -> None:
    cmd = f"{sys.executable} -m gev_core plugins --json | head -n 1"
    proc = subprocess.run(
        ["sh", "-c", cmd], cwd=tmp_path, env=_env(), capture_output=True, timeout=BOOT_TIMEOUT
    )
    assert proc.returncode == 0
    assert proc.stdout == b"{\n"
    assert b"Traceback" not in proc.stderr and b"BrokenPipe" not in proc.stderr


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("lines", "did you mean 'line'?"),
        ("length_field", "did you mean 'length-field'?"),
    ],
)
def test_misspelled_protocol_gets_a_did_you_mean(runner: Runner, name: str, hint: str) -> None:
    proc = runner.start("serve", "app:Echo", "--protocol", name)
    assert proc.wait(BOOT_TIMEOUT) == 2
    err = runner.stderr(proc)
    assert f"unknown protocol {name!r}" in err and hint in err


def test_did_you_mean_names_the_package_of_a_protocol_not_installed() -> None:
    from gev_core import PluginError, ProtocolRegistry, get_plugin_manager

    registry = ProtocolRegistry(get_plugin_manager(autoload=False))
    with pytest.raises(PluginError, match=r"did you mean 'websocket'\? \(install it with: pip"
                       r" install gev-websocket\)"):  # fmt: skip
        registry.get("websoket")
    with pytest.raises(PluginError) as info:
        registry.get("xyzzy")
    assert "did you mean" not in str(info.value)


def test_plugin_options_reach_the_parser_and_the_configuration(
    runner: Runner, tmp_path: Path
) -> None:
    site = _fake_plugin(
        tmp_path,
        """
        import os
        from pathlib import Path

        from gev_core import hookimpl

        @hookimpl
        def gev_addoption(parser):
            group = parser.add_argument_group("clitest")
            group.add_argument("--clitest-greeting", default="hi", help="the greeting")

        @hookimpl
        def gev_configure(config):
            opts = config.options
            Path(os.environ["CLITEST_OUT"]).write_text(
                f"{opts['clitest_greeting']} {opts['app']} {opts['num_loops']}"
            )
        """,
    )
    out = tmp_path / "configured.txt"
    env = _env([site], CLITEST_OUT=str(out))
    helper = runner.start("serve", "--help", env=env)
    assert helper.wait(BOOT_TIMEOUT) == 0
    assert "--clitest-greeting" in runner.stderr(helper)

    port = _free_port()
    proc = runner.start(
        "serve", "app:Echo", "--clitest-greeting", "hello", "--address", f"127.0.0.1:{port}",
        env=env,
    )  # fmt: skip
    runner.wait_serving(proc, port)
    assert out.read_text() == "hello app:Echo 1"
    assert _stop(proc) == 0


# ----------------------------------------------------------------------------------- workers


Conn = tuple[int, socket.socket]  # (pid of the worker that answered, client socket)


def _pids_until(port: int, want: Callable[[set[int]], bool], keep: list[Conn]) -> set[int]:
    """Open connections (kept open in ``keep``) until the pids answering satisfy ``want``."""
    seen: set[int] = set()
    deadline = time.monotonic() + BOOT_TIMEOUT
    while not want(seen):
        if time.monotonic() > deadline:
            raise AssertionError(f"only saw worker pids {seen}")
        try:
            sock = _connect(port)
        except OSError:
            time.sleep(0.05)
            continue
        try:
            pid = _ask_pid(sock)
        except (OSError, EOFError, ValueError):  # a dying worker's backlog, mid-restart
            sock.close()
            time.sleep(0.05)
            continue
        seen.add(pid)
        keep.append((pid, sock))
        if len(keep) > 400:  # stay far from fd limits whatever the balancing does
            keep.pop(0)[1].close()
    return seen


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX only")
@pytest.mark.parametrize("sharing", ["reuse-port", "inherit"])
def test_workers_share_the_port_restart_and_stop_gracefully(runner: Runner, sharing: str) -> None:
    if sharing == "reuse-port" and not LINUX:
        pytest.skip("SO_REUSEPORT balances only on Linux")
    port = _free_port()
    sup = runner.start(
        "serve", "app:Echo", "--workers", "2", "--port-sharing", sharing,
        "--address", f"127.0.0.1:{port}",
    )  # fmt: skip
    runner.wait_serving(sup, port)
    conns: list[Conn] = []
    try:
        # Both workers get connections.
        first = _pids_until(port, lambda s: len(s) >= 2, conns)
        runner.worker_pids |= first
        assert len(first) == 2 and sup.pid not in first

        # A worker killed outright is replaced; the port keeps serving meanwhile.
        victim, survivor = sorted(first)
        os.kill(victim, signal.SIGKILL)
        _wait_until(lambda: not _alive(victim), 10, f"worker {victim} to die")
        for pid, c in conns:
            if pid == victim:
                c.close()
        conns = [(pid, c) for pid, c in conns if pid != victim]
        fresh = _pids_until(port, lambda s: bool(s - first), conns)
        runner.worker_pids |= fresh
        (replacement,) = fresh - first
        workers = {survivor, replacement}
        assert sup.poll() is None
        err = runner.stderr(sup)
        assert f"(pid {victim}) was killed by SIGKILL" in err

        # SIGTERM to the supervisor: every worker drains, runs on_close and exits.
        open_conns = [(pid, c.getsockname()[1]) for pid, c in conns]
        assert _stop(sup) == 0
        for pid in workers:
            _wait_until(lambda pid=pid: not _alive(pid), 10, f"worker {pid} to exit")
        for pid, local_port in open_conns:
            assert (runner.markers / f"{pid}-{local_port}").exists(), (pid, local_port)
        assert "all workers stopped" in runner.stderr(sup)
    finally:
        for _, c in conns:
            c.close()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX only")
def test_workers_do_not_outlive_a_killed_supervisor(runner: Runner) -> None:
    port = _free_port()
    sup = runner.start("serve", "app:Echo", "--workers", "2", "--address", f"127.0.0.1:{port}")
    runner.wait_serving(sup, port)
    conns: list[Conn] = []
    try:
        pids = _pids_until(port, lambda s: len(s) >= 2, conns)
        runner.worker_pids |= pids
        os.kill(sup.pid, signal.SIGKILL)  # no chance to clean up: the workers must notice
        sup.wait(10)
        for pid in pids:
            _wait_until(lambda pid=pid: not _alive(pid), 15, f"orphaned worker {pid} to exit")
    finally:
        for _, c in conns:
            c.close()


def test_workers_with_a_bad_application_stop_with_its_exit_code(runner: Runner) -> None:
    proc = runner.start("serve", "app:Missing", "--workers", "3", "--address", "127.0.0.1:0")
    assert proc.wait(BOOT_TIMEOUT * 2) == 2
    err = runner.stderr(proc)
    # Worker 0 boots alone first, so the error shows once, not once per worker.
    assert err.count("module 'app' has no attribute 'Missing'") == 1
    assert "before it was ready; stopping" in err
    assert "started worker 1" not in err


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX only")
def test_a_worker_that_keeps_crashing_is_restarted_with_a_back_off(runner: Runner) -> None:
    port = _free_port()
    sup = runner.start("serve", "app:Echo", "--workers", "1", "--address", f"127.0.0.1:{port}")
    runner.wait_serving(sup, port)
    pids: set[int] = set()
    for _ in range(2):
        conns: list[Conn] = []
        (pid,) = _pids_until(port, lambda s: bool(s) and not s & pids, conns)
        pids.add(pid)
        runner.worker_pids.add(pid)
        for _, c in conns:
            c.sendall(b"crash\n")
            c.close()
        _wait_until(lambda pid=pid: not _alive(pid), 10, f"worker {pid} to crash")
    conns = []
    (pid,) = _pids_until(port, lambda s: bool(s) and not s & pids, conns)
    runner.worker_pids.add(pid)
    for _, c in conns:
        c.close()
    err = runner.stderr(sup)
    assert "exited with code 3 after" in err
    assert "it keeps dying within 5 s of starting (2 times in a row), restarting it in 1.0 s" in err
    assert _stop(sup) == 0


def test_supervisor_api_runs_off_the_main_thread_and_stops_on_request(tmp_path: Path) -> None:
    import threading

    from gev_core._config import ServeConfig
    from gev_core._workers import Supervisor

    (tmp_path / "app.py").write_text(APP)
    config = ServeConfig(
        "app:Echo", address="127.0.0.1:0", workers=2, port_sharing="inherit", app_dir=str(tmp_path)
    )
    sup = Supervisor(config, env=_env())
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(sup.run()), daemon=True)
    thread.start()
    try:
        _wait_until(lambda: bool(sup.address), BOOT_TIMEOUT, "the supervisor to bind")
        port = int(sup.address.rpartition(":")[2])
        conns: list[Conn] = []
        pids = _pids_until(port, lambda s: len(s) >= 1, conns)
        for _, c in conns:
            c.close()
        assert pids <= set(sup.pids)
        workers = sup.pids
        assert len(workers) == 2
        _wait_until(lambda: sup.ready, BOOT_TIMEOUT, "the supervisor to be ready")
        # reload() is SIGHUP's twin: every worker replaced, the old ones gone once drained.
        sup.reload()
        _wait_until(lambda: not set(workers) & set(sup.pids), BOOT_TIMEOUT * 2, "new workers")
        assert not sup.reloading and sup.ready
        assert len(sup.pids) == 2
        workers += sup.pids
    finally:
        sup.stop()
        thread.join(30)
    assert result == [0]
    assert sup.pids == [] and not sup.ready
    assert not any(_alive(pid) for pid in workers)


def test_worker_channel_calls_back_once_the_parent_is_gone() -> None:
    import threading

    ours, theirs = socket.socketpair()
    gone = threading.Event()
    # Pretend our parent is a process we are not a child of: it is "gone" from the start.
    channel = WorkerChannel(theirs.detach(), os.getppid() + 1_000_000)
    thread = channel.watch(lambda: None, gone.set, interval=0.01)
    try:
        assert gone.wait(5)
        thread.join(5)
        assert not thread.is_alive()
    finally:
        channel.close()
        ours.close()


def test_worker_channel_drains_on_request_and_stops_when_the_supervisor_closes() -> None:
    import threading

    ours, theirs = socket.socketpair()
    drained, gone = threading.Event(), threading.Event()
    channel = WorkerChannel(theirs.detach(), os.getppid())
    ready: list[bool] = []
    waiter = threading.Thread(target=lambda: ready.append(channel.wait_for_go(lambda: False)))
    waiter.start()
    try:
        assert ours.recv(1) == b"r"
        ours.sendall(b"g")
        waiter.join(5)
        assert ready == [True]
        thread = channel.watch(drained.set, gone.set, interval=0.05)
        ours.sendall(b"d")
        assert drained.wait(5)
        assert not gone.is_set()
        ours.close()  # what the kernel does when the supervisor dies
        assert gone.wait(5)
        thread.join(5)
    finally:
        channel.close()
        ours.close()


def test_serve_workers_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="workers must be >= 1"):
        serve_workers("app:Echo", 0)
    with pytest.raises(ValueError, match="port_sharing"):
        serve_workers("app:Echo", 2, port_sharing="magic")
    # Plugin options are parsed as gev serve parses them, before any worker starts.
    with pytest.raises(ValueError, match="unrecognized arguments: --no-such-option"):
        serve_workers("app:Echo", 2, extra_args=["--no-such-option", "1"])


# --------------------------------------------------------------------- Unix sockets, gev serve


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # Short: a socket path must fit in sun_path (108 bytes).
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="gev-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


Target = int | Path  # a TCP port on 127.0.0.1, or a Unix socket path


def _open(target: Target, timeout: float = 20) -> socket.socket:
    if isinstance(target, int):
        return _connect(target)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(target))
    except BaseException:
        sock.close()
        raise
    return sock


def _wait_unix_serving(runner: Runner, proc: subprocess.Popen[bytes], path: Path) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}:\n{runner.stderr(proc)}")
        try:
            with _open(path, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on {path}:\n{runner.stderr(proc)}")


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
def test_serve_on_a_unix_socket_with_permissions(runner: Runner, sockdir: Path) -> None:
    path = sockdir / "gev.sock"
    proc = runner.start("serve", "app:Echo", "--address", f"unix:{path}", "--unix-mode", "660")
    _wait_unix_serving(runner, proc, path)
    assert oct(path.stat().st_mode & 0o777) == oct(0o660)
    with _open(path) as sock:
        assert _ask_pid(sock) == proc.pid
    # A second server on a live socket: a clear error, the first one's file untouched.
    second = runner.start("serve", "app:Echo", "--address", f"unix:{path}")
    assert second.wait(BOOT_TIMEOUT) == 1
    assert f"another server is listening on unix:{path}" in runner.stderr(second)
    assert path.exists()
    assert _stop(proc) == 0
    assert f"listening on unix:{path}" in runner.stderr(proc)
    assert not path.exists()


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
def test_unix_socket_options_that_do_not_apply_are_usage_errors(
    runner: Runner, sockdir: Path
) -> None:
    proc = runner.start("serve", "app:Echo", "--address", "127.0.0.1:0", "--unix-mode", "600")
    assert proc.wait(BOOT_TIMEOUT) == 2
    assert "unix_mode applies to Unix socket addresses only" in runner.stderr(proc)
    proc = runner.start(
        "serve", "app:Echo", "--address", f"unix:{sockdir / 'x.sock'}", "--workers", "2",
        "--port-sharing", "reuse-port",
    )  # fmt: skip
    assert proc.wait(BOOT_TIMEOUT) == 2
    assert "use port sharing 'inherit'" in runner.stderr(proc)


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
def test_workers_share_a_unix_socket_and_the_supervisor_removes_it(
    runner: Runner, sockdir: Path
) -> None:
    path = sockdir / "w.sock"
    # A stale file from a supervisor that died is replaced.
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    sup = runner.start(
        "serve", "app:Echo", "--workers", "2", "--address", f"unix:{path}", "--unix-mode", "600"
    )
    _wait_unix_serving(runner, sup, path)
    assert path.stat().st_mode & 0o777 == 0o600
    seen: set[int] = set()
    socks = []
    deadline = time.monotonic() + BOOT_TIMEOUT
    try:
        while len(seen) < 2:  # one listener, polled by both: whichever wakes first accepts
            assert time.monotonic() < deadline, f"only saw worker pids {seen}"
            sock = _open(path)
            socks.append(sock)
            seen.add(_ask_pid(sock))
        runner.worker_pids |= seen
        assert sup.pid not in seen
    finally:
        for sock in socks:
            sock.close()
    assert _stop(sup) == 0
    assert not path.exists()
    err = runner.stderr(sup)
    assert f"2 worker(s) on unix:{path}, listener shared by inherit" in err


# ------------------------------------------------------------------------ rolling restarts


def _set_version(runner: Runner, version: str) -> None:
    app = runner.tmp_path / "app.py"
    app.write_text(re.sub(r'VERSION = "[^"]*"', f'VERSION = "{version}"', app.read_text()))


def _wait_log(runner: Runner, proc: subprocess.Popen[bytes], text: str, count: int = 1) -> None:
    _wait_until(
        lambda: runner.stderr(proc).count(text) >= count or proc.poll() is not None,
        BOOT_TIMEOUT * 2,
        f"{text!r} in the log",
    )
    assert proc.poll() is None, runner.stderr(proc)


class Hammer:
    """Clients connecting in tight loops -- connect, ask the pid, close -- recording every failure.

    Several at once, so that connections are often waiting in an accept queue when a worker is
    replaced: the case that loses them when a listener closes.
    """

    def __init__(self, target: Target, clients: int = 4) -> None:
        self.target = target
        self.done = threading.Event()
        self.answers: list[tuple[float, int]] = []  # (connect time, pid); list.append is atomic
        self.failures: list[str] = []
        self.threads = [
            threading.Thread(target=self._run, name=f"hammer-{i}", daemon=True)
            for i in range(clients)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            started = time.monotonic()
            try:
                with _open(self.target, timeout=20) as sock:
                    pid = _ask_pid(sock)
            except (OSError, EOFError, ValueError) as exc:
                self.failures.append(f"{time.monotonic() - started:.3f} s: {exc!r}")
                continue
            self.answers.append((started, pid))

    def pids_since(self, since: float) -> set[int]:
        return {pid for started, pid in self.answers if started >= since}

    def stop(self) -> None:
        self.done.set()
        for thread in self.threads:
            if thread.is_alive():
                thread.join(30)


#: Rolling restarts per test; raise it (GEV_TEST_RELOADS=50) to check that zero is not luck.
RELOADS = int(os.environ.get("GEV_TEST_RELOADS", "2"))


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX only")
@pytest.mark.parametrize("mode", ["reuse-port", "inherit", "unix"])
def test_sighup_replaces_the_workers_without_refusing_or_resetting_a_connection(
    runner: Runner, sockdir: Path, mode: str
) -> None:
    if mode == "reuse-port" and not LINUX:
        pytest.skip("SO_REUSEPORT balances only on Linux")
    if mode == "unix":
        target: Target = sockdir / "r.sock"
        args = ["--address", f"unix:{target}"]
    else:
        target = _free_port()
        args = ["--address", f"127.0.0.1:{target}", "--port-sharing", mode]
    env = _env(GEV_TEST_MARKERS=str(runner.markers), PYTHONDONTWRITEBYTECODE="1")
    sup = runner.start("serve", "app:Echo", "--workers", "2", *args, env=env)
    _wait_unix_serving(runner, sup, target) if mode == "unix" else runner.wait_serving(sup, target)
    _wait_log(runner, sup, "serving on ")
    hammer = Hammer(target)
    hammer.start()
    long_lived: list[tuple[int, socket.socket, str]] = []
    try:
        for reload in range(1, RELOADS + 1):
            # Long-lived connections on the current workers: they must finish their exchange
            # with the old code after their worker has been replaced.
            want = 20 * reload
            _wait_until(lambda want=want: len(hammer.answers) >= want, BOOT_TIMEOUT, "traffic")
            for _ in range(6):
                sock = _open(target)
                long_lived.append((_ask_pid(sock), sock, f"v{reload}"))
            old = {pid for pid, _, version in long_lived if version == f"v{reload}"}
            runner.worker_pids |= old

            _set_version(runner, f"v{reload + 1}")
            sup.send_signal(signal.SIGHUP)
            _wait_log(runner, sup, "rolling restart done", count=reload)
            after = time.monotonic()
            _wait_until(
                lambda after=after: len(hammer.pids_since(after)) >= 2, BOOT_TIMEOUT, "new workers"
            )

            new = hammer.pids_since(after)
            runner.worker_pids |= new
            assert not new & old, "a replaced worker still accepts"
            for pid, sock, version in long_lived:
                if version == f"v{reload}":
                    # Served by its old worker, which is draining: the old code answers.
                    sock.sendall(b"version\n")
                    assert _recv_line(sock) == version.encode() + b"\n"
                    assert _ask_pid(sock) == pid
            with _open(target) as sock:
                sock.sendall(b"version\n")
                assert _recv_line(sock) == f"v{reload + 1}\n".encode()
            # The old workers exit once their last connection is closed (not at the timeout).
            for _, sock, version in long_lived:
                if version == f"v{reload}":
                    sock.close()
            for pid in old:
                _wait_until(lambda pid=pid: not _alive(pid), 30, f"drained worker {pid} to exit")
        hammer.stop()
        assert hammer.failures == [], f"{len(hammer.failures)} failed connections"
        assert len(hammer.answers) >= 40 * RELOADS
        err = runner.stderr(sup)
        assert err.count("which drains its connections") == 2 * RELOADS
        assert "killing" not in err and "Traceback" not in err
        assert _stop(sup) == 0
    finally:
        hammer.stop()
        for _, sock, _ in long_lived:
            sock.close()


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX only")
def test_a_reload_with_broken_code_keeps_the_old_workers(runner: Runner) -> None:
    port = _free_port()
    env = _env(GEV_TEST_MARKERS=str(runner.markers), PYTHONDONTWRITEBYTECODE="1")
    sup = runner.start(
        "serve", "app:Echo", "--workers", "2", "--address", f"127.0.0.1:{port}", env=env
    )
    runner.wait_serving(sup, port)
    _wait_log(runner, sup, "serving on ")
    conns: list[Conn] = []
    before = _pids_until(port, lambda s: len(s) >= 2, conns)
    runner.worker_pids |= before
    for _, c in conns:
        c.close()
    app = runner.tmp_path / "app.py"
    good = app.read_text()
    app.write_text(good + "\ndef broken(:\n")
    sup.send_signal(signal.SIGHUP)
    _wait_log(runner, sup, "rolling restart aborted")
    assert "SyntaxError" in runner.stderr(sup)
    assert sup.poll() is None
    conns = []
    assert _pids_until(port, lambda s: len(s) >= 2, conns) == before  # still the old ones
    for _, c in conns:
        c.close()
    # Fixed: the next SIGHUP goes through.
    app.write_text(good.replace('VERSION = "v1"', 'VERSION = "v2-fixed"'))
    sup.send_signal(signal.SIGHUP)
    _wait_log(runner, sup, "rolling restart done")
    with _connect(port) as sock:
        sock.sendall(b"version\n")
        assert _recv_line(sock) == b"v2-fixed\n"
        runner.worker_pids.add(_ask_pid(sock))
    assert _stop(sup) == 0
