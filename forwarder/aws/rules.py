"""A configuration's references to the AWS inventory, made concrete: `apply(cfg, inventory)`
answers the Config the runtime is built from.

- upstream servers `aws:inbound/ID` (or `/NAME`): the addresses of that Route 53 Resolver
  inbound endpoint, port 53, after the group's own servers. An endpoint the inventory does
  not have adds none; a group left without servers answers SERVFAIL (fail closed);
- `rewrite: aws`: a rewrite key for every name the private DNS of an endpoint service
  covers, with the addresses of one available Interface endpoint of that service (the ENIs'
  private addresses inside the policy's `allowed` networks). When several endpoints serve
  one service, the one in a VPC that hosts an inbound endpoint wins, then one with private
  DNS on, then the lowest ID, so the choice is stable from one refresh to the next;
- `records: aws`: A/AAAA records (the rule's `ttl`) for the private DNS names under the
  rule's `match` of PrivateLink services whose Interface endpoint has private DNS off:
  nothing else answers those names with the endpoint's addresses.

Before any inventory was read (AWS unreachable at start, no state file), groups get none
of these servers, `rewrite: aws` has no keys (the policy's `then` action applies), and a
`records: aws` rule forwards to `UNAVAILABLE`, a group without servers: SERVFAIL.
"""

from __future__ import annotations

from dataclasses import replace

from forwarder.aws import services
from forwarder.aws.inventory import InterfaceEndpoint, Inventory
from forwarder.config import model
from forwarder.dns import netsets
from forwarder.dns.names import is_subdomain
from forwarder.dns.wire import TYPE_A, TYPE_AAAA

UNAVAILABLE = "aws-inventory-not-loaded"  # the group `records: aws` rules use meanwhile


def apply(cfg: model.Config, inv: Inventory | None) -> model.Config:
    """*cfg* with its inventory references replaced by what *inv* holds."""
    if cfg.aws is None:
        return cfg
    groups = tuple(_group(g, inv) for g in cfg.upstreams)
    policies = tuple(_policy(p, inv) for p in cfg.policies)
    rules = tuple(_rule(r, inv) for r in cfg.rules)
    if inv is None and any(r.aws_records for r in cfg.rules):
        groups += (model.UpstreamGroup(UNAVAILABLE, ()),)
    return replace(cfg, upstreams=groups, policies=policies, rules=rules)


def inbound_servers(group: model.UpstreamGroup, inv: Inventory | None) -> tuple[
        model.Server, ...]:
    """The servers the inbound endpoints *group* names have in *inv*."""
    out: list[model.Server] = []
    for key in group.discovered:
        endpoint = inv.inbound_endpoint(key) if inv is not None else None
        if endpoint is not None:
            out += [model.Server(a.ip, 53) for a in endpoint.addresses]
    return tuple(out)


def _group(group: model.UpstreamGroup, inv: Inventory | None) -> model.UpstreamGroup:
    if not group.discovered:
        return group
    servers = tuple(dict.fromkeys((*group.servers, *inbound_servers(group, inv))))
    return replace(group, servers=servers)


def _policy(policy: model.Policy, inv: Inventory | None) -> model.Policy:
    if not policy.rewrite_from_aws:
        return policy
    return replace(policy, rewrite=rewrite_table(inv, policy.allowed) if inv else ())


def rewrite_table(inv: Inventory, allowed: tuple[str, ...]) -> tuple[
        tuple[str, model.RewriteTarget], ...]:
    """Rewrite keys and targets for every service with an available Interface endpoint."""
    networks = netsets.NetworkSet.parse(allowed)
    table: dict[str, model.RewriteTarget] = {}
    for service, endpoint in sorted(chosen_endpoints(inv).items()):
        ips = [a.ip for a in endpoint.addresses if netsets.in_networks(a.ip, networks)]
        v4 = tuple(sorted({ip for ip in ips if ":" not in ip}, key=netsets.pack_address))
        v6 = tuple(sorted({ip for ip in ips if ":" in ip}, key=netsets.pack_address))
        if not (v4 or v6):
            continue
        for name in services.dns_names(service, inv.service(service)):
            table.setdefault(name, model.RewriteTarget(v4, v6))
    return tuple(sorted(table.items()))


def chosen_endpoints(inv: Inventory) -> dict[str, InterfaceEndpoint]:
    """For each endpoint service, the available Interface endpoint whose addresses stand
    for it (see the module docstring for the order of preference)."""
    inbound_vpcs = {e.vpc for e in inv.inbound}
    best: dict[str, InterfaceEndpoint] = {}

    def rank(e: InterfaceEndpoint) -> tuple[bool, bool, str]:
        return (e.vpc not in inbound_vpcs, not e.private_dns, e.id)

    for e in inv.interface:
        if e.usable and (e.service not in best or rank(e) < rank(best[e.service])):
            best[e.service] = e
    return best


def _rule(rule: model.Rule, inv: Inventory | None) -> model.Rule:
    if not rule.aws_records:
        return rule
    if inv is None:
        return replace(rule, action=model.RuleAction.FORWARD, upstream=UNAVAILABLE)
    return replace(rule, records=(*rule.records, *privatelink_records(inv, rule)))


def privatelink_records(inv: Inventory, rule: model.Rule) -> tuple[model.LocalRecord, ...]:
    """Records for the private DNS names under *rule*'s match of PrivateLink services
    reached through an Interface endpoint with private DNS off."""
    out: dict[tuple[str, int, str], model.LocalRecord] = {}
    for e, name in privatelink_names(inv):
        owner = name[2:] if name.startswith("*.") else name
        if not e.usable or not is_subdomain(owner, rule.match):
            continue
        for a in e.addresses:
            rtype = TYPE_AAAA if ":" in a.ip else TYPE_A
            out.setdefault((name, rtype, a.ip), model.LocalRecord(name, rtype, a.ip, rule.ttl))
    return tuple(out.values())


def privatelink_names(inv: Inventory) -> list[tuple[InterfaceEndpoint, str]]:
    """(endpoint, name) for each private DNS name of a PrivateLink service whose Interface
    endpoint has private DNS off."""
    out = []
    for e in sorted(inv.interface, key=lambda e: e.id):
        if services.is_aws_service(e.service) or e.private_dns:
            continue
        details = inv.service(e.service)
        out += [(e, n) for n in (details.private_dns_names if details else ())]
    return out
