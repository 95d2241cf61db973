"""YAML -> configuration model: defaults, type coercion, and a field path in every error.

Every problem is collected (not just the first) as `ConfigProblem(path, reason)`, where
path reads like `zones[2].upstream`. Unknown keys are problems: a typo must not silently
do nothing. This module knows the sections and their fields; `values` reads each value.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import forwarder.config.model as model
from forwarder.config.values import (
    Reader,
    as_text,
    kind_of,
    parse_host,
    parse_name,
    parse_network,
    parse_pin,
    parse_qtype,
    parse_server,
    parse_url,
)
from forwarder.dns import wire
from forwarder.errors import ConfigProblem

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


# --- sections ----------------------------------------------------------------------------

TOP_KEYS = {
    "listen", "acl", "upstreams", "zones", "policies", "cache", "rate_limit", "limits",
    "metrics", "querylog", "hooks", "user", "group", "allow_root", "pid_file", "workers",
}


def parse(data: Any, source: str, problems: list[ConfigProblem]) -> model.Config:
    """Builds a Config from loaded YAML; appends every problem found to *problems*."""
    top = Reader(problems, "", data, TOP_KEYS)
    listen = _listeners(top, problems)
    acl = _acl(top, problems)
    groups = _groups(top, problems)
    policies = _policies(top, problems)
    rules = _rules(top, problems)
    return model.Config(
        source=source,
        listen=listen,
        acl=acl,
        upstreams=groups,
        rules=rules,
        policies=policies,
        cache=_cache(top, problems),
        rate_limit=_rate_limit(top, problems),
        limits=_limits(top, problems),
        metrics=_metrics(top, problems),
        querylog=_querylog(top, problems),
        hooks=_hooks(top, problems),
        user=top.text("user", None),
        group=top.text("group", None),
        allow_root=top.boolean("allow_root", False),
        pid_file=top.text("pid_file", None),
        workers=top.integer("workers", 1, 1, 64),
    )


def _listeners(top: Reader, problems: list[ConfigProblem]) -> tuple[model.Listener, ...]:
    if not top.has("listen"):
        return (model.Listener("127.0.0.1", 53),)
    out = []
    for path, item in top.items("listen"):
        if isinstance(item, str | int) and not isinstance(item, bool):
            try:
                s = parse_server(item)
                out.append(model.Listener(s.host, s.port))
            except ValueError as e:
                problems.append(ConfigProblem(path, str(e)))
            continue
        r = Reader(problems, path, item, {"address", "port", "protocols"})
        address = r.text("address", "")
        if not address:
            if r.ok:
                r.fail("address", "required")
            continue
        try:
            ipaddress.ip_address(address)
        except ValueError:
            r.fail("address", f"{address!r} is not an IP address")
            continue
        port = r.integer("port", 53, 0, 65535)
        protocols = []
        for ppath, p in r.items("protocols"):
            if p not in ("udp", "tcp"):
                problems.append(ConfigProblem(ppath, f"{p!r} is not one of: udp, tcp"))
            else:
                protocols.append(p)
        out.append(model.Listener(address, port, tuple(protocols) or ("udp", "tcp")))
    if not out and not any(p.path.startswith("listen") for p in problems):
        problems.append(ConfigProblem("listen", "at least one address is required"))
    return tuple(out)


def _acl(top: Reader, problems: list[ConfigProblem]) -> tuple[model.Network, ...]:
    r = Reader(problems, top.at("acl"), top.data.get("acl"), {"allow", "open_resolver"})
    if not r.has("allow"):
        return tuple(ipaddress.ip_network(n) for n in model.DEFAULT_ACL)
    networks = tuple(_network_list(r.items("allow"), problems, model.DEFAULT_ACL))
    everyone = [str(n) for n in networks if n.prefixlen == 0]
    if everyone and not r.boolean("open_resolver", False):
        r.fail("allow", f"{everyone[0]} makes this an open resolver, which anyone can use for "
                        "reflection attacks; list your clients' networks, or set "
                        "acl.open_resolver: true if that is really wanted")
    return networks


def _network_list(items: list[tuple[str, Any]], problems: list[ConfigProblem],
                  default: tuple[str, ...]) -> list[model.Network]:
    """Parses a list of networks; the item `default` stands for *default*."""
    out: list[model.Network] = []
    for path, item in items:
        if item == "default":
            out.extend(ipaddress.ip_network(n) for n in default)
            continue
        try:
            out.append(parse_network(item))
        except ValueError as e:
            problems.append(ConfigProblem(path, str(e)))
    return out


GROUP_KEYS = {"servers", "selection", "timeout", "attempts", "budget", "transport",
              "health_check", "canary", "tls", "method", "idle_timeout"}
TLS_KEYS = {"server_name", "ca_file", "pins", "insecure_skip_verify"}
HEALTH_KEYS = {"enabled", "interval", "timeout", "name", "type", "rise", "fall", "max_failures"}


def _groups(top: Reader, problems: list[ConfigProblem]) -> tuple[model.UpstreamGroup, ...]:
    section = top.data.get("upstreams") or {}
    if not isinstance(section, dict):
        top.fail("upstreams", f"expected a mapping of group names, found {kind_of(section)}")
        section = {}
    out = []
    for name, body in section.items():
        r = Reader(problems, top.at(f"upstreams.{name}"), body, GROUP_KEYS)
        transport = r.text("transport", "udp")
        if transport not in model.TRANSPORTS:
            r.fail("transport", f"{transport!r} is not one of: {', '.join(model.TRANSPORTS)}")
            transport = "udp"
        port = model.DEFAULT_PORTS[transport]
        servers = r.each("servers", parse_url if transport == "https"
                         else lambda v, port=port: parse_server(v, default_port=port))
        if not servers and r.ok and not r.has("servers"):
            if name == "system":
                servers = list(resolv_conf_servers())
            else:
                r.fail("servers", "at least one server is required")
        timeout = r.duration("timeout", 1.0, 0.001)
        attempts = r.integer("attempts", 3, 1, 20)
        budget = r.duration("budget", timeout * attempts + 1.0, 0.001)
        encrypted = transport in model.ENCRYPTED
        for key in ("tls", "idle_timeout"):
            if r.has(key) and not encrypted:
                r.fail(key, f"only used by transport tls or https, not {transport}")
        if r.has("method") and transport != "https":
            r.fail("method", f"only used by transport https, not {transport}")
        method = r.text("method", "post").lower()
        if method not in ("post", "get"):
            r.fail("method", f"{method!r} is not one of: post, get")
            method = "post"
        out.append(model.UpstreamGroup(
            name=str(name),
            servers=tuple(servers),
            selection=r.choice("selection", model.Selection.SEQUENTIAL, model.Selection,
                               [s.value for s in model.Selection]),
            timeout=timeout,
            attempts=attempts,
            budget=budget,
            transport=transport,
            health=_health(r, problems),
            canary=_canary(r, problems),
            tls=_tls(r, problems),
            method=method,
            idle_timeout=r.duration("idle_timeout", 10.0, 0.01),
        ))
    if not any(g.name == "system" for g in out):
        out.append(model.UpstreamGroup("system", resolv_conf_servers()))
    return tuple(out)


def _tls(group: Reader, problems: list[ConfigProblem]) -> model.TlsSettings:
    r = Reader(problems, group.at("tls"), group.data.get("tls"), TLS_KEYS)
    pins = r.each("pins", parse_pin)
    server_name = r.get("server_name", None, parse_host)
    skip = r.boolean("insecure_skip_verify", False)
    ca_file = r.text("ca_file", None)
    if skip and ca_file is not None:
        r.fail("ca_file", "not used when insecure_skip_verify is true (nothing is verified); "
                          "remove one of them")
    return model.TlsSettings(server_name, ca_file, tuple(pins), skip)


def _health(group: Reader, problems: list[ConfigProblem]) -> model.HealthCheck:
    r = Reader(problems, group.at("health_check"), group.data.get("health_check"), HEALTH_KEYS)
    d = model.HealthCheck()
    return model.HealthCheck(
        enabled=r.boolean("enabled", d.enabled),
        interval=r.duration("interval", d.interval, 0.05),
        timeout=r.duration("timeout", d.timeout, 0.001),
        name=r.get("name", d.name, parse_name),
        qtype=r.get("type", d.qtype, parse_qtype),
        rise=r.integer("rise", d.rise, 1, 100),
        fall=r.integer("fall", d.fall, 1, 100),
        max_failures=r.integer("max_failures", d.max_failures, 1, 1000),
    )


def _canary(group: Reader, problems: list[ConfigProblem]) -> model.Canary | None:
    if not group.has("canary"):
        return None
    r = Reader(problems, group.at("canary"), group.data["canary"],
               {"name", "type", "expect", "policy"})
    name = r.get("name", "", parse_name)
    if not name and r.ok:
        r.fail("name", "required")
    expect = r.text("expect", "allowed")
    if expect != "allowed":
        r.fail("expect", f"{expect!r} is not one of: allowed")
    return model.Canary(name, r.get("type", 1, parse_qtype), "allowed", r.text("policy", None))


RULE_KEYS = {"match", "name", "upstream", "action", "policy", "qtypes", "clients", "records",
             "hosts_file", "ttl"}


def _rules(top: Reader, problems: list[ConfigProblem]) -> tuple[model.Rule, ...]:
    out = []
    for index, (path, item) in enumerate(top.items("zones")):
        r = Reader(problems, path, item, RULE_KEYS)
        if not r.ok:
            continue
        match = r.get("match", "", parse_name)
        if not match:
            r.fail("match", "required (a name suffix, or \".\" for everything)")
        records = tuple(_records(r, problems))
        hosts_file = r.text("hosts_file", None)
        upstream = r.text("upstream", None)
        action_text = r.text("action", None)
        if action_text is not None:
            if action_text not in ("refuse", "forward", "local"):
                r.fail("action", f"{action_text!r} is not one of: forward, refuse, local")
            action = model.RuleAction(action_text) if action_text in ("refuse", "forward",
                                                                      "local") else None
        elif records or hosts_file:
            action = model.RuleAction.LOCAL
        elif upstream:
            action = model.RuleAction.FORWARD
        else:
            action = None
            r.fail("", "a rule needs `upstream: GROUP`, `action: refuse`, "
                       "or `records`/`hosts_file`")
        if action is model.RuleAction.FORWARD and not upstream:
            r.fail("upstream", "required when action is forward")
        if action is model.RuleAction.LOCAL and not (records or hosts_file):
            r.fail("records", "a local rule needs records or a hosts_file")
        if upstream and action in (model.RuleAction.REFUSE, model.RuleAction.LOCAL):
            r.fail("upstream", f"not used by action {action.value}; remove one of them")
        qtypes = None
        if r.has("qtypes"):
            qtypes = frozenset(r.each("qtypes", parse_qtype))
        clients = None
        if r.has("clients"):
            clients = tuple(_network_list(r.items("clients"), problems, model.DEFAULT_ACL))
        if action is None:
            continue
        out.append(model.Rule(
            index=index,
            name=r.text("name", match or "?"),
            match=match,
            action=action,
            upstream=upstream,
            policy=r.text("policy", None),
            qtypes=qtypes,
            clients=clients,
            records=records,
            hosts_file=hosts_file,
            ttl=r.integer("ttl", 300, 0, 604_800),
        ))
    if not top.has("zones"):
        top.fail("zones",
                 "at least one zone rule is required (e.g. match: \".\", upstream: system)")
    return tuple(out)


RECORD_TYPES = ("A", "AAAA", "CNAME", "TXT")


def parse_record(name: Any, rtype: Any, value: Any, ttl: int) -> model.LocalRecord:
    """Validates one local record. Raises ValueError naming what is wrong."""
    owner = parse_name(name, wildcard=True)
    t = as_text(rtype).upper()
    if t not in RECORD_TYPES:
        raise ValueError(f"type {rtype!r} is not one of: {', '.join(RECORD_TYPES)}")
    text = as_text(value).strip()
    if t == "A":
        if not isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address):
            raise ValueError(f"{text!r} is not an IPv4 address")
    elif t == "AAAA":
        try:
            if not isinstance(ipaddress.ip_address(text), ipaddress.IPv6Address):
                raise ValueError
        except ValueError:
            raise ValueError(f"{text!r} is not an IPv6 address") from None
    elif t == "CNAME":
        text = parse_name(text)
    elif len(text.encode("utf-8")) > 255:
        raise ValueError("TXT values longer than 255 bytes are not supported")
    return model.LocalRecord(owner, wire.qtype_from_text(t), text, ttl)


def _records(rule: Reader, problems: list[ConfigProblem]) -> list[model.LocalRecord]:
    out = []
    for path, item in rule.items("records"):
        r = Reader(problems, path, item, {"name", "type", "value", "ttl"})
        if not r.ok:
            continue
        missing = [k for k in ("name", "type", "value") if not r.has(k)]
        for k in missing:
            r.fail(k, "required")
        if missing:
            continue
        try:
            out.append(parse_record(r.data["name"], r.data["type"], r.data["value"],
                                    r.integer("ttl", 300, 0, 604_800)))
        except ValueError as e:
            problems.append(ConfigProblem(path, str(e)))
    return out


POLICY_KEYS = {"protected", "allowed", "on_violation", "rewrite", "fallback", "then", "mode",
               "ttl"}


def _policies(top: Reader, problems: list[ConfigProblem]) -> tuple[model.Policy, ...]:
    section = top.data.get("policies") or {}
    if not isinstance(section, dict):
        top.fail("policies", f"expected a mapping of policy names, found {kind_of(section)}")
        return ()
    out = []
    actions = [v.value for v in model.Violation]
    for name, body in section.items():
        r = Reader(problems, top.at(f"policies.{name}"), body, POLICY_KEYS)
        protected: tuple[str, ...] = model.DEFAULT_PROTECTED
        if r.has("protected") and r.data["protected"] != "default":
            names: list[str] = []
            for path, item in r.items("protected"):
                if item == "default":
                    names.extend(model.DEFAULT_PROTECTED)
                    continue
                try:
                    names.append(parse_name(item))
                except ValueError as e:
                    problems.append(ConfigProblem(path, str(e)))
            protected = tuple(names)
        allowed: tuple[str, ...] = model.DEFAULT_ALLOWED
        if r.has("allowed") and r.data["allowed"] != "default":
            allowed = tuple(str(n) for n in _network_list(r.items("allowed"), problems,
                                                          model.DEFAULT_ALLOWED))
        on_violation = r.choice("on_violation", model.Violation.SERVFAIL, model.Violation, actions)
        then = r.choice("then", model.Violation.SERVFAIL, model.Violation, actions)
        if then in (model.Violation.FALLBACK, model.Violation.REWRITE_CNAME):
            r.fail("then", f"{then.value} cannot follow a fallback")
        out.append(model.Policy(
            name=str(name),
            protected=protected,
            allowed=allowed,
            on_violation=on_violation,
            rewrite=_rewrites(r, problems),
            fallback=r.text("fallback", None),
            then=then,
            mode=r.choice("mode", model.PolicyMode.ENFORCE, model.PolicyMode,
                          [m.value for m in model.PolicyMode]),
            ttl=r.integer("ttl", 30, 0, 86_400),
        ))
    return tuple(out)


def _rewrites(policy: Reader, problems: list[ConfigProblem]) -> tuple[
        tuple[str, model.RewriteTarget], ...]:
    if not policy.has("rewrite"):
        return ()
    section = policy.data["rewrite"]
    if not isinstance(section, dict):
        policy.fail("rewrite",
                    f"expected a mapping of names to addresses, found {kind_of(section)}")
        return ()
    out = []
    for key, body in section.items():
        path = policy.at(f"rewrite.{key}")
        try:
            owner = parse_name(key, wildcard=True)
        except ValueError as e:
            problems.append(ConfigProblem(path, str(e)))
            continue
        r = Reader(problems, path, body, {"A", "AAAA", "CNAME"})
        a, aaaa = [], []
        for ipath, v in r.items("A"):
            try:
                a.append(str(ipaddress.IPv4Address(as_text(v))))
            except ValueError:
                problems.append(ConfigProblem(ipath, f"{v!r} is not an IPv4 address"))
        for ipath, v in r.items("AAAA"):
            try:
                aaaa.append(str(ipaddress.IPv6Address(as_text(v))))
            except ValueError:
                problems.append(ConfigProblem(ipath, f"{v!r} is not an IPv6 address"))
        cname = r.get("CNAME", None, lambda v: parse_name(v, wildcard=True))
        if r.ok and not (a or aaaa or cname):
            r.fail("", "give A and/or AAAA addresses, or a CNAME target")
        out.append((owner, model.RewriteTarget(tuple(a), tuple(aaaa), cname)))
    return tuple(out)


def _cache(top: Reader, problems: list[ConfigProblem]) -> model.CacheSettings:
    keys = {f for f in model.CacheSettings.__dataclass_fields__}
    r = Reader(problems, top.at("cache"), top.data.get("cache"), keys)
    d = model.CacheSettings()
    return model.CacheSettings(
        enabled=r.boolean("enabled", d.enabled),
        max_entries=r.integer("max_entries", d.max_entries, 1, 100_000_000),
        min_ttl=r.integer("min_ttl", d.min_ttl, 0, 604_800),
        max_ttl=r.integer("max_ttl", d.max_ttl, 0, 604_800),
        max_negative_ttl=r.integer("max_negative_ttl", d.max_negative_ttl, 0, 604_800),
        servfail_ttl=r.integer("servfail_ttl", d.servfail_ttl, 0, 300),
        serve_stale=r.boolean("serve_stale", d.serve_stale),
        max_stale=r.integer("max_stale", d.max_stale, 0, 30 * 86_400),
        stale_client_timeout=r.duration("stale_client_timeout", d.stale_client_timeout, 0.0),
        stale_ttl=r.integer("stale_ttl", d.stale_ttl, 0, 86_400),
        prefetch=r.boolean("prefetch", d.prefetch),
    )


def _rate_limit(top: Reader, problems: list[ConfigProblem]) -> model.RateLimit:
    keys = {f for f in model.RateLimit.__dataclass_fields__}
    r = Reader(problems, top.at("rate_limit"), top.data.get("rate_limit"), keys)
    qps = r.number("qps", 0.0, 0.0)
    action = r.text("action", "drop")
    if action not in ("drop", "refuse"):
        r.fail("action", f"{action!r} is not one of: drop, refuse")
    return model.RateLimit(
        qps=qps,
        burst=r.integer("burst", max(1, int(qps)), 1, 1_000_000),
        action=action if action in ("drop", "refuse") else "drop",
        ipv4_prefix=r.integer("ipv4_prefix", 32, 8, 32),
        ipv6_prefix=r.integer("ipv6_prefix", 56, 16, 128),
    )


def _limits(top: Reader, problems: list[ConfigProblem]) -> model.Limits:
    keys = {f for f in model.Limits.__dataclass_fields__}
    r = Reader(problems, top.at("limits"), top.data.get("limits"), keys)
    d = model.Limits()
    return model.Limits(
        max_inflight=r.integer("max_inflight", d.max_inflight, 1, 1_000_000),
        tcp_max_connections=r.integer("tcp_max_connections", d.tcp_max_connections, 1, 100_000),
        tcp_idle_timeout=r.duration("tcp_idle_timeout", d.tcp_idle_timeout, 0.01),
        tcp_max_queries_per_connection=r.integer(
            "tcp_max_queries_per_connection", d.tcp_max_queries_per_connection, 1, 65_535),
        udp_buffer=r.integer("udp_buffer", d.udp_buffer, 65_536, 256 * 1024 * 1024),
    )


def _metrics(top: Reader, problems: list[ConfigProblem]) -> model.MetricsSettings:
    r = Reader(problems, top.at("metrics"), top.data.get("metrics"), {"enabled", "listen"})
    listen = r.text("listen", model.MetricsSettings().listen)
    try:
        parse_server(listen, any_port=True)
    except ValueError as e:
        r.fail("listen", str(e))
    return model.MetricsSettings(r.boolean("enabled", True), listen)


def _querylog(top: Reader, problems: list[ConfigProblem]) -> model.QueryLogSettings:
    keys = {f for f in model.QueryLogSettings.__dataclass_fields__}
    r = Reader(problems, top.at("querylog"), top.data.get("querylog"), keys)
    return model.QueryLogSettings(
        enabled=r.boolean("enabled", False),
        path=r.text("path", "stdout"),
        sample=r.number("sample", 1.0, 0.0, 1.0),
        queue_size=r.integer("queue_size", 10_000, 1, 10_000_000),
    )


def _hooks(top: Reader, problems: list[ConfigProblem]) -> tuple[model.HookSettings, ...]:
    out = []
    for path, item in top.items("hooks"):
        r = Reader(problems, path, item, {"path", "timeout", "options"})
        hook_path = r.text("path", "")
        if not hook_path:
            if r.ok:
                r.fail("path", "required")
            continue
        options = r.data.get("options") or {}
        if not isinstance(options, dict):
            r.fail("options", f"expected a mapping, found {kind_of(options)}")
            options = {}
        out.append(model.HookSettings(hook_path, r.duration("timeout", 0.05, 0.001),
                                      tuple(options.items())))
    return tuple(out)
