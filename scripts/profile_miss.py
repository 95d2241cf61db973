"""Profile the cache-miss path in-process: unique names through the UDP listener to an
upstream in another process (a tiny responder that echoes each query as an answer).

    .venv/bin/python scripts/profile_miss.py [--profile] [--n 20000] [--policy]

--policy judges every answer as the bench config does (its `allowed` covers every address,
so the figure is the judging, not a violation log line per query).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import socket
import subprocess
import sys
import time

import dns.message

from forwarder import config
from forwarder.server import Server

RESPONDER = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
a_rr = b"\\xc0\\x0c\\x00\\x01\\x00\\x01\\x00\\x00\\x01\\x2c\\x00\\x04\\x34\\xdb\\x01\\x01"
while True:
    d, addr = s.recvfrom(4096)
    q_end = d.index(b"\\x00", 12) + 5
    head = d[:2] + b"\\x81\\x80\\x00\\x01\\x00\\x01\\x00\\x00\\x00\\x00"
    s.sendto(head + d[12:q_end] + a_rr, addr)
"""


async def main(n: int, profile: bool, policy: bool) -> None:
    proc = subprocess.Popen([sys.executable, "-c", RESPONDER], stdout=subprocess.PIPE,
                            text=True)
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        zone: dict[str, object] = {"match": ".", "upstream": "up"}
        if policy:
            zone["policy"] = "p"
        cfg = config.from_data({
            "listen": [{"address": "127.0.0.1", "port": 0}],
            "upstreams": {"up": {"servers": [f"127.0.0.1:{port}"],
                                 "health_check": {"enabled": False}}},
            "zones": [zone],
            "policies": {"p": {"allowed": ["default", "0.0.0.0/0", "::/0"]}},
            "metrics": {"enabled": False},
        })
        server = Server(cfg)
        await server.start()
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        target = server.address("udp")
        queries = [dns.message.make_query(f"b{i}.s3.ap-northeast-1.amazonaws.com", "A").to_wire()
                   for i in range(n)]
        received = 0
        done = asyncio.Event()

        def readable() -> None:
            nonlocal received
            try:
                while True:
                    client.recv(4096)
                    received += 1
            except BlockingIOError:
                pass
            if received >= n:
                done.set()

        loop.add_reader(client.fileno(), readable)
        prof = cProfile.Profile() if profile else None
        t0 = time.process_time()
        if prof:
            prof.enable()
        window = 100
        for i in range(0, n, window):
            for data in queries[i : i + window]:
                client.sendto(data, target)
            while received < min(i + window, n) - window // 2:
                await asyncio.sleep(0)
        await asyncio.wait_for(done.wait(), 30)
        if prof:
            prof.disable()
        cpu = time.process_time() - t0
        print(f"{n} misses: {cpu / n * 1e6:.1f} us CPU per query ({n / cpu:,.0f} per CPU-s)")
        if prof:
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        loop.remove_reader(client.fileno())
        await server.stop()
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--policy", action="store_true")
    a = ap.parse_args()
    if os.environ.get("FORWARDER_PROFILE_UVLOOP"):
        import uvloop
        uvloop.run(main(a.n, a.profile, a.policy))
    else:
        asyncio.run(main(a.n, a.profile, a.policy))
