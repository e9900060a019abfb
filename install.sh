#!/usr/bin/env bash
# Sets up direct-sockets from this checkout on Debian (or any Linux with Python >= 3.11):
# a virtual environment in .venv, the package in it, and the native host registered for the
# browsers found. Then `direct-sockets doctor` starts the host the way each browser will.
#
#   ./install.sh          set up for this user and check it works
#   ./install.sh --test   also install what the test suite needs (Debian chromium and
#                         firefox-esr, Playwright, marionette_driver, Node.js with the npm
#                         tools pinned in tests/node: web-ext, TypeScript); needs root or sudo
set -euo pipefail
cd "$(dirname "$0")"

want_test=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "install.sh: need root for: $*" >&2; return 1; fi
}

apt_updated=0
apt_install() {
  command -v apt-get >/dev/null || { echo "install.sh: please install: $*" >&2; return 1; }
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "install.sh: Python 3.11 or newer is needed ($python)" >&2
  exit 1
fi
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "== installing python3-venv"
  apt_install python3-venv
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$python" -m venv .venv
fi
echo "== installing direct-sockets into .venv"
.venv/bin/python -m pip install -q --upgrade pip
if [ "$want_test" -eq 1 ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
  # The packaging tests build the wheel and the .deb and install them into fresh environments
  # inside the tests' private network namespace, where no index is reachable: the wheels they
  # need (the build backend and every run-time dependency) are gathered here, once.
  # They also make venvs with Debian's own python3.11 (the .deb is built on it).
  if [ -x /usr/bin/python3.11 ] && ! /usr/bin/python3.11 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "== installing python3-venv"
    apt_install python3-venv
  fi
  echo "== gathering the wheels the packaging tests install offline (.venv/wheelhouse)"
  .venv/bin/python -m pip wheel -q -w .venv/wheelhouse . 'setuptools>=77'
  rm -f .venv/wheelhouse/direct_sockets-*.whl
else
  .venv/bin/python -m pip install -q -e .
fi

if [ "$want_test" -eq 1 ]; then
  missing=()
  [ -x /usr/lib/chromium/chromium ] || missing+=(chromium)
  command -v firefox-esr >/dev/null || missing+=(firefox-esr)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing ${missing[*]}"
    apt_install "${missing[@]}"
  fi
  # web-ext (lints the extension) and TypeScript (compiles the typings), at the versions
  # tests/node/package-lock.json pins, in tests/node/node_modules: nothing global.
  echo "== installing the npm test tools into tests/node"
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$node_major" -lt 20 ]; then
    echo "install.sh: web-ext needs Node.js 20 or newer; this one is $(node --version)" >&2
  fi
  (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== registering the native host for every browser found"
# direct-sockets finds the browsers itself (Chrome, Chromium, Brave, Edge, Vivaldi, Opera,
# Firefox, LibreWolf, Waterfox), and says what to do about Flatpak or Snap ones.
if .venv/bin/direct-sockets install; then
  echo "== checking it works"
  .venv/bin/direct-sockets doctor
else
  echo "== no browser found; registering for Chromium and Firefox anyway"
  .venv/bin/direct-sockets install --browser chromium --browser firefox
  .venv/bin/direct-sockets doctor --browser chromium --browser firefox
fi
cat <<MSG

direct-sockets is set up. Load the extension (the folder $(pwd)/extension):
  Chromium/Chrome/Edge/Brave/Vivaldi/Opera: chrome://extensions -> Developer mode -> Load unpacked
  Firefox/LibreWolf/Waterfox: about:debugging#/runtime/this-firefox -> Load Temporary Add-on -> manifest.json
Then see it work: start the demo and open http://127.0.0.1:8000/ in that browser
  .venv/bin/direct-sockets demo
(a TCP client, UDP and a small TCP server, talking to echo services on 127.0.0.1:7777;
the first use of each asks you in a consent window).
MSG
