"""examples/chat.py as a user runs it: WebSocket clients in rooms, and two headless Chromium
pages chatting in one room through the example's own page."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

sync = pytest.importorskip("websockets.sync.client")
pytest.importorskip("gev_websocket")
pytest.importorskip("gev_pubsub")


def test_chat_rooms_relay_to_everyone_in_the_room_only(run_example):
    _proc, port = run_example("chat.py")
    url = f"ws://127.0.0.1:{port}"
    with (
        sync.connect(f"{url}/room/blue", open_timeout=10) as a,
        sync.connect(f"{url}/room/blue", open_timeout=10) as b,
        sync.connect(f"{url}/", open_timeout=10) as lobby,
    ):
        assert a.recv(timeout=10).startswith("* you joined #blue")
        assert b.recv(timeout=10).startswith("* you joined #blue")
        assert lobby.recv(timeout=10).startswith("* you joined #lobby")
        a.send("ann: hello blue")
        assert a.recv(timeout=10) == "ann: hello blue"
        assert b.recv(timeout=10) == "ann: hello blue"
        lobby.send("lou: hello lobby")
        assert lobby.recv(timeout=10) == "lou: hello lobby"
        with pytest.raises(TimeoutError):
            a.recv(timeout=0.3)
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/room/blue", timeout=10).read()
    assert b"<title>gev chat</title>" in page
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nowhere", timeout=10)
    assert err.value.code == 404


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "headless_shell"):
        path = shutil.which(name)
        if path:
            return path
    return None


class DevTools:
    """Just enough of the Chrome DevTools Protocol: open pages, run JavaScript in them."""

    def __init__(self, ws_url: str) -> None:
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(sync.connect(ws_url, max_size=None, open_timeout=30))
        self.next_id = 0

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv(timeout=30))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]  # type: ignore[no-any-return]

    def open(self, url: str) -> str:
        target = self.call("Target.createTarget", url=url)["targetId"]
        return self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def js(self, session: str, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, session: str, expression: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(session, expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"page never satisfied {expression!r}")
            time.sleep(0.1)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:
            pass
        self._stack.close()


LOG = "Array.from(document.querySelectorAll('#log li')).map(li => li.textContent)"


def say(devtools: DevTools, page: str, text: str) -> None:
    devtools.js(
        page,
        f"document.getElementById('text').value = {json.dumps(text)};"
        " document.getElementById('send').click();",
    )


@pytest.mark.slow
def test_two_chromium_pages_chat_in_one_room(run_example, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("Chromium must be installed in CI (tools/install-system-deps.sh)")
        pytest.skip("no Chromium on PATH (apt-get install chromium)")
    _proc, port = run_example("chat.py")
    proc = subprocess.Popen(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={tmp_path / 'profile'}",
            "about:blank",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    devtools = None
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        ws_url = None
        seen = []
        while ws_url is None:
            line = proc.stderr.readline()
            seen.append(line)
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            if match:
                ws_url = match.group(1)
            elif (not line and proc.poll() is not None) or time.monotonic() > deadline:
                raise AssertionError(f"Chromium did not start: {''.join(seen)[-2000:]}")
        devtools = DevTools(ws_url)
        base = f"http://127.0.0.1:{port}"
        ann = devtools.open(f"{base}/room/tea?name=ann")
        bob = devtools.open(f"{base}/room/tea?name=bob")
        eve = devtools.open(f"{base}/room/coffee?name=eve")
        for page in (ann, bob, eve):
            devtools.wait(page, "window.chatState === 'open'")
        say(devtools, ann, "hello bob")
        assert "ann: hello bob" in devtools.wait(bob, f"{LOG}.includes('ann: hello bob') && {LOG}")
        say(devtools, bob, "hi ann")
        got = devtools.wait(ann, f"{LOG}.includes('bob: hi ann') && {LOG}")
        assert got[0].startswith("* you joined #tea")
        assert got[1:] == ["ann: hello bob", "bob: hi ann"]
        say(devtools, eve, "anyone?")
        devtools.wait(eve, f"{LOG}.includes('eve: anyone?')")
        time.sleep(0.3)
        assert devtools.js(ann, LOG)[1:] == ["ann: hello bob", "bob: hi ann"]  # other room
        assert devtools.js(bob, LOG)[1:] == ["ann: hello bob", "bob: hi ann"]
    finally:
        if devtools is not None:
            devtools.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
