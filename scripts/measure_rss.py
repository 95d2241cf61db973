"""Measure the forwarder's resident memory with a full cache: start `forwarder run` with the
bench config (policy on, 1,000,000-entry cache) against a local responder, send N unique
names with dnsperf (each a cache miss that is stored), ask them all once more (hits), and
print VmRSS idle, after the misses and after the hits.

    .venv/bin/python scripts/measure_rss.py [--names 200000] [--port 15397]

Needs dnsperf (bench/run.sh --setup-only installs it) and the bench query files
(bench/.harness/gen/queries/miss.txt). Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_miss import RESPONDER

REPO = Path(__file__).resolve().parent.parent
QUERIES = REPO / "bench" / ".harness" / "gen" / "queries" / "miss.txt"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def dnsperf(port: int, names: Path) -> str:
    out = subprocess.run(["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(names),
                          "-n", "1", "-c", "8", "-q", "150", "-t", "5"],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    return next(line.strip() for line in out.splitlines() if "Queries completed" in line)


def main(count: int, port: int) -> None:
    responder = subprocess.Popen([sys.executable, "-c", RESPONDER], stdout=subprocess.PIPE,
                                 text=True)
    forwarder = None
    work = Path(tempfile.mkdtemp(prefix="forwarder-rss-"))
    try:
        upstream = int(responder.stdout.readline())  # type: ignore[union-attr]
        names = work / "names.txt"
        with QUERIES.open() as source, names.open("w") as out:
            for _, line in zip(range(count), source, strict=False):
                out.write(line)
        config = work / "forwarder.yaml"
        config.write_text(
            f"listen: [{{address: 127.0.0.1, port: {port}}}]\n"
            f"upstreams: {{up: {{servers: ['127.0.0.1:{upstream}']}}}}\n"
            "zones: [{match: '.', upstream: up, policy: private-only}]\n"
            "policies: {private-only: {allowed: [default, 0.0.0.0/0, '::/0']}}\n"
            "cache: {max_entries: 1000000}\n"
            "metrics: {enabled: false}\nallow_root: true\n")
        forwarder = subprocess.Popen([str(REPO / ".venv" / "bin" / "forwarder"), "run", "-c",
                                      str(config)], stderr=subprocess.PIPE, text=True)
        for line in forwarder.stderr:  # type: ignore[union-attr]
            if "serving on" in line:
                break
        time.sleep(0.5)
        print(f"idle: {rss_mb(forwarder.pid):.0f} MB")
        print(f"misses: {dnsperf(port, names)}; {rss_mb(forwarder.pid):.0f} MB")
        print(f"hits:   {dnsperf(port, names)}; {rss_mb(forwarder.pid):.0f} MB")
    finally:
        for proc in (forwarder, responder):
            if proc is not None:
                proc.terminate()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--names", type=int, default=200_000)
    ap.add_argument("--port", type=int, default=15397)
    a = ap.parse_args()
    os.chdir(REPO)
    main(a.names, a.port)
