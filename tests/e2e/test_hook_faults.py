"""Hooks are contained: whatever a hook raises (KeyboardInterrupt, SystemExit,
GeneratorExit included) costs only its query a SERVFAIL with EDE 0 and a counted error,
and an async hook that ignores cancellation can keep neither its query unanswered past
its time limit, nor an in-flight slot, nor the process from stopping.

In-process servers for the answers; real `forwarder run` processes (one process, and
`workers: 2`) for what the issue saw as process exits.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path
from typing import Any

import dns.rcode
import pytest

from forwarder import metrics
from forwarder.hooks import calls
from tests.conftest import free_port, running
from tests.e2e.test_hooks import ask, ede_of, hook_errors, with_hooks, write_hook
from tests.fakes import FakeUpstream
from tests.processes import forwarder_process

RAISERS = ["KeyboardInterrupt", "SystemExit", "SystemExit(0)", "GeneratorExit",
           "Abort"]
RAISING_HOOK = """
    import asyncio
    class Abort(BaseException):
        pass
    def on_query(ctx):
        if ctx.qname.startswith("sync-"):
            raise {raised}
        if ctx.qname.startswith("async-"):
            return later()
    async def later():
        await asyncio.sleep(0)
        raise {raised}
    def on_response(ctx, response):
        if ctx.qname.startswith("response-"):
            raise {raised}
"""
# ignores every cancellation for SWALLOW seconds, then lets its query go
SWALLOWING_HOOK = """
    import asyncio
    async def on_query(ctx):
        if not ctx.qname.startswith("stuck"):
            return None
        loop = asyncio.get_running_loop()
        end = loop.time() + {seconds}
        while loop.time() < end:
            try:
                await asyncio.sleep(end - loop.time())
            except asyncio.CancelledError:
                pass
"""


def inflight() -> float:
    return metrics.REGISTRY.get_sample_value("forwarder_inflight_queries") or 0.0


@pytest.mark.parametrize("raised", RAISERS)
async def test_any_base_exception_is_servfail_and_counted(
        tmp_path: Path, upstream: FakeUpstream, transport: str, raised: str) -> None:
    """Hooks: a sync on_query, an async on_query and an on_response raising *raised* each
    answer SERVFAIL with EDE 0 naming the hook, count a hook error, and the server answers
    the next query."""
    name = f"raiser_{transport}"
    path = write_hook(tmp_path, name, RAISING_HOOK.format(raised=raised))
    before = hook_errors(name, "exception")
    async with running(with_hooks({"up": [upstream.addr]}, {"path": path})) as srv:
        got = [await ask(srv, transport, f"{kind}-{i}.example.com")
               for kind in ("sync", "async", "response") for i in range(2)]
        fine = await ask(srv, transport, "fine.example.com")
    kind = raised.split("(")[0]
    for phase, r in zip(["on_query"] * 4 + ["on_response"] * 2, got, strict=True):
        assert r.rcode() == dns.rcode.SERVFAIL
        assert ede_of(r) == [(0, f"hook {name}: {phase} raised {kind}")]
    assert hook_errors(name, "exception") == before + 6
    assert fine.rcode() == dns.rcode.NOERROR


async def test_a_hook_ignoring_cancellation_cannot_hold_its_query(
        tmp_path: Path, upstream: FakeUpstream, transport: str) -> None:
    """Hooks: an async on_query that swallows CancelledError for 1.5 s is answered SERVFAIL
    at its 100 ms limit, the in-flight gauge is back to 0 once the answers are out while
    the hook still runs, and the stop waits for it within its deadline."""
    path = write_hook(tmp_path, "swallow", SWALLOWING_HOOK.format(seconds=1.5))
    base = inflight()
    async with running(with_hooks({"up": [upstream.addr]},
                                  {"path": path, "timeout": "100ms"})) as srv:
        began = time.monotonic()
        got = await asyncio.gather(*(ask(srv, transport, f"stuck{i}.example.com")
                                     for i in range(5)))
        took = time.monotonic() - began
        assert inflight() == base
        assert calls.stragglers() == ["hook swallow: on_query"] * 5
        fine = await ask(srv, transport, "fine.example.com")
        await srv.stop(deadline=5.0)
        assert srv.exit_code == 0  # the hook let go before the deadline
    assert took < 1.0
    assert all(r.rcode() == dns.rcode.SERVFAIL for r in got)
    assert ede_of(got[0]) == [(0, "hook swallow: on_query took longer than 100 ms")]
    assert fine.rcode() == dns.rcode.NOERROR
    assert calls.stragglers() == []


# --- real processes --------------------------------------------------------------------------


def process_config(upstream: FakeUpstream, hook: str, workers: int = 1,
                   **hook_settings: Any) -> dict[str, Any]:
    return {
        "listen": [{"address": "127.0.0.1", "port": free_port()}],
        "workers": workers,
        "allow_root": True,  # test runs may be root; no user to drop to here
        "metrics": {"listen": f"127.0.0.1:{free_port(socket.SOCK_STREAM)}"},
        "upstreams": {"up": {"servers": [upstream.addr], "timeout": 1.0, "attempts": 1,
                             "health_check": {"enabled": False}}},
        "zones": [{"match": ".", "upstream": "up"}],
        "hooks": [{"path": hook, **hook_settings}],
    }


@pytest.mark.parametrize("workers", [1, 2])
async def test_hook_faults_never_stop_the_process(tmp_path: Path, upstream: FakeUpstream,
                                                  workers: int) -> None:
    """Process: 7 queries each whose hook raises KeyboardInterrupt, SystemExit or
    GeneratorExit (sync and async) are all answered SERVFAIL + EDE 0 and counted (42); the
    process (and with workers: 2 every worker, none restarted) serves on, and SIGTERM
    exits 0."""
    path = write_hook(tmp_path, "raiser", """
        import asyncio
        RAISE = {"0": KeyboardInterrupt, "1": SystemExit, "2": GeneratorExit}
        def on_query(ctx):
            label = ctx.qname.split(".")[0]  # kind-n-raised
            if label.count("-") != 2:
                return None
            kind, _, raised = label.split("-")
            if kind == "sync":
                raise RAISE[raised]
            if kind == "async":
                return later(RAISE[raised])
        async def later(error):
            await asyncio.sleep(0)
            raise error
    """)
    async with forwarder_process(tmp_path, process_config(upstream, path, workers)) as fwd:
        children = fwd.children()
        for kind in ("sync", "async"):
            for raised in "012":
                got = await asyncio.gather(*(
                    fwd.ask(f"{kind}-{i}-{raised}.example.com", use_edns=0)
                    for i in range(7)))
                for r in got:
                    assert r.rcode() == dns.rcode.SERVFAIL, fwd.log_text()
                    assert ede_of(r)[0][0] == 0
        assert (await fwd.ask("fine.example.com")).rcode() == dns.rcode.NOERROR
        fwd.check_running()
        assert fwd.children() == children
        await fwd.poll(lambda: fwd.metric_is("forwarder_hook_errors_total", 42,
                                             hook="raiser", kind="exception"))
        assert await fwd.stop() == 0
    log = fwd.log_text()
    assert "hook raiser: on_query raised KeyboardInterrupt" in log
    assert "restarting" not in log


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_ends_a_process_whose_hook_ignores_cancellation(
        tmp_path: Path, upstream: FakeUpstream, workers: int) -> None:
    """Process: an async hook that never lets go of cancelled calls: its queries get
    SERVFAIL at the limit, forwarder_inflight_queries is back to 0, and SIGTERM ends the
    process within the 5 s drain time plus a second, exit status 1, with a log line that
    names the stuck hook."""
    path = write_hook(tmp_path, "swallow", SWALLOWING_HOOK.format(seconds=3600))
    cfg = process_config(upstream, path, workers, timeout="200ms")
    async with forwarder_process(tmp_path, cfg) as fwd:
        began = time.monotonic()
        got = await asyncio.gather(*(fwd.ask(f"stuck{i}.example.com", use_edns=0)
                                     for i in range(10)))
        assert time.monotonic() - began < 1.5
        assert all(r.rcode() == dns.rcode.SERVFAIL for r in got)
        assert ede_of(got[0]) == [(0, "hook swallow: on_query took longer than 200 ms")]
        assert (await fwd.ask("fine.example.com")).rcode() == dns.rcode.NOERROR
        # workers fold their counts into the metric files every second: poll
        await fwd.poll(lambda: fwd.metric_is("forwarder_inflight_queries", 0))
        began = time.monotonic()
        code = await fwd.stop(signum=signal.SIGTERM)
        took = time.monotonic() - began
    assert code == 1
    assert took < 5.0 + 2.0
    log = fwd.log_text()
    assert "hook swallow: on_query is still running 5 s after the stop began" in log
