"""An upstream group at run time: try servers in selection order within the per-try timeout
and the total budget, retry truncated UDP replies over TCP, fail over, and say why it failed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time

from forwarder import metrics, wire
from forwarder.config import model
from forwarder.errors import FormError, UpstreamError
from forwarder.query import Query, Reply
from forwarder.upstream import selection
from forwarder.upstream.transports import tcp, udp

log = logging.getLogger("forwarder")

UPSTREAM_ERROR_KINDS = ("timeout", "refused", "servfail", "mismatch", "tcp", "truncated",
                        "network", "malformed")
MIN_TRY = 0.01  # seconds: timers fire a little early; a try with less left is no try
FAILOVER_RCODES = (wire.Rcode.SERVFAIL, wire.Rcode.REFUSED)


class ServerState:
    """One upstream server of a group: its address, health and smoothed RTT."""

    __slots__ = (
        "consecutive_failures",
        "count_mismatch",
        "group",
        "healthy",
        "host",
        "label",
        "port",
        "rtt",
        "srtt",
        "udp_pool",
        "udp_queries",
    )

    def __init__(self, group: str, server: model.Server) -> None:
        self.group = group
        self.host = server.host
        self.port = server.port
        self.label = server.label
        self.healthy = True
        self.srtt = 0.0
        self.consecutive_failures = 0
        # a reply that is not ours (stray, wrong ID or question): counted, never used
        self.count_mismatch = metrics.upstream_errors.labels(group, server.label, "mismatch").inc
        self.udp_pool = udp.UdpPool(server.host, server.port, self.count_mismatch)
        # metric children bound once: labels() per query costs more than the exchange
        self.udp_queries = metrics.upstream_queries.labels(group, server.label, "udp")
        self.rtt = metrics.upstream_duration.labels(group, server.label)

    def close(self) -> None:
        """Closes the server's upstream sockets and forgets its metric series (a reload
        dropped it, or the process is stopping)."""
        self.udp_pool.close()
        series = [(metrics.upstream_queries, (t,)) for t in ("udp", "tcp")]
        series += [(metrics.upstream_errors, (k,)) for k in UPSTREAM_ERROR_KINDS]
        series += [(metrics.upstream_health_checks, (r,)) for r in ("success", "failure")]
        series += [(metrics.upstream_duration, ())]
        for metric, rest in series:
            with contextlib.suppress(KeyError):
                metric.remove(self.group, self.label, *rest)

    def set_healthy(self, healthy: bool) -> None:
        if healthy != self.healthy:
            log.warning("upstream %s in group %s is %s", self.label, self.group,
                        "up" if healthy else "down")
        self.healthy = healthy
        metrics.upstream_healthy.labels(self.group, self.label).set(1 if healthy else 0)


class Group:
    """Exchanges queries with the servers of one configured upstream group."""

    def __init__(self, cfg: model.UpstreamGroup, servers: list[ServerState] | None = None):
        self.cfg = cfg
        self.name = cfg.name
        self.servers = servers or [ServerState(cfg.name, s) for s in cfg.servers]
        self.selection = selection.build(cfg.selection)
        self.actively_checked = False  # set by the health service while it probes this group
        for s in self.servers:
            metrics.upstream_healthy.labels(self.name, s.label).set(1 if s.healthy else 0)

    async def exchange(self, q: Query) -> Reply:
        """Answers the upstream reply to *q* (OPT removed). Raises UpstreamError."""
        return await self.ask(q.question, q.qname, q.qtype, q.qclass, q.flags, q.do, q)

    async def ask(
        self, question: bytes, qname: bytes, qtype: int, qclass: int, flags: int = wire.RD,
        do: bool = False, q: Query | None = None,
    ) -> Reply:
        """Asks the group one question. Raises UpstreamError when every try failed."""
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.budget
        # with active checks a down server is skipped (a probe brings it back); without them
        # it is only moved last, so that a reply to a real query can bring it back
        order = selection.healthy_first(self.selection.order(self.servers),
                                        skip_down=self.actively_checked)
        failures: list[str] = []
        timeouts = 0
        last_reply: Reply | None = None
        for attempt in range(cfg.attempts):
            remaining = deadline - loop.time()
            if remaining <= MIN_TRY:
                failures.append("budget spent")
                break
            server = order[attempt % len(order)]
            if q is not None and q.trace is not None:
                q.note(f"ask {server.label} in group {self.name} (try {attempt + 1})")
            try:
                reply = await self._try(server, question, qname, qtype, qclass, flags, do,
                                        min(cfg.timeout, remaining))
            except TimeoutError:
                timeouts += 1
                failures.append(f"{server.label} timed out")
                self._failed(server, "timeout")
                continue
            except FormError as e:
                # the server answered: counted as an error, but not towards marking it down
                failures.append(f"{server.label} sent a malformed reply ({e})")
                metrics.upstream_errors.labels(self.name, server.label, "malformed").inc()
                continue
            except OSError as e:
                failures.append(f"{server.label}: {e.strerror or e.__class__.__name__}")
                self._failed(server, "network")
                continue
            self._answered(server)
            if reply.rcode in FAILOVER_RCODES:
                kind = "servfail" if reply.rcode == wire.Rcode.SERVFAIL else "refused"
                metrics.upstream_errors.labels(self.name, server.label, kind).inc()
                failures.append(f"{server.label} answered {kind.upper()}")
                last_reply = reply
                continue
            return reply
        if last_reply is not None:
            return last_reply
        # silence (timeouts, the budget running out) is "no reachable authority"; only
        # failures that were all errors the network reported are "network error"
        code = wire.Ede.NO_REACHABLE_AUTHORITY if timeouts or failures[-1:] == ["budget spent"] \
            else wire.Ede.NETWORK_ERROR
        raise UpstreamError(code, f"no upstream in group {self.name} answered: "
                                  + "; ".join(failures))

    async def _try(
        self, server: ServerState, question: bytes, qname: bytes, qtype: int, qclass: int,
        flags: int, do: bool, timeout: float,
    ) -> Reply:
        started = time.perf_counter()
        if self.cfg.transport == "tcp":
            data = await self._tcp(server, question, qname, qtype, qclass, flags, do, timeout)
        else:
            server.udp_queries.inc()
            # ID 0: the pool puts a random ID of its own, not in flight on its socket, there
            query = wire.upstream_query(0, flags, question, do)
            data = await server.udp_pool.exchange(query, qname, qtype, qclass, timeout,
                                                  server.count_mismatch)
            if data[2] & (wire.TC >> 8):
                metrics.upstream_errors.labels(self.name, server.label, "truncated").inc()
                data = await self._tcp(server, question, qname, qtype, qclass, flags, do,
                                       timeout)
        rtt = time.perf_counter() - started
        server.rtt.observe(rtt)
        server.srtt = rtt if server.srtt == 0.0 else 0.7 * server.srtt + 0.3 * rtt
        parsed = wire.strip_opt(data)
        return Reply(parsed.wire, parsed.rcode, "upstream", parsed.ede, server=server.label)

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
        if not server.healthy and not self.actively_checked:
            server.set_healthy(True)

    def _failed(self, server: ServerState, kind: str) -> None:
        """Passive health: a timeout or network error; enough in a row mark the server down."""
        metrics.upstream_errors.labels(self.name, server.label, kind).inc()
        server.consecutive_failures += 1
        if server.consecutive_failures >= self.cfg.health.max_failures and server.healthy:
            server.set_healthy(False)
