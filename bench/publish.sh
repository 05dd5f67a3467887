#!/usr/bin/env bash
# The published benchmark set: run it on a quiet machine (nothing else running), then commit
# docs/assets/bench/ (charts and the JSON behind them) and quote the numbers in bench/RESULTS.md.
#
#   python -m hatch run bench:publish            # about 25 minutes on 2 cores
#   REPEAT=3 python -m hatch run bench:publish   # fewer rounds
#   python -m hatch run bench:publish --dry-run  # check the commands and print the plan only
#
# The servers run what users install: the compiled wheels (tools/build_wheels.py; needs a C
# compiler), in a fresh environment with the reference servers' packages. SERVER_PYTHON=PATH
# uses another interpreter for the servers instead (GEV_PURE_PYTHON=1 in the environment makes
# gev run pure). This script's own Python (PYTHON, default python) needs matplotlib for the
# charts: the hatch bench environment has it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
REPEAT=${REPEAT:-5}
OUT=docs/assets/bench
DRY=()
[ "${1:-}" = "--dry-run" ] && DRY=(--dry-run)
run() { echo "+ $*" >&2; "$@"; }

if [ -n "${SERVER_PYTHON:-}" ]; then
  SERVERS=(--python "$SERVER_PYTHON" --no-src-path)
elif [ ${#DRY[@]} -eq 0 ]; then
  tag=$($PY -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  run $PY tools/build_wheels.py
  run $PY -m venv --clear dist/venv-bench
  run dist/venv-bench/bin/python -m pip install -q dist/wheels/"$tag"/gev_*.whl \
    uvloop picows websockets wsproto
  SERVERS=(--python dist/venv-bench/bin/python --no-src-path)
else
  SERVERS=()
fi

mkdir -p "$OUT"
[ ${#DRY[@]} -eq 0 ] && rm -f "$OUT/report.md"
run $PY bench/run.py "${SERVERS[@]}" --servers gev,gev-pb,uvloop,asyncio,c \
  --scenarios 50x64,500x64,2000x64,50x4k,50x64x16,pb50x64 --repeat "$REPEAT" \
  --json-out "$OUT/tcp.json" --markdown "$OUT/report.md" "${DRY[@]}"
run $PY bench/run.py "${SERVERS[@]}" --servers gev-ws,picows,websockets \
  --scenarios ws50x64,ws500x64,ws2000x64,ws50x4k --baseline picows --repeat "$REPEAT" \
  --json-out "$OUT/ws.json" --markdown "$OUT/report.md" "${DRY[@]}"
run $PY bench/run.py "${SERVERS[@]}" --servers gev,gev-ws,uvloop,asyncio,picows,websockets,c \
  --scenarios memory --repeat 1 --json-out "$OUT/memory.json" --markdown "$OUT/report.md" \
  "${DRY[@]}"
[ ${#DRY[@]} -eq 0 ] || exit 0
run $PY bench/charts.py "$OUT/tcp.json" "$OUT/ws.json" "$OUT/memory.json" --out "$OUT"
echo "charts and data in $OUT; the Markdown report in $OUT/report.md" >&2
