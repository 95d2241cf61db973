"""Blocked answers say what to do next, over the wire: the EDE text after the action, the
policy's log line, both within what a client can read (400 bytes of EDE text).

`r53` plays a resolver whose VPC reaches S3 through a Gateway endpoint: S3 names answer
public addresses. Its canary watches s3.ap-northeast-1.amazonaws.com.
"""

from __future__ import annotations

import logging
from typing import Any

import dns.edns
import dns.message
import dns.rcode
import pytest

from tests.conftest import forwarder_config, query, running
from tests.fakes import FakeUpstream, answers

S3 = "s3.ap-northeast-1.amazonaws.com"
BUCKET = "a-bucket-for-presigned-urls-with-a-rather-long-name-0123456789"
GLOBAL = f"{BUCKET}.s3.amazonaws.com"
PUBLIC = {
    (S3, "A"): [f"{S3}. CNAME s3-r-w.ap-northeast-1.amazonaws.com.",
                "s3-r-w.ap-northeast-1.amazonaws.com. A 52.219.150.28"],
    (GLOBAL, "A"): ["A 52.217.36.18", "A 52.217.36.19", "A 52.217.36.20", "A 52.217.36.21"],
}


@pytest.fixture
async def r53() -> Any:
    async with FakeUpstream(answers(PUBLIC)) as fake:
        yield fake


def setup(r53: FakeUpstream) -> dict[str, Any]:
    cfg = forwarder_config({"r53": [r53.addr]},
                           zones=[{"match": "amazonaws.com", "upstream": "r53",
                                   "policy": "private-only"}],
                           policies={"private-only": {}})
    cfg["upstreams"]["r53"]["canary"] = {"name": S3}
    return cfg


def ede(msg: dns.message.Message) -> list[tuple[int, str]]:
    return [(int(o.code), o.text or "") for o in msg.options if o.otype == dns.edns.EDE]


async def test_s3s_global_name_gets_the_regional_one(r53: FakeUpstream, transport: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Ask A BUCKET.s3.amazonaws.com (a presigned URL's name); the resolver answers public
    addresses: SERVFAIL, and right after the action the regional name to use instead, in
    the region where this forwarder has a private S3 path (the canary's)."""
    with caplog.at_level(logging.WARNING, "forwarder.policy"):
        async with running(setup(r53)) as server:
            got = await query(server, transport, GLOBAL, use_edns=0)
    assert got.rcode() == dns.rcode.SERVFAIL
    ((code, text),) = ede(got)
    step = (f"use the regional name {BUCKET}.s3.ap-northeast-1.amazonaws.com if the bucket "
            "is in ap-northeast-1: S3's global name has no private address")
    assert code == 15
    assert text.startswith("public addresses 52.217.36.")  # one shown: the EDE has 400 bytes
    assert text.endswith(f" and 3 more for {GLOBAL} from group r53 violates policy "
                         f"private-only; answered SERVFAIL; {step}")
    assert len(text.encode()) <= 400
    (line,) = [r.getMessage() for r in caplog.records if r.name == "forwarder.policy"]
    assert f"cause={step!r}" in line


async def test_a_public_answer_for_the_canarys_name_asks_about_a_gateway_endpoint(
        r53: FakeUpstream, transport: str) -> None:
    """S3 (a CNAME to s3-r-w, as AWS answers) through the group whose canary watches S3:
    the EDE asks the question that finds the usual cause, instead of listing the allowed
    networks."""
    async with running(setup(r53)) as server:
        got = await query(server, transport, S3, use_edns=0)
    ((code, text),) = ede(got)
    assert code == 15
    assert text == ("public address 52.219.150.28 for s3-r-w.ap-northeast-1.amazonaws.com "
                    f"(CNAME target of {S3}) from group r53 violates policy private-only; "
                    "answered SERVFAIL; the resolver for this rule (group r53) returned a "
                    "public S3 address: is this VPC's S3 endpoint a Gateway endpoint? "
                    "On-premises clients need an Interface endpoint")
