"""The `policies` section: named answer policies (protected names, allowed networks, what
to do with a violation) and their rewrite targets."""

from __future__ import annotations

import ipaddress

import forwarder.config.aws as aws
import forwarder.config.model as model
import forwarder.config.schema as schema
from forwarder.config.values import Reader, as_text, kind_of, network_list, parse_name
from forwarder.errors import ConfigProblem


def parse(top: Reader) -> tuple[model.Policy, ...]:
    section = top.data.get("policies") or {}
    if not isinstance(section, dict):
        top.fail("policies", f"expected a mapping of policy names, found {kind_of(section)}")
        return ()
    out = []
    for name, body in section.items():
        r = Reader(top.problems, top.at(f"policies.{name}"), body, schema.keys(model.Policy))
        fields = schema.read(r, model.Policy, {
            "protected": _protected, "allowed": _allowed, "rewrite": _rewrites})
        if fields["then"] in (model.Violation.FALLBACK, model.Violation.REWRITE_CNAME):
            r.fail("then", f"{fields['then'].value} cannot follow a fallback")
        out.append(model.Policy(name=str(name), **fields,
                                rewrite_from_aws=aws.from_inventory(r, "rewrite"),
                                gateways=aws.gateway_references(r)))
    return tuple(out)


def _protected(r: Reader) -> tuple[str, ...]:
    if not r.has("protected") or r.data["protected"] == "default":
        return model.DEFAULT_PROTECTED
    names: list[str] = []
    for path, item in r.items("protected"):
        if item == "default":
            names.extend(model.DEFAULT_PROTECTED)
            continue
        try:
            names.append(parse_name(item))
        except ValueError as e:
            r.problems.append(ConfigProblem(path, str(e)))
    return tuple(names)


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
