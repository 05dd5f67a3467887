"""Run Autobahn|Testsuite's fuzzing client against a WebSocket server on loopback, then judge it.

    python tools/autobahn/run.py PORT OUTDIR [--cases "1.*,2.*"] [--exclude "12.*,13.*"]
    python tools/autobahn/run.py --summary OUTDIR        # judge an existing report again

Writes ``OUTDIR/fuzzingclient.json`` (the spec), runs ``wstest -m fuzzingclient`` (its log in
``OUTDIR/wstest.log``; the report in ``OUTDIR/index.json`` and ``index.html``), then prints the
counts per behaviour and the ids of every case that is not plainly OK.

A case passes when its ``behavior`` is OK, NON-STRICT or INFORMATIONAL and its ``behaviorClose``
is OK or INFORMATIONAL. wstest itself exits 0 whatever the cases did, and writes an empty report
when nothing listens: only this verdict counts.

Exit status: 0 every case passed; 1 some case failed; 2 bad usage, nothing listening or no
report; 3 wstest failed or timed out. Install wstest first: ``bash tools/autobahn/setup.sh``.
Environment: ``AUTOBAHN_PREFIX`` (default /opt/autobahn), ``AUTOBAHN_TIMEOUT`` (seconds,
default 3600).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

GOOD_BEHAVIOR = {"OK", "NON-STRICT", "INFORMATIONAL"}
GOOD_CLOSE = {"OK", "INFORMATIONAL"}
ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]


def wstest_path() -> Path:
    return Path(os.environ.get("AUTOBAHN_PREFIX", "/opt/autobahn")) / "bin" / "wstest"


def _case_key(case: str) -> list[int | str]:
    return [int(p) if p.isdigit() else p for p in case.split(".")]


def failures(report: dict[str, dict[str, str]]) -> dict[str, tuple[str, str]]:
    """Cases that do not pass: case id -> (behavior, behaviorClose)."""
    return {
        case: (r["behavior"], r["behaviorClose"])
        for case, r in report.items()
        if r["behavior"] not in GOOD_BEHAVIOR or r["behaviorClose"] not in GOOD_CLOSE
    }


def summarize(outdir: Path) -> int:
    index = outdir / "index.json"
    if not index.exists():
        print(f"no report in {outdir}")
        return 2
    agents = json.loads(index.read_text())
    if not agents:
        print("empty report (did the server accept the connections?)")
        return 2
    status = 0
    for agent, report in sorted(agents.items()):
        behavior = Counter(r["behavior"] for r in report.values())
        close = Counter(r["behaviorClose"] for r in report.values())
        keys = ORDER + sorted(set(behavior) - set(ORDER))
        print(f"{agent}: {len(report)} cases")
        print("  behavior:      " + "  ".join(f"{k}={behavior.get(k, 0)}" for k in keys))
        print("  behaviorClose: " + "  ".join(f"{k}={v}" for k, v in sorted(close.items())))
        for kind in keys[1:]:
            ids = sorted((c for c, r in report.items() if r["behavior"] == kind), key=_case_key)
            if ids:
                print(f"  {kind}: {' '.join(ids)}")
        bad = failures(report)
        if bad:
            status = 1
            print(f"  FAILING ({len(bad)}): " + " ".join(sorted(bad, key=_case_key)))
    return status


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def run(
    port: int, outdir: Path, cases: str, exclude: str, agent: str = "gev", path: str = "/"
) -> int:
    wstest = wstest_path()
    if not wstest.exists():
        print(f"{wstest} is missing: run tools/autobahn/setup.sh first", file=sys.stderr)
        return 2
    if not _listening(port):
        print(f"nothing listens on 127.0.0.1:{port}", file=sys.stderr)
        return 2
    outdir.mkdir(parents=True, exist_ok=True)
    outdir = outdir.resolve()

    def split(text: str) -> list[str]:
        return [c.strip() for c in text.split(",") if c.strip()]

    spec = {
        "outdir": str(outdir),
        "options": {"failByDrop": False},
        "servers": [{"agent": agent, "url": f"ws://127.0.0.1:{port}{path}"}],
        "cases": split(cases) or ["*"],
        "exclude-cases": split(exclude),
        "exclude-agent-cases": {},
    }
    (outdir / "fuzzingclient.json").write_text(json.dumps(spec, indent=2))
    (outdir / "index.json").unlink(missing_ok=True)
    timeout = float(os.environ.get("AUTOBAHN_TIMEOUT", "3600"))
    print(f"[autobahn] ws://127.0.0.1:{port}{path} cases={spec['cases']} -> {outdir}", flush=True)
    started = time.monotonic()
    with (outdir / "wstest.log").open("wb") as log:
        try:
            proc = subprocess.run(
                [str(wstest), "-m", "fuzzingclient", "-s", str(outdir / "fuzzingclient.json")],
                cwd=outdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = -1
    log_text = (outdir / "wstest.log").read_text(errors="replace")
    ran = log_text.count("Running test case ID")
    print(f"[autobahn] wstest exit {code}, {ran} cases in {time.monotonic() - started:.0f} s")
    verdict = summarize(outdir)
    if code != 0:
        print(log_text[-3000:], file=sys.stderr)
        return 3
    return verdict


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("port", nargs="?", type=int, help="where the server listens on 127.0.0.1")
    ap.add_argument("outdir", nargs="?", type=Path, help="where the report goes")
    ap.add_argument("--cases", default="*", help="comma-separated case patterns (default: all)")
    ap.add_argument("--exclude", default="", help="comma-separated case patterns to skip")
    ap.add_argument("--agent", default="gev", help="name of the server in the report")
    ap.add_argument("--path", default="/", help="URL path to connect to")
    ap.add_argument("--summary", type=Path, metavar="OUTDIR", help="only judge this report")
    args = ap.parse_args()
    if args.summary is not None:
        return summarize(args.summary)
    if args.port is None or args.outdir is None:
        ap.error("PORT and OUTDIR are required")
    return run(args.port, args.outdir, args.cases, args.exclude, args.agent, args.path)


if __name__ == "__main__":
    sys.exit(main())
