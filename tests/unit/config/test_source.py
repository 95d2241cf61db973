"""Where problems are: every error carries the file, line and column of the offending node,
errors come in file order, and a key given twice in one mapping is an error naming both
lines (YAML would silently keep the last one)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from forwarder import cli, config
from forwarder.config import source
from forwarder.errors import ConfigError
from forwarder.stages import local

BROKEN = """\
listen:
  - {address: 127.0.0.1, port: 70000}
upstreams:
  corp:
    servers: [192.0.2.53]
  r53:
    servers: [not-an-ip]
  corp:
    servers: [192.0.2.54]
    timeout: -1
zones:
  - match: .
    upstreem: corp
zones:
  - {match: ., upstream: nowhere}
  - match: internal.example
    record:
      - {name: a.internal.example, type: A, value: 10.0.0.1}
"""


def rendered(text: str, name: str = "f.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.load_text(textwrap.dedent(text), name)
    return info.value.render().splitlines()


def test_every_error_has_file_line_and_column_in_file_order() -> None:
    assert rendered(BROKEN, "broken.yaml") == [
        "broken.yaml:2:32: listen[0].port: 70000 is above the maximum 65535",
        "broken.yaml:7:15: upstreams.r53.servers[0]: 'not-an-ip' is not an IP address "
        "(ip, ip:port or [v6]:port)",
        "broken.yaml:8:3: upstreams.corp: duplicate key: 'corp' is also defined at line 4, "
        "column 3; YAML would keep only the last one, so merge the two or remove one",
        "broken.yaml:10:14: upstreams.corp.timeout: -1.0 is below the minimum 0.001",
        "broken.yaml:14:1: zones: duplicate key: 'zones' is also defined at line 11, "
        "column 1; YAML would keep only the last one, so merge the two or remove one",
        "broken.yaml:15:26: zones[0].upstream: unknown upstream group 'nowhere' "
        "(defined: corp, r53, system)",
        "broken.yaml:16:5: zones[1]: a rule needs `upstream: GROUP`, `action: refuse`, "
        "or `records`/`hosts_file`",
        "broken.yaml:17:5: zones[1].record: unknown key (did you mean 'records'?); expected "
        "one of: action, clients, hosts_file, match, name, policy, qtypes, records, ttl, "
        "upstream",
    ]


def test_check_config_prints_them_and_counts(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    assert cli.main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"{path}:2:32: listen[0].port: 70000 is above the maximum 65535"
    assert err[-1] == f"{path}: 8 problem(s) found"


def test_duplicate_keys_in_a_flow_mapping_and_a_list_item() -> None:
    assert rendered("""\
        zones:
          - {match: ., match: example, action: refuse}
        cache: {max_ttl: 60, max_ttl: 70}
    """) == [
        "f.yaml:2:16: zones[0].match: duplicate key: 'match' is also defined at line 2, "
        "column 6; YAML would keep only the last one, so merge the two or remove one",
        "f.yaml:3:22: cache.max_ttl: duplicate key: 'max_ttl' is also defined at line 3, "
        "column 9; YAML would keep only the last one, so merge the two or remove one",
    ]


def test_a_missing_key_points_at_its_mapping_and_a_missing_section_at_the_top() -> None:
    assert rendered("""\
        # a comment first
        listen: ["127.0.0.1:5300"]
        upstreams:
          corp: {timeout: 1s}
    """) == [
        "f.yaml:2:1: zones: at least one zone rule is required "
        "(e.g. match: \".\", upstream: system)",
        "f.yaml:4:9: upstreams.corp.servers: at least one server is required",
    ]


def test_an_unknown_key_points_at_the_key_a_bad_value_at_the_value() -> None:
    assert rendered("""\
        zones: [{match: ., action: refuse}]
        limits:
          tcp_idle_timeout:   forever
          tcp_idel_timeout: 5s
    """) == [
        "f.yaml:3:23: limits.tcp_idle_timeout: expected a duration such as 1.5, 50ms, 2s or "
        "5m, found 'forever'",
        "f.yaml:4:3: limits.tcp_idel_timeout: unknown key (did you mean 'tcp_idle_timeout'?); "
        "expected one of: max_inflight, tcp_frame_timeout, tcp_idle_timeout, "
        "tcp_max_connections, tcp_max_connections_per_client, tcp_max_queries_per_connection, "
        "udp_buffer",
    ]


def test_invalid_yaml_has_its_position() -> None:
    assert rendered("zones:\n  - match: .\n    action: refuse\n  bad indent\n") == [
        "f.yaml:5:1: invalid YAML: could not find expected ':' (while scanning a simple key "
        "at line 4, column 3)"]


def test_merge_keys_are_not_duplicates_and_errors_in_merged_blocks_are_located() -> None:
    cfg = config.load_text(textwrap.dedent("""\
        upstreams:
          corp: &base {servers: [192.0.2.53], timeout: 2s}
          corp2:
            <<: *base
            timeout: 3s
        zones: [{match: ., upstream: corp2}]
    """))
    group = cfg.group_named("corp2")
    assert group is not None and group.timeout == 3.0 and group.servers[0].host == "192.0.2.53"
    assert rendered("""\
        upstreams:
          corp: &base {servers: [192.0.2.53], attempts: 0}
          corp2:
            <<: *base
        zones: [{match: ., upstream: corp2}]
    """) == [
        "f.yaml:2:49: upstreams.corp.attempts: 0 is below the minimum 1",
        "f.yaml:2:49: upstreams.corp2.attempts: 0 is below the minimum 1",
    ]


def test_errors_found_after_loading_are_located_too(tmp_path: Path) -> None:
    """A hosts file that cannot be read is found when the local zones are built: its
    error still points at the `hosts_file` line."""
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.0.1 a.lan\nnot-an-address b.lan\n")
    path = tmp_path / "f.yaml"
    path.write_text(f"zones:\n  - match: lan\n    hosts_file: {hosts}\n")
    cfg = config.load(str(path))
    with pytest.raises(ConfigError) as info:
        local.zones(cfg)
    assert info.value.render().startswith(f"{path}:3:17: zones[0].hosts_file: ")


def test_a_self_referencing_alias_does_not_loop() -> None:
    data, positions, problems = source.read("a: &x [1, *x]\n")
    assert data["a"][1] is data["a"] and problems == []
    assert positions.of("a[0]") == (1, 8)
    assert positions.of("a[1][1][0]") == positions.of("a[1]") == (1, 4)
