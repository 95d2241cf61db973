"""Name patterns: domain names with `*` in their labels, for lists such as a policy's
`unprotected` names.

A pattern is a presentation name whose labels may hold `*`: a label `*` stands for any one
label, and a `*` inside a label for any run of characters in it (`ec2-*` matches
`ec2-54-210-1-2`). A pattern covers the names it matches and every name below them:
`*.elb.amazonaws.com` covers `my-alb-1.us-east-1.elb.amazonaws.com` (its `*` is
`us-east-1`), but not `elb.amazonaws.com` itself, where no label is left for the `*`.

`NamePatterns.lookup` works a name out from its parent, which it remembers: names that
share a parent (the buckets under one S3 endpoint) cost a dict probe each.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Generic, TypeVar

from forwarder.dns import names

T = TypeVar("T")

REMEMBERED = 4096  # parents a NamePatterns remembers (then it starts over)
_Label = bytes | re.Pattern[bytes]  # a literal label, or the label pattern of one with `*`


def parse(text: str) -> list[_Label]:
    """The labels of pattern *text*, rightmost last: literal labels as lower-case bytes,
    labels with `*` as compiled patterns. Raises ValueError naming what is wrong."""
    labels = names.text_to_labels(text)
    if not labels:
        raise ValueError("the root is not a name pattern; list the names to leave out")
    out: list[_Label] = []
    for label in labels:
        label = label.lower()
        if b"*" not in label:
            out.append(label)
            continue
        if b"**" in label:
            raise ValueError(f"{text!r}: write one * for any run of characters")
        parts = [re.escape(part) for part in label.split(b"*")]
        out.append(re.compile(b".*".join(parts), re.DOTALL))
    return out


class NamePatterns(Generic[T]):
    """Maps name patterns to values; `lookup` answers the value of a pattern that covers
    the name (the one that covers its closest ancestor, or else the first, in the order
    given, that matches the name itself).

    A name is covered when its parent is, or when a pattern with as many labels as the
    name matches it. What a parent tells about its children (whether it is covered, and
    which patterns could match a child, first label aside) is worked out once and
    remembered: the buckets under one S3 endpoint share one parent, so each costs a dict
    probe and, almost always, no pattern match."""

    __slots__ = ("_by_length", "_parents")

    def __init__(self, items: Iterable[tuple[str, T]] = ()) -> None:
        """Raises ValueError for a pattern that is not one."""
        # label count -> [(order, labels left to right, value)]
        self._by_length: dict[int, list[tuple[int, list[_Label], T]]] = {}
        for order, (text, value) in enumerate(items):
            labels = parse(text)
            self._by_length.setdefault(len(labels), []).append((order, labels, value))
        # parent -> (the value covering it, [(order, first label, value)] that could cover
        # a child of it)
        self._parents: dict[bytes, tuple[T | None, tuple[tuple[int, _Label, T], ...]]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_length)

    def lookup(self, name: bytes) -> T | None:
        """The value of a pattern that covers the lower-case wire name *name*, or None."""
        if name == names.ROOT:
            return None
        covered, children = self._parent(name[name[0] + 1 :])
        if covered is not None:
            return covered
        if children:
            label = name[1 : 1 + name[0]]
            for _, first, value in children:
                if _label_matches(first, label):
                    return value
        return None

    def _parent(self, parent: bytes) -> tuple[T | None, tuple[tuple[int, _Label, T], ...]]:
        found = self._parents.get(parent)
        if found is None:
            labels = _labels(parent)
            children = tuple(
                (order, pattern[0], value)
                for order, pattern, value in self._by_length.get(len(labels) + 1, ())
                if all(_label_matches(p, lb) for p, lb in zip(pattern[1:], labels, strict=True)))
            found = (self.lookup(parent), children)
            if len(self._parents) >= REMEMBERED:
                self._parents.clear()
            self._parents[parent] = found
        return found

    def __repr__(self) -> str:
        return f"NamePatterns({sum(len(group) for group in self._by_length.values())} patterns)"


def _labels(name: bytes) -> list[bytes]:
    out = []
    off = 0
    while name[off]:
        out.append(name[off + 1 : off + 1 + name[off]])
        off += name[off] + 1
    return out


def _label_matches(pattern: _Label, label: bytes) -> bool:
    if isinstance(pattern, bytes):
        return pattern == label
    return pattern.fullmatch(label) is not None
