"""The .deb from packaging/build-deb.sh: built here, its contents and control fields read with
dpkg-deb, unpacked with `dpkg -x` into a throw-away root (never installed on this machine),
and the host it installs started through a handshake."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from direct_sockets.install import browsers
from direct_sockets.install.doctor import ping
from direct_sockets.install.installer import extension_ids
from tests.conftest import ROOT
from tests.support.installed import offline_pip_env

PREFIX = "/usr/lib/direct-sockets"

pytestmark = pytest.mark.skipif(not (shutil.which("dpkg-deb") and Path("/usr/bin/python3.11").exists()),
                                reason="the .deb is built with dpkg-deb on Debian's python3.11")


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("deb")
    result = subprocess.run([str(ROOT / "packaging" / "build-deb.sh"), str(out)], capture_output=True, text=True,
                            timeout=600, env=offline_pip_env())
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.parent == out and path.exists()
    yield path


@pytest.fixture(scope="module")
def unpacked(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, timeout=120)
    return root


def test_control_fields(deb: Path) -> None:
    fields = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    control = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line and not line.startswith(" "))
    import direct_sockets

    assert control["Package"] == "direct-sockets" and control["Version"] == f"{direct_sockets.__version__}-1"
    assert control["Architecture"] == subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    assert "python3.11" in control["Depends"] and control["Section"] == "net" and int(control["Installed-Size"]) > 1000
    # The manifests in /etc are the administrator's to change: dpkg keeps their changes.
    conffiles = subprocess.run(["dpkg-deb", "-I", str(deb), "conffiles"], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(conffiles) == sorted(f"{b.linux_system}/direct_sockets.json" for b in browsers.BROWSERS if b.linux_system.startswith("/etc/"))


def test_contents_a_manifest_in_every_browsers_system_folder(deb: Path) -> None:
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    entries = {}
    for line in listing.splitlines():
        mode, owner, *_rest = line.split()
        name = line.split(" ./", 1)[1].split(" -> ")[0]
        entries["/" + name.rstrip("/")] = (mode, owner)
    for browser in browsers.BROWSERS:
        assert entries[f"{browser.linux_system}/direct_sockets.json"] == ("-rw-r--r--", "root/root"), browser.name
        assert entries[f"{PREFIX}/bin/native-host-{browser.name}"] == ("-rwxr-xr-x", "root/root"), browser.name
    assert entries["/usr/bin/direct-sockets"][0] == "-rwxr-xr-x"
    assert entries["/usr/share/direct-sockets/extension"][0].startswith("l")
    # Nothing a user can write, and nothing of the build machine's checkout or staging folder.
    assert all(owner == "root/root" and mode[5] != "w" and mode[8] != "w" for mode, owner in entries.values() if not mode.startswith("l"))
    assert str(ROOT) not in listing


def test_manifests_derive_from_the_template_and_name_the_packaged_wrappers(unpacked: Path) -> None:
    template = json.loads((ROOT / "manifests" / "direct_sockets.json").read_text())
    ids = extension_ids()
    for browser in browsers.BROWSERS:
        manifest = json.loads((unpacked / browser.linux_system.lstrip("/") / "direct_sockets.json").read_text())
        assert {k: manifest[k] for k in ("name", "description", "type")} == {k: template[k] for k in ("name", "description", "type")}
        assert manifest["path"] == f"{PREFIX}/bin/native-host-{browser.name}"
        if browser.family == "chromium":
            assert manifest["allowed_origins"] == [f"chrome-extension://{ids.chrome}/"]
        else:
            assert manifest["allowed_extensions"] == [ids.gecko]
        wrapper = (unpacked / manifest["path"].lstrip("/")).read_text()
        assert f"exec {PREFIX}/venv/bin/python -I -m direct_sockets native-host --manifest {browser.linux_system}/direct_sockets.json" in wrapper
    extension = (unpacked / "usr/share/direct-sockets/extension").resolve()
    assert unpacked in extension.parents and (extension / "manifest.json").read_bytes() == (ROOT / "extension/manifest.json").read_bytes()


def _rerooted(script: Path, root: Path, into: Path) -> Path:
    """The packaged script with its absolute paths taken under `root`: what it would run once
    installed, run from the unpacked tree."""
    text = script.read_text().replace(f" {PREFIX}/", f" {root}{PREFIX}/").replace("--manifest /", f"--manifest {root}/")
    into.write_text(text)
    into.chmod(0o755)
    return into


@pytest.mark.parametrize("browser", ["chromium", "firefox"])
def test_the_packaged_host_answers_a_handshake(browser: str, unpacked: Path, tmp_path: Path, isolated_env: dict[str, str]) -> None:
    table = browsers.get(browser)
    manifest = unpacked / table.linux_system.lstrip("/") / "direct_sockets.json"
    wrapper = _rerooted(unpacked / PREFIX.lstrip("/") / "bin" / f"native-host-{browser}", unpacked, tmp_path / "wrapper")
    args = [f"chrome-extension://{extension_ids().chrome}/"] if browser == "chromium" else [str(manifest), extension_ids().gecko]
    hello = ping(wrapper, args)
    assert hello["type"] == "hello"
    # It is the packaged code that answered: the venv inside the tree, not this checkout.
    python = unpacked / PREFIX.lstrip("/") / "venv/bin/python"
    where = subprocess.run([str(python), "-I", "-c", "import direct_sockets; print(direct_sockets.__file__)"], capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(unpacked / PREFIX.lstrip("/") / "venv/lib/")), where
    command = _rerooted(unpacked / "usr/bin/direct-sockets", unpacked, tmp_path / "direct-sockets")
    assert subprocess.run([str(command), "extension-path"], capture_output=True, text=True, check=True, env=isolated_env).stdout.strip().startswith(str(unpacked))
