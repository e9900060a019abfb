"""Managed installs: the extension installed by the browser's enterprise policy, so it stays
across restarts without a store and without any developer-mode step (docs/DEPLOY.md).

- Firefox (ESR, Developer Edition, Nightly: the builds that may run unsigned add-ons):
  `policies.json` with `ExtensionSettings` -> `force_installed` from a `file://` xpi, and the
  policy preference `xpinstall.signatures.required: false` (release Firefox ignores it; there the
  xpi must be signed by addons.mozilla.org first). Other policies in the file are kept.
- Chromium family (Linux): a CRX3 signed with the deployer's own RSA key, an update manifest
  (gupdate XML) naming it by `file://` URL, and `ExtensionInstallForcelist` in a JSON file of
  the browser's managed policy folder. The extension's ID follows from the key, so the host's
  `allowed_origins` must name it (`direct-sockets install --extension-id ID`).

The CRX3 is written here (its format is a small protobuf header and a signature, with
`cryptography`, already a dependency), so a deployer needs no browser binary to make one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..files import write_atomically

# Where `install --system` keeps the packages the policies point at: root's, readable by all.
SYSTEM_PACKAGES_DIR = Path("/usr/local/lib/direct-sockets/extension")

# Each browser's managed policy folder on Linux (the browsers read every *.json in it).
CHROMIUM_POLICY_DIRS = {
    "chromium": Path("/etc/chromium/policies/managed"),
    "chrome": Path("/etc/opt/chrome/policies/managed"),
    "chrome-beta": Path("/etc/opt/chrome/policies/managed"),
    "chrome-dev": Path("/etc/opt/chrome/policies/managed"),
    "brave": Path("/etc/brave/policies/managed"),
    "edge": Path("/etc/opt/edge/policies/managed"),
}
# Firefox on Linux reads /etc/firefox/policies/policies.json first (Debian's firefox-esr too,
# checked), then distribution/policies.json in its installation folder.
FIREFOX_POLICY_DIRS = {"firefox": Path("/etc/firefox/policies")}

POLICY_FILE = "direct-sockets.json"  # ours alone, in a Chromium-family managed folder
CRX_MAGIC = b"Cr24"
CRX_VERSION = 3
SIGNED_DATA_PREFIX = b"CRX3 SignedData\x00"


# -- Chromium family: keys, IDs, CRX3 ---------------------------------------------------------


def load_or_create_key(path: Path) -> tuple[rsa.RSAPrivateKey, bool]:
    """The deployer's signing key (PKCS#8 PEM, as `chromium --pack-extension-key` takes), made
    (2048-bit RSA, mode 0600) if the file does not exist. Returns the key and whether it is new."""
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:  # not PEM, or encrypted
            raise ValueError(f"{path}: not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{path}: not an RSA private key (CRX3 here is signed with RSA)")
        return key, False
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return key, True


def public_der(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def crx_id_bytes(public_key_der: bytes) -> bytes:
    return hashlib.sha256(public_key_der).digest()[:16]


def extension_id(public_key_der: bytes) -> str:
    """Chromium's ID for a key: the first 16 bytes of SHA-256 of the DER key, 0-f as a-p."""
    return "".join(chr(ord("a") + int(c, 16)) for c in crx_id_bytes(public_key_der).hex())


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited protobuf field (the only wire type CRX3's header uses)."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def crx3(zip_bytes: bytes, key: rsa.RSAPrivateKey) -> bytes:
    """A CRX3 file: magic, version, header length, header (CrxFileHeader: one sha256_with_rsa
    proof, field 2, and signed_header_data, field 10000, holding SignedData.crx_id), then the zip.
    The signature covers the prefix, the signed data's length and the signed data, then the zip."""
    der = public_der(key)
    signed_data = _field(1, crx_id_bytes(der))
    message = SIGNED_DATA_PREFIX + struct.pack("<I", len(signed_data)) + signed_data + zip_bytes
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    header = _field(2, _field(1, der) + _field(2, signature)) + _field(10000, signed_data)
    return CRX_MAGIC + struct.pack("<II", CRX_VERSION, len(header)) + header + zip_bytes


def update_manifest(ext_id: str, crx_url: str, version: str) -> str:
    """The gupdate XML an update URL serves: where this ID's CRX is, and its version."""
    return (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        "<gupdate xmlns='http://www.google.com/update2/response' protocol='2.0'>\n"
        f"  <app appid={quoteattr(ext_id)}>\n"
        f"    <updatecheck codebase={quoteattr(crx_url)} version={quoteattr(version)} />\n"
        "  </app>\n"
        "</gupdate>\n"
    )


# -- writing files ----------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> None:
    """Atomically, readable by every user's browser whatever the umask."""
    write_atomically(path, data, 0o644, folder_mode=0o755)


def _manifest_of(archive: bytes) -> dict:  # type: ignore[type-arg]
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        return json.loads(zf.read("manifest.json"))


def _packed(browser: str) -> bytes:
    """The package `direct-sockets pack` makes for this browser family ("chrome" or "firefox")."""
    from . import pack

    with tempfile.TemporaryDirectory() as tmp:
        chrome_zip, firefox_xpi = pack.pack(Path(tmp))
        return (chrome_zip if browser == "chrome" else firefox_xpi).read_bytes()


@dataclass(frozen=True)
class Deployed:
    extension_id: str
    written: list[Path]


def deploy_chromium(browser: str, key_path: Path, out: Path, policy_dir: Path | None = None) -> Deployed:
    """Signs the Chrome package with the deployer's key into `out`/direct-sockets.crx, writes
    `out`/updates.xml naming it, and forces it in `browser`'s managed policy folder."""
    key, _ = load_or_create_key(key_path)
    policy_dir = policy_dir or chromium_policy_dir(browser)
    out = out.resolve()
    package = _packed("chrome")
    version = _manifest_of(package)["version"]
    ext_id = extension_id(public_der(key))
    crx_path, xml_path = out / "direct-sockets.crx", out / "updates.xml"
    _write(crx_path, crx3(package, key))
    _write(xml_path, update_manifest(ext_id, crx_path.as_uri(), version).encode())
    policy_path = policy_dir / POLICY_FILE
    policy = {"ExtensionInstallForcelist": [f"{ext_id};{xml_path.as_uri()}"]}
    _write(policy_path, (json.dumps(policy, indent=2) + "\n").encode())
    return Deployed(ext_id, [crx_path, xml_path, policy_path])


def chromium_policy_dir(browser: str) -> Path:
    try:
        return CHROMIUM_POLICY_DIRS[browser]
    except KeyError:
        raise ValueError(f"no managed policy folder known for {browser!r}; name it with --policies-dir") from None


def remove_chromium(browser: str, policy_dir: Path | None = None) -> list[Path]:
    path = (policy_dir or chromium_policy_dir(browser)) / POLICY_FILE
    if path.exists():
        path.unlink()
        return [path]
    return []


# -- Firefox ----------------------------------------------------------------------------------


def firefox_policy_dir(browser: str) -> Path:
    try:
        return FIREFOX_POLICY_DIRS[browser]
    except KeyError:
        raise ValueError(f"no policies folder known for {browser!r}; name it with --policies-dir") from None


def _read_policies(path: Path) -> dict:  # type: ignore[type-arg]
    if not path.exists():
        return {"policies": {}}
    try:
        data = json.loads(path.read_text("utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); fix or remove it first: it is left as it is") from None
    if not isinstance(data, dict) or not isinstance(data.setdefault("policies", {}), dict):
        raise ValueError(f"{path} has no \"policies\" object; fix or remove it first: it is left as it is")
    return data


def firefox_policies(existing: dict, gecko_id: str, xpi_url: str, unsigned: bool) -> dict:  # type: ignore[type-arg]
    """`existing` with our add-on forced in; every other policy stays as it was."""
    data = json.loads(json.dumps(existing))
    policies = data["policies"]
    policies.setdefault("ExtensionSettings", {})[gecko_id] = {"installation_mode": "force_installed", "install_url": xpi_url}
    if unsigned:
        policies.setdefault("Preferences", {})["xpinstall.signatures.required"] = {"Value": False, "Status": "locked"}
    return data


def deploy_firefox(out: Path, policy_dir: Path, xpi: Path | None = None, signed: bool = False) -> Deployed:
    """Puts the xpi (the one given, or a fresh `pack`) in `out` and forces it in
    `policy_dir`/policies.json. `signed`: the xpi is signed by addons.mozilla.org, so the
    signature requirement is left alone."""
    out = out.resolve()
    if xpi is None:
        package = _packed("firefox")
    elif not xpi.is_file():
        raise ValueError(f"{xpi}: no such xpi")
    else:
        package = xpi.read_bytes()
    try:
        gecko_id = _manifest_of(package)["browser_specific_settings"]["gecko"]["id"]
    except (zipfile.BadZipFile, KeyError, ValueError):
        raise ValueError(f"{xpi}: not an xpi of this extension (no manifest.json with a gecko id)") from None
    target = out / "direct-sockets.xpi"
    _write(target, package)
    path = policy_dir / "policies.json"
    data = firefox_policies(_read_policies(path), gecko_id, target.as_uri(), unsigned=not signed)
    _write(path, (json.dumps(data, indent=2) + "\n").encode())
    return Deployed(gecko_id, [target, path])


def remove_firefox(policy_dir: Path, gecko_id: str) -> list[Path]:
    """Takes our add-on out of policies.json (the signature preference stays: another add-on may need it)."""
    path = policy_dir / "policies.json"
    data = _read_policies(path)
    settings = data["policies"].get("ExtensionSettings", {})
    if gecko_id not in settings:
        return []
    del settings[gecko_id]
    _write(path, (json.dumps(data, indent=2) + "\n").encode())
    return [path]


# -- `install --system` / `uninstall --system` ---------------------------------------------------


def system_path(path: Path, root: Path | None) -> Path:
    """A system path, under `root` when one is given (`--root`: tests, staging a machine's tree)."""
    return root / path.relative_to(path.anchor) if root is not None else path


def key_extension_id(key_path: Path) -> str:
    """The Chromium ID of the CRX the key signs (the key is made if the file does not exist)."""
    return extension_id(public_der(load_or_create_key(key_path)[0]))


def deploy_for_system(chosen: list[str], root: Path | None, crx_key: Path | None) -> list[str]:
    """For `install --system` on Linux, once the host is installed: each Firefox chosen gets the
    extension forced by policies.json; each Chromium-family browser with a known policy folder
    too when a signing key is given. Returns what to tell the administrator."""
    out = system_path(SYSTEM_PACKAGES_DIR, root)
    said = []
    for name in chosen:
        if name in FIREFOX_POLICY_DIRS:
            done = deploy_firefox(out, system_path(FIREFOX_POLICY_DIRS[name], root))
        elif name in CHROMIUM_POLICY_DIRS and crx_key is not None:
            done = deploy_chromium(name, crx_key, out, system_path(CHROMIUM_POLICY_DIRS[name], root))
        else:
            continue
        said.append(f"{name}: the extension ({done.extension_id}) is installed by policy: " + ", ".join(map(str, done.written)))
        if name in FIREFOX_POLICY_DIRS:
            # Said every time: an unsigned add-on needs the signature check off for the whole
            # browser, which is the administrator's call to make knowingly (docs/DEPLOY.md).
            said.append(f"{name}: the policy turns off add-on signature checks in this Firefox (ESR, Developer Edition "
                        "and Nightly honour it); to keep them on, sign the xpi and use `direct-sockets managed firefox --signed --xpi FILE`")
    return said


def remove_for_system(chosen: list[str], root: Path | None, gecko_id: str) -> list[Path]:
    """For `uninstall --system`: our policy entries and the packages they named."""
    removed = []
    for name in chosen:
        if name in FIREFOX_POLICY_DIRS:
            removed += remove_firefox(system_path(FIREFOX_POLICY_DIRS[name], root), gecko_id)
        elif name in CHROMIUM_POLICY_DIRS:
            removed += remove_chromium(name, system_path(CHROMIUM_POLICY_DIRS[name], root))
    out = system_path(SYSTEM_PACKAGES_DIR, root)
    packages = ["direct-sockets.xpi"] if any(n in FIREFOX_POLICY_DIRS for n in chosen) else []
    if not any((system_path(d, root) / POLICY_FILE).exists() for d in CHROMIUM_POLICY_DIRS.values()):
        packages += ["direct-sockets.crx", "updates.xml"]  # no Chromium-family policy names them now
    for name in packages:
        if (out / name).exists():
            (out / name).unlink()
            removed.append(out / name)
    return removed
