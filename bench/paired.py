"""Per-round msgs/s ratios of two (server, scenario) pairs from a ``run.py --json-out`` file.

    python bench/run.py --servers gev,gev-pb --scenarios 50x64,pb50x64 --repeat 9 \\
        --json-out /tmp/pb.json
    python bench/paired.py /tmp/pb.json gev-pb:pb50x64 gev:50x64

run.py's ratio columns compare servers within one scenario. The protobuf goal compares two
scenarios (framed echo vs plain echo); this prints, for every round, A's msgs/s over B's from
the same round (run back to back), then their median and range.
"""

from __future__ import annotations

import argparse
import json
import statistics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json_file")
    ap.add_argument("a", help="SERVER:SCENARIO, the numerator")
    ap.add_argument("b", help="SERVER:SCENARIO, the denominator")
    args = ap.parse_args()
    with open(args.json_file) as f:
        results = json.load(f)["results"]

    def rates(spec: str) -> dict[int, float]:
        server, scenario = spec.split(":", 1)
        return {
            r["round"]: r["msgs_per_sec"]
            for r in results
            if r["server"] == server and r["scenario"] == scenario and r["ok"]
        }

    a, b = rates(args.a), rates(args.b)
    ratios = []
    for rnd in sorted(set(a) & set(b)):
        ratios.append(a[rnd] / b[rnd])
        print(f"round {rnd}: {a[rnd]:,.0f} / {b[rnd]:,.0f} = {ratios[-1]:.2f}x")
    if not ratios:
        raise SystemExit("no round has both")
    print(
        f"{args.a} / {args.b}: median {statistics.median(ratios):.2f}x over {len(ratios)} rounds"
        f" (range {min(ratios):.2f}-{max(ratios):.2f}x)"
    )


if __name__ == "__main__":
    main()
