"""Active upstream health checks, group canaries, and the readiness they feed to /readyz.

Passive marking (a run of timeouts on real queries) lives in upstream/group.py. This module:

- probes each server of each group in use every `health_check.interval` with
  `health_check.name`/`type`, straight over the group's transport rather than through the
  group, so that a probe measures that one server and is not counted as a forwarded query.
  `fall` failed probes in a row mark a server down, `rise` answered ones mark it up again;
- resolves each group's `canary` through the group every interval: the group is ready only
  while the canary answer has addresses and every one lies in the allowed networks of the
  canary's policy (this catches a Gateway endpoint or the wrong account's resolver before a
  client does);
- answers `readiness(server)`: listeners bound, every group a rule forwards to has a
  server up and a passing canary, and an AWS inventory (with `aws:`) that is not stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from forwarder import metrics
from forwarder.config import model
from forwarder.dns import names, netsets, wire
from forwarder.dns.reply import read as read_reply
from forwarder.errors import FormError, UpstreamError
from forwarder.upstream import transports
from forwarder.upstream.group import Group, ServerState

if TYPE_CHECKING:
    from forwarder.server import Server

log = logging.getLogger("forwarder")

RECHECK = 1.0  # seconds: how soon a reload's new groups are noticed without a wake-up
CLASS_IN = 1

DEFAULT_ALLOWED = netsets.NetworkSet.parse(model.DEFAULT_ALLOWED)  # a canary without a policy

CANARY_NONE = "none"
CANARY_PENDING = "pending"
CANARY_OK = "ok"
CANARY_FAILING = "failing"


def rule_groups(cfg: model.Config) -> list[str]:
    """The upstream groups zone rules forward to, in rule order (these decide readiness)."""
    names: dict[str, None] = {}
    for rule in cfg.rules:
        if rule.action is model.RuleAction.FORWARD and rule.upstream is not None:
            names[rule.upstream] = None
    return list(names)


def groups_in_use(cfg: model.Config) -> list[str]:
    """Groups worth probing: those rules forward to, and policy fallbacks. The implicit
    `system` group is left alone unless something uses it."""
    names = dict.fromkeys(rule_groups(cfg))
    for policy in cfg.policies:
        if policy.fallback is not None:
            names[policy.fallback] = None
    return list(names)


async def probe(server: ServerState, transport: str, check: model.HealthCheck,
                link: transports.Transport | None = None) -> str | None:
    """Sends one health-check query to *server* over *link* (its group's, so tls and https
    probes use the group's connection) or a fresh udp/tcp one; answers None if it
    answered usefully, otherwise why not (a timeout, a network error, a certificate,
    an HTTP status, SERVFAIL or REFUSED)."""
    qname = names.from_text(check.name)
    query = wire.upstream_query(0, wire.RD, wire.question_of(qname, check.qtype, CLASS_IN),
                                False)
    if link is None:  # a server outside a group: udp or tcp
        link = transports.open_link(model.UpstreamGroup("probe", (), transport=transport),
                                    server.server, _ignore_mismatch)
    try:
        data = await link.exchange(query, qname, check.qtype, CLASS_IN, check.timeout)
    except transports.TransportError as e:  # tls and https: the reason names the server
        return e.reason
    except TimeoutError:
        return f"no reply within {check.timeout:g}s"
    except OSError as e:  # asyncio's strerror says "Connect call failed (...)": use errno's
        return os.strerror(e.errno) if e.errno else str(e) or e.__class__.__name__
    rcode = data[3] & 0xF
    if rcode in (wire.Rcode.SERVFAIL, wire.Rcode.REFUSED):
        return f"answered {wire.Rcode(rcode).name}"
    return None


def _ignore_mismatch() -> None:
    pass


def canary_policy(cfg: model.Config, group: str) -> model.Policy | None:
    """The policy a group's canary is judged by: the canary's own, else that of the first
    rule forwarding to the group with one, else None (the default networks)."""
    canary = cfg.group_named(group).canary  # type: ignore[union-attr]
    name = canary.policy if canary is not None else None
    if name is None:
        name = next((r.policy for r in cfg.rules
                     if r.upstream == group and r.policy is not None), None)
    return cfg.policy_named(name) if name is not None else None


def canary_allowed(policy: model.Policy | None) -> tuple[str, netsets.NetworkSet]:
    """The name and allowed networks of a canary's policy (canary_policy)."""
    if policy is None:
        return "default", DEFAULT_ALLOWED
    return policy.name, netsets.NetworkSet.parse(policy.allowed_networks)


async def check_canary(group: Group, canary: model.Canary, policy: str,
                       allowed: netsets.NetworkSet) -> tuple[bool, str]:
    """Resolves *canary* through *group* and judges the answer; answers (passed, what was
    returned or what went wrong)."""
    what = f"{canary.name} {wire.qtype_to_text(canary.qtype)}"
    qname = names.from_text(canary.name)
    question = wire.question_of(qname, canary.qtype, CLASS_IN)
    try:
        reply = await group.ask(question, qname, canary.qtype, CLASS_IN)
    except UpstreamError as e:
        return False, f"{what} did not resolve: {e.text}"
    if reply.rcode != wire.Rcode.NOERROR:
        return False, f"{what} answered {metrics.rcode_label(reply.rcode)} (from {reply.server})"
    try:
        index = reply.index if reply.index is not None else read_reply(reply.wire)
    except FormError as e:
        return False, f"{what}: malformed answer from {reply.server} ({e})"
    addresses = index.addresses()
    if not addresses:
        return False, f"{what} answered no addresses (from {reply.server})"
    found = ", ".join(a.text for a in addresses)
    violations = [a for a in addresses if not allowed.contains_packed(a.packed)]
    if violations:
        public = ", ".join(a.text for a in violations)
        rest = "" if len(violations) == len(addresses) else f"; whole answer: {found}"
        return False, (f"{what} resolved to {public}, outside the allowed networks of policy "
                       f"{policy} (from {reply.server}{rest})")
    return True, f"{what} resolved to {found} (from {reply.server})"


@dataclass(eq=False)
class _ProbeState:
    server: ServerState
    check: model.HealthCheck
    transport: str
    due: float
    rises: int = 0  # answered probes in a row
    falls: int = 0  # failed probes in a row
    seen_healthy: bool = True  # the server's state after our last probe
    task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _CanaryState:
    source: tuple[Any, ...]  # canary, policy and interval, as configured
    settings: tuple[Any, ...]  # canary, policy name, allowed networks, interval
    due: float
    status: str = CANARY_PENDING
    detail: str = ""
    task: asyncio.Task[None] | None = None


class HealthService:
    """Probes upstream servers and canaries in the background and keeps readiness state.

    `changed` is set whenever a server goes up or down or a canary changes state.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.changed = asyncio.Event()
        self._probes: dict[tuple[str, str], _ProbeState] = {}
        self._canaries: dict[str, _CanaryState] = {}
        self._known: set[tuple[str, str]] = set()  # (group, server) labels with a gauge
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.server.health = self
        self.server.on_reload.append(self._reloaded)
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._reloaded in self.server.on_reload:
            self.server.on_reload.remove(self._reloaded)
        tasks = [t for t in (self._task, *self._all_checks()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    def _all_checks(self) -> list[asyncio.Task[None] | None]:
        return [s.task for s in self._probes.values()] + [c.task for c in self._canaries.values()]

    def _reloaded(self, ok: bool) -> None:
        self._wake.set()

    def canary_status(self, group: str) -> tuple[str, str]:
        """(status, detail) of *group*'s canary: pending (also before its first schedule),
        ok or failing. Only meaningful for a group that has a canary."""
        state = self._canaries.get(group)
        if state is None:
            return CANARY_PENDING, ""
        return state.status, state.detail

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Waits until *predicate* holds, re-testing it at each state change.

        Raises:
            TimeoutError: it did not hold within *timeout* seconds.
        """
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    # -- scheduling ------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            try:
                next_due = self._schedule(loop.time())
            except Exception:
                log.exception("health checks: internal error")
                next_due = loop.time() + RECHECK
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(next_due - loop.time(), RECHECK))):
                    await self._wake.wait()

    def _schedule(self, now: float) -> float:
        """Starts the checks that are due for the current runtime; answers when to look again."""
        rt = self.server.runtime
        next_due = now + RECHECK
        probes: set[tuple[str, str]] = set()
        canaries: set[str] = set()
        for name in groups_in_use(rt.config):
            group = rt.groups.get(name)
            if group is None:
                continue
            check = group.cfg.health
            group.actively_checked = check.enabled
            if check.enabled:
                for server in group.servers:
                    key = (name, server.label)
                    probes.add(key)
                    state = self._probe_state(key, server, group, check, now)
                    if state.task is None:
                        if state.due <= now:
                            state.task = asyncio.ensure_future(self._probe(group, state))
                        else:
                            next_due = min(next_due, state.due)
            if group.cfg.canary is not None:
                canaries.add(name)
                canary = self._canary_state(rt.config, group, now)
                if canary.task is None:
                    if canary.due <= now:
                        canary.task = asyncio.ensure_future(self._canary(group, canary))
                    else:
                        next_due = min(next_due, canary.due)
        self._forget(probes, canaries, rt.groups)
        return next_due

    def _probe_state(self, key: tuple[str, str], server: ServerState, group: Group,
                     check: model.HealthCheck, now: float) -> _ProbeState:
        state = self._probes.get(key)
        if state is None or state.check != check or state.transport != group.cfg.transport:
            if state is not None and state.task is not None:
                state.task.cancel()
            state = _ProbeState(server, check, group.cfg.transport, now,
                                seen_healthy=server.healthy)
            self._probes[key] = state
        state.server = server  # a reload may bring a new ServerState for the same label
        return state

    def _canary_state(self, cfg: model.Config, group: Group, now: float) -> _CanaryState:
        policy = canary_policy(cfg, group.name)
        source = (group.cfg.canary, policy, group.cfg.health.interval)
        state = self._canaries.get(group.name)
        if state is not None and state.source == source:
            return state
        # the networks are parsed only when the configuration changed, not on every pass
        settings = (group.cfg.canary, *canary_allowed(policy), group.cfg.health.interval)
        if state is None:
            state = _CanaryState(source, settings, now)
            self._canaries[group.name] = state
            metrics.upstream_canary_ok.labels(group.name).set(0)
        else:
            # re-check at once with the new settings; keep the last verdict meanwhile
            if state.task is not None:
                state.task.cancel()
                state.task = None
            state.source, state.settings = source, settings
            state.due = now
        return state

    def _forget(self, probes: set[tuple[str, str]], canaries: set[str],
                groups: dict[str, Group]) -> None:
        """Drops the state and metric series of servers and canaries no longer configured."""
        for key in set(self._probes) - probes:
            task = self._probes.pop(key).task
            if task is not None:
                task.cancel()
        for name in set(self._canaries) - canaries:
            task = self._canaries.pop(name).task
            if task is not None:
                task.cancel()
            with contextlib.suppress(KeyError):
                metrics.upstream_canary_ok.remove(name)
            self.changed.set()
        known = {(g.name, s.label) for g in groups.values() for s in g.servers}
        for group, label in self._known - known:
            with contextlib.suppress(KeyError):
                metrics.upstream_healthy.remove(group, label)
        self._known = known

    # -- the checks ------------------------------------------------------------------------

    async def _probe(self, group: Group, state: _ProbeState) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        server, check = state.server, state.check
        try:
            problem = await probe(server, state.transport, check,
                                  group.links.get(server.label))
        except Exception as e:  # never let one probe end the checks
            problem = f"internal error: {e!r}"
        finally:
            state.task = None
            state.due = started + check.interval
            self._wake.set()
        metrics.upstream_health_checks.labels(
            group.name, server.label, "failure" if problem else "success").inc()
        server.last_failure = problem
        if server.healthy != state.seen_healthy:
            state.rises = state.falls = 0  # marked by real queries: start counting afresh
        if problem is None:
            state.rises += 1
            state.falls = 0
            if not server.healthy and state.rises >= check.rise:
                server.consecutive_failures = 0
                server.set_healthy(True)
                self.changed.set()
        else:
            state.falls += 1
            state.rises = 0
            if server.healthy and state.falls >= check.fall:
                log.warning("health check of upstream %s in group %s failed %d times in a row: "
                            "%s", server.label, group.name, state.falls, problem)
                server.set_healthy(False)
                self.changed.set()
        state.seen_healthy = server.healthy

    async def _canary(self, group: Group, state: _CanaryState) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        canary, policy, allowed, interval = state.settings
        try:
            passed, detail = await check_canary(group, canary, policy, allowed)
        except Exception as e:
            passed, detail = False, f"internal error: {e!r}"
        finally:
            state.task = None
            state.due = started + interval
            self._wake.set()
        status = CANARY_OK if passed else CANARY_FAILING
        metrics.upstream_canary_ok.labels(group.name).set(1 if passed else 0)
        if status != state.status or (not passed and detail != state.detail):
            if passed:
                log.info("canary of group %s passes: %s", group.name, detail)
            else:
                log.warning("canary of group %s fails: %s", group.name, detail)
            self.changed.set()
        state.status, state.detail = status, detail


def readiness(server: Server) -> tuple[bool, dict[str, Any]]:
    """Answers whether *server* should receive traffic, and a report saying why (not)."""
    rt = server.runtime
    health: HealthService | None = server.health
    listening = server.listening and not server.stopping
    groups: dict[str, Any] = {}
    reasons = [] if listening else ["listeners are not bound"]
    for name in rule_groups(rt.config):
        group = rt.groups.get(name)
        if group is None:
            continue
        servers = {s.label: "up" if s.healthy else "down" for s in group.servers}
        # why servers failed last (a certificate, an HTTP status, ...), while they do
        failures = {s.label: s.last_failure for s in group.servers if s.last_failure}
        if group.cfg.canary is None:
            status, detail = CANARY_NONE, ""
        elif health is None:
            status, detail = CANARY_PENDING, ""
        else:
            status, detail = health.canary_status(name)
        if not any(s.healthy for s in group.servers):
            reason = f"no healthy server: all {len(servers)} down"
            if failures:
                reason += " (" + "; ".join(f"{k}: {v}" for k, v in failures.items()) + ")"
        elif status == CANARY_FAILING:
            reason = f"canary failing: {detail}"
        elif status == CANARY_PENDING:
            reason = "canary not checked yet"
        else:
            reason = "ok"
        ready = reason == "ok"
        if not ready:
            reasons.append(f"group {name}: {reason}")
        groups[name] = {
            "ready": ready,
            "reason": reason,
            "servers": servers,
            "canary": f"failing: {detail}" if status == CANARY_FAILING else status,
        }
        if failures:
            groups[name]["failures"] = failures
    extra: dict[str, Any] = {}
    if rt.config.aws is not None and server.aws is not None:  # the AWS inventory's age
        aws_ready, extra["aws"] = server.aws.readiness()
        if not aws_ready:
            reasons.append(f"aws: {extra['aws']['reason']}")
    ready = not reasons
    return ready, {"ready": ready, "listening": listening, "reason": "; ".join(reasons) or "ok",
                   "groups": groups, **extra}


def service(server: Server) -> HealthService:
    """Answers the health service for *server*. It always runs: a reload may enable checks,
    and it holds the canary state /readyz reports."""
    return HealthService(server)
