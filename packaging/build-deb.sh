#!/usr/bin/env bash
# Builds a .deb of direct-sockets from this checkout with dpkg-deb (no debhelper, no build
# system), into the folder given (default: dist/). Needs Debian's python3 (3.11) with venv.
#
#   packaging/build-deb.sh [OUT_DIR]
#
# What the package holds:
#   /usr/lib/direct-sockets/venv          the host and its Python dependencies, in a private
#                                         virtual environment on Debian's python3.11 (why: the
#                                         host needs jsonschema >= 4.18 and websockets >= 13,
#                                         newer than Debian 12 ships; a private venv pins them
#                                         and cannot clash with the system's python3-* packages)
#   /usr/lib/direct-sockets/bin/native-host-BROWSER
#                                         the wrappers the manifests name (python -I: nothing
#                                         from a user's environment or site-packages is imported)
#   /etc/.../native-messaging-hosts/direct_sockets.json
#                                         one manifest per browser's system folder (Chromium,
#                                         Chrome, Brave, Edge, Vivaldi, Opera, Firefox, LibreWolf,
#                                         Waterfox), each derived from manifests/direct_sockets.json
#                                         by the package's own code (conffiles)
#   /usr/share/direct-sockets/extension   the extension to load unpacked (a link into the venv:
#                                         the very folder `direct-sockets extension-path` prints)
#   /usr/bin/direct-sockets               the command
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
out=$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)
python=${DEB_PYTHON:-/usr/bin/python3.11}
prefix=/usr/lib/direct-sockets

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/root
venv=$stage$prefix/venv

# Built from a clean copy: setuptools reuses build/ and *.egg-info where it builds, which could
# carry files since deleted into the package.
mkdir "$work/source"
tar -C "$repo" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist --exclude='*.egg-info' -cf - . | tar -C "$work/source" -xf -
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-compile "$work/source"
"$venv/bin/python" -m pip uninstall -q -y pip setuptools >/dev/null 2>&1 || true
# The scripts pip wrote name the staging folder in their #! line; the package's own launcher
# (below) replaces them. The interpreter links stay: they point at /usr/bin/python3.11.
find "$venv/bin" -mindepth 1 ! -name 'python*' -delete
sed -i "s#^command = .*#command = $python -m venv $prefix/venv#" "$venv/pyvenv.cfg"
site=$("$venv/bin/python" -I -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
site=${site#"$stage"}
# Byte-code compiled as installed (paths without the staging folder), so a user's browser
# never needs to write into /usr.
"$venv/bin/python" -I -m compileall -q -s "$stage" -p / "$stage$site" >/dev/null

version=$("$venv/bin/python" -I -c 'import direct_sockets; print(direct_sockets.__version__)')
arch=$(dpkg --print-architecture)  # cryptography's wheel is built for one machine

# The manifests and wrappers, by the same code `direct-sockets install --system` runs.
"$venv/bin/python" -I - "$stage" "$prefix" <<'PY'
import json, sys
from pathlib import Path
from direct_sockets.install import browsers, installer as install

stage, prefix = Path(sys.argv[1]), sys.argv[2]
ids = install.extension_ids()
for browser in browsers.BROWSERS:
    manifest = Path(browser.linux_system) / "direct_sockets.json"
    wrapper = Path(prefix) / "bin" / f"native-host-{browser.name}"
    text = install.render_wrapper(manifest, "linux", interpreter=f"{prefix}/venv/bin/python", isolated=True)
    for path, body, mode in ((wrapper, text, 0o755), (manifest, json.dumps(install.render_manifest(browser, wrapper, ids), indent=2) + "\n", 0o644)):
        staged = stage / path.relative_to("/")
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_text(body)
        staged.chmod(mode)
PY

mkdir -p "$stage/usr/bin" "$stage/usr/share/direct-sockets" "$stage/usr/share/doc/direct-sockets" "$stage/DEBIAN"
cat > "$stage/usr/bin/direct-sockets" <<SH
#!/bin/sh
exec $prefix/venv/bin/python -I -m direct_sockets "\$@"
SH
ln -s "../../..$site/direct_sockets_extension" "$stage/usr/share/direct-sockets/extension"
cp LICENSE "$stage/usr/share/doc/direct-sockets/copyright"
cp README.md "$stage/usr/share/doc/direct-sockets/README.md"

find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f -exec chmod go-w,a+r {} +
chmod 0755 "$stage/usr/bin/direct-sockets" "$stage$prefix"/bin/*
(cd "$stage" && find etc -type f | sort | sed 's#^#/#') > "$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: direct-sockets
Version: $version-1
Architecture: $arch
Maintainer: direct-sockets developers <direct-sockets@direct-sockets.invalid>
Installed-Size: $size
Depends: python3.11, libc6
Section: net
Priority: optional
Description: Direct Sockets API for web pages: the native messaging host
 TCPSocket, UDPSocket, TCPServerSocket and MulticastController for ordinary
 web pages in Chromium-family browsers and Firefox, through a WebExtension
 and this native messaging host, with the user's consent for each site.
 .
 This package registers the host for every user in each browser's system
 folder and ships the extension in /usr/share/direct-sockets/extension.
CONTROL

deb=$out/direct-sockets_${version}-1_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
