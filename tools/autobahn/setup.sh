#!/usr/bin/env bash
# Install Autobahn|Testsuite's wstest (Python 2.7 only) without Docker.
#
#   bash tools/autobahn/setup.sh           # idempotent: exits at once when wstest is installed
#   bash tools/autobahn/setup.sh --force   # rebuild from scratch
#
# Result: $AUTOBAHN_PREFIX/bin/wstest (default prefix /opt/autobahn), a Python 2.7 virtualenv
# with autobahntestsuite and a resolved, pinned set of its dependencies.
#
# The Python 2.7 interpreter comes from the first of:
#   1. $AUTOBAHN_PY27, a python2.7 binary;
#   2. a pyenv 2.7.x ($PYENV_ROOT, default ~/.pyenv);
#   3. Debian 11's python2.7 packages, downloaded with apt-get through a private apt state
#      (the system's sources and dpkg database are not touched) and unpacked into the prefix.
# AUTOBAHN_PY27_SOURCE=debian forces 3. Needs python3 with pip, gcc (wsaccel builds from source)
# and apt-get. Only package registries are contacted (PyPI, the system's Debian mirror).
set -euo pipefail

PREFIX="${AUTOBAHN_PREFIX:-/opt/autobahn}"
VERSION=25.10.1
VENV="$PREFIX/venv"

say() { echo "[autobahn] $*"; }
fail() { echo "[autobahn] error: $*" >&2; exit 1; }
started=$(date +%s)

if [ "${1:-}" = "--force" ]; then
  say "removing the previous installation"
  rm -rf "$VENV" "$PREFIX/py27" "$PREFIX/virtualenv" "$PREFIX/bin"
elif "$PREFIX/bin/wstest" --autobahnversion 2>/dev/null | grep -q "AutobahnTestSuite $VERSION"; then
  say "wstest $VERSION already installed in $PREFIX"
  exit 0
fi
mkdir -p "$PREFIX"

command -v python3 >/dev/null || fail "python3 is needed to bootstrap the 2.7 virtualenv"
if ! command -v gcc >/dev/null; then
  say "installing gcc (wsaccel is compiled from source)"
  apt-get install -y -qq --no-install-recommends gcc libc6-dev
fi

works27() {
  [ -x "$1" ] && "$1" -c 'import sys, ssl, ctypes, zlib, hashlib; assert sys.version_info[:2] == (2, 7)' \
    >/dev/null 2>&1
}

# ---------------------------------------------------------------- Python 2.7 from Debian 11
debian_python27() {
  local state="$PREFIX/apt" debs="$PREFIX/debs" unpacked="$PREFIX/py27.new" mirror
  mirror="$(sed -n 's/^[[:space:]]*URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
            | grep -v security | head -n1 || true)"
  if [ -z "$mirror" ]; then
    mirror="$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
  fi
  [ -n "$mirror" ] || fail "no Debian mirror in the system's apt sources"
  say "fetching python2.7 from Debian 11 packages (private apt state in $state)"
  mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$debs"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bullseye main" \
    > "$state/sources.list"
  local apt=(apt-get -q -o "Dir::Etc::SourceList=$state/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache"
             -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
             -o APT::Sandbox::User=root)
  "${apt[@]}" update
  rm -f "$debs"/*.deb
  (cd "$debs" && "${apt[@]}" download python2.7-minimal libpython2.7-minimal libpython2.7-stdlib \
      libpython2.7-dev libffi7 libssl1.1)
  # patchelf from the system's own release: downloaded and unpacked, never installed.
  (cd "$debs" && apt-get -q -o APT::Sandbox::User=root download patchelf)
  rm -rf "$unpacked" "$PREFIX/patchelf"
  local deb
  for deb in "$debs"/*.deb; do
    case "$deb" in
      */patchelf_*) dpkg -x "$deb" "$PREFIX/patchelf" ;;
      *) dpkg -x "$deb" "$unpacked" ;;
    esac
  done
  # The extension modules link against libssl1.1 and libffi7, which live only in the prefix.
  local libdir="$PREFIX/py27/usr/lib/x86_64-linux-gnu" mod
  for mod in _ssl _hashlib _ctypes; do
    "$PREFIX/patchelf/usr/bin/patchelf" --set-rpath "\$ORIGIN/../../x86_64-linux-gnu:$libdir" \
      "$unpacked/usr/lib/python2.7/lib-dynload/$mod.x86_64-linux-gnu.so"
  done
  rm -rf "$PREFIX/py27"
  mv "$unpacked" "$PREFIX/py27"
  works27 "$PREFIX/py27/usr/bin/python2.7" || fail "the unpacked python2.7 does not work"
}

PY27=""
if [ "${AUTOBAHN_PY27_SOURCE:-}" != "debian" ]; then
  for candidate in "${AUTOBAHN_PY27:-}" \
      $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python2.7 2>/dev/null | sort -r); do
    if [ -n "$candidate" ] && works27 "$candidate"; then PY27="$candidate"; break; fi
  done
fi
if [ -z "$PY27" ]; then
  works27 "$PREFIX/py27/usr/bin/python2.7" || debian_python27
  PY27="$PREFIX/py27/usr/bin/python2.7"
  export CPPFLAGS="-I$PREFIX/py27/usr/include/python2.7 -I$PREFIX/py27/usr/include ${CPPFLAGS:-}"
fi
say "python 2.7: $PY27"

# ---------------------------------------------------------------- the 2.7 virtualenv
if ! "$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then
  # virtualenv 20.21.1 is the last release able to create Python 2.7 environments.
  say "creating $VENV with virtualenv 20.21.1"
  rm -rf "$VENV" "$PREFIX/virtualenv"
  python3 -m pip install -q --disable-pip-version-check --no-warn-script-location \
    --target "$PREFIX/virtualenv" "virtualenv==20.21.1" > "$PREFIX/virtualenv.log" 2>&1 \
    || { tail -n 20 "$PREFIX/virtualenv.log" >&2; fail "could not fetch virtualenv"; }
  PYTHONPATH="$PREFIX/virtualenv" python3 -m virtualenv -q --no-periodic-update --no-download \
    --app-data "$PREFIX/virtualenv/app-data" -p "$PY27" "$VENV"
fi

# ---------------------------------------------------------------- autobahntestsuite
# The versions pip 20.3 resolves for autobahntestsuite on CPython 2.7, pinned: newer releases of
# several of them dropped 2.7 without saying so in their metadata.
PINS="$PREFIX/pins-py27.txt"
cat > "$PINS" <<'PINS'
autobahntestsuite==25.10.1
autobahn==0.10.9
Twisted==19.10.0
txaio==2.1.0
zope.interface==4.6.0
incremental==16.10.1
constantly==15.1.0
Automat==22.10.0
hyperlink==21.0.0
PyHamcrest==1.10.1
attrs==21.4.0
idna==2.10
typing==3.10.0.0
pyOpenSSL==19.1.0
cryptography==3.3.2
cffi==1.15.1
pycparser==2.21
enum34==1.1.10
ipaddress==1.0.23
service-identity==18.1.0
pyasn1==0.5.1
pyasn1-modules==0.3.0
six==1.16.0
jinja2==2.11.3
markupsafe==1.1.1
Werkzeug==1.0.1
klein==17.10.0
unittest2==1.1.0
traceback2==1.4.0
linecache2==1.0.0
ujson==2.0.3
wsaccel==0.6.6
Cython==3.0.12
setuptools==44.0.0
wheel==0.37.1
argparse==1.4.0
PINS
say "installing autobahntestsuite $VERSION (log: $PREFIX/pip.log)"
# The machine's pip configuration (extra indexes, local wheel folders) is for Python 3: ignore it.
certs=/etc/ssl/certs/ca-certificates.crt
if ! env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_REQUIREMENT PIP_CONFIG_FILE=/dev/null \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_CONSTRAINT="$PINS" \
    ${PIP_INDEX_URL:+PIP_INDEX_URL="$PIP_INDEX_URL"} $( [ -f "$certs" ] && echo "PIP_CERT=$certs" ) \
    "$VENV/bin/python" -m pip install --no-warn-script-location "autobahntestsuite==$VERSION" \
    > "$PREFIX/pip.log" 2>&1; then
  tail -n 30 "$PREFIX/pip.log" >&2
  fail "pip install failed; full log in $PREFIX/pip.log"
fi

mkdir -p "$PREFIX/bin"
ln -sfn "$VENV/bin/wstest" "$PREFIX/bin/wstest"
version="$("$PREFIX/bin/wstest" --autobahnversion 2>&1 | tr '\n' ' ')" || fail "wstest does not run"
echo "$version" | grep -q "AutobahnTestSuite $VERSION" || fail "unexpected wstest version: $version"
say "ready: $PREFIX/bin/wstest ($version) in $(( $(date +%s) - started )) s"
