"""Withhold answers that point into networks clients must never be sent to.

A sinkhole, a decommissioned range or a partner network that is not routed: if an
answer (after the built-in answer policy) carries an address inside one of these
networks, the client gets REFUSED (or the action you choose) with Extended DNS Error 15
(Blocked) naming the address.

    hooks:
      - path: hooks/deny_networks.py
        options:
          deny: [198.18.0.0/15, 100.127.0.0/16]
          action: refuse        # servfail | refuse | nxdomain | nodata
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forwarder.hooks import Block, Context, Continue, Response, ResponseVerdict, networks

SETTINGS: dict[str, Any] = {}


def setup(options: Mapping[str, Any]) -> None:
    SETTINGS["deny"] = networks(*(options.get("deny") or ()))
    SETTINGS["action"] = Block(str(options.get("action", "refuse"))).action  # checks it


def on_response(ctx: Context, response: Response) -> ResponseVerdict:
    for address in response.addresses:
        if ctx.in_networks(address, SETTINGS["deny"]):
            return Block(SETTINGS["action"], f"{ctx.qname} points to {address}, "
                                             "a network clients must not reach")
    return Continue()
