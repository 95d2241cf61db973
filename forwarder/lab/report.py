"""Running one lab scenario and reporting on all of them: the query from its client's
address, what the forwarder did (read off a recording `Accounting`), what the operator
sees (metrics, /readyz, the EDE text), and the table `forwarder lab` prints."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

import dnslib

from forwarder import config as config_mod
from forwarder import metrics
from forwarder.config.model import PolicyMode, RuleAction
from forwarder.dns import wire
from forwarder.lab.scenarios import EdeText, Metric, Ready, Scenario, Signal
from forwarder.pipeline import Accounting
from forwarder.query import Query, Reply
from forwarder.server import Server
from forwarder.upstream import health

QUERY_TIMEOUT = 3.0
_SHOWN_ADDRESSES = 2


@dataclass
class Outcome:
    """What one query did, as the forwarder, the client and the operator saw it."""

    asked: str = "-"
    upstream: str = "-"
    verdict: str = "-"
    rcode: str = "no answer"
    addresses: tuple[str, ...] = ()
    ede: list[tuple[int, str]] = field(default_factory=list)
    signals: list[tuple[Signal, bool, str]] = field(default_factory=list)  # held, what was seen
    skipped: str = ""  # why the query could not be sent (its client address is missing)


@dataclass
class Row:
    scenario: Scenario
    outcome: Outcome

    @property
    def ok(self) -> bool:
        s, o = self.scenario, self.outcome
        if o.skipped:
            return True
        ede_codes = [code for code, _ in o.ede]
        return (o.asked == s.asked and o.verdict == s.verdict and o.rcode == s.rcode
                and sorted(o.addresses) == sorted(s.addresses)
                and ede_codes == ([s.ede] if s.ede is not None else [])
                and all(held for _, held, _ in o.signals))


class RecordingAccounting(Accounting):
    """Accounting that also keeps each answered query while `recording`, to read its rule,
    group, raw upstream answer and verdict afterwards."""

    __slots__ = ("recording", "seen")

    def __init__(self) -> None:
        super().__init__()
        self.recording = True
        self.seen: dict[tuple[str, str, int], tuple[Query, Reply]] = {}

    def record(self, q: Query, reply: Reply, now: float) -> None:
        if self.recording:
            self.seen[(q.client[0], q.name, q.qtype)] = (q, reply)
        super().record(q, reply, now)


def missing_address(address: str) -> str:
    """Why *address* cannot be a client's source address here, or "" when it can."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, 0))
        except OSError as e:
            return f"{address} is not configured on this machine ({e.strerror or e})"
    return ""


async def ask(port: int, name: str, qtype: str,
              client: str = "127.0.0.1") -> dnslib.DNSRecord | None:
    """Sends one query with EDNS over UDP from *client* to 127.0.0.1:*port* (TCP when
    truncated)."""
    request = dnslib.DNSRecord.question(name, qtype)
    request.add_ar(dnslib.EDNS0(udp_len=1232))
    data = bytes(request.pack())
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, reply: bytes, addr: tuple[str, int]) -> None:
            if not got.done() and reply[:2] == data[:2]:
                got.set_result(reply)

    transport, _ = await loop.create_datagram_endpoint(
        Client, local_addr=(client, 0), remote_addr=("127.0.0.1", port))
    try:
        transport.sendto(data)
        reply = await asyncio.wait_for(got, QUERY_TIMEOUT)
    except TimeoutError:
        return None
    finally:
        transport.close()
    if reply[2] & 0x02:  # TC
        reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                       local_addr=(client, 0))
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
    local = q.rule.action is RuleAction.LOCAL  # type: ignore[union-attr]
    if local and reply.verdict is None:
        return "local records"
    prefix = "local CNAME, " if local else ""  # a CNAME out of the zone, followed
    if reply.verdict is None or reply.verdict == "not_protected":
        return f"{prefix}not judged"
    if reply.verdict != "violation":
        return f"{prefix}{reply.verdict}"
    judged = reply.protection[0] if reply.protection is not None else q.rule.policy  # type: ignore[union-attr]
    policy = cfg.policy_named(judged or "")
    if policy is not None and policy.mode is PolicyMode.MONITOR:
        return f"{prefix}violation, monitor: would {reply.action}"
    return f"{prefix}violation -> {reply.action}"


def show_addresses(addresses: Sequence[str]) -> str:
    shown = " ".join(addresses[:_SHOWN_ADDRESSES])
    more = len(addresses) - _SHOWN_ADDRESSES
    return f"{shown} +{more}" if more > 0 else shown


def sample(metric: Metric) -> float:
    return metrics.REGISTRY.get_sample_value(metric.name, dict(metric.labels)) or 0.0


def check(signal: Signal, before: dict[Signal, float], server: Server,
          ede: list[tuple[int, str]]) -> tuple[Signal, bool, str]:
    """Whether *signal* holds after the query, and what was seen instead."""
    if isinstance(signal, Metric):
        now = sample(signal)
        got = now - before[signal] if signal.delta else now
        return signal, got == signal.value, f"{got:+g}" if signal.delta else f"{got:g}"
    if isinstance(signal, Ready):
        ready, report = health.readiness(server)
        group = report["groups"].get(signal.group)
        if group is None:
            return signal, False, "no such group in /readyz"
        held = group["ready"] == signal.ready and group["reason"].startswith(signal.reason)
        return signal, held, f"/readyz {200 if ready else 503}: {group['reason']}"
    assert isinstance(signal, EdeText)
    return signal, any(signal.text in text for _, text in ede), "; ".join(t for _, t in ede)


async def run_scenario(port: int, scenario: Scenario, recorder: RecordingAccounting,
                       cfg: config_mod.Config, server: Server) -> Row:
    before = {s: sample(s) for s in scenario.signals if isinstance(s, Metric) and s.delta}
    msg = await ask(port, scenario.name, scenario.qtype, scenario.client)
    outcome = Outcome()
    if msg is None:
        return Row(scenario, outcome)
    outcome.rcode, outcome.addresses, _ = summary(msg)
    outcome.ede = ede_options(msg)
    outcome.signals = [check(s, before, server, outcome.ede) for s in scenario.signals]
    seen = recorder.seen.get((scenario.client, scenario.name.lower(),
                              wire.qtype_from_text(scenario.qtype)))
    outcome.verdict = verdict_of(seen, cfg)
    q, reply = seen if seen is not None else (None, None)
    if q is not None and q.rule is not None and q.rule.action is RuleAction.LOCAL:
        outcome.asked = q.group or "local"
    elif q is not None and reply is not None:
        outcome.asked = q.group or "-"
    raw = reply.upstream_reply if reply is not None else None
    if raw is not None:
        rcode, addresses, via_cname = summary(dnslib.DNSRecord.parse(raw.wire))
        outcome.upstream = " ".join(filter(None, (
            rcode, "CNAME ->" if via_cname else "", show_addresses(addresses))))
    return Row(scenario, outcome)


def render(rows: Sequence[Row], out: TextIO) -> None:
    """Prints the table, the Extended DNS Errors the clients got, and what the operator
    sees for each scenario."""
    header = ("NAME", "TYPE", "ASKED", "UPSTREAM SAID", "VERDICT", "CLIENT GOT", "")
    cells = []
    for row in rows:
        o = row.outcome
        got = " ".join(filter(None, (o.rcode, show_addresses(o.addresses),
                                     " ".join(f"EDE {code}" for code, _ in o.ede))))
        mark = "skipped" if o.skipped else "ok" if row.ok else "MISMATCH"
        cells.append((row.scenario.name, row.scenario.qtype, o.asked, o.upstream, o.verdict,
                      got, mark))
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
        if row.outcome.skipped:
            print(f"   skipped: {row.outcome.skipped}", file=out)
        elif not row.ok:
            s = row.scenario
            expected = " ".join(filter(None, (s.rcode, show_addresses(s.addresses),
                                               f"EDE {s.ede}" if s.ede is not None else "")))
            print(f"   expected: asked {s.asked}, verdict {s.verdict!r}, client got {expected}",
                  file=out)
    texts = [(row.scenario, code, text) for row in rows for code, text in row.outcome.ede]
    if texts:
        print("\nExtended DNS Errors (RFC 8914) the clients received:", file=out)
        for s, code, text in texts:
            print(f"  {s.name} (from {s.client}): EDE {code}: {text}", file=out)
    render_signals(rows, out)


def render_signals(rows: Sequence[Row], out: TextIO) -> None:
    """What the operator sees for each scenario: the metric, /readyz or EDE it expects."""
    print("\nWhat the operator sees (each expected signal):", file=out)
    for row in rows:
        for signal, held, seen in row.outcome.signals:
            mark = "ok" if held else f"MISMATCH (seen: {seen})"
            print(f"  {row.scenario.name} (from {row.scenario.client}): {signal}  {mark}",
                  file=out)


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
