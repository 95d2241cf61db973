"""Name patterns: `*` for a label or inside one, covering the names below a match."""

from __future__ import annotations

import pytest

from forwarder.dns import names, patterns


def lookup(table: patterns.NamePatterns[str], name: str) -> str | None:
    return table.lookup(names.from_text(name))


@pytest.mark.parametrize(("pattern", "name", "covered"), [
    ("*.elb.amazonaws.com", "my-alb-1.us-east-1.elb.amazonaws.com", True),
    ("*.elb.amazonaws.com", "dualstack.my-alb-1.us-east-1.elb.amazonaws.com", True),
    ("*.elb.amazonaws.com", "elb.amazonaws.com", False),  # no label left for the *
    ("*.elb.amazonaws.com", "notelb.amazonaws.com", False),
    ("*.elb.*.amazonaws.com", "my-nlb-1.elb.us-east-2.amazonaws.com", True),
    ("*.elb.*.amazonaws.com", "elb.us-east-2.amazonaws.com", False),
    ("*.elb.*.amazonaws.com", "elasticloadbalancing.us-east-2.amazonaws.com", False),
    ("ec2-*.compute-1.amazonaws.com", "ec2-54-210-1-2.compute-1.amazonaws.com", True),
    ("ec2-*.compute-1.amazonaws.com", "EC2-54-210-1-2.Compute-1.AmazonAWS.com", True),
    ("ec2-*.compute-1.amazonaws.com", "ec2.compute-1.amazonaws.com", False),
    ("ec2-*.*.compute.amazonaws.com", "ec2-3-1-1-1.eu-west-1.compute.amazonaws.com", True),
    ("ec2-*.*.compute.amazonaws.com", "ec2.eu-west-1.amazonaws.com", False),
    ("d-*.execute-api.*.amazonaws.com", "d-abcde12345.execute-api.us-east-1.amazonaws.com", True),
    ("d-*.execute-api.*.amazonaws.com", "a1b2c3.execute-api.us-east-1.amazonaws.com", False),
    ("plain.example.com", "plain.example.com", True),
    ("plain.example.com", "x.plain.example.com", True),
    ("plain.example.com", "example.com", False),
])
def test_a_pattern_covers_what_it_matches_and_the_names_below(
        pattern: str, name: str, covered: bool) -> None:
    table = patterns.NamePatterns([(pattern, pattern)])
    assert (lookup(table, name) == pattern) is covered
    assert (lookup(table, name) == pattern) is covered  # remembered: the same answer


def test_the_pattern_covering_the_closest_ancestor_answers() -> None:
    """The pattern covering the closest ancestor answers; among patterns matching the name
    itself, the first given."""
    table = patterns.NamePatterns([("*.elb.amazonaws.com", "elb"), ("*.amazonaws.com", "wide"),
                                   ("x-*.example.net", "first"), ("*.example.net", "second")])
    assert lookup(table, "a.b.elb.amazonaws.com") == "wide"  # elb.amazonaws.com is covered
    assert lookup(table, "x-1.example.net") == "first"  # both match it: the first given
    assert lookup(table, "y.example.net") == "second"
    assert lookup(table, "s3.amazonaws.com") == "wide"
    for i in range(patterns.REMEMBERED + 10):  # forgetting parents changes no answer
        assert lookup(table, f"n{i}.p{i}.example") is None
    assert lookup(table, "x-1.example.net") == "first"
    assert patterns.NamePatterns([]).lookup(names.from_text("a.b")) is None


@pytest.mark.parametrize(("text", "error"), [
    (".", "root"), ("a**.b", "one *"), ("a..b", "bad label"),
])
def test_bad_patterns_say_why(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        patterns.parse(text)
