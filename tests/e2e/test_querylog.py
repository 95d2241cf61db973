"""Query log end to end: one JSON line per answered query with the fields operators search
on, sampling, stdout, a reload that reopens the file, and a path that cannot be opened."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import dns.rcode
import pytest

from forwarder import config as config_mod
from forwarder import metrics
from forwarder.errors import ConfigError
from forwarder.server import Server
from tests.conftest import forwarder_config, logged_queries, query, running
from tests.fakes import Delay, FakeUpstream, answers, reply

FIELDS = {"time", "client", "protocol", "name", "type", "rule", "group", "server",
          "upstream_rcode", "answers", "verdict", "action", "violations", "policy", "protected",
          "ede", "rcode", "answered_by", "latency_ms", "tags"}


def querylog_config(upstream: FakeUpstream, path: Path | str, **querylog: Any) -> dict[str, Any]:
    return forwarder_config(
        {"g": [upstream.addr]},
        zones=[{"match": "example.com", "upstream": "g", "name": "corp"},
               {"match": "blocked.test", "action": "refuse"}],
        querylog={"enabled": True, "path": str(path), **querylog})


async def test_each_answered_query_is_one_json_line(upstream: FakeUpstream, transport: str,
                                                    tmp_path: Path) -> None:
    """Query log: an answered A, an NXDOMAIN and a refused name give three lines with the
    client, rule, group, server, rcodes, addresses and latency."""
    upstream.handler = answers({("www.example.com", "A"): ["A 192.0.2.1", "A 192.0.2.2"]})
    path = tmp_path / "queries.jsonl"
    async with running(querylog_config(upstream, path)) as srv:
        await query(srv, transport, "WWW.Example.com", "A")
        await query(srv, transport, "nx.example.com", "AAAA")
        refused = await query(srv, transport, "x.blocked.test", "TXT")
    assert refused.rcode() == dns.rcode.REFUSED
    first, second, third = logged_queries(path)  # the server's stop writes out what is queued

    assert set(first) == FIELDS
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert first["client"] == "127.0.0.1"
    assert first["protocol"] == transport
    assert (first["name"], first["type"]) == ("www.example.com", "A")
    assert (first["rule"], first["group"], first["server"]) == ("corp", "g", upstream.addr)
    assert (first["upstream_rcode"], first["rcode"]) == ("NOERROR", "NOERROR")
    assert sorted(first["answers"]) == ["192.0.2.1", "192.0.2.2"]
    assert first["answered_by"] == "upstream"
    assert first["verdict"] is None and first["action"] is None  # no policy on this rule
    assert first["violations"] == []
    assert first["ede"] == []
    assert 0 <= first["latency_ms"] < 3000
    assert first["tags"] == {}

    assert (second["type"], second["rcode"], second["upstream_rcode"]) == \
        ("AAAA", "NXDOMAIN", "NXDOMAIN")
    assert second["answers"] == []

    assert (third["rule"], third["group"], third["server"]) == ("blocked.test", None, None)
    assert (third["rcode"], third["upstream_rcode"]) == ("REFUSED", None)
    assert third["ede"] == [{"code": 18, "text": "refused by rule blocked.test"}]


async def test_sample_zero_logs_nothing(upstream: FakeUpstream, tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    async with running(querylog_config(upstream, path, sample=0.0)) as srv:
        for i in range(5):
            await query(srv, "udp", f"h{i}.example.com")
    assert path.read_text() == ""


async def test_half_sampling_logs_some_and_not_all(upstream: FakeUpstream,
                                                   tmp_path: Path) -> None:
    """Query log: sample 0.5 over 60 queries logs a fraction (the chance of all or none
    is 2 * 2**-60)."""
    path = tmp_path / "queries.jsonl"
    async with running(querylog_config(upstream, path, sample=0.5)) as srv:
        for i in range(60):
            await query(srv, "udp", f"s{i}.example.com")
    assert 0 < len(logged_queries(path)) < 60


async def test_stdout_destination(upstream: FakeUpstream,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    async with running(querylog_config(upstream, "stdout")) as srv:
        await query(srv, "udp", "out.example.com")
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["name"] == "out.example.com" and line["rule"] == "corp"


async def test_reload_keeps_the_log_and_reopens_the_file(upstream: FakeUpstream,
                                                         tmp_path: Path) -> None:
    """Query log: after the file is rotated away, a reload with the same settings writes the
    next lines to a fresh file at the configured path."""
    path = tmp_path / "queries.jsonl"
    cfg = querylog_config(upstream, path)
    async with running(cfg) as srv:
        log = srv.runtime.querylog
        await query(srv, "udp", "before.example.com")
        assert await asyncio.to_thread(log.flush)
        path.rename(tmp_path / "queries.jsonl.1")
        srv.apply(config_mod.from_data(cfg))
        assert srv.runtime.querylog is log
        await query(srv, "udp", "after.example.com")
    rotated = tmp_path / "queries.jsonl.1"
    assert [r["name"] for r in logged_queries(rotated)] == ["before.example.com"]
    assert [r["name"] for r in logged_queries(path)] == ["after.example.com"]


async def test_reload_with_other_settings_starts_a_new_log(upstream: FakeUpstream,
                                                           tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    async with running(querylog_config(upstream, first)) as srv:
        await query(srv, "udp", "one.example.com")
        srv.apply(config_mod.from_data(querylog_config(upstream, second)))
        await query(srv, "udp", "two.example.com")
    assert [r["name"] for r in logged_queries(first)] == ["one.example.com"]
    assert [r["name"] for r in logged_queries(second)] == ["two.example.com"]


def test_a_path_that_cannot_be_opened_is_a_config_error(tmp_path: Path) -> None:
    cfg = config_mod.from_data(forwarder_config(
        {"g": ["127.0.0.1:5301"]},
        querylog={"enabled": True, "path": str(tmp_path / "missing" / "q.jsonl")}))
    with pytest.raises(ConfigError, match=r"querylog\.path: cannot open"):
        Server(cfg)


async def test_hook_tags_are_logged(upstream: FakeUpstream, tmp_path: Path) -> None:
    """Tags a hook puts on a query (examples/hooks/query_tags.py does) appear in its line."""
    hook = tmp_path / "tag.py"
    hook.write_text("def on_query(ctx):\n    ctx.tag('site', 'tokyo')\n    return None\n")
    path = tmp_path / "queries.jsonl"
    cfg = querylog_config(upstream, path)
    cfg["hooks"] = [{"path": str(hook)}]
    async with running(cfg) as srv:
        await query(srv, "udp", "www.example.com", "A")
    (line,) = logged_queries(path)
    assert line["tags"] == {"site": "tokyo"}


async def test_answers_a_hook_made_are_logged(upstream: FakeUpstream, tmp_path: Path,
                                             transport: str) -> None:
    """Query log: every answer a hook makes gets its line with its addresses, the one that
    carries a public address for a protected name included (no "cannot format" loss; the
    hook marks it trusted, so no policy blocks it)."""
    hook = tmp_path / "answer.py"
    hook.write_text("from forwarder.hooks import Answer\n"
                    "def on_query(ctx):\n"
                    "    address = '52.219.1.1' if ctx.qname.startswith('s3.') else '10.0.0.1'\n"
                    "    return Answer([(ctx.qname, 'A', 60, address)], trusted=True)\n")
    path = tmp_path / "queries.jsonl"
    cfg = querylog_config(upstream, path)
    cfg["zones"].insert(0, {"match": "amazonaws.com", "upstream": "g",
                            "policy": "private-only"})
    cfg["policies"] = {"private-only": {"on_violation": "servfail"}}
    cfg["hooks"] = [{"path": str(hook)}]
    before = metrics.REGISTRY.get_sample_value("forwarder_querylog_dropped_total") or 0.0
    async with running(cfg) as srv:
        for name in ("s3.ap-northeast-1.amazonaws.com", "www.example.com", "x.example.com"):
            await query(srv, transport, name)
    lines = logged_queries(path)
    assert [(line["name"], line["answers"], line["answered_by"]) for line in lines] == [
        ("s3.ap-northeast-1.amazonaws.com", ["52.219.1.1"], "hook"),
        ("www.example.com", ["10.0.0.1"], "hook"),
        ("x.example.com", ["10.0.0.1"], "hook")]
    assert metrics.REGISTRY.get_sample_value("forwarder_querylog_dropped_total") == before


async def test_cache_hits_carry_the_policy_verdict(upstream: FakeUpstream, tmp_path: Path) -> None:
    """A cached answer's log line shows the verdict the policy gave it when it was fetched."""
    upstream.handler = answers({("s3.amazonaws.com", "A"): ["A 10.0.1.15"]})
    path = tmp_path / "queries.jsonl"
    cfg = forwarder_config({"g": [upstream.addr]},
                           zones=[{"match": ".", "upstream": "g", "policy": "p"}],
                           policies={"p": {}},
                           querylog={"enabled": True, "path": str(path)})
    async with running(cfg) as srv:
        await query(srv, "udp", "s3.amazonaws.com", "A")
        await query(srv, "udp", "s3.amazonaws.com", "A")
    fetched, cached = logged_queries(path)
    assert cached["answered_by"] == "cache"
    assert (fetched["verdict"], fetched["action"]) == ("pass", "pass")
    assert (cached["verdict"], cached["action"]) == ("pass", "pass")


@pytest.mark.parametrize(("mode", "rcode"), [("enforce", "SERVFAIL"), ("monitor", "NOERROR")])
async def test_a_blocked_answer_lists_the_offending_addresses(
        upstream: FakeUpstream, tmp_path: Path, mode: str, rcode: str) -> None:
    """The line of a violation names the public addresses the policy objected to (not the
    allowed ones beside them) and the action, fresh and from the cache; in monitor mode the
    action that enforce mode would have taken."""
    name = "s3.ap-northeast-1.amazonaws.com"
    upstream.handler = answers({(name, "A"): ["A 52.219.150.28", "A 10.0.1.15",
                                              "A 52.219.150.29"]})
    path = tmp_path / "queries.jsonl"
    cfg = forwarder_config({"g": [upstream.addr]},
                           zones=[{"match": ".", "upstream": "g", "policy": "p"}],
                           policies={"p": {"mode": mode}},
                           querylog={"enabled": True, "path": str(path)})
    async with running(cfg) as srv:
        await query(srv, "udp", name, "A")
        await query(srv, "udp", name, "A")
    fetched, cached = logged_queries(path)
    assert cached["answered_by"] == "cache"
    for line in (fetched, cached):
        assert (line["verdict"], line["action"], line["rcode"]) == ("violation", "servfail",
                                                                    rcode)
        assert sorted(line["violations"]) == ["52.219.150.28", "52.219.150.29"]


async def test_queries_that_waited_on_an_identical_one_log_what_it_found(
        upstream: FakeUpstream, tmp_path: Path) -> None:
    """Three clients ask the same protected name while the upstream takes 0.2 s: one
    upstream query answers all three, and every log line names the server, the upstream
    rcode and the policy's verdict, not only the line of the query that asked."""
    upstream.handler = lambda rx: Delay(0.2, reply(rx.message, "A 10.0.1.15"))
    path = tmp_path / "queries.jsonl"
    cfg = forwarder_config(
        {"g": [upstream.addr]},
        zones=[{"match": ".", "upstream": "g", "policy": "p"}], policies={"p": {}},
        querylog={"enabled": True, "path": str(path)})
    async with running(cfg) as srv:
        await asyncio.gather(*(query(srv, transport, "s3.ap-northeast-1.amazonaws.com")
                               for transport in ("udp", "tcp", "udp")))
    assert len(upstream.received) == 1
    lines = logged_queries(path)
    assert len(lines) == 3
    for line in lines:
        assert (line["group"], line["server"], line["upstream_rcode"]) == \
            ("g", upstream.addr, "NOERROR")
        assert (line["verdict"], line["action"]) == ("pass", "pass")
        assert line["answers"] == ["10.0.1.15"]


async def test_rare_rcodes_are_logged_by_name(upstream: FakeUpstream, tmp_path: Path) -> None:
    """The query log names every rcode (metrics fold the rare ones into "other")."""
    upstream.handler = lambda rx: reply(rx.message, rcode=dns.rcode.YXDOMAIN)
    path = tmp_path / "queries.jsonl"
    async with running(querylog_config(upstream, path)) as srv:
        await query(srv, "udp", "odd.example.com")
    (line,) = logged_queries(path)
    assert (line["upstream_rcode"], line["rcode"]) == ("YXDOMAIN", "YXDOMAIN")


async def test_a_log_that_cannot_be_written_costs_lines_not_queries(
        upstream: FakeUpstream, caplog: pytest.LogCaptureFixture) -> None:
    """Writing the log fails (the disk is full): every query is still answered; the lost
    lines are counted in forwarder_querylog_dropped_total and the failure is logged."""
    before = metrics.REGISTRY.get_sample_value("forwarder_querylog_dropped_total") or 0.0
    async with running(querylog_config(upstream, "/dev/full")) as srv:
        answers_ = [await query(srv, "udp", f"h{i}.example.com") for i in range(3)]
    assert all(a.rcode() == dns.rcode.NOERROR for a in answers_)
    assert metrics.REGISTRY.get_sample_value("forwarder_querylog_dropped_total") == before + 3
    assert "query log: cannot write to /dev/full" in caplog.text
