"""Real TLS peers for the tests: ``openssl s_client``, the ``websockets`` client over
``wss://`` and headless Chromium (Python's ``ssl`` is ``gev_core.testing.tls_connect``).

Each takes an address (and the CA to trust), so a test points it at a gev server with ``ssl=``.

Chromium trusts the test's certificate through ``--ignore-certificate-errors-spki-list`` with the
base64 SHA-256 of exactly that certificate's public key (and a ``--user-data-dir``, without which
Chromium ignores the flag); certificate verification stays on for everything else, which
``tests/test_tls_peers.py`` proves with a certificate of another key.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

DEADLINE = 30.0


def require(program: str, *names: str) -> str:
    """The path of ``program`` (or of the first of ``names`` found); skips the test without it,
    fails it under ``CI=true`` (``tools/install-system-deps.sh`` installs it there)."""
    for name in (program, *names):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{program} must be installed in CI (tools/install-system-deps.sh)")
    pytest.skip(f"no {program} on PATH; run: bash tools/install-system-deps.sh")


# ------------------------------------------------------------------------- openssl s_client


@dataclass
class SClient:
    """A finished ``openssl s_client`` run: its exit status, data (stdout) and report (stderr)."""

    returncode: int
    stdout: bytes
    stderr: str

    def field(self, name: str) -> str | None:
        """A ``-brief`` summary line's value (``"Protocol version"``, ``"Verification"``...)."""
        for line in self.stderr.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == name:
                return value.strip()
        return None


def s_client(
    port: int,
    cafile: str,
    *,
    send: bytes = b"",
    expect: bytes = b"",
    then: tuple[tuple[bytes, bytes], ...] = (),
    servername: str = "localhost",
    alpn: str | None = None,
    tls12: bool = False,
    cert: str | None = None,
    key: str | None = None,
    extra: tuple[str, ...] = (),
    timeout: float = DEADLINE,
) -> SClient:
    """Run ``openssl s_client -brief`` against 127.0.0.1:``port``, verifying the server against
    ``cafile`` and ``servername`` (failing the handshake otherwise).

    Writes ``send`` and reads its output until ``expect`` has arrived; then the same for each
    ``(send, expect)`` of ``then`` (s_client takes a line starting with ``R`` written on its
    own as "renegotiate", ``K`` as "key update"); then closes its input: s_client sends
    close_notify and exits. Stops early when the server closes.
    """
    openssl = require("openssl")
    cmd = [
        openssl,
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-servername",
        servername,
        "-verify_hostname",
        servername,
        "-CAfile",
        cafile,
        "-verify_return_error",
        "-brief",
    ]
    if alpn:
        cmd += ["-alpn", alpn]
    if tls12:
        cmd += ["-tls1_2"]
    if cert:
        cmd += ["-cert", cert, "-key", key or cert]
    cmd += list(extra)
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
    assert stdin is not None and stdout is not None and stderr is not None
    errors: list[bytes] = []
    drain = threading.Thread(target=lambda: errors.append(stderr.read()), daemon=True)
    drain.start()
    out = bytearray()
    deadline = time.monotonic() + timeout
    os.set_blocking(stdout.fileno(), False)
    try:
        for data, wanted in ((send, expect), *then):
            if data:
                try:
                    stdin.write(data)
                    stdin.flush()
                except BrokenPipeError:
                    break
            mark = len(out)
            while wanted and wanted not in out[mark:] and proc.poll() is None:
                assert time.monotonic() < deadline, f"s_client got {bytes(out)!r}, not {wanted!r}"
                try:
                    chunk = os.read(stdout.fileno(), 65536)
                except BlockingIOError:
                    time.sleep(0.01)
                    continue
                if not chunk:
                    break
                out += chunk
        try:
            stdin.close()
        except BrokenPipeError:
            pass
        proc.wait(max(1.0, deadline - time.monotonic()))
        os.set_blocking(stdout.fileno(), True)
        out += stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        drain.join(timeout)
        stdout.close()
        stderr.close()
    return SClient(proc.returncode, bytes(out), b"".join(errors).decode(errors="replace"))


# ------------------------------------------------------------------------- websockets (wss)


def websockets_roundtrip(url: str, context: Any, messages: list[str | bytes]) -> list[Any]:
    """Connect the ``websockets`` client to ``url`` (``wss://``) with the client ``ssl``
    context, send each message and collect the replies, then close with 1000.

    The asyncio client, not the sync one: the sync client reads its ``SSLSocket`` on a
    background thread while the caller's thread writes to it, and OpenSSL forbids two threads
    in one TLS connection. Its GET raced the server's TLS 1.3 session tickets and was lost
    about once in 70 connections, and nearly every close sent a ``decode_error`` alert.
    """
    import asyncio

    from websockets.asyncio.client import connect

    async def roundtrip() -> list[Any]:
        replies = []
        async with connect(url, ssl=context, open_timeout=DEADLINE, close_timeout=10) as ws:
            for message in messages:
                await ws.send(message)
                replies.append(await asyncio.wait_for(ws.recv(), DEADLINE))
        return replies

    return asyncio.run(roundtrip())


# ---------------------------------------------------------------------- headless Chromium


WSS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>gev wss</title></head><body>
<div id="result">pending</div>
<script>
const log = [];
function finish(text) {
  document.getElementById("result").textContent = text;
  fetch("/report?result=" + encodeURIComponent(text)).catch(() => {});
}
try {
  const ws = new WebSocket("WSS_URL");
  ws.binaryType = "arraybuffer";
  ws.onopen = () => ws.send("héllo over tls");
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

#: What :data:`WSS_PAGE` reports against a WebSocket echo server.
WSS_EXPECTED = "text=héllo over tls binary=1,2,3,250 close=1000 clean=true"


class PageServer:
    """An HTTPS server for one page; the page reports its outcome to ``/report``.

    ``/wait`` answers once a report has arrived, holding the page's load event (an iframe
    loads it), so that ``chromium --dump-dom`` prints the finished page.
    """

    def __init__(self, page: str, context: Any) -> None:
        self.reports: list[str] = []
        self.reported = threading.Event()
        body = page.encode()
        outer = self

        class Pages(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path == "/report":
                    outer.reports.extend(parse_qs(url.query).get("result", []))
                    outer.reported.set()
                    data = b"ok"
                elif url.path == "/wait":
                    outer.reported.wait(DEADLINE)
                    data = b"<!doctype html>done"
                elif url.path == "/":
                    data = body
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
        self._http.daemon_threads = True
        self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
        self.port: int = self._http.server_port
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(DEADLINE)


@dataclass
class BrowserRun:
    reports: list[str]
    dom: str
    log: str


def chromium_open(url: str, profile: Path, *, trust_spki: str | None) -> tuple[str, str]:
    """Open ``url`` in headless Chromium; returns (DOM once loaded, Chromium's log).

    ``trust_spki``: base64 SHA-256 of the one public key to trust although no CA it knows
    signed it (:attr:`gev_core.testing.TLSCertificates.spki_sha256`); ``None`` trusts nothing
    extra.
    """
    browser = require("chromium", "chromium-browser", "google-chrome", "headless_shell")
    flags = [f"--ignore-certificate-errors-spki-list={trust_spki}"] if trust_spki else []
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
            # Required: Chromium honours the SPKI list only with a profile directory of its own.
            f"--user-data-dir={profile}",
            *flags,
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    return proc.stdout, proc.stderr


def chromium_wss(
    wss_url: str,
    page_context: Any,
    profile: Path,
    *,
    trust_spki: str | None,
    host: str = "localhost",
) -> BrowserRun:
    """Serve :data:`WSS_PAGE` over HTTPS (``page_context``) and open it in headless Chromium;
    the page opens ``wss_url``, exchanges a text and a binary message and closes."""
    pages = PageServer(WSS_PAGE.replace("WSS_URL", wss_url), page_context)
    try:
        dom, log = chromium_open(f"https://{host}:{pages.port}/", profile, trust_spki=trust_spki)
    finally:
        pages.close()
    return BrowserRun(pages.reports, dom, log)
