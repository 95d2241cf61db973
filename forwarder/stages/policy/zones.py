"""Local answers, judged once: when a zone's answers are packed (each reload), every one of
them is judged as an upstream answer of its rule would be (policy/guard.py says by which
policy), instead of on every query.

A local answer that gives a protected name an address outside the allowed networks of the
policy judging it is a configuration error naming the rule and the name: the operator
wrote that answer, and none of a policy's actions fits an answer the forwarder itself
owns. Under a policy that only counts (`mode: monitor` or `on_violation: monitor`) it is a
warning instead, logged at every load and printed by `check-config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from forwarder.config import model
from forwarder.dns import names, wire
from forwarder.dns import reply as reply_mod
from forwarder.errors import ConfigError, ConfigProblem, FormError
from forwarder.stages.local import LocalZone
from forwarder.stages.policy import judge as judging
from forwarder.stages.policy.guard import Protection, named_by

if TYPE_CHECKING:
    from forwarder.stages.policy import AnswerPolicy
    from forwarder.stages.router import Router


def protection(cfg: model.Config, policies: Mapping[str, AnswerPolicy], router: Router,
               groups: Mapping[str, Any] | None, zones: Mapping[int, LocalZone],
               ) -> tuple[Protection, list[ConfigProblem]]:
    """The Protection of *cfg*, once the answers of its local *zones* are judged, and the
    warnings about those that a counting policy lets through. Raises ConfigError for one
    that breaks an enforcing policy."""
    guard = Protection(cfg, policies, router, groups)
    problems, warnings = check(guard, zones)
    if problems:
        raise ConfigError(cfg.source, problems, cfg.positions)
    return guard, warnings


def check(protection: Protection, zones: Mapping[int, LocalZone],
          ) -> tuple[list[ConfigProblem], list[ConfigProblem]]:
    """The problems (violations under an enforcing policy) and warnings (under one that
    only counts) of the local answers of *zones*."""
    problems: list[ConfigProblem] = []
    warnings: list[ConfigProblem] = []
    for zone in zones.values():
        rule = zone.rule
        if rule.opt_out:
            continue
        path = f"zones[{rule.index}].{'records' if rule.records else 'hosts_file'}"
        seen: set[tuple[str, str]] = set()  # one report per name and policy
        for owner, qtype, data in zone.packed():
            try:
                index = reply_mod.read(data)
            except FormError:  # what the zone packed is well formed: nothing to judge
                continue
            if rule.policy is not None:
                policy = protection.policies[rule.policy]
                whose = f"the policy of rule zones[{rule.index}]"
            else:
                found = protection.guard_among(index.answer_names(), qtype)
                if found is None:
                    continue
                policy, whose = found[1], named_by(found[2])
            judgement = judging.judge(index, policy.protected, policy.allowed)
            if not judgement.violations or judgement.protected_name is None:
                continue
            name = names.to_text(judgement.protected_name)
            if (name, policy.name) in seen:
                continue
            seen.add((name, policy.name))
            shown = names.to_text(owner)
            asked = f" {wire.qtype_to_text(qtype)}" if qtype else ""
            text = (f"the local answer for {shown}{asked} gives protected name {name} "
                    f"{judging.addresses_text(judgement.violations)}, outside the allowed "
                    f"networks of policy {policy.name} ({whose})")
            if policy.monitor_only or policy.cfg.on_violation is model.Violation.MONITOR:
                warnings.append(ConfigProblem(path, f"{text}; the policy only counts it"))
            else:
                problems.append(ConfigProblem(
                    path, f"{text}; a local answer must pass the policy that judges it"))
    return problems, warnings
