"""Domain names: normalisation, and SuffixTable, the longest-suffix lookup on wire names."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

from forwarder.dns import wire

T = TypeVar("T")

PARENTS_REMEMBERED = 4096  # parent names whose lookup SuffixTable keeps (then starts over)


def normalise(text: str) -> str:
    """Answers a presentation name lower-cased without its trailing dot ("." for root)."""
    text = text.strip().lower().rstrip(".")
    return text or "."


def is_subdomain(name: str, suffix: str) -> bool:
    """Answers whether *name* equals *suffix* or lies under it, label-wise, ignoring case."""
    name, suffix = normalise(name), normalise(suffix)
    if suffix == ".":
        return True
    return name == suffix or name.endswith("." + suffix)


class SuffixTable(Generic[T]):
    """Maps name suffixes to values; `lookup` walks a wire name's labels longest first.

    Keys are lower-case wire names, so a lookup costs one dict probe per label and no
    decoding. The root (".") is an ordinary key: the wire name b"\\x00".
    """

    __slots__ = ("_counts", "_parents", "_table")

    def __init__(self, items: Iterable[tuple[str, T]] = ()) -> None:
        self._table: dict[bytes, T] = {}
        for suffix, value in items:
            self._table[wire.text_to_name(suffix)] = value
        # how many labels the suffixes have, most first: only those suffixes are probed
        self._counts = tuple(sorted({_labels(k) for k in self._table}, reverse=True))
        # what `_walk` found for the parents of names looked up lately: names under the
        # same parent (bucket.s3.<region>.amazonaws.com, ...) cost one probe and a slice
        self._parents: dict[bytes, T | None] = {}

    def __len__(self) -> int:
        return len(self._table)

    def lookup(self, qname: bytes) -> T | None:
        """Answers the value of the longest suffix of the lower-case wire name *qname*."""
        table = self._table
        counts = self._counts
        if not counts:
            return None
        if counts[0] == 0:  # the root only
            return table.get(b"\x00")
        value = table.get(qname)
        if value is not None or qname == b"\x00":
            return value
        parent = qname[qname[0] + 1 :]
        parents = self._parents
        if parent in parents:
            return parents[parent]
        value = self._walk(parent)
        if len(parents) >= PARENTS_REMEMBERED:
            parents.clear()
        parents[parent] = value
        return value

    def _walk(self, qname: bytes) -> T | None:
        table = self._table
        starts = []
        off = 0
        while length := qname[off]:
            starts.append(off)
            off += length + 1
        labels = len(starts)
        for count in self._counts:
            if count <= labels:
                value = table.get(qname[starts[labels - count]:] if count else b"\x00")
                if value is not None:
                    return value
        return None

    def lookup_all(self, qname: bytes) -> Iterable[T]:
        """Yields the values of every matching suffix, longest first."""
        table = self._table
        off = 0
        while True:
            value = table.get(qname[off:])
            if value is not None:
                yield value
            length = qname[off]
            if length == 0:
                return
            off += length + 1


def _labels(name: bytes) -> int:
    """The number of labels of a wire name (0 for the root)."""
    count = off = 0
    while name[off]:
        count += 1
        off += name[off] + 1
    return count
