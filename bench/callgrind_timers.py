"""Instructions per timer scheduled and cancelled, under callgrind: gev-timers, asyncio, heapq.

    python bench/callgrind_timers.py [--python PY] [--no-src-path] [--n1 50000] [--n2 250000]

The kernel-independent companion of ``packages/gev-timers/benchmarks/schedule_cancel.py``: runs
its implementations under ``valgrind --tool=callgrind`` with n1 and then n2 timers and reports
(Ir(n2) - Ir(n1)) / (n2 - n1), which cancels interpreter start-up. Both runs draw the same n2
random delays first (so drawing them cancels too) and hand the first n to the implementation;
the slice costs a few instructions per timer, the same for every implementation. "bulk" is
schedule n, cancel n, then the structure's own clean-up; "pairs" schedules one timer and
cancels it straight away, n times.

Use ``--python`` with an environment that has the built wheels installed and ``--no-src-path``
to measure the compiled build; by default the tree's ``packages/gev-timers/src`` is used.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "packages" / "gev-timers" / "benchmarks"

_DRIVER = """
import random, sys
sys.path.insert(0, {benchmarks!r})
import schedule_cancel as sc
impl, pattern, n, nmax = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(20240601)
delays = [rng.uniform(0.001, 60.0) for _ in range(nmax)]
sc._timed(sc.IMPLS[pattern][impl], delays[:n])
"""


def instructions(python: str, impl: str, pattern: str, n: int, nmax: int, src: bool) -> int:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(
            [
                str(ROOT / "packages" / "gev-timers" / "src"),
                str(ROOT / "packages" / "gev-core" / "src"),
                str(ROOT / "packages" / "gev-ringbuffer" / "src"),
                env.get("PYTHONPATH", ""),
            ]
        )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        code = _DRIVER.format(benchmarks=str(BENCHMARKS))
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             python, "-c", code, impl, pattern, str(n), str(nmax)],
            env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        m = re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(errors="replace"), re.M)
        if not m:
            raise SystemExit(f"no callgrind totals for {impl} {pattern}")
        return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--no-src-path", action="store_true", help="use the installed gev-timers")
    ap.add_argument("--n1", type=int, default=50_000)
    ap.add_argument("--n2", type=int, default=250_000)
    ap.add_argument("--impls", default="gev-timers,heapq+flag,asyncio")
    ap.add_argument("--patterns", default="pairs,bulk")
    args = ap.parse_args()
    src = not args.no_src_path
    for pattern in args.patterns.split(","):
        rows = {}
        for impl in args.impls.split(","):
            a = instructions(args.python, impl, pattern, args.n1, args.n2, src)
            b = instructions(args.python, impl, pattern, args.n2, args.n2, src)
            rows[impl] = (b - a) / (args.n2 - args.n1)
            print(f"{pattern:6s} {impl:12s} {rows[impl]:8.0f} instructions/timer", flush=True)
        base = rows.get("gev-timers")
        if base:
            for impl, per in rows.items():
                if impl != "gev-timers":
                    print(f"{pattern:6s} gev-timers uses {base / per:.2f}x {impl}'s instructions")


if __name__ == "__main__":
    main()
