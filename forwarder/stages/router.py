"""Rule selection: the longest matching suffix, then the rule's optional qtype/client matchers."""

from __future__ import annotations

from forwarder.config import model
from forwarder.dns.names import SuffixTable
from forwarder.stages.acl import Acl


class Router:
    """Picks the zone rule for a query.

    Rules with the same suffix are tried in config order; when none of them matches the
    query type and client, the next shorter suffix is tried (so a `qtypes` rule narrows
    a zone without hiding the default). No match at all: None (the query is refused).
    """

    __slots__ = ("_clients", "_plain", "_table", "sees_every_query")

    def __init__(self, rules: tuple[model.Rule, ...]) -> None:
        by_suffix: dict[str, list[model.Rule]] = {}
        for rule in rules:
            by_suffix.setdefault(rule.match, []).append(rule)
        self._table: SuffixTable[tuple[model.Rule, ...]] = SuffixTable(
            (suffix, tuple(rs)) for suffix, rs in by_suffix.items())
        # suffixes whose only rule has no matchers: the common case, one probe per label
        self._plain = all(r.qtypes is None and r.clients is None for r in rules)
        # rules that match client networks can route the same bytes differently for
        # different clients: then no answer may be reused by the bytes of its query
        self.sees_every_query = any(r.clients is not None for r in rules)
        # client matchers answer like the ACL, with its memo of verdicts by address
        self._clients = {r.index: Acl(r.clients) for r in rules if r.clients is not None}

    def route(self, qname: bytes, qtype: int, client: str) -> model.Rule | None:
        if self._plain:
            found = self._table.lookup(qname)
            return found[0] if found else None
        for candidates in self._table.lookup_all(qname):
            for rule in candidates:
                if rule.qtypes is not None and qtype not in rule.qtypes:
                    continue
                if rule.clients is not None and not self._clients[rule.index].allows(client):
                    continue
                return rule
        return None

    def guard(self, name: bytes, qtype: int) -> model.Rule | None:
        """The rule whose policy guards the wire name *name* for *qtype* (policy/guard.py):
        the most specific rule for it that states a policy or `policy: none`, rules with
        `clients:` aside (they judge only their own answers); None when no rule does."""
        for candidates in self._table.lookup_all(name):
            for rule in candidates:
                if rule.clients is not None or (rule.qtypes is not None
                                                and qtype not in rule.qtypes):
                    continue
                if rule.policy is not None or rule.opt_out:
                    return rule
        return None
