"""forwarder lab: a hook that pins a name to a fixed address, as operators do during a
migration, and gets one wrong: s3.eu-west-1.amazonaws.com to a public S3 address.

The answer policy judges the answers hooks make as it judges an upstream's, so clients
asking that name get SERVFAIL with EDE 15 (Blocked), not the public address. A hook that
vouches for an answer returns `Answer(..., trusted=True)`: no policy judges it, and
forwarder_hook_trusted_answers_total counts it.
"""

from forwarder.hooks import Answer, Context, Continue, QueryVerdict

PINNED = {"s3.eu-west-1.amazonaws.com": "52.218.48.12"}


def on_query(ctx: Context) -> QueryVerdict:
    address = PINNED.get(ctx.qname)
    if address is None or ctx.qtype != "A":
        return Continue()
    return Answer([(ctx.qname, "A", 60, address)])
