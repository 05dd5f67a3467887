"""Two ``gev serve --workers 2`` servers on different ports share one Redis: a message published
on one reaches WebSocket subscribers on every worker of both."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, free_port, wait_port

sync = pytest.importorskip("websockets.sync.client")
pytest.importorskip("gev_websocket")
pytest.importorskip("redis")
from gev_core.testing import RedisServer, redis_server_path  # noqa: E402


@pytest.fixture
def redis_url() -> Iterator[str]:
    if redis_server_path() is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server must be installed in CI (tools/install-system-deps.sh)")
        pytest.skip("no redis-server on PATH (apt-get install redis-server)")
    with RedisServer() as server:
        yield server.url


@contextlib.contextmanager
def chat_server(redis_url: str, log: Path) -> Iterator[int]:
    """``gev serve chat:Chat --workers 2`` with the Redis bridge; yields its port."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "gev_core", "serve", "chat:Chat",
                "--app-dir", str(ROOT / "examples"),
                "--protocol", "websocket",
                "--workers", "2",
                "--address", f"127.0.0.1:{port}",
                "--pubsub-redis", redis_url,
                "--pubsub-stream", "test:chat",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        try:
            wait_port(port, proc)
            # Both workers listening (each logs it), not only the first: one that starts late
            # gets no connection until it listens, and one_per_worker would find one worker.
            deadline = time.monotonic() + 60
            while log.read_text().count(f"gev: listening on 127.0.0.1:{port} ") < 2:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            yield port
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def join(port: int, stack: contextlib.ExitStack) -> tuple[Any, int]:
    ws = stack.enter_context(sync.connect(f"ws://127.0.0.1:{port}/room/ops", open_timeout=20))
    welcome = ws.recv(timeout=20)
    match = re.search(r"served by process (\d+)", welcome)
    assert match, welcome
    return ws, int(match.group(1))


def one_per_worker(port: int, stack: contextlib.ExitStack) -> dict[int, Any]:
    """Subscribers until both workers of the server on ``port`` have one (the kernel spreads
    connections over SO_REUSEPORT listeners by a hash of the client's port)."""
    found: dict[int, Any] = {}
    for _ in range(60):
        ws, pid = join(port, stack)
        found.setdefault(pid, ws)
        if len(found) == 2:
            return found
    raise AssertionError(f"60 connections all reached worker(s) {sorted(found)}")


def test_publish_on_one_server_reaches_every_worker_of_both(redis_url: str, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        port_a = stack.enter_context(chat_server(redis_url, tmp_path / "a.log"))
        port_b = stack.enter_context(chat_server(redis_url, tmp_path / "b.log"))
        subscribers = {**one_per_worker(port_a, stack), **one_per_worker(port_b, stack)}
        assert len(subscribers) == 4, "four distinct worker processes"
        publisher, _ = join(port_a, stack)

        # Each worker's bridge starts reading when it starts; probe until every one delivers.
        deadline = time.monotonic() + 60
        ready: set[int] = set()
        probe = 0
        while len(ready) < 4:
            assert time.monotonic() < deadline, f"only workers {ready} deliver"
            publisher.send(f"probe {probe}")
            for pid, ws in subscribers.items():
                if pid in ready:
                    continue
                with contextlib.suppress(TimeoutError):
                    while ws.recv(timeout=0.5) != f"probe {probe}":
                        pass
                    ready.add(pid)
            probe += 1
        publisher.send("sync")  # everybody reads up to here: the probes are behind us
        for ws in [*subscribers.values(), publisher]:
            while ws.recv(timeout=20) != "sync":
                pass

        messages = [f"ops: deploy step {i}" for i in range(20)]
        for text in messages:
            publisher.send(text)
        for pid, ws in subscribers.items():
            assert [ws.recv(timeout=20) for _ in messages] == messages, pid
        assert [publisher.recv(timeout=20) for _ in messages] == messages

        # And the other way round, from server B.
        other, _ = join(port_b, stack)
        other.send("from b")
        for ws in [*subscribers.values(), publisher, other]:
            assert ws.recv(timeout=20) == "from b"
    for name in ("a.log", "b.log"):
        text = (tmp_path / name).read_text()
        assert "Traceback" not in text, text[-3000:]
