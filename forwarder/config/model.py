"""The configuration model and its schema: frozen, slotted dataclasses, built once by
`config.parse`.

Each field states, once, what the YAML key is called, its default, its bounds and whether
only a start applies it (`setting(...)`); `config.schema` reads those statements, so the
parser, the list of allowed keys and the reload's restart check cannot disagree with the
model. Runtime code reads these objects, never raw YAML.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from forwarder.config.source import Positions

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_ACL = (
    "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
    "100.64.0.0/10", "fc00::/7",
)
DEFAULT_PROTECTED = ("amazonaws.com", "amazonaws.com.cn", "api.aws", "api.amazonwebservices.com.cn")
# Names under the protected suffixes that AWS gives to a customer's own resource (a load
# balancer, an instance, a database...), which is public when the customer makes it so:
# `unprotected: default`. Each entry, its reason and its source: README "What is protected".
DEFAULT_UNPROTECTED = (
    "*.elb.amazonaws.com",  # Application and Classic Load Balancers
    "*.elb.*.amazonaws.com",  # Network (and Gateway) Load Balancers
    "*.elb.amazonaws.com.cn",  # load balancers in the China Regions
    "ec2-*.compute-1.amazonaws.com",  # EC2 public DNS names, us-east-1
    "ec2-*.*.compute.amazonaws.com",  # EC2 public DNS names, other Regions
    "ec2-*.*.compute.amazonaws.com.cn",  # EC2 public DNS names, China Regions
    "*.eb.amazonaws.com.cn",  # Elastic Beanstalk environments, China Regions
    "*.rds.amazonaws.com",  # RDS and Aurora instances, clusters, custom endpoints, proxies
    "*.redshift.amazonaws.com",  # Redshift clusters
    "*.redshift-serverless.amazonaws.com",  # Redshift Serverless workgroups
    "*.cache.amazonaws.com",  # ElastiCache nodes, clusters and serverless caches
    "*.es.amazonaws.com",  # OpenSearch Service (Elasticsearch) domains
    "*.aoss.amazonaws.com",  # OpenSearch Serverless collections
    "d-*.execute-api.*.amazonaws.com",  # API Gateway regional custom domain names
    "*.eks.amazonaws.com",  # EKS cluster API servers
    "*.kafka.*.amazonaws.com",  # MSK brokers and bootstrap names
    "*.mq.*.amazonaws.com",  # Amazon MQ brokers
    "*.s3-website-*.amazonaws.com",  # S3 website endpoints (dash Regions)
    "*.s3-website.*.amazonaws.com",  # S3 website endpoints (dot Regions)
    "*.server.transfer.*.amazonaws.com",  # Transfer Family servers
    "*.clientvpn.*.amazonaws.com",  # Client VPN endpoints
    "*.grafana-workspace.*.amazonaws.com",  # Managed Grafana workspaces
)
DEFAULT_ALLOWED = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
MAX_TTL = 604_800  # a week: the longest TTL a local answer or a cache bound may state


def setting(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING,
            lo: float | None = None, hi: float | None = None, kind: str | None = None,
            choices: tuple[str, ...] | None = None, key: str | None = None,
            restart: bool = False, derived: bool = False) -> Any:
    """One field of the schema.

    *lo*/*hi* bound numbers; *kind* reads a value as a `duration` (1.5, "50ms"), a domain
    `name`, a query `qtype`, a listening `address` (ip:port) or a TLS server name (`host`:
    a host name or an IP address); *choices* lists the words
    a text field accepts; *key* is the YAML key when it differs from the field's name;
    *restart* marks what only a start applies (a reload keeps the running value and says
    so); *derived* fields are not YAML keys (a group's name is its mapping key)."""
    meta = {"lo": lo, "hi": hi, "kind": kind, "choices": choices, "key": key,
            "restart": restart, "derived": derived}
    return dataclasses.field(default=default, default_factory=factory, metadata=meta)


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


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class Listener:
    address: str = setting()
    port: int = setting(53, lo=0, hi=65535)
    protocols: tuple[str, ...] = setting(("udp", "tcp"))

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

    # SNI and the name to verify; None: the server's IP
    server_name: str | None = setting(None, kind="host")
    ca_file: str | None = setting(None)  # None: the system trust store
    # SHA-256 digests of acceptable public keys (SPKI), given as sha256/BASE64
    pins: tuple[bytes, ...] = setting(())
    insecure_skip_verify: bool = setting(False)


@dataclass(frozen=True, slots=True)
class HealthCheck:
    enabled: bool = setting(True)
    interval: float = setting(10.0, lo=0.05, kind="duration")
    timeout: float = setting(1.0, lo=0.001, kind="duration")
    name: str = setting(".", kind="name")
    qtype: int = setting(2, kind="qtype", key="type")  # NS
    rise: int = setting(2, lo=1, hi=100)
    fall: int = setting(3, lo=1, hi=100)
    # passive: consecutive timeouts that mark a server down
    max_failures: int = setting(3, lo=1, hi=1000)


@dataclass(frozen=True, slots=True)
class Canary:
    """A name a group must resolve to allowed addresses for the group to be ready."""

    name: str = setting(kind="name")
    qtype: int = setting(1, kind="qtype", key="type")
    expect: str = setting("allowed", choices=("allowed",))  # every address passes the policy
    policy: str | None = setting(None)


@dataclass(frozen=True, slots=True)
class UpstreamGroup:
    name: str = setting(derived=True)
    servers: tuple[Server, ...] = setting()
    selection: Selection = setting(Selection.SEQUENTIAL)
    timeout: float = setting(1.0, lo=0.001, kind="duration")  # seconds per try
    attempts: int = setting(3, lo=1, hi=20)  # tries in all, across servers
    # seconds for all tries together; when not given: timeout * attempts + 1
    budget: float = setting(4.0, lo=0.001, kind="duration")
    # udp (TCP on truncation) | tcp | tls | https
    transport: str = setting("udp", choices=TRANSPORTS)
    # queries in flight to this group at most (answered SERVFAIL past it); none given:
    # limits.max_inflight. Each group has its own, so one dead group starves no other.
    max_inflight: int | None = setting(None, lo=1, hi=1_000_000)
    health: HealthCheck = setting(factory=HealthCheck, key="health_check")
    canary: Canary | None = setting(None)
    tls: TlsSettings = setting(factory=TlsSettings)  # transport tls and https
    method: str = setting("post", choices=("post", "get"))  # transport https
    # transport tls and https: close a connection idle this long
    idle_timeout: float = setting(10.0, lo=0.01, kind="duration")
    # `aws:inbound/ID` (or /NAME) servers: Route 53 Resolver inbound endpoints whose
    # addresses the AWS inventory supplies (config/aws.py)
    discovered: tuple[str, ...] = setting((), derived=True)


@dataclass(frozen=True, slots=True)
class LocalRecord:
    name: str = setting()  # lower-case, no trailing dot; "*.x" for a wildcard
    rtype: int = setting(key="type")
    value: str = setting()
    ttl: int = setting(300, lo=0, hi=MAX_TTL)  # when not given: the rule's ttl


@dataclass(frozen=True, slots=True)
class Rule:
    """A zone rule: names under `match` (and optional qtype/client matchers) go somewhere."""

    index: int = setting(derived=True)
    name: str = setting()  # label for metrics and logs: the match suffix unless named
    match: str = setting(kind="name")
    action: RuleAction = setting()
    upstream: str | None = setting(None)
    # the rule's own answer policy; None with `policy: none` (opt_out) or when not given
    policy: str | None = setting(None)
    qtypes: frozenset[int] | None = setting(None)
    clients: tuple[Network, ...] | None = setting(None)
    records: tuple[LocalRecord, ...] = setting(())
    hosts_file: str | None = setting(None)
    # of local answers (records without their own ttl, hosts files) and the SOA minimum
    # of their negative answers
    ttl: int = setting(300, lo=0, hi=MAX_TTL)
    # `records: aws`: PrivateLink names from the AWS inventory (config/aws.py)
    aws_records: bool = setting(False, derived=True)
    # `policy: none`: no policy judges this rule's answers, protected names included
    opt_out: bool = setting(False, derived=True)


@dataclass(frozen=True, slots=True)
class RewriteTarget:
    a: tuple[str, ...] = setting((), key="A")
    aaaa: tuple[str, ...] = setting((), key="AAAA")
    cname: str | None = setting(None, key="CNAME")


@dataclass(frozen=True, slots=True)
class Policy:
    name: str = setting(derived=True)
    protected: tuple[str, ...] = setting(DEFAULT_PROTECTED)
    # name patterns under `protected` that are not protected (customers' own resources)
    unprotected: tuple[str, ...] = setting(DEFAULT_UNPROTECTED)
    allowed: tuple[str, ...] = setting(DEFAULT_ALLOWED)
    on_violation: Violation = setting(Violation.SERVFAIL)
    rewrite: tuple[tuple[str, RewriteTarget], ...] = setting(())  # exact names, "*." wildcards
    fallback: str | None = setting(None)  # upstream group for on_violation: fallback
    then: Violation = setting(Violation.SERVFAIL)  # after a fallback answer also violates
    mode: PolicyMode = setting(PolicyMode.ENFORCE)
    ttl: int = setting(30, lo=0, hi=86_400)  # of synthesised answers
    # `rewrite: aws`: the Interface endpoints' ENI addresses (config/aws.py)
    rewrite_from_aws: bool = setting(False, derived=True)
    # `aws:gateway:SERVICE:REGION` entries of `allowed`, as written (config/aws.py), and
    # the networks they stand for once made concrete (aws/gateway.py)
    gateways: tuple[str, ...] = setting((), derived=True)
    gateway_networks: tuple[str, ...] = setting((), derived=True)

    @property
    def allowed_networks(self) -> tuple[str, ...]:
        """Every allowed network: `allowed`, and what its Gateway entries stand for."""
        return self.allowed + self.gateway_networks if self.gateway_networks else self.allowed


@dataclass(frozen=True, slots=True)
class ProtectionSettings:
    """`protection:`: the policy for protected names that no rule's policy covers."""

    policy: str | None = setting(None)


@dataclass(frozen=True, slots=True)
class CacheSettings:
    enabled: bool = setting(True)
    max_entries: int = setting(100_000, lo=1, hi=100_000_000)
    min_ttl: int = setting(0, lo=0, hi=MAX_TTL)
    max_ttl: int = setting(86_400, lo=0, hi=MAX_TTL)
    max_negative_ttl: int = setting(3_600, lo=0, hi=MAX_TTL)
    servfail_ttl: int = setting(5, lo=0, hi=300)
    serve_stale: bool = setting(True)
    # seconds past expiry an entry may still be served (RFC 8767)
    max_stale: int = setting(86_400, lo=0, hi=30 * 86_400)
    stale_client_timeout: float = setting(1.8, lo=0.0, kind="duration")
    stale_ttl: int = setting(30, lo=0, hi=86_400)
    prefetch: bool = setting(False)


@dataclass(frozen=True, slots=True)
class RateLimit:
    qps: float = setting(0.0, lo=0.0)  # 0: off
    burst: int = setting(1, lo=1, hi=1_000_000)  # when not given: qps (at least 1)
    action: str = setting("drop", choices=("drop", "refuse"))
    ipv4_prefix: int = setting(32, lo=8, hi=32)
    ipv6_prefix: int = setting(56, lo=16, hi=128)


@dataclass(frozen=True, slots=True)
class Limits:
    # queries in flight to each upstream group (the default of upstreams.NAME.max_inflight)
    max_inflight: int = setting(10_000, lo=1, hi=1_000_000)
    # the TCP listeners and the sockets' buffers take these when they are bound
    tcp_max_connections: int = setting(1_000, lo=1, hi=100_000, restart=True)
    tcp_idle_timeout: float = setting(10.0, lo=0.01, kind="duration", restart=True)
    # in flight at once on one connection
    tcp_max_queries_per_connection: int = setting(100, lo=1, hi=65_535, restart=True)
    # from a query's first byte to its last: partial bytes do not extend it (slowloris)
    tcp_frame_timeout: float = setting(2.0, lo=0.01, kind="duration", restart=True)
    # open connections from one client address
    tcp_max_connections_per_client: int = setting(64, lo=1, hi=100_000, restart=True)
    # SO_RCVBUF/SO_SNDBUF asked for
    udp_buffer: int = setting(4 * 1024 * 1024, lo=65_536, hi=256 * 1024 * 1024, restart=True)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    enabled: bool = setting(True, restart=True)
    listen: str = setting("127.0.0.1:9153", kind="address", restart=True)


@dataclass(frozen=True, slots=True)
class QueryLogSettings:
    enabled: bool = setting(False)
    path: str = setting("stdout")  # or a file path
    sample: float = setting(1.0, lo=0.0, hi=1.0)
    queue_size: int = setting(10_000, lo=1, hi=10_000_000)
    answers: bool = setting(False)  # the upstream's answer before the policy, for replay


@dataclass(frozen=True, slots=True)
class ReloadSettings:
    watch: bool = setting(False)  # reload when the configuration file changes (and on SIGHUP)
    interval: float = setting(2.0, lo=0.05, kind="duration")  # seconds between looks


@dataclass(frozen=True, slots=True)
class LogSettings:
    """The operator log on stderr (the query log is `querylog`)."""

    format: LogFormat = setting(LogFormat.TEXT)
    # the command line's --log-level wins when given
    level: str = setting("info", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True, slots=True)
class HookSettings:
    path: str = setting()
    timeout: float = setting(0.05, lo=0.001, kind="duration")
    options: tuple[tuple[str, object], ...] = setting(())


@dataclass(frozen=True, slots=True)
class AwsSettings:
    """The optional `aws:` section: where and how often the AWS inventory is read
    (config/aws.py reads it)."""

    # the regions whose API is read; none (with ip_ranges): no API read, no boto3 needed
    regions: tuple[str, ...] = setting(())
    roles: tuple[str, ...] = setting(())  # role ARNs to assume; none: the ambient credentials
    refresh: float = setting(300.0, lo=1.0, kind="duration")  # between inventory reads
    # the last good inventory, used at start when AWS is unreachable
    state_file: str | None = setting(None)
    ip_ranges: str | None = setting(None)  # AWS's published ip-ranges.json
    # /readyz reports the inventory stale past this age (0: never); when not given:
    # max(1h, 3 refreshes)
    stale_after: float = setting(3600.0, lo=0.0, kind="duration")
    timeout: float = setting(10.0, lo=0.1, kind="duration")  # for each API call

    @property
    def discovers(self) -> bool:
        """Answers whether the AWS API is read (some regions are given)."""
        return bool(self.regions)


@dataclass(frozen=True, slots=True)
class Config:
    source: str = setting(derived=True)
    listen: tuple[Listener, ...] = setting(restart=True)
    acl: tuple[Network, ...] = setting()
    upstreams: tuple[UpstreamGroup, ...] = setting()
    rules: tuple[Rule, ...] = setting(key="zones")
    policies: tuple[Policy, ...] = setting(())
    protection: ProtectionSettings = setting(factory=ProtectionSettings)
    cache: CacheSettings = setting(factory=CacheSettings)
    rate_limit: RateLimit = setting(factory=RateLimit)
    limits: Limits = setting(factory=Limits)
    metrics: MetricsSettings = setting(factory=MetricsSettings)
    querylog: QueryLogSettings = setting(factory=QueryLogSettings)
    reload: ReloadSettings = setting(factory=ReloadSettings)
    hooks: tuple[HookSettings, ...] = setting(())
    user: str | None = setting(None, restart=True)  # drop to this user after binding
    group: str | None = setting(None, restart=True)
    allow_root: bool = setting(False, restart=True)
    pid_file: str | None = setting(None, restart=True)
    workers: int = setting(1, lo=1, hi=64, restart=True)
    log: LogSettings = setting(factory=LogSettings)
    aws: AwsSettings | None = setting(None)  # AWS discovery (the `aws` extra)
    # where each field is in the file, for errors found after loading (hooks, hosts files)
    positions: Positions = dataclasses.field(default_factory=Positions, compare=False,
                                             repr=False, metadata={"derived": True})

    def group_named(self, name: str) -> UpstreamGroup | None:
        return next((g for g in self.upstreams if g.name == name), None)

    def policy_named(self, name: str) -> Policy | None:
        return next((p for p in self.policies if p.name == name), None)
