"""`forwarder lab`: simulated AWS resolvers, the forwarder in front of them with
config/lab.yaml, and a scripted set of queries whose outcome is printed as a table.

Everything runs in one process on 127.0.0.1, so the lab works with no network at all:

- `SimulatedResolver`: a tiny recursive-resolver stand-in (UDP and TCP, dnslib) answering
  from a fixed table, with `*.` wildcards and CNAME chasing, as the field reports describe
  them: a VPC resolver behind an S3 Gateway endpoint (public S3 addresses), a Route 53
  Resolver inbound endpoint in front of Interface endpoints with private DNS (private ENI
  addresses), endpoint-specific `vpce-...` names, and the corporate resolvers;
- the forwarder (`forwarder.server.Server`, in-process; no root check, no privileges);
- `SCENARIOS`: one query each, with the verdict and answer it must produce. A recording
  `Accounting` reads the rule, group, raw upstream answer and policy verdict off each query.

Exit codes: 0 every row matched its expectation, 3 some did not, 1 the lab could not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import os
import signal
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import dnslib
import yaml

from forwarder import config as config_mod
from forwarder import metrics
from forwarder.config.model import PolicyMode, RuleAction
from forwarder.dns import wire
from forwarder.errors import ConfigError
from forwarder.lab.resolvers import ALB, RESOLVERS, TOKYO_VPCE, SimulatedResolver
from forwarder.pipeline import Accounting
from forwarder.process import exits
from forwarder.query import Query, Reply
from forwarder.server import Server

log = logging.getLogger("forwarder")

QUERY_TIMEOUT = 3.0
_SHOWN_ADDRESSES = 2


# --- the scenarios -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One scripted query and the outcome it must have."""

    section: str
    name: str
    qtype: str
    asked: str  # the upstream group the forwarder must ask, or "local"
    verdict: str  # as the VERDICT column shows it
    rcode: str
    addresses: tuple[str, ...] = ()
    ede: int | None = None


TOKYO = "Tokyo: Interface endpoints with private DNS, via the Route 53 inbound endpoint"
VPCE = "Endpoint-specific names: public zone, private addresses"
GATEWAY = "S3 through a Gateway endpoint: the VPC resolver answers public addresses"
LOCAL = "PrivateLink service under a private name: local records"
CORP = "Corporate names"
EVERY_PATH = ("Protection on every path: corporate CNAMEs, customer resources, hook answers "
              "(`.` has no policy of its own)")
TOKYO_S3_IPS = ("10.0.1.15", "10.0.2.15")
OSAKA_REWRITE = ("10.3.1.15", "10.3.2.15")

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(TOKYO, "s3.ap-northeast-1.amazonaws.com", "A", "r53-inbound", "pass", "NOERROR",
             TOKYO_S3_IPS),
    Scenario(TOKYO, "my-bucket.s3.ap-northeast-1.amazonaws.com", "A", "r53-inbound", "pass",
             "NOERROR", TOKYO_S3_IPS),
    Scenario(TOKYO, "ssm.ap-northeast-1.amazonaws.com", "A", "r53-inbound", "pass", "NOERROR",
             ("10.0.1.21", "10.0.2.21")),
    Scenario(TOKYO, "ec2messages.ap-northeast-1.amazonaws.com", "A", "r53-inbound", "pass",
             "NOERROR", ("10.0.1.22", "10.0.2.22")),
    Scenario(TOKYO, "ssmmessages.ap-northeast-1.amazonaws.com", "A", "r53-inbound", "pass",
             "NOERROR", ("10.0.1.23", "10.0.2.23")),
    Scenario(TOKYO, "sts.ap-northeast-1.amazonaws.com", "A", "r53-inbound",
             "violation -> servfail", "SERVFAIL", (), wire.Ede.BLOCKED),
    Scenario(VPCE, TOKYO_VPCE, "A", "vpc-gateway", "pass", "NOERROR", TOKYO_S3_IPS),
    Scenario(VPCE, f"bucket.{TOKYO_VPCE}", "A", "vpc-gateway", "pass", "NOERROR", TOKYO_S3_IPS),
    Scenario(GATEWAY, "s3.ap-northeast-3.amazonaws.com", "A", "vpc-gateway",
             "violation -> rewrite", "NOERROR", OSAKA_REWRITE, wire.Ede.FORGED_ANSWER),
    Scenario(GATEWAY, "my-bucket.s3.ap-northeast-3.amazonaws.com", "A", "vpc-gateway",
             "violation -> rewrite", "NOERROR", OSAKA_REWRITE, wire.Ede.FORGED_ANSWER),
    Scenario(GATEWAY, "s3.us-east-1.amazonaws.com", "A", "vpc-gateway",
             "violation -> servfail", "SERVFAIL", (), wire.Ede.BLOCKED),
    Scenario(GATEWAY, "ec2.ap-northeast-3.amazonaws.com", "A", "vpc-gateway",
             "violation, monitor: would servfail", "NOERROR", ("15.152.5.10",)),
    Scenario(LOCAL, "internal.example.com", "A", "local", "local records", "NOERROR",
             ("10.0.100.21",)),
    Scenario(LOCAL, "portal.internal.example.com", "A", "local", "local records", "NOERROR",
             ("10.0.100.21",)),
    Scenario(LOCAL, "www.internal.example.com", "A", "local", "local records", "NXDOMAIN"),
    Scenario(CORP, "downloads.corp.example.com", "A", "corp", "violation -> servfail",
             "SERVFAIL", (), wire.Ede.BLOCKED),
    Scenario(CORP, "www.example.org", "A", "corp", "not judged", "NOERROR", ("93.184.215.14",)),
    # files.corp.example.com CNAME my-bucket.s3.ap-northeast-3...: judged by the policy of
    # the rule that routes Osaka S3 names, which rewrites to the Interface endpoint
    Scenario(EVERY_PATH, "files.corp.example.com", "A", "corp", "violation -> rewrite",
             "NOERROR", OSAKA_REWRITE, wire.Ede.FORGED_ANSWER),
    # a customer's public load balancer: public by design, left out by `unprotected: default`
    Scenario(EVERY_PATH, ALB, "A", "vpc-gateway", "not judged", "NOERROR",
             ("54.95.10.20", "13.112.30.40")),
    # config/lab_hook.py pins this name to a public address: the hook's answer is judged too
    Scenario(EVERY_PATH, "s3.eu-west-1.amazonaws.com", "A", "-", "violation -> servfail",
             "SERVFAIL", (), wire.Ede.BLOCKED),
)


# --- running it --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one query did, as the forwarder and the client saw it."""

    asked: str = "-"
    upstream: str = "-"
    verdict: str = "-"
    rcode: str = "no answer"
    addresses: tuple[str, ...] = ()
    ede: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class Row:
    scenario: Scenario
    outcome: Outcome

    @property
    def ok(self) -> bool:
        s, o = self.scenario, self.outcome
        ede_codes = [code for code, _ in o.ede]
        return (o.asked == s.asked and o.verdict == s.verdict and o.rcode == s.rcode
                and sorted(o.addresses) == sorted(s.addresses)
                and ede_codes == ([s.ede] if s.ede is not None else []))


class RecordingAccounting(Accounting):
    """Accounting that also keeps each answered query while `recording`, to read its rule,
    group, raw upstream answer and verdict afterwards."""

    __slots__ = ("recording", "seen")

    def __init__(self) -> None:
        super().__init__()
        self.recording = True
        self.seen: dict[tuple[str, int], tuple[Query, Reply]] = {}

    def record(self, q: Query, reply: Reply, now: float) -> None:
        if self.recording:
            self.seen[(q.name, q.qtype)] = (q, reply)
        super().record(q, reply, now)


def load_lab_config() -> tuple[str, dict[str, Any]]:
    """Answers the path and YAML data of the embedded lab configuration."""
    resource = importlib.resources.files("forwarder") / "data" / "lab.yaml"
    text = resource.read_text(encoding="utf-8")
    return str(resource), yaml.safe_load(text)


def lab_config(data: dict[str, Any], port: int, ports: dict[str, int],
               serve: bool, source: str) -> config_mod.Config:
    """The lab configuration with the real ports: the forwarder's, each simulated
    resolver's, and metrics on a free port when serving. Raises ConfigError."""
    data = dict(data)
    data["listen"] = [{"address": "127.0.0.1", "port": port}]
    groups = dict(data.get("upstreams") or {})
    for name, resolver_port in ports.items():
        groups[name] = {**groups[name], "servers": [f"127.0.0.1:{resolver_port}"]}
    data["upstreams"] = groups
    data["metrics"] = {"enabled": serve, "listen": "127.0.0.1:0"}
    return config_mod.from_data(data, source)


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


async def ask(port: int, name: str, qtype: str) -> dnslib.DNSRecord | None:
    """Sends one query with EDNS over UDP to 127.0.0.1:*port* (TCP when truncated)."""
    request = dnslib.DNSRecord.question(name, qtype)
    request.add_ar(dnslib.EDNS0(udp_len=1232))
    data = bytes(request.pack())
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, reply: bytes, addr: tuple[str, int]) -> None:
            if not got.done() and reply[:2] == data[:2]:
                got.set_result(reply)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
    try:
        transport.sendto(data)
        reply = await asyncio.wait_for(got, QUERY_TIMEOUT)
    except TimeoutError:
        return None
    finally:
        transport.close()
    if reply[2] & 0x02:  # TC
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(struct.pack("!H", len(data)) + data)
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            reply = await reader.readexactly(size)
        finally:
            writer.close()
    return dnslib.DNSRecord.parse(reply)


def summary(msg: dnslib.DNSRecord) -> tuple[str, tuple[str, ...], bool]:
    """Answers (rcode name, A/AAAA addresses of the answer, whether a CNAME led there)."""
    rcode = dnslib.RCODE.get(msg.header.rcode) or f"RCODE{msg.header.rcode}"
    addresses = tuple(str(rr.rdata) for rr in msg.rr if rr.rtype in (1, 28))
    return str(rcode), addresses, any(rr.rtype == 5 for rr in msg.rr)


def ede_options(msg: dnslib.DNSRecord) -> list[tuple[int, str]]:
    out = []
    for rr in msg.ar:
        if rr.rtype == wire.TYPE_OPT:
            for option in rr.rdata:
                if option.code == wire.OPTION_EDE and len(option.data) >= 2:
                    code = struct.unpack("!H", bytes(option.data[:2]))[0]
                    out.append((code, bytes(option.data[2:]).decode("utf-8", "replace")))
    return out


def verdict_of(seen: tuple[Query, Reply] | None, cfg: config_mod.Config) -> str:
    """The VERDICT column: what the answer policy made of the upstream answer."""
    if seen is None or seen[0].rule is None:
        return "-"
    q, reply = seen
    if q.rule.action is RuleAction.LOCAL:  # type: ignore[union-attr]
        return "local records"
    if reply.verdict is None or reply.verdict == "not_protected":
        return "not judged"
    if reply.verdict != "violation":
        return str(reply.verdict)
    judged = reply.protection[0] if reply.protection is not None else q.rule.policy  # type: ignore[union-attr]
    policy = cfg.policy_named(judged or "")
    if policy is not None and policy.mode is PolicyMode.MONITOR:
        return f"violation, monitor: would {reply.action}"
    return f"violation -> {reply.action}"


def show_addresses(addresses: Sequence[str]) -> str:
    shown = " ".join(addresses[:_SHOWN_ADDRESSES])
    more = len(addresses) - _SHOWN_ADDRESSES
    return f"{shown} +{more}" if more > 0 else shown


async def run_scenario(port: int, scenario: Scenario, recorder: RecordingAccounting,
                       cfg: config_mod.Config) -> Row:
    msg = await ask(port, scenario.name, scenario.qtype)
    outcome = Outcome()
    if msg is None:
        return Row(scenario, outcome)
    outcome.rcode, outcome.addresses, _ = summary(msg)
    outcome.ede = ede_options(msg)
    seen = recorder.seen.get((scenario.name.lower(), wire.qtype_from_text(scenario.qtype)))
    outcome.verdict = verdict_of(seen, cfg)
    q, reply = seen if seen is not None else (None, None)
    if q is not None and q.rule is not None and q.rule.action is RuleAction.LOCAL:
        outcome.asked = "local"
    elif q is not None and reply is not None:
        outcome.asked = q.group or "-"
        raw = reply.upstream_reply
        if raw is not None:
            rcode, addresses, via_cname = summary(dnslib.DNSRecord.parse(raw.wire))
            outcome.upstream = " ".join(filter(None, (
                rcode, "CNAME ->" if via_cname else "", show_addresses(addresses))))
    return Row(scenario, outcome)


def render(rows: Sequence[Row], out: TextIO) -> None:
    """Prints the table, then the Extended DNS Errors the clients got."""
    header = ("NAME", "TYPE", "ASKED", "UPSTREAM SAID", "VERDICT", "CLIENT GOT", "")
    cells = []
    for row in rows:
        o = row.outcome
        got = " ".join(filter(None, (o.rcode, show_addresses(o.addresses),
                                     " ".join(f"EDE {code}" for code, _ in o.ede))))
        cells.append((row.scenario.name, row.scenario.qtype, o.asked, o.upstream, o.verdict,
                      got, "ok" if row.ok else "MISMATCH"))
    widths = [max(len(c[i]) for c in (header, *cells)) for i in range(len(header))]

    def line(values: Iterable[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    print(line(header), file=out)
    section = None
    for row, values in zip(rows, cells, strict=True):
        if row.scenario.section != section:
            section = row.scenario.section
            print(f"-- {section}", file=out)
        print(line(values), file=out)
        if not row.ok:
            s = row.scenario
            expected = " ".join(filter(None, (s.rcode, show_addresses(s.addresses),
                                               f"EDE {s.ede}" if s.ede is not None else "")))
            print(f"   expected: asked {s.asked}, verdict {s.verdict!r}, client got {expected}",
                  file=out)
    texts = [(row.scenario.name, code, text) for row in rows for code, text in row.outcome.ede]
    if texts:
        print("\nExtended DNS Errors (RFC 8914) the clients received:", file=out)
        for name, code, text in texts:
            print(f"  {name}: EDE {code}: {text}", file=out)


def render_policy_counters(out: TextIO) -> None:
    """Prints forwarder_policy_verdicts_total as the lab left it."""
    metrics.PENDING.flush()
    samples = [s for family in metrics.policy_verdicts.collect() for s in family.samples
               if s.name.endswith("_total") and s.value]
    if not samples:
        return
    print("\nforwarder_policy_verdicts_total (monitor mode counts what it would have done):",
          file=out)
    for s in samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"  {{{labels}}} {s.value:g}", file=out)


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
        cfg = lab_config(data, port, ports, serve, source)
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
            print(f"  127.0.0.1:{resolver.port:<6} {resolver.name:<12} {resolver.title}",
                  file=out)
        print(file=out)
        rows = [await run_scenario(port, s, recorder, cfg) for s in scenarios]
        recorder.recording = False  # --serve: queries from dig are not kept
        recorder.seen.clear()
        render(rows, out)
        render_policy_counters(out)
        failed = sum(not row.ok for row in rows)
        print(f"\n{len(rows) - failed} of {len(rows)} scenarios as expected", file=out)
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
    ]
    if ports == wanted:  # explain reads lab.yaml, which names the usual resolver ports
        lines.append((f"forwarder explain s3.ap-northeast-3.amazonaws.com -c {shown(source)}",
                      "every step for one name"))
    if server.http_address is not None:
        host, http_port = server.http_address[:2]
        lines.append((f"curl -s http://{host}:{http_port}/metrics | grep policy_verdicts",
                      "the counters"))
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

