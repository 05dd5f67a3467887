"""``gev serve --workers 2 --metrics-address``: one scrape of the supervisor gives every worker."""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

from metrics_support import gev_serve, http_get, samples, total, wait_until

N = 24


def _connect_all(address: tuple[str, int], n: int) -> list[socket.socket]:
    clients = []
    for _ in range(n):
        c = socket.create_connection(address, timeout=30)
        c.sendall(b"hi\n")
        assert c.recv(10) == b"hi\n"
        clients.append(c)
    return clients


def test_one_scrape_gives_every_worker(tmp_path: Path) -> None:
    args = ("--workers", "2", "--protocol", "line", "--metrics-address", "127.0.0.1:0",
            "--metrics-interval", "0.2")  # fmt: skip
    temp = tmp_path / "tmp"
    temp.mkdir()
    with gev_serve(tmp_path, *args, env={"TMPDIR": str(temp)}) as served:
        url = served.admin
        (directory,) = temp.glob("gev-metrics-*")  # the supervisor's, for the workers' files
        assert http_get(url + "/healthz") == (200, "ok\n")
        wait_until(lambda: http_get(url + "/readyz")[0] == 200, what="ready")
        clients = _connect_all(served.address, N)

        def scraped() -> str:
            return http_get(url + "/metrics")[1]

        wait_until(lambda: total(scraped(), "gev_connections_open") == N, what="all open")
        text = scraped()
        assert {p.name.split("_")[0] for p in directory.iterdir()} >= {"counter", "gauge"}
        assert total(text, "gev_connections_accepted_total", protocol="line") == N
        workers = {
            dict(labels)["worker"]
            for (name, labels), value in samples(text).items()
            if name == "gev_connections_accepted_total" and value > 0
        }
        assert workers == {"0", "1"}, "connections spread over both workers' listeners"
        for c in clients[: N // 2]:
            c.close()
        wait_until(lambda: total(scraped(), "gev_connections_open") == N - N // 2, what="closes")

        # A rolling restart: the counters of the replaced workers stay in the totals, their
        # gauges leave the sums (marked dead); the old workers drain what is still open.
        served.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "rolling restart done" in served.read_log(), 90, "rolling restart")
        for c in clients[N // 2 :]:
            c.close()
        wait_until(
            lambda: (
                "replaced worker 1" in served.read_log()
                and served.read_log().count("replaced worker") >= 2
            ),
            90,
            "old workers gone",
        )
        wait_until(lambda: total(scraped(), "gev_connections_open") == 0, what="gauges of the dead")

        # The replaced workers' counters were folded into one retired file per type: the
        # directory holds the live workers' files and that one, however many restarts.
        def files(kind: str) -> list[str]:
            return sorted(p.name for p in directory.glob(f"{kind}_*.db"))

        wait_until(lambda: len(files("counter")) == 3, what="counters folded")
        assert "counter_retired.db" in files("counter")
        wait_until(lambda: len(files("histogram")) == 3, what="histograms folded")
        text = scraped()
        assert total(text, "gev_connections_accepted_total") == N
        assert total(text, "gev_connections_closed_total", reason="eof") == N
        # Every connection sent "hi\n" once and got it back, whichever worker served it.
        assert total(text, "gev_received_messages_total") == N
        assert total(text, "gev_sent_bytes_total") == 3 * N
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(30) == 0
    log = served.read_log()
    assert "Traceback" not in log, log
    assert not directory.exists(), "the supervisor removes its metrics directory"


SERVE_WORKERS = """
import logging
import sys
from gev_core import serve_workers

logging.basicConfig(level=logging.INFO)  # the supervisor's lines: where it serves, the admin URL

sys.exit(serve_workers(
    "app:Echo", 2, address="127.0.0.1:0", protocol="line", app_dir=sys.argv[1],
    extra_args=["--metrics-address", "127.0.0.1:0", "--metrics-interval", "0.2"],
))
"""


def test_serve_workers_runs_the_plugins_like_gev_serve(tmp_path: Path) -> None:
    # The library entry point: gev-metrics' supervisor hooks must run in its process, or
    # nothing serves the one scrape of every worker.
    script = tmp_path / "serve.py"
    script.write_text(SERVE_WORKERS)
    args = ("--workers", "2", "--metrics-address", "127.0.0.1:0")
    command = [sys.executable, str(script), str(tmp_path)]
    with gev_serve(tmp_path, *args, command=command) as served:
        clients = _connect_all(served.address, 6)

        def scraped() -> str:
            return http_get(served.admin + "/metrics")[1]

        wait_until(lambda: total(scraped(), "gev_connections_open") == 6, what="all open")
        assert total(scraped(), "gev_connections_accepted_total", protocol="line") == 6
        for c in clients:
            c.close()
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(30) == 0
    assert "Traceback" not in served.read_log()
