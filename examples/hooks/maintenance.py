"""Answer maintenance names locally, without asking any upstream.

During a maintenance window, send clients of `app.example.com` (and names under it) to
the maintenance page server, and say why in a TXT record and an Extended DNS Error:

    hooks:
      - path: hooks/maintenance.py
        options:
          names: [app.example.com]
          address: 10.0.50.10          # the maintenance page server (A); optional
          address6: "fd00:50::10"      # optional (AAAA)
          message: "app.example.com is in maintenance until 14:00 UTC"
          ttl: 30

Other query types for those names get an empty answer (NODATA). Remove the hook (and
reload) to end the window.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forwarder.hooks import Answer, Context, Continue, QueryVerdict

SETTINGS: dict[str, Any] = {}


def setup(options: Mapping[str, Any]) -> None:
    names = options.get("names")
    if not names or not isinstance(names, list):
        raise ValueError("options.names must list the names under maintenance")
    SETTINGS.clear()
    SETTINGS.update(names=tuple(names), address=options.get("address"),
                    address6=options.get("address6"), message=str(options.get("message", "")),
                    ttl=int(options.get("ttl", 30)))


def on_query(ctx: Context) -> QueryVerdict:
    if not any(ctx.is_subdomain(ctx.qname, name) for name in SETTINGS["names"]):
        return Continue()
    ttl, message = SETTINGS["ttl"], SETTINGS["message"]
    ede = (0, message) if message else None
    if ctx.qtype == "A" and SETTINGS["address"]:
        return Answer([(ctx.qname, "A", ttl, SETTINGS["address"])], ede=ede)
    if ctx.qtype == "AAAA" and SETTINGS["address6"]:
        return Answer([(ctx.qname, "AAAA", ttl, SETTINGS["address6"])], ede=ede)
    if ctx.qtype == "TXT" and message:
        return Answer([(ctx.qname, "TXT", ttl, message)], ede=ede)
    return Answer([], ede=ede)  # NODATA
