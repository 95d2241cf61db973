"""Judging one reply: is any name in it protected, and which of its addresses lie outside
the allowed networks. Reads the reply's Index (forwarder.dns.reply); never the wire.

The answer is judged when any name the answer section leads to is protected: the query
name and each CNAME target followed from it, DNAME and HTTPS/SVCB target names, and the
owners of address records (an address for a protected name the chain does not reach, e.g.
past the hop limit). Then every answer-section address outside the allowed networks is a
violation, whatever its owner. Otherwise nothing is judged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol

from forwarder.dns import names, netsets, patterns
from forwarder.dns.index import (
    SECTION_ADDITIONAL,
    Address,
    Index,
)
from forwarder.query import Query, Reply


class Protected(Protocol):
    """What judges a name: `lookup` answers the protected entry it is under, or None."""

    def lookup(self, name: bytes) -> str | None: ...


class ProtectedNames:
    """A policy's protected names: under one of its `protected` suffixes and covered by
    none of its `unprotected` patterns (the second lookup happens only after the first
    found a suffix, so names outside the suffixes cost one SuffixTable lookup)."""

    __slots__ = ("exclusions", "table")

    def __init__(self, suffixes: Iterable[str], unprotected: Iterable[str] = ()) -> None:
        self.table: names.SuffixTable[str] = names.SuffixTable((s, s) for s in suffixes)
        self.exclusions: patterns.NamePatterns[str] = patterns.NamePatterns(
            (p, p) for p in unprotected)

    def lookup(self, name: bytes) -> str | None:
        """The protected suffix the wire name *name* is under, unless an unprotected
        pattern covers it; None otherwise."""
        suffix = self.table.lookup(name)
        if suffix is None or not self.exclusions or self.exclusions.lookup(name) is None:
            return suffix
        return None

    def classify(self, name: bytes) -> tuple[str | None, str | None]:
        """The protected suffix *name* is under and the unprotected pattern that covers
        it (None where there is none): the name is protected when only the first is set."""
        suffix = self.table.lookup(name)
        if suffix is None:
            return None, None
        return suffix, self.exclusions.lookup(name)

    def zone_of(self, name: str) -> str | None:
        """The protected suffix the presentation name *name* is under, exclusions aside."""
        return self.table.lookup_text(name)

    def suffixes(self) -> list[str]:
        return self.table.suffixes()


class Judgement(NamedTuple):
    """The verdict on one reply.

    `protected_name` is None when no name is protected: nothing was judged and the answer
    passes. Otherwise `violations` lists the answer-section addresses outside the allowed
    networks and `additional` every additional-section address (a protected answer loses
    them all, allowed or not: clients never need them, and they escape the judgement).
    """

    protected_name: bytes | None
    suffix: str | None = None  # the protected suffix it is under
    addresses: tuple[Address, ...] = ()  # the answer section's, when some are violations
    violations: tuple[Address, ...] = ()
    additional: tuple[Address, ...] = ()


NOT_JUDGED = Judgement(None)


def protected_name(index: Index, protected: Protected) -> tuple[bytes, str] | None:
    """The first name the answer leads to that is under a protected suffix, with that
    suffix, or None."""
    lookup = protected.lookup
    qname = index.qname()
    suffix = lookup(qname)
    if suffix is not None:
        return qname, suffix
    if index.plain:
        return None
    for name in index.answer_names()[1:]:
        suffix = lookup(name)
        if suffix is not None:
            return name, suffix
    return None


def judge(index: Index, protected: Protected, allowed: netsets.NetworkSet) -> Judgement:
    """Judges *index* for names under *protected* with addresses outside *allowed*. The
    answer's Addresses are listed only when some are violations (a clean answer needs
    none, and building them costs)."""
    found = protected_name(index, protected)
    if found is None:
        return NOT_JUDGED
    inside = allowed.contains_packed
    extra = () if index.plain else tuple(index.addresses(SECTION_ADDITIONAL))
    if all(inside(packed) for packed in index.packed_addresses()):
        return Judgement(found[0], found[1], (), (), extra)
    addresses = tuple(index.addresses())
    bad = tuple([a for a in addresses if not inside(a.packed)])
    return Judgement(found[0], found[1], addresses, bad, extra)


def label_tokens(suffixes: Iterable[str]) -> tuple[bytes, ...] | None:
    """For each suffix, its longest label as wire bytes (length octet first): every label
    of every name in a message appears uncompressed somewhere in it, so a message holding
    none of them names nothing under a protected suffix. None when a suffix (the root)
    makes the quick test unsound."""
    tokens: dict[bytes, None] = {}
    for suffix in suffixes:
        if suffix == ".":
            return None
        labels = suffix.split(".")
        best = max(reversed(labels), key=len)  # ties: the later label ("aws" of api.aws)
        raw = best.encode("ascii")
        tokens[bytes([len(raw)]) + raw] = None
    return tuple(tokens)


class Case(NamedTuple):
    """One answer under judgement, where it came from, and the policy judging it."""

    reply: Reply
    index: Index
    judgement: Judgement
    group: str  # the upstream group that answered ("" for an answer no group gave)
    policy: Any = None  # the AnswerPolicy that found the violation
    origin: str | None = None  # what made an answer no group gave: "hook NAME", ...

    @property
    def source(self) -> str:
        """Where the answer came from, in words: `group r53`, `hook maint`."""
        return self.origin if self.origin is not None else f"group {self.group}"

    @property
    def where(self) -> str:
        """Where the protected name was found: "qname" or "chain" (the metric label)."""
        return where(self.index, self.judgement.protected_name)


def where(index: Index, name: bytes | None) -> str:
    """"qname" when *name* is the query name (or unknown), else "chain"."""
    return "qname" if name is None or name == index.qname() else "chain"


SHOWN_ADDRESSES = 3


def addresses_text(addresses: tuple[Address, ...], shown: int = SHOWN_ADDRESSES) -> str:
    texts = list(dict.fromkeys(a.text for a in addresses))
    noun = "public address" if len(texts) == 1 else "public addresses"
    return f"{noun} {shorten(texts, shown)}"


def shorten(items: list[str], shown: int) -> str:
    if len(items) <= shown:
        return ", ".join(items)
    return f"{', '.join(items[:shown])} and {len(items) - shown} more"


def rule_name(q: Query) -> str:
    return q.rule.name if q.rule is not None else "none"
