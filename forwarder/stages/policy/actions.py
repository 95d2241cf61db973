"""What a policy does about a violation (`on_violation`, then `then`):

- `rewrite`: the configured addresses of the first chain name that has a rewrite key (exact
  name first, then the longest `*.` wildcard below which the name lies); CNAMEs of the chain
  up to that name are kept. A query type without configured addresses (AAAA with only A
  given, HTTPS, ...) gets NODATA. EDE 4 (Forged Answer);
- `rewrite_cname`: a CNAME from that name to the key's target, plus what the target resolves
  to through the same upstream group (its addresses must be allowed). A target written
  `*.rest` has the `*` replaced by the labels of the name left of the key's suffix (key
  `*.s3.ap-northeast-1.amazonaws.com`, name `bucket.s3.ap-northeast-1.amazonaws.com`,
  target `*.vpce-0abc.s3...` -> `bucket.vpce-0abc.s3...`); for an exact key the `*.` is
  dropped. EDE 4;
- `servfail`, `refuse`, `nxdomain`, `nodata`: that answer with EDE 15 (Blocked);
- `strip`: the violating records removed, the rest kept (EDE 15); NODATA when no address
  is left;
- `fallback`: the same question to the `fallback` group; a clean answer from it is passed
  on (no EDE), a violating or failed one gets the `then` action;
- `monitor`: the answer passes unchanged, counted and logged.

When a rewrite finds no key (or rewrite_cname's target fails), the `then` action applies
(default servfail). Synthesised answers carry the policy's `ttl` on every record;
NXDOMAIN/NODATA carry an SOA (owner: the protected suffix the query name is under, else the
rule's zone; MINIMUM and TTL `ttl`).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import forwarder.stages.policy.judge as judging
from forwarder.config import model
from forwarder.dns import message, names, netsets, recordstrip, wire
from forwarder.dns import reply as reply_mod
from forwarder.errors import FormError, UpstreamError
from forwarder.query import Query, Reply
from forwarder.stages.policy.judge import Case, addresses_text

if TYPE_CHECKING:
    from forwarder.stages.policy import AnswerPolicy
    from forwarder.upstream.group import Group

V = model.Violation
NOERROR, SERVFAIL, NXDOMAIN, REFUSED = 0, 2, 3, 5
BLOCKED, FORGED = int(wire.Ede.BLOCKED), int(wire.Ede.FORGED_ANSWER)
TYPE_A, TYPE_CNAME, TYPE_SOA, TYPE_AAAA = 1, 5, 6, 28

SOA_MNAME = "forwarder.invalid"
SOA_RNAME = "hostmaster.forwarder.invalid"
_SOA_TAIL = names.from_text(SOA_MNAME) + names.from_text(SOA_RNAME)
_SOA_TIMERS = struct.Struct("!IIIII")  # serial, refresh, retry, expire, minimum
_RR = struct.Struct("!HHIH")
_QNAME = b"\xc0\x0c"  # a pointer to the question name, which follows the 12-byte header
_BLOCK_RCODES = {V.SERVFAIL: SERVFAIL, V.REFUSE: REFUSED, V.NXDOMAIN: NXDOMAIN,
                 V.NODATA: NOERROR}
_EVERY_NAME: judging.Protected = names.SuffixTable([(".", ".")])  # judged whatever its name


class Outcome(NamedTuple):
    reply: Reply
    action: str  # the metric label: what was done


async def act(policy: AnswerPolicy, q: Query, case: Case, action: model.Violation, why: str,
              group: Group | None, groups: Mapping[str, Any]) -> Outcome:
    """Carries out *action* on *case*; *why* is the explanation so far (for the EDE)."""
    if action is V.MONITOR:
        q.note(f"policy {policy.name}: {why}; on_violation monitor: answer passed unchanged")
        return Outcome(case.reply, "monitor")
    if action in _BLOCK_RCODES:
        return block(policy, q, case, action, why)
    if action is V.STRIP:
        return _strip(policy, q, case, why)
    if action is V.REWRITE:
        return await _rewrite(policy, q, case, why, group, groups)
    if action is V.REWRITE_CNAME:
        return await _rewrite_cname(policy, q, case, why, group, groups)
    return await _fallback(policy, q, case, why, group, groups)


async def _then(policy: AnswerPolicy, q: Query, case: Case, why: str, failed: model.Violation,
                group: Group | None, groups: Mapping[str, Any]) -> Outcome:
    """The `then` action, after a fallback or a rewrite could not give a clean answer."""
    action = policy.cfg.then
    if action in (V.FALLBACK, V.REWRITE_CNAME) or action is failed:
        action = V.SERVFAIL  # never loop: parse forbids these, this guards the rest
    return await act(policy, q, case, action, why, group, groups)


def block(policy: AnswerPolicy, q: Query, case: Case, action: model.Violation,
          why: str) -> Outcome:
    rcode = _BLOCK_RCODES[action]
    if action is V.NXDOMAIN or action is V.NODATA:
        shown = "NXDOMAIN" if rcode == NXDOMAIN else "NODATA"
        data = _negative(policy, q, rcode, case.judgement.protected_name)
    else:
        shown = "SERVFAIL" if rcode == SERVFAIL else "REFUSED"
        data = wire.synth_reply(q.flags, q.question, rcode)
    text = f"{why}; answered {shown}"
    q.note(f"policy {policy.name}: {text}")
    return Outcome(Reply(data, rcode, "policy", ((BLOCKED, text),)), action.value)


def _strip(policy: AnswerPolicy, q: Query, case: Case, why: str) -> Outcome:
    judgement = case.judgement
    gone = {a.start for a in judgement.violations}
    left = [a for a in judgement.addresses if a.start not in gone]
    records = len(gone)
    what = f"stripped {records} record{'s' if records != 1 else ''}"
    if not left:
        text = f"{why}; {what}, no address left: answered NODATA"
        q.note(f"policy {policy.name}: {text}")
        data = _negative(policy, q, NOERROR, judgement.protected_name)
        return Outcome(Reply(data, NOERROR, "policy", ((BLOCKED, text),)), "strip")
    try:
        data = recordstrip.strip_records(case.index,
                                         (*judgement.violations, *judgement.additional))
    except FormError as e:
        return block(policy, q, case, V.SERVFAIL, f"{why}; cannot strip: {e}")
    text = f"{why}; {what}, kept {', '.join(a.text for a in left)}"
    q.note(f"policy {policy.name}: {text}")
    reply = Reply(data, case.reply.rcode, "policy", ((BLOCKED, text),), case.reply.server)
    return Outcome(reply, "strip")


async def _rewrite(policy: AnswerPolicy, q: Query, case: Case, why: str, group: Group | None,
                   groups: Mapping[str, Any]) -> Outcome:
    chain = [names.to_text(n) for n in case.index.chain()]
    found = rewrite_key(policy, chain)
    if found is None:
        return await _then(policy, q, case, f"{why}; no rewrite key matches {chain[-1]}",
                           V.REWRITE, group, groups)
    index, key, target = found
    chain = chain[: index + 1]
    if q.qtype == TYPE_A:
        values = target.a
    elif q.qtype == TYPE_AAAA:
        values = target.aaaa
    else:
        values = ()
    ttl = policy.cfg.ttl
    try:
        answer = _cname_records(chain, ttl)
        owner = _owner(chain[-1], index)
        for value in values:
            answer += _rr(owner, q.qtype, ttl, netsets.pack_address(value))
    except ValueError as e:
        return block(policy, q, case, V.SERVFAIL, f"{why}; cannot rewrite: {e}")
    count = len(chain) - 1 + len(values)
    authority = b""
    if values:
        done = f"rewritten to {', '.join(values)} (rewrite key {key})"
    else:
        done = (f"rewritten to NODATA: rewrite key {key} has no "
                f"{wire.qtype_to_text(q.qtype)} addresses")
        authority = _soa(policy, chain[-1], q)
    data = wire.synth_reply(q.flags, q.question, NOERROR, answers=answer, ancount=count,
                            authority=authority, nscount=1 if authority else 0)
    text = f"{why}; {done}"
    q.note(f"policy {policy.name}: {text}")
    return Outcome(Reply(data, NOERROR, "policy", ((FORGED, text),)), "rewrite")


async def _rewrite_cname(policy: AnswerPolicy, q: Query, case: Case, why: str, group: Group | None,
                         groups: Mapping[str, Any]) -> Outcome:
    chain = [names.to_text(n) for n in case.index.chain()]
    found = rewrite_key(policy, chain)
    if found is None or found[2].cname is None:
        miss = (f"no rewrite key matches {chain[-1]}" if found is None
                else f"rewrite key {found[1]} has no CNAME")
        return await _then(policy, q, case, f"{why}; {miss}", V.REWRITE_CNAME, group, groups)
    index, key, rewrite = found
    chain = chain[: index + 1]
    target = substitute(rewrite.cname, key, chain[-1])  # type: ignore[arg-type]
    if group is None:  # an answer no group gave, and no group routes the name
        return await _then(policy, q, case, f"{why}; no upstream group to resolve "
                           f"rewrite_cname target {target}", V.REWRITE_CNAME, group, groups)
    try:
        tname = names.from_text(target)
    except ValueError as e:
        return await _then(policy, q, case, f"{why}; bad rewrite_cname target {target}: {e}",
                           V.REWRITE_CNAME, group, groups)
    q.note(f"policy {policy.name}: rewrite_cname {chain[-1]} -> {target}: ask group "
           f"{group.name}")
    try:
        got = await group.ask(wire.question_of(tname, q.qtype, q.qclass), tname, q.qtype,
                              q.qclass, q.flags, False)
    except UpstreamError as e:
        return await _then(policy, q, case, f"{why}; rewrite_cname target {target} did not "
                           f"resolve: {e.text}", V.REWRITE_CNAME, group, groups)
    problem = None
    if got.rcode not in (NOERROR, NXDOMAIN):
        problem = f"group {group.name} answered rcode {got.rcode}"
    else:
        try:
            verdict = judging.judge(_index(got), _EVERY_NAME, policy.allowed)
            if verdict.violations:
                problem = (f"it resolved to {addresses_text(verdict.violations)}, outside "
                           "the allowed networks")
        except FormError as e:
            problem = f"its answer cannot be read: {e}"
    if problem is None:
        try:
            sections = message.parse_sections(got.wire)
            ttl = policy.cfg.ttl
            records = [message.Record(a, "CNAME", ttl, b) for a, b in itertools.pairwise(chain)]
            records.append(message.Record(chain[-1], "CNAME", ttl, target))
            data = message.build_answer(q, [*records, *sections.answer], got.rcode,
                                        authority=sections.authority)
        except ValueError as e:
            problem = f"cannot build the answer: {e}"
    if problem is not None:
        return await _then(policy, q, case, f"{why}; rewrite_cname target {target}: {problem}",
                           V.REWRITE_CNAME, group, groups)
    text = f"{why}; rewritten to CNAME {target} (rewrite key {key})"
    q.note(f"policy {policy.name}: {text}")
    reply = Reply(data, got.rcode, "policy", ((FORGED, text),), got.server)
    return Outcome(reply, "rewrite_cname")


async def _fallback(policy: AnswerPolicy, q: Query, case: Case, why: str, group: Group | None,
                    groups: Mapping[str, Any]) -> Outcome:
    name = policy.cfg.fallback
    other = groups.get(name) if name is not None else None
    if other is None:
        return await _then(policy, q, case, f"{why}; no fallback group", V.FALLBACK, group,
                           groups)
    q.note(f"policy {policy.name}: {why}; asking fallback group {other.name}")
    try:
        got = await other.exchange(q)
    except UpstreamError as e:
        return await _then(policy, q, case, f"{why}; fallback group {other.name} failed: "
                           f"{e.text}", V.FALLBACK, other, groups)
    try:
        index = _index(got)
    except FormError as e:
        return await _then(policy, q, case, f"{why}; fallback group {other.name} sent an "
                           f"answer that cannot be read: {e}", V.FALLBACK, other, groups)
    judgement = judging.judge(index, policy.protected, policy.allowed)
    if judgement.violations:
        again = Case(got, index, judgement, other.name, policy)
        return await _then(policy, q, again, f"{why}; fallback group {other.name} answered "
                           f"{addresses_text(judgement.violations)} too", V.FALLBACK, other,
                           groups)
    shown = ", ".join(a.text for a in index.addresses()) or "no addresses"
    q.note(f"policy {policy.name}: fallback group {other.name} answered {shown}: used")
    used = Reply(got.wire, got.rcode, "policy", (), got.server)
    if judgement.protected_name is not None and judgement.additional:
        used = policy.without_additional(q, used, index, judgement)
    return Outcome(used, "fallback")


# --- building blocks ---------------------------------------------------------------------------


def _index(reply: Reply) -> reply_mod.Index:
    """The reply's index (read now when the reply came without one). Raises FormError."""
    return reply.index if reply.index is not None else reply_mod.read(reply.wire)


def rewrite_key(policy: AnswerPolicy, chain: list[str],
                ) -> tuple[int, str, model.RewriteTarget] | None:
    """The first chain name with a rewrite key: its index, the key and the target."""
    for index, name in enumerate(chain):
        hit = policy.exact.get(name)
        if hit is not None:
            return index, hit[0], hit[1]
        if policy.wildcards:
            rest = name
            while "." in rest:
                rest = rest.split(".", 1)[1]
                hit = policy.wildcards.get(rest)
                if hit is not None:
                    return index, hit[0], hit[1]
    return None


def substitute(target: str, key: str, name: str) -> str:
    """The rewrite_cname target for *name*, which matched rewrite *key*.

    A target ``*.rest`` has ``*`` replaced by the labels of *name* left of the key's suffix
    (wildcard key ``*.s3.x`` and name ``a.b.s3.x`` give ``a.b.rest``); for an exact key,
    which leaves no labels, the ``*.`` is dropped. Other targets are used as they are.
    """
    if not target.startswith("*."):
        return target
    rest = target[2:]
    if not key.startswith("*."):
        return rest
    suffix = key[2:]
    left = name[: len(name) - len(suffix) - 1] if suffix else name
    return f"{left}.{rest}" if left else rest


def _negative(policy: AnswerPolicy, q: Query, rcode: int, name: bytes | None) -> bytes:
    """NXDOMAIN or NODATA for *q* with the SOA of *name*'s zone in authority."""
    text = names.to_text(name) if name is not None else q.name
    return wire.synth_reply(q.flags, q.question, rcode, authority=_soa(policy, text, q),
                            nscount=1)


def _soa(policy: AnswerPolicy, name: str, q: Query) -> bytes:
    """The synthetic SOA record for the zone *name* (a protected name) belongs to."""
    zone = policy.protected.zone_of(name)
    if zone is None or not names.is_subdomain(q.name, zone):
        # the question is not under the protected suffix (it reached it by CNAME): the
        # SOA must be an ancestor of the question name, and the rule's zone is one
        rule = q.rule
        zone = rule.match if rule is not None and names.is_subdomain(q.name, rule.match) \
            else "."
    ttl = policy.cfg.ttl
    rdata = _SOA_TAIL + _SOA_TIMERS.pack(1, 3600, 600, 86400, ttl)
    return _rr(names.from_text(zone), TYPE_SOA, ttl, rdata)


def _rr(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    return owner + _RR.pack(rtype, 1, ttl, len(rdata)) + rdata


def _owner(name: str, index: int) -> bytes:
    """Wire owner for the chain name at *index*: the question name is a pointer."""
    return _QNAME if index == 0 else names.from_text(name)


def _cname_records(chain: list[str], ttl: int) -> bytes:
    out = b""
    for i in range(len(chain) - 1):
        out += _rr(_owner(chain[i], i), TYPE_CNAME, ttl, names.from_text(chain[i + 1]))
    return out
