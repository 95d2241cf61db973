"""The `zones` section: rules (a name suffix, optional query-type and client matchers, and
where matching queries go) and their local records."""

from __future__ import annotations

import ipaddress
from typing import Any

import forwarder.config.aws as aws
import forwarder.config.model as model
import forwarder.config.schema as schema
from forwarder.config.values import (
    Reader,
    as_text,
    network_list,
    parse_name,
    parse_qtype,
)
from forwarder.dns import wire
from forwarder.errors import ConfigProblem

RECORD_TYPES = ("A", "AAAA", "CNAME", "TXT")
NO_POLICY = "none"  # `policy: none`: the explicit opt-out (a policy cannot be named so)


def parse(top: Reader) -> tuple[model.Rule, ...]:
    out = []
    for index, (path, item) in enumerate(top.items("zones")):
        r = Reader(top.problems, path, item, schema.keys(model.Rule))
        if not r.ok:
            continue
        fields = schema.read(r, model.Rule, {"match": _match, "qtypes": _qtypes,
                                             "clients": _clients},
                             skip=("name", "action", "records"))
        fields["aws_records"] = aws.from_inventory(r, "records")
        fields["opt_out"] = fields["policy"] == NO_POLICY
        if fields["opt_out"]:
            fields["policy"] = None
        fields["records"] = () if fields["aws_records"] else tuple(_records(r, fields["ttl"]))
        action = _action(r, fields)
        if action is None:
            continue
        name = r.text("name", fields["match"] or "?")
        out.append(model.Rule(index=index, name=name, action=action, **fields))
    if not top.has("zones"):
        top.fail("zones",
                 "at least one zone rule is required (e.g. match: \".\", upstream: system)")
    return tuple(out)


def _action(r: Reader, fields: dict[str, Any]) -> model.RuleAction | None:
    """The rule's action: given, or what its other keys imply; None (after saying why)
    when there is none."""
    records, hosts_file, upstream = fields["records"], fields["hosts_file"], fields["upstream"]
    action: model.RuleAction | None
    if r.has("action"):
        action = r.choice("action", None, model.RuleAction, [a.value for a in model.RuleAction])
        if action is None:
            return None
    elif records or hosts_file or fields["aws_records"]:
        action = model.RuleAction.LOCAL
    elif upstream:
        action = model.RuleAction.FORWARD
    else:
        r.fail("", "a rule needs `upstream: GROUP`, `action: refuse`, or `records`/`hosts_file`")
        return None
    if action is model.RuleAction.FORWARD and not upstream:
        r.fail("upstream", "required when action is forward")
    if action is model.RuleAction.LOCAL and not (records or hosts_file or fields["aws_records"]):
        r.fail("records", "a local rule needs records or a hosts_file")
    if upstream and action in (model.RuleAction.REFUSE, model.RuleAction.LOCAL):
        r.fail("upstream", f"not used by action {action.value}; remove one of them")
    return action


def _match(r: Reader) -> str:
    match: str = r.get("match", "", parse_name)
    if not match:
        r.fail("match", "required (a name suffix, or \".\" for everything)")
    return match


def _qtypes(r: Reader) -> frozenset[int] | None:
    if not r.has("qtypes"):
        return None
    return frozenset(r.each("qtypes", parse_qtype))


def _clients(r: Reader) -> tuple[model.Network, ...] | None:
    if not r.has("clients"):
        return None
    return tuple(network_list(r.items("clients"), r.problems, model.DEFAULT_ACL))


def parse_record(name: Any, rtype: Any, value: Any, ttl: int) -> model.LocalRecord:
    """Validates one local record. Raises ValueError naming what is wrong."""
    owner = parse_name(name, wildcard=True)
    t = as_text(rtype).upper()
    if t not in RECORD_TYPES:
        raise ValueError(f"type {rtype!r} is not one of: {', '.join(RECORD_TYPES)}")
    text = as_text(value).strip()
    if t == "A":
        if not isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address):
            raise ValueError(f"{text!r} is not an IPv4 address")
    elif t == "AAAA":
        try:
            if not isinstance(ipaddress.ip_address(text), ipaddress.IPv6Address):
                raise ValueError
        except ValueError:
            raise ValueError(f"{text!r} is not an IPv6 address") from None
    elif t == "CNAME":
        text = parse_name(text)
    elif len(text.encode("utf-8")) > 255:
        raise ValueError("TXT values longer than 255 bytes are not supported")
    return model.LocalRecord(owner, wire.qtype_from_text(t), text, ttl)


def _records(rule: Reader, ttl: int) -> list[model.LocalRecord]:
    """The rule's records; a record without its own `ttl` takes the rule's *ttl*."""
    out = []
    for path, item in rule.items("records"):
        r = Reader(rule.problems, path, item, schema.keys(model.LocalRecord))
        if not r.ok:
            continue
        missing = [k for k in ("name", "type", "value") if not r.has(k)]
        for k in missing:
            r.fail(k, "required")
        if missing:
            continue
        try:
            out.append(parse_record(r.data["name"], r.data["type"], r.data["value"],
                                    schema.read_field(r, model.LocalRecord, "ttl", ttl)))
        except ValueError as e:
            rule.problems.append(ConfigProblem(path, str(e)))
    return out
