"""A real Prometheus scrapes ``gev serve --workers 2 --metrics-address``; after a known amount
of traffic the values read back through Prometheus' HTTP API are the ones the traffic made."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from gev_metrics.testing import Prometheus, prometheus_path
from metrics_support import Served, gev_serve

CONNECTIONS = 12
MESSAGES_EACH = 5
MESSAGE = b"0123456789abcdef\n"  # 17 bytes


@pytest.fixture
def prometheus_binary() -> str:
    path = prometheus_path()
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("prometheus must be installed in CI (tools/install-system-deps.sh)")
        pytest.skip("no prometheus on PATH (apt-get install prometheus)")
    return path


@pytest.fixture
def scraped(prometheus_binary: str, tmp_path: Path) -> Iterator[tuple[Served, Prometheus]]:
    args = ("--workers", "2", "--protocol", "line", "--metrics-address", "127.0.0.1:0",
            "--metrics-interval", "0.2")  # fmt: skip
    with gev_serve(tmp_path, *args) as served:
        target = served.admin.removeprefix("http://")
        with Prometheus([target], scrape_interval="1s") as prom:
            prom.wait_for_targets_up()
            # Known traffic: CONNECTIONS clients, MESSAGES_EACH echoes each; half stay open.
            clients = []
            for _ in range(CONNECTIONS):
                c = socket.create_connection(served.address, timeout=30)
                for _ in range(MESSAGES_EACH):
                    c.sendall(MESSAGE)
                    assert c.recv(100) == MESSAGE
                clients.append(c)
            for c in clients[: CONNECTIONS // 2]:
                c.close()
            yield served, prom
            for c in clients:
                c.close()


def test_connection_counts_through_prometheus(scraped: tuple[Served, Prometheus]) -> None:
    _, prom = scraped
    prom.wait_for_value("sum(gev_connections_accepted_total)", CONNECTIONS)
    prom.wait_for_value("sum(gev_connections_open)", CONNECTIONS - CONNECTIONS // 2)
    prom.wait_for_value("sum(gev_connections_closed_total)", CONNECTIONS // 2)
    prom.wait_for_value('count(count by (worker) (gev_connections_open{protocol="line"}))', 2)
    assert prom.value('up{job="gev"}') == 1


def test_bytes_and_messages_through_prometheus(scraped: tuple[Served, Prometheus]) -> None:
    _, prom = scraped
    total = CONNECTIONS * MESSAGES_EACH
    prom.wait_for_value("sum(gev_received_messages_total)", total, timeout=15)
    prom.wait_for_value("sum(gev_sent_messages_total)", total, timeout=15)
    prom.wait_for_value("sum(gev_received_bytes_total)", total * len(MESSAGE), timeout=15)
    prom.wait_for_value("sum(gev_sent_bytes_total)", total * len(MESSAGE), timeout=15)
    prom.wait_for_value('sum(gev_connections_closed_total{reason="eof"})', CONNECTIONS // 2)
