"""LocalZone and hosts-file parsing, without sockets: build zones from a config, answer
queries built on the wire, read the replies with dnspython."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from forwarder import config as config_mod
from forwarder.errors import ConfigError
from forwarder.query import Query
from forwarder.stages import local


def build(records: list[dict[str, Any]] | None = None, match: str = "zone.example",
          extra_zones: list[dict[str, Any]] | None = None, **rule: Any) -> local.LocalZone:
    zone: dict[str, Any] = {"match": match, **rule}
    if records is not None:
        zone["records"] = records
    cfg = config_mod.from_data({
        "listen": [{"address": "127.0.0.1", "port": 0}],
        "upstreams": {"up": {"servers": ["127.0.0.1:53"]}},
        "zones": [{"match": ".", "upstream": "up"}, zone, *(extra_zones or [])],
    })
    return local.zones(cfg)[1]


def ask(zone: local.LocalZone, name: str, rdtype: str = "A", cd: bool = False,
        rdclass: int = dns.rdataclass.IN) -> dns.message.Message:
    msg = dns.message.make_query(name, rdtype, rdclass=rdclass)
    if cd:
        msg.flags |= dns.flags.CD
    q = Query.from_wire(msg.to_wire(), ("127.0.0.1", 5300), "udp", 0.0)
    reply = zone.answer(q)
    assert reply.answered_by == "local"
    return dns.message.from_wire(reply.to_client(q))


def rdata(msg: dns.message.Message) -> list[tuple[str, str, str]]:
    return [(rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rr.to_text())
            for rrset in msg.answer for rr in rrset]


def rec(name: str, rtype: str, value: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": rtype, "value": value, **kw}


def test_exact_hit_is_a_prebuilt_reply() -> None:
    """The common case costs a lookup: the same Reply object for every matching query."""
    zone = build([rec("zone.example", "A", "10.0.0.1")])
    msg = dns.message.make_query("zone.example", "A")
    q1 = Query.from_wire(msg.to_wire(), ("127.0.0.1", 1), "udp", 0.0)
    q2 = Query.from_wire(msg.to_wire(), ("127.0.0.1", 2), "udp", 0.0)
    assert zone.answer(q1) is zone.answer(q2)


def test_soa_at_the_apex_and_negative_answers_use_rule_ttl() -> None:
    zone = build([rec("www.zone.example", "A", "10.0.0.1")], ttl=45)
    soa = ask(zone, "zone.example", "SOA")
    assert rdata(soa) == [("zone.example.", "SOA",
                           "zone.example. hostmaster.zone.example. 1 3600 600 86400 45")]
    nx = ask(zone, "nope.zone.example")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert nx.authority[0].ttl == 45 and nx.authority[0][0].minimum == 45
    apex_a = ask(zone, "zone.example", "A")
    assert apex_a.rcode() == dns.rcode.NOERROR and apex_a.answer == []


def test_empty_non_terminal_is_nodata() -> None:
    zone = build([rec("a.b.zone.example", "A", "10.0.0.1")])
    assert ask(zone, "b.zone.example").rcode() == dns.rcode.NOERROR
    assert ask(zone, "c.zone.example").rcode() == dns.rcode.NXDOMAIN


def test_most_specific_wildcard_wins_and_never_matches_its_own_parent() -> None:
    zone = build([rec("*.zone.example", "A", "10.0.0.1"),
                  rec("*.s3.zone.example", "A", "10.0.0.2")])
    assert rdata(ask(zone, "x.y.s3.zone.example")) == [("x.y.s3.zone.example.", "A", "10.0.0.2")]
    assert rdata(ask(zone, "s3.zone.example")) == [("s3.zone.example.", "A", "10.0.0.1")]
    assert ask(zone, "zone.example").answer == []


def test_wildcard_cname_is_chased_to_exact_target() -> None:
    zone = build([rec("*.zone.example", "CNAME", "target.zone.example"),
                  rec("target.zone.example", "AAAA", "fd00::1")])
    msg = ask(zone, "any.zone.example", "AAAA")
    assert rdata(msg) == [("any.zone.example.", "CNAME", "target.zone.example."),
                          ("target.zone.example.", "AAAA", "fd00::1")]


def test_cname_to_missing_name_in_zone_is_nxdomain_with_the_chain() -> None:
    zone = build([rec("a.zone.example", "CNAME", "gone.zone.example")])
    msg = ask(zone, "a.zone.example")
    assert msg.rcode() == dns.rcode.NXDOMAIN
    assert rdata(msg) == [("a.zone.example.", "CNAME", "gone.zone.example.")]
    assert msg.authority[0].name.to_text() == "zone.example."


def test_cname_query_type_gets_the_cname_only() -> None:
    zone = build([rec("a.zone.example", "CNAME", "b.zone.example"),
                  rec("b.zone.example", "A", "10.0.0.9")])
    assert rdata(ask(zone, "a.zone.example", "CNAME")) == [
        ("a.zone.example.", "CNAME", "b.zone.example.")]


def test_any_returns_every_record_of_the_name() -> None:
    zone = build([rec("zone.example", "A", "10.0.0.1"), rec("zone.example", "TXT", "hi")])
    assert sorted(t for _, t, _ in rdata(ask(zone, "zone.example", "ANY"))) == ["A", "TXT"]


def test_cd_bit_is_copied_and_question_case_kept() -> None:
    zone = build([rec("zone.example", "A", "10.0.0.1")])
    msg = ask(zone, "ZONE.example", cd=True)
    assert msg.flags & dns.flags.CD and msg.flags & dns.flags.AA
    assert msg.question[0].name.to_text() == "ZONE.example."


def test_other_classes_are_refused() -> None:
    zone = build([rec("zone.example", "A", "10.0.0.1")])
    assert ask(zone, "zone.example", rdclass=dns.rdataclass.CH).rcode() == dns.rcode.REFUSED


def test_duplicate_records_are_answered_once_with_the_lowest_ttl() -> None:
    zone = build([rec("zone.example", "A", "10.0.0.1", ttl=60),
                  rec("zone.example", "A", "10.0.0.1"), rec("zone.example", "A", "10.0.0.2")])
    msg = ask(zone, "zone.example")
    assert [rr.to_text() for rr in msg.answer[0]] == ["10.0.0.1", "10.0.0.2"]
    assert msg.answer[0].ttl == 60


def test_txt_value_is_one_string() -> None:
    zone = build([rec("zone.example", "TXT", 'v=spf1 "quoted" -all')])
    (txt,) = ask(zone, "zone.example", "TXT").answer[0]
    assert txt.strings == (b'v=spf1 "quoted" -all',)


@pytest.mark.parametrize(("records", "expected"), [
    ([rec("a.zone.example", "CNAME", "b.zone.example"),
      rec("b.zone.example", "CNAME", "a.zone.example")],
     "CNAME loop: a.zone.example -> b.zone.example -> a.zone.example"),
    ([rec("*.zone.example", "CNAME", "x.zone.example")], "CNAME loop"),
    ([rec("a.zone.example", "CNAME", "b.zone.example"), rec("a.zone.example", "A", "10.0.0.1")],
     "a.zone.example has a CNAME and other records (A)"),
    ([rec("a.zone.example", "CNAME", "b.zone.example"),
      rec("a.zone.example", "CNAME", "c.zone.example")], "more than one CNAME"),
])
def test_bad_cname_data_is_a_config_error(records: list[dict[str, Any]], expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        build(records)
    (problem,) = e.value.problems
    assert problem.path == "zones[1].records" and expected in problem.reason


def test_record_outside_the_match_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as e:
        build([rec("zone.example", "A", "10.0.0.1"), rec("other.example", "A", "10.0.0.2")])
    (problem,) = e.value.problems
    assert problem.path == "zones[1].records[1]"
    assert "'other.example' is not under this rule's match 'zone.example'" in problem.reason


def test_chain_stops_at_a_more_specific_rule() -> None:
    zone = build([rec("a.zone.example", "CNAME", "x.sub.zone.example"),
                  rec("*.zone.example", "A", "10.0.0.1")],
                 extra_zones=[{"match": "sub.zone.example", "upstream": "up"}])
    msg = ask(zone, "a.zone.example")
    assert rdata(msg) == [("a.zone.example.", "CNAME", "x.sub.zone.example.")]
    assert msg.rcode() == dns.rcode.NOERROR and msg.authority == []


@pytest.mark.parametrize(("name", "rdtype"), [("a.zone.example", "A"),
                                              ("a.zone.example", "MX"),
                                              ("w.zone.example", "AAAA")])
def test_a_chain_that_leaves_the_zone_names_where_it_goes_on(name: str, rdtype: str) -> None:
    """The pipeline follows the target through its own rule (pipeline/chase.py): the zone's
    answer says where, for every type it chases, exact names and wildcards alike."""
    zone = build([rec("a.zone.example", "CNAME", "b.zone.example"),
                  rec("b.zone.example", "CNAME", "Target.Elsewhere.example"),
                  rec("*.zone.example", "CNAME", "a.zone.example")])
    msg = dns.message.make_query(name, rdtype)
    q = Query.from_wire(msg.to_wire(), ("127.0.0.1", 1), "udp", 0.0)
    for _ in range(2):  # not a shared prebuilt reply: each query gets its own
        reply = zone.answer(q)
        assert isinstance(reply, local.Leaving)
        assert reply.target == b"\x06target\x09elsewhere\x07example\x00"


def test_chains_that_stay_or_stop_in_the_zone_do_not_leave() -> None:
    zone = build([rec("a.zone.example", "CNAME", "b.zone.example"),
                  rec("b.zone.example", "A", "10.0.0.2"),
                  rec("c.zone.example", "CNAME", "x.zone.example")])
    for name in ("a.zone.example", "c.zone.example"):  # an answer; NXDOMAIN in the zone
        q = Query.from_wire(dns.message.make_query(name, "A").to_wire(), ("127.0.0.1", 1),
                            "udp", 0.0)
        assert not isinstance(zone.answer(q), local.Leaving)
    cname = Query.from_wire(dns.message.make_query("a.zone.example", "CNAME").to_wire(),
                            ("127.0.0.1", 1), "udp", 0.0)
    assert not isinstance(zone.answer(cname), local.Leaving)  # the CNAME itself was asked


def test_long_chain_is_cut_at_the_hop_limit() -> None:
    hops = local.MAX_CHAIN + 2
    records = [rec(f"n{i}.zone.example", "CNAME", f"n{i + 1}.zone.example") for i in range(hops)]
    records.append(rec(f"n{hops}.zone.example", "A", "10.0.0.1"))
    msg = ask(build(records), "n0.zone.example")
    assert len(msg.answer) == local.MAX_CHAIN + 1
    assert all(rrset.rdtype == dns.rdatatype.CNAME for rrset in msg.answer)


# --- hosts files -------------------------------------------------------------------------------


def hosts(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "hosts"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def test_read_hosts_filters_by_match_and_maps_families(tmp_path: Path) -> None:
    path = hosts(tmp_path, "127.0.0.1 localhost\n"
                           "10.1.1.1 a.zone.example b.zone.example # comment\n"
                           "\t fe80::1%lo0  c.zone.example\n"
                           "::ffff:10.1.1.2 d.zone.example\n")
    got = {(r.name, r.rtype, r.value, r.ttl) for r in local.read_hosts(path, "zone.example", 90)}
    assert got == {("a.zone.example", 1, "10.1.1.1", 90), ("b.zone.example", 1, "10.1.1.1", 90),
                   ("c.zone.example", 28, "fe80::1", 90),
                   ("d.zone.example", 28, "::ffff:a01:102", 90)}


@pytest.mark.parametrize(("text", "expected"), [
    ("10.0.0.1\n", "line 1: expected an address and at least one name"),
    ("# ok\nnot-an-ip host.zone.example\n", "line 2: 'not-an-ip' is not an IP address"),
    ("10.0.0.1 *.zone.example\n", "line 1: '*.zone.example' is not a host name: wildcards"),
    ("10.0.0.1 " + "a" * 64 + ".zone.example\n", "line 1:"),
    ("10.0.0.1 caf\u00e9.zone.example\n".encode(), "line 1: names and addresses must be ASCII"),
])
def test_bad_hosts_line_names_the_line(tmp_path: Path, text: str | bytes, expected: str) -> None:
    path = hosts(tmp_path, text)
    with pytest.raises(local.HostsFileError) as e:
        local.read_hosts(path, "zone.example", 300)
    assert str(e.value).startswith(path) and expected in str(e.value)


def test_non_ascii_comment_is_fine(tmp_path: Path) -> None:
    path = hosts(tmp_path, "# r\u00e9seau priv\u00e9\n10.0.0.1 a.zone.example\n".encode("latin-1"))
    assert [r.name for r in local.read_hosts(path, "zone.example", 300)] == ["a.zone.example"]


def test_unreadable_hosts_file_is_a_config_error(tmp_path: Path) -> None:
    path = hosts(tmp_path, "10.0.0.1 a.zone.example\n")
    zone_cfg = {"match": "zone.example", "hosts_file": path}
    cfg = config_mod.from_data({"listen": [{"address": "127.0.0.1", "port": 0}],
                                "upstreams": {"up": {"servers": ["127.0.0.1:53"]}},
                                "zones": [zone_cfg]}, "lab.yaml")
    Path(path).unlink()  # gone after the config was validated: at reload time
    with pytest.raises(ConfigError) as e:
        local.zones(cfg)
    assert str(e.value).startswith("lab.yaml: zones[0].hosts_file: cannot read")
