"""YAML -> configuration model: the sections, each read by the model's schema.

Every problem is collected (not just the first) as `ConfigProblem(path, reason)`, where
path reads like `zones[2].upstream`. Unknown keys are problems: a typo must not silently
do nothing.

Adding a section: add its dataclass and a field of `model.Config` (the field states the
YAML key, default and bounds). A section of plain values (numbers, durations, words,
names, nested settings) needs nothing more. One that needs its own reading (a list, a
mapping of named items, a default computed from other fields) gets a function, here or
in a module of its own, listed in SECTIONS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import forwarder.config.acl as acl
import forwarder.config.aws as aws
import forwarder.config.model as model
import forwarder.config.policies as policies
import forwarder.config.schema as schema
import forwarder.config.upstreams as upstreams
import forwarder.config.zones as zones
from forwarder.config.values import Reader, kind_of, parse_server
from forwarder.errors import ConfigProblem

# kept importable from here: the lab and the tests read them
resolv_conf_servers = upstreams.resolv_conf_servers
parse_record = zones.parse_record


def _listeners(top: Reader) -> tuple[model.Listener, ...]:
    if not top.has("listen"):
        return (model.Listener("127.0.0.1", 53),)
    out = []
    for path, item in top.items("listen"):
        if isinstance(item, str | int) and not isinstance(item, bool):
            try:
                s = parse_server(item)
                out.append(model.Listener(s.host, s.port))
            except ValueError as e:
                top.problems.append(ConfigProblem(path, str(e)))
            continue
        r = Reader(top.problems, path, item, schema.keys(model.Listener))
        fields = schema.read(r, model.Listener, {"protocols": _protocols})
        if not fields["address"]:
            continue
        try:
            ipaddress.ip_address(fields["address"])
        except ValueError:
            r.fail("address", f"{fields['address']!r} is not an IP address")
            continue
        out.append(model.Listener(**fields))
    if not out and not any(p.path.startswith("listen") for p in top.problems):
        top.problems.append(ConfigProblem("listen", "at least one address is required"))
    return tuple(out)


def _protocols(r: Reader) -> tuple[str, ...]:
    protocols = []
    for path, p in r.items("protocols"):
        if p not in ("udp", "tcp"):
            r.problems.append(ConfigProblem(path, f"{p!r} is not one of: udp, tcp"))
        else:
            protocols.append(p)
    return tuple(protocols) or ("udp", "tcp")


def _rate_limit(top: Reader) -> model.RateLimit:
    r = schema.child(top, model.RateLimit, "rate_limit")
    fields = schema.read(r, model.RateLimit)
    if not r.has("burst"):
        fields["burst"] = max(1, int(fields["qps"]))
    return model.RateLimit(**fields)


def _hooks(top: Reader) -> tuple[model.HookSettings, ...]:
    out = []
    for path, item in top.items("hooks"):
        r = Reader(top.problems, path, item, schema.keys(model.HookSettings))
        fields = schema.read(r, model.HookSettings, {"options": _options})
        if fields["path"]:
            out.append(model.HookSettings(**fields))
    return tuple(out)


def _options(r: Reader) -> tuple[tuple[str, object], ...]:
    options = r.data.get("options") or {}
    if not isinstance(options, dict):
        r.fail("options", f"expected a mapping, found {kind_of(options)}")
        return ()
    return tuple(options.items())


# The sections read by a function of their own, by `Config` field; the others are read
# from the schema alone.
SECTIONS: dict[str, Callable[[Reader], Any]] = {
    "listen": _listeners,
    "acl": acl.parse,
    "upstreams": upstreams.parse,
    "policies": policies.parse,
    "rules": zones.parse,
    "rate_limit": _rate_limit,
    "hooks": _hooks,
    "aws": aws.parse,
}


def parse(data: Any, source: str, problems: list[ConfigProblem]) -> model.Config:
    """Builds a Config from loaded YAML; appends every problem found to *problems*."""
    top = Reader(problems, "", data, schema.keys(model.Config))
    return model.Config(source=source, **schema.read(top, model.Config, SECTIONS))
