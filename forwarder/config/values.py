"""Reading configuration values: `Reader` reads one YAML mapping at a field path and
records a problem (path, reason) instead of raising; the converters turn scalars into
numbers, durations, networks, server addresses, domain names and query types, raising
ValueError with the reason a user reads.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import re
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import forwarder.config.model as model
from forwarder.dns import names, wire
from forwarder.errors import ConfigProblem

T = TypeVar("T")


class Reader:
    """Reads one YAML mapping at a field path, recording problems instead of raising."""

    def __init__(self, problems: list[ConfigProblem], path: str, data: Any, known: set[str]):
        self.problems = problems
        self.path = path
        self.ok = True
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail("", f"expected a mapping, found {kind_of(data)}")
            data = {}
            self.ok = False
        self.data: dict[str, Any] = data
        for key in data:
            if key not in known:
                hint = difflib.get_close_matches(str(key), sorted(known), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                known_list = ", ".join(sorted(known))
                self.fail(str(key), f"unknown key{extra}; expected one of: {known_list}",
                          at_key=True)

    def at(self, key: str) -> str:
        if not key:
            return self.path
        if key.startswith("["):
            return f"{self.path}{key}"
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, reason: str, at_key: bool = False) -> None:
        self.problems.append(ConfigProblem(self.at(key), reason, at_key=at_key))

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def get(self, key: str, default: T, convert: Callable[[Any], T]) -> T:
        if not self.has(key):
            return default
        try:
            return convert(self.data[key])
        except (ValueError, TypeError) as e:
            self.fail(key, str(e))
            return default

    def boolean(self, key: str, default: bool) -> bool:
        return self.get(key, default, as_bool)

    def text(self, key: str, default: T) -> str | T:
        return self.get(key, default, as_text)

    def choice(self, key: str, default: T, enum: Callable[[str], T], names: list[str]) -> T:
        def convert(v: Any) -> T:
            try:
                return enum(as_text(v).lower())
            except ValueError:
                raise ValueError(f"{v!r} is not one of: {', '.join(names)}") from None

        return self.get(key, default, convert)

    def each(self, key: str, convert: Callable[[Any], T],
             skip: Callable[[Any], bool] | None = None) -> list[T]:
        """Converts each element of a list field, recording a problem for each bad one;
        elements *skip* answers True for are left to another reader."""
        out = []
        for path, item in self.items(key):
            if skip is not None and skip(item):
                continue
            try:
                out.append(convert(item))
            except (ValueError, TypeError) as e:
                self.problems.append(ConfigProblem(path, str(e)))
        return out

    def items(self, key: str) -> list[tuple[str, Any]]:
        """Answers (path, item) for each element of a list field (a scalar counts as one)."""
        if not self.has(key):
            return []
        value = self.data[key]
        if not isinstance(value, list):
            value = [value]
        return [(self.at(f"{key}[{i}]"), v) for i, v in enumerate(value)]


def network_list(items: list[tuple[str, Any]], problems: list[ConfigProblem],
                 default: tuple[str, ...]) -> list[model.Network]:
    """Reads a list of networks at their paths; the item `default` stands for *default*."""
    out: list[model.Network] = []
    for path, item in items:
        if item == "default":
            out.extend(ipaddress.ip_network(n) for n in default)
            continue
        try:
            out.append(parse_network(item))
        except ValueError as e:
            problems.append(ConfigProblem(path, str(e)))
    return out


def kind_of(v: Any) -> str:
    kinds = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "nothing"}
    return kinds.get(type(v), type(v).__name__)


def bounded(v: T, lo: Any, hi: Any) -> T:
    if lo is not None and v < lo:
        raise ValueError(f"{v} is below the minimum {lo}")
    if hi is not None and v > hi:
        raise ValueError(f"{v} is above the maximum {hi}")
    return v


def as_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"expected a whole number, found {kind_of(v)} {v!r}")
    return v


def as_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"expected a number, found {kind_of(v)} {v!r}")
    return float(v)


def as_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, found {kind_of(v)} {v!r}")
    return v


def as_text(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise ValueError(f"expected a string, found {kind_of(v)}")
    return str(v)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(v: Any) -> float:
    """Answers seconds for `1.5`, `"50ms"`, `"2s"`, `"5m"`, `"1h"`. Raises ValueError."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    m = _DURATION.match(str(v)) if isinstance(v, str) else None
    if not m:
        raise ValueError(f"expected a duration such as 1.5, 50ms, 2s or 5m, found {v!r}")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[m.group(2)]
    return float(m.group(1)) * scale


def parse_network(v: Any) -> model.Network:
    """Answers the network for `10.0.0.0/8`, `fc00::/7` or a single address. Raises
    ValueError, also for host bits set (`192.168.1.1/24`), naming the network meant."""
    text = as_text(v).strip()
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{v!r} is not an IP network (such as 10.0.0.0/8 or fc00::/7)") from None
    host = text.partition("/")[0]
    raise ValueError(f"{text!r} has host bits set: write {network} for the network, or "
                     f"{host}/{network.max_prefixlen} for the one address")


def parse_server(v: Any, any_port: bool = False, default_port: int = 53) -> model.Server:
    """Answers a Server for `ip`, `ip:port` or `[v6]:port`; *any_port* admits port 0 (a
    listening address where the system picks the port). Raises ValueError."""
    text = as_text(v).strip()
    if text.lower().startswith(("https://", "http://")):
        raise ValueError(f"{text!r} is a URL: URLs need transport: https")
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: missing ']' in [v6]:port")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"{text!r}: expected [v6]:port")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        if not p.isdigit():
            raise ValueError(f"{text!r}: port {p!r} is not a number")
        port = int(p)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address (ip, ip:port or [v6]:port)") from None
    if not (0 if any_port else 1) <= port < 65536:
        raise ValueError(f"{text!r}: port {port} is out of range")
    return model.Server(host, port)


def parse_url(v: Any) -> model.Server:
    """Answers a Server for a DNS-over-HTTPS URL `https://ip[:port][/path]` (path default
    /dns-query). The host must be an IP address: nothing resolves upstream names before
    the upstreams are reachable; the certificate's name goes in tls.server_name. Raises
    ValueError."""
    text = as_text(v).strip()
    if not text.lower().startswith("https://"):
        raise ValueError(f"{text!r}: transport https needs URLs such as "
                         "https://10.10.0.10/dns-query")
    try:
        url = urllib.parse.urlsplit(text)
        port = url.port or 443
    except ValueError as e:
        raise ValueError(f"{text!r} is not a valid URL: {e}") from None
    host = url.hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: the host must be an IP address (put the certificate's "
                         "name in tls.server_name)") from None
    if url.username or url.password or url.fragment:
        raise ValueError(f"{text!r}: user names, passwords and fragments are not allowed")
    if url.query:
        raise ValueError(f"{text!r}: the URL must not have a query string (the forwarder "
                         "adds ?dns= itself for method: get)")
    if not 1 <= port < 65536:
        raise ValueError(f"{text!r}: port {port} is out of range")
    return model.Server(host, port, url.path or "/dns-query")


_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST = re.compile(rf"{_LABEL}(\.{_LABEL})*")


def parse_host(v: Any) -> str:
    """Answers a TLS server name: an IP address, or a host name (letters, digits and
    hyphens between dots; lower-cased, no trailing dot). Raises ValueError."""
    text = as_text(v).strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = text.lower().rstrip(".")
    if not _HOST.fullmatch(name) or len(name) > 253:
        raise ValueError(f"{text!r} is not a host name (letters, digits and hyphens between "
                         "dots) or an IP address")
    return name


PIN_PREFIX = "sha256/"


def parse_pin(v: Any) -> bytes:
    """Answers the 32-byte digest of a `sha256/BASE64` public-key pin. Raises ValueError."""
    text = as_text(v).strip()
    expected = ("expected sha256/ and the base64 SHA-256 of the server's public key (SPKI), "
                f"found {text!r}")
    if not text.startswith(PIN_PREFIX):
        raise ValueError(expected)
    try:
        digest = base64.b64decode(text[len(PIN_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{expected}: not base64") from None
    if len(digest) != 32:
        raise ValueError(f"{expected}: {len(digest)} bytes, a SHA-256 digest has 32")
    return digest


def parse_name(v: Any, wildcard: bool = False) -> str:
    text = as_text(v).strip().lower().rstrip(".")
    body = text[2:] if wildcard and text.startswith("*.") else text
    if body:
        try:
            names.from_text(body)
        except (ValueError, UnicodeEncodeError) as e:
            raise ValueError(f"{v!r} is not a domain name: {e}") from None
    return text or "."


def parse_qtype(v: Any) -> int:
    return wire.qtype_from_text(as_text(v))
