"""Block AAAA for protected names: answer NODATA with Extended DNS Error 15 (Blocked).

When on-premises networks reach AWS over IPv4 only, an AAAA answer for an AWS service
name sends dual-stack clients to an address they cannot reach (and, for a Gateway
endpoint, to a public one). This hook answers such AAAA queries itself, so no upstream
is asked and clients fall back to IPv4 at once.

    hooks:
      - path: hooks/block_aaaa.py
        options:
          protected: [amazonaws.com, api.aws]   # default: the AWS service domains
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forwarder.hooks import Answer, Context, Continue, QueryVerdict

BLOCKED = 15  # Extended DNS Error: Blocked
DEFAULT_PROTECTED = ("amazonaws.com", "amazonaws.com.cn", "api.aws", "api.amazonwebservices.com.cn")
PROTECTED: list[str] = list(DEFAULT_PROTECTED)


def setup(options: Mapping[str, Any]) -> None:
    PROTECTED[:] = [str(s) for s in options.get("protected") or DEFAULT_PROTECTED]


def on_query(ctx: Context) -> QueryVerdict:
    if ctx.qtype != "AAAA":
        return Continue()
    for suffix in PROTECTED:
        if ctx.is_subdomain(ctx.qname, suffix):
            return Answer([], ede=(BLOCKED, f"AAAA for {ctx.qname} blocked: "
                                             f"{suffix} is reached over IPv4 only"))
    return Continue()
