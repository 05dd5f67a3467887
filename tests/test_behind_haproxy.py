"""gev behind a real HAProxy: ``gev serve --workers 2`` with clients connecting through HAProxy.

HAProxy with a generated configuration runs in front of a supervised gev server, and the
clients bind distinct loopback addresses: without the PROXY protocol the handler sees HAProxy's
address; with it (gev-core's listener preamble, installed by gev-proxy-protocol) the client's.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gev_proxy_protocol.testing import HAProxy, haproxy_path

APP = """
import os

from gev_core import Handler


class Who(Handler):
    def on_connect(self, conn):
        conn.set("at_connect", conn.peer_addr)

    def on_message(self, conn, ctx, data):
        return f"{conn.peer_addr} {conn.get('at_connect')} {os.getpid()}\\n".encode()
"""

WS_APP = """
import os

from gev_websocket import MessageType, WebSocketHandler


class Who(WebSocketHandler):
    def on_message(self, conn, data):
        return MessageType.TEXT, f"{conn.peer_addr} {os.getpid()}"
"""


@pytest.fixture
def haproxy() -> str:
    path = haproxy_path()
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("haproxy must be installed in CI (tools/install-system-deps.sh)")
        pytest.skip("no haproxy on PATH (apt-get install haproxy)")
    return path


@contextlib.contextmanager
def gev_workers(tmp_path: Path, app: str, *args: str) -> Iterator[tuple[int, Path]]:
    """``gev serve app:Who --workers 2 ARGS`` on an ephemeral port; yields (port, log)."""
    (tmp_path / "app.py").write_text(app)
    log = tmp_path / "gev.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gev_core",
                "serve",
                "app:Who",
                "--app-dir",
                str(tmp_path),
                "--address",
                "127.0.0.1:0",
                "--workers",
                "2",
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 60
        while not (m := re.search(r"serving on [\d.]+:(\d+) with 2", log.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gev serve did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield int(m.group(1)), log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def ask(address: tuple[str, int], source: str) -> tuple[str, str, int]:
    """Connect from ``source``; returns (our address as "ip:port", what the handler saw, pid)."""
    with socket.socket() as sock:
        sock.settimeout(30)
        sock.bind((source, 0))
        sock.connect(address)
        sock.sendall(b"who\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(200)
            assert chunk, f"closed after {data!r}"
            data += chunk
        seen, at_connect, pid = data.decode().split()
        assert at_connect == seen, "on_connect sees the address the messages see"
        host, port = sock.getsockname()[:2]
        return f"{host}:{port}", seen, int(pid)


def through_both_workers(address: tuple[str, int], tries: int = 60) -> list[tuple[str, str, int]]:
    """Ask from distinct loopback addresses until both workers have answered."""
    answers = []
    for i in range(tries):
        answers.append(ask(address, f"127.0.0.{10 + i % 200}"))
        if len({pid for _, _, pid in answers}) == 2 and len(answers) >= 4:
            return answers
    raise AssertionError(f"{tries} connections reached one worker only: {answers}")


def test_the_harness_without_the_proxy_protocol(haproxy: str, tmp_path: Path) -> None:
    # Plain TCP through HAProxy: every connection comes from HAProxy.
    with (
        gev_workers(tmp_path, APP, "--protocol", "line") as (port, _),
        HAProxy(("127.0.0.1", port), send_proxy=None) as proxy,
    ):
        for client, seen, _ in through_both_workers(proxy.address):
            assert seen.startswith("127.0.0.1:") and seen != client


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_handler_sees_the_client_through_haproxy(
    haproxy: str, tmp_path: Path, version: str
) -> None:
    trusted = ("--proxy-protocol", "--proxy-protocol-trusted", "127.0.0.1/32")
    with (
        gev_workers(tmp_path, APP, "--protocol", "line", *trusted) as (port, _),
        HAProxy(("127.0.0.1", port), send_proxy=version) as proxy,
    ):
        for client, seen, _ in through_both_workers(proxy.address):
            assert seen == client


def test_an_untrusted_proxy_is_refused_with_a_logged_reason(haproxy: str, tmp_path: Path) -> None:
    trusted = ("--proxy-protocol", "--proxy-protocol-trusted", "10.0.0.0/8")
    with gev_workers(tmp_path, APP, "--protocol", "line", *trusted) as (port, log):
        with (
            HAProxy(("127.0.0.1", port), send_proxy="v2") as proxy,
            pytest.raises((AssertionError, OSError)),
        ):
            ask(proxy.address, "127.0.0.20")
        deadline = time.monotonic() + 30
        while "not in the trusted proxy networks" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)


def test_a_missing_header_is_refused(haproxy: str, tmp_path: Path) -> None:
    with gev_workers(tmp_path, APP, "--protocol", "line", "--proxy-protocol") as (port, log):
        with pytest.raises((AssertionError, OSError)):
            ask(("127.0.0.1", port), "127.0.0.21")  # straight to gev, no header
        deadline = time.monotonic() + 30
        while "not a PROXY protocol header" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)


def test_websocket_clients_through_haproxy(haproxy: str, tmp_path: Path) -> None:
    sync = pytest.importorskip("websockets.sync.client")
    pytest.importorskip("gev_websocket")
    trusted = ("--proxy-protocol", "--proxy-protocol-trusted", "127.0.0.1/32")
    with (
        gev_workers(tmp_path, WS_APP, "--protocol", "websocket", *trusted) as (port, _),
        HAProxy(("127.0.0.1", port), send_proxy="v2") as proxy,
    ):
        pids = set()
        for i in range(40):
            sock = socket.socket()
            sock.bind((f"127.0.0.{30 + i}", 0))
            sock.settimeout(30)
            sock.connect(proxy.address)
            client = "{}:{}".format(*sock.getsockname()[:2])
            with sync.connect(f"ws://{proxy.address[0]}:{proxy.address[1]}/", sock=sock) as ws:
                ws.send("who")
                seen, pid = str(ws.recv(timeout=30)).split()
            assert seen == client
            pids.add(pid)
            if len(pids) == 2:
                break
        assert len(pids) == 2
