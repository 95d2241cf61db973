"""Python hooks end to end: every verdict over UDP and TCP, sync and async hooks, time
limits, exceptions, invalid verdicts, and reloads with a broken hook file.

Each test writes its hook files into a temporary directory, starts a real forwarder on
loopback in front of fake upstreams, and asks it with dnspython.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from forwarder import metrics
from tests.conftest import dump, forwarder_config, logged_queries, query, running
from tests.fakes import FakeUpstream, answers


def ede_of(msg: dns.message.Message) -> list[tuple[int, str]]:
    return [(o.code, o.text or "") for o in msg.options if o.otype == dns.edns.EDE]


def write_hook(directory: Path, name: str, body: str) -> str:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def with_hooks(groups: dict[str, list[str]], *hooks: dict[str, Any],
               **extra: Any) -> dict[str, Any]:
    return forwarder_config(groups, hooks=list(hooks), **extra)


def hook_errors(hook: str, kind: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "forwarder_hook_errors_total", {"hook": hook, "kind": kind}) or 0.0


def module_of(srv: Any, index: int = 0) -> Any:
    return srv.runtime.hooks.hooks[index].module


async def ask(srv: Any, transport: str, name: str, qtype: str = "A",
              timeout: float = 3.0) -> dns.message.Message:
    return await query(srv, transport, name, qtype, timeout=timeout, use_edns=0)


# --- verdicts ------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["sync", "async"])
async def test_continue_forwards_as_without_hooks(tmp_path: Path, upstream: FakeUpstream,
                                                  transport: str, style: str) -> None:
    """Continue (or None): the query goes to the rule's upstream and its answer comes back."""
    prefix = "async " if style == "async" else ""
    path = write_hook(tmp_path, f"pass_{style}", f"""
        from forwarder.hooks import Continue
        CALLS = []
        {prefix}def on_query(ctx):
            CALLS.append(ctx.qname)
            return Continue()
    """)
    async with running(with_hooks({"up": [upstream.addr]}, {"path": path})) as srv:
        r = await ask(srv, transport, "www.example.com")
        assert module_of(srv).CALLS == ["www.example.com"]
    assert r.rcode() == dns.rcode.NOERROR
    assert [rr.address for rr in r.answer[0]] == ["192.0.2.1"]
    assert len(upstream.received) == 1


@pytest.mark.parametrize("style", ["sync", "async"])
async def test_answer_is_sent_without_asking_upstream(tmp_path: Path, upstream: FakeUpstream,
                                                      transport: str, style: str) -> None:
    """Answer: the hook's records, rcode and EDE reach the client; no upstream is asked."""
    prefix = "async " if style == "async" else ""
    path = write_hook(tmp_path, f"answer_{style}", f"""
        from forwarder.hooks import Answer, Record
        {prefix}def on_query(ctx):
            return Answer(records=[Record(ctx.qname, "A", 42, "10.0.9.9"),
                                   (ctx.qname, "TXT", 42, "from the hook")],
                          ede=(4, "answered by a hook"))
    """)
    async with running(with_hooks({"up": [upstream.addr]}, {"path": path})) as srv:
        r = await ask(srv, transport, "Maint.Example.com")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.question[0].name.to_text() == "Maint.Example.com."
    a = r.find_rrset(r.answer, dns.name.from_text("maint.example.com"), 1, dns.rdatatype.A)
    assert [rr.address for rr in a] == ["10.0.9.9"] and a.ttl == 42
    txt = r.find_rrset(r.answer, dns.name.from_text("maint.example.com"), 1, dns.rdatatype.TXT)
    assert txt[0].strings == (b"from the hook",)
    assert ede_of(r) == [(4, "answered by a hook")]
    assert upstream.received == []


async def test_answer_nxdomain_with_soa(tmp_path: Path, upstream: FakeUpstream,
                                       transport: str) -> None:
    path = write_hook(tmp_path, "answer_nx", """
        from forwarder.hooks import Answer
        def on_query(ctx):
            soa = ("example.com", "SOA", 60, "ns.example.com. admin.example.com. 1 60 60 60 30")
            return Answer(rcode="NXDOMAIN", authority=[soa])
    """)
    async with running(with_hooks({"up": [upstream.addr]}, {"path": path})) as srv:
        r = await ask(srv, transport, "gone.example.com")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.answer == [] and r.authority[0].rdtype == dns.rdatatype.SOA


async def test_reroute_asks_the_named_group(tmp_path: Path, upstream: FakeUpstream,
                                           upstream2: FakeUpstream, transport: str) -> None:
    """Reroute: a client in the steered network is answered by the other group."""
    upstream2.handler = answers({("www.example.com", "A"): ["A 10.20.0.5"]})
    path = write_hook(tmp_path, "steer", """
        from forwarder.hooks import Continue, Reroute
        def on_query(ctx):
            if ctx.in_networks(ctx.client, ["127.0.0.0/8"]) and ctx.group == "corp":
                return Reroute("tenant")
            return Continue()
    """)
    cfg = with_hooks({"corp": [upstream.addr], "tenant": [upstream2.addr]}, {"path": path})
    async with running(cfg) as srv:
        r = await ask(srv, transport, "www.example.com")
    assert [rr.address for rr in r.answer[0]] == ["10.20.0.5"]
    assert upstream.received == []
    assert len(upstream2.received) == 1


async def test_reroute_to_unknown_group_is_servfail(tmp_path: Path, upstream: FakeUpstream,
                                                   transport: str) -> None:
    path = write_hook(tmp_path, "reroute_lost", """
        from forwarder.hooks import Reroute
        def on_query(ctx):
            return Reroute("nowhere")
    """)
    before = hook_errors("reroute_lost", "invalid_verdict")
    async with running(with_hooks({"up": [upstream.addr]}, {"path": path})) as srv:
        r = await ask(srv, transport, "www.example.com")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert ede_of(r) == [(0, "hook reroute_lost: on_query: "
                             "Reroute to unknown upstream group 'nowhere'")]
    assert hook_errors("reroute_lost", "invalid_verdict") == before + 1
    assert upstream.received == []


async def test_refuse_answers_refused_with_prohibited(tmp_path: Path, upstream: FakeUpstream,
                                                     transport: str) -> None:
    path = write_hook(tmp_path, "refuser", """
        from forwarder.hooks import Refuse
        def on_query(ctx):
            return Refuse("tenant A may not resolve " + ctx.qname)
    """)
    async with running(with_hooks({"up": [upstream.addr]}, {"path": path})) as srv:
        r = await ask(srv, transport, "secret.example.com")
    assert r.rcode() == dns.rcode.REFUSED
    assert ede_of(r) == [(18, "tenant A may not resolve secret.example.com")]
    assert upstream.received == []


async def test_drop_on_query_sends_nothing(tmp_path: Path, upstream: FakeUpstream,
                                          transport: str) -> None:
    """Drop: the client gets no reply (and times out); the next query is served."""
    path = write_hook(tmp_path, "dropper", """
        from forwarder.hooks import Continue, Drop
        def on_query(ctx):
            return Drop() if ctx.qname.startswith("drop.") else Continue()
    """)
    async with running(with_hooks({"up": [upstream.addr]}, {"path": path})) as srv:
        with pytest.raises(dns.exception.Timeout):
            await ask(srv, transport, "drop.example.com", timeout=0.3)
        r = await ask(srv, transport, "keep.example.com")
    assert r.rcode() == dns.rcode.NOERROR
    assert len(upstream.received) == 1


async def test_on_response_sees_parsed_records(tmp_path: Path, upstream: FakeUpstream,
                                              transport: str) -> None:
    upstream.handler = answers({("svc.example.com", "A"): ["A 10.0.1.15", "A 10.0.2.15"]})
    path = write_hook(tmp_path, "viewer", """
        SEEN = []
        def on_response(ctx, response):
            SEEN.append((ctx.qname, ctx.rule, ctx.group, response.rcode, response.answered_by,
                         sorted(tuple(r) for r in response.answer)))
    """)
    async with running(with_hooks({"up": [upstream.addr]}, {"path": path})) as srv:
        r = await ask(srv, transport, "SVC.example.com")
        seen = module_of(srv).SEEN
    assert r.rcode() == dns.rcode.NOERROR
    assert seen == [("svc.example.com", ".", "up", "NOERROR", "upstream",
                     [("svc.example.com", "A", 300, "10.0.1.15"),
                      ("svc.example.com", "A", 300, "10.0.2.15")])]


@pytest.mark.parametrize("style", ["sync", "async"])
async def test_replace_sends_the_hooks_records(tmp_path: Path, upstream: FakeUpstream,
                                              transport: str, style: str) -> None:
    """Replace: the client gets the records the hook built from the upstream answer."""
    upstream.handler = answers({("dual.example.com", "A"): ["A 203.0.113.10", "A 10.0.3.3"]})
    prefix = "async " if style == "async" else ""
    path = write_hook(tmp_path, f"replacer_{style}", f"""
        from forwarder.hooks import Replace
        {prefix}def on_response(ctx, response):
            private = [r for r in response.answer if ctx.in_networks(r.value, "10.0.0.0/8")]
            return Replace(private, ede=(4, "public addresses removed"))
    """)
    async with running(with_hooks({"up": [upstream.addr]}, {"path": path})) as srv:
        r = await ask(srv, transport, "dual.example.com")
    assert r.rcode() == dns.rcode.NOERROR
    assert [rr.address for rr in r.answer[0]] == ["10.0.3.3"]
    assert ede_of(r) == [(4, "public addresses removed")]


@pytest.mark.parametrize(("action", "rcode"), [
    ("servfail", dns.rcode.SERVFAIL), ("refuse", dns.rcode.REFUSED),
    ("nxdomain", dns.rcode.NXDOMAIN), ("nodata", dns.rcode.NOERROR),
])
async def test_block_withholds_the_answer(tmp_path: Path, upstream: FakeUpstream,
                                         transport: str, action: str, rcode: int) -> None:
    """Block(action, text): no records, the action's rcode, EDE 15 Blocked with the text."""
    path = write_hook(tmp_path, f"blocker_{action}", f"""
        from forwarder.hooks import Block
        def on_response(ctx, response):
            return Block({action!r}, "blocked " + response.addresses[0])
    """)
    async with running(with_hooks({"up": [upstream.addr]}, {"path": path})) as srv:
        r = await ask(srv, transport, "www.example.com")
    assert r.rcode() == rcode
    assert r.answer == []
    assert ede_of(r) == [(15, "blocked 192.0.2.1")]


async def test_drop_on_response_sends_nothing(tmp_path: Path, upstream: FakeUpstream,
                                             transport: str) -> None:
    path = write_hook(tmp_path, "response_dropper", """
        from forwarder.hooks import Drop
        def on_response(ctx, response):
            return Drop()
    """)
    async with running(with_hooks({"up": [upstream.addr]}, {"path": path})) as srv:
        with pytest.raises(dns.exception.Timeout):
            await ask(srv, transport, "www.example.com", timeout=0.3)
    assert len(upstream.received) == 1


async def test_hooks_see_only_queries_the_acl_lets_through(tmp_path: Path,
                                                          upstream: FakeUpstream) -> None:
    path = write_hook(tmp_path, "acl_seen", "CALLS = []\ndef on_query(ctx): CALLS.append(1)\n")
    cfg = with_hooks({"up": [upstream.addr]}, {"path": path}, acl={"allow": ["10.0.0.0/8"]})
    async with running(cfg) as srv:
        r = await ask(srv, "udp", "www.example.com")
        assert module_of(srv).CALLS == []
    assert r.rcode() == dns.rcode.REFUSED


async def test_tags_are_on_the_query_when_it_is_logged(
        tmp_path: Path, upstream: FakeUpstream, transport: str) -> None:
    """Tags set by on_query and on_response are in the query's query log line."""
    path = write_hook(tmp_path, "tagger", """
        def on_query(ctx):
            ctx.tag("site", "tokyo")
        def on_response(ctx, response):
            ctx.tag("answers", len(response.answer))
    """)
    log_path = tmp_path / "queries.jsonl"
    cfg = with_hooks({"up": [upstream.addr]}, {"path": path},
                     querylog={"enabled": True, "path": str(log_path)})
    async with running(cfg) as srv:
        await ask(srv, transport, "www.example.com")
    assert [line["tags"] for line in logged_queries(log_path)] == \
        [{"site": "tokyo", "answers": "1"}]


# --- failures ------------------------------------------------------------------------------


async def test_timeout_is_servfail_and_other_queries_carry_on(
        tmp_path: Path, upstream: FakeUpstream, transport: str) -> None:
    """A hook that overruns costs its query a SERVFAIL naming the hook; a query that does not
    wait on it is answered meanwhile."""
    path = write_hook(tmp_path, "slowpoke", """
        import asyncio
        async def on_query(ctx):
            if ctx.qname.startswith("slow."):
                await asyncio.sleep(5)
    """)
    before = hook_errors("slowpoke", "timeout")
    async with running(with_hooks({"up": [upstream.addr]},
                                  {"path": path, "timeout": "500ms"})) as srv:
        slow = asyncio.ensure_future(ask(srv, transport, "slow.example.com"))
        fast = await ask(srv, transport, "fast.example.com")
        assert not slow.done()
        r = await slow
    assert fast.rcode() == dns.rcode.NOERROR
    assert r.rcode() == dns.rcode.SERVFAIL
    assert ede_of(r) == [(0, "hook slowpoke: on_query took longer than 500 ms")]
    assert hook_errors("slowpoke", "timeout") == before + 1
    assert [rx.message.question[0].name.to_text() for rx in upstream.received] == [
        "fast.example.com."]


async def test_sync_hook_overrun_is_a_timeout(tmp_path: Path, upstream: FakeUpstream,
                                             transport: str) -> None:
    """A plain function cannot be interrupted: when it returns too late its verdict is
    discarded and the query gets SERVFAIL."""
    path = write_hook(tmp_path, "blocking", """
        import time
        from forwarder.hooks import Answer
        def on_query(ctx):
            time.sleep(0.05)
            return Answer([(ctx.qname, "A", 5, "10.0.0.1")])
    """)
    async with running(with_hooks({"up": [upstream.addr]},
                                  {"path": path, "timeout": "10ms"})) as srv:
        r = await ask(srv, transport, "www.example.com")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert ede_of(r) == [(0, "hook blocking: on_query took longer than 10 ms")]


@pytest.mark.parametrize("phase", ["on_query", "on_response"])
async def test_exception_is_servfail_counted_and_the_server_serves_on(
        tmp_path: Path, upstream: FakeUpstream, transport: str, phase: str) -> None:
    args = "ctx" if phase == "on_query" else "ctx, response"
    name = f"raiser_{phase}"
    path = write_hook(tmp_path, name, f"""
        def {phase}({args}):
            if ctx.qname.startswith("boom."):
                raise RuntimeError("hook bug")
    """)
    before = hook_errors(name, "exception")
    async with running(with_hooks({"up": [upstream.addr]}, {"path": path})) as srv:
        r = await ask(srv, transport, "boom.example.com")
        again = await ask(srv, transport, "boom.example.com")
        ok = await ask(srv, transport, "fine.example.com")
    assert r.rcode() == again.rcode() == dns.rcode.SERVFAIL
    assert ede_of(r) == [(0, f"hook {name}: {phase} raised RuntimeError")]
    assert hook_errors(name, "exception") == before + 2
    assert ok.rcode() == dns.rcode.NOERROR


@pytest.mark.parametrize("garbage", ["'ok'", "42", "True", "{'answer': '10.0.0.1'}",
                                     "Reroute", "Replace([])"])
async def test_garbage_verdict_is_servfail(tmp_path: Path, upstream: FakeUpstream,
                                          transport: str, garbage: str) -> None:
    path = write_hook(tmp_path, "garbage", f"""
        from forwarder.hooks import Reroute, Replace
        def on_query(ctx):
            return {garbage}
    """)
    before = hook_errors("garbage", "invalid_verdict")
    async with running(with_hooks({"up": [upstream.addr]}, {"path": path})) as srv:
        r = await ask(srv, transport, "www.example.com")
    assert r.rcode() == dns.rcode.SERVFAIL
    ((code, text),) = ede_of(r)
    assert code == 0 and text.startswith("hook garbage: on_query: returned ")
    assert hook_errors("garbage", "invalid_verdict") == before + 1
    assert upstream.received == []


@pytest.mark.parametrize(("phase", "verdict"), [("on_query", "Answer"),
                                              ("on_response", "Replace")])
async def test_answer_no_message_can_carry_is_servfail(
        tmp_path: Path, upstream: FakeUpstream, transport: str, phase: str,
        verdict: str) -> None:
    """An Answer or Replace bigger than a DNS message (65,535 bytes) is the hook's error:
    SERVFAIL saying so, counted, and other names are answered as before."""
    args = "ctx" if phase == "on_query" else "ctx, response"
    path = write_hook(tmp_path, "huge", f"""
        from forwarder.hooks import {verdict}
        def {phase}({args}):
            if ctx.qname == "huge.example.com":
                return {verdict}([(ctx.qname, "TXT", 5, "x" * 250)] * 300)
    """)
    before = hook_errors("huge", "invalid_verdict")
    async with running(with_hooks({"up": [upstream.addr]}, {"path": path})) as srv:
        r = await ask(srv, transport, "huge.example.com", "TXT")
        other = await ask(srv, transport, "www.example.com")
    assert r.rcode() == dns.rcode.SERVFAIL and not r.flags & dns.flags.TC
    ((code, text),) = ede_of(r)
    assert code == 0
    assert text.startswith(f"hook huge: {phase}: {verdict} cannot be sent: the answer is ")
    assert "more than a DNS message can carry" in text
    assert hook_errors("huge", "invalid_verdict") == before + 1
    assert other.rcode() == dns.rcode.NOERROR
    assert [rr.address for rr in other.answer[0]] == ["192.0.2.1"]


# --- configuration -----------------------------------------------------------------------------


V1 = """
from forwarder.hooks import Answer
def on_query(ctx):
    return Answer([(ctx.qname, "TXT", 5, "version 1")])
"""
V2 = V1.replace("version 1", "version 2")


async def test_reload_with_a_broken_hook_keeps_the_old_pipeline(
        tmp_path: Path, upstream: FakeUpstream, transport: str) -> None:
    """A hook file that does not import makes the reload fail; the old hooks keep answering.
    Once the file is fixed, a reload takes the new version. The path is relative to the
    configuration file."""
    (tmp_path / "hooks").mkdir()
    hook = tmp_path / "hooks" / "versioned.py"
    hook.write_text(V1)
    cfg = with_hooks({"up": [upstream.addr]}, {"path": "hooks/versioned.py"})
    config_path = tmp_path / "forwarder.yaml"
    config_path.write_text(dump(cfg))
    failures = metrics.REGISTRY.get_sample_value(
        "forwarder_config_reloads_total", {"result": "failure"}) or 0.0
    async with running(cfg, str(config_path)) as srv:
        assert (await ask(srv, transport, "v.test", "TXT")).answer[0][0].strings == (b"version 1",)
        hook.write_text("def on_query(ctx)\n    return None\n")  # a syntax error
        assert await srv.reload() is False
        r = await ask(srv, transport, "v.test", "TXT")
        assert r.answer[0][0].strings == (b"version 1",)
        assert metrics.REGISTRY.get_sample_value(
            "forwarder_config_reloads_total", {"result": "failure"}) == failures + 1
        hook.write_text(V2)
        assert await srv.reload() is True
        r = await ask(srv, transport, "v.test", "TXT")
        assert r.answer[0][0].strings == (b"version 2",)


async def test_hooks_added_and_removed_by_reload(tmp_path: Path, upstream: FakeUpstream) -> None:
    hook = write_hook(tmp_path, "added", V1)
    config_path = tmp_path / "forwarder.yaml"
    plain = forwarder_config({"up": [upstream.addr]})
    config_path.write_text(dump(plain))
    async with running(plain, str(config_path)) as srv:
        assert srv.runtime.hooks is None
        config_path.write_text(dump(with_hooks({"up": [upstream.addr]}, {"path": hook})))
        assert await srv.reload() is True
        assert (await ask(srv, "udp", "v.test", "TXT")).answer[0][0].strings == (b"version 1",)
        config_path.write_text(dump(plain))
        assert await srv.reload() is True
        assert srv.runtime.hooks is None
        assert (await ask(srv, "udp", "v.test", "A")).answer[0][0].address == "192.0.2.1"


def test_check_config_loads_hook_files(tmp_path: Path, upstream: FakeUpstream,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from forwarder import cli

    hook = write_hook(tmp_path, "checked", "def on_query(ctx):\n    return 1 +\n")
    config_path = tmp_path / "forwarder.yaml"
    config_path.write_text(dump(with_hooks({"up": ["127.0.0.1:5399"]}, {"path": "checked.py"})))
    assert cli.main(["check-config", str(config_path)]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "hooks[0].path" in err and "SyntaxError" in err and hook in err
    Path(hook).write_text("def on_query(ctx):\n    return None\n")
    assert cli.main(["check-config", str(config_path)]) == cli.EXIT_OK


# --- with the other stages ---------------------------------------------------------------------


async def test_rerouted_answers_are_cached_per_group(tmp_path: Path, upstream: FakeUpstream,
                                                    upstream2: FakeUpstream) -> None:
    """The cache keeps a rerouted answer apart from the rule's own: UDP clients are steered
    to `tenant`, TCP clients are not, and each is answered from its own group's entry."""
    upstream2.handler = answers({("www.example.com", "A"): ["A 10.20.0.5"]})
    path = write_hook(tmp_path, "steer_udp", """
        from forwarder.hooks import Reroute
        def on_query(ctx):
            return Reroute("tenant") if ctx.protocol == "udp" else None
    """)
    cfg = with_hooks({"corp": [upstream.addr], "tenant": [upstream2.addr]}, {"path": path})
    async with running(cfg) as srv:
        steered = [await ask(srv, "udp", "www.example.com") for _ in range(2)]
        plain = [await ask(srv, "tcp", "www.example.com") for _ in range(2)]
    assert [r.answer[0][0].address for r in steered] == ["10.20.0.5"] * 2
    assert [r.answer[0][0].address for r in plain] == ["192.0.2.1"] * 2
    assert len(upstream.received) == len(upstream2.received) == 1


async def test_reroute_when_no_rule_matches_or_the_rule_answers_locally(
        tmp_path: Path, upstream: FakeUpstream, transport: str) -> None:
    """A Reroute overrides the rule's action: a name no rule matches, and a name the rule
    answers from local records, are both asked of the named group."""
    path = write_hook(tmp_path, "steer_all", """
        from forwarder.hooks import Reroute
        def on_query(ctx):
            if ctx.qname.startswith("steer."):
                return Reroute("corp")
    """)
    cfg = with_hooks({"corp": [upstream.addr]}, {"path": path}, zones=[
        {"match": "corp.example", "upstream": "corp"},
        {"match": "internal.example", "records": [
            {"name": "steer.internal.example", "type": "A", "value": "10.0.100.21"}]}])
    async with running(cfg) as srv:
        unmatched = await ask(srv, transport, "steer.elsewhere.test")
        local = await ask(srv, transport, "steer.internal.example")
        refused = await ask(srv, transport, "other.elsewhere.test")
        untouched = await ask(srv, transport, "other.internal.example")
    assert unmatched.answer[0][0].address == "192.0.2.1"
    assert local.answer[0][0].address == "192.0.2.1"
    assert refused.rcode() == dns.rcode.REFUSED
    assert untouched.rcode() == dns.rcode.NXDOMAIN
    assert len(upstream.received) == 2


async def test_on_response_sees_cache_hits_and_local_answers(
        tmp_path: Path, upstream: FakeUpstream, transport: str) -> None:
    """on_response runs for every answer the client gets, whoever made it, so a hook's
    rewrite is never bypassed by the cache."""
    path = write_hook(tmp_path, "every_answer", """
        from forwarder.hooks import Replace
        SEEN = []
        def on_response(ctx, response):
            SEEN.append(response.answered_by)
            return Replace([(ctx.qname, "A", 5, "10.9.9.9")])
    """)
    cfg = with_hooks({"corp": [upstream.addr]}, {"path": path}, zones=[
        {"match": ".", "upstream": "corp"},
        {"match": "internal.example", "records": [
            {"name": "app.internal.example", "type": "A", "value": "10.0.100.21"}]}])
    async with running(cfg) as srv:
        first = await ask(srv, transport, "www.example.com")
        second = await ask(srv, transport, "www.example.com")
        local = await ask(srv, transport, "app.internal.example")
        seen = module_of(srv).SEEN
    assert seen == ["upstream", "cache", "local"]
    assert [r.answer[0][0].address for r in (first, second, local)] == ["10.9.9.9"] * 3
    assert len(upstream.received) == 1


async def test_on_response_sees_the_answer_after_the_policy(
        tmp_path: Path, upstream: FakeUpstream, transport: str) -> None:
    """The built-in answer policy runs first: the hook sees the rewritten private address,
    not the public one the upstream sent."""
    upstream.handler = answers({("s3.ap-northeast-1.amazonaws.com", "A"): ["A 52.219.1.1"]})
    path = write_hook(tmp_path, "after_policy", """
        SEEN = []
        def on_response(ctx, response):
            SEEN.append((response.answered_by, response.addresses, response.ede))
    """)
    cfg = with_hooks(
        {"aws": [upstream.addr]}, {"path": path},
        zones=[{"match": ".", "upstream": "aws", "policy": "private-only"}],
        policies={"private-only": {"on_violation": "rewrite", "rewrite": {
            "s3.ap-northeast-1.amazonaws.com": {"A": ["10.0.1.15"]}}}})
    async with running(cfg) as srv:
        r = await ask(srv, transport, "s3.ap-northeast-1.amazonaws.com")
        ((by, addresses, ede),) = module_of(srv).SEEN
    assert [rr.address for rr in r.answer[-1]] == ["10.0.1.15"]
    assert addresses == ("10.0.1.15",)
    assert by == "policy"
    assert [code for code, _text in ede] == [4]
