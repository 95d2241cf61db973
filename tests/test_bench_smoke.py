"""The benchmark keeps working: a few-second dnsperf run against the forwarder through
bench/smoke.sh (needs the harness set up: `bench/run.sh --setup-only`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.bench
def test_bench_smoke_answers_queries() -> None:
    done = subprocess.run([str(REPO / "bench" / "smoke.sh")], capture_output=True, text=True,
                          timeout=180, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((REPO / "bench" / ".harness" / "smoke" / "results.json").read_text())
    rows = [r for r in results["rows"] if r["target"] == "fwd"]
    assert rows and all(r.get("completed", 0) > 0 and not r.get("error") for r in rows), rows
