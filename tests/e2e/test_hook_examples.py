"""The hook examples in examples/hooks/, each run in a real forwarder with the options its
docstring documents (so the documented configuration is known to load)."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.rcode
import pytest
import yaml

from forwarder import config as config_mod
from forwarder.errors import ConfigError
from forwarder.hooks import runner
from forwarder.server import Server
from tests.conftest import forwarder_config, logged_queries, query, running
from tests.fakes import FakeUpstream, answers

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "hooks"


def example(name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": str(EXAMPLES / f"{name}.py")}
    if options is not None:
        entry["options"] = options
    return entry


def ede_of(msg: dns.message.Message) -> list[tuple[int, str]]:
    return [(o.code, o.text or "") for o in msg.options if o.otype == dns.edns.EDE]


async def ask(srv: Server, transport: str, name: str, qtype: str = "A") -> dns.message.Message:
    return await query(srv, transport, name, qtype, use_edns=0)


def documented_config(path: Path) -> dict[str, Any]:
    """The YAML block (the indented lines from `hooks:` on) in an example's docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "hooks:")
    block = []
    for line in lines[start:]:
        if line and not line.startswith("    "):
            break
        block.append(line)
    data = yaml.safe_load(textwrap.dedent("\n".join(block)))
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.stem)
def test_each_example_loads_with_its_documented_options(path: Path, tmp_path: Path) -> None:
    documented = documented_config(path)
    (entry,) = documented.pop("hooks")
    assert entry["path"] == f"hooks/{path.name}"
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / path.name).write_text(path.read_text())
    cfg = forwarder_config({"up": ["127.0.0.1:5399"]}, hooks=[entry], **documented)
    loaded = config_mod.from_data(cfg, str(tmp_path / "forwarder.yaml"))
    assert runner.check(loaded) == 1


# --- (1) steer a tenant's subnet to another resolver group -------------------------------------


async def test_tenant_steering(upstream: FakeUpstream, upstream2: FakeUpstream,
                               transport: str) -> None:
    """Clients in the tenant's networks ask the tenant's group for names under its zones;
    other names still go where the zone rules say."""
    upstream2.handler = answers({("s3.ap-northeast-1.amazonaws.com", "A"): ["A 10.20.1.15"]})
    steering = example("tenant_steering", {"tenants": [
        {"networks": ["192.0.2.0/24"], "group": "nowhere-near"},
        {"networks": ["127.0.0.0/8"], "group": "tenant", "zones": ["amazonaws.com"]},
    ]})
    cfg = forwarder_config({"corp": [upstream.addr], "tenant": [upstream2.addr],
                            "nowhere-near": ["127.0.0.1:5399"]}, hooks=[steering])
    async with running(cfg) as srv:
        aws = await ask(srv, transport, "s3.ap-northeast-1.amazonaws.com")
        other = await ask(srv, transport, "intranet.example.com")
    assert [rr.address for rr in aws.answer[0]] == ["10.20.1.15"]
    assert [rr.address for rr in other.answer[0]] == ["192.0.2.1"]
    assert [rx.message.question[0].name.to_text() for rx in upstream2.received] == [
        "s3.ap-northeast-1.amazonaws.com."]
    assert [rx.message.question[0].name.to_text() for rx in upstream.received] == [
        "intranet.example.com."]


def test_tenant_steering_rejects_a_bad_table(upstream: FakeUpstream) -> None:
    cfg = forwarder_config({"corp": [upstream.addr]},
                           hooks=[example("tenant_steering", {"tenants": [{"group": "x"}]})])
    with pytest.raises(ConfigError, match="tenants\\[0\\] needs networks and group"):
        Server(config_mod.from_data(cfg, "<test>"))


# --- (2) answer a maintenance name locally ----------------------------------------------------


async def test_maintenance_answers_locally(upstream: FakeUpstream, transport: str) -> None:
    message = "app.example.com is in maintenance until 14:00 UTC"
    cfg = forwarder_config({"corp": [upstream.addr]}, hooks=[example("maintenance", {
        "names": ["app.example.com"], "address": "10.0.50.10", "message": message, "ttl": 30})])
    async with running(cfg) as srv:
        a = await ask(srv, transport, "api.APP.example.com")
        txt = await ask(srv, transport, "app.example.com", "TXT")
        aaaa = await ask(srv, transport, "app.example.com", "AAAA")
        other = await ask(srv, transport, "www.example.com")
    assert [rr.address for rr in a.answer[0]] == ["10.0.50.10"] and a.answer[0].ttl == 30
    assert ede_of(a) == [(0, message)]
    assert txt.answer[0][0].strings == (message.encode(),)
    assert aaaa.rcode() == dns.rcode.NOERROR and aaaa.answer == []
    assert [rr.address for rr in other.answer[0]] == ["192.0.2.1"]
    assert [rx.message.question[0].name.to_text() for rx in upstream.received] == [
        "www.example.com."]


# --- (3) block AAAA for protected names ---------------------------------------------------------


async def test_block_aaaa_for_protected_names(upstream: FakeUpstream, transport: str) -> None:
    upstream.handler = answers({
        ("ssm.ap-northeast-1.amazonaws.com", "A"): ["A 10.0.8.8"],
        ("www.example.com", "AAAA"): ["AAAA 2001:db8::1"],
    })
    cfg = forwarder_config({"corp": [upstream.addr]}, hooks=[example("block_aaaa")])
    async with running(cfg) as srv:
        blocked = await ask(srv, transport, "ssm.ap-northeast-1.amazonaws.com", "AAAA")
        v4 = await ask(srv, transport, "ssm.ap-northeast-1.amazonaws.com", "A")
        other = await ask(srv, transport, "www.example.com", "AAAA")
    assert blocked.rcode() == dns.rcode.NOERROR and blocked.answer == []
    assert ede_of(blocked) == [(15, "AAAA for ssm.ap-northeast-1.amazonaws.com blocked: "
                                    "amazonaws.com is reached over IPv4 only")]
    assert [rr.address for rr in v4.answer[0]] == ["10.0.8.8"]
    assert [rr.address for rr in other.answer[0]] == ["2001:db8::1"]
    assert len(upstream.received) == 2


# --- (4) enrich the query log -------------------------------------------------------------------


async def test_query_tags_reach_the_query_log(upstream: FakeUpstream, transport: str,
                                              tmp_path: Path) -> None:
    log_path = tmp_path / "queries.jsonl"
    cfg = forwarder_config({"corp": [upstream.addr]}, hooks=[example("query_tags", {
        "sites": {"tokyo-dc": ["10.1.0.0/16"], "lab": ["127.0.0.0/8"]}})],
        querylog={"enabled": True, "path": str(log_path)})
    async with running(cfg) as srv:
        await ask(srv, transport, "www.example.com")
    assert [line["tags"] for line in logged_queries(log_path)] == \
        [{"site": "lab", "zone_rule": ".", "answer_from": "upstream", "addresses": "1"}]


# --- (5) withhold answers into denied networks ------------------------------------------------


async def test_deny_networks_blocks_answers(upstream: FakeUpstream, transport: str) -> None:
    upstream.handler = answers({
        ("sinkholed.example.com", "A"): ["A 10.0.0.1", "A 198.18.0.5"],
        ("fine.example.com", "A"): ["A 10.0.0.2"],
    })
    cfg = forwarder_config({"corp": [upstream.addr]}, hooks=[example("deny_networks", {
        "deny": ["198.18.0.0/15"], "action": "nxdomain"})])
    async with running(cfg) as srv:
        blocked = await ask(srv, transport, "sinkholed.example.com")
        fine = await ask(srv, transport, "fine.example.com")
    assert blocked.rcode() == dns.rcode.NXDOMAIN and blocked.answer == []
    assert ede_of(blocked) == [(15, "sinkholed.example.com points to 198.18.0.5, "
                                    "a network clients must not reach")]
    assert [rr.address for rr in fine.answer[0]] == ["10.0.0.2"]
