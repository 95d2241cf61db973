"""QueryLog: the line format, and that a full queue drops and counts lines, never blocks."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import dns.message
import dns.rrset
import pytest

from forwarder import metrics, querylog
from forwarder.config import model
from forwarder.dns import message, wire
from forwarder.query import Query, Reply

S3 = "s3.ap-northeast-1.amazonaws.com"


def make_query(name: str = S3) -> Query:
    data = dns.message.make_query(name, "A").to_wire()
    return Query.from_wire(data, ("192.0.2.10", 40000), "udp", 100.0)


def upstream_reply(q: Query, *addresses: str) -> Reply:
    msg = dns.message.make_response(dns.message.from_wire(q.wire))
    for address in addresses:
        msg.answer.append(dns.rrset.from_text(f"{S3}.", 60, "IN", "A", address))
    return Reply(msg.to_wire(), 0, "policy", ((4, f"{S3} rewritten by policy p"),), "10.0.0.2:53")


def line_for(tmp_path: Path, q: Query, reply: Reply) -> dict[str, Any]:
    """Logs one query through a real QueryLog and answers its line, parsed."""
    path = tmp_path / "q.jsonl"
    log = querylog.QueryLog(model.QueryLogSettings(True, str(path)))
    log.record(q, reply, 100.0125)
    log.close()
    (line,) = path.read_text().splitlines()
    return json.loads(line)


def test_line_carries_the_policy_verdict_action_and_ede(tmp_path: Path) -> None:
    """The policy stage records its verdict and action on the reply it makes; the line
    shows them with the final addresses, the server and the upstream's own rcode."""
    q = make_query()
    q.group = "r53"
    reply = upstream_reply(q, "10.0.1.15")
    reply.server = "10.0.0.2:53"
    reply.upstream = Reply(reply.wire, 0, "upstream", (), "10.0.0.2:53")
    reply.verdict, reply.action = "violation", "rewrite"
    line = line_for(tmp_path, q, reply)
    assert line["verdict"] == "violation" and line["action"] == "rewrite"
    assert (line["group"], line["server"], line["upstream_rcode"]) == \
        ("r53", "10.0.0.2:53", "NOERROR")
    assert line["answers"] == ["10.0.1.15"]
    assert line["ede"] == [{"code": 4, "text": f"{S3} rewritten by policy p"}]
    assert line["client"] == "192.0.2.10"
    assert line["rule"] is None  # no rule matched (e.g. refused by the acl)
    assert line["latency_ms"] == 12.5


def test_unreadable_answer_logs_no_addresses(tmp_path: Path) -> None:
    q = make_query()
    line = line_for(tmp_path, q, Reply(wire.synth_reply(q.flags, q.question, 2)[:14], 2, "error"))
    assert line["answers"] == [] and line["rcode"] == "SERVFAIL"


def test_an_answer_made_by_a_hook_is_logged_with_its_addresses(tmp_path: Path) -> None:
    """A hook's Answer (built by dnslib, a bytearray inside) gives a line with its address,
    a public one for a protected name included."""
    q = make_query()
    data = message.build_answer(q, [message.to_record((S3, "A", 60, "52.219.1.1"))])
    line = line_for(tmp_path, q, Reply(data, 0, "hook"))
    assert line["answers"] == ["52.219.1.1"] and line["answered_by"] == "hook"


def test_a_record_the_formatter_fails_on_is_still_one_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A query-log line is never lost to a formatting error: the fields are written as
    plain text, and the failure is logged."""
    q = make_query()
    q.tags = {("not", "text"): "v"}  # type: ignore[dict-item]  # what no code path makes
    before = metrics.REGISTRY.get_sample_value("forwarder_querylog_dropped_total") or 0.0
    line = line_for(tmp_path, q, upstream_reply(q, "10.0.1.15"))
    assert line["name"] == S3 and line["client"] == "192.0.2.10" and line["rcode"] == 0
    assert line["tags"] == "{('not', 'text'): 'v'}"
    assert metrics.REGISTRY.get_sample_value("forwarder_querylog_dropped_total") == before
    assert "query log: cannot format a record in full" in caplog.text


def test_a_reopen_that_fails_keeps_writing_to_the_open_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """After a rotation the file cannot be opened again (its directory went away): the log
    writes on to the file it has open instead of losing lines."""
    directory = tmp_path / "logs"
    directory.mkdir()
    log = querylog.QueryLog(model.QueryLogSettings(True, str(directory / "q.jsonl")))
    q = make_query()
    log.record(q, upstream_reply(q, "10.0.1.15"), 100.0)
    assert log.flush()
    directory.rename(tmp_path / "rotated")
    log.reopen()
    log.record(q, upstream_reply(q, "10.0.1.16"), 100.0)
    log.close()
    lines = (tmp_path / "rotated" / "q.jsonl").read_text().splitlines()
    assert [json.loads(line)["answers"] for line in lines] == [["10.0.1.15"], ["10.0.1.16"]]
    assert "cannot reopen" in caplog.text


def test_a_full_queue_drops_and_counts_lines(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer is stuck on the first line; the queue (size 1) takes the second; the third
    and fourth are dropped and counted, and `record` returned at once each time."""
    entered, release = threading.Event(), threading.Event()
    original = querylog.QueryLog._write

    def stuck_write(self: querylog.QueryLog, item: tuple[Any, ...]) -> None:
        entered.set()
        release.wait(5)
        original(self, item)

    monkeypatch.setattr(querylog.QueryLog, "_write", stuck_write)
    path = tmp_path / "q.jsonl"
    log = querylog.QueryLog(model.QueryLogSettings(True, str(path), 1.0, queue_size=1))
    q = make_query()
    reply = upstream_reply(q, "10.0.1.15")
    dropped = metrics.REGISTRY.get_sample_value("forwarder_querylog_dropped_total") or 0.0
    log.record(q, reply, 100.0)
    assert entered.wait(5)
    for _ in range(3):
        log.record(q, reply, 100.0)
    assert metrics.REGISTRY.get_sample_value("forwarder_querylog_dropped_total") == dropped + 2
    release.set()
    log.close()
    assert len(path.read_text().splitlines()) == 2
    log.record(q, reply, 100.0)  # after close: ignored, not an error
    assert metrics.REGISTRY.get_sample_value("forwarder_querylog_dropped_total") == dropped + 2


def test_answers_option_records_the_upstream_reply_before_the_policy(tmp_path: Path) -> None:
    """querylog.answers: the line keeps what the upstream said (public address) next to
    what the client got (the rewrite); without it the two fields are not there."""
    q = make_query()
    before = upstream_reply(q, "52.219.1.1")
    after = upstream_reply(q, "10.0.1.15")
    after.upstream = before  # the policy's reply remembers the upstream's
    path = tmp_path / "answers.jsonl"
    log = querylog.QueryLog(model.QueryLogSettings(True, str(path), answers=True))
    log.record(q, after, 100.0125)
    log.close()
    line = json.loads(path.read_text())
    assert line["answers"] == ["10.0.1.15"]
    assert line["upstream_records"] == [f"{S3}. 60 A 52.219.1.1"]
    assert base64.b64decode(line["upstream_reply"]) == before.wire
    plain = line_for(tmp_path, q, after)
    assert "upstream_records" not in plain and "upstream_reply" not in plain
