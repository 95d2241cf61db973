"""AWS DNS names and the endpoint services they belong to.

An endpoint service is named `com.amazonaws.REGION.SERVICE` (AWS services; SERVICE may have
dots: `ecr.api`) or `com.amazonaws.vpce.REGION.vpce-svc-ID` (PrivateLink services). The
names its private DNS covers come from the service's details in the inventory; when these
are missing they are derived: `SERVICE` read backwards, then the region and `amazonaws.com`
(`ecr.api` -> `api.ecr.REGION.amazonaws.com`), plus `*.s3.REGION.amazonaws.com` for S3,
whose private DNS also covers bucket, access point and control names.

A name is matched to a service by the label that is a region: `bucket.s3.ap-northeast-1.
amazonaws.com` is S3 in ap-northeast-1. Legacy S3 names (`s3-REGION.amazonaws.com`,
`s3.amazonaws.com`) are not recognised.
"""

from __future__ import annotations

import re

from forwarder.aws.inventory import EndpointService
from forwarder.dns.names import is_subdomain

AWS_PREFIX = "com.amazonaws."
PRIVATELINK_PREFIX = "com.amazonaws.vpce."
DOMAINS = ("amazonaws.com", "amazonaws.com.cn")
GATEWAY_SERVICES = ("s3", "dynamodb")  # the services with Gateway endpoints
WILDCARD_SERVICES = ("s3",)  # private DNS covers *.SERVICE.REGION.amazonaws.com too
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


def is_aws_service(service: str) -> bool:
    """Answers whether *service* is an AWS service (not a PrivateLink service)."""
    return service.startswith(AWS_PREFIX) and not service.startswith(PRIVATELINK_PREFIX)


def short_name(service: str) -> str:
    """`s3` for com.amazonaws.REGION.s3, `vpce-svc-ID` for a PrivateLink service."""
    parts = service.split(".")
    if service.startswith(PRIVATELINK_PREFIX):
        return parts[-1]
    return ".".join(parts[3:]) if len(parts) > 3 else service


def label(service: str) -> str:
    """How a person names *service*: `S3`, `ECR API`, `PrivateLink service vpce-svc-ID`."""
    if service.startswith(PRIVATELINK_PREFIX):
        return f"PrivateLink service {short_name(service)}"
    return short_name(service).replace(".", " ").upper()


def service_name(region: str, short: str) -> str:
    return f"{AWS_PREFIX}{region}.{short}"


def dns_names(service: str, details: EndpointService | None) -> tuple[str, ...]:
    """The names the private DNS of *service* covers (exact names and `*.` wildcards)."""
    names = list(details.private_dns_names) if details is not None else []
    parts = service.split(".")
    if is_aws_service(service) and len(parts) > 3:
        region, short = parts[2], parts[3:]
        exact = ".".join([*reversed(short), region, DOMAINS[0]])
        if not names:
            names.append(exact)
        if ".".join(short) in WILDCARD_SERVICES:
            names.append(f"*.{exact}")
    return tuple(dict.fromkeys(n.lower().rstrip(".") for n in names))


def covers(pattern: str, name: str) -> bool:
    """Answers whether the DNS name *pattern* (exact, or `*.` wildcard) covers *name*."""
    if pattern.startswith("*."):
        base = pattern[2:]
        return name != base and is_subdomain(name, base)
    return name == pattern


def region_of_name(name: str) -> tuple[str, list[str]] | None:
    """For an AWS service name, its region and the labels left of it, nearest first;
    None for any other name."""
    name = name.lower().rstrip(".")
    if not any(is_subdomain(name, d) for d in DOMAINS):
        return None
    labels = name.split(".")
    for i in range(len(labels) - 1, -1, -1):
        if _REGION.match(labels[i]):
            return labels[i], list(reversed(labels[:i]))
    return None


def service_of_name(name: str, known: set[str] | None = None) -> str | None:
    """The endpoint service a protected *name* belongs to: the longest one in *known* that
    its labels spell, else the label just left of the region (`bucket.s3.REGION...` is S3)."""
    found = region_of_name(name)
    if found is None:
        return None
    region, left = found
    if not left:
        return None
    if known:
        for n in range(len(left), 0, -1):
            candidate = service_name(region, ".".join(left[:n]))
            if candidate in known:
                return candidate
    return service_name(region, left[0])
