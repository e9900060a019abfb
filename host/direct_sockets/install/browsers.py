"""Where each browser looks for native messaging host manifests, on Linux, macOS and Windows,
per user and for the whole system; and how to tell whether a browser is installed, or installed
in a sandbox (Flatpak, Snap) that cannot start our host.

One table, one row per browser. Chromium's family takes `allowed_origins` and honours
`CHROME_CONFIG_HOME` / `XDG_CONFIG_HOME` on Linux; Firefox's takes `allowed_extensions`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Browser:
    name: str  # the CLI's --browser value
    label: str
    family: str  # "chromium" or "firefox": which manifest format
    linux_user: str  # Chromium family: under the config home; Firefox family: under $HOME
    linux_system: str
    macos_user: str  # under ~/Library/Application Support
    macos_system: str
    windows_key: str  # under HKEY_CURRENT_USER or HKEY_LOCAL_MACHINE
    executables: tuple[str, ...]  # names on PATH that mean it is installed
    flatpak: str = ""  # its Flatpak application id, if it is packaged so
    snap: str = ""  # its Snap name
    # As a Snap, it starts native hosts through the WebExtensions portal (xdg-desktop-portal),
    # which reads the usual per-user manifest: Firefox's snap does, on Ubuntu 22.04 and later.
    snap_portal: bool = False
    # How to get a build that is neither Snap nor Flatpak: Debian packages Chromium and Firefox
    # ESR; the other vendors ship their own packages.
    native_advice: str = ""


BROWSERS: tuple[Browser, ...] = (
    Browser("chrome", "Google Chrome", "chromium", "google-chrome", "/etc/opt/chrome/native-messaging-hosts",
            "Google/Chrome", "/Library/Google/Chrome/NativeMessagingHosts", r"Software\Google\Chrome\NativeMessagingHosts",
            ("google-chrome", "google-chrome-stable"), "com.google.Chrome"),
    Browser("chrome-beta", "Google Chrome Beta", "chromium", "google-chrome-beta", "/etc/opt/chrome_beta/native-messaging-hosts",
            "Google/Chrome Beta", "/Library/Google/Chrome Beta/NativeMessagingHosts", r"Software\Google\Chrome Beta\NativeMessagingHosts",
            ("google-chrome-beta",)),
    Browser("chrome-dev", "Google Chrome Dev", "chromium", "google-chrome-unstable", "/etc/opt/chrome_unstable/native-messaging-hosts",
            "Google/Chrome Dev", "/Library/Google/Chrome Dev/NativeMessagingHosts", r"Software\Google\Chrome Dev\NativeMessagingHosts",
            ("google-chrome-unstable",)),
    Browser("chromium", "Chromium", "chromium", "chromium", "/etc/chromium/native-messaging-hosts",
            "Chromium", "/Library/Application Support/Chromium/NativeMessagingHosts", r"Software\Chromium\NativeMessagingHosts",
            ("chromium", "chromium-browser"), "org.chromium.Chromium", "chromium",
            native_advice="on Debian, `sudo apt install chromium` (on Ubuntu that package is itself a Snap)"),
    Browser("brave", "Brave", "chromium", "BraveSoftware/Brave-Browser", "/etc/opt/brave.com/brave/native-messaging-hosts",
            "BraveSoftware/Brave-Browser", "/Library/Application Support/BraveSoftware/Brave-Browser/NativeMessagingHosts",
            r"Software\BraveSoftware\Brave-Browser\NativeMessagingHosts", ("brave-browser", "brave"), "com.brave.Browser", "brave"),
    Browser("edge", "Microsoft Edge", "chromium", "microsoft-edge", "/etc/opt/edge/native-messaging-hosts",
            "Microsoft Edge", "/Library/Microsoft/Edge/NativeMessagingHosts", r"Software\Microsoft\Edge\NativeMessagingHosts",
            ("microsoft-edge", "microsoft-edge-stable"), "com.microsoft.Edge"),
    Browser("vivaldi", "Vivaldi", "chromium", "vivaldi", "/etc/opt/vivaldi/native-messaging-hosts",
            "Vivaldi", "/Library/Application Support/Vivaldi/NativeMessagingHosts", r"Software\Vivaldi\NativeMessagingHosts",
            ("vivaldi", "vivaldi-stable"), "com.vivaldi.Vivaldi"),
    Browser("opera", "Opera", "chromium", "opera", "/etc/opt/opera/native-messaging-hosts",
            "com.operasoftware.Opera", "/Library/Application Support/com.operasoftware.Opera/NativeMessagingHosts",
            r"Software\Opera Software\NativeMessagingHosts", ("opera",), "com.opera.Opera", "opera"),
    Browser("firefox", "Firefox", "firefox", ".mozilla/native-messaging-hosts", "/usr/lib/mozilla/native-messaging-hosts",
            "Mozilla", "/Library/Application Support/Mozilla/NativeMessagingHosts", r"Software\Mozilla\NativeMessagingHosts",
            ("firefox", "firefox-esr"), "org.mozilla.firefox", "firefox", snap_portal=True,
            native_advice="on Debian, `sudo apt install firefox-esr`"),
    Browser("librewolf", "LibreWolf", "firefox", ".librewolf/native-messaging-hosts", "/usr/lib/librewolf/native-messaging-hosts",
            "LibreWolf", "/Library/Application Support/LibreWolf/NativeMessagingHosts", r"Software\LibreWolf\NativeMessagingHosts",
            ("librewolf",), "io.gitlab.librewolf-community"),
    Browser("waterfox", "Waterfox", "firefox", ".waterfox/native-messaging-hosts", "/usr/lib/waterfox/native-messaging-hosts",
            "Waterfox", "/Library/Application Support/Waterfox/NativeMessagingHosts", r"Software\Waterfox\NativeMessagingHosts",
            ("waterfox",), "net.waterfox.waterfox"),
)

BY_NAME = {b.name: b for b in BROWSERS}


def get(name: str) -> Browser:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown browser {name!r}; known: {', '.join(BY_NAME)}") from None


def manifest_dir(browser: Browser, platform: str, system: bool, home: Path, env: dict[str, str]) -> Path:
    """The directory that holds the browser's host manifests (Linux and macOS). On Windows the
    manifests live in our data directory and a registry key points at each (`windows_key`)."""
    if platform == "darwin":
        if system:
            return Path(browser.macos_system)
        return home / "Library" / "Application Support" / browser.macos_user / "NativeMessagingHosts"
    if platform != "linux":
        raise ValueError(f"manifest directories are for Linux and macOS, not {platform}")
    if system:
        return Path(browser.linux_system)
    if browser.family == "firefox":
        return home / browser.linux_user
    config = env.get("CHROME_CONFIG_HOME") or env.get("XDG_CONFIG_HOME") or str(home / ".config")
    return Path(config) / browser.linux_user / "NativeMessagingHosts"


@dataclass(frozen=True)
class Presence:
    native: bool  # found on PATH
    flatpak: bool
    snap: bool

    @property
    def any(self) -> bool:
        return self.native or self.flatpak or self.snap


def presence(browser: Browser, home: Path, env: dict[str, str]) -> Presence:
    path = env.get("PATH", os.defpath)
    native = any(shutil.which(name, path=path) for name in browser.executables)
    flatpak = bool(browser.flatpak) and any(
        (root / browser.flatpak).is_dir()
        for root in (home / ".local/share/flatpak/app", Path(env.get("DIRECT_SOCKETS_FLATPAK_ROOT", "/var/lib/flatpak")) / "app")
    )
    snap = bool(browser.snap) and (Path(env.get("DIRECT_SOCKETS_SNAP_ROOT", "/snap")) / browser.snap).is_dir()
    return Presence(native, flatpak, snap)


def sandbox_remedy(browser: Browser, found: Presence) -> list[str]:
    """What to tell a user whose browser is sandboxed: most sandboxes cannot start a host
    outside them; Firefox's Snap can, through the WebExtensions portal."""
    native = browser.native_advice or (
        f"the vendor's own package for your distribution (their Linux installation instructions say where; "
        f"most distributions do not package {browser.label})"
    )
    lines = []
    if found.flatpak:
        lines.append(
            f"{browser.label} is installed as a Flatpak ({browser.flatpak}): its sandbox cannot start programs outside it, "
            f"so it cannot start the direct-sockets host. Install a build that is not a Flatpak ({native}) and run "
            f"`direct-sockets install --browser {browser.name}`."
        )
    if found.snap and browser.snap_portal:
        lines.append(
            f"{browser.label} is installed as a Snap ({browser.snap}): it starts the host through the desktop's WebExtensions "
            f"portal (xdg-desktop-portal, as on Ubuntu 22.04 and later), from the usual manifest, which this command writes. "
            "The first time the extension connects, the desktop asks you to allow it; a refusal is remembered "
            "(`flatpak permissions webextensions` shows it)."
        )
    elif found.snap:
        lines.append(
            f"{browser.label} is installed as a Snap ({browser.snap}): strict confinement does not let it start the "
            f"direct-sockets host. Install a build that is not a Snap ({native}) and run "
            f"`direct-sockets install --browser {browser.name}`."
        )
    return lines
