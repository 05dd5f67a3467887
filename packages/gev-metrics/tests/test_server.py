"""One process: Server(options={"metrics_address": ...}) over real sockets."""

from __future__ import annotations

import socket
import threading

import pytest
from gev_core import Handler, Server, get_plugin_manager
from gev_core.testing import connect, recv_exactly
from gev_metrics import CLOSE_REASONS, COUNTER_FIELDS
from metrics_support import http_get, total, wait_until


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
    assert served.count_traffic and all(loop.stats.counting for loop in served.loops)
    clients = [connect(served) for _ in range(5)]
    for c in clients:
        for _ in range(3):
            c.sendall(b"ping")
            assert recv_exactly(c, 4) == b"ping"
    labels = {"protocol": "default", "worker": "0"}
    traffic = {
        "gev_received_messages_total": 15,
        "gev_sent_messages_total": 15,
        "gev_received_bytes_total": 60,
        "gev_sent_bytes_total": 60,
    }
    # A loop stores its traffic counts once per poll, after the batch that sent the replies: a
    # client can read its last reply just before. Wait for that store (then they are exact).
    wait_until(
        lambda: all(
            total(http_get(url + "/metrics")[1], name, **labels) >= n for name, n in traffic.items()
        ),
        what="the traffic counted",
    )
    text = http_get(url + "/metrics")[1]
    assert total(text, "gev_connections_open", **labels) == 5
    assert total(text, "gev_connections_accepted_total", **labels) == 5
    # Exactly the traffic made: one read, one message, one reply per ping.
    assert total(text, "gev_received_messages_total", **labels) == 15
    assert total(text, "gev_sent_messages_total", **labels) == 15
    assert total(text, "gev_received_bytes_total", **labels) == 60
    assert total(text, "gev_sent_bytes_total", **labels) == 60
    for c in clients[:2]:
        c.close()
    wait_until(
        lambda: total(http_get(url + "/metrics")[1], "gev_connections_open") == 3,
        what="two connections closed",
    )
    text = http_get(url + "/metrics")[1]
    assert total(text, "gev_connections_closed_total", reason="eof") == 2
    assert total(text, "gev_connections_closed_total") == 2
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


def test_every_close_reason_of_the_core_is_exported(served: Server) -> None:
    # The reasons gev-core counts are exactly the label values gev-metrics exports.
    core = {key.removeprefix("closed_") for key in served.loops[0].stats.as_dict()}
    assert {r for r in core if r in CLOSE_REASONS} == set(CLOSE_REASONS)
    assert set(COUNTER_FIELDS) <= core
    text = http_get(_admin_url(served) + "/metrics")[1]
    for reason in CLOSE_REASONS:
        assert 'reason="' + reason + '"' in text


def _closed(url: str, reason: str) -> float:
    return total(http_get(url + "/metrics")[1], "gev_connections_closed_total", reason=reason)


class Faulty(Handler):
    def on_message(self, conn, ctx, data):  # type: ignore[no-untyped-def]
        if data == b"boom":
            raise RuntimeError("a handler bug")
        if data == b"flood":  # the application sends more than a peer that never reads takes
            for _ in range(128):
                conn.send(b"x" * 65536)
            return None
        return data


def test_handler_errors_backpressure_and_hard_cap_closes() -> None:
    server = Server(
        Faulty(),
        address=("127.0.0.1", 0),
        high_water=64 * 1024,
        max_write_buffer=1024 * 1024,
        plugins=get_plugin_manager(),
        options={"metrics_address": "127.0.0.1:0", "metrics_interval": 0.2},
    )
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    try:
        assert server.wait_started(10)
        url = _admin_url(server)
        with connect(server) as c:
            c.sendall(b"boom")
            assert c.recv(10) == b""
        with connect(server) as c:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.sendall(b"flood")  # and never read
            wait_until(lambda: _closed(url, "hard_cap") == 1, what="a hard-cap close")
        text = http_get(url + "/metrics")[1]
        assert total(text, "gev_handler_errors_total") == 1
        assert total(text, "gev_connections_closed_total", reason="handler_error") == 1
        assert total(text, "gev_backpressure_pauses_total") >= 1
    finally:
        server.stop()
        thread.join(10)


def test_idle_reaps_are_counted() -> None:
    pytest.importorskip("gev_timers")
    server = Server(
        Echo(),
        address=("127.0.0.1", 0),
        idle_time=0.3,
        plugins=get_plugin_manager(),
        options={"metrics_address": "127.0.0.1:0", "metrics_interval": 0.2},
    )
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    try:
        assert server.wait_started(10)
        url = _admin_url(server)
        with connect(server) as c:
            c.settimeout(30)
            assert c.recv(10) == b""  # reaped
        wait_until(lambda: _closed(url, "idle") == 1, what="an idle reap")
    finally:
        server.stop()
        thread.join(10)


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


def test_no_metrics_no_hooks_no_counting() -> None:
    # Installed but not asked for: nothing of it is on the connection path, and the loops do
    # not count bytes and messages.
    pm = get_plugin_manager()
    server = Server(Echo(), address=("127.0.0.1", 0), plugins=pm)
    try:
        for hook in (pm.hook.gev_connection_made, pm.hook.gev_connection_lost):
            owners = [pm.get_name(impl.plugin) or "" for impl in hook.get_hookimpls()]
            assert not [name for name in owners if "metrics" in name], owners
        assert not server.count_traffic
        assert not [loop for loop in server.loops if loop.stats.counting]
    finally:
        server.stop()


def test_loop_busy_seconds_grow_under_load_and_stay_near_zero_while_idle(
    served: Server,
) -> None:
    url = _admin_url(served)
    wait_until(lambda: "gev_loop_busy_seconds_total" in http_get(url + "/metrics")[1])
    idle = total(http_get(url + "/metrics")[1], "gev_loop_busy_seconds_total")
    assert idle < 0.5  # set-up and lag probes only: the loops sleep in poll
    with connect(served) as c:
        for _ in range(300):
            c.sendall(b"ping")
            assert recv_exactly(c, 4) == b"ping"
    wait_until(
        lambda: total(http_get(url + "/metrics")[1], "gev_loop_busy_seconds_total") > idle,
        what="busy time of the traffic exported",
    )
