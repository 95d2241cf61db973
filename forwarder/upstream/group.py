"""An upstream group at run time: try servers in selection order within the per-try timeout
and the total budget, retry truncated UDP replies over TCP, fail over, and say why it failed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time

from forwarder import metrics
from forwarder.config import model
from forwarder.dns import wire
from forwarder.dns.reply import read as read_reply
from forwarder.errors import FormError, UpstreamError
from forwarder.query import Query, Reply
from forwarder.upstream import selection, transports
from forwarder.upstream.transports import tcp, udp

log = logging.getLogger("forwarder")

UPSTREAM_ERROR_KINDS = ("timeout", "refused", "servfail", "mismatch", "tcp", "truncated",
                        "network", "malformed", "certificate", "pin", "handshake",
                        "handshake_timeout", "http_status", "http", "connection")
MIN_TRY = 0.01  # seconds: timers fire a little early; a try with less left is no try
FAILOVER_RCODES = (wire.Rcode.SERVFAIL, wire.Rcode.REFUSED)


class ServerState:
    """One upstream server of a group: its address, health and smoothed RTT."""

    __slots__ = (
        "__weakref__",
        "consecutive_failures",
        "count_mismatch",
        "group",
        "healthy",
        "host",
        "label",
        "last_failure",
        "port",
        "rtt",
        "server",
        "srtt",
        "udp_pool",
        "udp_queries",
        "udp_sent",
    )

    def __init__(self, group: str, server: model.Server) -> None:
        self.group = group
        self.host = server.host
        self.port = server.port
        self.label = server.label
        self.server = server
        self.last_failure: str | None = None  # why the last try or probe failed, for /readyz
        self.healthy = True
        self.srtt = 0.0
        self.consecutive_failures = 0
        # a reply that is not ours (stray, wrong ID or question): counted, never used
        self.count_mismatch = metrics.upstream_errors.labels(group, server.label, "mismatch").inc
        self.udp_pool = udp.UdpPool(server.host, server.port, self.count_mismatch)
        # per-query counts in plain numbers, folded into the metrics on collection
        self.udp_sent = 0
        self.udp_queries = metrics.upstream_queries.labels(group, server.label, "udp")
        self.rtt = metrics.HistogramCounts(metrics.upstream_duration.labels(group, server.label))
        metrics.PENDING.flushers.add(self)

    def flush(self) -> None:
        """Folds the UDP query count and round-trip times into the metrics."""
        sent, self.udp_sent = self.udp_sent, 0
        if sent:
            self.udp_queries.inc(sent)
        self.rtt.flush()

    def answered(self, started: float) -> None:
        """Records the round-trip time of an exchange that began at perf_counter *started*."""
        rtt = time.perf_counter() - started
        self.rtt.observe(rtt)
        self.srtt = rtt if self.srtt == 0.0 else 0.7 * self.srtt + 0.3 * rtt

    def close(self) -> None:
        """Closes the server's upstream sockets and forgets its metric series (a reload
        dropped it, or the process is stopping)."""
        self.udp_pool.close()
        metrics.PENDING.flushers.discard(self)
        series = [(metrics.upstream_queries, (t,)) for t in model.TRANSPORTS]
        series += [(metrics.upstream_errors, (k,)) for k in UPSTREAM_ERROR_KINDS]
        series += [(metrics.upstream_health_checks, (r,)) for r in ("success", "failure")]
        series += [(metrics.upstream_duration, ())]
        series += [(metrics.upstream_connections, (t, event)) for t in model.ENCRYPTED
                   for event in ("opened", "reused", "failed")]
        series += [(metrics.upstream_handshake_duration, (t,)) for t in model.ENCRYPTED]
        for metric, rest in series:
            with contextlib.suppress(KeyError):
                metric.remove(self.group, self.label, *rest)

    def set_healthy(self, healthy: bool) -> None:
        if healthy != self.healthy:
            log.warning("upstream %s in group %s is %s", self.label, self.group,
                        "up" if healthy else "down")
        self.healthy = healthy
        metrics.upstream_healthy.labels(self.group, self.label).set(1 if healthy else 0)


class Attempts:
    """Where one question stands with a group: its deadline, the server order, the tries
    made and why they failed. `Group.start` makes the first try from a reader callback;
    `Group.ask` makes the rest (or all of them)."""

    __slots__ = ("attempt", "deadline", "failures", "last_reply", "order", "timeouts",
                 "truncated")

    def __init__(self, deadline: float, order: list[ServerState]) -> None:
        self.deadline = deadline
        self.order = order
        self.attempt = 0  # the next try
        self.failures: list[str] = []
        self.timeouts = 0
        self.last_reply: Reply | None = None  # a SERVFAIL or REFUSED, passed on if all fail
        self.truncated: ServerState | None = None  # sent TC over UDP: ask it over TCP next


class Group:
    """Exchanges queries with the servers of one configured upstream group."""

    def __init__(self, cfg: model.UpstreamGroup, servers: list[ServerState] | None = None,
                 budget: int | None = None):
        self.cfg = cfg
        self.name = cfg.name
        # queries in flight to this group at most
        self.budget = budget or cfg.max_inflight or model.Limits().max_inflight
        self.load = 0  # queries in flight to this group (pipeline.resolution counts them)
        self.servers = servers or [ServerState(cfg.name, s) for s in cfg.servers]
        self.selection = selection.build(cfg.selection)
        self.actively_checked = False  # set by the health service while it probes this group
        # per configuration: a reload that is rejected must not touch the running links
        self.links = transports.links(cfg, [s.server for s in self.servers])
        for s in self.servers:
            metrics.upstream_healthy.labels(self.name, s.label).set(1 if s.healthy else 0)

    def attempts(self, loop: asyncio.AbstractEventLoop) -> Attempts:
        """A fresh question's state: the budget starts now, servers in selection order."""
        # with active checks a down server is skipped (a probe brings it back); without them
        # it is only moved last, so that a reply to a real query can bring it back
        order = selection.healthy_first(self.selection.order(self.servers),
                                        skip_down=self.actively_checked)
        return Attempts(loop.time() + self.cfg.budget, order)

    async def exchange(self, q: Query, state: Attempts | None = None) -> Reply:
        """Answers the upstream reply to *q* (OPT removed). Raises UpstreamError."""
        return await self.ask(q.question, q.qname, q.qtype, q.qclass, q.flags, q.do, q, state)

    async def ask(
        self, question: bytes, qname: bytes, qtype: int, qclass: int, flags: int = wire.RD,
        do: bool = False, q: Query | None = None, state: Attempts | None = None,
    ) -> Reply:
        """Asks the group one question, going on from *state* when tries were made already.
        Raises UpstreamError when every try failed."""
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        if state is None:
            state = self.attempts(loop)
        order = state.order
        if not order:  # only inventory servers, and the AWS inventory has none (yet)
            raise UpstreamError(wire.Ede.NO_REACHABLE_AUTHORITY,
                                f"upstream group {self.name} has no servers")
        while True:
            over_tcp = state.truncated is not None
            if state.truncated is not None:  # the same try goes on over TCP
                server, state.truncated = state.truncated, None
            elif state.attempt < cfg.attempts:
                server = order[state.attempt % len(order)]
                state.attempt += 1
            else:
                break
            remaining = state.deadline - loop.time()
            if remaining <= MIN_TRY:
                state.failures.append("budget spent")
                break
            if q is not None and q.trace is not None:
                q.note(f"ask {server.label} in group {self.name} (try {state.attempt})")
            try:
                reply = await self._try(server, question, qname, qtype, qclass, flags, do,
                                        min(cfg.timeout, remaining), over_tcp)
            except (TimeoutError, FormError, OSError) as e:
                self.failed(state, server, e)
                continue
            if self.answered(state, server, reply):
                return reply
        return self.outcome(state)

    def start(self, q: Query, first: FirstTry) -> bool:
        """Makes the first try for *q* over UDP without a task: `first.replied` is called
        from the socket's reader callback with the reply, or with None when that try
        failed (the state says why; `exchange(q, state)` goes on). Answers False, having
        done nothing, when the group does not ask over UDP or there is no time for a try."""
        cfg = self.cfg
        if cfg.transport != "udp" or cfg.attempts < 1 or not self.servers:
            return False  # tcp, tls and https go through ask(); so does a group without servers
        timeout = min(cfg.timeout, cfg.budget)
        if timeout <= MIN_TRY:
            return False
        loop = asyncio.get_running_loop()
        state = self.attempts(loop)
        server = state.order[0]
        state.attempt = 1
        server.udp_sent += 1
        first.qname = q.qname
        first.qtype = q.qtype
        first.qclass = q.qclass
        first.on_mismatch = server.count_mismatch
        first.slot = None
        first.timer = None
        first.group = self
        first.server = server
        first.state = state
        first.started = time.perf_counter()
        try:
            server.udp_pool.send(first, wire.upstream_query(0, q.flags, q.question, q.do),
                                 timeout)
        except OSError as e:
            # reported as the pool reports failures: from the loop, never from this call
            loop.call_soon(first.failed, e)
        return True

    def close(self) -> None:
        """Closes the group's connections once the queries on them are over (the runtime
        that built it was replaced, or the process is stopping)."""
        for link in self.links.values():
            link.close()

    def failed(self, state: Attempts, server: ServerState, error: BaseException) -> None:
        """Records a try that brought no reply (TimeoutError, OSError) or an unreadable one
        (FormError)."""
        if isinstance(error, transports.TransportError):
            # an encrypted transport's failure: its reason names the server
            if error.kind == "handshake_timeout":
                state.timeouts += 1
            state.failures.append(error.reason)
            server.last_failure = error.reason
            self._failed(server, error.kind)
        elif isinstance(error, TimeoutError):
            state.timeouts += 1
            state.failures.append(f"{server.label} timed out")
            self._failed(server, "timeout")
        elif isinstance(error, FormError):
            # the server answered: counted as an error, but not towards marking it down
            state.failures.append(f"{server.label} sent a malformed reply ({error})")
            metrics.upstream_errors.labels(self.name, server.label, "malformed").inc()
        else:
            assert isinstance(error, OSError)
            state.failures.append(f"{server.label}: {error.strerror or error.__class__.__name__}")
            self._failed(server, "network")

    def answered(self, state: Attempts, server: ServerState, reply: Reply) -> bool:
        """Records a reply; answers True when it is the one to use (not a SERVFAIL or
        REFUSED, after which the next server is tried)."""
        self._answered(server)
        if reply.rcode in FAILOVER_RCODES:
            kind = "servfail" if reply.rcode == wire.Rcode.SERVFAIL else "refused"
            metrics.upstream_errors.labels(self.name, server.label, kind).inc()
            state.failures.append(f"{server.label} answered {kind.upper()}")
            state.last_reply = reply
            return False
        return True

    def outcome(self, state: Attempts) -> Reply:
        """What is left when no try gave a usable reply: the last SERVFAIL or REFUSED, or
        UpstreamError."""
        if state.last_reply is not None:
            return state.last_reply
        failures = state.failures
        # silence (timeouts, the budget running out) is "no reachable authority"; only
        # failures that were all errors the network reported are "network error"
        code = wire.Ede.NO_REACHABLE_AUTHORITY \
            if state.timeouts or failures[-1:] == ["budget spent"] else wire.Ede.NETWORK_ERROR
        raise UpstreamError(code, f"no upstream in group {self.name} answered: "
                                  + "; ".join(failures))

    async def _try(
        self, server: ServerState, question: bytes, qname: bytes, qtype: int, qclass: int,
        flags: int, do: bool, timeout: float, over_tcp: bool = False,
    ) -> Reply:
        started = time.perf_counter()
        transport = self.cfg.transport
        if over_tcp:
            data = await self._tcp(server, question, qname, qtype, qclass, flags, do, timeout)
        elif transport != "udp":  # tcp, tls, https: the registry's transport for the server
            metrics.upstream_queries.labels(self.name, server.label, transport).inc()
            data = await self.links[server.label].exchange(
                wire.upstream_query(0, flags, question, do), qname, qtype, qclass, timeout)
        else:
            server.udp_sent += 1
            # ID 0: the pool puts a random ID of its own, not in flight on its socket, there
            query = wire.upstream_query(0, flags, question, do)
            data = await server.udp_pool.exchange(query, qname, qtype, qclass, timeout,
                                                  server.count_mismatch)
            if data[2] & (wire.TC >> 8):
                metrics.upstream_errors.labels(self.name, server.label, "truncated").inc()
                data = await self._tcp(server, question, qname, qtype, qclass, flags, do,
                                       timeout)
        server.answered(started)
        return reply_of(data, server, qname)

    async def _tcp(self, server: ServerState, question: bytes, qname: bytes, qtype: int,
                   qclass: int, flags: int, do: bool, timeout: float) -> bytes:
        """One framed exchange over a new connection, with a fresh random ID."""
        ident = secrets.randbits(16)
        query = wire.upstream_query(ident, flags, question, do)
        metrics.upstream_queries.labels(self.name, server.label, "tcp").inc()
        try:
            return await tcp.exchange(server.host, server.port, query, ident, qname, qtype,
                                      qclass, timeout, server.count_mismatch)
        except OSError:
            metrics.upstream_errors.labels(self.name, server.label, "tcp").inc()
            raise

    def _answered(self, server: ServerState) -> None:
        """Passive health: any reply ends a run of timeouts. Without active checks nothing
        else would bring a server marked down back, so a reply does."""
        server.consecutive_failures = 0
        server.last_failure = None
        if not server.healthy and not self.actively_checked:
            server.set_healthy(True)

    def _failed(self, server: ServerState, kind: str) -> None:
        """Passive health: a timeout or network error; enough in a row mark the server down."""
        metrics.upstream_errors.labels(self.name, server.label, kind).inc()
        server.consecutive_failures += 1
        if server.consecutive_failures >= self.cfg.health.max_failures and server.healthy:
            server.set_healthy(False)


def reply_of(data: bytes, server: ServerState, qname: bytes) -> Reply:
    """The Reply for an upstream's response to *qname* (its question checked by
    wire.reply_matches), read in full (forwarder.dns.reply). Raises FormError."""
    index = read_reply(data, 16 + len(qname))
    return Reply(index.wire, index.rcode, "upstream", index.ede, server.label, index)


class FirstTry(udp.Waiter):
    """The first UDP try of `Group.start` (which fills in the fields): `replied` gets a
    usable reply, or None. A truncated reply goes on to `Group.exchange`, which asks the
    same server over TCP. Subclasses (the pipeline's miss path) say what `replied` does;
    one object per query serves as both."""

    __slots__ = ("group", "server", "started", "state")

    group: Group
    server: ServerState
    started: float
    state: Attempts

    def replied(self, reply: Reply | None, state: Attempts) -> None:
        raise NotImplementedError

    def broke(self, error: Exception) -> None:
        """A bug while the outcome was handled: the query must still end (SERVFAIL)."""
        raise NotImplementedError

    def resolved(self, data: bytes) -> None:
        try:
            reply = self._usable(data)
        except Exception as e:  # the reader callback that called this must go on
            self.broke(e)
            return
        self.replied(reply, self.state)

    def _usable(self, data: bytes) -> Reply | None:
        """The reply in *data* if it ends the tries, else None (the state says why)."""
        group, server, state = self.group, self.server, self.state
        if data[2] & (wire.TC >> 8):
            metrics.upstream_errors.labels(group.name, server.label, "truncated").inc()
            state.truncated = server
            return None
        server.answered(self.started)
        try:
            reply = reply_of(data, server, self.qname)
        except FormError as e:
            group.failed(state, server, e)
            return None
        return reply if group.answered(state, server, reply) else None

    def failed(self, error: BaseException) -> None:
        try:
            self.group.failed(self.state, self.server, error)
        except Exception as e:
            self.broke(e)
            return
        self.replied(None, self.state)
