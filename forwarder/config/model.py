"""The configuration model: frozen, slotted dataclasses, built once by `config.parse`.

Runtime code reads these objects, never raw YAML. Start-only settings (listen, user,
workers, metrics.listen) are kept apart from what a reload may replace (`Config.runtime_key`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_ACL = (
    "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
    "100.64.0.0/10", "fc00::/7",
)
DEFAULT_PROTECTED = ("amazonaws.com", "amazonaws.com.cn", "api.aws", "api.amazonwebservices.com.cn")
DEFAULT_ALLOWED = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")


class Selection(StrEnum):
    SEQUENTIAL = "sequential"
    ROUND_ROBIN = "round_robin"
    RANDOM = "random"
    FASTEST = "fastest"


class RuleAction(StrEnum):
    FORWARD = "forward"
    REFUSE = "refuse"
    LOCAL = "local"


class Violation(StrEnum):
    """What a policy does with an answer that points a protected name at a public address."""

    REWRITE = "rewrite"
    REWRITE_CNAME = "rewrite_cname"
    SERVFAIL = "servfail"
    REFUSE = "refuse"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    STRIP = "strip"
    FALLBACK = "fallback"
    MONITOR = "monitor"


class PolicyMode(StrEnum):
    ENFORCE = "enforce"
    MONITOR = "monitor"


@dataclass(frozen=True, slots=True)
class Listener:
    address: str
    port: int
    protocols: tuple[str, ...] = ("udp", "tcp")

    @property
    def label(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Server:
    """One upstream resolver address; *path* is set for DNS over HTTPS (the URL's path)."""

    host: str
    port: int = 53
    path: str | None = None

    @property
    def label(self) -> str:
        hostport = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if self.path is not None:
            return f"https://{hostport}{self.path}"
        return hostport


TRANSPORTS = ("udp", "tcp", "tls", "https")
ENCRYPTED = ("tls", "https")
DEFAULT_PORTS = {"udp": 53, "tcp": 53, "tls": 853, "https": 443}


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """How an encrypted upstream's certificate is checked (transport tls or https)."""

    server_name: str | None = None  # SNI and the name to verify; None: the server's IP
    ca_file: str | None = None  # None: the system trust store
    pins: tuple[bytes, ...] = ()  # SHA-256 digests of acceptable public keys (SPKI)
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class HealthCheck:
    enabled: bool = True
    interval: float = 10.0
    timeout: float = 1.0
    name: str = "."
    qtype: int = 2  # NS
    rise: int = 2
    fall: int = 3
    max_failures: int = 3  # passive: consecutive timeouts that mark a server down


@dataclass(frozen=True, slots=True)
class Canary:
    """A name a group must resolve to allowed addresses for the group to be ready."""

    name: str
    qtype: int = 1
    expect: str = "allowed"  # allowed: every address passes the policy
    policy: str | None = None


@dataclass(frozen=True, slots=True)
class UpstreamGroup:
    name: str
    servers: tuple[Server, ...]
    selection: Selection = Selection.SEQUENTIAL
    timeout: float = 1.0  # seconds per try
    attempts: int = 3  # tries in all, across servers
    budget: float = 4.0  # seconds for all tries together
    transport: str = "udp"  # udp (TCP on truncation) | tcp | tls | https
    health: HealthCheck = field(default_factory=HealthCheck)
    canary: Canary | None = None
    tls: TlsSettings = field(default_factory=TlsSettings)  # transport tls and https
    method: str = "post"  # transport https: post | get
    idle_timeout: float = 10.0  # transport tls and https: close a connection idle this long


@dataclass(frozen=True, slots=True)
class LocalRecord:
    name: str  # lower-case, no trailing dot; "*.x" for a wildcard
    rtype: int
    value: str
    ttl: int = 300


@dataclass(frozen=True, slots=True)
class Rule:
    """A zone rule: names under `match` (and optional qtype/client matchers) go somewhere."""

    index: int
    name: str  # label for metrics and logs: the match suffix unless named
    match: str
    action: RuleAction
    upstream: str | None = None
    policy: str | None = None
    qtypes: frozenset[int] | None = None
    clients: tuple[Network, ...] | None = None
    records: tuple[LocalRecord, ...] = ()
    hosts_file: str | None = None
    ttl: int = 300  # of local answers and the SOA minimum for their negative answers


@dataclass(frozen=True, slots=True)
class RewriteTarget:
    a: tuple[str, ...] = ()
    aaaa: tuple[str, ...] = ()
    cname: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    protected: tuple[str, ...] = DEFAULT_PROTECTED
    allowed: tuple[str, ...] = DEFAULT_ALLOWED
    on_violation: Violation = Violation.SERVFAIL
    rewrite: tuple[tuple[str, RewriteTarget], ...] = ()  # exact names and "*." wildcards
    fallback: str | None = None  # upstream group for on_violation: fallback
    then: Violation = Violation.SERVFAIL  # after a fallback answer also violates
    mode: PolicyMode = PolicyMode.ENFORCE
    ttl: int = 30  # of synthesised answers


@dataclass(frozen=True, slots=True)
class CacheSettings:
    enabled: bool = True
    max_entries: int = 100_000
    min_ttl: int = 0
    max_ttl: int = 86_400
    max_negative_ttl: int = 3_600
    servfail_ttl: int = 5
    serve_stale: bool = True
    max_stale: int = 86_400  # seconds past expiry an entry may still be served (RFC 8767)
    stale_client_timeout: float = 1.8
    stale_ttl: int = 30
    prefetch: bool = False


@dataclass(frozen=True, slots=True)
class RateLimit:
    qps: float = 0.0  # 0: off
    burst: int = 0
    action: str = "drop"  # drop | refuse
    ipv4_prefix: int = 32
    ipv6_prefix: int = 56


@dataclass(frozen=True, slots=True)
class Limits:
    max_inflight: int = 10_000  # upstream queries in flight, all clients together
    tcp_max_connections: int = 1_000
    tcp_idle_timeout: float = 10.0
    tcp_max_queries_per_connection: int = 100  # in flight at once on one connection
    udp_buffer: int = 4 * 1024 * 1024  # SO_RCVBUF/SO_SNDBUF asked for


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    enabled: bool = True
    listen: str = "127.0.0.1:9153"


@dataclass(frozen=True, slots=True)
class QueryLogSettings:
    enabled: bool = False
    path: str = "stdout"  # or a file path
    sample: float = 1.0
    queue_size: int = 10_000


@dataclass(frozen=True, slots=True)
class HookSettings:
    path: str
    timeout: float = 0.05
    options: tuple[tuple[str, object], ...] = ()


# the settings only a start applies (bind, privileges, processes, pid file): a reload
# keeps the running values
START_ONLY = ("listen", "user", "group", "workers", "metrics", "pid_file", "allow_root")


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    listen: tuple[Listener, ...]
    acl: tuple[Network, ...]
    upstreams: tuple[UpstreamGroup, ...]
    rules: tuple[Rule, ...]
    policies: tuple[Policy, ...] = ()
    cache: CacheSettings = field(default_factory=CacheSettings)
    rate_limit: RateLimit = field(default_factory=RateLimit)
    limits: Limits = field(default_factory=Limits)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    querylog: QueryLogSettings = field(default_factory=QueryLogSettings)
    hooks: tuple[HookSettings, ...] = ()
    user: str | None = None
    group: str | None = None
    allow_root: bool = False
    pid_file: str | None = None
    workers: int = 1

    def group_named(self, name: str) -> UpstreamGroup | None:
        return next((g for g in self.upstreams if g.name == name), None)

    def policy_named(self, name: str) -> Policy | None:
        return next((p for p in self.policies if p.name == name), None)

    def start_only(self) -> tuple[object, ...]:
        """Settings a reload cannot change (they need a restart): START_ONLY's values."""
        return tuple(getattr(self, name) for name in START_ONLY)
