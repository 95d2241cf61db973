"""The `workers:` supervisor must reach its fork with prometheus_client not yet imported:
multiprocess mode is chosen when prometheus_client is first imported."""

from __future__ import annotations

import subprocess
import sys


def test_run_imports_no_prometheus_before_the_workers_fork() -> None:
    """`forwarder run` loads cli, config, daemon and workers in the supervisor: none of them
    may import prometheus_client (or the server, which does)."""
    code = ("import sys, forwarder.cli, forwarder.process.daemon, forwarder.process.workers\n"
            "assert 'prometheus_client' not in sys.modules, 'prometheus_client'\n"
            "assert 'forwarder.server' not in sys.modules, 'forwarder.server'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
