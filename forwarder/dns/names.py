"""Domain names: the one wire-name walker (validating, as strict as dnspython), text and
wire forms, the one text normaliser, and SuffixTable, the one "is this name under that
suffix?" matcher (longest suffix first).

Wire names inside the forwarder are lower-case uncompressed bytes (`b"\\x02s3\\x03aws\\x00"`);
text names are lower-case without a trailing dot, "." for the root (`normalise`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

from forwarder.errors import FormError

T = TypeVar("T")

MAX_NAME = 255  # octets of a whole name on the wire (RFC 1035 2.3.4)
MAX_LABEL = 63
MAX_POINTER_HOPS = 16  # as dnspython: a longer chain of pointers is abuse
PARENTS_REMEMBERED = 4096  # parent names whose lookup SuffixTable keeps (then starts over)
ROOT = b"\x00"

# (where the name's own bytes end, its length uncompressed, pointer hops) by start offset
NameMemo = dict[int, tuple[int, int, int]]


# --- the wire walker ------------------------------------------------------------------------


def walk(data: bytes, off: int, limit: int, memo: NameMemo, compressible: bool = True) -> int:
    """Checks the (possibly compressed) name at *off* and answers the offset just past its
    own bytes, which must end at or before *limit*. *memo* remembers names already checked
    in this message (by start offset), so a pointer to one costs a dict lookup.

    The rules are dnspython's, so that what passes here parses there: labels of at most
    63 octets, at most 255 octets in all, no label types but plain ones and pointers; a
    pointer aims strictly before the start of the part of the name it is in (so pointers
    strictly decrease and cannot loop) and the name it aims at ends before that start; at
    most 16 pointers; with *compressible* False, no pointer at all.

    Raises:
        FormError: the name breaks a rule or runs past *limit*.
    """
    known = memo.get(off)
    if known is not None:
        if known[0] > limit:
            raise FormError(f"name at offset {off} runs past its record")
        return known[0]
    start = off
    total = 1  # the root label
    try:
        length = data[off]
        while 0 < length < 64:
            total += length + 1
            off += length + 1
            length = data[off]
        if length == 0:
            end = off + 1
            hops = 0
        elif length >= 0xC0:
            if not compressible:
                raise FormError(f"compression pointer at offset {off} where none is allowed")
            target = (length & 0x3F) << 8 | data[off + 1]
            end = off + 2
            if target >= start:
                raise FormError(f"compression pointer at offset {off} does not point back")
            walk(data, target, start, memo)  # the name aimed at ends before this one begins
            _, target_total, hops = memo[target]
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise FormError(f"more than {MAX_POINTER_HOPS} compression pointers in a name")
            total += target_total - 1
        else:
            raise FormError(f"unknown label type 0x{length:02x} at offset {off}")
    except IndexError:
        raise FormError("name runs past the end of the message") from None
    if end > limit:
        raise FormError(f"name at offset {start} runs past its record")
    if total > MAX_NAME:
        raise FormError(f"name at offset {start} is longer than {MAX_NAME} octets")
    memo[start] = (end, total, hops)
    return end


def decompress(data: bytes, off: int) -> bytes:
    """The lower-case uncompressed wire form of the name at *off* of a message `walk` has
    checked (it does not check again)."""
    parts = []
    while True:
        start = off
        length = data[off]
        while 0 < length < 64:
            off += length + 1
            length = data[off]
        if length == 0:
            parts.append(data[start : off + 1].lower())
            return b"".join(parts)
        parts.append(data[start:off].lower())
        off = (length & 0x3F) << 8 | data[off + 1]


def read_qname(data: bytes, off: int) -> int:
    """Answers the end of the uncompressed question name at *off*. Raises FormError."""
    end = len(data)
    start = off
    while True:
        if off >= end:
            raise FormError("question name runs past the end of the message")
        length = data[off]
        if length == 0:
            off += 1
            if off - start > MAX_NAME:
                raise FormError(f"question name longer than {MAX_NAME} octets")
            return off
        if length > MAX_LABEL:
            raise FormError("compressed or bad label in the question")
        off += length + 1


def labels_of(name: bytes) -> int:
    """The number of labels of a wire name (0 for the root)."""
    count = off = 0
    while name[off]:
        count += 1
        off += name[off] + 1
    return count


def is_under(name: bytes, suffix: bytes) -> bool:
    """Answers whether the wire name *name* equals *suffix* or lies under it, label-wise
    (both lower-case)."""
    if not name.endswith(suffix):
        return False
    end = len(name) - len(suffix)
    off = 0
    while off < end:
        off += name[off] + 1
    return off == end


# --- text forms ----------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Answers a presentation name lower-cased without its trailing dot ("." for root)."""
    text = text.strip().lower().rstrip(".")
    return text or "."


def is_subdomain(name: str, suffix: str) -> bool:
    """`is_under` for presentation names: *name* equals *suffix* or lies under it,
    label-wise, ignoring case and trailing dots."""
    name, suffix = normalise(name), normalise(suffix)
    if suffix == ".":
        return True
    return name == suffix or name.endswith("." + suffix)


# Printable bytes a label shows as they are; the rest are escaped (RFC 1035 5.1, as dig and
# dnspython print them): `\\.` for the specials, `\\DDD` for anything unprintable.
PLAIN_LABEL = bytes(c for c in range(0x21, 0x7F) if c not in b'"().;\\@$')
_ESCAPED = tuple(
    chr(c) if c in PLAIN_LABEL else "\\" + chr(c) if 0x21 <= c < 0x7F else f"\\{c:03d}"
    for c in range(256)
)


def label_to_text(label: bytes) -> str:
    """Answers the presentation form of one label: the one escaping of names in the
    forwarder, so that no name reaches a log, an EDE text or a hook with a raw control
    character, newline, ESC or space in it (RFC 1035 5.1 `\\DDD`, as dig prints it)."""
    if not label.translate(None, PLAIN_LABEL):
        return label.decode("ascii")
    return "".join([_ESCAPED[c] for c in label])


def labels_to_text(labels: Iterable[bytes]) -> str:
    """Answers the presentation form (no trailing dot; "." for root) of a name's labels."""
    return ".".join([label_to_text(label) for label in labels]) or "."


def to_text(name: bytes) -> str:
    """Answers the presentation form (no trailing dot; "." for root) of an uncompressed wire
    name, each label escaped by `label_to_text`."""
    labels = []
    off = 0
    while name[off]:
        n = name[off]
        labels.append(name[off + 1 : off + 1 + n])
        off += n + 1
    return labels_to_text(labels)


def from_text(text: str) -> bytes:
    """Answers the lower-case wire form of a presentation name (reading the escapes
    `label_to_text` writes). Raises ValueError."""
    out = bytearray()
    for label in text_to_labels(text):
        out.append(len(label))
        out += label.lower()
    out.append(0)
    if len(out) > MAX_NAME:
        raise ValueError(f"name {text.strip()!r} is longer than {MAX_NAME} octets")
    return bytes(out)


def text_to_labels(text: str) -> list[bytes]:
    """Answers the labels of a presentation name (no root label; [] for the root), reading
    the escapes `label_to_text` writes (`\\.`, `\\DDD`). Raises ValueError."""
    text = text.strip()
    if text.endswith(".") and not _escaped_at(text, len(text) - 1):
        text = text[:-1]
    if not text:
        return []
    labels = _split_labels(text)
    for label in labels:
        if not label or len(label) > MAX_LABEL:
            raise ValueError(f"bad label {label!r} in {text!r}")
    return labels


def read_escape(text: str, i: int) -> tuple[bytes, int]:
    """Reads the presentation-format escape whose backslash is at *text[i]* (`\\DDD`, a
    byte in decimal, or `\\X`, the character X); answers its bytes and the index just past
    it. Raises ValueError."""
    digits = text[i + 1 : i + 4]
    if len(digits) == 3 and digits.isdigit():
        if int(digits) > 255:
            raise ValueError(f"bad escape \\{digits} in {text!r}")
        return bytes([int(digits)]), i + 4
    if i + 1 >= len(text):
        raise ValueError(f"a lone backslash ends {text!r}")
    return text[i + 1].encode("utf-8"), i + 2


def _escaped_at(text: str, index: int) -> bool:
    """Answers whether the character at *index* follows an odd run of backslashes."""
    run = 0
    while index - run - 1 >= 0 and text[index - run - 1] == "\\":
        run += 1
    return run % 2 == 1


def _split_labels(text: str) -> list[bytes]:
    """Splits presentation text into raw labels, reading `\\X` and `\\DDD`. Raises
    ValueError."""
    if "\\" not in text:
        return [label.encode("ascii") for label in text.split(".")]
    labels: list[bytes] = []
    label = bytearray()
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == ".":
            labels.append(bytes(label))
            label = bytearray()
        elif ch == "\\":
            raw, i = read_escape(text, i)
            label += raw
            continue
        else:
            label += ch.encode("ascii")
        i += 1
    labels.append(bytes(label))
    return labels


# --- suffix tables ----------------------------------------------------------------------------


class SuffixTable(Generic[T]):
    """Maps name suffixes to values; `lookup` walks a wire name's labels longest first.

    Keys are lower-case wire names, so a lookup costs one dict probe per label and no
    decoding. The root (".") is an ordinary key: the wire name b"\\x00".
    """

    __slots__ = ("_counts", "_parents", "_table")

    def __init__(self, items: Iterable[tuple[str, T]] = ()) -> None:
        self._table: dict[bytes, T] = {}
        for suffix, value in items:
            self._table.setdefault(from_text(suffix), value)
        # how many labels the suffixes have, most first: only those suffixes are probed
        self._counts = tuple(sorted({labels_of(k) for k in self._table}, reverse=True))
        # what `_walk` found for the parents of names looked up lately: names under the
        # same parent (bucket.s3.<region>.amazonaws.com, ...) cost one probe and a slice
        self._parents: dict[bytes, T | None] = {}

    def __len__(self) -> int:
        return len(self._table)

    def __bool__(self) -> bool:
        return bool(self._table)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SuffixTable):
            return NotImplemented
        return self._table == other._table

    def __hash__(self) -> int:
        return hash(frozenset(self._table.items()))

    def suffixes(self) -> list[str]:
        """The suffixes, as presentation names, sorted."""
        return sorted(to_text(k) for k in self._table)

    def lookup(self, qname: bytes) -> T | None:
        """Answers the value of the longest suffix of the lower-case wire name *qname*."""
        table = self._table
        counts = self._counts
        if not counts:
            return None
        if counts[0] == 0:  # the root only
            return table.get(ROOT)
        value = table.get(qname)
        if value is not None or qname == ROOT:
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

    def lookup_text(self, name: str) -> T | None:
        """`lookup` for a presentation name; a name that is not valid matches nothing."""
        try:
            return self.lookup(from_text(name))
        except (ValueError, UnicodeError):
            return None

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
                value = table.get(qname[starts[labels - count]:] if count else ROOT)
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
