"""Configuration parsing and validation: good files build the model, bad ones list every
problem with its field path and reason."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest

from forwarder import config
from forwarder.config import model
from forwarder.errors import ConfigError

GOOD = """
listen:
  - {address: 127.0.0.1, port: 5353}
  - {address: "::1", port: 5353, protocols: [udp]}
  - "127.0.0.2:5300"
upstreams:
  r53-inbound:
    servers: [10.10.0.10, "10.10.1.10:5353", "[fd00::53]:53"]
    selection: round_robin
    timeout: 500ms
    attempts: 4
  corp:
    servers: [192.168.1.53]
zones:
  - match: amazonaws.com
    upstream: r53-inbound
    policy: private-only
  - match: internal.example.com
    records:
      - {name: internal.example.com, type: A, value: 10.0.100.21}
  - match: Example.NET.
    upstream: corp
    qtypes: [AAAA, https]
    clients: [10.1.0.0/16]
  - match: .
    upstream: corp
policies:
  private-only:
    on_violation: rewrite
    rewrite:
      s3.ap-northeast-1.amazonaws.com: {A: [10.0.1.15, 10.0.2.15]}
      "*.s3.ap-northeast-1.amazonaws.com": {A: [10.0.1.15]}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.load_text(textwrap.dedent(text), "test.yaml")
    return [str(p) for p in info.value.problems]


def test_good_config_builds_model() -> None:
    cfg = config.load_text(GOOD, "good.yaml")
    assert cfg.listen[0] == model.Listener("127.0.0.1", 5353, ("udp", "tcp"))
    assert cfg.listen[1].protocols == ("udp",)
    assert cfg.listen[2] == model.Listener("127.0.0.2", 5300)
    r53 = cfg.group_named("r53-inbound")
    assert r53 is not None
    assert [s.label for s in r53.servers] == ["10.10.0.10:53", "10.10.1.10:5353", "[fd00::53]:53"]
    assert r53.selection is model.Selection.ROUND_ROBIN
    assert r53.timeout == 0.5 and r53.attempts == 4
    rules = cfg.rules
    assert rules[1].action is model.RuleAction.LOCAL
    assert rules[2].match == "example.net" and rules[2].qtypes == frozenset({28, 65})
    assert rules[2].clients == (ipaddress.ip_network("10.1.0.0/16"),)
    assert rules[3].match == "."
    policy = cfg.policy_named("private-only")
    assert policy is not None and policy.on_violation is model.Violation.REWRITE
    assert policy.protected == model.DEFAULT_PROTECTED
    assert dict(policy.rewrite)["*.s3.ap-northeast-1.amazonaws.com"].a == ("10.0.1.15",)


def test_default_acl_is_loopback_and_private() -> None:
    cfg = config.load_text("zones: [{match: ., action: refuse}]")
    assert [str(n) for n in cfg.acl] == list(model.DEFAULT_ACL)


def test_unknown_group_named_with_index() -> None:
    found = problems("""
        upstreams: {corp: {servers: [192.0.2.53]}}
        zones:
          - {match: ., upstream: corp}
          - {match: a.example, upstream: corp}
          - {match: amazonaws.com, upstream: r53}
    """)
    assert found == ["zones[2].upstream: unknown upstream group 'r53' (defined: corp, system)"]


def test_every_problem_is_listed() -> None:
    found = problems("""
        listen: [{address: 127.0.0.1, port: 70000}]
        upstreams:
          corp: {servers: [not-an-ip], selection: fastestest, timeout: -1}
        zones:
          - {match: ., upstreem: corp}
        polices: {}
    """)
    text = "\n".join(found)
    assert "listen[0].port: 70000 is above the maximum 65535" in text
    assert "upstreams.corp.servers[0]: 'not-an-ip' is not an IP address" in text
    assert "upstreams.corp.selection: 'fastestest' is not one of" in text
    assert "upstreams.corp.timeout" in text
    assert "zones[0].upstreem: unknown key (did you mean 'upstream'?)" in text
    assert "polices: unknown key (did you mean 'policies'?)" in text
    assert len(found) >= 6


@pytest.mark.parametrize(("snippet", "expected"), [
    ("zones: [{match: ., upstream: corp, policy: nope}]\nupstreams: {corp: {servers: [192.0.2.1]}}",
     "zones[0].policy: unknown policy 'nope'"),
    ("zones: [{match: ., action: refuse}, {match: ., action: refuse}]",
     "zones[1].match: duplicate rule for '.'"),
    ("zones: [{match: x, records: [{name: x, type: A, value: 2001:db8::1}]}]",
     "zones[0].records[0]: '2001:db8::1' is not an IPv4 address"),
    ("zones: [{match: x, records: [{name: x, type: MX, value: y}]}]",
     "zones[0].records[0]: type 'MX' is not one of: A, AAAA, CNAME, TXT"),
    ("zones: [{match: ., action: refuse}]\npolicies: {p: {on_violation: rewrite}}",
     "policies.p.rewrite: on_violation rewrite needs addresses under rewrite"),
    ("zones: [{match: ., action: refuse}]\npolicies: {p: {on_violation: fallback}}",
     "policies.p.fallback: required when on_violation is fallback"),
    ("zones: [{match: ., action: refuse}]\npolicies: {p: {on_violation: rewrite, rewrite: "
     "{s3.amazonaws.com: {A: [10.0.0.1, 52.219.1.1]}}}}",
     "policies.p.rewrite.s3.amazonaws.com.A[1]: 52.219.1.1 is outside the allowed networks"),
    ("zones: [{match: ., action: refuse}]\npolicies: {p: {allowed: [10.0.0.0/33]}}",
     "policies.p.allowed[0]: '10.0.0.0/33' is not an IP network"),
    ("zones: [{match: .}]", "zones[0]: a rule needs `upstream: GROUP`"),
    ("zones: []\nlisten: []", "listen: at least one address is required"),
    ("zones: [{match: ., action: refuse}]\nacl: {allow: [0.0.0.0/0]}",
     "acl.allow: 0.0.0.0/0 makes this an open resolver"),
    ("zones: [{match: ., action: refuse}]\nacl: {allow: [everyone]}",
     "acl.allow[0]: 'everyone' is not an IP network"),
    ("zones: [{match: ., action: refuse}]\ncache: {max_entries: 0}",
     "cache.max_entries: 0 is below the minimum 1"),
    ("zones: [{match: ., action: refuse}]\nhooks: [{timeout: 5ms}]", "hooks[0].path: required"),
    ("listen: [{address: localhost}]\nzones: [{match: ., action: refuse}]",
     "listen[0].address: 'localhost' is not an IP address"),
    ("zones: [{match: ., action: refuse}]\nworkers: many",
     "workers: expected a whole number, found a string 'many'"),
    ("zones:\n  - match: .\n    action: refuse\n  bad indent", "invalid YAML"),
    ("- just\n- a list", "expected a mapping, found a list"),
    ("zones: [{match: ., action: refuse}]\npolicies: {none: {}}",
     "policies.none: 'none' is the word for no policy"),
    ("zones: [{match: ., action: refuse}]\npolicies: {p: {unprotected: ['a**.b']}}",
     "policies.p.unprotected[0]: 'a**.b': write one * for any run of characters"),
    ("zones: [{match: ., action: refuse}]\nprotection: {policy: nope}",
     "protection.policy: unknown policy 'nope'"),
    ("zones: [{match: ., action: refuse, policy: p}]\npolicies: {p: {}}",
     "zones[0].policy: a refuse rule gives no answer for a policy to judge"),
])
def test_problem_messages(snippet: str, expected: str) -> None:
    assert any(expected in p for p in problems(snippet)), problems(snippet)


def test_system_group_from_resolv_conf(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# comment\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nsearch x\n")
    monkeypatch.setenv("FORWARDER_RESOLV_CONF", str(resolv))
    cfg = config.load_text("zones: [{match: ., upstream: system}]")
    system = cfg.group_named("system")
    assert system is not None
    assert [s.label for s in system.servers] == ["127.0.0.53:53", "[fe80::1]:53"]


def test_system_group_without_nameservers_is_an_error(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search example\n")
    monkeypatch.setenv("FORWARDER_RESOLV_CONF", str(resolv))
    assert problems("zones: [{match: ., upstream: system}]") == [
        "zones[0].upstream: upstream group 'system' has no servers "
        "(/etc/resolv.conf lists no nameserver)"]


def test_missing_file_names_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as info:
        config.load(missing)
    assert info.value.render().startswith(f"{missing}: cannot read the file")


def test_a_zones_ttl_applies_to_its_records_without_their_own() -> None:
    cfg = config.load_text(textwrap.dedent("""\
        zones:
          - match: internal.example
            ttl: 120
            records:
              - {name: a.internal.example, type: A, value: 10.0.0.1}
              - {name: b.internal.example, type: A, value: 10.0.0.2, ttl: 60}
          - match: other.example
            records: [{name: other.example, type: A, value: 10.0.0.3}]
    """))
    assert [r.ttl for r in cfg.rules[0].records] == [120, 60]
    assert cfg.rules[1].records[0].ttl == 300


def test_model_is_immutable() -> None:
    cfg = config.load_text("zones: [{match: ., action: refuse}]")
    with pytest.raises(AttributeError):
        cfg.rules[0].match = "x"  # type: ignore[misc]


def test_open_resolver_needs_opting_in() -> None:
    cfg = config.load_text("zones: [{match: ., action: refuse}]\n"
                           "acl: {allow: ['::/0', 0.0.0.0/0], open_resolver: true}")
    assert [n.prefixlen for n in cfg.acl] == [0, 0]


def test_reload_watch_is_opt_in_and_checked() -> None:
    cfg = config.load_text("zones: [{match: ., action: refuse}]\n")
    assert cfg.reload.watch is False
    cfg = config.load_text("zones: [{match: ., action: refuse}]\n"
                           "reload: {watch: true, interval: 500ms}\n")
    assert (cfg.reload.watch, cfg.reload.interval) == (True, 0.5)
    found = problems("zones: [{match: ., action: refuse}]\n"
                     "reload: {watch: sometimes, interval: 0, every: 1}\n")
    assert any(p.startswith("reload.watch: ") for p in found), found
    assert any(p.startswith("reload.interval: ") for p in found), found
    assert any("reload" in p and "every" in p for p in found), found


def test_policy_none_is_the_opt_out_and_lists_are_extendable() -> None:
    """`policy: none` sets no policy and marks the rule opted out; `unprotected` takes
    `default` plus patterns, or [] for none; a local rule may have a policy."""
    cfg = config.load_text(textwrap.dedent("""
        upstreams: {corp: {servers: [192.0.2.1]}}
        zones:
          - {match: ., upstream: corp, policy: none}
          - {match: x.example, records: [{name: x.example, type: A, value: 10.0.0.1}],
             policy: p}
        policies:
          p: {unprotected: [default, "*.Example-Svc.amazonaws.com."]}
          q: {unprotected: []}
        protection: {policy: q}
        """), "test.yaml")
    dot, local = cfg.rules
    assert (dot.policy, dot.opt_out) == (None, True)
    assert (local.policy, local.opt_out) == ("p", False)
    p, q = cfg.policies
    assert p.unprotected == (*model.DEFAULT_UNPROTECTED, "*.example-svc.amazonaws.com")
    assert q.unprotected == () and cfg.protection.policy == "q"
