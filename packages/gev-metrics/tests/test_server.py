"""One process: Server(options={"metrics_address": ...}) over real sockets."""

from __future__ import annotations

import socket
import threading

import pytest
from gev_core import EventLoop, Handler, Server, get_plugin_manager
from gev_core.testing import connect, recv_exactly
from metrics_support import http_get, samples, total, wait_until


class Echo(Handler):
    def on_message(self, conn, ctx, data):  # type: ignore[no-untyped-def]
        return data


@pytest.fixture
def served():  # type: ignore[no-untyped-def]
    server = Server(
        Echo(),
        address=("127.0.0.1", 0),
        num_loops=2,
        plugins=get_plugin_manager(),
        options={"metrics_address": "127.0.0.1:0", "metrics_interval": 0.2},
    )
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    assert server.wait_started(10)
    yield server
    server.stop()
    thread.join(10)


def _admin_url(server: Server) -> str:
    from gev_metrics import _runtime

    state = _runtime._servers[id(server)]
    assert state.admin is not None
    return state.admin.url


def test_connections_are_counted_and_the_probes_follow_the_server(served: Server) -> None:
    url = _admin_url(served)
    assert http_get(url + "/readyz") == (200, "ready\n")
    clients = [connect(served) for _ in range(5)]
    for c in clients:
        c.sendall(b"ping")
        assert recv_exactly(c, 4) == b"ping"
    text = http_get(url + "/metrics")[1]
    labels = {"protocol": "default", "worker": "0"}
    assert total(text, "gev_connections_open", **labels) == 5
    assert total(text, "gev_connections_accepted_total", **labels) == 5
    for c in clients[:2]:
        c.close()
    wait_until(
        lambda: total(http_get(url + "/metrics")[1], "gev_connections_open") == 3,
        what="two connections closed",
    )
    text = http_get(url + "/metrics")[1]
    closed = total(text, "gev_connections_closed_total")
    if not hasattr(EventLoop, "stats"):
        assert total(text, "gev_connections_closed_total", reason="unknown") == closed == 2
        # Without the loops' counters there is nothing to say about bytes: absent, not zero.
        assert not [key for key in samples(text) if key[0] == "gev_received_bytes_total"]
    # The loop lag is sampled for each loop.
    wait_until(
        lambda: total(http_get(url + "/metrics")[1], "gev_loop_lag_seconds_count", loop="1") > 0,
        what="a lag sample of loop 1",
    )
    assert "process_cpu_seconds_total" in text  # the default registry comes along
    served.drain(5, wait=False)
    wait_until(lambda: http_get(url + "/readyz")[0] == 503, what="/readyz false while draining")
    for c in clients[2:]:
        c.close()


def test_the_endpoint_goes_away_with_the_server() -> None:
    server = Server(
        Echo(),
        address=("127.0.0.1", 0),
        plugins=get_plugin_manager(),
        options={"metrics_address": "127.0.0.1:0"},
    )
    url = _admin_url(server)
    assert http_get(url + "/readyz")[0] == 503  # configured, not serving yet
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    assert server.wait_started(10)
    wait_until(lambda: http_get(url + "/readyz")[0] == 200, what="ready")
    port = int(url.rsplit(":", 1)[1])
    server.stop()
    thread.join(10)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_bad_options_are_refused() -> None:
    for options, message in (
        ({"metrics_address": "nowhere"}, "HOST:PORT"),
        ({"metrics_interval": 1.0}, "needs --metrics-address"),
        ({"metrics_address": "127.0.0.1:0", "metrics_interval": 0}, "> 0"),
    ):
        with pytest.raises(ValueError, match=message):
            Server(Echo(), address=("127.0.0.1", 0), plugins=get_plugin_manager(), options=options)


def test_no_metrics_no_hooks() -> None:
    # Installed but not asked for: nothing of it is on the connection path.
    pm = get_plugin_manager()
    server = Server(Echo(), address=("127.0.0.1", 0), plugins=pm)
    try:
        for hook in (pm.hook.gev_connection_made, pm.hook.gev_connection_lost):
            owners = [pm.get_name(impl.plugin) or "" for impl in hook.get_hookimpls()]
            assert not [name for name in owners if "metrics" in name], owners
    finally:
        server.stop()
