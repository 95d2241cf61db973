"""Cross-field checks: references between rules, groups and policies, duplicates, and files."""

from __future__ import annotations

import os
import ssl

import forwarder.config.aws as aws
import forwarder.config.model as model
from forwarder.dns import netsets
from forwarder.errors import ConfigProblem


def validate(cfg: model.Config, problems: list[ConfigProblem]) -> None:
    """Appends to *problems* everything that is wrong across sections of *cfg*."""
    groups = {g.name: g for g in cfg.upstreams}
    policies = {p.name: p for p in cfg.policies}
    known_groups = ", ".join(sorted(groups))

    def need_group(path: str, name: str) -> None:
        group = groups.get(name)
        if group is None:
            problems.append(ConfigProblem(path, f"unknown upstream group {name!r} "
                                                f"(defined: {known_groups})"))
        elif not group.servers and not group.discovered:
            why = " (/etc/resolv.conf lists no nameserver)" if name == "system" else ""
            problems.append(ConfigProblem(path, f"upstream group {name!r} has no servers{why}"))

    seen_rules: dict[tuple[object, ...], int] = {}
    for rule in cfg.rules:
        path = f"zones[{rule.index}]"
        if rule.upstream is not None:
            need_group(f"{path}.upstream", rule.upstream)
        if rule.policy is not None:
            if rule.policy not in policies:
                problems.append(ConfigProblem(
                    f"{path}.policy", f"unknown policy {rule.policy!r} "
                    f"(defined: {', '.join(sorted(policies)) or 'none'})"))
            if rule.action is model.RuleAction.REFUSE:
                problems.append(ConfigProblem(
                    f"{path}.policy", "a refuse rule gives no answer for a policy to judge"))
        if rule.hosts_file is not None and not os.access(rule.hosts_file, os.R_OK):
            problems.append(ConfigProblem(f"{path}.hosts_file",
                                          f"cannot read {rule.hosts_file!r}"))
        key = (rule.match, rule.qtypes, rule.clients)
        if key in seen_rules:
            problems.append(ConfigProblem(
                f"{path}.match", f"duplicate rule for {rule.match!r} "
                f"(same as zones[{seen_rules[key]}]); the second would never match"))
        else:
            seen_rules[key] = rule.index

    guard = cfg.protection.policy
    if guard is not None and guard not in policies:
        problems.append(ConfigProblem("protection.policy", f"unknown policy {guard!r} "
                                      f"(defined: {', '.join(sorted(policies)) or 'none'})"))

    for policy in cfg.policies:
        path = f"policies.{policy.name}"
        uses_fallback = policy.on_violation is model.Violation.FALLBACK
        if uses_fallback and policy.fallback is None:
            problems.append(ConfigProblem(f"{path}.fallback",
                                          "required when on_violation is fallback"))
        if policy.fallback is not None:
            need_group(f"{path}.fallback", policy.fallback)
        actions = {policy.on_violation, policy.then if uses_fallback else None}
        if model.Violation.REWRITE in actions and not policy.rewrite_from_aws \
                and not any(t.a or t.aaaa for _, t in policy.rewrite):
            problems.append(ConfigProblem(f"{path}.rewrite",
                                          "on_violation rewrite needs addresses under rewrite"))
        if model.Violation.REWRITE_CNAME in actions and not any(t.cname for _, t in policy.rewrite):
            problems.append(ConfigProblem(
                f"{path}.rewrite", "on_violation rewrite_cname needs a CNAME under rewrite"))
        _check_rewrite_addresses(policy, path, problems)

    for group in cfg.upstreams:
        if group.canary and group.canary.policy and group.canary.policy not in policies:
            problems.append(ConfigProblem(f"upstreams.{group.name}.canary.policy",
                                          f"unknown policy {group.canary.policy!r}"))
        if group.tls.ca_file is not None:
            _check_ca_file(group.tls.ca_file, f"upstreams.{group.name}.tls.ca_file", problems)

    seen_listen: set[tuple[str, int]] = set()
    for i, listener in enumerate(cfg.listen):
        if (listener.address, listener.port) in seen_listen:
            problems.append(ConfigProblem(f"listen[{i}]", f"{listener.label} is listed twice"))
        seen_listen.add((listener.address, listener.port))

    if cfg.cache.min_ttl > cfg.cache.max_ttl:
        problems.append(ConfigProblem("cache.min_ttl", "is larger than cache.max_ttl"))
    aws.validate(cfg, problems)


def _check_ca_file(path: str, field: str, problems: list[ConfigProblem]) -> None:
    """The CA file must hold certificates a TLS client can load, before anything starts."""
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as e:  # before OSError, its base class
        problems.append(ConfigProblem(field, f"{path!r} holds no usable PEM certificate "
                                             f"({e.reason or e})"))
    except OSError as e:
        problems.append(ConfigProblem(field, f"cannot read {path!r}: {e.strerror or e}"))


def _check_rewrite_addresses(policy: model.Policy, path: str,
                             problems: list[ConfigProblem]) -> None:
    """A rewrite to an address outside `allowed` would hand out what the policy forbids."""
    try:
        allowed = netsets.NetworkSet.parse(policy.allowed)
    except ValueError:
        return  # parse reported the bad network
    for key, target in policy.rewrite:
        for rtype, values in (("A", target.a), ("AAAA", target.aaaa)):
            for i, value in enumerate(values):
                if not netsets.in_networks(value, allowed):
                    problems.append(ConfigProblem(
                        f"{path}.rewrite.{key}.{rtype}[{i}]",
                        f"{value} is outside the allowed networks of this policy "
                        f"({allowed}); a rewritten answer must pass the policy itself"))
