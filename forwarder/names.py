"""Domain names: normalisation, and SuffixTable, the longest-suffix lookup on wire names."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

from forwarder import wire

T = TypeVar("T")


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

    __slots__ = ("_counts", "_table")

    def __init__(self, items: Iterable[tuple[str, T]] = ()) -> None:
        self._table: dict[bytes, T] = {}
        for suffix, value in items:
            self._table[wire.text_to_name(suffix)] = value
        # how many labels the suffixes have, most first: only those suffixes are probed
        self._counts = tuple(sorted({_labels(k) for k in self._table}, reverse=True))

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
        starts = []
        off = 0
        while length := qname[off]:
            starts.append(off)
            off += length + 1
        labels = len(starts)
        for count in counts:
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
