#!/usr/bin/env bash
# Install the Debian packages the builds and tests need (real components, not mocks), each only
# when it is missing. Called by .ci/run; run it by hand on a fresh Debian/Ubuntu machine too.
#
#   bash tools/install-system-deps.sh          # install what is missing
#   bash tools/install-system-deps.sh --check  # list what is missing, install nothing (exit 1 if any)
#
# One package per line in PACKAGES, with what needs it. A test whose program is missing skips
# with a message pointing here, except under CI=true, where it fails. On a machine without
# apt-get (macOS) this only reports what is missing.
set -euo pipefail

PACKAGES=(
  gcc       # the compiled build: mypyc's C output and gev-websocket's unmask kernel
  chromium  # tests/test_browser.py, tests/test_examples_pubsub.py: a real browser
  redis-server  # gev-pubsub's Redis bridge tests (started by the tests on an ephemeral port)
  haproxy   # docs/how-to/tls.md, gev-proxy-protocol's tests, tests/test_behind_haproxy.py
  prometheus  # gev-metrics' tests and docs/deploying.md: a real Prometheus scraping gev
  openssl   # docs/how-to/tls.md (a self-signed certificate); tests/test_tls_peers.py (s_client)
  libssl-dev  # bench: loadgen --tls and the bare C OpenSSL echo (bench/servers/c_tls_echo.c)
)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }

missing=()
for pkg in "${PACKAGES[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done

if [ "${1:-}" = "--check" ]; then
  if [ ${#missing[@]} -eq 0 ]; then echo "all present: ${PACKAGES[*]}"; exit 0; fi
  echo "missing: ${missing[*]}"; exit 1
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "[system-deps] all present: ${PACKAGES[*]}"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[system-deps] please install: ${missing[*]}" >&2
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "[system-deps] installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
