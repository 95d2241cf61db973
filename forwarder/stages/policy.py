"""Answer policy: judge forwarded answers for protected names, then pass, rewrite, block,
strip, fall back or monitor (DESIGN.md "Answer policy").

`AnswerPolicy.apply` runs on every upstream answer of a rule with a policy, before caching.

What is judged: when the query name, a name of the answer's CNAME chain or the owner of an
answer address lies under a `protected` suffix, every address of the answer section (A,
AAAA, HTTPS/SVCB ipv4hint/ipv6hint) must lie in `allowed` (IPv4-mapped and NAT64 addresses
count as their IPv4 address). Anything else is a violation. The walking and judging is
`forwarder.dns.answers`; this module decides what to do about the verdict:

- pass: the answer goes on unchanged, except that additional-section addresses of a
  protected answer are removed (allowed or not: clients never need them, and they escape
  the judgement of the answer section);
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
(default servfail). Synthesised answers carry `ttl` on every record; NXDOMAIN/NODATA carry
an SOA (owner: the protected suffix the query name is under, else the rule's zone; MINIMUM
and TTL `ttl`). A policy in `mode: monitor` decides as in enforce mode but passes the
upstream answer unchanged, without an EDE: clients see exactly what they would without the
policy (a dry run, as dnsdist's). An answer that cannot be walked fails closed (SERVFAIL).

Every verdict on a protected answer is counted in `forwarder_policy_verdicts_total{policy,
rule, action, mode}`: action "pass" for clean answers, otherwise the action finally taken
("fallback" when the fallback answer was used, else the `then` action; in monitor mode the
action that would have been taken). Answers with no protected name are not counted (the
rule's query counters have them). Each violation is logged as one line on
"forwarder.policy", and recorded on the query (`verdict`, `action`) for the query log.
"""

from __future__ import annotations

import itertools
import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from forwarder import metrics
from forwarder.config import model
from forwarder.dns import answers, message, names, netsets, recordstrip, wire
from forwarder.dns.wire import TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_SOA
from forwarder.errors import UpstreamError
from forwarder.query import Query, Reply

if TYPE_CHECKING:
    from forwarder.runtime import Runtime
    from forwarder.upstream.group import Group

log = logging.getLogger("forwarder.policy")

V = model.Violation
NOERROR, SERVFAIL, NXDOMAIN, REFUSED = 0, 2, 3, 5
BLOCKED, FORGED = int(wire.Ede.BLOCKED), int(wire.Ede.FORGED_ANSWER)

SOA_MNAME = "forwarder.invalid"
SOA_RNAME = "hostmaster.forwarder.invalid"
_SOA_TAIL = wire.text_to_name(SOA_MNAME) + wire.text_to_name(SOA_RNAME)
_SOA_TIMERS = struct.Struct("!IIIII")  # serial, refresh, retry, expire, minimum
_RR = struct.Struct("!HHIH")
_QNAME = b"\xc0\x0c"  # a pointer to the question name, which follows the 12-byte header
_BLOCK_RCODES = {V.SERVFAIL: SERVFAIL, V.REFUSE: REFUSED, V.NXDOMAIN: NXDOMAIN,
                 V.NODATA: NOERROR}
_EVERY_NAME = answers.SuffixSet(["."])  # a rewrite_cname target is judged whatever its name
_ADDRESS_CARRIERS = frozenset((TYPE_CNAME, 64, 65))  # CNAME (a chain), SVCB and HTTPS (hints)
_SHOWN_ADDRESSES = 3
_SHOWN_NETWORKS = 6

# (protected name, public addresses, upstream group) -> why, in words (forwarder.aws)
Explain = Callable[[str, tuple[str, ...], str], "str | None"]


class _Case(NamedTuple):
    """One answer under judgement and where it came from."""

    reply: Reply
    scan: answers.AnswerScan
    judgement: answers.Judgement
    group: str


class _Outcome(NamedTuple):
    reply: Reply
    action: str  # the metric label: what was done


class AnswerPolicy:
    """One configured policy, compiled: suffixes, networks and the rewrite table."""

    def __init__(self, cfg: model.Policy, explain: Explain | None = None) -> None:
        self.cfg = cfg
        self._explain = explain
        self.name = cfg.name
        self.protected = answers.SuffixSet(cfg.protected)
        self.allowed = netsets.NetworkSet.parse(cfg.allowed)
        self.monitor_only = cfg.mode is model.PolicyMode.MONITOR
        self.mode = cfg.mode.value
        self._tokens = _label_tokens(self.protected)
        self._protected_wire = names.SuffixTable((s or ".", True) for s in self.protected)
        self._allowed_text = _shorten([str(n) for n in self.allowed], _SHOWN_NETWORKS)
        self._exact: dict[str, tuple[str, model.RewriteTarget]] = {}
        self._wildcards: dict[str, tuple[str, model.RewriteTarget]] = {}
        for key, target in cfg.rewrite:
            if key.startswith("*."):
                self._wildcards[key[2:]] = (key, target)
            else:
                self._exact[key] = (key, target)

    # --- judging ---------------------------------------------------------------------------

    async def apply(self, q: Query, reply: Reply, group: Group, rt: Runtime) -> Reply:
        """Answers the reply the client gets for the upstream *reply* that *group* sent."""
        decided = self.decide(q, reply, group.name)
        if isinstance(decided, Reply):
            return decided
        return await self.enforce(q, decided, group, rt)

    async def enforce(self, q: Query, violation: tuple[_Case, str], group: Group,
                      rt: Runtime) -> Reply:
        """Carries out `on_violation` on a violation `decide` found."""
        case, why = violation
        outcome = await self._act(q, case, self.cfg.on_violation, why, group, rt)
        cause = self._record(q, case, outcome.action)
        if cause and outcome.reply.ede:  # after the action: a cut EDE text keeps the action
            r = outcome.reply
            return Reply(r.wire, r.rcode, r.answered_by,
                         tuple((code, f"{text}; {cause}") for code, text in r.ede), r.server)
        return outcome.reply

    def decide(self, q: Query, reply: Reply, group: str) -> Reply | tuple[_Case, str]:
        """Judges *reply* and answers what the client gets, unless an action must be carried
        out (a violation in enforce mode): then the case and why, for `apply`."""
        if q.trace is None and reply.records is not None and self._plain(q, reply):
            return reply
        tokens = self._tokens
        if tokens is not None:
            # Every label of every name in a message appears uncompressed somewhere in it,
            # so without a protected suffix's longest label no name can be under that suffix.
            low = reply.wire.lower()
            for token in tokens:
                if token in low:
                    break
            else:
                q.verdict = "not_protected"
                if q.trace is not None:
                    q.note(f"policy {self.name}: no name under {self.protected}: not judged")
                return reply
        try:
            scan = answers.scan_response(reply.wire)
        except answers.ScanError as e:
            return self._unreadable(q, reply, group, str(e))
        judgement = answers.judge(scan, self.protected, self.allowed)
        if judgement.protected_name is None:
            q.verdict = "not_protected"
            if q.trace is not None:
                q.note(f"policy {self.name}: no name under {self.protected}: not judged")
            return reply
        if not judgement.violations:
            q.verdict = "pass"
            q.action = "pass"
            self._count(q, "pass")
            if q.trace is not None:
                shown = ", ".join(a.text for a in scan.addresses) or "no addresses"
                q.note(f"policy {self.name}: {judgement.protected_name} is protected; "
                       f"{shown} allowed: pass")
            if self.monitor_only or not scan.additional_addresses:
                return reply
            return self._without_additional(q, reply, scan)
        q.verdict = "violation"
        case = _Case(reply, scan, judgement, group)
        why = self._violation_text(q, case)
        if self.monitor_only:
            q.note(f"policy {self.name}: {why}; would {self.cfg.on_violation.value} "
                   "(mode monitor): answer passed unchanged")
            self._record(q, case, self.cfg.on_violation.value)
            return reply
        return case, why

    def _plain(self, q: Query, reply: Reply) -> bool:
        """`decide` for the common answer, from the records the upstream reply's walk found:
        answers True, having recorded the verdict, when every answer record is owned by
        the query name (a pointer to the question) and is an A or AAAA record or a type
        that carries no address, the additional section has no address, and the answer
        is not protected or all its addresses are allowed. Answers False, having done
        nothing, for anything else (CNAME chains, HTTPS hints, a violation): `decide`
        then scans the answer in full."""
        records, ancount, _negative = reply.records  # type: ignore[misc]
        data = reply.wire
        pos = 12 + len(q.question)
        found = []
        for i in range(ancount):
            ttl = records[i][0]
            if ttl != pos + 6 or data[pos] != 0xC0 or data[pos + 1] != 12 \
                    or data[pos + 4] != 0 or data[pos + 5] != 1:  # owner, class IN
                return False
            rtype = data[pos + 2] << 8 | data[pos + 3]
            rdata = ttl + 6
            pos = rdata + (data[ttl + 4] << 8 | data[ttl + 5])
            if rtype == 1 or rtype == 28:
                if pos - rdata != (4 if rtype == 1 else 16):
                    return False
                found.append(data[rdata:pos])
            elif rtype in _ADDRESS_CARRIERS:
                return False
        for i in range(ancount + (data[8] << 8 | data[9]), len(records)):
            ttl = records[i][0]
            if data[ttl - 2] == 0 and data[ttl - 1] == 1 and data[ttl - 4] == 0 \
                    and data[ttl - 3] in (1, 28):  # an A or AAAA in the additional section
                return False
        if self._protected_wire.lookup(q.qname) is None:
            q.verdict = "not_protected"
            return True
        inside = self.allowed.contains_packed
        for packed in found:
            if not inside(packed):
                return False
        q.verdict = "pass"
        q.action = "pass"
        self._count(q, "pass")
        return True

    def _unreadable(self, q: Query, reply: Reply, group: str, error: str) -> Reply:
        """An answer that cannot be walked cannot be shown safe: SERVFAIL (enforce mode)."""
        q.verdict = "violation"
        why = (f"answer for {q.name} from group {group} cannot be checked by policy "
               f"{self.name}: {error}")
        if self.monitor_only:
            action, out = "servfail", reply  # what enforce mode would do
        elif self.cfg.on_violation is V.MONITOR:
            action, out = "monitor", reply
        else:
            action = "servfail"
            out = Reply(wire.synth_reply(q.flags, q.question, SERVFAIL), SERVFAIL, "policy",
                        ((BLOCKED, f"{why}; answered SERVFAIL"),))
        q.action = action
        q.note(f"policy {self.name}: {why}; {action}")
        self._count(q, action)
        log.warning("policy violation policy=%s mode=%s rule=%s group=%s client=%s name=%s "
                    "type=%s addresses=unreadable action=%s", self.name, self.mode,
                    _rule_name(q), group, q.client[0], q.name, q.type_name, action)
        return out

    # --- actions -----------------------------------------------------------------------------

    async def _act(self, q: Query, case: _Case, action: model.Violation, why: str,
                   group: Group, rt: Runtime) -> _Outcome:
        """Carries out *action* on *case*; *why* is the explanation so far (for the EDE)."""
        if action is V.MONITOR:
            q.note(f"policy {self.name}: {why}; on_violation monitor: answer passed unchanged")
            return _Outcome(case.reply, "monitor")
        if action in _BLOCK_RCODES:
            return self._block(q, case, action, why)
        if action is V.STRIP:
            return self._strip(q, case, why)
        if action is V.REWRITE:
            return await self._rewrite(q, case, why, group, rt)
        if action is V.REWRITE_CNAME:
            return await self._rewrite_cname(q, case, why, group, rt)
        return await self._fallback(q, case, why, group, rt)

    async def _then(self, q: Query, case: _Case, why: str, failed: model.Violation,
                    group: Group, rt: Runtime) -> _Outcome:
        """The `then` action, after a fallback or a rewrite could not give a clean answer."""
        action = self.cfg.then
        if action in (V.FALLBACK, V.REWRITE_CNAME) or action is failed:
            action = V.SERVFAIL  # never loop: parse forbids these, this guards the rest
        return await self._act(q, case, action, why, group, rt)

    def _block(self, q: Query, case: _Case, action: model.Violation, why: str) -> _Outcome:
        rcode = _BLOCK_RCODES[action]
        if action is V.NXDOMAIN or action is V.NODATA:
            shown = "NXDOMAIN" if rcode == NXDOMAIN else "NODATA"
            data = self._negative(q, rcode, case.judgement.protected_name)
        else:
            shown = "SERVFAIL" if rcode == SERVFAIL else "REFUSED"
            data = wire.synth_reply(q.flags, q.question, rcode)
        text = f"{why}; answered {shown}"
        q.note(f"policy {self.name}: {text}")
        return _Outcome(Reply(data, rcode, "policy", ((BLOCKED, text),)), action.value)

    def _strip(self, q: Query, case: _Case, why: str) -> _Outcome:
        violations = case.judgement.violations
        gone = {a.offset for a in violations}
        left = [a for a in case.scan.addresses if a.offset not in gone]
        records = len(gone)
        what = f"stripped {records} record{'s' if records != 1 else ''}"
        if not left:
            text = f"{why}; {what}, no address left: answered NODATA"
            q.note(f"policy {self.name}: {text}")
            data = self._negative(q, NOERROR, case.judgement.protected_name)
            return _Outcome(Reply(data, NOERROR, "policy", ((BLOCKED, text),)), "strip")
        try:
            data = recordstrip.strip_records(case.reply.wire,
                                         (*violations, *case.scan.additional_addresses))
        except answers.ScanError as e:
            return self._block(q, case, V.SERVFAIL, f"{why}; cannot strip: {e}")
        text = f"{why}; {what}, kept {', '.join(a.text for a in left)}"
        q.note(f"policy {self.name}: {text}")
        reply = Reply(data, case.reply.rcode, "policy", ((BLOCKED, text),), case.reply.server)
        return _Outcome(reply, "strip")

    async def _rewrite(self, q: Query, case: _Case, why: str, group: Group,
                       rt: Runtime) -> _Outcome:
        found = self._rewrite_key(case.scan.chain)
        if found is None:
            return await self._then(q, case, f"{why}; no rewrite key matches {case.scan.chain[-1]}",
                                    V.REWRITE, group, rt)
        index, key, target = found
        chain = case.scan.chain[: index + 1]
        if q.qtype == TYPE_A:
            values = target.a
        elif q.qtype == TYPE_AAAA:
            values = target.aaaa
        else:
            values = ()
        ttl = self.cfg.ttl
        try:
            answer = _cname_records(chain, ttl)
            owner = _owner(chain[-1], index)
            for value in values:
                answer += _rr(owner, q.qtype, ttl, netsets.pack_address(value))
        except ValueError as e:
            return self._block(q, case, V.SERVFAIL, f"{why}; cannot rewrite: {e}")
        count = len(chain) - 1 + len(values)
        authority = b""
        if values:
            done = f"rewritten to {', '.join(values)} (rewrite key {key})"
        else:
            done = (f"rewritten to NODATA: rewrite key {key} has no "
                    f"{wire.qtype_to_text(q.qtype)} addresses")
            authority = self._soa(chain[-1], q)
        data = wire.synth_reply(q.flags, q.question, NOERROR, answers=answer, ancount=count,
                                authority=authority, nscount=1 if authority else 0)
        text = f"{why}; {done}"
        q.note(f"policy {self.name}: {text}")
        return _Outcome(Reply(data, NOERROR, "policy", ((FORGED, text),)), "rewrite")

    async def _rewrite_cname(self, q: Query, case: _Case, why: str, group: Group,
                             rt: Runtime) -> _Outcome:
        found = self._rewrite_key(case.scan.chain)
        if found is None or found[2].cname is None:
            miss = (f"no rewrite key matches {case.scan.chain[-1]}" if found is None
                    else f"rewrite key {found[1]} has no CNAME")
            return await self._then(q, case, f"{why}; {miss}", V.REWRITE_CNAME, group, rt)
        index, key, rewrite = found
        chain = case.scan.chain[: index + 1]
        target = substitute(rewrite.cname, key, chain[-1])  # type: ignore[arg-type]
        try:
            tname = wire.text_to_name(target)
        except ValueError as e:
            return await self._then(q, case, f"{why}; bad rewrite_cname target {target}: {e}",
                                    V.REWRITE_CNAME, group, rt)
        q.note(f"policy {self.name}: rewrite_cname {chain[-1]} -> {target}: ask group "
               f"{group.name}")
        try:
            got = await group.ask(wire.question_of(tname, q.qtype, q.qclass), tname, q.qtype,
                                  q.qclass, q.flags, False)
        except UpstreamError as e:
            return await self._then(q, case, f"{why}; rewrite_cname target {target} did not "
                                    f"resolve: {e.text}", V.REWRITE_CNAME, group, rt)
        problem = None
        if got.rcode not in (NOERROR, NXDOMAIN):
            problem = f"group {group.name} answered rcode {got.rcode}"
        else:
            try:
                verdict = answers.judge(answers.scan_response(got.wire), _EVERY_NAME,
                                        self.allowed)
                if verdict.violations:
                    problem = f"it resolved to {_addresses_text(verdict.violations)}, " \
                              "outside the allowed networks"
            except answers.ScanError as e:
                problem = f"its answer cannot be read: {e}"
        if problem is None:
            try:
                sections = message.parse_sections(got.wire)
                ttl = self.cfg.ttl
                records = [message.Record(a, "CNAME", ttl, b)
                           for a, b in itertools.pairwise(chain)]
                records.append(message.Record(chain[-1], "CNAME", ttl, target))
                data = message.build_answer(q, [*records, *sections.answer], got.rcode,
                                            authority=sections.authority)
            except ValueError as e:
                problem = f"cannot build the answer: {e}"
        if problem is not None:
            return await self._then(q, case, f"{why}; rewrite_cname target {target}: {problem}",
                                    V.REWRITE_CNAME, group, rt)
        text = f"{why}; rewritten to CNAME {target} (rewrite key {key})"
        q.note(f"policy {self.name}: {text}")
        reply = Reply(data, got.rcode, "policy", ((FORGED, text),), got.server)
        return _Outcome(reply, "rewrite_cname")

    async def _fallback(self, q: Query, case: _Case, why: str, group: Group,
                        rt: Runtime) -> _Outcome:
        name = self.cfg.fallback
        other = rt.groups.get(name) if name is not None else None
        if other is None:
            return await self._then(q, case, f"{why}; no fallback group", V.FALLBACK, group, rt)
        q.note(f"policy {self.name}: {why}; asking fallback group {other.name}")
        try:
            got = await other.exchange(q)
        except UpstreamError as e:
            return await self._then(q, case, f"{why}; fallback group {other.name} failed: "
                                    f"{e.text}", V.FALLBACK, other, rt)
        try:
            scan = answers.scan_response(got.wire)
        except answers.ScanError as e:
            return await self._then(q, case, f"{why}; fallback group {other.name} sent an "
                                    f"answer that cannot be read: {e}", V.FALLBACK, other, rt)
        judgement = answers.judge(scan, self.protected, self.allowed)
        if judgement.violations:
            again = _Case(got, scan, judgement, other.name)
            return await self._then(
                q, again, f"{why}; fallback group {other.name} answered "
                f"{_addresses_text(judgement.violations)} too", V.FALLBACK, other, rt)
        q.note(f"policy {self.name}: fallback group {other.name} answered "
               f"{', '.join(a.text for a in scan.addresses) or 'no addresses'}: used")
        q.server = got.server
        used = Reply(got.wire, got.rcode, "policy", (), got.server)
        if judgement.protected_name is not None and scan.additional_addresses:
            used = self._without_additional(q, used, scan)
        return _Outcome(used, "fallback")

    # --- helpers -------------------------------------------------------------------------------

    def _without_additional(self, q: Query, reply: Reply, scan: answers.AnswerScan) -> Reply:
        """The clean *reply* without the addresses of its additional section."""
        try:
            data = recordstrip.strip_records(reply.wire, scan.additional_addresses)
        except answers.ScanError:
            return reply
        q.note(f"policy {self.name}: removed {len(scan.additional_addresses)} additional "
               "address(es) of a protected answer")
        return Reply(data, reply.rcode, reply.answered_by, reply.ede, reply.server)

    def _rewrite_key(self, chain: tuple[str, ...]) -> tuple[int, str, model.RewriteTarget] | None:
        """The first chain name with a rewrite key: its index, the key and the target."""
        for index, name in enumerate(chain):
            hit = self._exact.get(name)
            if hit is not None:
                return index, hit[0], hit[1]
            if self._wildcards:
                rest = name
                while "." in rest:
                    rest = rest.split(".", 1)[1]
                    hit = self._wildcards.get(rest)
                    if hit is not None:
                        return index, hit[0], hit[1]
        return None

    def _negative(self, q: Query, rcode: int, name: str | None) -> bytes:
        """NXDOMAIN or NODATA for *q* with the SOA of *name*'s zone in authority."""
        return wire.synth_reply(q.flags, q.question, rcode, authority=self._soa(name or q.name, q),
                                nscount=1)

    def _soa(self, name: str, q: Query) -> bytes:
        """The synthetic SOA record for the zone *name* (a protected name) belongs to."""
        zone = self.protected.matches(name)
        if zone is None or not _under(q.name, zone):
            # the question is not under the protected suffix (it reached it by CNAME): the
            # SOA must be an ancestor of the question name, and the rule's zone is one
            rule = q.rule
            zone = rule.match if rule is not None and _under(q.name, rule.match) else ""
        ttl = self.cfg.ttl
        rdata = _SOA_TAIL + _SOA_TIMERS.pack(1, 3600, 600, 86400, ttl)
        return _rr(wire.text_to_name(zone), TYPE_SOA, ttl, rdata)

    def _violation_text(self, q: Query, case: _Case) -> str:
        bad = case.judgement.violations
        owner = bad[0].owner
        via = f" (CNAME target of {q.name})" if owner != q.name else ""
        # with a cause to tell (enforce adds it after the action), the allowed networks,
        # which the operator configured, give way to it in the EDE's limited text
        allowed = "" if self._cause(case) else f" (allowed: {self._allowed_text})"
        return (f"{_addresses_text(bad)} for {owner}{via} from group {case.group} violates "
                f"policy {self.name}{allowed}")

    def _cause(self, case: _Case) -> str | None:
        """What the AWS inventory and ip ranges say about a violation, if configured."""
        if self._explain is None:
            return None
        bad = case.judgement.violations
        return self._explain(bad[0].owner, tuple(a.text for a in bad), case.group)

    def _record(self, q: Query, case: _Case, action: str) -> str | None:
        """Counts and logs one violation and records it on the query; answers its cause."""
        q.action = action
        self._count(q, action)
        cause = self._cause(case)
        log.warning(
            "policy violation policy=%s mode=%s rule=%s group=%s client=%s name=%s type=%s "
            "addresses=%s action=%s%s", self.name, self.mode, _rule_name(q), case.group,
            q.client[0], q.name, q.type_name,
            ",".join(a.text for a in case.judgement.violations), action,
            f" cause={cause!r}" if cause else "",
            extra={"policy": self.name, "mode": self.mode, "rule": _rule_name(q),
                   "group": case.group, "client": q.client[0], "qname": q.name,
                   "qtype": q.type_name, "addresses": [a.text for a in case.judgement.violations],
                   "action": action, "cause": cause})
        return cause

    def _count(self, q: Query, action: str) -> None:
        metrics.policy_verdict_counts.inc((self.name, _rule_name(q), action, self.mode))


# --- building blocks -------------------------------------------------------------------------


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


def _label_tokens(protected: answers.SuffixSet) -> tuple[bytes, ...] | None:
    """For each suffix, its longest label as wire bytes (length octet first); None when a
    suffix (the root, or an unusual label) makes the quick test unsound."""
    tokens: dict[bytes, None] = {}
    for suffix in protected.suffixes:
        if not suffix or "\\" in suffix:
            return None
        labels = suffix.split(".")
        best = max(reversed(labels), key=len)  # ties: the later label ("aws" of api.aws)
        try:
            raw = best.encode("ascii")
        except UnicodeEncodeError:
            return None
        tokens[bytes([len(raw)]) + raw] = None
    return tuple(tokens)


def _rr(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    return owner + _RR.pack(rtype, 1, ttl, len(rdata)) + rdata


def _owner(name: str, index: int) -> bytes:
    """Wire owner for the chain name at *index*: the question name is a pointer."""
    return _QNAME if index == 0 else wire.text_to_name(name)


def _cname_records(chain: tuple[str, ...], ttl: int) -> bytes:
    out = b""
    for i in range(len(chain) - 1):
        out += _rr(_owner(chain[i], i), TYPE_CNAME, ttl, wire.text_to_name(chain[i + 1]))
    return out


def _under(name: str, zone: str) -> bool:
    return zone in ("", ".") or name == zone or name.endswith("." + zone)


def _addresses_text(addresses: tuple[answers.Address, ...]) -> str:
    texts = list(dict.fromkeys(a.text for a in addresses))
    noun = "public address" if len(texts) == 1 else "public addresses"
    return f"{noun} {_shorten(texts, _SHOWN_ADDRESSES)}"


def _shorten(items: list[str], shown: int) -> str:
    if len(items) <= shown:
        return ", ".join(items)
    return f"{', '.join(items[:shown])} and {len(items) - shown} more"


def _rule_name(q: Query) -> str:
    return q.rule.name if q.rule is not None else "none"


def build(cfg: model.Config, explain: Explain | None = None) -> dict[str, AnswerPolicy]:
    """The compiled policies of *cfg*, by name; *explain* adds the cause to violations."""
    return {p.name: AnswerPolicy(p, explain) for p in cfg.policies}
