"""direct-sockets as a user gets it from a wheel: built from this checkout with
`pip wheel --no-deps`, installed into a fresh virtual environment outside the checkout, with
nothing of the checkout on its path. Made once per test session (it takes a while).

The folder is under /tmp with mode 0755 and Debian's own python3.11 when there is one, so a
system-wide install from it is reachable by another user (doctor --system runs it as nobody).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = Path("/usr/bin/python3.11")
# Gathered by `./install.sh --test`: the tests run in a network namespace with no index.
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"


def offline_pip_env() -> dict[str, str]:
    """pip's environment for building and installing from the wheelhouse alone."""
    if not any(WHEELHOUSE.glob("setuptools-*.whl")):
        raise RuntimeError(f"no wheels in {WHEELHOUSE}: run ./install.sh --test first (it gathers what these tests install offline)")
    return {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELHOUSE), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@dataclass(frozen=True)
class InstalledVenv:
    base: Path
    python: Path
    command: Path  # the `direct-sockets` console script
    wheel: Path
    seconds: float  # building and installing, measured

    def run(self, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # Run from a folder outside the checkout, with no PYTHONPATH: only the install counts.
        env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        result = subprocess.run([str(self.command), *args], env=env, capture_output=True, text=True, cwd=self.base, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"direct-sockets {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result


def build() -> InstalledVenv:
    start = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="ds-wheel-", dir="/tmp"))
    base.chmod(0o755)
    wheels = base / "wheels"
    pip_env = offline_pip_env()
    # From a clean copy: setuptools reuses build/ and *.egg-info in the folder it builds in,
    # which would carry stale files into the wheel and hide a missing package-data rule.
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "results*"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, cwd=base, timeout=300, env=pip_env)
    wheel = next(wheels.glob("direct_sockets-*.whl"))
    python = str(DEBIAN_PYTHON) if DEBIAN_PYTHON.exists() else sys.executable
    venv = base / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    # Our wheel from its folder, its dependencies from the wheelhouse: no index, no network.
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                   check=True, capture_output=True, cwd=base, timeout=600, env=pip_env)
    return InstalledVenv(base, venv / "bin" / "python", venv / "bin" / "direct-sockets", wheel, time.monotonic() - start)


def remove(installed: InstalledVenv) -> None:
    shutil.rmtree(installed.base, ignore_errors=True)

