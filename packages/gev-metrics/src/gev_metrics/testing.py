"""Test helpers: a real Prometheus server scraping given targets, queried through its HTTP API.

::

    with Prometheus(["127.0.0.1:9100"], scrape_interval="1s") as prom:   # raises if missing
        prom.wait_for_targets_up()
        value = prom.wait_for_value('sum(gev_connections_accepted_total)', 10)

Prometheus runs from a temporary directory (configuration and TSDB) on a free loopback port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from types import TracebackType
from typing import Any

__all__ = ["Prometheus", "prometheus_path"]


def prometheus_path() -> str | None:
    """Where ``prometheus`` is, or ``None``."""
    return shutil.which("prometheus")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """A ``prometheus`` child process scraping ``targets`` (``"host:port"``) at ``/metrics``.

    :param targets: the addresses to scrape, as job ``gev``.
    :param scrape_interval: Prometheus' duration syntax (``"1s"``).
    :param executable: the binary (default: found on ``PATH``).
    """

    def __init__(
        self,
        targets: Sequence[str],
        *,
        scrape_interval: str = "1s",
        executable: str | None = None,
    ) -> None:
        path = executable or prometheus_path()
        if path is None:
            raise FileNotFoundError("prometheus is not installed (apt-get install prometheus)")
        self.executable = path
        self.targets = list(targets)
        self._dir = tempfile.mkdtemp(prefix="gev-prometheus-")
        self.config = "\n".join(
            [
                "global:",
                f"  scrape_interval: {scrape_interval}",
                f"  scrape_timeout: {scrape_interval}",
                "scrape_configs:",
                "  - job_name: gev",
                "    static_configs:",
                f"      - targets: {json.dumps(self.targets)}",
                "",
            ]
        )
        self._cfg = os.path.join(self._dir, "prometheus.yml")
        with open(self._cfg, "w") as f:
            f.write(self.config)
        self._log = os.path.join(self._dir, "prometheus.log")
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start Prometheus and wait until it is ready (``/-/ready``)."""
        deadline = time.monotonic() + timeout
        for _ in range(5):  # a port taken between the probe and Prometheus' bind: another
            self.port = _free_port()
            with open(self._log, "ab") as log:
                self._proc = subprocess.Popen(
                    [
                        self.executable,
                        f"--config.file={self._cfg}",
                        f"--storage.tsdb.path={os.path.join(self._dir, 'data')}",
                        f"--web.listen-address=127.0.0.1:{self.port}",
                        "--log.level=warn",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            while time.monotonic() < deadline and self._proc.poll() is None:
                try:
                    with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                        if r.status == 200:
                            return
                except OSError:
                    pass
                time.sleep(0.1)
            if self._proc.poll() is None or "address already in use" not in self.log():
                break
        self.stop()
        raise RuntimeError(f"prometheus did not become ready: {self.log()}")

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data`` (raises on an error status)."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus API error: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
        data = self.api("query", query=expr)
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The value of a query that yields one series, or ``None`` for no series."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise AssertionError(f"{expr} yields {len(result)} series: {result}")
        return float(result[0]["value"][1])

    def wait_for_value(self, expr: str, expected: float, timeout: float = 60.0) -> float:
        """Wait until ``expr`` evaluates to ``expected`` (scrapes are periodic)."""
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            last = self.value(expr)
            if last == expected:
                return last
            time.sleep(0.25)
        raise AssertionError(f"{expr} is {last}, not {expected}, after {timeout} s")

    def wait_for_targets_up(self, timeout: float = 60.0) -> None:
        """Wait until every target has been scraped successfully."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            active = self.api("targets")["activeTargets"]
            if len(active) == len(self.targets) and all(t["health"] == "up" for t in active):
                return
            time.sleep(0.25)
        raise AssertionError(f"targets not up after {timeout} s: {self.api('targets')}")

    def stop(self) -> None:
        """Stop Prometheus and wait until it is gone."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._proc = None

    def log(self) -> str:
        """What Prometheus logged (the last 2000 characters)."""
        try:
            with open(self._log, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def close(self) -> None:
        """Stop it and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Prometheus:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
