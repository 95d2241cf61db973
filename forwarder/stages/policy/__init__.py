"""Answer policy: judge forwarded answers for protected names, then pass, rewrite, block,
strip, fall back or monitor (DESIGN.md "Answer policy").

`AnswerPolicy.decide` runs on every upstream answer of a rule with a policy, before
caching; `enforce` carries out the action on a violation it found (policy/actions.py).

What is judged (policy/judge.py): when the query name, a name of the answer's CNAME
chain, a DNAME or HTTPS/SVCB target or the owner of an answer address is protected (under
a `protected` suffix and covered by no `unprotected` pattern), every address of the answer
section (A, AAAA, HTTPS/SVCB ipv4hint/ipv6hint) must lie in `allowed` (IPv4-mapped and
NAT64 addresses count as their IPv4 address). Anything else is a violation. Which policy
judges which answer is policy/guard.py's to say.

- pass: the answer goes on unchanged, except that additional-section addresses of a
  protected answer are removed (allowed or not: clients never need them, and they escape
  the judgement of the answer section);
- `rewrite`, `rewrite_cname`, `servfail`, `refuse`, `nxdomain`, `nodata`, `strip`,
  `fallback`, `monitor`: see policy/actions.py.

A policy in `mode: monitor` decides as in enforce mode but passes the upstream answer
unchanged, without an EDE: clients see exactly what they would without the policy (a dry
run, as dnsdist's). An answer that cannot be read fails closed (SERVFAIL).

Every verdict on a protected answer is counted in `forwarder_policy_verdicts_total{policy,
rule, action, mode, where}`: action "pass" for clean answers, otherwise the action finally
taken ("fallback" when the fallback answer was used, else the `then` action; in monitor mode
the action that would have been taken); `where` says whether the protected name was the
query name ("qname") or a name the answer led to ("chain"). Answers with no protected name
are not counted (the rule's query counters have them). Each violation is logged as one line
on "forwarder.policy", and recorded on the reply (`verdict`, `action`, and `protection`: the
policy and the protected name) for the query log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from forwarder import metrics
from forwarder.config import model
from forwarder.dns import names, netsets, recordstrip, wire
from forwarder.dns import reply as reply_mod
from forwarder.errors import FormError
from forwarder.query import Query, Reply
from forwarder.stages.policy import actions
from forwarder.stages.policy import judge as judging
from forwarder.stages.policy.judge import Case, Judgement, addresses_text, rule_name, shorten

if TYPE_CHECKING:
    from forwarder.dns.index import Address
    from forwarder.upstream.group import Group

log = logging.getLogger("forwarder.policy")

V = model.Violation
SERVFAIL = 2
BLOCKED = int(wire.Ede.BLOCKED)
_SHOWN_NETWORKS = 6

# (protected name, public addresses, upstream group) -> why and what to do, in words
# (forwarder.aws.advice)
Explain = Callable[[str, tuple[str, ...], str], "str | None"]

class AnswerPolicy:
    """One configured policy, compiled: suffixes, networks and the rewrite table."""

    def __init__(self, cfg: model.Policy, explain: Explain | None = None) -> None:
        self.cfg = cfg
        self._explain = explain
        self.name = cfg.name
        self.protected = judging.ProtectedNames(cfg.protected, cfg.unprotected)
        self.allowed = netsets.NetworkSet.parse(cfg.allowed_networks)
        self.monitor_only = cfg.mode is model.PolicyMode.MONITOR
        self.mode = cfg.mode.value
        self._tokens = judging.label_tokens(cfg.protected)
        shown = [str(n) for n in netsets.NetworkSet.parse(cfg.allowed)] + list(cfg.gateways)
        self._allowed_text = shorten(shown, _SHOWN_NETWORKS)
        self.exact: dict[str, tuple[str, model.RewriteTarget]] = {}
        self.wildcards: dict[str, tuple[str, model.RewriteTarget]] = {}
        for key, target in cfg.rewrite:
            if key.startswith("*."):
                self.wildcards[key[2:]] = (key, target)
            else:
                self.exact[key] = (key, target)

    def protects(self, name: str) -> bool:
        """Answers whether the presentation name *name* is protected by this policy."""
        try:
            return self.protected.lookup(names.from_text(name)) is not None
        except (ValueError, UnicodeError):
            return False

    # --- judging ---------------------------------------------------------------------------

    async def apply(self, q: Query, reply: Reply, group: Group, groups: Any) -> Reply:
        """Answers the reply the client gets for the upstream *reply* that *group* sent;
        *groups* maps group names to groups (for `fallback`)."""
        decided = self.decide(q, reply, group.name)
        if isinstance(decided, Reply):
            return decided
        return await self.enforce(q, decided, group, groups)

    async def enforce(self, q: Query, violation: tuple[Case, str], group: Group,
                      groups: Any) -> Reply:
        """Carries out `on_violation` on a violation `decide` found."""
        case, why = violation
        outcome = await actions.act(self, q, case, self.cfg.on_violation, why, group, groups)
        cause = self.record(q, case, outcome.action)
        reply = outcome.reply
        if cause and reply.ede:  # after the action: a cut EDE text keeps the action
            reply = Reply(reply.wire, reply.rcode, reply.answered_by,
                          tuple((code, f"{text}; {cause}") for code, text in reply.ede),
                          reply.server)
        return judged(reply, "violation", outcome.action, case.judgement.violations,
                      (self.name, case.judgement.protected_name, case.where))

    def decide(self, q: Query, reply: Reply, group: str,
               origin: str | None = None) -> Reply | tuple[Case, str]:
        """Judges *reply* and answers what the client gets, unless an action must be carried
        out (a violation in enforce mode): then the case and why, for `enforce`. *origin*
        names what made an answer no upstream group gave ("hook maint")."""
        index = reply.index
        if index is None:
            try:
                index = reply_mod.read(reply.wire)
            except FormError as e:
                return self._unreadable(q, reply, group, str(e))
        if index.plain and q.trace is None:
            if self.protected.lookup(q.qname) is None:
                return judged(reply, "not_protected")
            inside = self.allowed.contains_packed
            if all(inside(packed) for packed in index.packed_addresses()):
                return self._passed(q, reply, q.qname, "qname")
        elif self._tokens is not None:
            low = reply.wire.lower()
            for token in self._tokens:
                if token in low:
                    break
            else:
                return self._not_protected(q, reply)
        judgement = judging.judge(index, self.protected, self.allowed)
        name = judgement.protected_name
        if name is None:
            return self._not_protected(q, reply)
        where = judging.where(index, name)
        if not judgement.violations:
            if q.trace is not None:
                shown = ", ".join(a.text for a in index.addresses()) or "no addresses"
                q.note(f"policy {self.name}: {names.to_text(name)} is protected (under "
                       f"{judgement.suffix}); {shown} allowed: pass")
            if not self.monitor_only and judgement.additional:
                reply = self.without_additional(q, reply, index, judgement)
            return self._passed(q, reply, name, where)
        case = Case(reply, index, judgement, group, self, origin)
        why = self.violation_text(q, case)
        if self.monitor_only:
            q.note(f"policy {self.name}: {why}; would {self.cfg.on_violation.value} "
                   "(mode monitor): answer passed unchanged")
            self.record(q, case, self.cfg.on_violation.value)
            return judged(reply, "violation", self.cfg.on_violation.value,
                          case.judgement.violations, (self.name, name, where))
        return case, why

    def _not_protected(self, q: Query, reply: Reply) -> Reply:
        if q.trace is not None:
            q.note(f"policy {self.name}: no name in the answer is protected (under "
                   f"{', '.join(self.protected.suffixes())} and not unprotected): not judged")
        return judged(reply, "not_protected")

    def _passed(self, q: Query, reply: Reply, name: bytes, where: str) -> Reply:
        self.count(q, "pass", where)
        return judged(reply, "pass", "pass", protection=(self.name, name, where))

    def _unreadable(self, q: Query, reply: Reply, group: str, error: str) -> Reply:
        """An answer that cannot be read cannot be shown safe: SERVFAIL (enforce mode)."""
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
        q.note(f"policy {self.name}: {why}; {action}")
        self.count(q, action, "qname")
        log.warning("policy violation policy=%s mode=%s rule=%s group=%s client=%s name=%s "
                    "type=%s addresses=unreadable action=%s", self.name, self.mode,
                    rule_name(q), group, q.client[0], q.name, q.type_name, action)
        return judged(out, "violation", action, protection=(self.name, q.qname, "qname"))

    # --- shared by the actions ---------------------------------------------------------------

    def without_additional(self, q: Query, reply: Reply, index: reply_mod.Index,
                           judgement: Judgement) -> Reply:
        """The clean *reply* without the addresses of its additional section."""
        try:
            data = recordstrip.strip_records(index, judgement.additional)
        except FormError:
            return reply
        q.note(f"policy {self.name}: removed {len(judgement.additional)} additional "
               "address(es) of a protected answer")
        return Reply(data, reply.rcode, reply.answered_by, reply.ede, reply.server)

    def violation_text(self, q: Query, case: Case) -> str:
        bad = case.judgement.violations
        owner = names.to_text(bad[0].owner)
        via = f" (CNAME target of {q.name})" if owner != q.name else ""
        # with a cause to tell (enforce adds it after the action), the allowed networks,
        # which the operator configured, and all but one address give way to it in the
        # EDE's limited text (the log line lists every address)
        cause = self._cause(case)
        allowed = "" if cause else f" (allowed: {self._allowed_text})"
        shown = addresses_text(bad, 1) if cause else addresses_text(bad)
        return (f"{shown} for {owner}{via} from {case.source} violates "
                f"policy {self.name}{allowed}")

    def _cause(self, case: Case) -> str | None:
        """Why a violation happened and what to do (the next step, the AWS inventory, the ip
        ranges), when known: about the protected name the answer was judged for (the
        query's, not a CNAME target's such as s3-r-w.REGION.amazonaws.com); none for an
        answer no upstream group gave (a hook's)."""
        if self._explain is None or case.origin is not None:
            return None
        judgement = case.judgement
        name = judgement.protected_name or judgement.violations[0].owner
        return self._explain(names.to_text(name), tuple(a.text for a in judgement.violations),
                             case.group)

    def record(self, q: Query, case: Case, action: str) -> str | None:
        """Counts and logs one violation; answers its cause."""
        where = case.where
        self.count(q, action, where)
        shown = [a.text for a in case.judgement.violations]
        cause = self._cause(case)
        name = case.judgement.protected_name
        protected = names.to_text(name) if name is not None else q.name
        group = case.group or case.source.replace(" ", ":")  # "hook:NAME": one token
        log.warning(
            "policy violation policy=%s mode=%s rule=%s group=%s client=%s name=%s type=%s%s "
            "addresses=%s action=%s%s", self.name, self.mode, rule_name(q), group,
            q.client[0], q.name, q.type_name,
            f" protected={protected}" if where == "chain" else "",
            ",".join(shown), action, f" cause={cause!r}" if cause else "",
            extra={"policy": self.name, "mode": self.mode, "rule": rule_name(q),
                   "group": group, "client": q.client[0], "qname": q.name,
                   "qtype": q.type_name, "protected": protected, "where": where,
                   "addresses": shown, "action": action, "cause": cause})
        return cause

    def count(self, q: Query, action: str, where: str) -> None:
        metrics.policy_verdict_counts.inc((self.name, rule_name(q), action, self.mode, where))


def judged(reply: Reply, verdict: str, action: str | None = None,
           violations: tuple[Address, ...] = (),
           protection: tuple[str, bytes | None, str] | None = None) -> Reply:
    """*reply* with the policy's verdict (and action, and the addresses that violated it)
    recorded on it, for the query log: the reply the policy answers is its own (a fresh
    upstream reply, or one it made). *protection* is (policy, protected name, where) for
    an answer a policy judged."""
    reply.verdict = verdict
    reply.action = action
    reply.protection = protection
    if violations:
        reply.violations = tuple(dict.fromkeys(a.text for a in violations))
    return reply


def build(cfg: model.Config, explain: Explain | None = None) -> dict[str, AnswerPolicy]:
    """The compiled policies of *cfg*, by name; *explain* adds the cause to violations."""
    return {p.name: AnswerPolicy(p, explain) for p in cfg.policies}
