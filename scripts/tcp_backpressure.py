"""Measure what a TCP client that never reads costs a real `forwarder run` process: one
connection pipelines N queries for a cached ~4 KB answer and reads nothing. Prints the
resident memory before, its peak (VmHWM) and after, how long after the client's last
byte the server dropped the connection, and exits 1 if the peak grew 10 MB or more or
the connection outlived the idle timeout by more than 2 s.

    .venv/bin/python scripts/tcp_backpressure.py [--queries 50000] [--idle-timeout 10]

Everything runs on 127.0.0.1: a fake upstream in this process, the forwarder in another.
tests/e2e/test_tcp_hostile.py asserts the same bound with 10,000 queries.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import free_port
from tests.fakes import FakeUpstream
from tests.processes import forwarder_process
from tests.tcp_clients import big_answer, pipeline_without_reading, reset_or_closed

LIMIT_MB = 10.0


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


async def measure(queries: int, idle_timeout: float) -> bool:
    port, http = free_port(), free_port(socket.SOCK_STREAM)
    async with FakeUpstream() as upstream:
        upstream.handler = big_answer
        cfg = {"listen": [{"address": "127.0.0.1", "port": port}], "allow_root": True,
               "metrics": {"listen": f"127.0.0.1:{http}"},
               "upstreams": {"up": {"servers": [upstream.addr],
                                    "health_check": {"enabled": False}}},
               "zones": [{"match": ".", "upstream": "up"}],
               "limits": {"tcp_idle_timeout": idle_timeout}}
        with tempfile.TemporaryDirectory(prefix="forwarder-tcp-") as tmp:
            async with forwarder_process(Path(tmp), cfg) as fwd:
                for _ in range(3):  # the cache entry, and every code path once
                    answer = await fwd.ask("big.example", "TXT", transport="tcp")
                size = len(answer.to_wire())
                before = status_kb(fwd.pid, "VmRSS")
                sock, sent = await pipeline_without_reading(
                    "127.0.0.1", port, "big.example", "TXT", queries, timeout=30.0)
                last_byte = time.monotonic()
                closed = await reset_or_closed(sock, idle_timeout + 30.0)
                closed_after = time.monotonic() - last_byte
                sock.close()
                peak = status_kb(fwd.pid, "VmHWM")
                await fwd.poll(lambda: fwd.metric_is("forwarder_tcp_connections", 0))
                after = status_kb(fwd.pid, "VmRSS")
                await fwd.stop()
    growth = (peak - before) / 1024
    print(f"{queries:,} pipelined queries ({sent:,} bytes taken by the server) for a "
          f"{size:,}-byte cached answer, never read")
    print(f"RSS before {before / 1024:.1f} MB, peak {peak / 1024:.1f} MB "
          f"(+{growth:.1f} MB), after the close {after / 1024:.1f} MB")
    if closed:
        print(f"connection dropped {closed_after:.1f} s after the client's last byte "
              f"(idle timeout {idle_timeout:g} s)")
    else:
        print(f"connection still open {closed_after:.0f} s after the client's last byte")
    ok = closed and growth < LIMIT_MB and closed_after < idle_timeout + 2.0
    print("PASS" if ok else "FAIL", f"(bound: peak growth under {LIMIT_MB:g} MB, dropped "
          f"within the idle timeout + 2 s)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=50_000)
    parser.add_argument("--idle-timeout", type=float, default=10.0)
    args = parser.parse_args()
    return 0 if asyncio.run(measure(args.queries, args.idle_timeout)) else 1


if __name__ == "__main__":
    sys.exit(main())
