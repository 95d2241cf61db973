"""`workers: 2`: the real `forwarder run` process tree. Both workers answer on the shared
port and /metrics (worker 0) counts what both answered; SIGHUP reloads every worker;
SIGTERM drains and exits 0 with no worker left; a killed worker is replaced; a port in use
stops it all with exit 1; systemd hears READY/RELOADING/STOPPING from the supervisor only.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import pwd
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import pytest
from prometheus_client.mmap_dict import MmapedDict

from forwarder.process.workers import STOP_TIMEOUT
from tests.conftest import free_port
from tests.fakes import FakeUpstream
from tests.processes import ForwarderProcess

OLD, NEW = "10.0.0.1", "10.0.0.2"


def config(upstream: FakeUpstream, port: int, http: int, local: str = OLD) -> dict[str, Any]:
    return {
        "listen": [{"address": "127.0.0.1", "port": port}],
        "workers": 2,
        "allow_root": True,  # test runs may be root; no user to drop to here
        "metrics": {"listen": f"127.0.0.1:{http}"},
        "upstreams": {"up": {"servers": [upstream.addr], "timeout": 1.0, "attempts": 1,
                             "health_check": {"enabled": False}}},
        "zones": [{"match": "local.test",
                   "records": [{"name": "a.local.test", "type": "A", "value": local}]},
                  {"match": ".", "upstream": "up"}],
    }


class Forwarder(ForwarderProcess):
    """One `workers: 2` process tree, its metrics and the workers' metric files."""

    def __init__(self, tmp: Path, cfg: dict[str, Any]) -> None:
        super().__init__(tmp, cfg, log="log")

    async def lookup(self, name: str, timeout: float = 2.0) -> str:
        """Asks A *name* from a fresh socket (a fresh source port); answers the address."""
        return str((await self.ask(name, timeout=timeout)).answer[0][0])

    def queries_by_worker(self) -> dict[int, float]:
        """forwarder_queries_total per worker pid, read from the workers' metric files."""
        counts: dict[int, float] = {}
        for path in glob.glob(str(self.tmp / "forwarder-metrics-*" / "counter_*.db")):
            pid = int(path.rsplit("_", 1)[1].removesuffix(".db"))
            for key, value, _, _ in MmapedDict.read_all_values_from_file(path):
                if json.loads(key)[1] == "forwarder_queries_total":
                    counts[pid] = counts.get(pid, 0.0) + value
        return counts


@contextlib.asynccontextmanager
async def forwarder(tmp: Path, cfg: dict[str, Any], *args: str) -> AsyncIterator[Forwarder]:
    """A started `workers: 2` forwarder, once the supervisor told systemd READY=1."""
    fwd = Forwarder(tmp, cfg)
    try:
        await fwd.start(*args)
        status = await fwd.notified("READY=1")
        assert "STATUS=2 of 2 workers up" in status
        yield fwd
    finally:
        await fwd.close()


async def test_both_workers_answer_and_metrics_count_both(tmp_path: Path,
                                                          upstream: FakeUpstream) -> None:
    """Workers: two processes answer on one port; /metrics from worker 0 counts them all.

    Ask 60 names, each from a fresh source port; expect two worker processes, both of which
    answered some, and forwarder_queries_total reaching 60 within the periodic flush."""
    async with forwarder(tmp_path, config(upstream, free_port(), free_port(socket.SOCK_STREAM))
                         ) as fwd:
        workers = fwd.children()
        assert len(workers) == 2
        n = 60
        answers = await asyncio.gather(*(fwd.lookup(f"host{i}.example.com") for i in range(n)))
        assert set(answers) == {"192.0.2.1"}
        assert len(upstream.received) == n

        await fwd.poll(lambda: _equals(fwd.metric("forwarder_queries_total"), n))
        by_worker = fwd.queries_by_worker()
        assert set(by_worker) == workers
        assert all(count > 0 for count in by_worker.values()), by_worker
        status, body = await fwd.get("/readyz")
        assert status == 200 and json.loads(body)["worker"]["index"] == 0
        assert json.loads(body)["worker"]["pid"] in workers
        assert await fwd.metric("forwarder_build_info") == 1.0


async def _equals(value: Any, expected: float) -> bool:
    return bool(await value == expected)


async def test_sighup_reloads_every_worker_and_sigterm_stops_all(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    """Workers: SIGHUP reloads both; SIGTERM drains both and exits 0.

    Change a local record (and `workers`, which only a restart applies) and send SIGHUP:
    systemd hears RELOADING=1, then READY=1 once both workers reloaded; 30 queries from
    fresh ports all get the new address; the `workers` change is logged once, by worker 0,
    and two workers keep serving. SIGTERM: STOPPING=1, exit 0, no worker process left."""
    port, http = free_port(), free_port(socket.SOCK_STREAM)
    async with forwarder(tmp_path, config(upstream, port, http)) as fwd:
        assert await fwd.lookup("a.local.test") == OLD
        workers = fwd.children()

        fwd.write({**config(upstream, port, http, local=NEW), "workers": 3})
        os.kill(fwd.pid, signal.SIGHUP)
        await fwd.notified("RELOADING=1")
        await fwd.notified("READY=1")
        assert await fwd.metric("forwarder_config_reloads_total", result="success") == 2
        answers = await asyncio.gather(*(fwd.lookup("a.local.test") for _ in range(30)))
        assert set(answers) == {NEW}
        restart = [line for line in fwd.log.read_text().splitlines() if "workers: 3 in" in line]
        assert len(restart) == 1 and restart[0].endswith(
            f"forwarder: worker 0: workers: 3 in {fwd.path}, 2 running: only a restart applies "
            "it; the running value stays until then")
        assert fwd.children() == workers

        assert await fwd.stop() == 0
        assert "STOPPING=1" in (await fwd.notified("STOPPING=1")).split("\n")
        assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)
        assert not glob.glob(str(tmp_path / "forwarder-metrics-*"))


async def test_killed_worker_is_replaced(tmp_path: Path, upstream: FakeUpstream) -> None:
    """Workers: SIGKILL worker 0 (the one serving /metrics); a new worker 0 starts, serves
    /metrics again, and the counts of the dead one are kept."""
    async with forwarder(tmp_path, config(upstream, free_port(), free_port(socket.SOCK_STREAM))
                         ) as fwd:
        answers = await asyncio.gather(*(fwd.lookup(f"h{i}.example.com") for i in range(20)))
        assert len(answers) == 20
        await fwd.poll(lambda: _equals(fwd.metric("forwarder_queries_total"), 20))
        _, body = await fwd.get("/readyz")
        first = json.loads(body)["worker"]["pid"]

        os.kill(first, signal.SIGKILL)
        await fwd.poll(lambda: len(fwd.children() - {first}) == 2)

        async def new_worker_zero() -> bool:
            status, body = await fwd.get("/readyz")
            return status == 200 and json.loads(body)["worker"]["pid"] != first

        await fwd.poll(new_worker_zero)
        assert await fwd.lookup("after.example.com") == "192.0.2.1"
        await fwd.poll(lambda: _equals(fwd.metric("forwarder_queries_total"), 21))
        assert f"worker 0 (pid {first}) was killed by SIGKILL; restarting it" in \
            fwd.log.read_text()
        assert await fwd.stop() == 0


async def test_port_in_use_stops_everything(tmp_path: Path, upstream: FakeUpstream) -> None:
    """Workers: a listen port taken by another socket: exit 1, `cannot bind`, no worker left."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        fwd = Forwarder(tmp_path, config(upstream, port, free_port(socket.SOCK_STREAM)))
        try:
            await fwd.start()
            assert fwd.proc is not None
            assert await asyncio.wait_for(fwd.proc.wait(), 20.0) == 1
        finally:
            await fwd.close()
    log = fwd.log.read_text()
    assert "cannot bind 127.0.0.1:" in log and "before serving; stopping" in log
    assert not fwd.children()


async def test_workers_that_keep_dying_stop_the_server(tmp_path: Path,
                                                       upstream: FakeUpstream) -> None:
    """Workers: the sixth worker death within a minute stops everything with exit 1."""
    async with forwarder(tmp_path, config(upstream, free_port(), free_port(socket.SOCK_STREAM))
                         ) as fwd:
        for _ in range(5):
            victim = min(fwd.children())
            os.kill(victim, signal.SIGKILL)
            await fwd.poll(lambda v=victim: len(fwd.children() - {v}) == 2)  # type: ignore[misc]
        os.kill(min(fwd.children()), signal.SIGKILL)
        assert fwd.proc is not None
        assert await asyncio.wait_for(fwd.proc.wait(), 20.0) == 1
        assert "after 5 restarts within 60 s; stopping" in fwd.log.read_text()


@pytest.mark.slow
async def test_a_worker_stuck_in_a_hook_is_killed_at_the_stop_deadline(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    """Workers: a worker whose event loop is stuck (a plain hook function that never returns)
    cannot drain on SIGTERM; STOP_TIMEOUT seconds later the supervisor kills it, leaves no
    worker behind and exits 1."""
    hook = tmp_path / "stuck.py"
    hook.write_text("import time\n"
                    "def on_query(ctx):\n"
                    "    if ctx.qname == 'stuck.example.com':\n"
                    "        time.sleep(120)\n")
    cfg = config(upstream, free_port(), free_port(socket.SOCK_STREAM))
    cfg["hooks"] = [{"path": str(hook)}]
    async with forwarder(tmp_path, cfg) as fwd:
        workers = fwd.children()
        with pytest.raises(dns.exception.Timeout):
            await fwd.lookup("stuck.example.com", timeout=0.5)
        assert fwd.proc is not None
        began = time.monotonic()
        fwd.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(fwd.proc.wait(), STOP_TIMEOUT + 10) == 1
        assert time.monotonic() - began >= STOP_TIMEOUT - 1
        log = fwd.log.read_text()
        assert f"1 worker(s) still running {STOP_TIMEOUT:.0f} s after SIGTERM: killing them" \
            in log
        assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the privilege drop")
async def test_workers_drop_privileges_and_the_supervisor_keeps_them(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    """Workers: started as root with --user nobody, both workers serve as nobody; the
    supervisor stays root (to bind a replacement's ports), owns the pid file and removes it."""
    cfg = config(upstream, free_port(), 0)
    cfg["metrics"] = {"enabled": False}
    del cfg["allow_root"]
    tmp_path.chmod(0o755)
    pid_file = tmp_path / "forwarder.pid"
    async with forwarder(tmp_path, cfg, "--user", "nobody", "--pid-file", str(pid_file)) as fwd:
        assert await fwd.lookup("a.local.test") == OLD
        assert pid_file.read_text().strip() == str(fwd.pid)
        nobody = str(pwd.getpwnam("nobody").pw_uid)
        assert _uids(fwd.pid) == {"0"}
        workers = fwd.children()
        assert len(workers) == 2 and all(_uids(pid) == {nobody} for pid in workers)
        assert await fwd.stop() == 0
    assert not pid_file.exists()


def _uids(pid: int) -> set[str]:
    status = Path(f"/proc/{pid}/status").read_text()
    return set(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:])


async def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path,
                                                          upstream: FakeUpstream) -> None:
    """Workers: SIGKILL to the supervisor leaves no orphan holding the port: each worker
    notices its broken pipe within a second or two, drains and exits."""
    async with forwarder(tmp_path, config(upstream, free_port(), free_port(socket.SOCK_STREAM))
                         ) as fwd:
        workers = fwd.children()
        assert fwd.proc is not None
        fwd.proc.kill()
        await fwd.proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers):
            assert time.monotonic() < deadline, fwd.log.read_text()
            await asyncio.sleep(0.05)  # poll interval
        assert "the supervisor is gone; stopping" in fwd.log.read_text()


def _alive(pid: int) -> bool:
    """Answers whether *pid* runs (a zombie waiting for init to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_replacement_worker_serves_the_last_accepted_file(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    """Workers: reload to a new local record, then try an invalid file (rejected by both,
    logged by each); a worker killed after that is replaced by one serving the new record:
    the last file every worker accepted, not the one at start nor the invalid one."""
    port, http = free_port(), free_port(socket.SOCK_STREAM)
    async with forwarder(tmp_path, config(upstream, port, http)) as fwd:
        fwd.write(config(upstream, port, http, local=NEW))
        os.kill(fwd.pid, signal.SIGHUP)
        await fwd.notified("RELOADING=1")
        await fwd.notified("READY=1")

        fwd.path.write_text("zones: [{match: ., upstream: nowhere}]\n")
        os.kill(fwd.pid, signal.SIGHUP)
        await fwd.notified("RELOADING=1")
        await fwd.notified("READY=1")
        assert await fwd.metric("forwarder_config_reloads_total", result="failure") == 2
        log = fwd.log.read_text()
        for index in (0, 1):
            assert f"worker {index}: reload rejected" in log

        victim = max(fwd.children())
        os.kill(victim, signal.SIGKILL)
        await fwd.poll(lambda: "serving again" in fwd.log.read_text())
        answers = await asyncio.gather(*(fwd.lookup("a.local.test") for _ in range(30)))
        assert set(answers) == {NEW}
        assert await fwd.stop() == 0
