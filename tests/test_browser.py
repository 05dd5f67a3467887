"""A real browser (headless Chromium) talks to a gev WebSocket server.

A tiny HTTP server on loopback serves a page whose script opens a WebSocket to gev,
exchanges a text and a binary message, closes with 1000, writes the outcome into the DOM
and reports it back. The page's load event is held by an iframe that the HTTP server only
answers once the report has arrived, so ``--dump-dom`` prints the finished page.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

gev_websocket = pytest.importorskip("gev_websocket")
from gev_core.testing import serve  # noqa: E402

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>gev websocket</title></head><body>
<div id="result">pending</div>
<script>
const log = [];
function finish(text) {
  document.getElementById("result").textContent = text;
  fetch("/report?result=" + encodeURIComponent(text)).catch(() => {});
}
try {
  const ws = new WebSocket("ws://127.0.0.1:WS_PORT/browser");
  ws.binaryType = "arraybuffer";
  ws.onopen = () => ws.send("héllo");
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") {
      log.push("text=" + ev.data);
      ws.send(new Uint8Array([1, 2, 3, 250]));
    } else {
      log.push("binary=" + Array.from(new Uint8Array(ev.data)).join(","));
      ws.close(1000, "done");
    }
  };
  ws.onerror = () => log.push("error");
  ws.onclose = (ev) => finish(log.join(" ") + " close=" + ev.code + " clean=" + ev.wasClean);
} catch (e) {
  finish("exception " + e);
}
</script>
<iframe src="/wait" style="display:none"></iframe>
</body></html>
"""

EXPECTED = "text=héllo binary=1,2,3,250 close=1000 clean=true"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "headless_shell"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Echo(gev_websocket.WebSocketHandler):  # type: ignore[misc]
    def on_message(self, conn: Any, data: Any) -> Any:
        kind = gev_websocket.MessageType.TEXT if isinstance(data, str) else 2
        return kind, data


@pytest.mark.slow
def test_chromium_exchanges_text_and_binary_and_closes_cleanly(tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("Chromium must be installed in CI (.ci/run installs it)")
        pytest.skip("no Chromium on PATH; run: bash tools/install-system-deps.sh")

    reports: list[str] = []
    reported = threading.Event()

    with serve(Echo(), protocol=gev_websocket.WebSocketProtocol()) as ws_server:
        page = PAGE.replace("WS_PORT", str(ws_server.port)).encode()

        class Pages(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path == "/report":
                    reports.extend(parse_qs(url.query).get("result", []))
                    reported.set()
                    body = b"ok"
                elif url.path == "/wait":
                    reported.wait(30)
                    body = b"<!doctype html>done"
                elif url.path == "/":
                    body = page
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        http = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
        http.daemon_threads = True
        thread = threading.Thread(target=http.serve_forever, daemon=True)
        thread.start()
        try:
            proc = subprocess.run(
                [
                    browser,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    f"--user-data-dir={tmp_path / 'profile'}",
                    "--dump-dom",
                    f"http://127.0.0.1:{http.server_port}/",
                ],
                capture_output=True,
                text=True,
                timeout=90,
            )
        finally:
            http.shutdown()
            http.server_close()

    assert reports == [EXPECTED], f"page reported {reports}; chromium said:\n{proc.stderr[-2000:]}"
    assert f'<div id="result">{EXPECTED}</div>' in proc.stdout
