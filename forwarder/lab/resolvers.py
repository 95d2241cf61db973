"""The simulated resolvers `forwarder lab` puts behind the forwarder, as the field reports
describe them: Route 53 Resolver inbound endpoints of two accounts in front of Interface
endpoints with private DNS, VPC resolvers behind S3 Gateway endpoints (public answers, as
AWS gives them), and the corporate resolvers (the internet's DNS); tiny UDP/TCP
responders on loopback answering from fixed tables, no network needed."""

from __future__ import annotations

import asyncio
import contextlib
import struct

import dnslib

from forwarder.dns import wire

Records = dict[str, list[tuple[str, str]]]  # owner ("*.x" for a wildcard) -> [(type, value)]


TOKYO_S3 = [("A", "10.0.1.15"), ("A", "10.0.2.15")]
TOKYO_VPCE = "vpce-0abc123-xyz.s3.ap-northeast-1.vpce.amazonaws.com"
# the same endpoint's names for one Availability Zone: that zone's ENI only
TOKYO_VPCE_1A = "vpce-0abc123-xyz-ap-northeast-1a.s3.ap-northeast-1.vpce.amazonaws.com"
TOKYO_VPCE_1C = "vpce-0abc123-xyz-ap-northeast-1c.s3.ap-northeast-1.vpce.amazonaws.com"
# a SaaS provider's PrivateLink service, through an Interface endpoint in our VPC
SAAS_VPCE = "vpce-0def456-abc.vpce-svc-0123456789abcdef0.ap-northeast-1.vpce.amazonaws.com"
ALB = "my-alb-1234567890.ap-northeast-1.elb.amazonaws.com"
S3_EDGE = "s3-r-w.ap-northeast-1.amazonaws.com"  # where AWS's S3 names point (CNAME)

RESOLVERS: dict[str, tuple[str, Records]] = {
    "r53-inbound": (
        "Route 53 Resolver inbound endpoint (shared services) -> Interface endpoints", {
            "s3.ap-northeast-1.amazonaws.com": TOKYO_S3,
            "*.s3.ap-northeast-1.amazonaws.com": TOKYO_S3,
            "ssm.ap-northeast-1.amazonaws.com": [("A", "10.0.1.21"), ("A", "10.0.2.21")],
            "ec2messages.ap-northeast-1.amazonaws.com": [("A", "10.0.1.22"),
                                                         ("A", "10.0.2.22")],
            "ssmmessages.ap-northeast-1.amazonaws.com": [("A", "10.0.1.23"),
                                                         ("A", "10.0.2.23")],
            "ec2.ap-northeast-1.amazonaws.com": [("A", "10.0.100.10"), ("A", "10.0.200.10")],
            "monitoring.ap-northeast-1.amazonaws.com": [("A", "172.16.2.49")],
            # no Interface endpoint for STS: the VPC resolver answers the public address
            "sts.ap-northeast-1.amazonaws.com": [("A", "52.119.221.10")],
        }),
    "vpc-gateway": (
        "AmazonProvidedDNS of a VPC with only an S3 Gateway endpoint", {
            "s3.ap-northeast-1.amazonaws.com": [("A", "52.219.150.28")],
            "s3.ap-northeast-3.amazonaws.com": [("A", "52.219.4.18"), ("A", "52.219.8.20")],
            "*.s3.ap-northeast-3.amazonaws.com": [("A", "52.219.4.18")],
            "s3.us-east-1.amazonaws.com": [("A", "52.216.8.21"), ("A", "52.216.40.5")],
            "*.s3.us-east-1.amazonaws.com": [("A", "52.216.8.21")],
            # S3's global name, as presigned URLs carry it: us-east-1's public addresses
            "*.s3.amazonaws.com": [("A", "52.217.36.18")],
            "ec2.ap-northeast-3.amazonaws.com": [("A", "15.152.5.10")],
            # a customer's internet-facing Application Load Balancer: public by design
            ALB: [("A", "54.95.10.20"), ("A", "13.112.30.40")],
        }),
    "corp": (
        "corporate resolvers (the internet's DNS)", {
            "www.example.org": [("A", "93.184.215.14")],
            "downloads.corp.example.com": [
                ("CNAME", "corp-downloads.s3.us-east-1.amazonaws.com")],
            "*.s3.us-east-1.amazonaws.com": [("A", "52.216.8.21")],
            # a corporate name for a bucket in Osaka, which the public DNS the corporate
            # resolvers use answers with S3's public addresses
            "files.corp.example.com": [("CNAME", "my-bucket.s3.ap-northeast-3.amazonaws.com")],
            "*.s3.ap-northeast-3.amazonaws.com": [("A", "52.219.4.18")],
            # a SaaS reached over the internet: a corporate CNAME to its public ALB
            "webapp.example.com": [("CNAME", ALB)],
            ALB: [("A", "54.95.10.20"), ("A", "13.112.30.40")],
            # endpoint-specific names: public zone, private addresses
            TOKYO_VPCE: TOKYO_S3,
            f"*.{TOKYO_VPCE}": TOKYO_S3,
            TOKYO_VPCE_1A: TOKYO_S3[:1],
            f"*.{TOKYO_VPCE_1A}": TOKYO_S3[:1],
            TOKYO_VPCE_1C: TOKYO_S3[1:],
            f"*.{TOKYO_VPCE_1C}": TOKYO_S3[1:],
            SAAS_VPCE: [("A", "10.0.5.10"), ("A", "10.0.6.10")],
            # AWS service names, as the internet sees them
            "ec2.ap-northeast-1.amazonaws.com": [("A", "54.248.220.10")],
            "monitoring.ap-northeast-1.amazonaws.com": [("A", "52.119.219.193")],
        }),
    "files-inbound": (
        "Route 53 Resolver inbound endpoint (file sharing) -> S3 Interface endpoint", {
            "s3.ap-northeast-1.amazonaws.com": TOKYO_S3,
            "*.s3.ap-northeast-1.amazonaws.com": TOKYO_S3,
        }),
    "vpc-tokyo": (
        "AmazonProvidedDNS of a Tokyo VPC: S3 Gateway endpoint; EC2, CloudWatch, SSM "
        "Interface endpoints", {
            "s3.ap-northeast-1.amazonaws.com": [("CNAME", S3_EDGE)],
            "*.s3.ap-northeast-1.amazonaws.com": [("CNAME", S3_EDGE)],
            S3_EDGE: [("A", "52.219.150.28"), ("A", "52.219.152.4")],
            "ec2.ap-northeast-1.amazonaws.com": [("A", "10.0.100.10"), ("A", "10.0.200.10")],
            "monitoring.ap-northeast-1.amazonaws.com": [("A", "172.16.2.49")],
            "ssm.ap-northeast-1.amazonaws.com": [("A", "10.0.3.21"), ("A", "10.0.4.21")],
        }),
}


def resolve_table(records: Records, qname: str, qtype: int) -> tuple[int, list[dnslib.RR]]:
    """Answers (rcode, answer records) for *qname* from *records*, as a recursive resolver
    would: exact name, else the closest `*.` wildcard, following CNAMEs."""
    answer: list[dnslib.RR] = []
    name = qname.lower().rstrip(".")
    for _ in range(8):
        found = _lookup(records, name)
        if found is None:
            return (wire.Rcode.NXDOMAIN if not answer else wire.Rcode.NOERROR), answer
        cnames = [v for t, v in found if t == "CNAME"]
        if cnames and qtype != dnslib.QTYPE.CNAME:
            answer.append(dnslib.RR(name, dnslib.QTYPE.CNAME, ttl=300,
                                    rdata=dnslib.CNAME(cnames[0])))
            name = cnames[0].lower().rstrip(".")
            continue
        for rtype, value in found:
            if getattr(dnslib.QTYPE, rtype) == qtype:
                rdata = dnslib.A(value) if rtype == "A" else dnslib.AAAA(value) \
                    if rtype == "AAAA" else dnslib.CNAME(value)
                answer.append(dnslib.RR(name, qtype, ttl=60, rdata=rdata))
        return wire.Rcode.NOERROR, answer
    return wire.Rcode.SERVFAIL, answer


def _lookup(records: Records, name: str) -> list[tuple[str, str]] | None:
    if name in records:
        return records[name]
    labels = name.split(".")
    for i in range(1, len(labels)):
        found = records.get("*." + ".".join(labels[i:]))
        if found is not None:
            return found
    return None


class SimulatedResolver:
    """A DNS server on 127.0.0.1 (UDP and TCP, one port) answering from a fixed table."""

    def __init__(self, name: str, title: str, records: Records) -> None:
        self.name = name
        self.title = title
        self.records = records
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    def answer(self, data: bytes) -> bytes | None:
        """Answers one query message; None for one that cannot be parsed."""
        try:
            request = dnslib.DNSRecord.parse(data)
        except (dnslib.DNSError, ValueError, IndexError, UnicodeError, struct.error):
            return None
        reply = request.reply(ra=1, aa=0)
        if request.q is None or request.q.qname is None:
            reply.header.rcode = wire.Rcode.FORMERR
            return bytes(reply.pack())
        rcode, records = resolve_table(self.records, str(request.q.qname), request.q.qtype)
        reply.header.rcode = rcode
        for rr in records:
            reply.add_answer(rr)
        return bytes(reply.pack())

    async def start(self, preferred_port: int) -> None:
        """Binds *preferred_port* (UDP and TCP), or a free port when it is taken."""
        loop = asyncio.get_running_loop()
        for port in (preferred_port, 0, 0, 0):
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpResponder(self), local_addr=("127.0.0.1", port))
            except OSError:
                continue
            bound = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._tcp_client, "127.0.0.1", bound)
            except OSError:
                transport.close()
                continue
            self._udp = transport  # type: ignore[assignment]
            self.port = bound
            return
        raise OSError(f"no free port on 127.0.0.1 for the simulated resolver {self.name}")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)

    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                out = self.answer(await reader.readexactly(size))
                if out is None:
                    break
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class _UdpResponder(asyncio.DatagramProtocol):
    def __init__(self, resolver: SimulatedResolver) -> None:
        self.resolver = resolver
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        out = self.resolver.answer(data)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)
