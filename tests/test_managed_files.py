"""The files a managed install writes (docs/DEPLOY.md); Chromium and Firefox installing from
them, and keeping the extension across a restart, is tests/browser/test_managed.py.

- The CRX3 we sign carries the same ID and key as one Chromium packs with the same key, and a
  signature that verifies.
- The update manifest and the policy name that CRX and that ID; the host answers the ID given.
- Policies: ours added, an administrator's others kept; a damaged file is refused, unchanged.
"""

from __future__ import annotations

import json
import struct
import subprocess
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from direct_sockets.install import managed
from direct_sockets.install import pack
from direct_sockets.install.installer import extension_ids
from tests.browser.harness import CHROMIUM_BINARY
from tests.conftest import cli

ROOT = Path(__file__).resolve().parents[1]
EXTENSION = ROOT / "extension"


def extension_version() -> str:
    return str(json.loads((EXTENSION / "manifest.json").read_text())["version"])


# -- CRX3 -----------------------------------------------------------------------------------


def _fields(data: bytes) -> list[tuple[int, bytes]]:
    """The length-delimited fields of a protobuf message (all CRX3's header has)."""
    out, i = [], 0

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        key = varint()
        assert key & 7 == 2, "only length-delimited fields"
        size = varint()
        out.append((key >> 3, data[i:i + size]))
        i += size
    return out


def _parse_crx(crx: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(public key, signature, signed header data, zip) of a CRX3 with one RSA proof."""
    magic, version, size = crx[:4], *struct.unpack("<II", crx[4:12])
    assert (magic, version) == (b"Cr24", 3)
    header = dict(_fields(crx[12:12 + size]))
    proof = dict(_fields(header[2]))
    return proof[1], proof[2], header[10000], crx[12 + size:]


def test_our_crx3_matches_chromiums_own_and_verifies(tmp_path: Path) -> None:
    key, made = managed.load_or_create_key(tmp_path / "key.pem")
    assert made and (tmp_path / "key.pem").stat().st_mode & 0o777 == 0o600
    chrome_zip = pack.pack(tmp_path / "dist")[0]
    payload = chrome_zip.read_bytes()
    public, signature, signed_data, body = _parse_crx(managed.crx3(payload, key))
    assert body == payload
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert public == der and dict(_fields(signed_data))[1] == managed.crx_id_bytes(der)
    key.public_key().verify(signature, b"CRX3 SignedData\x00" + struct.pack("<I", len(signed_data)) + signed_data + body,
                            padding.PKCS1v15(), hashes.SHA256())
    if not Path(CHROMIUM_BINARY).exists():
        pytest.skip("Chromium is not here to pack the same folder")
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(chrome_zip) as archive:
        archive.extractall(unpacked)
    subprocess.run([CHROMIUM_BINARY, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'p'}",
                    f"--pack-extension={unpacked}", f"--pack-extension-key={tmp_path / 'key.pem'}"], capture_output=True, timeout=120)
    theirs = _parse_crx((tmp_path / "unpacked.crx").read_bytes())
    assert theirs[0] == public and theirs[2] == signed_data  # the same key, so the same ID


def test_the_extension_id_is_chromiums_for_the_key() -> None:
    # The manifest's `key` and its ID as chrome://extensions shows it (install.py's algorithm).
    import base64

    manifest = json.loads((EXTENSION / "manifest.json").read_text())
    assert managed.extension_id(base64.b64decode(manifest["key"])) == extension_ids().chrome


def test_a_key_that_is_not_one_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "key.pem"
    bad.write_text("not a key")
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        managed.load_or_create_key(bad)
    assert bad.read_text() == "not a key"


# -- policies -------------------------------------------------------------------------------


def test_firefox_policies_keep_the_administrators_others(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    theirs = {"policies": {"DisableTelemetry": True, "ExtensionSettings": {"other@example.org": {"installation_mode": "blocked"}}}}
    (policies / "policies.json").write_text(json.dumps(theirs))
    cli(isolated_env, "managed", "firefox", "--out", str(tmp_path / "out"), "--policies-dir", str(policies))
    written = json.loads((policies / "policies.json").read_text())["policies"]
    gecko = extension_ids().gecko
    assert written["DisableTelemetry"] is True and written["ExtensionSettings"]["other@example.org"] == {"installation_mode": "blocked"}
    assert written["ExtensionSettings"][gecko] == {"installation_mode": "force_installed", "install_url": (tmp_path / "out" / "direct-sockets.xpi").as_uri()}
    assert written["Preferences"]["xpinstall.signatures.required"] == {"Value": False, "Status": "locked"}
    with zipfile.ZipFile(tmp_path / "out" / "direct-sockets.xpi") as archive:
        assert json.loads(archive.read("manifest.json"))["browser_specific_settings"]["gecko"]["id"] == gecko
    removed = cli(isolated_env, "managed", "firefox", "--policies-dir", str(policies), "--remove")
    assert "removed" in removed.stdout
    after = json.loads((policies / "policies.json").read_text())["policies"]
    assert gecko not in after["ExtensionSettings"] and after["DisableTelemetry"] is True


def test_a_damaged_policies_file_is_refused_and_left_as_it_was(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    (tmp_path / "policies.json").write_text("{not json")
    result = cli(isolated_env, "managed", "firefox", "--out", str(tmp_path / "out"), "--policies-dir", str(tmp_path), check=False)
    assert result.returncode == 2 and "is not valid JSON" in result.stderr
    assert (tmp_path / "policies.json").read_text() == "{not json"


def test_chromium_policy_names_the_crx_the_key_makes(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    key = tmp_path / "deployer.pem"
    result = cli(isolated_env, "managed", "chromium", "--key", str(key), "--out", str(tmp_path / "out"), "--policies-dir", str(tmp_path / "managed"))
    ext_id = managed.extension_id(managed.public_der(managed.load_or_create_key(key)[0]))
    assert f"--extension-id {ext_id}" in result.stdout
    xml_url = (tmp_path / "out" / "updates.xml").as_uri()
    assert json.loads((tmp_path / "managed" / "direct-sockets.json").read_text()) == {"ExtensionInstallForcelist": [f"{ext_id};{xml_url}"]}
    ns = {"g": "http://www.google.com/update2/response"}
    app = ElementTree.parse(tmp_path / "out" / "updates.xml").getroot().find("g:app", ns)
    assert app is not None and app.get("appid") == ext_id
    check = app.find("g:updatecheck", ns)
    assert check is not None and check.get("codebase") == (tmp_path / "out" / "direct-sockets.crx").as_uri()
    assert check.get("version") == extension_version()
    no_key = cli(isolated_env, "managed", "chromium", "--out", str(tmp_path / "out2"), "--policies-dir", str(tmp_path / "m2"), check=False)
    assert no_key.returncode == 2 and "--key" in no_key.stderr and not (tmp_path / "m2").exists()


def test_install_extension_id_sets_allowed_origins(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    profile = tmp_path / "profile"
    ids = ["a" * 32, "bcdefghijklmnopabcdefghijklmnopa"]
    cli(isolated_env, "install", "--browser", "chromium", "--user-data-dir", str(profile), "--extension-id", ids[0], "--extension-id", ids[1])
    manifest = json.loads((profile / "NativeMessagingHosts" / "direct_sockets.json").read_text())
    assert manifest["allowed_origins"] == [f"chrome-extension://{i}/" for i in ids]
    bad = cli(isolated_env, "install", "--browser", "chromium", "--user-data-dir", str(tmp_path / "p2"), "--extension-id", "q" * 32, check=False)
    assert bad.returncode == 2 and "not a Chromium extension ID" in bad.stderr and not (tmp_path / "p2").exists()


def test_a_system_install_forces_the_extension_and_its_uninstall_takes_it_back(tmp_path: Path) -> None:
    """`install --system` / `uninstall --system` on Linux, in a throw-away root."""
    root, key = tmp_path / "root", tmp_path / "deployer.pem"
    said = managed.deploy_for_system(["chromium", "firefox", "opera"], root, key)
    ext_id = managed.key_extension_id(key)
    assert len(said) == 3 and ext_id in said[0]  # opera: no policy folder known, nothing done
    # Turning off Firefox's signature check is said, with the way to keep it on.
    assert "turns off add-on signature checks" in said[2] and "--signed" in said[2]
    packages = root / "usr/local/lib/direct-sockets/extension"
    forced = json.loads((root / "etc/firefox/policies/policies.json").read_text())["policies"]["ExtensionSettings"][extension_ids().gecko]
    assert forced["install_url"] == (packages / "direct-sockets.xpi").as_uri()
    chromium_policy = root / "etc/chromium/policies/managed/direct-sockets.json"
    assert json.loads(chromium_policy.read_text())["ExtensionInstallForcelist"] == [f"{ext_id};{(packages / 'updates.xml').as_uri()}"]
    removed = managed.remove_for_system(["chromium", "firefox"], root, extension_ids().gecko)
    assert not chromium_policy.exists() and not list(packages.iterdir()) and len(removed) == 5
    assert json.loads((root / "etc/firefox/policies/policies.json").read_text())["policies"]["ExtensionSettings"] == {}


def test_crx_key_is_for_system_installs(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    result = cli(isolated_env, "install", "--browser", "chromium", "--user-data-dir", str(tmp_path / "p"), "--crx-key", str(tmp_path / "k.pem"), check=False)
    assert result.returncode == 2 and "--crx-key is for --system" in result.stderr
    assert not (tmp_path / "k.pem").exists() and not (tmp_path / "p").exists()


def test_doctor_checks_the_extension_id_in_use(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    profile, ext_id = tmp_path / "profile", "b" * 32
    args = ["--browser", "chromium", "--user-data-dir", str(profile)]
    cli(isolated_env, "install", *args, "--extension-id", ext_id)
    ok = cli(isolated_env, "doctor", *args, "--extension-id", ext_id)
    assert f"[ok] chromium: allowed_origins lists chrome-extension://{ext_id}/" in ok.stdout and "[ok] chromium: the host answers" in ok.stdout
    # Asked about an ID this install does not serve: the fix names it.
    other = cli(isolated_env, "doctor", *args, "--extension-id", "c" * 32, check=False)
    assert other.returncode == 1 and f"--extension-id {'c' * 32}" in other.stdout and "does not list" in other.stdout


def test_install_system_under_root_forces_the_extension_there(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    """Through the CLI, in a throw-away root (the machine's /etc is not touched)."""
    import os

    if os.geteuid() != 0:
        pytest.skip("a system-wide install checks that root owns what it runs")
    root, key = tmp_path / "root", tmp_path / "deployer.pem"
    result = cli(isolated_env, "install", "--system", "--root", str(root), "--browser", "chromium", "--browser", "firefox",
                 "--crx-key", str(key), check=False)
    if result.returncode == 2 and "refusing to install for every user" in result.stderr:
        pytest.skip(f"this interpreter is not root's alone: {result.stderr.strip()[:200]}")
    assert result.returncode == 0, result.stderr
    ext_id = managed.key_extension_id(key)
    host_manifest = json.loads((root / "etc/chromium/native-messaging-hosts/direct_sockets.json").read_text())
    assert host_manifest["allowed_origins"] == [f"chrome-extension://{ext_id}/"]
    assert (root / "etc/chromium/policies/managed/direct-sockets.json").exists()
    assert extension_ids().gecko in (root / "etc/firefox/policies/policies.json").read_text()
    cli(isolated_env, "uninstall", "--system", "--root", str(root), "--browser", "chromium", "--browser", "firefox")
    assert not (root / "etc/chromium/policies/managed/direct-sockets.json").exists()
    assert not list((root / "usr/local/lib/direct-sockets/extension").iterdir())
