"""`forwarder aws check`: what in the AWS inventory and the configuration together makes
clients get public addresses, or fail, and how to fix it.

Each finding names where (a zone rule, an upstream group, a policy key, an endpoint), the
problem in plain words, and the fix. The checks:

- `gateway-only`: names of a service with Gateway endpoints (S3, DynamoDB) are forwarded to
  an inbound endpoint in a VPC whose only endpoint for that service is a Gateway endpoint;
- `private-dns-off`: an Interface endpoint for an AWS service with private DNS off; for a
  PrivateLink service, only when no `records: aws` rule answers its private DNS names;
- `endpoint-not-available`: an Interface endpoint that is not `available`;
- `inbound-one-az`: an inbound endpoint with all its addresses in one Availability Zone;
- `inbound-missing`: an `aws:inbound/...` server the inventory does not have;
- `rewrite-unowned`: a static rewrite address that no endpoint in the inventory owns, or
  that belongs to the Interface endpoint of another service;
- `upstream-not-inbound`: a rule for AWS service names (under amazonaws.com) forwards to a
  server that is not a discovered inbound endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

from forwarder.aws import diagnosis, rules, services
from forwarder.aws.inventory import Inventory
from forwarder.config import model
from forwarder.dns.names import is_subdomain

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    severity: str
    where: str
    problem: str
    fix: str


def run(cfg: model.Config, inv: Inventory) -> list[Finding]:
    """Every finding for *cfg* (as written) and *inv*, errors first."""
    concrete = rules.apply(cfg, inv)
    found = [*_gateway_only(concrete, inv), *_interface(cfg, inv), *_inbound(cfg, inv),
             *_rewrites(cfg, inv), *_upstreams(concrete, inv)]
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    return sorted(found, key=lambda f: order[f.severity])


def routing_rule(cfg: model.Config, name: str) -> model.Rule | None:
    """The rule that routes *name* for any client and type: the longest matching suffix."""
    candidates = [r for r in cfg.rules if r.qtypes is None and r.clients is None
                  and is_subdomain(name, r.match)]
    return max(candidates, key=lambda r: (len(r.match.strip(".")), -r.index), default=None)


def _where(rule: model.Rule) -> str:
    return f"zones[{rule.index}] (match {rule.match})"


def _gateway_only(cfg: model.Config, inv: Inventory) -> list[Finding]:
    out = []
    for scope in sorted({s.region for s in inv.scopes}):
        for short in services.GATEWAY_SERVICES:
            service = services.service_name(scope, short)
            name = f"{short}.{scope}.amazonaws.com"
            rule = routing_rule(cfg, name)
            group = cfg.group_named(rule.upstream) if rule and rule.upstream else None
            if rule is None or group is None:
                continue
            for inbound in diagnosis.inbound_of(inv, group.servers):
                where = diagnosis.situation(inv, inbound.vpc, service)
                if not where.gateway_only:
                    continue
                label = services.label(service)
                out.append(Finding(
                    "gateway-only", ERROR, _where(rule),
                    f"{label} names such as {name} are forwarded (group {group.name}) to "
                    f"inbound endpoint {inbound.id} in {inbound.vpc}, which has only an {label} "
                    f"Gateway endpoint ({where.gateway[0].id}). A Gateway endpoint changes "
                    f"routes, not DNS: that VPC's resolver answers {label} names with public "
                    "addresses, which on-premises clients cannot reach.",
                    f"create an {label} Interface endpoint in {inbound.vpc} with private DNS "
                    "enabled (beside the Gateway endpoint, with private DNS only for inbound "
                    "endpoints): aws ec2 create-vpc-endpoint --region "
                    f"{scope} --vpc-endpoint-type Interface --vpc-id {inbound.vpc} "
                    f"--service-name {service} --subnet-ids SUBNET-AZ1 SUBNET-AZ2 "
                    "--private-dns-enabled --dns-options "
                    "PrivateDnsOnlyForInboundResolverEndpoint=true; then `rewrite: aws` can "
                    "also repair public answers"))
    return out


def _interface(cfg: model.Config, inv: Inventory) -> list[Finding]:
    out = []
    local_rules = [r for r in cfg.rules if r.aws_records]
    rewriting = [p.name for p in cfg.policies if p.rewrite_from_aws]
    for e in inv.interface:
        label = services.label(e.service)
        where = f"{e.id} ({label}, {e.vpc}, {e.region}, account {e.account})"
        if not e.usable:
            out.append(Finding(
                "endpoint-not-available", WARNING, where,
                f"Interface endpoint {e.id} is {e.state or 'not available'} and has "
                f"{len(e.addresses)} address(es): nothing can use it",
                "accept the connection on the service side (pendingAcceptance), or replace "
                "the endpoint"))
            continue
        if e.private_dns:
            continue
        ips = ", ".join(a.ip for a in e.addresses)
        if services.is_aws_service(e.service):
            names = ", ".join(services.dns_names(e.service, inv.service(e.service)))
            mitigated = f" (policy {rewriting[0]} rewrites them with `rewrite: aws`)" \
                if rewriting else ""
            out.append(Finding(
                "private-dns-off", INFO if rewriting else WARNING, where,
                f"private DNS is off: the VPC resolver answers {names} with public addresses, "
                f"not the endpoint's ({ips}){mitigated}",
                f"enable it: aws ec2 modify-vpc-endpoint --region {e.region} --vpc-endpoint-id "
                f"{e.id} --private-dns-enabled (the VPC needs DNS support and DNS hostnames); "
                "or rewrite public answers with `rewrite: aws`"))
            continue
        details = inv.service(e.service)
        for name in details.private_dns_names if details else ():
            owner = name[2:] if name.startswith("*.") else name
            if any(is_subdomain(owner, r.match) for r in local_rules):
                continue
            out.append(Finding(
                "private-dns-off", WARNING, where,
                f"private DNS is off, and no rule answers the service's name {name} with the "
                f"endpoint's addresses ({ips})",
                f"add a rule that serves it from the inventory: {{match: {owner}, records: "
                f"aws}}; or enable private DNS on {e.id} and forward {owner} to an inbound "
                "endpoint"))
    return out


def _inbound(cfg: model.Config, inv: Inventory) -> list[Finding]:
    out = []
    for e in inv.inbound:
        zones = e.zones
        if len(zones) == 1 and all(a.az for a in e.addresses):
            out.append(Finding(
                "inbound-one-az", WARNING, f"{e.id} ({e.vpc}, {e.region}, account {e.account})",
                f"all {len(e.addresses)} addresses of inbound endpoint {e.id} are in "
                f"{zones[0]}: an outage of that Availability Zone stops name resolution from "
                "on premises",
                f"add an address in a subnet of another Availability Zone: aws route53resolver "
                f"associate-resolver-endpoint-ip-address --region {e.region} "
                f"--resolver-endpoint-id {e.id} --ip-address SubnetId=SUBNET-IN-OTHER-AZ"))
    for group in cfg.upstreams:
        for key in group.discovered:
            if inv.inbound_endpoint(key) is None:
                known = ", ".join(f"{e.id} ({e.name})" if e.name else e.id
                                  for e in inv.inbound) or "none"
                out.append(Finding(
                    "inbound-missing", ERROR, f"upstreams.{group.name}",
                    f"aws:inbound/{key} is not in the inventory: the group gets no "
                    "address from it",
                    f"name an inbound endpoint that exists (found: {known}), or add its "
                    "region or account to aws.regions / aws.roles"))
    return out


def _rewrites(cfg: model.Config, inv: Inventory) -> list[Finding]:
    out = []
    owners = {a.ip: e for e in inv.interface for a in e.addresses}
    chosen = rules.chosen_endpoints(inv)
    known = {s.name for s in inv.services}
    for policy in cfg.policies:
        for key, target in policy.rewrite:
            service = services.service_of_name(key[2:] if key.startswith("*.") else key, known)
            current = chosen.get(service) if service else None
            use = (f"the {services.label(service)} Interface endpoint {current.id} has "
                   f"{', '.join(a.ip for a in current.addresses)}: use those, or "
                   "`rewrite: aws` to follow it" if current is not None and service
                   else "use the addresses of the Interface endpoint of this name's service, "
                        "or `rewrite: aws`")
            for rtype, values in (("A", target.a), ("AAAA", target.aaaa)):
                for i, value in enumerate(values):
                    where = f"policies.{policy.name}.rewrite.{key}.{rtype}[{i}]"
                    owner = owners.get(value)
                    if owner is None:
                        out.append(Finding(
                            "rewrite-unowned", ERROR, where,
                            f"{value} is not an address of any endpoint in the inventory "
                            f"({_scopes(inv)}): clients sent there reach nothing (an endpoint "
                            "that was replaced?)", use))
                    elif service is not None and owner.service != service:
                        out.append(Finding(
                            "rewrite-unowned", ERROR, where,
                            f"{value} belongs to {owner.id}, the "
                            f"{services.label(owner.service)} Interface endpoint, not to an "
                            f"endpoint of {services.label(service)}", use))
    return out


def _upstreams(cfg: model.Config, inv: Inventory) -> list[Finding]:
    out = []
    inbound_ips = {a.ip for e in inv.inbound for a in e.addresses}
    suggest = ", ".join(f"aws:inbound/{e.id}" for e in inv.inbound) or \
        "aws:inbound/ID of an inbound endpoint"
    for rule in cfg.rules:
        if rule.upstream is None or not any(is_subdomain(rule.match, d)
                                            for d in services.DOMAINS):
            continue
        group = cfg.group_named(rule.upstream)
        for server in group.servers if group else ():
            if server.host in inbound_ips:
                continue
            out.append(Finding(
                "upstream-not-inbound", WARNING, _where(rule),
                f"AWS service names go to group {rule.upstream}, whose server {server.label} "
                "is not a Route 53 Resolver inbound endpoint in the inventory: only a VPC's "
                "resolver answers them with Interface endpoint addresses",
                f"forward them to an inbound endpoint: upstreams.{rule.upstream}.servers: "
                f"[{suggest}]"))
    return out


def _scopes(inv: Inventory) -> str:
    accounts = sorted({s.account for s in inv.scopes})
    regions = sorted({s.region for s in inv.scopes})
    return f"account {', '.join(accounts)}; region {', '.join(regions)}"


def render(findings: list[Finding]) -> str:
    """The findings as the command prints them."""
    lines = []
    for f in findings:
        lines += [f"{f.severity} {f.check}: {f.where}", f"  {f.problem}", f"  fix: {f.fix}", ""]
    counts = {s: sum(f.severity == s for f in findings) for s in (ERROR, WARNING, INFO)}
    summary = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items() if n)
    lines.append(f"{len(findings)} finding(s): {summary}" if findings else "no problems found")
    return "\n".join(lines)
