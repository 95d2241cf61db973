"""SuffixTable: longest suffix by label walk, root handled, case-insensitive keys."""

from __future__ import annotations

from forwarder.dns import names, wire


def test_longest_suffix_wins() -> None:
    table = names.SuffixTable([(".", "root"), ("amazonaws.com", "aws"),
                               ("s3.amazonaws.com", "s3")])
    assert table.lookup(wire.text_to_name("b.s3.amazonaws.com")) == "s3"
    assert table.lookup(wire.text_to_name("ec2.amazonaws.com")) == "aws"
    assert table.lookup(wire.text_to_name("amazonaws.com")) == "aws"
    assert table.lookup(wire.text_to_name("notamazonaws.com")) == "root"
    assert table.lookup(b"\x00") == "root"


def test_no_root_no_match() -> None:
    table = names.SuffixTable([("corp.example", 1)])
    assert table.lookup(wire.text_to_name("example")) is None
    assert table.lookup(wire.text_to_name("a.corp.example")) == 1


def test_keys_are_case_insensitive() -> None:
    table = names.SuffixTable([("Corp.Example.", 1)])
    assert table.lookup(wire.text_to_name("x.corp.example")) == 1


def test_lookup_all_longest_first() -> None:
    table = names.SuffixTable([(".", 0), ("example", 1), ("a.example", 2)])
    assert list(table.lookup_all(wire.text_to_name("b.a.example"))) == [2, 1, 0]


def test_is_subdomain() -> None:
    assert names.is_subdomain("A.Example.", "example")
    assert names.is_subdomain("example", "example.")
    assert not names.is_subdomain("notexample", "example")
    assert names.is_subdomain("anything", ".")


def test_names_under_a_remembered_parent_get_the_same_answer() -> None:
    """Lookups remember what a parent name gave; siblings, the parent itself, names that
    only look alike, and lookups after the memory starts over all answer as a fresh table."""
    rules = [("amazonaws.com", "aws"), ("s3.ap-northeast-1.amazonaws.com", "s3"),
             ("corp.example", "corp")]
    table = names.SuffixTable(rules)
    asked = ["a.s3.ap-northeast-1.amazonaws.com", "b.s3.ap-northeast-1.amazonaws.com",
             "s3.ap-northeast-1.amazonaws.com", "x.ec2.amazonaws.com", "amazonaws.com",
             "amazonaws.com.evil", "notamazonaws.com", "a.b.corp.example", "example", "."]
    for _ in range(2):
        for name in asked:
            fresh = names.SuffixTable(rules).lookup(wire.text_to_name(name))
            assert table.lookup(wire.text_to_name(name)) == fresh, name
        for i in range(names.PARENTS_REMEMBERED + 1):  # the memory fills and starts over
            assert table.lookup(wire.text_to_name(f"h.p{i}.amazonaws.com")) == "aws"
