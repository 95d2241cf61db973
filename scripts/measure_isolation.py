"""Measure how a black-holed upstream group affects another group's zone: start
`forwarder run` with two groups (one server that never answers, one that answers at
once) and `limits.max_inflight`, flood the dead group's zone with unique names at a fixed
rate, and meanwhile ask the healthy zone at a slower rate; print the share of healthy
queries answered NOERROR, and how the flood's queries were answered.

    .venv/bin/python scripts/measure_isolation.py [--flood 3000] [--seconds 10]

Everything runs on 127.0.0.1 and stops after --seconds (plus the forwarder's budget).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def query(ident: int, name: str) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return struct.pack("!6H", ident, 0x0100, 1, 0, 0, 0) + qname + b"\x00\x01\x00\x01"


class Responder(asyncio.DatagramProtocol):
    """Answers every query with one A record (or, when *dead*, never)."""

    def __init__(self, dead: bool) -> None:
        self.dead = dead
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.dead or self.transport is None:
            return
        end = data.index(b"\x00", 12) + 5
        answer = (data[:2] + b"\x81\x80" + data[4:6] + b"\x00\x01\x00\x00\x00\x00"
                  + data[12:end] + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4)
                  + b"\xc0\x00\x02\x01")
        self.transport.sendto(answer, addr)


class Client(asyncio.DatagramProtocol):
    """Sends queries and counts the rcodes of the replies by ID range."""

    def __init__(self) -> None:
        self.rcodes: dict[int, int] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) >= 4:
            self.rcodes[data[0] << 8 | data[1]] = data[3] & 0xF


async def run(flood: int, probe: int, seconds: float, max_inflight: int) -> None:
    loop = asyncio.get_running_loop()
    dead, _ = await loop.create_datagram_endpoint(lambda: Responder(True),
                                                  local_addr=("127.0.0.1", 0))
    live, _ = await loop.create_datagram_endpoint(lambda: Responder(False),
                                                  local_addr=("127.0.0.1", 0))
    port_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    port_sock.bind(("127.0.0.1", 0))
    port = port_sock.getsockname()[1]
    port_sock.close()
    work = Path(tempfile.mkdtemp(prefix="forwarder-isolation-"))
    config = work / "forwarder.yaml"
    config.write_text(
        f"listen: [{{address: 127.0.0.1, port: {port}, protocols: [udp]}}]\n"
        "upstreams:\n"
        f"  dead: {{servers: ['127.0.0.1:{dead.get_extra_info('sockname')[1]}'], "
        "health_check: {enabled: false}}\n"
        f"  live: {{servers: ['127.0.0.1:{live.get_extra_info('sockname')[1]}'], "
        "health_check: {enabled: false}}\n"
        "zones: [{match: dead.example, upstream: dead}, {match: '.', upstream: live}]\n"
        f"limits: {{max_inflight: {max_inflight}}}\n"
        "cache: {enabled: false}\nmetrics: {enabled: false}\nallow_root: true\n")
    proc = subprocess.Popen([sys.executable, "-m", "forwarder", "run", "-c", str(config)],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        while "serving on" not in (line := proc.stderr.readline()):
            if not line:
                raise SystemExit("the forwarder did not start")
        flooder_t, flooder = await loop.create_datagram_endpoint(
            Client, remote_addr=("127.0.0.1", port))
        prober_t, prober = await loop.create_datagram_endpoint(
            Client, remote_addr=("127.0.0.1", port))
        started = time.monotonic()
        sent_flood = sent_probe = 0
        while (elapsed := time.monotonic() - started) < seconds:
            while sent_flood < flood * elapsed:
                flooder_t.sendto(query(sent_flood % 65536, f"n{sent_flood}.dead.example"))
                sent_flood += 1
            while sent_probe < probe * elapsed:
                prober_t.sendto(query(sent_probe, f"p{sent_probe}.example.com"))
                sent_probe += 1
            await asyncio.sleep(0.001)
        await asyncio.sleep(5)  # the dead group's budget runs out for the last ones
        answered = Counter(prober.rcodes.values())
        flood_answers = Counter(flooder.rcodes.values())
        ok = answered.get(0, 0)
        print(f"flood: {sent_flood} queries to the dead group's zone in {seconds:g}s "
              f"({flood}/s); answered: {dict(flood_answers)} (rcode: count; 2 = SERVFAIL)")
        print(f"healthy zone: {sent_probe} queries, {ok} NOERROR "
              f"({100 * ok / max(sent_probe, 1):.1f}%), other answers {dict(answered)}, "
              f"{sent_probe - sum(answered.values())} unanswered")
        flooder_t.close()
        prober_t.close()
    finally:
        proc.terminate()
        proc.wait(10)
        dead.close()
        live.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=3000, help="queries/s to the dead zone")
    parser.add_argument("--probe", type=int, default=200, help="queries/s to the live zone")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-inflight", type=int, default=2000)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(run(args.flood, args.probe, args.seconds, args.max_inflight))


if __name__ == "__main__":
    main()
