#!/usr/bin/env bash
# The published benchmark set: run it on a quiet machine (nothing else running), then commit
# docs/assets/bench/ (charts and the JSON behind them) and quote the numbers in bench/RESULTS.md.
#
#   bash bench/publish.sh              # about 25 minutes on 2 cores
#   REPEAT=3 bash bench/publish.sh     # fewer rounds
#   PYTHON=python3.12 bash bench/publish.sh
#   bash bench/publish.sh --dry-run    # check the commands, print the plan, run nothing
#
# Needs the bench environment's packages for the reference servers (uvloop, picows,
# websockets) and matplotlib: run it through hatch, `python -m hatch run bench:publish`, or
# with a Python that has them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
REPEAT=${REPEAT:-5}
OUT=docs/assets/bench
DRY=()
[ "${1:-}" = "--dry-run" ] && DRY=(--dry-run)
mkdir -p "$OUT"
[ ${#DRY[@]} -eq 0 ] && rm -f "$OUT/report.md"
run() { echo "+ $*" >&2; "$@"; }

run $PY bench/run.py --servers gev,gev-pb,uvloop,asyncio,c \
  --scenarios 50x64,500x64,2000x64,50x4k,50x64x16,pb50x64 --repeat "$REPEAT" \
  --json-out "$OUT/tcp.json" --markdown "$OUT/report.md" "${DRY[@]}"
run $PY bench/run.py --servers gev-ws,picows,websockets \
  --scenarios ws50x64,ws500x64,ws2000x64,ws50x4k --baseline picows --repeat "$REPEAT" \
  --json-out "$OUT/ws.json" --markdown "$OUT/report.md" "${DRY[@]}"
run $PY bench/run.py --servers gev,gev-ws,uvloop,asyncio,picows,websockets,c \
  --scenarios memory --repeat 1 --json-out "$OUT/memory.json" --markdown "$OUT/report.md" \
  "${DRY[@]}"
[ ${#DRY[@]} -eq 0 ] || exit 0
run $PY bench/charts.py "$OUT/tcp.json" "$OUT/ws.json" "$OUT/memory.json" --out "$OUT"
echo "charts and data in $OUT; the Markdown report in $OUT/report.md" >&2
