"""The addresses a VPC routes privately through a Gateway endpoint: what an `allowed` entry
`aws:gateway:SERVICE:REGION` of a policy stands for.

A Gateway endpoint (S3, DynamoDB) changes routes, not DNS: the VPC resolver still answers
the service's public addresses, and the VPC's route tables send the networks of the
service's AWS-managed prefix list (`com.amazonaws.REGION.s3`) to the endpoint. For a client
inside that VPC such an answer is private in fact, and the entry lets it pass. For a
client outside the VPC (on premises, another VPC) it is not: the traffic leaves by the
internet path, or is dropped by a firewall that forbids public destinations. Those clients
need an Interface endpoint, so the entry belongs on rules whose `clients:` are inside the
VPC; `client_warnings` says where it is not (check-config prints them).

Where the networks come from, in order: the prefix list in the AWS inventory (what the
route tables really carry; with `aws.regions`), else AWS's published ranges of the service
in the region (`aws.ip_ranges`). With neither, the entry stands for no network: answers it
would have let pass stay violations (fail closed), and the log says so.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import replace

from forwarder.aws.inventory import Inventory
from forwarder.aws.ipranges import IpRanges
from forwarder.config import aws as aws_config
from forwarder.config import model
from forwarder.errors import ConfigProblem

log = logging.getLogger("forwarder.aws")


def networks(reference: str, inv: Inventory | None, ranges: IpRanges | None,
             ) -> tuple[tuple[str, ...], str]:
    """The networks the entry *reference* stands for, and where they were found (for the
    operator: "prefix list pl-61a54008", "ip ranges", or why there are none)."""
    service, region = aws_config.gateway_parts(reference)
    if inv is not None:
        cidrs: list[str] = []
        ids = []
        for name in (f"com.amazonaws.{region}.{service}",
                     f"com.amazonaws.{region}.ipv6.{service}"):
            found = inv.prefix_list(name)
            if found is not None and found.cidrs:
                cidrs += found.cidrs
                ids.append(found.id)
        if cidrs:
            return _normalised(cidrs), f"prefix list {', '.join(ids)}"
    if ranges is not None:
        published = ranges.prefixes(service.upper(), region)
        if published:
            return published, f"the published ranges in {ranges.source}"
    if inv is None and ranges is None:
        return (), "no AWS inventory read yet and no aws.ip_ranges"
    return (), f"no prefix list or published range of {service} in {region}"


def apply(cfg: model.Config, inv: Inventory | None, ranges: IpRanges | None) -> model.Config:
    """*cfg* with the networks of every policy's Gateway entries filled in."""
    if not any(p.gateways for p in cfg.policies):
        return cfg
    policies = []
    for policy in cfg.policies:
        found: list[str] = []
        for reference in policy.gateways:
            nets, source = networks(reference, inv, ranges)
            if not nets:
                log.warning("policy %s: %s stands for no network (%s): answers with its "
                            "addresses are violations until it does", policy.name, reference,
                            source)
            found += nets
        policies.append(replace(policy, gateway_networks=tuple(dict.fromkeys(found))))
    return replace(cfg, policies=tuple(policies))


def check(cfg: model.Config, ranges: IpRanges | None) -> list[ConfigProblem]:
    """What check-config warns about Gateway entries: rules whose clients include
    on-premises networks (`client_warnings`), and entries that only the ip ranges could
    fill but that name a service or region they lack."""
    out = client_warnings(cfg)
    regions = set(cfg.aws.regions) if cfg.aws is not None else set()
    for policy in cfg.policies:
        for reference in policy.gateways:
            service, region = aws_config.gateway_parts(reference)
            if region in regions or ranges is None or ranges.prefixes(service.upper(), region):
                continue
            out.append(ConfigProblem(
                f"policies.{policy.name}.allowed",
                f"{reference}: {ranges.source} has no {service.upper()} range in {region}, "
                "so it stands for no network (answers stay violations)"))
    return out


def client_warnings(cfg: model.Config) -> list[ConfigProblem]:
    """A warning for each rule judged by a policy with Gateway entries whose clients include
    on-premises networks, as far as the configuration tells: a rule without `clients:`
    answers every client `acl.allow` admits, the on-premises networks a forwarder in that
    place serves among them. A rule with `clients:` names its clients (only the operator
    can tell a VPC's networks from a site's), and loopback alone is the forwarder's own
    host: neither is warned about."""
    out = []
    for rule in cfg.rules:
        policy = cfg.policy_named(rule.policy) if rule.policy else None
        if policy is None or not policy.gateways or rule.clients is not None:
            continue
        if all(n.is_loopback for n in cfg.acl):
            continue
        shown = ", ".join(str(n) for n in cfg.acl[:4]) + (" ..." if len(cfg.acl) > 4 else "")
        out.append(ConfigProblem(
            f"zones[{rule.index}].policy",
            f"policy {policy.name} allows {', '.join(policy.gateways)}, but rule "
            f"{rule.name} has no clients: and answers every client acl.allow admits "
            f"({shown}), on-premises ones too. A Gateway endpoint carries only traffic from "
            "inside its VPC: on-premises clients need an Interface endpoint. Give the rule "
            "clients: with the VPC's networks"))
    fallback = cfg.policy_named(cfg.protection.policy) if cfg.protection.policy else None
    if fallback is not None and fallback.gateways:
        out.append(ConfigProblem(
            "protection.policy",
            f"policy {fallback.name} allows {', '.join(fallback.gateways)}, but as "
            "protection.policy it judges protected names for every client, on-premises "
            "ones too: a Gateway endpoint carries only traffic from inside its VPC. Keep "
            "such entries to a policy of rules whose clients: are the VPC's networks"))
    return out


def _normalised(cidrs: list[str]) -> tuple[str, ...]:
    found = []
    for text in cidrs:
        try:
            found.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            log.warning("prefix list entry %r is not a network: left out", text)
    return tuple(str(n) for n in sorted(set(found), key=lambda n: (n.version, n)))
