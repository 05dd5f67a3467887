"""gev behind a real HAProxy: ``gev serve --workers 2`` with clients connecting through HAProxy.

HAProxy runs with a generated configuration in front of a supervised gev server, and clients
bind distinct loopback addresses, so that each answer says whose address the handler saw.
Without the PROXY protocol the handler sees HAProxy's address; with ``send-proxy`` (v1) or
``send-proxy-v2`` and ``--proxy-protocol`` it sees the client's, HAProxy's own stays on
``conn.proxy_address`` and v2 TLVs come through (the unique id HAProxy makes of the client's
address). Refused connections are logged and counted by gev-metrics.
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
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gev_proxy_protocol.testing import HAProxy, haproxy_path

APP = """
import os

from gev_core import Handler
from gev_proxy_protocol import proxy_header


class Who(Handler):
    def on_connect(self, conn):
        conn.set("at_connect", conn.peer_addr)

    def on_message(self, conn, ctx, data):
        proxy = conn.proxy_address
        via = f"{proxy[0]}:{proxy[1]}" if proxy else "-"
        header = proxy_header(conn)
        unique_id = header.unique_id.decode() if header and header.unique_id else "-"
        seen = f"{conn.peer_addr} {conn.get('at_connect')} {os.getpid()} {via} {unique_id}"
        return (seen + "\\n").encode()
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
        # Both workers listening: each logs it. (The supervisor's "serving on ... with N" counts
        # only the workers ready 10 s after the first; a slow machine starts one later.)
        deadline = time.monotonic() + 60
        while len(ports := re.findall(r"gev: listening on [\d.]+:(\d+)", log.read_text())) < 2:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gev serve did not start:\n{log.read_text()}")
            time.sleep(0.05)
        assert len(set(ports)) == 1, ports
        yield int(ports[0]), log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class Answer:
    client: str  #: our address, "ip:port"
    seen: str  #: conn.peer_addr in the handler
    pid: int  #: the worker's
    via: str  #: conn.proxy_address, "ip:port" or "-"
    unique_id: str  #: the v2 UNIQUE_ID TLV, or "-"


def ask(address: tuple[str, int], source: str) -> Answer:
    """Connect from ``source`` and ask who we are."""
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
        seen, at_connect, pid, via, unique_id = data.decode().split()
        assert at_connect == seen, "on_connect sees the address the messages see"
        host, port = sock.getsockname()[:2]
        return Answer(f"{host}:{port}", seen, int(pid), via, unique_id)


def through_both_workers(address: tuple[str, int], tries: int = 60) -> list[Answer]:
    """Ask from distinct loopback addresses until both workers have answered."""
    answers: list[Answer] = []
    for i in range(tries):
        answers.append(ask(address, f"127.0.0.{10 + i % 200}"))
        if len({a.pid for a in answers}) == 2 and len(answers) >= 4:
            return answers
    raise AssertionError(f"{tries} connections reached one worker only: {answers}")


def test_the_harness_without_the_proxy_protocol(haproxy: str, tmp_path: Path) -> None:
    # Plain TCP through HAProxy: every connection comes from HAProxy.
    with (
        gev_workers(tmp_path, APP, "--protocol", "line") as (port, _),
        HAProxy(("127.0.0.1", port), send_proxy=None) as proxy,
    ):
        for answer in through_both_workers(proxy.address):
            assert answer.seen.startswith("127.0.0.1:") and answer.seen != answer.client
            assert answer.via == "-" and answer.unique_id == "-"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_handler_sees_the_client_through_haproxy(
    haproxy: str, tmp_path: Path, version: str
) -> None:
    trusted = ("--proxy-protocol", "--proxy-protocol-trusted", "127.0.0.1/32")
    options: dict[str, Any] = {}
    if version == "v2":
        # HAProxy makes a unique id of the client's address and sends it as a TLV.
        options = {
            "proxy_v2_options": ["unique-id"],
            "frontend_lines": ["unique-id-format %ci:%cp"],
        }
    with (
        gev_workers(tmp_path, APP, "--protocol", "line", *trusted) as (port, _),
        HAProxy(("127.0.0.1", port), send_proxy=version, **options) as proxy,
    ):
        for answer in through_both_workers(proxy.address):
            assert answer.seen == answer.client
            # The proxy's own address: HAProxy's outgoing connection, not the client.
            assert answer.via.startswith("127.0.0.1:") and answer.via != answer.client
            assert answer.unique_id == (answer.client if version == "v2" else "-")


def _logged(log: Path, text: str) -> None:
    deadline = time.monotonic() + 30
    while text not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def test_an_untrusted_proxy_is_refused_logged_and_counted(haproxy: str, tmp_path: Path) -> None:
    args = ("--proxy-protocol", "--proxy-protocol-trusted", "10.0.0.0/8",
            "--metrics-address", "127.0.0.1:0", "--metrics-interval", "0.2")  # fmt: skip
    with gev_workers(tmp_path, APP, "--protocol", "line", *args) as (port, log):
        with HAProxy(("127.0.0.1", port), send_proxy="v2") as proxy:
            for i in range(4):
                with pytest.raises((AssertionError, OSError)):
                    ask(proxy.address, f"127.0.0.{20 + i}")
        _logged(log, "not in the trusted proxy networks")
        assert "Traceback" not in log.read_text()
        admin = re.search(r"metrics and health on (http://\S+)", log.read_text())
        assert admin is not None, log.read_text()
        query = 'gev_connections_closed_total{reason="protocol_error"}'
        deadline = time.monotonic() + 30
        while (refused := _scrape_total(admin.group(1), query)) < 4:
            assert time.monotonic() < deadline, f"{refused} refusals counted"
            time.sleep(0.2)


def _scrape_total(url: str, selector: str) -> float:
    """The sum of the series of ``/metrics`` that start with ``selector`` (name{labels...)."""
    name, _, labels = selector.partition("{")
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and labels.rstrip("}") in line:
            out += float(line.rsplit(" ", 1)[1])
    return out


def test_a_missing_header_is_refused(haproxy: str, tmp_path: Path) -> None:
    with gev_workers(tmp_path, APP, "--protocol", "line", "--proxy-protocol") as (port, log):
        with pytest.raises((AssertionError, OSError)):
            ask(("127.0.0.1", port), "127.0.0.21")  # straight to gev, no header
        _logged(log, "not a PROXY protocol header")


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
