"""A bounded fuzzing job: the suite's properties (tests/test_fuzz.py) with many more inputs.

    .venv/bin/python fuzz/run.py [--examples 3000]

Prints how many inputs ran, how long it took and what failed (hypothesis shrinks each failure
to its smallest input and prints it). The suite itself runs 150 inputs per property.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=3000, help="inputs per property (default 3000)")
    args = parser.parse_args()
    env = {**os.environ, "DIRECT_SOCKETS_FUZZ_EXAMPLES": str(args.examples)}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_fuzz.py")], env=env, cwd=ROOT)
    seconds = time.monotonic() - started
    properties = 3
    print(f"\n{args.examples * properties} inputs ({args.examples} per property, {properties} properties) in {seconds:.0f} s: "
          + ("no failure" if result.returncode == 0 else "FAILURES above"))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
