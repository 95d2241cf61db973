"""Local records end to end: a rule answering from `records:` or a `hosts_file:` instead of
forwarding, over UDP and TCP, with a fake upstream that must not be asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import yaml

from forwarder import config as config_mod
from forwarder.errors import ConfigError
from forwarder.server import Server
from tests.conftest import forwarder_config, query, running
from tests.fakes import FakeUpstream

RECORDS: list[dict[str, Any]] = [
    {"name": "internal.example.com", "type": "A", "value": "10.0.100.21"},
    {"name": "internal.example.com", "type": "A", "value": "10.0.100.22"},
    {"name": "internal.example.com", "type": "AAAA", "value": "fd00:100::21", "ttl": 60},
    {"name": "internal.example.com", "type": "TXT", "value": "PrivateLink service vpce-svc-0abc"},
    {"name": "api.internal.example.com", "type": "CNAME", "value": "internal.example.com"},
    {"name": "files.internal.example.com", "type": "CNAME",
     "value": "files-bucket.s3.ap-northeast-1.amazonaws.com"},
    {"name": "*.svc.internal.example.com", "type": "A", "value": "10.0.100.50"},
    {"name": "pinned.svc.internal.example.com", "type": "A", "value": "10.0.100.51"},
]


def local_config(upstream: FakeUpstream, **rule: Any) -> dict[str, Any]:
    zone = {"match": "internal.example.com", "ttl": 120, **rule}
    return forwarder_config({"corp": [upstream.addr]},
                            zones=[{"match": ".", "upstream": "corp"}, zone])


def addresses(msg: dns.message.Message, rdtype: str = "A") -> list[str]:
    return sorted(rr.to_text() for rrset in msg.answer
                  if rrset.rdtype == dns.rdatatype.from_text(rdtype) for rr in rrset)


def soa_of(msg: dns.message.Message) -> tuple[str, int, int]:
    (rrset,) = msg.authority
    assert rrset.rdtype == dns.rdatatype.SOA
    return rrset.name.to_text(), rrset.ttl, rrset[0].minimum


async def test_answers_a_aaaa_txt_authoritatively(upstream: FakeUpstream, transport: str) -> None:
    """Local records: A, AAAA and TXT of internal.example.com come from the config with AA
    set, each record's own TTL or else the zone's `ttl: 120`, and the upstream is never
    asked."""
    async with running(local_config(upstream, records=RECORDS)) as srv:
        a = await query(srv, transport, "internal.example.com", "A")
        aaaa = await query(srv, transport, "internal.example.com", "AAAA")
        txt = await query(srv, transport, "internal.example.com", "TXT")
    assert a.rcode() == dns.rcode.NOERROR and a.flags & dns.flags.AA and a.flags & dns.flags.RA
    assert addresses(a) == ["10.0.100.21", "10.0.100.22"]
    assert a.answer[0].ttl == 120
    assert addresses(aaaa, "AAAA") == ["fd00:100::21"] and aaaa.answer[0].ttl == 60
    assert addresses(txt, "TXT") == ['"PrivateLink service vpce-svc-0abc"']
    assert upstream.received == []


async def test_cname_is_chased_inside_the_zone(upstream: FakeUpstream, transport: str) -> None:
    """Ask A api.internal.example.com (CNAME internal.example.com): the CNAME and the
    target's A records, in that order."""
    async with running(local_config(upstream, records=RECORDS)) as srv:
        r = await query(srv, transport, "API.Internal.Example.com", "A")
    assert r.rcode() == dns.rcode.NOERROR
    assert [rrset.rdtype for rrset in r.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert r.answer[0][0].target.to_text() == "internal.example.com."
    assert r.question[0].name.to_text() == "API.Internal.Example.com."  # the client's case
    assert addresses(r) == ["10.0.100.21", "10.0.100.22"]


async def test_cname_out_of_the_zone_is_followed_through_its_rule(
        upstream: FakeUpstream, transport: str) -> None:
    """A CNAME to a name the zone does not serve is followed through the rule that routes
    the target (here `.`, to corp), as a resolver would: the CNAME, then the target's A
    record (tests/e2e/test_local_chase.py has the rest)."""
    async with running(local_config(upstream, records=RECORDS)) as srv:
        r = await query(srv, transport, "files.internal.example.com", "A")
    assert r.rcode() == dns.rcode.NOERROR
    assert [rrset.rdtype for rrset in r.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert addresses(r) == ["192.0.2.1"]
    assert not r.flags & dns.flags.AA  # the target's answer is not this zone's
    assert [rx.message.question[0].name.to_text() for rx in upstream.received] == [
        "files-bucket.s3.ap-northeast-1.amazonaws.com."]


async def test_wildcard_matches_names_without_records(upstream: FakeUpstream,
                                                      transport: str) -> None:
    """`*.svc.internal.example.com` answers any depth below it with the asked name as owner;
    a name with its own records keeps them."""
    async with running(local_config(upstream, records=RECORDS)) as srv:
        deep = await query(srv, transport, "a.b.svc.internal.example.com", "A")
        pinned = await query(srv, transport, "pinned.svc.internal.example.com", "A")
        apex = await query(srv, transport, "svc.internal.example.com", "A")
    assert addresses(deep) == ["10.0.100.50"]
    assert deep.answer[0].name.to_text() == "a.b.svc.internal.example.com."
    assert addresses(pinned) == ["10.0.100.51"]
    # the wildcard's parent exists but has no records: NODATA, not the wildcard's records
    assert apex.rcode() == dns.rcode.NOERROR and apex.answer == []


async def test_unknown_name_is_nxdomain_with_soa(upstream: FakeUpstream, transport: str) -> None:
    """A name under the rule with no records: NXDOMAIN, the zone's SOA in authority with
    owner = the rule's match and TTL/MINIMUM = the rule's ttl."""
    async with running(local_config(upstream, records=RECORDS)) as srv:
        r = await query(srv, transport, "nothing.internal.example.com", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA
    assert r.answer == []
    assert soa_of(r) == ("internal.example.com.", 120, 120)
    assert upstream.received == []


async def test_other_type_is_nodata_with_soa(upstream: FakeUpstream, transport: str) -> None:
    """An existing name asked for a type it has no records of: NOERROR, no answer, SOA."""
    async with running(local_config(upstream, records=RECORDS)) as srv:
        mx = await query(srv, transport, "internal.example.com", "MX")
        cname_mx = await query(srv, transport, "api.internal.example.com", "MX")
    assert mx.rcode() == dns.rcode.NOERROR and mx.answer == []
    assert soa_of(mx) == ("internal.example.com.", 120, 120)
    # through a CNAME: the chain, then NODATA at its end
    assert [rrset.rdtype for rrset in cname_mx.answer] == [dns.rdatatype.CNAME]
    assert soa_of(cname_mx)[0] == "internal.example.com."


async def test_hosts_file_with_aliases_and_ipv6(upstream: FakeUpstream, transport: str,
                                                tmp_path: Path) -> None:
    """hosts_file: names and aliases under the rule's match get A (IPv4) / AAAA (IPv6) with
    the rule's ttl; names outside it (localhost) are not served by the rule."""
    hosts = tmp_path / "hosts"
    hosts.write_text(
        "# PrivateLink endpoints\n"
        "127.0.0.1   localhost\n"
        "10.0.100.21 internal.example.com portal.internal.example.com  # the NLB service\n"
        "fd00:100::21 internal.example.com\n"
        "\n"
        "10.0.100.30 Reports.Internal.Example.com.\n")
    async with running(local_config(upstream, hosts_file=str(hosts))) as srv:
        a = await query(srv, transport, "internal.example.com", "A")
        alias = await query(srv, transport, "portal.internal.example.com", "A")
        aaaa = await query(srv, transport, "internal.example.com", "AAAA")
        upper = await query(srv, transport, "reports.internal.example.com", "A")
        missing = await query(srv, transport, "nothing.internal.example.com", "A")
        localhost = await query(srv, transport, "localhost", "A")
    assert addresses(a) == ["10.0.100.21"] and a.answer[0].ttl == 120
    assert addresses(alias) == ["10.0.100.21"]
    assert addresses(aaaa, "AAAA") == ["fd00:100::21"]
    assert addresses(upper) == ["10.0.100.30"]
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert addresses(localhost) == ["192.0.2.1"]  # forwarded: the fake upstream's answer
    assert len(upstream.received) == 1


async def test_hosts_file_and_records_together(upstream: FakeUpstream, transport: str,
                                               tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.100.99 extra.internal.example.com\n")
    cfg = local_config(upstream, records=RECORDS[:2], hosts_file=str(hosts))
    async with running(cfg) as srv:
        extra = await query(srv, transport, "extra.internal.example.com", "A")
        own = await query(srv, transport, "internal.example.com", "A")
    assert addresses(extra) == ["10.0.100.99"]
    assert addresses(own) == ["10.0.100.21", "10.0.100.22"]


@pytest.mark.parametrize(("line", "reason"), [
    ("10.0.300.1 broken", "'10.0.300.1' is not an IP address"),
    ("10.0.100.9 *.internal.example.com",
     "'*.internal.example.com' is not a host name: wildcards are not supported in hosts "
     "files; use records"),
    ("10.0.100.9", "expected an address and at least one name, found '10.0.100.9'"),
    ("10.0.100.9 caf\u00e9.internal.example.com", "names and addresses must be ASCII"),
])
def test_bad_hosts_file_is_a_config_error_naming_the_line(
        upstream: FakeUpstream, tmp_path: Path, line: str, reason: str) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(f"10.0.100.21 internal.example.com\n# fine so far\n{line}\n",
                     encoding="utf-8")
    cfg = config_mod.from_data(local_config(upstream, hosts_file=str(hosts)))
    with pytest.raises(ConfigError) as e:
        Server(cfg)
    (problem,) = e.value.problems
    assert problem.path == "zones[1].hosts_file"
    assert f"{hosts}: line 3: {reason}" in problem.reason


async def test_reload_with_broken_hosts_file_keeps_serving(upstream: FakeUpstream,
                                                           tmp_path: Path) -> None:
    """The hosts file is re-read on reload; a broken one is rejected and the old records
    keep being served. A fixed one is picked up by the next reload."""
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.100.21 internal.example.com\n")
    path = tmp_path / "forwarder.yaml"
    path.write_text(yaml.safe_dump(local_config(upstream, hosts_file=str(hosts))))
    async with running(local_config(upstream, hosts_file=str(hosts)), str(path)) as srv:
        hosts.write_text("10.0.100.22\n")  # a line without a name
        assert await srv.reload() is False
        still = await query(srv, "udp", "internal.example.com", "A")
        hosts.write_text("10.0.100.22 internal.example.com\n")
        assert await srv.reload() is True
        changed = await query(srv, "udp", "internal.example.com", "A")
    assert addresses(still) == ["10.0.100.21"]
    assert addresses(changed) == ["10.0.100.22"]


async def test_longest_suffix_decides_between_local_and_forward(
        upstream: FakeUpstream, upstream2: FakeUpstream, transport: str) -> None:
    """A local rule for internal.example.com beside forward rules for example.com and
    aws.internal.example.com: each name goes to the rule with the longest matching suffix,
    and a local CNAME into the more specific forwarded zone is followed through that zone's
    rule, not answered locally."""
    cfg = forwarder_config(
        {"corp": [upstream.addr], "aws": [upstream2.addr]},
        zones=[{"match": "example.com", "upstream": "corp"},
               {"match": "internal.example.com", "records": [
                   {"name": "internal.example.com", "type": "A", "value": "10.0.100.21"},
                   {"name": "alias.internal.example.com", "type": "CNAME",
                    "value": "db.aws.internal.example.com"}]},
               {"match": "aws.internal.example.com", "upstream": "aws"}])
    async with running(cfg) as srv:
        local = await query(srv, transport, "internal.example.com", "A")
        forwarded = await query(srv, transport, "www.example.com", "A")
        deeper = await query(srv, transport, "db.aws.internal.example.com", "A")
        alias = await query(srv, transport, "alias.internal.example.com", "A")
    assert addresses(local) == ["10.0.100.21"] and local.flags & dns.flags.AA
    assert addresses(forwarded) == ["192.0.2.1"] and not forwarded.flags & dns.flags.AA
    assert addresses(deeper) == ["192.0.2.1"]
    assert [rrset.rdtype for rrset in alias.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert addresses(alias) == ["192.0.2.1"]
    assert [rx.message.question[0].name.to_text() for rx in upstream.received] == [
        "www.example.com."]
    # the alias's target was answered from the cache the direct query filled
    assert [rx.message.question[0].name.to_text() for rx in upstream2.received] == [
        "db.aws.internal.example.com."]


async def test_edns_client_gets_opt_and_cd_is_copied(upstream: FakeUpstream,
                                                     transport: str) -> None:
    async with running(local_config(upstream, records=RECORDS)) as srv:
        r = await query(srv, transport, "internal.example.com", "A", use_edns=0,
                        flags=dns.flags.RD | dns.flags.CD)
    assert r.edns == 0
    assert r.flags & dns.flags.CD and r.flags & dns.flags.RD
    assert addresses(r) == ["10.0.100.21", "10.0.100.22"]
