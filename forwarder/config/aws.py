"""The optional `aws:` section and the references to the AWS inventory elsewhere in a
configuration: `aws:inbound/ID` upstream servers, `rewrite: aws`, `records: aws` and
`aws:gateway:SERVICE:REGION` entries of a policy's `allowed`.

`parse` reads the section into `model.AwsSettings`; the small predicates let the other
sections' parsers skip these references; `validate` checks what only the whole
configuration shows (a reference without the section). With `regions` the section reads
the AWS API and needs boto3, which the `aws` extra installs (without it the section is a
configuration error naming the extra); a section with only `ip_ranges` reads no API.
"""

from __future__ import annotations

import re
from typing import Any

import forwarder.config.model as model
import forwarder.config.schema as schema
from forwarder.aws.services import GATEWAY_SERVICES
from forwarder.config.values import Reader, as_text
from forwarder.errors import ConfigProblem

INBOUND_PREFIX = "aws:inbound/"
GATEWAY_PREFIX = "aws:gateway:"
FROM_INVENTORY = "aws"  # the value of `rewrite:` and `records:` that means "from the inventory"
EXTRA = "pip install 'forwarder[aws]'"

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_ENDPOINT = re.compile(r"^[^\s/]+$")


def boto3_available() -> bool:
    """Answers whether boto3 (the `aws` extra) can be imported."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        return False
    return True


def parse(top: Reader) -> model.AwsSettings | None:
    """Reads the `aws:` section of the top-level mapping; None when there is none."""
    if "aws" not in top.data:
        return None
    r = schema.child(top, model.AwsSettings, "aws")
    if not r.ok:
        return None
    if r.has("regions") and not boto3_available():
        r.fail("", f"AWS discovery needs boto3, which is not installed: {EXTRA}")
    fields = schema.read(r, model.AwsSettings, {"regions": _regions, "roles": _roles})
    if not r.has("stale_after"):
        fields["stale_after"] = max(fields["stale_after"], 3 * fields["refresh"])
    return model.AwsSettings(**fields)


def _regions(r: Reader) -> tuple[str, ...]:
    regions: list[str] = []
    for path, item in r.items("regions"):
        text = _text(item)
        if text is None or not _REGION.match(text):
            r.problems.append(ConfigProblem(path, f"{item!r} is not an AWS region name "
                                                  "(such as ap-northeast-1)"))
        elif text not in regions:
            regions.append(text)
    if not r.has("regions") and not r.has("ip_ranges") and r.ok:
        r.fail("regions", "required (unless ip_ranges alone is wanted): the regions to read, "
                          "e.g. [ap-northeast-1]")
    return tuple(regions)


def _roles(r: Reader) -> tuple[str, ...]:
    roles: list[str] = []
    for path, item in r.items("roles"):
        text = _text(item)
        if text is None or not _ROLE.match(text):
            r.problems.append(ConfigProblem(path, f"{item!r} is not an IAM role ARN "
                                                  "(arn:aws:iam::123456789012:role/NAME)"))
        else:
            roles.append(text)
    return tuple(roles)


def is_reference(item: Any) -> bool:
    """Answers whether an upstream server entry refers to the inventory (`aws:...`)."""
    return isinstance(item, str) and item.strip().lower().startswith("aws:")


def server_references(group: Reader) -> tuple[str, ...]:
    """The inbound endpoints (IDs or names) that the `aws:inbound/X` entries of a group's
    `servers` name; other `aws:` entries are problems."""
    out: list[str] = []
    for path, item in group.items("servers"):
        if not is_reference(item):
            continue
        text = item.strip()
        endpoint = text[len(INBOUND_PREFIX):] if text.lower().startswith(INBOUND_PREFIX) else ""
        if not _ENDPOINT.match(endpoint):
            group.problems.append(ConfigProblem(path, f"{text!r}: expected {INBOUND_PREFIX}ID or "
                                                f"{INBOUND_PREFIX}NAME of a Route 53 Resolver "
                                                "inbound endpoint"))
        elif endpoint not in out:
            out.append(endpoint)
    return tuple(out)


def is_gateway(item: Any) -> bool:
    """Answers whether an `allowed` entry is a Gateway endpoint's ranges (`aws:gateway:...`)."""
    return isinstance(item, str) and item.strip().lower().startswith(GATEWAY_PREFIX)


def gateway_references(policy: Reader) -> tuple[str, ...]:
    """The `aws:gateway:SERVICE:REGION` entries of a policy's `allowed`, normalised; a
    malformed one is a problem."""
    out: list[str] = []
    for path, item in policy.items("allowed"):
        if not is_gateway(item):
            continue
        text = item.strip().lower()
        parts = text[len(GATEWAY_PREFIX):].split(":")
        if len(parts) != 2 or parts[0] not in GATEWAY_SERVICES or not _REGION.match(parts[1]):
            policy.problems.append(ConfigProblem(path, (
                f"{item.strip()!r}: expected {GATEWAY_PREFIX}SERVICE:REGION with SERVICE "
                f"{' or '.join(GATEWAY_SERVICES)} (the services with Gateway endpoints), e.g. "
                f"{GATEWAY_PREFIX}s3:ap-northeast-1")))
        elif text not in out:
            out.append(text)
    return tuple(out)


def gateway_parts(reference: str) -> tuple[str, str]:
    """(service, region) of a normalised `aws:gateway:SERVICE:REGION` entry."""
    service, region = reference[len(GATEWAY_PREFIX):].split(":")
    return service, region


def from_inventory(section: Reader, key: str) -> bool:
    """Answers whether *key* of *section* says `aws` (`rewrite: aws`, `records: aws`)."""
    value = section.data.get(key)
    return isinstance(value, str) and value.strip().lower() == FROM_INVENTORY


def validate(cfg: model.Config, problems: list[ConfigProblem]) -> None:
    """Appends the problems of inventory references that have no `aws:` section (or no
    `aws.regions`) to read them from, and of Gateway entries with nothing to fill them."""
    settings = cfg.aws
    for policy in cfg.policies:
        for ref in policy.gateways:
            region = gateway_parts(ref)[1]
            if settings is None:
                why = (f"{ref} needs the aws: section: ip_ranges (AWS's published ranges) or "
                       "regions (to read the managed prefix lists)")
            elif settings.ip_ranges is None and region not in settings.regions:
                why = (f"{ref}: {region} is not among aws.regions and aws.ip_ranges is not "
                       "set: nothing says which addresses its Gateway endpoint routes")
            else:
                continue
            problems.append(ConfigProblem(f"policies.{policy.name}.allowed", why))
    if settings is None:
        _inventory_references(cfg, "needs the aws: section (regions to read the AWS "
                                   "inventory from)", problems)
    elif not settings.discovers:
        _inventory_references(cfg, "needs aws.regions: the AWS inventory is read from the "
                                   "API of those regions", problems)


def _inventory_references(cfg: model.Config, need: str, problems: list[ConfigProblem]) -> None:
    """Appends a problem saying what it *need*s for each reference to the inventory."""
    for group in cfg.upstreams:
        if group.discovered:
            problems.append(ConfigProblem(f"upstreams.{group.name}.servers",
                                          f"{INBOUND_PREFIX}{group.discovered[0]} {need}"))
    for policy in cfg.policies:
        if policy.rewrite_from_aws:
            problems.append(ConfigProblem(f"policies.{policy.name}.rewrite",
                                          f"rewrite: aws {need}"))
    for rule in cfg.rules:
        if rule.aws_records:
            problems.append(ConfigProblem(f"zones[{rule.index}].records",
                                          f"records: aws {need}"))


def _text(item: Any) -> str | None:
    try:
        return as_text(item).strip()
    except ValueError:
        return None
