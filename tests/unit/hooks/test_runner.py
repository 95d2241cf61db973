"""Tests for forwarder.hooks.runner: loading hook files and calling them with a time limit."""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap
from pathlib import Path
from typing import Any

import dns.message
import pytest

from forwarder import metrics, runtime
from forwarder.config import from_data
from forwarder.errors import ConfigError, HookError
from forwarder.hooks import runner as hookrunner
from forwarder.query import DROP, Query, Reply


def write_hook(directory: Path, name: str, body: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def config(directory: Path, hooks: list[dict[str, Any]]) -> Any:
    return from_data({
        "listen": [{"address": "127.0.0.1", "port": 0}],
        "upstreams": {"corp": {"servers": ["127.0.0.1:5399"]},
                      "aws": {"servers": ["127.0.0.1:5398"]}},
        "zones": [{"match": ".", "upstream": "corp"},
                  {"match": "amazonaws.com", "upstream": "aws"}],
        "metrics": {"enabled": False},
        "hooks": hooks,
    }, str(directory / "forwarder.yaml"))


def chain(directory: Path, *hooks: dict[str, Any]) -> hookrunner.HookChain:
    rt = runtime.build(config(directory, list(hooks)))
    assert rt.hooks is not None
    return rt.hooks  # type: ignore[no-any-return]


def make_query(name: str = "s3.amazonaws.com", qtype: str = "A") -> Query:
    m = dns.message.make_query(name, qtype, use_edns=0)
    return Query.from_wire(m.to_wire(), ("10.1.2.3", 5300), "udp", 0.0)


def errors(hook: str, kind: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "forwarder_hook_errors_total", {"hook": hook, "kind": kind}) or 0.0


# --- loading ---------------------------------------------------------------------------------


def test_no_hooks_configured_builds_nothing(tmp_path: Path) -> None:
    assert runtime.build(config(tmp_path, [])).hooks is None


def test_relative_path_is_relative_to_the_config_file(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hooks").mkdir()
    write_hook(tmp_path / "hooks", "rel_hook", "def on_query(ctx): return None\n")
    monkeypatch.chdir("/")
    loaded = hookrunner.load_hooks(config(tmp_path, [{"path": "hooks/rel_hook.py"}]))
    assert loaded[0].path == str(tmp_path / "hooks" / "rel_hook.py")
    assert loaded[0].name == "rel_hook"
    assert loaded[0].on_response is None


def test_options_and_timeout_reach_the_hook(tmp_path: Path) -> None:
    write_hook(tmp_path, "opts", """
        SEEN = {}
        def setup(options):
            SEEN.update(options)
        def on_response(ctx, response):
            return None
    """)
    hook = hookrunner.load_hooks(config(tmp_path, [
        {"path": str(tmp_path / "opts.py"), "timeout": "20ms", "options": {"a": [1, 2]}}]))[0]
    assert hook.timeout == pytest.approx(0.02)
    assert hook.options == {"a": [1, 2]}
    assert hook.module.SEEN == {"a": [1, 2]}


@pytest.mark.parametrize(("body", "reason"), [
    ("def on_query(ctx)\n    return None\n", "SyntaxError: expected ':' (line 1)"),
    ("x = 1\ny = 1 / 0\ndef on_query(ctx): pass\n", "ZeroDivisionError: division by zero (line 2)"),
    ("import no_such_module_for_hooks\n", "ModuleNotFoundError"),
    ("import sys\nsys.exit(3)\n", "SystemExit"),
    ("X = 1\n", "defines neither on_query(ctx) nor on_response(ctx, response)"),
    ("on_query = 5\n", "on_query is not a function"),
    ("def on_query(): pass\n", "on_query must accept (ctx)"),
    ("def on_response(ctx): pass\n", "on_response must accept (ctx, response)"),
    ("def setup(options): raise ValueError('tenants missing')\ndef on_query(ctx): pass\n",
     "setup(options) raised ValueError: tenants missing (line 1)"),
])
def test_a_hook_that_does_not_load_is_a_config_error(tmp_path: Path, body: str,
                                                     reason: str) -> None:
    path = write_hook(tmp_path, "broken", body)
    with pytest.raises(ConfigError) as info:
        hookrunner.load_hooks(config(tmp_path, [{"path": "broken.py"}]))
    (problem,) = info.value.problems
    assert problem.path == "hooks[0].path"
    assert reason in problem.reason
    assert str(path) in problem.reason
    assert "forwarder_hook_0_broken" not in sys.modules


def test_every_broken_hook_is_listed_and_counted(tmp_path: Path) -> None:
    write_hook(tmp_path, "good", "def on_query(ctx): pass\n")
    write_hook(tmp_path, "bad_import", "raise RuntimeError('no')\n")
    before = errors("bad_import", "import")
    with pytest.raises(ConfigError) as info:
        hookrunner.load_hooks(config(tmp_path, [
            {"path": "missing.py"}, {"path": "good.py"}, {"path": "bad_import.py"}]))
    assert [p.path for p in info.value.problems] == ["hooks[0].path", "hooks[2].path"]
    assert "not found" in info.value.problems[0].reason
    assert errors("bad_import", "import") == before + 1


def test_hooks_with_the_same_file_name_get_distinct_names(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_hook(tmp_path / "a", "tag", "def on_query(ctx): pass\n")
    write_hook(tmp_path / "b", "tag", "def on_query(ctx): pass\n")
    loaded = hookrunner.load_hooks(config(tmp_path, [{"path": "a/tag.py"}, {"path": "b/tag.py"}]))
    assert [h.name for h in loaded] == ["tag", "tag#1"]


def test_each_build_imports_a_fresh_module(tmp_path: Path) -> None:
    write_hook(tmp_path, "counter", "CALLS = []\ndef on_query(ctx): CALLS.append(1)\n")
    cfg = config(tmp_path, [{"path": "counter.py"}])
    first, second = hookrunner.load_hooks(cfg)[0], hookrunner.load_hooks(cfg)[0]
    assert first.module is not second.module


# --- calling ---------------------------------------------------------------------------------


async def test_on_query_sees_the_rule_and_group_before_upstream(tmp_path: Path) -> None:
    write_hook(tmp_path, "seer", """
        SEEN = []
        def on_query(ctx):
            SEEN.append((ctx.rule, ctx.group, ctx.qname))
    """)
    c = chain(tmp_path, {"path": "seer.py"})
    q = make_query("S3.AmazonAWS.com")
    assert await c.on_query(q) is None
    assert c.hooks[0].module.SEEN == [("amazonaws.com", "aws", "s3.amazonaws.com")]
    assert q.rule is not None and q.rule.name == "amazonaws.com"


async def test_bare_continue_and_drop_classes_are_accepted(tmp_path: Path) -> None:
    write_hook(tmp_path, "bare", """
        from forwarder.hooks import Continue, Drop
        def on_query(ctx):
            return Drop if ctx.qname == "drop.test" else Continue
    """)
    c = chain(tmp_path, {"path": "bare.py"})
    assert await c.on_query(make_query("keep.test")) is None
    assert await c.on_query(make_query("drop.test")) is DROP


async def test_hooks_run_in_order_and_answer_ends_the_chain(tmp_path: Path) -> None:
    write_hook(tmp_path, "first", """
        from forwarder.hooks import Reroute
        def on_query(ctx):
            return Reroute("corp")
    """)
    write_hook(tmp_path, "second", """
        from forwarder.hooks import Answer
        def on_query(ctx):
            return Answer([(ctx.qname, "TXT", 5, "group=" + ctx.group)])
    """)
    write_hook(tmp_path, "third", "CALLED = []\ndef on_query(ctx): CALLED.append(1)\n")
    c = chain(tmp_path, {"path": "first.py"}, {"path": "second.py"}, {"path": "third.py"})
    q = make_query()
    reply = await c.on_query(q)
    assert reply is not None and reply.answered_by == "hook"
    assert q.group == "corp"
    assert b"group=corp" in reply.wire
    assert c.hooks[2].module.CALLED == []


async def test_reroute_to_an_unknown_group_is_an_invalid_verdict(tmp_path: Path) -> None:
    write_hook(tmp_path, "lost", """
        from forwarder.hooks import Reroute
        def on_query(ctx):
            return Reroute("nowhere")
    """)
    with pytest.raises(HookError) as info:
        await chain(tmp_path, {"path": "lost.py"}).on_query(make_query())
    assert info.value.kind == "invalid_verdict"
    assert "hook lost" in info.value.text and "'nowhere'" in info.value.text


@pytest.mark.parametrize(("phase", "body", "kind", "text"), [
    ("on_query", "def on_query(ctx): return 'yes'", "invalid_verdict",
     "returned str; expected Continue, Answer, Reroute, Refuse or Drop"),
    ("on_query", "from forwarder.hooks import Block\ndef on_query(ctx): return Block('refuse')",
     "invalid_verdict", "returned Block"),
    ("on_query", "from forwarder.hooks import Answer\ndef on_query(ctx): return Answer",
     "invalid_verdict", "returned the class Answer"),
    ("on_response", "from forwarder.hooks import Answer\n"
     "def on_response(ctx, r): return Answer()", "invalid_verdict",
     "returned Answer; expected Continue, Replace, Block or Drop"),
    ("on_query", "def on_query(ctx): return {}['x']", "exception", "on_query raised KeyError"),
    ("on_query", "async def on_query(ctx):\n    raise TimeoutError", "exception",
     "on_query raised TimeoutError"),
    ("on_query", "import asyncio\nasync def on_query(ctx):\n    raise asyncio.CancelledError",
     "exception", "on_query raised CancelledError"),
    ("on_query", "import sys\ndef on_query(ctx): sys.exit(1)", "exception",
     "on_query raised SystemExit"),
    ("on_query", "import asyncio\nasync def on_query(ctx):\n    await asyncio.sleep(5)",
     "timeout", "on_query took longer than 20 ms"),
    ("on_query", "import time\ndef on_query(ctx):\n    time.sleep(0.03)", "timeout",
     "on_query took longer than 20 ms"),
    ("on_response", "import asyncio\nasync def on_response(ctx, r):\n    await asyncio.sleep(5)",
     "timeout", "on_response took longer than 20 ms"),
])
async def test_failures_become_hook_errors(tmp_path: Path, phase: str, body: str, kind: str,
                                           text: str) -> None:
    """Every way a hook can fail is a HookError naming the hook and the kind, never a raise
    that escapes (or a SystemExit that stops the server)."""
    write_hook(tmp_path, f"fail_{kind}", body + "\n")
    c = chain(tmp_path, {"path": f"fail_{kind}.py", "timeout": "20ms"})
    q = make_query()
    with pytest.raises(HookError) as info:
        if phase == "on_query":
            await c.on_query(q)
        else:
            await c.on_response(q, Reply(b"\x00" * 12, 0, "upstream"))
    assert info.value.kind == kind
    assert info.value.hook == f"fail_{kind}"
    assert info.value.text.startswith(f"hook fail_{kind}: ")
    assert text in info.value.text


async def test_cancelling_the_query_cancels_the_hook(tmp_path: Path) -> None:
    """Shutdown cancels in-flight queries: that is not a hook failure."""
    write_hook(tmp_path, "waiter", """
        import asyncio
        STARTED = asyncio.Event()
        async def on_query(ctx):
            STARTED.set()
            await asyncio.sleep(5)
    """)
    c = chain(tmp_path, {"path": "waiter.py", "timeout": "10s"})
    task = asyncio.ensure_future(c.on_query(make_query()))
    await c.hooks[0].module.STARTED.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_errors_are_logged_once_per_burst(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    write_hook(tmp_path, "noisy", "def on_query(ctx):\n    raise ValueError('bad')\n")
    c = chain(tmp_path, {"path": "noisy.py"})
    caplog.set_level(logging.ERROR, logger="forwarder")
    for _ in range(5):
        with pytest.raises(HookError):
            await c.on_query(make_query())
    logged = [r for r in caplog.records if "hook noisy" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None  # with its traceback
    assert "ValueError: bad" in logged[0].getMessage()
    c.hooks[0].errors._kinds["exception"][0] = 0.0  # the burst is over
    with pytest.raises(HookError):
        await c.on_query(make_query())
    logged = [r for r in caplog.records if "hook noisy" in r.getMessage()]
    assert len(logged) == 2
    assert "4 more like this" in logged[1].getMessage()


async def test_on_response_replace_is_seen_by_the_next_hook(tmp_path: Path) -> None:
    write_hook(tmp_path, "replacer", """
        from forwarder.hooks import Replace
        def on_response(ctx, response):
            return Replace([(ctx.qname, "A", 5, "10.0.0.7")])
    """)
    write_hook(tmp_path, "watcher", """
        SEEN = []
        def on_response(ctx, response):
            SEEN.append((response.answered_by, response.addresses))
    """)
    c = chain(tmp_path, {"path": "replacer.py"}, {"path": "watcher.py"})
    q = make_query("svc.test")
    original = Reply(b"\x00\x00\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00" + q.question, 0,
                     "upstream")
    reply = await c.on_response(q, original)
    assert reply.answered_by == "hook" and reply.rcode == 0
    assert c.hooks[1].module.SEEN == [("hook", ("10.0.0.7",))]


async def test_on_response_does_nothing_without_response_hooks(tmp_path: Path) -> None:
    write_hook(tmp_path, "qonly", "def on_query(ctx): pass\n")
    reply = Reply(b"", 0, "upstream")
    assert await chain(tmp_path, {"path": "qonly.py"}).on_response(make_query(), reply) is reply
