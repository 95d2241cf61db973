"""Configuration of encrypted upstream groups: `transport: tls | https`, DoH URLs, the
`tls` section, `method` and `idle_timeout`; impossible combinations are rejected with
the field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from forwarder import config
from forwarder.config import model
from forwarder.errors import ConfigError

PIN = "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


def group(body: str) -> str:
    return f"upstreams:\n  g: {body}\nzones: [{{match: ., upstream: g}}]\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        config.load_text(text, "f.yaml")
    return [str(p) for p in e.value.problems]


def test_tls_group_defaults_to_port_853_and_verification() -> None:
    cfg = config.load_text(group(
        "{transport: tls, servers: [192.0.2.1, '192.0.2.2:8853', '[fd00::53]'], "
        "tls: {server_name: DNS.Corp.Example.com.}}"))
    g = cfg.group_named("g")
    assert g is not None
    assert [s.label for s in g.servers] == ["192.0.2.1:853", "192.0.2.2:8853", "[fd00::53]:853"]
    assert g.tls == model.TlsSettings(server_name="dns.corp.example.com")
    assert g.idle_timeout == 10.0


def test_https_group_reads_urls_method_and_pins() -> None:
    cfg = config.load_text(group(
        "{transport: https, method: GET, idle_timeout: 30s, servers: "
        "['https://10.10.0.10/dns-query', 'https://[fd00::10]:8443/q', 'https://10.10.1.10'], "
        f"tls: {{server_name: resolver.example.internal, pins: ['{PIN}']}}}}"))
    g = cfg.group_named("g")
    assert g is not None
    assert [s.label for s in g.servers] == [
        "https://10.10.0.10:443/dns-query", "https://[fd00::10]:8443/q",
        "https://10.10.1.10:443/dns-query"]
    assert (g.method, g.idle_timeout) == ("get", 30.0)
    assert len(g.tls.pins) == 1 and len(g.tls.pins[0]) == 32


@pytest.mark.parametrize(("body", "expected"), [
    ("{transport: udp, servers: ['https://10.0.0.1/dns-query']}",
     "upstreams.g.servers[0]: 'https://10.0.0.1/dns-query' is a URL: URLs need transport: https"),
    ("{transport: tls, servers: ['https://10.0.0.1/dns-query']}",
     "upstreams.g.servers[0]: 'https://10.0.0.1/dns-query' is a URL"),
    ("{transport: https, servers: [10.0.0.1]}",
     "upstreams.g.servers[0]: '10.0.0.1': transport https needs URLs"),
    ("{transport: https, servers: ['https://dns.example/dns-query']}",
     "upstreams.g.servers[0]: 'https://dns.example/dns-query': the host must be an IP address"),
    ("{transport: https, servers: ['https://10.0.0.1/q?dns=x']}",
     "upstreams.g.servers[0]: 'https://10.0.0.1/q?dns=x': the URL must not have a query"),
    ("{transport: quic, servers: [10.0.0.1]}",
     "upstreams.g.transport: 'quic' is not one of: udp, tcp, tls, https"),
    ("{servers: [10.0.0.1], tls: {server_name: x.example}}",
     "upstreams.g.tls: only used by transport tls or https, not udp"),
    ("{transport: tcp, servers: [10.0.0.1], idle_timeout: 5s}",
     "upstreams.g.idle_timeout: only used by transport tls or https, not tcp"),
    ("{transport: tls, servers: [10.0.0.1], method: get}",
     "upstreams.g.method: only used by transport https, not tls"),
    ("{transport: https, servers: ['https://10.0.0.1'], method: put}",
     "upstreams.g.method: 'put' is not one of: post, get"),
    ("{transport: tls, servers: [10.0.0.1], tls: {pins: [abc]}}",
     "upstreams.g.tls.pins[0]: expected sha256/ and the base64 SHA-256"),
    ("{transport: tls, servers: [10.0.0.1], tls: {pins: ['sha256/AAAA']}}",
     "upstreams.g.tls.pins[0]: expected sha256/ and the base64 SHA-256 of the server's public "
     "key (SPKI), found 'sha256/AAAA': 3 bytes, a SHA-256 digest has 32"),
    ("{transport: tls, servers: [10.0.0.1], tls: {pins: ['sha256/not base64!']}}",
     "upstreams.g.tls.pins[0]: expected sha256/"),
    ("{transport: tls, servers: [10.0.0.1], tls: {insecure_skip_verify: true, ca_file: /x}}",
     "upstreams.g.tls.ca_file: not used when insecure_skip_verify is true"),
    ("{transport: tls, servers: [10.0.0.1], tls: {ca_file: /nonexistent/ca.pem}}",
     "upstreams.g.tls.ca_file: cannot read '/nonexistent/ca.pem'"),
    ("{transport: tls, servers: [10.0.0.1], tls: {server_name: 'bad name!'}}",
     "upstreams.g.tls.server_name: 'bad name!' is not a host name"),
    ("{transport: tls, servers: [10.0.0.1], tls: {sni: x}}",
     "upstreams.g.tls.sni: unknown key"),
])
def test_impossible_combinations_name_the_field(body: str, expected: str) -> None:
    found = problems(group(body))
    assert any(expected in p for p in found), found


def test_ca_file_without_certificates_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    found = problems(group(f"{{transport: tls, servers: [10.0.0.1], tls: {{ca_file: '{bad}'}}}}"))
    assert any(p.startswith("upstreams.g.tls.ca_file:") and "holds no usable PEM certificate"
               in p for p in found), found
