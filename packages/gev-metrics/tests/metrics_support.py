"""Shared helpers: ``gev serve`` in a subprocess, reading its admin URL from its log; scraping."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

APP = """
from gev_core import Handler


class Echo(Handler):
    def on_message(self, conn, ctx, data):
        if data.strip() == b"who":
            return f"{conn.peer_addr}\\n".encode()
        return data
"""


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(name, sorted labels): value}`` of a Prometheus exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def total(text: str, name: str, **match: str) -> float:
    """The sum of ``name``'s samples whose labels include ``match``."""
    return sum(
        value
        for (n, labels), value in samples(text).items()
        if n == name and set(match.items()) <= set(labels)
    )


@dataclass
class Served:
    proc: subprocess.Popen[str]
    log: Path
    address: tuple[str, int] = ("", 0)
    admin: str = ""
    pids: list[int] = field(default_factory=list)

    def read_log(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def gev_serve(
    tmp_path: Path,
    *args: str,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
) -> Iterator[Served]:
    """``gev serve app:Echo --address 127.0.0.1:0 ARGS`` until the block ends (SIGTERM).

    ``command`` replaces the ``gev serve`` command line (a script calling ``serve_workers``);
    ``args`` still tell what to wait for in its log.
    """
    (tmp_path / "app.py").write_text(APP)
    log = tmp_path / "gev.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command
            or [
                sys.executable,
                "-m",
                "gev_core",
                "serve",
                "app:Echo",
                "--app-dir",
                str(tmp_path),
                "--address",
                "127.0.0.1:0",
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    served = Served(proc, log)
    try:
        deadline = time.monotonic() + timeout
        workers = "--workers" in args
        while True:
            text = served.read_log()
            listening = re.search(
                r"serving on ([\d.]+):(\d+) with" if workers else r"listening on ([\d.]+):(\d+)",
                text,
            )
            admin = re.search(r"metrics and health on (http://\S+)", text)
            if listening and workers:
                # Every worker listening (each logs it): the supervisor's "serving on" line
                # comes 10 s after the first worker at the latest, with or without the others.
                n = int(args[list(args).index("--workers") + 1])
                at = f"gev: listening on {listening.group(1)}:{listening.group(2)} "
                if text.count(at) < n:
                    listening = None
            if listening and (admin or "--metrics-address" not in args):
                served.address = (listening.group(1), int(listening.group(2)))
                served.admin = admin.group(1) if admin else ""
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gev serve did not start ({proc.poll()}):\n{text}")
            time.sleep(0.05)
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def wait_until(check, timeout: float = 30.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout} s (last: {last!r})")
