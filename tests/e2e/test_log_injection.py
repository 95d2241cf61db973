"""Log injection: a query name carrying a newline, a forged record and ESC sequences reaches
the operator log and the query log of a real `forwarder run` process only in presentation
form with escapes, so that it forges no line and drives no terminal."""

from __future__ import annotations

import json
from pathlib import Path

import dns.name
import dns.rcode

from tests.conftest import free_port
from tests.fakes import FakeUpstream, reply
from tests.processes import forwarder_process

FORGED_LABEL = b"x\n1999-01-01 00:00:00,000 ERROR forwarder: forged"
NAME = dns.name.Name([FORGED_LABEL, b"\x1b[31mred\x1b[0m", b"s3", b"amazonaws", b"com", b""])
# lower case, as the forwarder keys and logs names
ESCAPED = ("x\\0101999-01-01\\03200:00:00,000\\032error\\032forwarder:\\032forged"
           ".\\027[31mred\\027[0m.s3.amazonaws.com")


async def test_a_forged_name_forges_no_log_line(tmp_path: Path, upstream: FakeUpstream) -> None:
    """Log injection: a public answer for a protected name under monitor is logged by the
    operator log and the query log with the name escaped as dig prints it; no line starts
    with the forged timestamp and no ESC is written."""
    upstream.handler = lambda rx: reply(rx.message, "A 52.219.1.1")
    querylog = tmp_path / "queries.jsonl"
    cfg = {
        "listen": [{"address": "127.0.0.1", "port": free_port()}],
        "allow_root": True,
        "metrics": {"enabled": False},
        "upstreams": {"up": {"servers": [upstream.addr], "health_check": {"enabled": False}}},
        "zones": [{"match": "amazonaws.com", "upstream": "up", "policy": "watch"},
                  {"match": ".", "upstream": "up"}],
        "policies": {"watch": {"on_violation": "monitor"}},
        "querylog": {"enabled": True, "path": str(querylog)},
    }
    async with forwarder_process(tmp_path, cfg) as fwd:
        answer = await fwd.ask(NAME)
        assert answer.rcode() == dns.rcode.NOERROR
        assert await fwd.stop() == 0
        log = fwd.log.read_bytes()
    assert b"\x1b" not in log
    lines = log.decode().splitlines()
    assert not [line for line in lines if line.startswith("1999")]
    violation = [line for line in lines if "policy violation" in line]
    assert len(violation) == 1 and f"name={ESCAPED} " in violation[0]

    logged = querylog.read_bytes()
    assert b"\x1b" not in logged and logged.count(b"\n") == 1
    line = json.loads(logged)
    assert line["name"] == ESCAPED
    assert line["answers"] == ["52.219.1.1"] and line["action"] == "monitor"
