"""`forwarder health -c FILE`: is the forwarder this configuration describes ready?

The probe reads the same configuration file the server runs with, so a container's
HEALTHCHECK follows whatever configuration is mounted:

- metrics on: GET /readyz on `metrics.listen` (a wildcard address, 0.0.0.0 or ::, is
  asked on loopback, 127.0.0.1 or ::1); ready is a 200;
- metrics off: one DNS query (`.` NS, the health checks' question) to the first listener,
  over UDP unless that listener is TCP-only; ready is any matching reply except SERVFAIL
  (REFUSED from an ACL that leaves loopback out still shows a serving process).

Exit 0 when ready, 1 otherwise: also when the configuration cannot be read, since a
health probe has no other answer to give (Docker reserves exit 2).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from dataclasses import dataclass

from forwarder.config import model
from forwarder.config.values import parse_server
from forwarder.dns import names, wire
from forwarder.errors import ConfigError
from forwarder.process import exits

DEFAULT_TIMEOUT = 4.0  # seconds; Docker's HEALTHCHECK --timeout in the Dockerfile is 5
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}
PROBE_NAME, PROBE_TYPE = names.from_text("."), 2  # NS
CLASS_IN = 1
MAX_BODY = 4096  # bytes of a /readyz report shown when it is not ready


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how the probe asks: "http" (GET /readyz) or "udp"/"tcp" (a DNS query)."""

    kind: str
    host: str
    port: int

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/readyz" if self.kind == "http" \
            else f"DNS over {self.kind.upper()} to {host}:{self.port}"


def loopback(host: str) -> str:
    """The address to ask for a server listening on *host*: loopback for a wildcard."""
    return WILDCARDS.get(host, host)


def target(cfg: model.Config) -> Target:
    """What to probe for *cfg*: its /readyz when metrics are on, else its first listener."""
    if cfg.metrics.enabled:
        address = parse_server(cfg.metrics.listen, any_port=True)
        return Target("http", loopback(address.host), address.port)
    first = cfg.listen[0]
    kind = "udp" if "udp" in first.protocols else "tcp"
    return Target(kind, loopback(first.address), first.port)


async def probe(where: Target, timeout: float = DEFAULT_TIMEOUT) -> tuple[bool, str]:
    """Asks *where* once; answers whether it is ready and a line saying what was seen."""
    try:
        async with asyncio.timeout(timeout):
            if where.kind == "http":
                return await _readyz(where)
            return await _dns(where, timeout)
    except TimeoutError:
        return False, f"{where.label}: no answer within {timeout:g}s"
    except OSError as e:  # asyncio's strerror says "Connect call failed (...)": use errno's
        return False, f"{where.label}: {os.strerror(e.errno) if e.errno else e}"


async def _readyz(where: Target) -> tuple[bool, str]:
    reader, writer = await asyncio.open_connection(where.host, where.port)
    try:
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: forwarder\r\nConnection: close\r\n\r\n")
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ")
    if len(parts) < 2 or not parts[1].isdigit():
        return False, f"{where.label}: not an HTTP response: {status_line[:80]!r}"
    status = int(parts[1])
    if status == 200:
        return True, f"{where.label}: ready"
    try:
        reason = json.loads(body[:MAX_BODY]).get("reason", "")
    except (ValueError, AttributeError):
        reason = body[:200].decode("utf-8", "replace").strip()
    return False, f"{where.label}: {status} not ready{': ' + reason if reason else ''}"


async def _dns(where: Target, timeout: float) -> tuple[bool, str]:
    from forwarder.upstream.transports import tcp, udp

    ident = secrets.randbits(16)
    query = wire.upstream_query(ident, wire.RD, wire.question_of(PROBE_NAME, PROBE_TYPE,
                                                                  CLASS_IN), False)
    exchange = udp.exchange if where.kind == "udp" else tcp.exchange
    data = await exchange(where.host, where.port, query, ident, PROBE_NAME, PROBE_TYPE,
                          CLASS_IN, timeout, lambda: None)
    rcode = data[3] & 0xF
    name = wire.RCODE_NAMES.get(rcode, str(rcode))
    if rcode == wire.Rcode.SERVFAIL:
        return False, f"{where.label}: answered SERVFAIL (no upstream answered)"
    return True, f"{where.label}: answered {name}"


def main(path: str, timeout: float = DEFAULT_TIMEOUT) -> int:
    """Runs the probe for the configuration at *path*; answers the exit code (0 or 1)."""
    from forwarder import config as config_mod

    try:
        cfg = config_mod.load(path)
    except ConfigError as e:
        print(e.render(), file=sys.stderr)
        print(f"{path}: cannot tell where the forwarder listens: unhealthy", file=sys.stderr)
        return exits.EXIT_FAILURE
    ok, line = asyncio.run(probe(target(cfg), timeout))
    print(line, file=sys.stdout if ok else sys.stderr)
    return exits.EXIT_OK if ok else exits.EXIT_FAILURE
