"""`forwarder lab`: simulated AWS resolvers, the forwarder in front of them with
config/lab.yaml, and a scripted set of queries, one per situation of the field reports,
whose outcome is printed as a table.

Everything runs in one process on loopback, so the lab works with no network at all:

- `resolvers`: tiny recursive-resolver stand-ins (UDP and TCP, dnslib) answering from
  fixed tables, as the field reports describe them: Route 53 Resolver inbound endpoints of
  two accounts in front of Interface endpoints with private DNS, VPC resolvers behind S3
  Gateway endpoints, endpoint-specific `vpce-...` names, the corporate resolvers;
- the forwarder (`forwarder.server.Server`, in-process; no root check, no privileges);
- `scenarios`: one query each, from the client address that stands for where it comes
  from (on premises, inside a VPC, ...), with the verdict and answer it must produce and
  what the operator must see (a metric, /readyz, the EDE's words);
- `report`: sends them, reads the rule, group, raw upstream answer and policy verdict off
  each query (a recording `Accounting`), checks the signals, prints the table.

Exit codes: 0 every row matched its expectation, 3 some did not, 1 the lab could not start.
A scenario whose client address is not configured on this machine (127.0.0.2 and up, on
systems that only have 127.0.0.1) is shown as skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import yaml

from forwarder import config as config_mod
from forwarder.errors import ConfigError
from forwarder.lab.report import (
    Outcome,
    RecordingAccounting,
    Row,
    missing_address,
    render,
    render_policy_counters,
    run_scenario,
)
from forwarder.lab.resolvers import RESOLVERS, SimulatedResolver
from forwarder.lab.scenarios import SCENARIOS, Scenario
from forwarder.process import exits
from forwarder.server import Server
from forwarder.upstream import health

__all__ = ["SCENARIOS", "Scenario", "main", "run"]

log = logging.getLogger("forwarder")

CANARY_WAIT = 5.0  # seconds for every canary's first check, before the scenarios run


def load_lab_config() -> tuple[str, dict[str, Any]]:
    """Answers the path and YAML data of the embedded lab configuration."""
    resource = importlib.resources.files("forwarder") / "data" / "lab.yaml"
    text = resource.read_text(encoding="utf-8")
    return str(resource), yaml.safe_load(text)


def lab_config(data: dict[str, Any], port: int, ports: dict[int, int],
               serve: bool, source: str) -> config_mod.Config:
    """The lab configuration with the real ports: the forwarder's, each simulated
    resolver's (*ports* maps the port lab.yaml gives a resolver to the one it got; every
    group on that port follows), and metrics on a free port when serving. Raises
    ConfigError."""
    data = dict(data)
    data["listen"] = [{"address": "127.0.0.1", "port": port}]
    groups = {}
    for name, group in (data.get("upstreams") or {}).items():
        servers = [_moved(str(s), ports) for s in (group or {}).get("servers") or []]
        groups[name] = {**group, "servers": servers}
    data["upstreams"] = groups
    data["metrics"] = {"enabled": serve, "listen": "127.0.0.1:0"}
    return config_mod.from_data(data, source)


def _moved(server: str, ports: dict[int, int]) -> str:
    host, _, port = server.rpartition(":")
    if host == "127.0.0.1" and port.isdigit() and int(port) in ports:
        return f"127.0.0.1:{ports[int(port)]}"
    return server


def default_port(data: dict[str, Any]) -> int:
    """The forwarder's port in lab.yaml: 15400 (5353, the usual choice, is mDNS's, which
    Avahi and others hold on most desktops)."""
    return int(data["listen"][0]["port"])


def preferred_ports(data: dict[str, Any]) -> dict[str, int]:
    """The port lab.yaml gives each simulated resolver's group. Raises ValueError when a
    group is missing or not on loopback."""
    out = {}
    groups = data.get("upstreams") or {}
    for name in RESOLVERS:
        servers = (groups.get(name) or {}).get("servers") or []
        host, _, port = str(servers[0]).rpartition(":") if servers else ("", "", "")
        if host != "127.0.0.1" or not port.isdigit():
            raise ValueError(f"lab.yaml: upstreams.{name} must have one server 127.0.0.1:PORT")
        out[name] = int(port)
    return out


async def run(serve: bool = False, port: int | None = None,
              scenarios: Sequence[Scenario] = SCENARIOS, out: TextIO | None = None,
              stop: asyncio.Event | None = None) -> int:
    """Runs the lab; answers its exit code. With *serve*, keeps running until *stop* is set
    (or SIGINT/SIGTERM arrives). The forwarder listens on *port*, by default lab.yaml's."""
    out = out or sys.stdout
    source, data = load_lab_config()
    if port is None:
        port = default_port(data)
    resolvers = [SimulatedResolver(name, title, records)
                 for name, (title, records) in RESOLVERS.items()]
    server: Server | None = None
    try:
        wanted = preferred_ports(data)
        for resolver in resolvers:
            await resolver.start(wanted[resolver.name])
            if resolver.port != wanted[resolver.name]:
                print(f"note: 127.0.0.1:{wanted[resolver.name]} is taken; the simulated "
                      f"{resolver.name} resolver listens on {resolver.port}", file=out)
        ports = {r.name: r.port for r in resolvers}
        cfg = lab_config(data, port, {wanted[n]: p for n, p in ports.items()}, serve, source)
        server = Server(cfg)
        recorder = RecordingAccounting()
        server.accounting = recorder  # before start(): the listeners are given it on bind
        await server.start()
        port = server.address("udp")[1]  # --port 0: the one the system picked
    except (ConfigError, OSError, ValueError) as e:
        why = e.render() if isinstance(e, ConfigError) else str(e)
        print(f"forwarder lab cannot start: {why}", file=sys.stderr)
        if server is not None:
            await server.stop(deadline=0.5)
        for resolver in resolvers:
            await resolver.stop()
        return exits.EXIT_FAILURE
    try:
        print(f"forwarder lab: the forwarder on 127.0.0.1:{port} in front of simulated "
              "resolvers:", file=out)
        for resolver in resolvers:
            print(f"  127.0.0.1:{resolver.port:<6} {resolver.name:<14} {resolver.title}",
                  file=out)
        print(file=out)
        await canaries_checked(server)
        rows = await run_scenarios(port, scenarios, recorder, cfg, server)
        recorder.recording = False  # --serve: queries from dig are not kept
        recorder.seen.clear()
        render(rows, out)
        render_policy_counters(out)
        failed = sum(not row.ok for row in rows)
        skipped = sum(bool(row.outcome.skipped) for row in rows)
        done = len(rows) - skipped
        note = f" ({skipped} skipped: their client address is missing here)" if skipped else ""
        print(f"\n{done - failed} of {done} scenarios as expected{note}", file=out)
        code = exits.EXIT_OK if not failed else exits.EXIT_MISMATCH
        if serve:
            print_try_it(port, ports, wanted, server, source, out)
            out.flush()
            await wait_for_stop(stop)
        return code
    finally:
        await server.stop(deadline=2.0)
        for resolver in resolvers:
            await resolver.stop()


async def canaries_checked(server: Server) -> None:
    """Waits until every group's canary has been checked once (their signals need it)."""
    def checked() -> bool:
        groups = health.readiness(server)[1]["groups"].values()
        return all(g["canary"] != health.CANARY_PENDING for g in groups)

    with contextlib.suppress(TimeoutError):
        await server.health.wait_until(checked, CANARY_WAIT)


async def run_scenarios(port: int, scenarios: Sequence[Scenario], recorder: RecordingAccounting,
                        cfg: config_mod.Config, server: Server) -> list[Row]:
    """Each scenario in turn, from its client's address; those whose address this machine
    lacks are skipped."""
    missing = {a: missing_address(a) for a in dict.fromkeys(s.client for s in scenarios)}
    rows = []
    for scenario in scenarios:
        if missing[scenario.client]:
            rows.append(Row(scenario, Outcome(skipped=missing[scenario.client])))
        else:
            rows.append(await run_scenario(port, scenario, recorder, cfg, server))
    return rows


def print_try_it(port: int, ports: dict[str, int], wanted: dict[str, int], server: Server,
                 source: str, out: TextIO) -> None:
    gateway = ports["vpc-gateway"]
    print("\nServing until Ctrl-C. Try:", file=out)
    lines = [
        (f"dig @127.0.0.1 -p {gateway} s3.ap-northeast-3.amazonaws.com",
         "what the Gateway-endpoint VPC resolver says"),
        (f"dig @127.0.0.1 -p {port} s3.ap-northeast-3.amazonaws.com", "rewritten, EDE 4"),
        (f"dig @127.0.0.1 -p {port} s3.us-east-1.amazonaws.com", "SERVFAIL, EDE 15"),
        (f"dig @127.0.0.1 -p {port} bucket.s3.ap-northeast-1.amazonaws.com",
         "private: passes"),
        (f"dig @127.0.0.1 -p {port} internal.example.com", "local record"),
        (f"dig @127.0.0.1 -p {port} +tcp nothing.internal.example.com", "NXDOMAIN with SOA"),
        (f"dig @127.0.0.1 -p {port} -b 127.0.0.2 s3.ap-northeast-1.amazonaws.com",
         "inside the VPC: Gateway-routed, passes"),
        (f"dig @127.0.0.1 -p {port} -b 127.0.0.3 s3.ap-northeast-1.amazonaws.com",
         "site B: SERVFAIL, EDE 15 asks about the Gateway endpoint"),
    ]
    if ports == wanted:  # explain reads lab.yaml, which names the usual resolver ports
        lines.append((f"forwarder explain s3.ap-northeast-3.amazonaws.com -c {shown(source)}",
                      "every step for one name"))
    if server.http_address is not None:
        host, http_port = server.http_address[:2]
        lines.append((f"curl -s http://{host}:{http_port}/metrics | grep policy_verdicts",
                      "the counters"))
        lines.append((f"curl -s http://{host}:{http_port}/readyz",
                      "503 on purpose: tokyo-inbound's canary fails"))
    width = max(len(command) for command, _ in lines)
    for command, why in lines:
        print(f"  {command.ljust(width)}  # {why}", file=out)


def shown(path: str) -> str:
    """*path* as a user would type it: the file itself, relative to here when below here."""
    real = os.path.realpath(path)
    relative = os.path.relpath(real)
    return relative if not relative.startswith("..") else real


async def wait_for_stop(stop: asyncio.Event | None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def main(serve: bool = False, port: int | None = None) -> int:
    """`forwarder lab [--serve] [--port N]` (port 0: any free port; None: lab.yaml's)."""
    from forwarder.process import exits

    if port is not None and not 0 <= port < 65536:
        print(f"--port {port} is not a port number", file=sys.stderr)
        return exits.EXIT_CONFIG
    try:
        return exits.run_loop(run(serve=serve, port=port))
    except KeyboardInterrupt:
        return exits.EXIT_OK

