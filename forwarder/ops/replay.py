"""`forwarder replay --config CANDIDATE RECORDING...`: what a configuration change would do
to recorded traffic, judged offline.

The recording is the JSON query log written with `querylog.answers: true`: each line of
a query sent upstream carries the upstream's reply before the policy (`upstream_reply`,
base64 of the DNS message). Each such line is judged again under the candidate: its
client against the candidate's acl, its name and type through the candidate's zone rules,
and the recorded reply through the candidate rule's answer policy (the same
`AnswerPolicy.decide` and `enforce` the server runs). A line answered from the cache is
judged on the last reply recorded for its name and type, as the cache would have served
it. Lines without any recorded reply (local answers, refusals, a log written without
`answers`) are counted, not judged.

Nothing is sent: the recorded reply stands in for the upstream whatever group the
candidate routes to, hooks are not run, and an action that would ask an upstream again
(`fallback`, `rewrite_cname`, or a `then` that leads there) is reported as that action
with its outcome unknown.

What is printed: every (name, type, old verdict/action, new verdict/action) that changes
what a client gets (an answer newly judged and passed is no change),
with how many lines it covers, most first; then the changes counted by old and new
action, and the totals.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from forwarder.config import model
from forwarder.dns import names, wire
from forwarder.query import Query, Reply
from forwarder.stages import policy as policy_stage
from forwarder.stages.acl import Acl
from forwarder.stages.policy import guard
from forwarder.stages.router import Router

NONE = "-"  # no verdict or action (a rule without a policy)
PASSED = frozenset((NONE, "pass", "not_protected"))  # verdicts that let the answer through
CLASS_IN = 1


class NeedsNetwork(Exception):
    """The policy would ask an upstream group again: replay does not."""

    def __init__(self, group: str) -> None:
        super().__init__(group)
        self.group = group


class _OfflineGroup:
    """Stands in for an upstream group while the policy acts: any query it would send
    ends the judgement instead (NeedsNetwork)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def exchange(self, *_args: Any) -> Reply:
        raise NeedsNetwork(self.name)

    async def ask(self, *_args: Any) -> Reply:
        raise NeedsNetwork(self.name)


class _OfflineRuntime:
    """What the policy reads of a Runtime: the groups by name (fallback), all offline."""

    def __init__(self, cfg: model.Config) -> None:
        self.groups = {g.name: _OfflineGroup(g.name) for g in cfg.upstreams}


@dataclass(frozen=True, slots=True)
class Outcome:
    """A query's verdict and the policy's action; *monitor*: the action was only counted
    and logged, the answer passed (a policy in `mode: monitor`)."""

    verdict: str
    action: str
    monitor: bool = False

    @property
    def passes(self) -> bool:
        """The answer went to the client as the upstream gave it, judged or not."""
        return self.verdict in PASSED and self.action in (NONE, "pass")

    @property
    def effect(self) -> str:
        return f"{self.action} (monitor)" if self.monitor else self.action

    def __str__(self) -> str:
        return f"{self.verdict}/{self.effect}"


@dataclass
class Report:
    lines: int = 0
    judged: int = 0
    from_cache: int = 0  # judged on the reply recorded earlier for the same name and type
    not_replayable: int = 0  # no reply recorded for the name (local, refused, no answers)
    unreadable: int = 0  # not JSON, or a field missing or malformed
    needs_network: int = 0  # the candidate would ask an upstream again: outcome unknown
    recorded_answers: bool = False  # any line carried `upstream_reply`
    changes: Counter[tuple[str, str, Outcome, Outcome]] = field(default_factory=Counter)


class Judge:
    """The candidate configuration's acl, rules and policies, ready to judge lines."""

    def __init__(self, cfg: model.Config) -> None:
        self.cfg = cfg
        self.acl = Acl(cfg.acl)
        self.router = Router(cfg.rules)
        self.policies = policy_stage.build(cfg)
        self.protection = guard.Protection(cfg, self.policies, self.router)
        self.runtime = _OfflineRuntime(cfg)

    async def outcome(self, line: dict[str, Any], upstream: bytes) -> tuple[Outcome, bool]:
        """The candidate's verdict and action for the query of *line* answered *upstream*
        by the upstream; and whether that needed a network it was not given."""
        qname = names.from_text(line["name"])
        qtype = wire.qtype_from_text(line["type"])
        client = str(line.get("client") or "127.0.0.1")
        if not self.acl.allows(client):
            return Outcome(NONE, "acl_refused"), False
        rule = self.router.route(qname, qtype, client)
        if rule is None or rule.action is model.RuleAction.REFUSE:
            return Outcome(NONE, "refused"), False
        if rule.action is model.RuleAction.LOCAL:
            return Outcome(NONE, "local"), False
        q = _query(qname, qtype, client, str(line.get("protocol") or "udp"))
        q.rule = rule
        q.group = rule.upstream
        decide = self.protection.judge_of(q)  # the rule's policy, or the names' guards
        if decide is None:
            return Outcome(NONE, NONE), False
        reply = Reply(upstream, upstream[3] & 0xF, "upstream", (), line.get("server"))
        decided = decide(q, reply, rule.upstream or NONE)
        offline = False
        if isinstance(decided, Reply):
            if decided.protection is None and decided.verdict != "not_protected":
                return Outcome(NONE, NONE), False  # no policy judged it
            verdict, action = decided.verdict, decided.action
            judge = decided.protection[0] if decided.protection is not None else rule.policy
            answer_policy = self.policies[judge or ""]
        else:
            answer_policy = self.protection.enforcer(q, decided)
            verdict, action = "violation", None
            group = self.runtime.groups.get(rule.upstream or "", _OfflineGroup(NONE))
            try:
                enforced = await answer_policy.enforce(
                    q, decided, group, self.runtime.groups)  # type: ignore[arg-type]
                action = enforced.action
            except NeedsNetwork:
                offline = True
                action = answer_policy.cfg.on_violation.value
        monitor = answer_policy.monitor_only and verdict == "violation"
        return Outcome(verdict or NONE, action or NONE, monitor), offline


def _query(qname: bytes, qtype: int, client: str, transport: str) -> Query:
    data = wire.upstream_query(0, wire.RD, wire.question_of(qname, qtype, CLASS_IN), False)
    return Query.from_wire(data, (client, 0), transport if transport in ("udp", "tcp")
                           else "udp", 0.0)


def recorded(line: dict[str, Any], monitor: bool) -> Outcome:
    return Outcome(line.get("verdict") or NONE, line.get("action") or NONE, monitor)


def monitored(line: dict[str, Any]) -> bool:
    """Whether the line's violation was only monitored: the upstream's answer went to the
    client unchanged although the policy named another action (`mode: monitor`)."""
    return (line.get("verdict") == "violation" and line.get("answered_by") == "upstream"
            and line.get("action") != "monitor")


def read_lines(paths: Iterable[str]) -> Iterator[dict[str, Any] | None]:
    """The recording's lines, parsed; None for a line that is not a JSON object.
    Raises OSError when a file cannot be read."""
    for path in paths:
        with sys.stdin if path == "-" else open(path, encoding="utf-8") as f:
            for text in f:
                if not text.strip():
                    continue
                try:
                    line = json.loads(text)
                except ValueError:
                    yield None
                    continue
                yield line if isinstance(line, dict) else None


async def replay(cfg: model.Config, lines: Iterable[dict[str, Any] | None]) -> Report:
    """Judges every recorded line under *cfg*; answers what would change."""
    judge = Judge(cfg)
    report = Report()
    # (name, type) -> the latest recorded reply, and whether its violation was monitored
    last: dict[tuple[str, str], tuple[bytes, bool]] = {}
    quiet = logging.getLogger("forwarder.policy")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # one warning per violation is the server's log, not ours
    try:
        for line in lines:
            report.lines += 1
            try:
                await _one(judge, report, last, line)
            except (KeyError, TypeError, ValueError, binascii.Error):
                report.unreadable += 1
    finally:
        quiet.setLevel(level)
    return report


async def _one(judge: Judge, report: Report, last: dict[tuple[str, str], tuple[bytes, bool]],
               line: dict[str, Any] | None) -> None:
    if line is None:
        raise ValueError("not a JSON object")
    key = (str(line["name"]).lower(), str(line["type"]).upper())
    if "upstream_reply" in line:
        report.recorded_answers = True
    data = line.get("upstream_reply")
    if data is not None:
        upstream = base64.b64decode(data, validate=True)
        if len(upstream) < 12:
            raise ValueError("a recorded reply shorter than a DNS header")
        monitor = monitored(line)
        last[key] = upstream, monitor
    elif line.get("answered_by") == "cache" and key in last:
        upstream, monitor = last[key]
        report.from_cache += 1
    else:
        report.not_replayable += 1
        return
    new, offline = await judge.outcome(line, upstream)
    report.judged += 1
    report.needs_network += offline
    old = recorded(line, monitor)
    if new != old and not (new.passes and old.passes):  # a newly judged pass changes nothing
        report.changes[(key[0], key[1], old, new)] += 1


def render(report: Report, candidate: str, top: int) -> str:
    """The report as the operator reads it."""
    out = []
    if report.lines and not report.recorded_answers:
        out.append("the recording has no upstream answers: record with "
                   "`querylog: {enabled: true, answers: true}` to replay it")
    changed = sum(report.changes.values())
    out.append(f"replayed {report.judged} of {report.lines} lines under {candidate} "
               f"(no query sent): {changed} would change")
    if report.changes:
        rows = sorted(report.changes.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1]))
        header = ("NAME", "TYPE", "OLD verdict/action", "NEW verdict/action", "LINES")
        table = [header] + [(n, t, str(o), str(w), str(c)) for (n, t, o, w), c in rows[:top]]
        widths = [max(len(r[i]) for r in table) for i in range(4)]
        for r in table:
            out.append("  " + "  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
        if len(rows) > top:
            out.append(f"  ... {len(rows) - top} more (--top)")
        by_action: Counter[tuple[str, str]] = Counter()
        for (_n, _t, old, new), count in report.changes.items():
            by_action[(old.effect, new.effect)] += count
        out.append("changes by action:")
        for (old_action, new_action), count in sorted(by_action.items(), key=lambda kv: -kv[1]):
            out.append(f"  {old_action} -> {new_action}: {count}")
    notes = [f"{report.from_cache} cache hits judged on the reply recorded before them",
             f"{report.not_replayable} lines without a recorded reply (local answers, "
             "refusals, or logged without querylog.answers)"]
    if report.needs_network:
        notes.append(f"{report.needs_network} lines would ask an upstream again (fallback, "
                     "rewrite_cname): the action is shown, its answer is not known offline")
    if report.unreadable:
        notes.append(f"{report.unreadable} lines could not be read")
    out.extend(f"note: {n}" for n in notes)
    return "\n".join(out)


def main(config_path: str, recordings: list[str], top: int = 50) -> int:
    """Runs `forwarder replay`; answers the exit code: 0 done (whatever changes), 1 a
    recording cannot be read, 2 the candidate configuration is invalid."""
    from forwarder.process import exits

    cfg = exits.load_or_report(config_path)
    if cfg is None:
        return exits.EXIT_CONFIG
    try:
        report = asyncio.run(replay(cfg, read_lines(recordings)))
    except OSError as e:
        print(f"{e.filename}: cannot read the recording: {e.strerror}", file=sys.stderr)
        return exits.EXIT_FAILURE
    print(render(report, config_path, top))
    return exits.EXIT_OK
