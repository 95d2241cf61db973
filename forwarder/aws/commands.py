"""`forwarder aws inventory -c FILE` and `forwarder aws check -c FILE`.

Both read the AWS API as the running forwarder would (the file's `aws:` section); when the
API cannot be read they fall back to `aws.state_file` and say so. `inventory` prints what
was found (`--json`: the state file's format); `check` prints the findings of
`forwarder.aws.checks`.

Exit codes: 0 nothing to fix (info findings only), 1 no inventory could be read, 2 invalid
configuration or no `aws:` section, 3 findings to fix.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from forwarder.aws import checks, services
from forwarder.aws import inventory as inventory_mod
from forwarder.aws.inventory import Address, Inventory
from forwarder.config import model
from forwarder.process.exits import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_MISMATCH,
    EXIT_OK,
    load_or_report,
)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    aws = sub.add_parser("aws", help="AWS discovery: print the inventory, check for mistakes")
    commands = aws.add_subparsers(dest="aws_command", required=True)
    inv = commands.add_parser("inventory", help="print the endpoints found in the AWS API")
    inv.add_argument("-c", "--config", required=True, help="path to the YAML configuration")
    inv.add_argument("--json", action="store_true", help="print the state file's JSON")
    check = commands.add_parser("check", help="list misconfigurations and how to fix them")
    check.add_argument("-c", "--config", required=True, help="path to the YAML configuration")


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    cfg = load_or_report(args.config)
    if cfg is None:
        return EXIT_CONFIG
    if cfg.aws is None or not cfg.aws.discovers:
        print(f"{args.config}: no aws.regions: nothing to discover", file=sys.stderr)
        return EXIT_CONFIG
    inv = obtain(cfg.aws)
    if inv is None:
        return EXIT_FAILURE
    if args.aws_command == "inventory":
        out.write(inventory_mod.to_json(inv) if args.json else render(inv))
        return EXIT_OK
    findings = checks.run(cfg, inv)
    print(f"{args.config}: {summary(inv)}\n", file=out)
    print(checks.render(findings), file=out)
    return EXIT_MISMATCH if any(f.severity != checks.INFO for f in findings) else EXIT_OK


def obtain(settings: model.AwsSettings) -> Inventory | None:
    """The inventory from the API, else from the state file (saying so on stderr)."""
    from forwarder.aws import api

    try:
        return api.discover(settings)
    except api.DiscoveryError as e:
        error = str(e)
    if settings.state_file is None:
        print(f"cannot read the AWS API: {error}", file=sys.stderr)
        return None
    try:
        inv = inventory_mod.read_state(settings.state_file)
    except inventory_mod.StateFileError as e:
        print(f"cannot read the AWS API: {error}; and {e}", file=sys.stderr)
        return None
    print(f"cannot read the AWS API: {error}; using {settings.state_file}, read "
          f"{inv.age():.0f} s ago", file=sys.stderr)
    return inv


def summary(inv: Inventory) -> str:
    counts = inv.counts()
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(inv.fetched_at))
    source = "the AWS API" if inv.source == "api" else "the state file"
    return (f"inventory from {source} at {when}: {counts['interface']} Interface, "
            f"{counts['gateway']} Gateway, {counts['inbound']} inbound endpoint(s) in "
            f"{len(inv.scopes)} account/region scope(s)")


def render(inv: Inventory) -> str:
    lines = [summary(inv)]
    for scope in inv.scopes:
        lines += ["", f"account {scope.account}, region {scope.region}"]

        key = (scope.account, scope.region)
        interface = [e for e in inv.interface if (e.account, e.region) == key]
        gateway = [e for e in inv.gateway if (e.account, e.region) == key]
        inbound = [e for e in inv.inbound if (e.account, e.region) == key]
        lines.append(f"  Interface endpoints: {len(interface) or 'none'}")
        for e in interface:
            dns = "on" if e.private_dns else "off"
            options = ", ".join(filter(None, [
                e.dns_record_ip_type,
                "only for inbound endpoints" if e.private_dns_only_for_inbound else ""]))
            lines.append(f"    {e.id}  {services.label(e.service)}  {e.vpc}  private DNS "
                         f"{dns}{f' ({options})' if options else ''}  {e.state}")
            lines.append(f"      service: {e.service}")
            lines.append(f"      addresses: {_addresses(e.addresses)}")
            if e.dns_names:
                lines.append(f"      DNS names: {', '.join(e.dns_names)}")
            details = inv.service(e.service)
            names = services.dns_names(e.service, details)
            if names:
                lines.append(f"      private DNS names: {', '.join(names)}")
        lines.append(f"  Gateway endpoints: {len(gateway) or 'none'}")
        for g in gateway:
            lines.append(f"    {g.id}  {services.label(g.service)}  {g.vpc}  {g.state}")
        lines.append(f"  Route 53 Resolver inbound endpoints: {len(inbound) or 'none'}")
        for r in inbound:
            name = f" ({r.name})" if r.name else ""
            lines.append(f"    {r.id}{name}  {r.vpc}  {r.status}")
            lines.append(f"      addresses: {_addresses(r.addresses)}")
    regions = dict.fromkeys(s.region for s in inv.scopes)
    for region in regions:
        lists = [p for p in inv.prefix_lists if p.region == region]
        lines += ["", f"AWS-managed prefix lists in {region} (what Gateway endpoints route): "
                      f"{len(lists) or 'none'}"]
        lines += [f"  {p.id}  {p.name}  {', '.join(p.cidrs) or 'no entries'}" for p in lists]
    return "\n".join(lines) + "\n"


def _addresses(addresses: tuple[Address, ...]) -> str:
    if not addresses:
        return "none"
    return ", ".join(f"{a.ip} ({a.az or 'zone unknown'}, {a.subnet})" for a in addresses)
