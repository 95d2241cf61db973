"""Time reading a reply (`forwarder.dns.reply.read`: validated in full and indexed) and
judging it (`forwarder.stages.policy.judge`) on typical forwarded answers.

Run: ``.venv/bin/python scripts/bench_answers.py [-n LOOPS]``. Prints microseconds
per call for each case; the miss path reads every forwarded answer once, and judges it
when its rule has a policy.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

import dns.message
import dns.rrset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forwarder.config import model
from forwarder.dns import names, netsets
from forwarder.dns.reply import read
from forwarder.stages.policy import judge as judging


def _response(qname: str, qtype: str, *rrsets: tuple[str, str, tuple[str, ...]]) -> bytes:
    """Return the wire form of a response to *qname*/*qtype* holding *rrsets*."""
    query = dns.message.make_query(qname, qtype, use_edns=0)
    response = dns.message.make_response(query)
    for owner, rtype, rdatas in rrsets:
        response.answer.append(dns.rrset.from_text(owner, 60, "IN", rtype, *rdatas))
    return response.to_wire()


CASES: dict[str, bytes] = {
    # The S3 Gateway-endpoint case: a protected name answered with public addresses.
    "3 x A, protected, public": _response(
        "s3.ap-northeast-1.amazonaws.com.", "A",
        ("s3.ap-northeast-1.amazonaws.com.", "A", ("52.219.1.1", "52.219.1.2", "52.219.1.3")),
    ),
    # The Interface-endpoint case: CNAME to the vpce name, two private addresses.
    "CNAME + 2 x A, protected, private": _response(
        "ssm.ap-northeast-1.amazonaws.com.", "A",
        ("ssm.ap-northeast-1.amazonaws.com.", "CNAME",
         ("vpce-0abc-xyz.ssm.ap-northeast-1.vpce.amazonaws.com.",)),
        ("vpce-0abc-xyz.ssm.ap-northeast-1.vpce.amazonaws.com.", "A", ("10.0.1.5", "10.0.2.5")),
    ),
    # Everything else the forwarder passes on: no protected name anywhere.
    "CNAME + 2 x A, not protected": _response(
        "www.example.com.", "A",
        ("www.example.com.", "CNAME", ("www.example.com.cdn.example.net.",)),
        ("www.example.com.cdn.example.net.", "A", ("93.184.216.34", "93.184.216.35")),
    ),
}


def _best_us(func: object, number: int, repeat: int) -> float:
    """Return the best time of *func* in microseconds per call."""
    return min(timeit.repeat(func, number=number, repeat=repeat)) / number * 1e6  # type: ignore[arg-type]


def main() -> None:
    """Print microseconds per scan_response + judge for each case, and dnslib for scale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--number", type=int, default=100_000, help="calls per repeat")
    parser.add_argument("-r", "--repeat", type=int, default=5, help="repeats (best is shown)")
    args = parser.parse_args()
    protected = names.SuffixTable((s, s) for s in model.DEFAULT_PROTECTED)
    allowed = netsets.NetworkSet.parse(model.DEFAULT_ALLOWED)
    judge = judging.judge
    for name, wire in CASES.items():
        qend = wire.index(b"\x00", 12) + 5  # the question name is uncompressed
        verdict = judge(read(wire, qend), protected, allowed)
        us_read = _best_us(lambda wire=wire, qend=qend: read(wire, qend), args.number,
                           args.repeat)
        us = _best_us(lambda wire=wire, qend=qend: judge(read(wire, qend), protected, allowed),
                      args.number, args.repeat)
        print(
            f"{us_read:7.2f} us  read  {us:7.2f} us  read+judge  {name:<36} ({len(wire)} "
            f"bytes; protected={verdict.protected_name is not None}, "
            f"violations={len(verdict.violations)})"
        )
    try:
        import dnslib
    except ImportError:
        return
    wire = next(iter(CASES.values()))
    us = _best_us(lambda: dnslib.DNSRecord.parse(wire), max(args.number // 10, 1), args.repeat)
    print(f"{us:7.2f} us  dnslib.DNSRecord.parse of the first case, for scale")


if __name__ == "__main__":
    main()
