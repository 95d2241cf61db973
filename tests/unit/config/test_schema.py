"""The schema is stated once, in the model: the keys the parser accepts, its defaults and
its bounds are the model's field statements, and so are the settings only a start applies.
Networks are written as networks: host bits set is an error that names the network meant."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from forwarder import config
from forwarder.config import model, schema
from forwarder.errors import ConfigError

BASE = "zones: [{match: ., action: refuse}]\n"

# every section read from the schema alone, with the YAML that reaches it
PLAIN = {
    model.CacheSettings: "cache",
    model.RateLimit: "rate_limit",
    model.Limits: "limits",
    model.MetricsSettings: "metrics",
    model.QueryLogSettings: "querylog",
    model.HealthCheck: "upstreams: {g: {servers: [192.0.2.1], health_check: ",
}


def load(text: str) -> model.Config:
    return config.load_text(BASE + text, "f.yaml")


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return info.value.lines()


def section_yaml(cls: type, body: str) -> str:
    where = PLAIN[cls]
    if where.endswith(": "):
        return where + body + "}}\n"
    return f"{where}: {body}\n"


def section_of(cfg: model.Config, cls: type) -> Any:
    if cls is model.HealthCheck:
        group = cfg.group_named("g")
        assert group is not None
        return group.health
    return getattr(cfg, PLAIN[cls])


@pytest.mark.parametrize("cls", PLAIN, ids=lambda c: c.__name__)
def test_an_empty_section_is_the_models_defaults(cls: type) -> None:
    assert section_of(load(section_yaml(cls, "{}")), cls) == cls()


def bounded_fields() -> list[tuple[type, dataclasses.Field[Any]]]:
    return [(cls, f) for cls in PLAIN for f in schema.fields_of(cls)
            if f.metadata["lo"] is not None or f.metadata["hi"] is not None]


@pytest.mark.parametrize(("cls", "field"), bounded_fields(),
                         ids=lambda x: getattr(x, "__name__", None) or getattr(x, "name", ""))
def test_every_bound_in_the_model_is_enforced(cls: type, field: dataclasses.Field[Any]) -> None:
    lo, hi = field.metadata["lo"], field.metadata["hi"]
    value = hi + 1 if hi is not None else lo - 1
    key = schema.key_of(field)
    found = errors(section_yaml(cls, f"{{{key}: {value}}}"))
    word = "above the maximum" if hi is not None else "below the minimum"
    assert len(found) == 1 and f".{key}: " in found[0], found
    assert f"is {word} {hi if hi is not None else lo}" in found[0]


def test_a_field_added_to_the_model_is_read_without_touching_the_parser() -> None:
    """What "stated once" buys: a section class is all the parser needs."""

    @dataclasses.dataclass(frozen=True)
    class Probe:
        interval: float = model.setting(2.0, lo=0.5, kind="duration")
        mode: str = model.setting("calm", choices=("calm", "eager"))
        name: str = model.setting("example.com", kind="name")

    problems: list[Any] = []
    from forwarder.config.values import Reader

    r = Reader(problems, "probe", {"interval": "750ms", "mode": "EAGER"}, schema.keys(Probe))
    assert schema.section(r, Probe) == Probe(0.75, "eager", "example.com")
    r = Reader(problems, "probe", {"interval": "1ms", "mood": 1}, schema.keys(Probe))
    schema.section(r, Probe)
    assert [str(p) for p in problems] == [
        "probe.mood: unknown key (did you mean 'mode'?); expected one of: interval, mode, name",
        "probe.interval: 0.001 is below the minimum 0.5",
    ]


def test_the_settings_only_a_start_applies() -> None:
    assert set(schema.start_only(load(""))) == {
        "listen", "user", "group", "allow_root", "pid_file", "workers", "metrics.enabled",
        "metrics.listen", "limits.tcp_max_connections", "limits.tcp_idle_timeout",
        "limits.tcp_max_queries_per_connection", "limits.udp_buffer",
        "limits.tcp_frame_timeout", "limits.tcp_max_connections_per_client"}


def test_keep_start_only_takes_the_running_values_and_nothing_else() -> None:
    running = load("listen: ['127.0.0.1:5300']\nmetrics: {listen: '127.0.0.1:9100'}\n")
    new = load("listen: ['127.0.0.1:5301']\nmetrics: {listen: '127.0.0.1:9101'}\n"
               "limits: {max_inflight: 7, tcp_idle_timeout: 3s}\n")
    kept = schema.keep_start_only(new, running)
    assert kept.listen == running.listen and kept.metrics == running.metrics
    assert kept.limits.max_inflight == 7  # a reload applies it
    assert kept.limits.tcp_idle_timeout == running.limits.tcp_idle_timeout


@pytest.mark.parametrize(("text", "expected"), [
    (BASE + "acl: {allow: [192.168.1.1/24]}",
     "f.yaml:2:15: acl.allow[0]: '192.168.1.1/24' has host bits set: write 192.168.1.0/24 "
     "for the network, or 192.168.1.1/32 for the one address"),
    ("upstreams: {g: {servers: [192.0.2.1]}}\n"
     "zones: [{match: x, upstream: g, clients: [10.1.2.3/16]}]",
     "f.yaml:2:43: zones[0].clients[0]: '10.1.2.3/16' has host bits set: write 10.1.0.0/16 "
     "for the network, or 10.1.2.3/32 for the one address"),
    (BASE + "policies: {p: {allowed: [default, 'fd00::1/8']}}",
     "f.yaml:2:35: policies.p.allowed[1]: 'fd00::1/8' has host bits set: write fd00::/8 for "
     "the network, or fd00::1/128 for the one address"),
])
def test_host_bits_set_is_an_error_naming_the_network(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load_text(text, "f.yaml")
    assert info.value.lines() == [expected]


def test_a_network_or_a_single_address_is_accepted() -> None:
    cfg = load("acl: {allow: [192.168.1.0/24, 10.1.2.3, 'fd00::/8']}")
    assert [str(n) for n in cfg.acl] == ["192.168.1.0/24", "10.1.2.3/32", "fd00::/8"]
