"""Which policy judges an answer, on every path (DESIGN.md "Protection on every path").

An answer is judged by one policy:

- the rule's own `policy:`;
- none, when the rule says `policy: none` (the explicit opt-out);
- for a rule without `policy:` (or an answer with no rule: a hook's Reroute off every
  rule), the policy that guards the first protected name in the answer, in the order the
  policy reads them (the query name, the CNAME chain, DNAME and HTTPS/SVCB targets, the
  owners of addresses). The guard of a name is the policy of the most specific rule for
  that name and query type that states one (`policy: none` states that nothing guards
  it); else `protection.policy`. Rules with `clients:` guard only their own answers, so
  that a name has the same guard for every client (and an answer cached for one client is
  right for all).

So `amazonaws.com -> policy: private-only` also judges a corporate name that is a CNAME
into `amazonaws.com`, whichever rule answered it. Local records are judged once, when
their zone is built (policy/zones.py); hook answers when the hook gives them (`judge_made`,
called by hooks/runner.py); a cached answer was judged before it was stored.

The quick path of a rule without its own policy: a plain answer (no chain) costs one
SuffixTable lookup of the query name in the union of the guards' protected suffixes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from forwarder.config import model
from forwarder.dns import names
from forwarder.dns import reply as reply_mod
from forwarder.errors import FormError
from forwarder.query import Query, Reply
from forwarder.stages.policy.judge import Case, label_tokens

if TYPE_CHECKING:
    from forwarder.dns.index import Index
    from forwarder.stages.policy import AnswerPolicy
    from forwarder.stages.router import Router
    from forwarder.upstream.group import Group

Violation = tuple[Case, str]
Decide = Callable[..., "Reply | Violation"]  # (q, reply, group name, origin=None)
GUARD = object()  # in Protection.judges: the rule has no policy of its own


class Protection:
    """The judging policies of one configuration. `judges[rule.index]` says what judges the
    answers of a rule: the name of its policy, GUARD (the guard of the protected name), or
    None (nothing); `unruled` the same for a query no rule matched. Policies are looked up
    by name in `policies` (the runtime's) when an answer is judged."""

    __slots__ = (
        "_router",
        "_table",
        "_tokens",
        "fallback",
        "groups",
        "judges",
        "policies",
        "unruled",
    )

    def __init__(self, cfg: model.Config, policies: Mapping[str, AnswerPolicy],
                 router: Router, groups: Mapping[str, Group] | None = None) -> None:
        self.policies = policies
        self.groups: Mapping[str, Group] = groups or {}
        guard = cfg.protection.policy
        self.fallback = policies.get(guard) if guard is not None else None
        self._router = router
        guards = {r.policy for r in cfg.rules if r.policy is not None}
        if guard is not None:
            guards.add(guard)
        suffixes = sorted({s for g in guards if g in policies for s in policies[g].cfg.protected})
        # every suffix some guard protects: a name under none of them has no guard to ask
        self._table: names.SuffixTable[str] = names.SuffixTable((s, s) for s in suffixes)
        self._tokens = label_tokens(suffixes)
        guarded = GUARD if suffixes else None
        self.judges: dict[int, object] = {}
        for rule in cfg.rules:
            if rule.opt_out:
                self.judges[rule.index] = None
            elif rule.policy is not None:
                self.judges[rule.index] = rule.policy
            else:
                self.judges[rule.index] = guarded
        self.unruled = guarded

    def judge_of(self, q: Query) -> Decide | None:
        """What decides the answers of *q*'s rule (None: nothing judges them)."""
        rule = q.rule
        key = self.judges[rule.index] if rule is not None else self.unruled
        if key is None:
            return None
        if key is GUARD:
            return self.decide
        return self.policies[key].decide  # type: ignore[index]

    def enforcer(self, q: Query, violation: Violation) -> AnswerPolicy:
        """The policy that carries out the action on *violation*: the rule's own, else the
        guard that found it."""
        rule = q.rule
        if rule is not None and rule.policy is not None:
            return self.policies[rule.policy]
        return violation[0].policy  # type: ignore[no-any-return]

    def guard(self, name: bytes, qtype: int) -> tuple[AnswerPolicy | None, model.Rule | None]:
        """The policy that guards the wire name *name* for *qtype* (None: nothing does) and
        the rule that names it (None: `protection.policy`, or nothing)."""
        rule = self._router.guard(name, qtype)
        if rule is None:
            return self.fallback, None
        if rule.opt_out:
            return None, rule
        return self.policies[rule.policy], rule  # type: ignore[index]

    # --- deciding -----------------------------------------------------------------------------

    def decide(self, q: Query, reply: Reply, group: str,
               origin: str | None = None) -> Reply | Violation:
        """Judges the answer of a rule without a policy of its own, by the guard of its
        first protected name; answers the reply (not judged, or judged and passed) or the
        violation to enforce."""
        index = reply.index
        if index is None:
            try:
                index = reply_mod.read(reply.wire)
            except FormError:  # only the query name is known: its guard judges
                policy, _ = self.guard(q.qname, q.qtype)
                if policy is None or policy.protected.lookup(q.qname) is None:
                    return reply
                return policy.decide(q, reply, group, origin)
        if index.plain:  # the common answer: its query name alone, one lookup
            if self._table.lookup(q.qname) is None and q.trace is None:
                return reply
            found = self._guard_of(q, (q.qname,))
        elif self._tokens is not None and not _mentions(reply.wire, self._tokens):
            found = None
        else:
            found = self._guard_of(q, index.answer_names())
        if found is None:
            if q.trace is not None:
                q.note("no name in the answer is protected by the policy that guards it: "
                       "not judged")
            return reply
        return found.decide(q, reply, group, origin)

    def _guard_of(self, q: Query, candidates: Iterable[bytes]) -> AnswerPolicy | None:
        found = self.guard_among(candidates, q.qtype)
        if found is None:
            return None
        name, policy, rule = found
        if q.trace is not None:
            q.note(f"{names.to_text(name)} is guarded by policy {policy.name} "
                   f"({named_by(rule)}); rule {_rule_text(q.rule)} has no policy of its own")
        return policy

    def guard_among(self, candidates: Iterable[bytes], qtype: int,
                    ) -> tuple[bytes, AnswerPolicy, model.Rule | None] | None:
        """The first name in *candidates* that its guard protects, with that guard and the
        rule naming it; None when there is none."""
        table = self._table
        for name in candidates:
            if table.lookup(name) is None:
                continue
            policy, rule = self.guard(name, qtype)
            if policy is not None and policy.protected.lookup(name) is not None:
                return name, policy, rule
        return None

    async def judge_made(self, q: Query, reply: Reply, origin: str) -> Reply:
        """Judges an answer no upstream group gave (a hook's *origin*, "hook maint") as the
        query's rule would judge an upstream one, and carries out the policy's action on
        a violation."""
        decide = self.judge_of(q)
        if decide is None:
            return reply
        decided = decide(q, reply, "", origin)
        if isinstance(decided, Reply):
            return decided
        group = self._group_for(q, decided[0])
        return await self.enforcer(q, decided).enforce(q, decided, group, self.groups)

    def _group_for(self, q: Query, case: Case) -> Group | None:
        """The group a policy's action may ask (rewrite_cname) for an answer no group gave:
        the query's, else the one routing the protected name."""
        name = q.group
        rule = q.rule
        if name is None and rule is not None and rule.action is model.RuleAction.FORWARD:
            name = rule.upstream
        if name is None and case.judgement.protected_name is not None:
            _, guard = self.guard(case.judgement.protected_name, q.qtype)
            if guard is not None and guard.action is model.RuleAction.FORWARD:
                name = guard.upstream
        return self.groups.get(name) if name is not None else None

    # --- explaining ---------------------------------------------------------------------------

    def describe(self, q: Query, index: Index) -> list[tuple[str, str]]:
        """For each name the answer leads to: whether it is protected, by which entry of
        which policy, and where that policy comes from (`forwarder explain`)."""
        rule = q.rule
        out = []
        for name in index.answer_names():
            if rule is not None and rule.opt_out:
                out.append((names.to_text(name),
                            f"not judged: rule {_rule_text(rule)} says policy: none"))
                continue
            if rule is not None and rule.policy is not None:
                policy: AnswerPolicy | None = self.policies[rule.policy]
                source = f"the policy of rule {_rule_text(rule)}"
            else:
                policy, guard = self.guard(name, q.qtype)
                source = named_by(guard) if policy is not None or guard is not None else (
                    "no policy guards it: no rule that routes it states one, and "
                    "protection.policy is unset")
            out.append((names.to_text(name), _status(name, policy, source)))
        return out


def _status(name: bytes, policy: AnswerPolicy | None, source: str) -> str:
    if policy is None:
        return f"not judged: {source}" if "policy: none" in source else f"not protected: {source}"
    suffix, pattern = policy.protected.classify(name)
    if suffix is None:
        return (f"not protected: under none of the protected suffixes of policy "
                f"{policy.name} ({source})")
    if pattern is not None:
        return (f"not protected: under {suffix} but unprotected {pattern} (policy "
                f"{policy.name}, {source})")
    return f"protected: under {suffix} (policy {policy.name}, {source})"


def named_by(rule: model.Rule | None) -> str:
    """Where a guard comes from, in words."""
    if rule is None:
        return "protection.policy"
    if rule.opt_out:
        return f"rule {_rule_text(rule)}, which routes it, says policy: none"
    return f"the policy of rule {_rule_text(rule)}, which routes it"


def _rule_text(rule: model.Rule | None) -> str:
    if rule is None:
        return "(none)"
    named = f" ({rule.name})" if rule.name != rule.match else ""
    return f"zones[{rule.index}]{named} {rule.match!r}"


def _mentions(data: bytes, tokens: tuple[bytes, ...]) -> bool:
    """Answers whether the message *data* holds one of the labels *tokens* (judge.py's
    `label_tokens`): a message holding none names nothing under their suffixes."""
    low = data.lower()
    return any(token in low for token in tokens)
