"""SuffixTable: longest suffix by label walk, root handled, case-insensitive keys."""

from __future__ import annotations

from forwarder.dns import names


def test_longest_suffix_wins() -> None:
    table = names.SuffixTable([(".", "root"), ("amazonaws.com", "aws"),
                               ("s3.amazonaws.com", "s3")])
    assert table.lookup(names.from_text("b.s3.amazonaws.com")) == "s3"
    assert table.lookup(names.from_text("ec2.amazonaws.com")) == "aws"
    assert table.lookup(names.from_text("amazonaws.com")) == "aws"
    assert table.lookup(names.from_text("notamazonaws.com")) == "root"
    assert table.lookup(b"\x00") == "root"


def test_no_root_no_match() -> None:
    table = names.SuffixTable([("corp.example", 1)])
    assert table.lookup(names.from_text("example")) is None
    assert table.lookup(names.from_text("a.corp.example")) == 1


def test_keys_are_case_insensitive() -> None:
    table = names.SuffixTable([("Corp.Example.", 1)])
    assert table.lookup(names.from_text("x.corp.example")) == 1


def test_lookup_all_longest_first() -> None:
    table = names.SuffixTable([(".", 0), ("example", 1), ("a.example", 2)])
    assert list(table.lookup_all(names.from_text("b.a.example"))) == [2, 1, 0]


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
            fresh = names.SuffixTable(rules).lookup(names.from_text(name))
            assert table.lookup(names.from_text(name)) == fresh, name
        for i in range(names.PARENTS_REMEMBERED + 1):  # the memory fills and starts over
            assert table.lookup(names.from_text(f"h.p{i}.amazonaws.com")) == "aws"


import pytest  # noqa: E402

from forwarder.errors import FormError  # noqa: E402

DEFAULT = names.SuffixTable((s, s) for s in ("amazonaws.com", "amazonaws.com.cn", "api.aws",
                                             "api.amazonwebservices.com.cn"))


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("amazonaws.com", "amazonaws.com"),
        ("s3.amazonaws.com", "amazonaws.com"),
        ("S3.AmazonAWS.COM.", "amazonaws.com"),
        ("x.amazonaws.com.cn", "amazonaws.com.cn"),
        ("a.b.api.aws", "api.aws"),
        ("api.amazonwebservices.com.cn", "api.amazonwebservices.com.cn"),
        ("notamazonaws.com", None),
        ("amazonaws.com.evil.example", None),
        ("xapi.aws", None),
        ("aws", None),
        ("com", None),
        (".", None),
    ],
)
def test_suffixes_match_label_wise(name: str, suffix: str | None) -> None:
    """Suffixes match whole labels, case-insensitively, with or without a trailing dot,
    for wire and presentation names alike."""
    assert DEFAULT.lookup_text(name) == suffix
    assert DEFAULT.lookup(names.from_text(name)) == suffix
    assert names.is_under(names.from_text(name), names.from_text(suffix or "invalid")) \
        is (suffix is not None)


def test_root_covers_everything_and_an_empty_table_nothing() -> None:
    root = names.SuffixTable([(".", "root")])
    assert root.lookup(names.from_text("anything.example")) == "root"
    assert root.lookup(b"\x00") == "root"
    assert names.SuffixTable().lookup(names.from_text("amazonaws.com")) is None
    assert not names.SuffixTable() and len(root) == 1


def test_tables_compare_by_suffixes_and_list_them_sorted() -> None:
    a = names.SuffixTable([("b.example", 1), ("A.example.", 1)])
    assert a == names.SuffixTable([("a.example", 1), ("b.example", 1)])
    assert hash(a) == hash(names.SuffixTable([("a.example", 1), ("b.example", 1)]))
    assert a.suffixes() == ["a.example", "b.example"]


def test_walk_answers_the_end_of_the_names_own_bytes() -> None:
    data = b"\x00" * 12 + b"\x01a\x07example\x00" + b"\x01b\xc0\x0e"
    memo: names.NameMemo = {}
    assert names.walk(data, 12, len(data), memo) == 23
    assert names.walk(data, 23, len(data), memo) == len(data)  # b + pointer to example
    assert names.decompress(data, 23) == b"\x01b\x07example\x00"
    with pytest.raises(FormError, match="none is allowed"):
        names.walk(data, 23, len(data), {}, compressible=False)
    with pytest.raises(FormError, match="runs past its record"):
        names.walk(data, 12, 20, {})


def test_walk_refuses_a_pointer_to_a_name_that_runs_into_its_own_start() -> None:
    """"x" + a pointer to 12, where the name at 12 runs on into the pointer's own name:
    refused (the name aimed at would read the same pointer again)."""
    data = b"\x00" * 12 + b"\x01a" + b"\x01x\xc0\x0c"
    with pytest.raises(FormError):
        names.walk(data, 14, len(data), {})
