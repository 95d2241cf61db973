"""The `upstreams` section: named groups of servers, their health checks and canaries, and
the `system` group read from /etc/resolv.conf."""

from __future__ import annotations

import ipaddress
import os

import forwarder.config.aws as aws
import forwarder.config.model as model
import forwarder.config.schema as schema
from forwarder.config.values import Reader, kind_of, parse_pin, parse_server, parse_url

RESOLV_CONF = "/etc/resolv.conf"


def resolv_conf_servers(path: str | None = None) -> tuple[model.Server, ...]:
    """Answers the nameservers listed in resolv.conf (FORWARDER_RESOLV_CONF overrides the path)."""
    path = path or os.environ.get("FORWARDER_RESOLV_CONF", RESOLV_CONF)
    servers = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    addr = parts[1].split("%")[0]
                    try:
                        ipaddress.ip_address(addr)
                    except ValueError:
                        continue
                    servers.append(model.Server(addr, 53))
    except OSError:
        return ()
    return tuple(servers)


def parse(top: Reader) -> tuple[model.UpstreamGroup, ...]:
    section = top.data.get("upstreams") or {}
    if not isinstance(section, dict):
        top.fail("upstreams", f"expected a mapping of group names, found {kind_of(section)}")
        section = {}
    out = []
    for name, body in section.items():
        r = Reader(top.problems, top.at(f"upstreams.{name}"), body,
                   schema.keys(model.UpstreamGroup))
        transport = schema.read_field(r, model.UpstreamGroup, "transport")
        fields = schema.read(r, model.UpstreamGroup, {
            "servers": lambda r, n=str(name), t=transport: _servers(r, n, t),
            "canary": _canary,
            "tls": _tls,
        }, skip=("transport",))
        if not r.has("budget"):
            fields["budget"] = fields["timeout"] * fields["attempts"] + 1.0
        for key in ("tls", "idle_timeout"):
            if r.has(key) and transport not in model.ENCRYPTED:
                r.fail(key, f"only used by transport tls or https, not {transport}")
        if r.has("method") and transport != "https":
            r.fail("method", f"only used by transport https, not {transport}")
        out.append(model.UpstreamGroup(name=str(name), transport=transport, **fields,
                                       discovered=aws.server_references(r)))
    if not any(g.name == "system" for g in out):
        out.append(model.UpstreamGroup("system", resolv_conf_servers()))
    return tuple(out)


def _servers(r: Reader, name: str, transport: str) -> tuple[model.Server, ...]:
    port = model.DEFAULT_PORTS[transport]
    servers = r.each("servers", parse_url if transport == "https"
                     else lambda v: parse_server(v, default_port=port),
                     skip=aws.is_reference)
    if not servers and r.ok and not r.has("servers"):
        if name == "system":
            return resolv_conf_servers()
        r.fail("servers", "at least one server is required")
    return tuple(servers)


def _canary(group: Reader) -> model.Canary | None:
    if not group.has("canary"):
        return None
    return schema.section(schema.child(group, model.Canary, "canary"), model.Canary)


def _tls(group: Reader) -> model.TlsSettings:
    r = schema.child(group, model.TlsSettings, "tls")
    fields = schema.read(r, model.TlsSettings, {"pins": lambda r: tuple(r.each("pins", parse_pin))})
    if fields["insecure_skip_verify"] and fields["ca_file"] is not None:
        r.fail("ca_file", "not used when insecure_skip_verify is true (nothing is verified); "
                          "remove one of them")
    return model.TlsSettings(**fields)
