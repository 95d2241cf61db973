"""Measure a real `forwarder run` process (default limits) under slowloris: N connections
trickle a query one byte a second from A loopback addresses, reconnecting whenever the
server drops them, while a legitimate client asks a TCP query every half second from
127.0.0.1. Prints the legitimate queries' latencies, how many trickling connections were
open, how often the server dropped them, and exits 1 if a legitimate query took 1 s or
more (or got no answer).

    .venv/bin/python scripts/tcp_slowloris.py [--connections 1000] [--addresses 20]
                                              [--seconds 15]

Everything runs on 127.0.0.0/8. tests/e2e/test_tcp_hostile.py asserts the same with 100
connections in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import free_port
from tests.fakes import FakeUpstream
from tests.processes import forwarder_process
from tests.tcp_clients import Trickler

LIMIT = 1.0  # seconds a legitimate query may take


async def measure(connections: int, addresses: int, seconds: float) -> bool:
    port, http = free_port(), free_port(socket.SOCK_STREAM)
    async with FakeUpstream() as upstream:
        cfg = {"listen": [{"address": "127.0.0.1", "port": port}], "allow_root": True,
               "metrics": {"listen": f"127.0.0.1:{http}"},
               "upstreams": {"up": {"servers": [upstream.addr],
                                    "health_check": {"enabled": False}}},
               "zones": [{"match": ".", "upstream": "up"}]}
        with tempfile.TemporaryDirectory(prefix="forwarder-slowloris-") as tmp:
            async with forwarder_process(Path(tmp), cfg) as fwd:
                tricklers = [Trickler("127.0.0.1", port, f"127.0.2.{1 + i % addresses}")
                             for i in range(connections)]
                for t in tricklers:
                    t.start()
                await asyncio.sleep(3.0)  # let them connect and start trickling
                latencies: list[float] = []
                failures = 0
                open_counts: list[int] = []
                server_counts: list[float] = []
                end = time.monotonic() + seconds
                i = 0
                while time.monotonic() < end:
                    open_counts.append(sum(t.open for t in tricklers))
                    server_counts.append(await fwd.metric("forwarder_tcp_connections"))
                    q = dns.message.make_query(f"legit{i}.example", "A")
                    began = time.monotonic()
                    try:
                        await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=5.0)
                        latencies.append(time.monotonic() - began)
                    except (dns.exception.Timeout, OSError, EOFError):
                        failures += 1
                    i += 1
                    await asyncio.sleep(0.5)
                for t in tricklers:
                    await t.stop()
                dropped = sum(t.dropped for t in tricklers)
                connects = sum(t.connects for t in tricklers)
                await fwd.stop()
    worst = max(latencies, default=float("inf"))
    print(f"{connections:,} trickling connections (one byte a second) from {addresses} "
          f"addresses; {seconds:g} s of legitimate TCP queries from 127.0.0.1")
    print(f"trickling connections open (client side): min {min(open_counts)}, "
          f"mean {statistics.mean(open_counts):.0f}; server's forwarder_tcp_connections: "
          f"mean {statistics.mean(server_counts):.0f}, max {max(server_counts):.0f}")
    print(f"trickling connections made {connects:,}, dropped by the server {dropped:,}")
    print(f"legitimate queries: {len(latencies)} answered, {failures} failed", end="")
    if latencies:
        print(f"; latency median {statistics.median(latencies) * 1000:.1f} ms, "
              f"max {worst * 1000:.1f} ms", end="")
    print()
    ok = not failures and worst < LIMIT
    print("PASS" if ok else "FAIL", f"(bound: every legitimate query answered within "
          f"{LIMIT:g} s)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1_000)
    parser.add_argument("--addresses", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    ok = asyncio.run(measure(args.connections, args.addresses, args.seconds))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
