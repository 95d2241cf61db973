"""Following a CNAME out of a local zone, as a resolver chases a CNAME.

A local record may point at a name the zone does not serve: a PrivateLink service's
private name aliased to its endpoint's DNS name (`vpce-0abc-xyz.vpce-svc-0123.REGION.
vpce.amazonaws.com`), whose addresses then need no copying by hand. The local zone answers
such a chain as far as it goes (`stages.local.Leaving`); here the target is resolved
through the rule that routes it, for the same type, client and flags:

- a forwarding rule: its cache, its upstream group and its answer policy, exactly as a
  query for the target itself would be answered (`Resolution.target`). The client gets the
  local CNAMEs, then the target's answer records (authority too, for NXDOMAIN and NODATA),
  with the target's rcode, Extended DNS Errors and policy verdict: a target the policy
  blocks is SERVFAIL (or its action's rcode) with that EDE, and no records;
- another local rule: its answer, which may leave its zone again;
- no rule, or a refusing one: the CNAMEs alone (the client may try the target itself).

The forwarder follows at most `MAX_HOPS` CNAMEs itself, across zones; a longer chain, or
one that comes back to a name it already followed (a loop between local zones), is
SERVFAIL with EDE 0 naming the chain. The answer is not cached as such (local answers
never are); the target's answer is, under the target's own rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from forwarder.config.model import RuleAction
from forwarder.dns import message, wire
from forwarder.query import Query, Reply, error_reply
from forwarder.stages.local import Leaving

if TYPE_CHECKING:
    from forwarder.pipeline.resolution import Resolution

MAX_HOPS = 8  # CNAMEs the forwarder follows itself, in all the local zones of one chain
CNAME = "CNAME"


async def follow(parent: Resolution) -> Reply:
    """The answer to *parent*'s query, whose local answer leaves its zone."""
    rt, q = parent.rt, parent.q
    trace, q.trace = q.trace, None  # answer_here noted this answer already
    reply = rt.local[q.rule.index].answer(q)  # type: ignore[union-attr]
    q.trace = trace
    cnames: list[message.Record] = []
    chain = [q.name]
    while isinstance(reply, Leaving):
        for record in message.parse_sections(reply.wire).answer:
            cnames.append(record)
            if record.value in chain:
                return _broken(q, f"CNAME loop: {' -> '.join([*chain, record.value])}")
            chain.append(record.value)
            if len(chain) - 1 > MAX_HOPS:
                return _broken(q, f"CNAME chain from {q.name} longer than {MAX_HOPS}: "
                                  f"{' -> '.join(chain[:3])} -> ... -> {chain[-1]}")
        sub = _subquery(q, reply.target, rt)
        rule = rt.router.route(sub.qname, sub.qtype, sub.client[0])
        if rule is None or rule.action is RuleAction.REFUSE:
            q.note(f"CNAME target {sub.name}: no rule forwards it: the CNAMEs alone")
            return _combined(q, cnames, None)
        sub.rule = rule
        q.note(f"CNAME target {sub.name} leaves the local zone: rule zones[{rule.index}] "
               f"match {rule.match!r}")
        if rule.action is RuleAction.LOCAL:
            reply = rt.local[rule.index].answer(sub)
            continue
        got = await type(parent)(parent.pipeline, rt, sub, parent.client).target()
        q.group = sub.group
        return _judged(_combined(q, cnames, got), got)
    return _combined(q, cnames, reply)


def _subquery(q: Query, target: bytes, rt: object) -> Query:
    """A query for *target* as the client asked for the first name: type, class, flags."""
    return Query(b"", q.id, q.flags, target, q.qtype, q.qclass,
                 wire.question_of(target, q.qtype, q.qclass), q.client, q.transport, q.edns,
                 q.udp_size, q.do, q.cd, q.received, trace=q.trace,
                 edns_version=q.edns_version, runtime=rt)


def _combined(q: Query, cnames: list[message.Record], end: Reply | None) -> Reply:
    """The CNAMEs followed, then the answer of the last name (*end*; None: nothing
    answers it) for *q*: its records and rcode, or its failure alone."""
    answer: tuple[message.Record, ...] = ()
    authority: tuple[message.Record, ...] = ()
    rcode, ede, server = int(wire.Rcode.NOERROR), (), None
    if end is not None:
        rcode, ede, server = end.rcode, end.ede, end.server
        if rcode not in (wire.Rcode.NOERROR, wire.Rcode.NXDOMAIN):  # SERVFAIL, REFUSED...
            return Reply(wire.synth_reply(q.flags, q.question, rcode), rcode, "local", ede,
                         server)
        try:
            sections = message.parse_sections(end.wire)
        except ValueError as e:
            return _broken(q, f"the answer for the CNAME target cannot be read: {e}")
        answer, authority = sections.answer, sections.authority
    try:
        data = message.build_answer(q, [*cnames, *answer], rcode, authority=authority)
    except ValueError as e:
        return _broken(q, str(e))
    return Reply(data, rcode, "local", ede, server)


def _judged(reply: Reply, target: Reply) -> Reply:
    """*reply* with the policy's verdict on the forwarded *target*, for the query log."""
    reply.verdict, reply.action = target.verdict, target.action
    reply.violations = target.violations
    reply.protection = target.protection
    reply.upstream = target.upstream_reply
    return reply


def _broken(q: Query, why: str) -> Reply:
    q.note(f"{why}: SERVFAIL")
    return error_reply(q, wire.Rcode.SERVFAIL, wire.Ede.OTHER, why, by="local")
