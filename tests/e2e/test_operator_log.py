"""The operator log of a real `forwarder run` process: `log: {format: json}` gives one JSON
object per line, the start line names the version, the file, the listeners and the counts,
policy violations carry their structured fields, a reload switches the format, and the
command line's --log-level wins over `log.level`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import yaml

from forwarder import __version__
from tests.conftest import free_port, poll_process
from tests.fakes import FakeUpstream


def config(upstream: FakeUpstream, port: int, **log: str) -> dict[str, Any]:
    return {
        "listen": [{"address": "127.0.0.1", "port": port}],
        "upstreams": {"up": {"servers": [upstream.addr], "timeout": 1.0, "attempts": 1,
                             "health_check": {"enabled": False}}},
        "zones": [{"match": "amazonaws.com", "upstream": "up", "policy": "p"},
                  {"match": ".", "upstream": "up"}],
        "policies": {"p": {"on_violation": "servfail"}},  # the fake answers 192.0.2.1: public
        "metrics": {"enabled": False},
        "allow_root": True,
        "log": log,
    }


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines()


def json_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(log) if line.startswith("{")]


async def ask(port: int, name: str) -> dns.message.Message:
    q = dns.message.make_query(name, "A")
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=1.0)


async def start(path: Path, log: Path, *options: str) -> asyncio.subprocess.Process:
    with open(log, "wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "forwarder", *options, "run", "-c", str(path),
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_json_log_start_line_policy_fields_and_reload_to_text(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    port = free_port()
    path, log = tmp_path / "forwarder.yaml", tmp_path / "log"
    path.write_text(yaml.safe_dump(config(upstream, port, format="json", level="info")))
    proc = await start(path, log)
    try:
        start_line = await poll_process(
            lambda: next((x for x in json_lines(log) if x["message"].startswith("forwarder ")),
                         None), proc, log)
        assert start_line["message"] == (
            f"forwarder {__version__} serving on udp 127.0.0.1:{port}, tcp 127.0.0.1:{port} "
            f"with {path}: 2 rules, 2 upstream groups, 1 policies")
        assert {k: start_line[k] for k in ("level", "logger", "version", "config", "listeners",
                                           "rules", "groups", "policies")} == {
            "level": "info", "logger": "forwarder", "version": __version__,
            "config": str(path), "listeners": [f"udp 127.0.0.1:{port}", f"tcp 127.0.0.1:{port}"],
            "rules": 2, "groups": 2, "policies": 1}
        assert "timestamp" in start_line

        assert (await ask(port, "s3.amazonaws.com")).rcode() == dns.rcode.SERVFAIL
        violation = await poll_process(
            lambda: next((x for x in json_lines(log) if x["logger"] == "forwarder.policy"),
                         None), proc, log)
        assert violation["level"] == "warning"
        assert {k: violation[k] for k in ("policy", "mode", "rule", "group", "client", "qname",
                                          "qtype", "addresses", "action")} == {
            "policy": "p", "mode": "enforce", "rule": "amazonaws.com", "group": "up",
            "client": "127.0.0.1", "qname": "s3.amazonaws.com", "qtype": "A",
            "addresses": ["192.0.2.1"], "action": "servfail"}

        # a reload applies `log:`: text from now on
        path.write_text(yaml.safe_dump(config(upstream, port, format="text")))
        proc.send_signal(signal.SIGHUP)
        names = (f"n{i}.s3.amazonaws.com" for i in range(200))

        async def text_violation() -> str | None:
            await ask(port, next(names))  # a new name each time: not answered from the cache
            return next((x for x in lines(log) if "WARNING forwarder.policy: policy violation"
                         in x), None)

        text = await poll_process(text_violation, proc, log)
        assert not text.startswith("{") and "policy=p mode=enforce" in text
    finally:
        await stop(proc)


async def test_the_command_line_level_wins_over_the_file(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    """`--log-level warning` with `log.level: debug`: the info start line is not written,
    the warning of a policy violation is."""
    port = free_port()
    path, log = tmp_path / "forwarder.yaml", tmp_path / "log"
    path.write_text(yaml.safe_dump(config(upstream, port, format="json", level="debug")))
    proc = await start(path, log, "--log-level", "warning")
    try:
        async def violation() -> dict[str, Any] | None:
            await ask(port, "s3.amazonaws.com")
            return next((x for x in json_lines(log) if x["logger"] == "forwarder.policy"), None)

        assert (await poll_process(violation, proc, log))["level"] == "warning"
        assert {x["level"] for x in json_lines(log)} == {"warning"}
    finally:
        await stop(proc)
