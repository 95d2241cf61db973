"""Name patterns: domain names with `*` in their labels, for lists such as a policy's
`unprotected` names.

A pattern is a presentation name whose labels may hold `*`: a label `*` stands for any one
label, and a `*` inside a label for any run of characters in it (`ec2-*` matches
`ec2-54-210-1-2`). A pattern covers the names it matches and every name below them:
`*.elb.amazonaws.com` covers `my-alb-1.us-east-1.elb.amazonaws.com` (its `*` is
`us-east-1`), but not `elb.amazonaws.com` itself, where no label is left for the `*`.

`NamePatterns.lookup` keys the patterns by their literal tail (the labels right of the
last label with a `*`), so a name costs one dict probe per label plus a match of the few
patterns that share a tail, and remembers what it found for names it saw lately.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Generic, TypeVar

from forwarder.dns import names

T = TypeVar("T")

REMEMBERED = 4096  # names whose answer a NamePatterns keeps (then it starts over)
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
    """Maps name patterns to values; `lookup` answers the value of the first pattern, in
    the order given, among those with the longest literal tail that covers the name."""

    __slots__ = ("_seen", "_tails")

    def __init__(self, items: Iterable[tuple[str, T]] = ()) -> None:
        """Raises ValueError for a pattern that is not one."""
        self._tails: dict[bytes, list[tuple[tuple[_Label, ...], T]]] = {}
        for text, value in items:
            labels = parse(text)
            cut = max((i + 1 for i, label in enumerate(labels) if not isinstance(label, bytes)),
                      default=0)
            tail = b"".join(bytes([len(lb)]) + lb for lb in labels[cut:]  # type: ignore[arg-type]
                            ) + names.ROOT
            self._tails.setdefault(tail, []).append((tuple(labels[:cut]), value))
        self._seen: dict[bytes, T | None] = {}

    def __bool__(self) -> bool:
        return bool(self._tails)

    def lookup(self, name: bytes) -> T | None:
        """The value of the pattern that covers the lower-case wire name *name*, or None."""
        seen = self._seen
        if name in seen:
            return seen[name]
        found = self._find(name)
        if len(seen) >= REMEMBERED:
            seen.clear()
        seen[name] = found
        return found

    def _find(self, name: bytes) -> T | None:
        tails = self._tails
        starts: list[int] = []  # where each label of *name* starts, left to right
        off = 0
        while True:
            entries = tails.get(name[off:])
            if entries is not None:
                for head, value in entries:
                    if _matches(name, starts, head):
                        return value
            length = name[off]
            if length == 0:
                return None
            starts.append(off)
            off += length + 1

    def __repr__(self) -> str:
        return f"NamePatterns({sum(len(e) for e in self._tails.values())} patterns)"


def _matches(name: bytes, starts: list[int], head: tuple[_Label, ...]) -> bool:
    """Answers whether the labels of *name* that start at *starts* end with *head*."""
    if len(head) > len(starts):
        return False
    for label, start in zip(reversed(head), reversed(starts), strict=False):
        text = name[start + 1 : start + 1 + name[start]]
        if isinstance(label, bytes):
            if text != label:
                return False
        elif label.fullmatch(text) is None:
            return False
    return True
