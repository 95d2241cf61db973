"""Profile the cache-hit path in-process: datagrams in -> cached replies out, through the
UDP listener's batch reader, with real sockets (the client's send/recv cost is included).

    .venv/bin/python scripts/profile_hit.py [--profile] [--n 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import socket
import time

import dns.message

from forwarder import config
from forwarder.server import Server
from tests.fakes import FakeUpstream


async def main(n: int, profile: bool, policy: bool) -> None:
    async with FakeUpstream() as up:
        zone: dict[str, object] = {"match": ".", "upstream": "up"}
        if policy:
            zone["policy"] = "p"
        cfg = config.from_data({
            "listen": [{"address": "127.0.0.1", "port": 0}],
            "upstreams": {"up": {"servers": [up.addr], "health_check": {"enabled": False}}},
            "zones": [zone],
            "policies": {"p": {"on_violation": "monitor"}},
            "metrics": {"enabled": False},
        })
        server = Server(cfg)
        await server.start()
        listener = server.udp[0]
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind(("127.0.0.1", 0))
        client.setblocking(False)
        data = dns.message.make_query("s3.ap-northeast-1.amazonaws.com", "A").to_wire()
        client.sendto(data, server.address("udp"))
        await up.wait_for(1)
        await asyncio.sleep(0.05)
        prof = cProfile.Profile() if profile else None
        t0 = time.process_time()
        if prof:
            prof.enable()
        target = server.address("udp")
        for _ in range(n // 64):
            for _ in range(64):
                client.sendto(data, target)
            listener._readable()  # what the event loop calls when the socket is readable
            try:
                while True:
                    client.recv(4096)
            except BlockingIOError:
                pass
        if prof:
            prof.disable()
        cpu = time.process_time() - t0
        print(f"{n} hits: {cpu / n * 1e6:.2f} us CPU per query ({n / cpu:,.0f} per CPU-s)")
        if prof:
            pstats.Stats(prof).sort_stats("tottime").print_stats(18)
        await server.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--policy", action="store_true")
    a = ap.parse_args()
    asyncio.run(main(a.n, a.profile, a.policy))
