"""The `policies` section: named answer policies (protected names, allowed networks, what
to do with a violation) and their rewrite targets."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import forwarder.config.aws as aws
import forwarder.config.model as model
import forwarder.config.schema as schema
from forwarder.config.values import Reader, as_text, kind_of, network_list, parse_name
from forwarder.config.zones import NO_POLICY
from forwarder.dns import patterns
from forwarder.errors import ConfigProblem


def parse(top: Reader) -> tuple[model.Policy, ...]:
    section = top.data.get("policies") or {}
    if not isinstance(section, dict):
        top.fail("policies", f"expected a mapping of policy names, found {kind_of(section)}")
        return ()
    out = []
    for name, body in section.items():
        r = Reader(top.problems, top.at(f"policies.{name}"), body, schema.keys(model.Policy))
        if str(name).lower() == NO_POLICY:
            top.problems.append(ConfigProblem(
                top.at(f"policies.{name}"), f"{NO_POLICY!r} is the word for no policy "
                "(`policy: none` on a rule); give this policy another name", at_key=True))
        fields = schema.read(r, model.Policy, {
            "protected": _protected, "unprotected": _unprotected, "allowed": _allowed,
            "rewrite": _rewrites})
        if fields["then"] in (model.Violation.FALLBACK, model.Violation.REWRITE_CNAME):
            r.fail("then", f"{fields['then'].value} cannot follow a fallback")
        out.append(model.Policy(name=str(name), **fields,
                                rewrite_from_aws=aws.from_inventory(r, "rewrite"),
                                gateways=aws.gateway_references(r)))
    return tuple(out)


def _protected(r: Reader) -> tuple[str, ...]:
    return _names(r, "protected", model.DEFAULT_PROTECTED, parse_name)


def _unprotected(r: Reader) -> tuple[str, ...]:
    """Name patterns (`*` for a label or inside one)."""
    return _names(r, "unprotected", model.DEFAULT_UNPROTECTED, _pattern)


def _pattern(item: object) -> str:
    text = as_text(item).strip().lower().rstrip(".")
    patterns.parse(text)
    return text


def _names(r: Reader, key: str, default: tuple[str, ...],
           read: Callable[[object], str]) -> tuple[str, ...]:
    """A list of names read by *read* (the item `default`: the built-in list), or
    `default` itself."""
    if not r.has(key) or r.data[key] == "default":
        return default
    found: list[str] = []
    for path, item in r.items(key):
        if item == "default":
            found.extend(default)
            continue
        try:
            found.append(read(item))
        except ValueError as e:
            r.problems.append(ConfigProblem(path, str(e)))
    return tuple(found)


def _allowed(r: Reader) -> tuple[str, ...]:
    if not r.has("allowed") or r.data["allowed"] == "default":
        return model.DEFAULT_ALLOWED
    items = [(path, item) for path, item in r.items("allowed") if not aws.is_gateway(item)]
    return tuple(str(n) for n in network_list(items, r.problems, model.DEFAULT_ALLOWED))


def _rewrites(policy: Reader) -> tuple[tuple[str, model.RewriteTarget], ...]:
    if not policy.has("rewrite") or aws.from_inventory(policy, "rewrite"):
        return ()
    section = policy.data["rewrite"]
    if not isinstance(section, dict):
        policy.fail("rewrite",
                    f"expected a mapping of names to addresses, found {kind_of(section)}")
        return ()
    out = []
    for key, body in section.items():
        path = policy.at(f"rewrite.{key}")
        try:
            owner = parse_name(key, wildcard=True)
        except ValueError as e:
            policy.problems.append(ConfigProblem(path, str(e), at_key=True))
            continue
        r = Reader(policy.problems, path, body, schema.keys(model.RewriteTarget))
        a, aaaa = [], []
        for ipath, v in r.items("A"):
            try:
                a.append(str(ipaddress.IPv4Address(as_text(v))))
            except ValueError:
                r.problems.append(ConfigProblem(ipath, f"{v!r} is not an IPv4 address"))
        for ipath, v in r.items("AAAA"):
            try:
                aaaa.append(str(ipaddress.IPv6Address(as_text(v))))
            except ValueError:
                r.problems.append(ConfigProblem(ipath, f"{v!r} is not an IPv6 address"))
        cname = r.get("CNAME", None, lambda v: parse_name(v, wildcard=True))
        if r.ok and not (a or aaaa or cname):
            r.fail("", "give A and/or AAAA addresses, or a CNAME target")
        out.append((owner, model.RewriteTarget(tuple(a), tuple(aaaa), cname)))
    return tuple(out)
