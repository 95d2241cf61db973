"""`forwarder explain NAME [TYPE] -c FILE [--client ADDR]`: one query through the real
pipeline, with tracing on, and every step printed: the rule, the upstream group and server
asked, the raw upstream answer, the policy verdict with its reasons, for each name in the
answer whether it is protected (by which list entry, under which policy), and the answer
the client would get.

No listener is started: the query is built on the wire as from 127.0.0.1 (or the client
ADDR, whose `clients:` rules and hooks then apply) over UDP with a 65535-byte buffer
(nothing truncates), and handed to `Pipeline.resolve` of a Runtime built from the file (so
the cache starts empty and the upstream is asked).
With an `aws:` section the AWS inventory is read as the server reads it at start (the
API, else the state file), so `aws:` references answer as they would there.

Exit codes: 0 an answer was produced (whatever its rcode), 1 none was (every upstream
failed, the query was dropped, or an internal error), 2 the configuration or the type is
invalid.
"""

from __future__ import annotations

import ipaddress
import secrets
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from forwarder import runtime
from forwarder.config import model
from forwarder.dns import message, names, wire
from forwarder.dns import reply as reply_mod
from forwarder.errors import ConfigError, FormError
from forwarder.pipeline import Pipeline
from forwarder.process import exits
from forwarder.query import DROP, Query, Reply

if TYPE_CHECKING:
    from forwarder.aws.inventory import Inventory
    from forwarder.stages.policy.guard import Protection

CLIENT = ("127.0.0.1", 53000)
INDENT = "    "


def make_query(name: str, qtype: int, client: str = CLIENT[0]) -> Query:
    """The query a dig-like client at *client* would send: RD, EDNS with a 65535-byte
    buffer. Raises ValueError for a name that is not a domain name."""
    qname = names.from_text(name)
    data = wire.upstream_query(secrets.randbits(16), wire.RD,
                               wire.question_of(qname, qtype, 1), False)
    q = Query.from_wire(data, (client, CLIENT[1]), "udp", time.monotonic())
    q.udp_size = 65535
    q.trace = []
    return q


async def explain(cfg: model.Config, name: str, qtype_text: str = "A",
                  out: TextIO | None = None, inventory: Inventory | None = None,
                  client: str = CLIENT[0]) -> int:
    """Resolves one name under *cfg* (with the AWS *inventory* for its `aws:` references)
    as asked by *client* and prints each step to *out*; answers the exit code."""
    out = out or sys.stdout
    try:
        qtype = wire.qtype_from_text(qtype_text)
        ipaddress.ip_address(client)
        q = make_query(name, qtype, client)
    except (ValueError, UnicodeError) as e:
        print(f"forwarder explain: {e}", file=sys.stderr)
        return exits.EXIT_CONFIG
    try:
        rt = runtime.build(cfg, inventory=inventory)
    except ConfigError as e:
        print(e.render(), file=sys.stderr)
        return exits.EXIT_CONFIG
    try:
        reply = await Pipeline(runtime.RuntimeHolder(rt)).resolve(q)
    finally:
        rt.close()
    report(cfg, q, reply, out, rt.protection)
    if reply is DROP or reply.answered_by == "error":
        return exits.EXIT_FAILURE
    return exits.EXIT_OK


def report(cfg: model.Config, q: Query, reply: Reply, out: TextIO,
           protection: Protection | None = None) -> None:
    """Prints what happened to *q*, section by section (with *protection*, the names of the
    answer and what protects them)."""

    def say(label: str, text: str) -> None:
        print(f"{label + ':':<14}{text}", file=out)

    say("query", f"{q.name} {q.type_name} (client {q.client[0]}, {q.transport})")
    rule = q.rule
    if rule is None:
        say("rule", "none matches this name")
    else:
        what = {model.RuleAction.FORWARD: f"forward to group {rule.upstream}",
                model.RuleAction.LOCAL: "answer from local records",
                model.RuleAction.REFUSE: "refuse"}[rule.action]
        policy = f", policy {rule.policy}" if rule.policy else ""
        named = f" ({rule.name})" if rule.name != rule.match else ""
        say("rule", f"zones[{rule.index}]{named} match {rule.match!r}: {what}{policy}")
    tries = [step.removeprefix("ask ").replace(f" in group {q.group}", "")
             for step in q.trace or () if step.startswith("ask ")]
    if q.group is not None:
        asked = "; ".join(tries) or "nothing (no upstream was asked)"
        group = cfg.group_named(q.group)
        over = f" over {group.transport}" if group is not None and group.transport != "udp" \
            else ""
        say("upstream", f"group {q.group}{over}: asked {asked}")
    elif rule is not None and rule.action is model.RuleAction.LOCAL:
        say("upstream", "none: local records")
    else:
        say("upstream", "none asked")
    raw = reply.upstream_reply if reply is not DROP else None
    if raw is not None:
        say("raw answer", f"{message.rcode_to_text(raw.rcode)} from {raw.server or '?'}")
        _records(raw.wire, out)
        for code, text in raw.ede:
            print(f"{INDENT}EDE {code}: {text}", file=out)
    elif q.group is not None:
        say("raw answer", "none: no server answered")
    say("verdict", _verdict(cfg, q, reply))
    policy_name = reply.protection[0] if reply.protection is not None else (
        rule.policy if rule is not None else None)
    for step in q.trace or ():
        if policy_name is not None and step.startswith(f"policy {policy_name}:"):
            print(f"{INDENT}{step.removeprefix(f'policy {policy_name}: ')}", file=out)
    if protection is not None and reply is not DROP:
        _names(q, reply, protection, say, out)
    if reply is DROP:
        say("final answer", "none: the query is dropped (no response is sent)")
    else:
        flags = " (authoritative)" if wire.U16.unpack_from(reply.wire, 2)[0] & wire.AA else ""
        say("final answer", f"{message.rcode_to_text(reply.rcode)}{flags}, answered by "
                            f"{reply.answered_by}")
        _records(reply.to_client(q), out)
        for code, text in reply.ede:
            name = _EDE_NAMES.get(code, "")
            print(f"{INDENT}EDE {code}{f' ({name})' if name else ''}: {text}", file=out)
    if q.trace:
        print("steps:", file=out)
        for i, step in enumerate(q.trace, 1):
            print(f"{INDENT}{i}. {step}", file=out)


_EDE_NAMES = {0: "Other", 3: "Stale Answer", 4: "Forged Answer", 14: "Not Ready",
              15: "Blocked", 18: "Prohibited", 22: "No Reachable Authority",
              23: "Network Error"}


def _verdict(cfg: model.Config, q: Query, reply: Reply) -> str:
    rule = q.rule
    judged = reply.protection
    hook = reply.answered_by == "hook"
    if hook and judged is None:
        return "none: no policy judged the hook's answer (trusted, or no name protected)"
    if rule is not None and rule.action is model.RuleAction.LOCAL and not hook:
        if reply.verdict is not None:  # a CNAME out of the zone, followed and judged
            action = f": {reply.action}" if reply.verdict == "violation" else ""
            return (f"{reply.verdict}{action}, by the policy of the rule that routes the "
                    "CNAME target (see the steps)")
        return "none: local records are judged when the configuration loads"
    if judged is None:
        refused = rule.action is model.RuleAction.REFUSE if rule is not None else q.group is None
        if refused:
            return "none: the query is refused before any answer is judged"
        if rule is not None and rule.opt_out:
            return "none: the rule says policy: none"
        if rule is None or rule.policy is None:
            return ("not judged: no name in the answer is protected by the policy that "
                    "guards it")
        if reply.verdict == "not_protected":
            return f"not judged: no name in the answer is protected by policy {rule.policy}"
        return f"none: policy {rule.policy} did not run (no upstream answer)"
    name, found, where = judged
    policy = cfg.policy_named(name)
    mode = policy.mode.value if policy is not None else "?"
    trigger = ""
    if rule is None or rule.policy != name:  # a guard, not the rule's own policy
        shown = names.to_text(found) if found is not None else q.name
        place = "query name" if where == "qname" else "answer"
        trigger = f"; it guards {shown}, found in the {place}"
    if reply.verdict == "violation":
        if mode == model.PolicyMode.MONITOR:
            return (f"violation (policy {name}, mode monitor): would {reply.action}; "
                    f"the answer passes unchanged{trigger}")
        return f"violation (policy {name}, mode {mode}): {reply.action}{trigger}"
    return f"{reply.verdict} (policy {name}, mode {mode}){trigger}"


def _names(q: Query, reply: Reply, protection: Protection, say: Any, out: TextIO) -> None:
    """The names of the answer that was judged (the hook's, else the upstream's, else the
    one sent), each with what protects it."""
    judged = reply if reply.answered_by == "hook" else reply.upstream_reply or reply
    try:
        index = judged.index or reply_mod.read(judged.wire)
    except FormError:
        return
    rows = protection.describe(q, index)
    width = max(len(name) for name, _ in rows)
    say("names", f"as client {q.client[0]} sees them (for {q.type_name})")
    for name, status in rows:
        print(f"{INDENT}{name:<{width}}  {status}", file=out)


def _records(data: bytes, out: TextIO) -> None:
    """Prints the answer and authority records of a message, one per line, as dig does."""
    try:
        sections = message.parse_sections(data)
    except ValueError as e:
        print(f"{INDENT}(cannot show the records: {e})", file=out)
        return
    for section, records in (("", sections.answer), ("authority: ", sections.authority)):
        for rec in records:
            value = _absolute(rec.value) if rec.type in _NAME_TYPES else rec.value
            print(f"{INDENT}{section}{_absolute(rec.name)} {rec.ttl} IN {rec.type} {value}",
                  file=out)
    if not sections.answer and not sections.authority:
        print(f"{INDENT}(no records)", file=out)


_NAME_TYPES = frozenset({"CNAME", "NS", "PTR", "DNAME"})


def _absolute(name: str) -> str:
    return name if name.endswith(".") else name + "."


def main(name: str, qtype: str, config_path: str, client: str = CLIENT[0]) -> int:
    """`forwarder explain NAME [TYPE] -c FILE [--client ADDR]`."""
    from forwarder.process import exits

    cfg = exits.load_or_report(config_path)
    if cfg is None:
        return exits.EXIT_CONFIG
    inventory = None
    if cfg.aws is not None and cfg.aws.discovers:  # as the server: the API, else the state file
        from forwarder.aws import commands

        inventory = commands.obtain(cfg.aws)
    return exits.run_loop(explain(cfg, name, qtype, inventory=inventory, client=client))
