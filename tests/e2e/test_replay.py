"""What-if replay: a forwarder records real traffic with `querylog.answers: true`, then
`forwarder replay --config CANDIDATE RECORDING` says what a stricter configuration would
have done to it, offline (the fake upstream receives nothing more)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from forwarder import config as config_mod
from forwarder.ops import replay
from tests.conftest import dump, forwarder_config, logged_queries, query, running
from tests.fakes import FakeUpstream, answers
from tests.test_cli import run_cli

S3 = "s3.ap-northeast-1.amazonaws.com"
SSM = "ssm.ap-northeast-1.amazonaws.com"
WWW = "www.example.com"


def live(upstream: FakeUpstream, log: Path) -> dict[str, Any]:
    """Today's configuration: AWS names watched in monitor mode, the rest unjudged."""
    return forwarder_config(
        {"up": [upstream.addr]},
        zones=[{"match": "amazonaws.com", "upstream": "up", "policy": "private-only"},
               {"match": ".", "upstream": "up"}],
        policies={"private-only": {"mode": "monitor", "on_violation": "servfail"}},
        querylog={"enabled": True, "path": str(log), "answers": True})


def stricter(upstream: FakeUpstream, **policy: Any) -> dict[str, Any]:
    """The candidate: the policy enforced, and example.com protected as well."""
    return forwarder_config(
        {"up": [upstream.addr], "other": ["127.0.0.1:1"]},
        zones=[{"match": "amazonaws.com", "upstream": "up", "policy": "private-only"},
               {"match": ".", "upstream": "up", "policy": "private-only"}],
        policies={"private-only": {"protected": ["default", "example.com"],
                                   "on_violation": "servfail", **policy}})


@pytest.fixture
async def recording(tmp_path: Path, upstream: FakeUpstream) -> Path:
    """Traffic through the live configuration: S3 answers public (twice: the second from
    the cache), SSM private, www public but unprotected."""
    upstream.handler = answers({(S3, "A"): ["A 52.219.1.1"], (SSM, "A"): ["A 10.0.1.20"],
                                (WWW, "A"): ["A 192.0.2.1"]})
    log = tmp_path / "queries.jsonl"
    async with running(live(upstream, log)) as srv:
        for name in (S3, S3, SSM, WWW):
            await query(srv, "udp", name)
        await query(srv, "udp", "x.example.com", "TXT")
    return log


def test_recording_carries_the_upstream_answer(recording: Path) -> None:
    """With querylog.answers the line shows what the upstream said before the policy."""
    first, cached, *_ = logged_queries(recording)
    assert first["upstream_records"] == [f"{S3}. 300 A 52.219.1.1"]
    assert base64.b64decode(first["upstream_reply"])[12:].startswith(b"\x02s3")
    assert (first["verdict"], first["action"]) == ("violation", "servfail")  # monitor mode
    assert cached["answered_by"] == "cache"
    assert cached["upstream_reply"] is None


async def test_replay_under_a_stricter_policy(tmp_path: Path, recording: Path,
                                              upstream: FakeUpstream) -> None:
    candidate = tmp_path / "stricter.yaml"
    candidate.write_text(dump(stricter(upstream)))
    asked = len(upstream.received)
    code, out, err = await run_cli("replay", "--config", str(candidate), str(recording))
    assert code == 0, err
    assert len(upstream.received) == asked, "replay sent a query"
    assert out.startswith(f"replayed 5 of 5 lines under {candidate} (no query sent): "
                          "3 would change")
    rows = table(out)
    assert rows[0] == ["NAME", "TYPE", "OLD verdict/action", "NEW verdict/action", "LINES"]
    # monitored before, enforced now: the two S3 lines (one a cache hit)
    assert [S3, "A", "violation/servfail (monitor)", "violation/servfail", "2"] in rows
    assert [WWW, "A", "-/-", "violation/servfail", "1"] in rows
    assert len(rows) == 3  # SSM (private) and the TXT (no address) do not change
    assert "  servfail (monitor) -> servfail: 2" in out
    assert "  - -> servfail: 1" in out
    assert "note: 1 cache hits judged on the reply recorded before them" in out


async def test_replay_shows_monitor_becoming_rewrite(tmp_path: Path, recording: Path,
                                                     upstream: FakeUpstream) -> None:
    candidate = tmp_path / "rewrite.yaml"
    candidate.write_text(dump(stricter(upstream, on_violation="rewrite", rewrite={
        S3: {"A": ["10.0.1.15"]}})))
    code, out, err = await run_cli("replay", "-c", str(candidate), str(recording))
    assert code == 0, err
    rows = table(out)
    assert [S3, "A", "violation/servfail (monitor)", "violation/rewrite", "2"] in rows
    # www has no rewrite key: the `then` action (servfail) applies
    assert [WWW, "A", "-/-", "violation/servfail", "1"] in rows
    assert "  servfail (monitor) -> rewrite: 2" in out


def table(out: str) -> list[list[str]]:
    """The rows of replay's change table (columns are two or more spaces apart)."""
    return [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()
            if line.startswith("  ") and "->" not in line and not line.startswith("  ...")]


def lines_of(path: Path) -> list[dict[str, Any] | None]:
    return list(replay.read_lines([str(path)]))


async def test_fallback_is_named_but_not_asked(recording: Path, upstream: FakeUpstream) -> None:
    cfg = config_mod.from_data(stricter(upstream, on_violation="fallback", fallback="other"))
    report = await replay.replay(cfg, lines_of(recording))
    assert report.needs_network == 3  # S3 twice, www once: each would ask `other`
    assert "note: 3 lines would ask an upstream again" in replay.render(report, "c", 10)
    changed = {(n, str(new)) for (n, _t, _old, new) in report.changes}
    assert changed == {(S3, "violation/fallback"), (WWW, "violation/fallback")}


async def test_acl_and_refusing_rules_are_replayed(recording: Path,
                                                   upstream: FakeUpstream) -> None:
    cfg_data = stricter(upstream)
    cfg_data["zones"].insert(0, {"match": "example.com", "action": "refuse"})
    cfg_data["acl"] = {"allow": ["10.0.0.0/8"]}  # the recorded client, 127.0.0.1, is out
    report = await replay.replay(config_mod.from_data(cfg_data), lines_of(recording))
    assert {str(new) for (*_k, new) in report.changes} == {"-/acl_refused"}
    del cfg_data["acl"]
    report = await replay.replay(config_mod.from_data(cfg_data), lines_of(recording))
    refused = (WWW, "A", replay.Outcome("-", "-"), replay.Outcome("-", "refused"))
    assert report.changes[refused] == 1


async def test_unchanged_configuration_changes_nothing(tmp_path: Path, recording: Path,
                                                       upstream: FakeUpstream) -> None:
    cfg = config_mod.from_data(live(upstream, tmp_path / "unused.jsonl"))
    report = await replay.replay(cfg, lines_of(recording))
    assert (report.judged, sum(report.changes.values()), report.unreadable) == (5, 0, 0)
    assert "0 would change" in replay.render(report, "same.yaml", 10)


async def test_bad_lines_are_counted_and_a_plain_log_is_explained(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    path = tmp_path / "plain.jsonl"
    plain = {"name": S3, "type": "A", "verdict": "pass", "action": "pass",
             "answered_by": "upstream"}
    broken = {**plain, "upstream_reply": "not base64!"}
    path.write_text("\n".join([json.dumps(plain), "{not json", json.dumps([1]),
                               json.dumps(broken)]) + "\n")
    report = await replay.replay(config_mod.from_data(stricter(upstream)), lines_of(path))
    assert (report.lines, report.judged, report.unreadable, report.not_replayable) == \
        (4, 0, 3, 1)
    text = replay.render(report, "c.yaml", 10)
    assert "note: 3 lines could not be read" in text
    plain_only = await replay.replay(config_mod.from_data(stricter(upstream)),
                                     [plain, plain])
    assert replay.render(plain_only, "c.yaml", 10).startswith(
        "the recording has no upstream answers: record with "
        "`querylog: {enabled: true, answers: true}`")


async def test_cli_errors(tmp_path: Path, recording: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("zones: [{match: ., upstream: nowhere}]\n")
    code, _, err = await run_cli("replay", "-c", str(bad), str(recording))
    assert code == 2 and "unknown upstream group 'nowhere'" in err
    good = tmp_path / "good.yaml"
    good.write_text("zones: [{match: ., action: refuse}]\n")
    code, _, err = await run_cli("replay", "-c", str(good), str(tmp_path / "missing.jsonl"))
    assert code == 1 and "missing.jsonl: cannot read the recording" in err


async def test_replay_judges_a_corporate_cname_by_the_guard_of_its_target(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    """Recorded with monitor mode on the AWS rule and `.` without a policy: a corporate
    name that is a CNAME into S3 with a public address. Replayed with the AWS rule's policy
    enforced, the candidate's `.` still has no policy of its own, and the bucket name's
    guard (the AWS rule's policy) blocks it."""
    bucket = f"my-bucket.{S3}"
    upstream.handler = answers({("files.corp.example", "A"): [
        f"files.corp.example. CNAME {bucket}.", f"{bucket}. A 52.219.1.1"]})
    log = tmp_path / "queries.jsonl"
    async with running(live(upstream, log)) as srv:
        await query(srv, "udp", "files.corp.example")
    [line] = logged_queries(log)
    assert (line["verdict"], line["policy"], line["protected"]) == (
        "violation", "private-only", bucket)  # monitor mode already saw it
    candidate = forwarder_config(
        {"up": [upstream.addr]},
        zones=[{"match": "amazonaws.com", "upstream": "up", "policy": "private-only"},
               {"match": ".", "upstream": "up"}],
        policies={"private-only": {"on_violation": "servfail"}})
    judge = replay.Judge(config_mod.from_data(candidate, "candidate.yaml"))
    outcome, offline = await judge.outcome(line, base64.b64decode(line["upstream_reply"]))
    assert (outcome.verdict, outcome.action, outcome.monitor, offline) == (
        "violation", "servfail", False, False)
