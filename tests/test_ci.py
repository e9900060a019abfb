"""Tests that cannot run on a machine skip there, saying why; under CI they fail instead, so a
CI without a private network or the tests' own DNS server cannot lose them in silence."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = '''
def test_needs_dns(dns):
    pass

def test_needs_private_network(private_network):
    pass
'''


def run_probe(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """The probe's two tests, with this suite's fixtures, where no namespace can be made."""
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["DIRECT_SOCKETS_TEST_NETNS"] = "0"  # as on a machine without user namespaces
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "tests.conftest", "-p", "no:cacheprovider", str(tmp_path / "test_probe.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_a_missing_network_fails_the_tests(tmp_path: Path, ci: str) -> None:
    result = run_probe(tmp_path, ci)
    assert result.returncode == 1, result.stdout
    assert "2 errors" in result.stdout and "CI must run this test" in result.stdout, result.stdout  # failed in setup


def test_elsewhere_they_skip_saying_why(tmp_path: Path) -> None:
    result = run_probe(tmp_path, None)
    assert result.returncode == 0, result.stdout
    assert "2 skipped" in result.stdout and "DIRECT_SOCKETS_TEST_NETNS=0" in result.stdout, result.stdout
