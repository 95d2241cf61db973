"""What to do about a public answer the policy stopped: the words that follow the action in
a violation's EDE text, and the `cause=` of its log line. Most useful first, because an
EDE text is cut at 400 bytes:

1. S3's global or legacy name (`BUCKET.s3.amazonaws.com`, common in presigned URLs;
   `s3-external-1`, `s3-REGION`): no Interface endpoint's private DNS covers it, the
   regional name (`BUCKET.s3.REGION.amazonaws.com`) is covered. The region is the name's
   own (legacy names), else the one region where this forwarder has a private S3 path (a
   canary, a rewrite key, an S3 Interface endpoint in the inventory), else the bucket's;
2. with an AWS inventory, the cause: the exact endpoint or VPC (aws/diagnosis.py);
3. without one, for a name of the service and region the answering group's canary
   watches: what usually answers it publicly (a Gateway endpoint for S3 and DynamoDB; no
   Interface endpoint with private DNS for the others);
4. with `aws.ip_ranges`, the published range the address is in (aws/diagnosis.py).

`explain` is the policy's `Explain` (stages/policy), built for every runtime, with or
without an `aws:` section.
"""

from __future__ import annotations

import re

from forwarder.aws import services
from forwarder.aws.diagnosis import Diagnosis
from forwarder.config import model

_MEMO = 1024  # explanations remembered (a flood of one violation costs one lookup)
_GLOBAL = re.compile(r"^(?:(?P<bucket>.+)\.)?(?P<host>s3(?:-external-1|-(?P<region>"
                     r"[a-z]{2}(?:-[a-z]+)+-\d+))?)\.amazonaws\.com$")
_S3_NAME = re.compile(r"^(?:\*\.)?s3\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.amazonaws\.com$")


class Advice:
    """Explains violations for one runtime: its canaries, its S3 paths, its diagnosis."""

    def __init__(self, cfg: model.Config, diagnosis: Diagnosis | None = None) -> None:
        self.diagnosis = diagnosis
        self.canaries: dict[str, str] = {}  # group -> the endpoint service its canary names
        for group in cfg.upstreams:
            service = services.service_of_name(group.canary.name) if group.canary else None
            if service is not None:
                self.canaries[group.name] = service
        self.s3_regions = private_s3_regions(cfg, diagnosis)
        self._memo: dict[tuple[str, tuple[str, ...], str], str | None] = {}

    def explain(self, name: str, addresses: tuple[str, ...], group: str) -> str | None:
        """What is known about why *name* got the public *addresses* from *group*, and what
        to do; None when nothing is."""
        key = (name, addresses, group)
        if key in self._memo:
            return self._memo[key]
        diagnosis = self.diagnosis
        parts = [global_s3(name, self.s3_regions)]
        cause = diagnosis.cause(name, group) if diagnosis is not None else None
        parts.append(cause or self.canary_hint(name, group))
        if diagnosis is not None:
            parts += diagnosis.ranges_text(addresses)
        text = "; ".join(p for p in parts if p) or None
        if len(self._memo) >= _MEMO:
            self._memo.clear()
        self._memo[key] = text
        return text

    def canary_hint(self, name: str, group: str) -> str | None:
        """For a name of the service (and region) *group*'s canary watches: what usually
        makes its resolver answer it publicly."""
        watched = self.canaries.get(group)
        if watched is None or services.service_of_name(name, {watched}) != watched:
            return None
        label = services.label(watched)
        if services.short_name(watched) in services.GATEWAY_SERVICES:
            return (f"the resolver for this rule (group {group}) returned a public {label} "
                    f"address: is this VPC's {label} endpoint a Gateway endpoint? On-premises "
                    f"clients need an Interface endpoint")
        return (f"the resolver for this rule (group {group}) returned a public {label} "
                f"address for the service its canary watches: the VPC it answers for has no "
                f"{label} Interface endpoint with private DNS on")


def global_s3(name: str, regions: tuple[str, ...]) -> str | None:
    """The regional name to use instead of S3's global or legacy *name*, or None."""
    found = _GLOBAL.match(name)
    if found is None:
        return None
    bucket = f"{found['bucket']}." if found["bucket"] else ""
    region = found["region"] or ("us-east-1" if found["host"] == "s3-external-1" else None)
    # what to do first: a text cut at 400 bytes loses the reason, not the name to use
    if region is not None:
        return (f"use {bucket}s3.{region}.amazonaws.com: legacy S3 names have no private "
                "DNS")
    if len(regions) == 1:
        return (f"use the regional name {bucket}s3.{regions[0]}.amazonaws.com if the bucket "
                f"is in {regions[0]}: S3's global name has no private address")
    where = f" (private here: {', '.join(regions)})" if regions else ""
    return (f"use the regional name {bucket}s3.REGION.amazonaws.com with the bucket's "
            f"region{where}: S3's global name has no private address")


def private_s3_regions(cfg: model.Config, diagnosis: Diagnosis | None) -> tuple[str, ...]:
    """The regions where this forwarder has a private path to S3: canaries and rewrite keys
    naming S3 there, and S3 Interface endpoints in the inventory."""
    found: set[str] = set()
    names = [g.canary.name for g in cfg.upstreams if g.canary is not None]
    names += [key for p in cfg.policies for key, _ in p.rewrite]
    for text in names:
        match = _S3_NAME.match(text)
        if match is not None:
            found.add(match["region"])
    inv = diagnosis.inv if diagnosis is not None else None
    if inv is not None:
        found.update(e.region for e in inv.interface
                     if e.usable and services.short_name(e.service) == "s3")
    return tuple(sorted(found))


def build(cfg: model.Config, diagnosis: Diagnosis | None = None) -> Advice:
    """The advice for the runtime of *cfg* (its inventory references made concrete)."""
    return Advice(cfg, diagnosis)
