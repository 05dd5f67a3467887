#!/usr/bin/env bash
# Debian packages that the builds and tests need, installed with apt-get when missing (CI runs
# this from .ci/run; on a developer machine the tests that need one skip with a message instead).
# On a machine without apt-get (macOS) it only reports what is missing.
#
#   gcc           the compiled build: mypyc's C output and gev-websocket's unmask kernel
#   chromium      the browser tests (tests/test_browser.py, tests/test_examples_pubsub.py)
#   redis-server  gev-pubsub's Redis bridge tests (started by the tests on an ephemeral port)
set -euo pipefail

PACKAGES=(
  gcc
  chromium
  redis-server
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "== system packages: all present (${PACKAGES[*]})"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: please install: ${missing[*]}" >&2
  exit 0
fi
echo "== installing system packages: ${missing[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
