"""Autobahn|Testsuite (wstest fuzzingclient) against examples/websocket_echo.py.

The CI set: sections 1-10 (framing, pings, reserved bits, opcodes, fragmentation, UTF-8,
close handling, limits; 301 cases) and the first four cases of every permessage-deflate
group in sections 12 and 13 (48 cases, the same idea as wsproto's fast set). The whole
suite (517 cases) takes far longer; see packages/gev-websocket/README.md for its result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools" / "autobahn"
WSTEST = Path(os.environ.get("AUTOBAHN_PREFIX", "/opt/autobahn")) / "bin" / "wstest"

SECTIONS = [f"{n}.*" for n in range(1, 11)]
COMPRESSION = [f"12.{a}.{b}" for a in range(1, 6) for b in range(1, 5)] + [
    f"13.{a}.{b}" for a in range(1, 8) for b in range(1, 5)
]
EXPECTED_CASES = 301 + len(COMPRESSION)

GOOD_BEHAVIOR = {"OK", "NON-STRICT", "INFORMATIONAL"}
GOOD_CLOSE = {"OK", "INFORMATIONAL"}


def _wait_for_setup() -> None:
    """Wait for a tools/autobahn/setup.sh running in the background (``.ci/run``) to finish.

    ``GEV_WSTEST_READY`` names the file its runner writes when setup.sh exits: its exit status
    first. Without the variable there is nothing to wait for.
    """
    ready = os.environ.get("GEV_WSTEST_READY")
    if not ready:
        return
    status = Path(ready)
    deadline = time.monotonic() + float(os.environ.get("GEV_WSTEST_WAIT", "1200"))
    while not status.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"tools/autobahn/setup.sh still running: no {status} yet")
        time.sleep(1.0)
    time.sleep(0.2)  # the status line is written at once; let it land
    code = status.read_text().split()
    if not code or code[0] != "0":
        log = status.with_suffix(".log")
        pytest.fail(f"tools/autobahn/setup.sh failed ({code}); see {log}")


def _available() -> str | None:
    _wait_for_setup()
    if not WSTEST.exists():
        return f"wstest is not installed ({WSTEST}); run: bash tools/autobahn/setup.sh"
    return None


@pytest.mark.slow
def test_autobahn_fuzzingclient(run_example, tmp_path: Path) -> None:
    missing = _available()
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Autobahn must run in CI: {missing}")
        pytest.skip(missing)
    _proc, port = run_example("websocket_echo.py")
    outdir = tmp_path / "autobahn"
    result = subprocess.run(
        [
            sys.executable,
            str(TOOLS / "run.py"),
            str(port),
            str(outdir),
            "--cases",
            ",".join(SECTIONS + COMPRESSION),
            "--agent",
            "gev",
        ],
        capture_output=True,
        text=True,
        timeout=3000,
    )
    print(result.stdout)
    print(result.stderr)
    index = json.loads((outdir / "index.json").read_text())["gev"]
    bad = {
        case: (r["behavior"], r["behaviorClose"])
        for case, r in index.items()
        if r["behavior"] not in GOOD_BEHAVIOR or r["behaviorClose"] not in GOOD_CLOSE
    }
    assert not bad, f"Autobahn cases failed: {bad}\n{result.stdout}"
    assert len(index) == EXPECTED_CASES, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
