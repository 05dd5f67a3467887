"""bench/charts.py draws the documentation's charts from bench/run.py's JSON, captioned."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parent.parent
CHARTS = ROOT / "bench" / "charts.py"
PUBLISHED = ROOT / "docs" / "assets" / "bench"


def _render(tmp_path: Path, *files: Path, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.run(
        [sys.executable, str(CHARTS), *map(str, files), "--out", str(tmp_path), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_published_data_renders_into_every_chart_with_machine_and_command(
    tmp_path: Path,
) -> None:
    files = sorted(PUBLISHED.glob("*.json"))
    assert files, "docs/assets/bench has no JSON: run bench/publish.sh"
    proc = _render(tmp_path, *files, extra=("--note", "a note for every caption"))
    assert proc.returncode == 0, proc.stderr
    for name in ("tcp-throughput", "ws-throughput", "scaling", "memory"):
        svg = (tmp_path / f"{name}.svg").read_text()
        ET.fromstring(svg)  # well-formed
        # the command (which may name the servers' interpreter before --servers)
        assert "python bench/run.py " in svg and " --servers gev" in svg
        assert "CPUs, kernel" in svg and "a note for every caption" in svg
        # gev is in every chart
        assert ">gev" in svg
    # the data travels with the charts
    assert {p.name for p in files} <= {p.name for p in tmp_path.glob("*.json")}


def test_every_server_and_scenario_of_a_run_is_drawn(tmp_path: Path) -> None:
    def run(server: str, scenario: str, rnd: int, rate: float) -> dict:
        return {
            "server": server,
            "scenario": scenario,
            "round": rnd,
            "ok": True,
            "msgs_per_sec": rate,
            "bytes_per_conn": 0.0,
            "held": 0,
        }

    doc = {
        "env": {
            "cpu": "Test CPU",
            "cpus": 2,
            "kernel": "6.0",
            "python": "3.12.0",
            "impl": "cpython",
        },
        "argv": ["bench/run.py"],
        "command": "python bench/run.py --servers gev,zzz-server --scenarios 50x64,500x64",
        "scenarios": {
            "50x64": {
                "name": "50x64",
                "mode": "raw",
                "conns": 50,
                "size": 64,
                "inflight": 1,
                "needs": "tcp",
            },
            "500x64": {
                "name": "500x64",
                "mode": "raw",
                "conns": 500,
                "size": 64,
                "inflight": 1,
                "needs": "tcp",
            },
        },
        "results": [
            run(s, sc, r, rate)
            for r in range(3)
            for s, sc, rate in [
                ("gev", "50x64", 1000.0 + r),
                ("zzz-server", "50x64", 777.0),
                ("gev", "500x64", 900.0),
                ("zzz-server", "500x64", 555.0),
            ]
        ],
    }
    data = tmp_path / "in.json"
    data.write_text(json.dumps(doc))
    proc = _render(tmp_path / "out", data)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.svg")) == ["scaling.svg", "tcp-throughput.svg"]
    tcp = (out / "tcp-throughput.svg").read_text()
    assert "zzz-server" in tcp and "Test CPU" in tcp and "1k" in tcp  # median 1001 msgs/s


def test_a_file_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"results": []}')
    proc = _render(tmp_path, bad)
    assert proc.returncode != 0 and "not a bench/run.py --json-out file" in proc.stderr
