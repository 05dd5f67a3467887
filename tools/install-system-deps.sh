#!/usr/bin/env bash
# Debian packages that the builds and tests need, installed with apt-get when missing.
# One name per line in PACKAGES; called by .ci/run. On a machine without apt-get (macOS) it only
# reports what is missing.
set -euo pipefail

PACKAGES=(
  gcc # the compiled build: mypyc's C output and gev-websocket's unmask kernel
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: please install: ${missing[*]}" >&2
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}"
