#!/usr/bin/env bash
# Every wall-clock goal of the open issues in one side-by-side run: run it on a quiet machine
# (nothing else running) and quote the medians and ratios in bench/RESULTS.md with the machine.
#
#   bash bench/goals.sh                 # about 20 minutes on 2 cores with REPEAT=3
#   REPEAT=5 bash bench/goals.sh        # steadier, ~35 minutes
#   bash bench/goals.sh --dry-run       # check the commands and print the plan only
#
# The servers run what users install: the compiled wheels (tools/build_wheels.py; needs a C
# compiler) in a fresh environment with the reference servers' packages. SERVER_PYTHON=PATH
# uses another interpreter instead (with GEV_PURE_PYTHON=1 in the environment gev runs pure).
# The report lands in bench/.build/goals.md (Markdown, one table per comparison) and the raw
# numbers in bench/.build/goals-*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
REPEAT=${REPEAT:-3}
OUT=bench/.build
DRY=()
[ "${1:-}" = "--dry-run" ] && DRY=(--dry-run)
run() { echo "+ $*" >&2; "$@"; }

if [ -n "${SERVER_PYTHON:-}" ]; then
  SERVERS=(--python "$SERVER_PYTHON")
elif [ ${#DRY[@]} -eq 0 ]; then
  tag=$($PY -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  run $PY tools/build_wheels.py
  run $PY -m venv --clear dist/venv-goals
  run dist/venv-goals/bin/python -m pip install -q dist/wheels/"$tag"/gev_*.whl \
    uvloop picows websockets wsproto prometheus-client
  SERVERS=(--python dist/venv-goals/bin/python --no-src-path)
else
  SERVERS=()
fi

mkdir -p "$OUT"
[ ${#DRY[@]} -eq 0 ] && rm -f "$OUT/goals.md"
bench() {  # bench NAME SERVERS SCENARIOS BASELINE
  run $PY bench/run.py "${SERVERS[@]}" --servers "$2" --scenarios "$3" --baseline "$4" \
    --repeat "$REPEAT" --json-out "$OUT/goals-$1.json" --markdown "$OUT/goals.md" "${DRY[@]}"
}
# Compiled hot paths: echo vs uvloop (and the C floor), the Unix socket next to TCP.
bench echo gev,uvloop,asyncio,c 50x64,500x64,50x4k,50x64x16,unix50x64 uvloop
# Protobuf framing vs the plain echo (same scenario shape: compare with the echo table).
bench protobuf gev-pb,uvloop pb50x64 uvloop
# WebSocket vs picows, default install.
bench websocket gev-ws,picows,websockets ws50x64,ws50x4k picows
# TLS vs asyncio and uvloop serving the same certificate, and the bare C OpenSSL floor.
bench tls gev,asyncio,uvloop,c-tls tls50x64,tls50x4k asyncio
# The reverse proxy vs the idiomatic asyncio one on uvloop.
bench proxy gev-proxy,uvloop-proxy,asyncio-proxy proxy50x64,proxy50x4k uvloop-proxy
# Handlers that sleep 1 ms: thread pool and async, against the same service on uvloop.
bench sleep gev-sleep-thread,gev-sleep-async,uvloop-sleep-thread,uvloop-sleep-async sleep1000 \
  uvloop-sleep-async
# Metrics: not installed, installed but off, on (budget: <= 3 % of msgs/s).
bench metrics gev-metrics-none,gev-metrics-off,gev-metrics-on 50x64 gev-metrics-none
[ ${#DRY[@]} -eq 0 ] && echo "report in $OUT/goals.md" >&2
