"""The public API for operators' hook files: verdict types, the read-only views a hook is
given (`Context`, `Response`), and helpers. Loading and calling hooks is
`forwarder.hooks.runner`'s job.

A hook file defines ``on_query(ctx)`` and/or ``on_response(ctx, response)``, each plain or
``async``, and returns one of the verdicts below (None means `Continue`)::

    from forwarder.hooks import Continue, Reroute

    def on_query(ctx):
        if ctx.in_networks(ctx.client, ["10.20.0.0/16"]):
            return Reroute("tenant-b")
        return Continue()

Verdicts check their arguments when they are made, so a mistake raises inside the hook,
where its traceback points at the line to fix.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias

from forwarder.config import model
from forwarder.dns import message, names, netsets, wire
from forwarder.dns.message import Record

if TYPE_CHECKING:
    import dnslib

    from forwarder.query import Query, Reply

__all__ = [
    "Answer", "Block", "Context", "Continue", "Drop", "QueryVerdict", "Record", "Refuse",
    "Replace", "Reroute", "Response", "ResponseVerdict", "in_networks", "is_subdomain",
    "networks",
]

BLOCK_ACTIONS = {"servfail": 2, "refuse": 5, "nxdomain": 3, "nodata": 0}


# --- verdicts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Continue:
    """Carry on: the next hook runs, then the built-in stages. Returning None is the same."""


@dataclass(frozen=True, slots=True)
class Drop:
    """Send nothing; the client times out (as for a dropped packet)."""


@dataclass(frozen=True, slots=True)
class Reroute:
    """on_query: ask the upstream group *group* instead of the one the zone rule names.

    The rule's answer policy still applies. Later hooks still run and see the new group.
    A group that does not exist makes the query SERVFAIL (an invalid verdict).
    """

    group: str

    def __post_init__(self) -> None:
        if not isinstance(self.group, str) or not self.group:
            raise TypeError(f"Reroute needs an upstream group name, not {self.group!r}")


@dataclass(frozen=True, slots=True)
class Refuse:
    """on_query: answer REFUSED with Extended DNS Error 18 (Prohibited) and *ede_text*."""

    ede_text: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.ede_text, str):
            raise TypeError(f"Refuse text must be text, not {self.ede_text!r}")


@dataclass(frozen=True, slots=True)
class Answer:
    """on_query: answer from the hook without asking an upstream.

    *records* and *authority* are `Record`s or ``(name, type, ttl, value)`` tuples;
    *rcode* is text (``"NXDOMAIN"``) or a number; *ede* is ``(code, text)`` or a text
    (code 0, Other). ``Answer()`` with no records is NODATA; the answer is not cached.

    The answer policy judges the answer as it judges an upstream's (a protected name with a
    public address is blocked or rewritten), unless *trusted* is True: then no policy
    judges it, and it is counted in forwarder_hook_trusted_answers_total.
    """

    records: Iterable[Record | tuple[str, str, int, str]] = ()
    rcode: int | str = 0
    ede: tuple[int, str] | str | None = None
    authority: Iterable[Record | tuple[str, str, int, str]] = ()
    trusted: bool = False
    _wire_records: tuple[Any, ...] = field(default=(), init=False, repr=False, compare=False)
    _wire_authority: tuple[Any, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        records, rrs = _checked_records(self.records, "Answer records")
        authority, auth_rrs = _checked_records(self.authority, "Answer authority")
        setter = object.__setattr__  # frozen: normalise once, here
        setter(self, "records", records)
        setter(self, "authority", authority)
        setter(self, "rcode", message.rcode_from(self.rcode))
        setter(self, "ede", _checked_ede(self.ede))
        setter(self, "_wire_records", rrs)
        setter(self, "_wire_authority", auth_rrs)
        _check_trusted(self.trusted, "Answer")


@dataclass(frozen=True, slots=True)
class Replace:
    """on_response: send these records instead of the answer (nothing else is kept).

    *rcode* None keeps the answer's rcode. Build on the response you were given, e.g.
    ``Replace([r for r in response.answer if r.type != "AAAA"], authority=response.authority)``.
    The answer policy judges the new answer, unless *trusted* is True (as for `Answer`).
    """

    records: Iterable[Record | tuple[str, str, int, str]] = ()
    rcode: int | str | None = None
    ede: tuple[int, str] | str | None = None
    authority: Iterable[Record | tuple[str, str, int, str]] = ()
    additional: Iterable[Record | tuple[str, str, int, str]] = ()
    trusted: bool = False
    _wire: tuple[tuple[Any, ...], ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        records, rrs = _checked_records(self.records, "Replace records")
        authority, auth_rrs = _checked_records(self.authority, "Replace authority")
        additional, add_rrs = _checked_records(self.additional, "Replace additional")
        setter = object.__setattr__
        setter(self, "records", records)
        setter(self, "authority", authority)
        setter(self, "additional", additional)
        if self.rcode is not None:
            setter(self, "rcode", message.rcode_from(self.rcode))
        setter(self, "ede", _checked_ede(self.ede))
        setter(self, "_wire", (rrs, auth_rrs, add_rrs))
        _check_trusted(self.trusted, "Replace")


@dataclass(frozen=True, slots=True)
class Block:
    """on_response: withhold the answer. *action* is servfail, refuse, nxdomain or nodata;
    the reply carries Extended DNS Error 15 (Blocked) with *text*."""

    action: str
    text: str = ""

    def __post_init__(self) -> None:
        action = self.action.lower() if isinstance(self.action, str) else self.action
        if action not in BLOCK_ACTIONS:
            raise ValueError(f"Block action must be one of {', '.join(BLOCK_ACTIONS)}, "
                             f"not {self.action!r}")
        if not isinstance(self.text, str):
            raise TypeError(f"Block text must be text, not {self.text!r}")
        object.__setattr__(self, "action", action)

    @property
    def rcode(self) -> int:
        return BLOCK_ACTIONS[self.action]


QueryVerdict: TypeAlias = Continue | Answer | Reroute | Refuse | Drop | None
ResponseVerdict: TypeAlias = Continue | Replace | Block | Drop | None


def _checked_records(
    items: Iterable[object], what: str
) -> tuple[tuple[Record, ...], tuple[dnslib.RR, ...]]:
    if isinstance(items, str | bytes | Record):
        raise TypeError(f"{what} must be a list of records, not {items!r}")
    records = tuple(message.to_record(item) for item in items)
    return records, tuple(message.to_rr(r) for r in records)


def _check_trusted(trusted: object, what: str) -> None:
    if not isinstance(trusted, bool):
        raise TypeError(f"{what} trusted must be True or False, not {trusted!r}")


def _checked_ede(ede: object) -> tuple[int, str] | None:
    if ede is None:
        return None
    if isinstance(ede, str):
        return (int(wire.Ede.OTHER), ede)
    if (isinstance(ede, tuple) and len(ede) == 2 and isinstance(ede[0], int)
            and not isinstance(ede[0], bool) and 0 <= ede[0] <= 65535 and isinstance(ede[1], str)):
        return (ede[0], ede[1])
    raise TypeError(f"ede must be (code, text) or a text, not {ede!r}")


# --- helpers ---------------------------------------------------------------------------------


def networks(*items: str | ipaddress.IPv4Network | ipaddress.IPv6Network) -> netsets.NetworkSet:
    """Compiles networks once (e.g. at import) for fast `in_networks` checks.
    Raises ValueError naming a bad item."""
    return netsets.NetworkSet.parse(items)


@functools.lru_cache(maxsize=256)
def _network_set(items: tuple[object, ...]) -> netsets.NetworkSet:
    return netsets.NetworkSet.parse(items)  # type: ignore[arg-type]


def in_networks(address: str, nets: netsets.NetworkSet | str | Iterable[object]) -> bool:
    """Answers whether *address* lies in *nets*: a `networks(...)` set, one network text,
    or a list of them (compiled once and remembered). A bad address is outside;
    a bad network raises ValueError."""
    if not isinstance(nets, netsets.NetworkSet):
        nets = _network_set((nets,) if isinstance(nets, str) else tuple(nets))
    return netsets.in_networks(address, nets)


def is_subdomain(name: str, suffix: str) -> bool:
    """Answers whether *name* is *suffix* or under it, label-wise, ignoring case and
    trailing dots: ``is_subdomain("a.b.example.com", "example.com")`` is True."""
    return names.is_subdomain(name, suffix)


# --- what a hook is given --------------------------------------------------------------------


class Context:
    """Read-only facts about one query, for one hook, plus helpers.

    `rule` and `group` are known in on_query already (the zone rule is chosen before the
    hooks run); `group` is the upstream group that will be (or was) asked, after any
    Reroute, or None when the rule answers locally or refuses.
    """

    __slots__ = ("_hook", "_options", "_q", "_qname")

    def __init__(self, q: Query, hook: str, options: Mapping[str, Any]) -> None:
        self._q = q
        self._hook = hook
        self._options = options
        self._qname: str | None = None

    @property
    def client(self) -> str:
        """The client's IP address."""
        return self._q.client[0]

    @property
    def client_port(self) -> int:
        return self._q.client[1]

    @property
    def protocol(self) -> str:
        """``"udp"`` or ``"tcp"``."""
        return self._q.transport

    @property
    def qname(self) -> str:
        """The query name: lower case, no trailing dot (``"."`` for the root)."""
        if self._qname is None:
            self._qname = names.to_text(self._q.qname)
        return self._qname

    @property
    def qtype(self) -> str:
        """The query type as text: ``"A"``, ``"AAAA"``, ``"TYPE65534"``."""
        return message.type_to_text(self._q.qtype)

    @property
    def dnssec_ok(self) -> bool:
        return self._q.do

    @property
    def rule(self) -> str | None:
        """The name of the zone rule that matched, or None when none did."""
        rule = self._q.rule
        return rule.name if rule is not None else None

    @property
    def group(self) -> str | None:
        if self._q.group is not None:
            return self._q.group
        rule = self._q.rule
        if rule is None or rule.action is not model.RuleAction.FORWARD:
            return None
        return rule.upstream

    @property
    def options(self) -> Mapping[str, Any]:
        """This hook's `options` from the configuration."""
        return self._options

    @property
    def hook(self) -> str:
        """This hook's name (its file name without `.py`), as in metrics and errors."""
        return self._hook

    @property
    def tags(self) -> Mapping[str, str]:
        """Tags set on this query so far, by any hook (they go to the query log)."""
        tags = self._q.tags
        return MappingProxyType(tags) if tags else MappingProxyType({})

    def tag(self, key: str, value: object) -> None:
        """Adds `key=value` to this query's entry in the query log."""
        if not isinstance(key, str) or not key:
            raise TypeError(f"tag key must be non-empty text, not {key!r}")
        if self._q.tags is None:
            self._q.tags = {}
        self._q.tags[key] = str(value)

    in_networks = staticmethod(in_networks)
    is_subdomain = staticmethod(is_subdomain)

    def __repr__(self) -> str:
        return (f"Context(client={self.client!r}, protocol={self.protocol!r}, "
                f"qname={self.qname!r}, qtype={self.qtype!r}, rule={self.rule!r}, "
                f"group={self.group!r})")


class Response:
    """A read-only view of the answer on_response is given: after the built-in answer
    policy, as records. Records are read only when first asked for."""

    __slots__ = ("_reply", "_sections")

    def __init__(self, reply: Reply) -> None:
        self._reply = reply
        self._sections: message.Sections | None = None

    def _read(self) -> message.Sections:
        if self._sections is None:
            self._sections = message.parse_sections(self._reply.wire)
        return self._sections

    @property
    def rcode(self) -> str:
        """The rcode as text: ``"NOERROR"``, ``"NXDOMAIN"``, ``"SERVFAIL"``..."""
        return message.rcode_to_text(self._reply.rcode)

    @property
    def answer(self) -> tuple[Record, ...]:
        return self._read().answer

    @property
    def authority(self) -> tuple[Record, ...]:
        return self._read().authority

    @property
    def additional(self) -> tuple[Record, ...]:
        return self._read().additional

    @property
    def addresses(self) -> tuple[str, ...]:
        """The values of the A and AAAA records in the answer section."""
        return tuple(r.value for r in self.answer if r.type in ("A", "AAAA"))

    @property
    def ede(self) -> tuple[tuple[int, str], ...]:
        """Extended DNS Errors the answer carries, as (code, text)."""
        return self._reply.ede

    @property
    def answered_by(self) -> str:
        """Where the answer came from: ``"upstream"``, ``"cache"``, ``"local"``, ``"policy"``..."""
        return self._reply.answered_by

    def __repr__(self) -> str:
        return f"Response(rcode={self.rcode!r}, answered_by={self.answered_by!r})"
