"""The admin endpoint on its own: probes, scrape, errors."""

from __future__ import annotations

import socket

import pytest
from gev_metrics import AdminServer, parse_admin_address
from metrics_support import http_get, total
from prometheus_client import CollectorRegistry, Counter


def test_address_forms() -> None:
    assert parse_admin_address("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_admin_address(":9100") == ("0.0.0.0", 9100)
    assert parse_admin_address("[::1]:0") == ("::1", 0)
    for bad in ("9100", "host:", "host:99999", "host:x"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_admin_address(bad)


def test_probes_and_metrics() -> None:
    registry = CollectorRegistry()
    hits = Counter("demo_hits", "demo", registry=registry)
    hits.inc(3)
    state = {"ready": True, "scrapes": 0}

    def before() -> None:
        state["scrapes"] += 1

    admin = AdminServer("127.0.0.1:0", registry, ready=lambda: state["ready"], before_scrape=before)
    try:
        assert http_get(admin.url + "/healthz") == (200, "ok\n")
        assert http_get(admin.url + "/readyz") == (200, "ready\n")
        state["ready"] = False
        assert http_get(admin.url + "/readyz") == (503, "not ready\n")
        status, text = http_get(admin.url + "/metrics")
        assert status == 200 and total(text, "demo_hits_total") == 3
        assert state["scrapes"] == 1
        assert http_get(admin.url + "/nope")[0] == 404
    finally:
        admin.close()
    with pytest.raises(OSError), socket.create_connection(admin.address, timeout=2):
        pass


def test_a_failing_readiness_check_reads_not_ready() -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    admin = AdminServer("127.0.0.1:0", CollectorRegistry(), ready=broken)
    try:
        assert http_get(admin.url + "/readyz")[0] == 503
    finally:
        admin.close()


def test_the_address_in_use_is_an_oserror() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            AdminServer(f"127.0.0.1:{port}", CollectorRegistry(), ready=lambda: True)


def test_ipv6() -> None:
    try:
        admin = AdminServer("[::1]:0", CollectorRegistry(), ready=lambda: True)
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        assert admin.url.startswith("http://[::1]:")
        assert http_get(admin.url + "/healthz")[0] == 200
    finally:
        admin.close()
