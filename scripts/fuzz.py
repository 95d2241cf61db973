"""Run the fuzz targets longer than the default suite does: client query handling
(tests/e2e/test_fuzz_client.py) and the upstream-reply reader with the answer policy
(tests/e2e/test_fuzz_upstream.py), each for at most --seconds and --examples.

    .venv/bin/python scripts/fuzz.py [--seconds 300] [--examples 100000]
                                     [--target client|upstream|all]

A failure prints hypothesis's smallest failing example (and the bytes the forwarder sent);
make it a regression test beside the code it broke. Exits with pytest's status.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGETS = {"client": "tests/e2e/test_fuzz_client.py",
           "upstream": "tests/e2e/test_fuzz_upstream.py::"
                       "test_any_upstream_reply_reaches_the_client_readable"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="per fuzz test")
    parser.add_argument("--examples", type=int, default=100_000, help="per fuzz test")
    parser.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    args = parser.parse_args()
    targets = list(TARGETS.values()) if args.target == "all" else [TARGETS[args.target]]
    env = {**os.environ, "FORWARDER_FUZZ_SECONDS": str(args.seconds),
           "FORWARDER_FUZZ_EXAMPLES": str(args.examples)}
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
               "-p", "no:logging", f"--timeout={int(args.seconds * 2 + 120)}",
               "--hypothesis-show-statistics", *targets]
    return subprocess.run(command, cwd=REPO, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
