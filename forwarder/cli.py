"""Command line: `forwarder run`, `check-config`, `explain`, `lab`, `reload`, `health`,
`replay`, `aws`; exit codes.

Exit codes: 0 success, 1 runtime failure (e.g. cannot bind), 2 invalid configuration or
usage, 3 `lab` expectations not met.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from forwarder import __version__
from forwarder.config.model import Config
from forwarder.errors import ConfigError, ConfigProblem
from forwarder.process import logs
from forwarder.process.exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, load_or_report, report

log = logging.getLogger("forwarder")

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forwarder",
        description="A programmable DNS forwarder for hybrid cloud networks.")
    parser.add_argument("--version", action="version", version=f"forwarder {__version__}")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="log level for messages on stderr; wins over `log.level` "
                             "(default: the configuration's, else info)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve DNS with a configuration file")
    run.add_argument("-c", "--config", required=True, help="path to the YAML configuration")
    run.add_argument("--user", help="drop to this user after binding (overrides `user:`)")
    run.add_argument("--pid-file", help="write the process id here (overrides `pid_file:`)")

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file", help="path to the YAML configuration")
    check.add_argument("--not-target", action="store_true",
                       help="this is not the machine that runs the forwarder: a `user:` or "
                            "`group:` missing here is a warning, not an error")

    explain = sub.add_parser("explain", help="show how one name would be answered")
    explain.add_argument("name")
    explain.add_argument("type", nargs="?", default="A")
    explain.add_argument("-c", "--config", required=True, help="path to the YAML configuration")
    explain.add_argument("--client", default="127.0.0.1",
                         help="ask as this client address: its `clients:` rules, ACL and "
                              "hooks apply (default 127.0.0.1)")

    lab = sub.add_parser("lab", help="run simulated AWS resolvers and show the policy at work")
    lab.add_argument("--serve", action="store_true",
                     help="keep running after the demo so you can dig it")
    lab.add_argument("--port", type=int,
                     help="forwarder port (default: config/lab.yaml's, 15400; 0: any free one)")

    reload = sub.add_parser("reload", help="ask a running forwarder to reload (SIGHUP)")
    reload.add_argument("--pid-file", required=True, help="the pid file of the running forwarder")

    health = sub.add_parser("health", help="probe the forwarder a configuration describes: "
                                           "exit 0 if ready, 1 if not (for HEALTHCHECK)")
    health.add_argument("-c", "--config", required=True, help="path to the YAML configuration")
    health.add_argument("--timeout", type=float, default=4.0,
                        help="seconds to wait for an answer (default 4)")

    replay = sub.add_parser("replay", help="judge a recorded query log under a candidate "
                                           "configuration, offline: what would change")
    replay.add_argument("-c", "--config", required=True,
                        help="the candidate YAML configuration")
    replay.add_argument("recording", nargs="+",
                        help="query log file(s) written with querylog.answers: true ('-': stdin)")
    replay.add_argument("--top", type=int, default=50,
                        help="changes listed at most (default 50)")
    from forwarder.aws import commands as aws_commands

    aws_commands.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level)
    if args.command == "check-config":
        return check_config(args.file, target=not args.not_target)
    if args.command == "run":
        return run(args.config, user=args.user, pid_file=args.pid_file)
    if args.command == "explain":
        from forwarder import explain

        return explain.main(args.name, args.type, args.config, args.client)
    if args.command == "lab":
        from forwarder import lab

        return lab.main(serve=args.serve, port=args.port)
    if args.command == "reload":
        return reload_running(args.pid_file)
    if args.command == "health":
        from forwarder.ops import health

        return health.main(args.config, args.timeout)
    if args.command == "aws":
        from forwarder.aws import commands as aws_commands

        return aws_commands.main(args)
    if args.command == "replay":
        from forwarder.ops import replay

        return replay.main(args.config, args.recording, args.top)
    return EXIT_CONFIG


def check_config(path: str, target: bool = True) -> int:
    """Validates the file as `run` would. On the *target* machine (the default) the
    accounts in `user:`/`group:` must exist; elsewhere a missing one is a warning."""
    cfg = load_or_report(path)
    if cfg is None:
        return EXIT_CONFIG
    from forwarder.hooks import runner

    accounts = missing_accounts(cfg)
    warnings = opt_outs(cfg)
    try:
        runner.check(cfg)  # hook files must import, as they must on start and reload
        warnings += judged_local_answers(cfg)  # and local answers pass their policies
        if accounts and target:
            raise ConfigError(path, [dataclasses.replace(p, reason=(
                f"{p.reason}: create it here, or, if the forwarder runs on another machine, "
                "check with --not-target")) for p in accounts],
                cfg.positions)
        if cfg.aws is not None:
            from forwarder.aws import diagnosis, gateway

            ranges = diagnosis.load_ranges(cfg)  # aws.ip_ranges must be readable
            warnings += gateway.check(cfg, ranges)
    except ConfigError as e:
        report(e, path)
        return EXIT_CONFIG
    for p in accounts:
        p = cfg.positions.locate(p)
        print(f"{p.where(path)}: {p.path}: warning: {p.reason}; it must exist on the machine "
              "that runs the forwarder", file=sys.stderr)
    for p in warnings:
        p = cfg.positions.locate(p)
        print(f"{p.where(path)}: {p.path}: warning: {p.reason}", file=sys.stderr)
    print(f"{path}: ok ({len(cfg.rules)} rules, {len(cfg.upstreams)} upstream groups, "
          f"{len(cfg.policies)} policies)")
    for group in cfg.upstreams:
        if group.tls.insecure_skip_verify:
            print(f"{path}: warning: upstreams.{group.name}.tls.insecure_skip_verify is true: "
                  "its servers' certificates are not verified", file=sys.stderr)
    return EXIT_OK


def opt_outs(cfg: Config) -> list[ConfigProblem]:
    """A warning for each rule that says `policy: none`."""
    return [ConfigProblem(f"zones[{r.index}].policy", "policy: none: no policy judges this "
                          "rule's answers, protected names included (a name it answers "
                          "with a CNAME into AWS names passes unjudged)")
            for r in cfg.rules if r.opt_out]


def judged_local_answers(cfg: Config) -> list[ConfigProblem]:
    """Builds the local zones and judges their answers as a start would: raises ConfigError
    for a hosts file that does not parse, records that do not fit together or an answer
    that breaks an enforcing policy; answers the warnings for those a counting one lets
    through."""
    from forwarder.stages import local, policy
    from forwarder.stages.policy import zones
    from forwarder.stages.router import Router

    return zones.protection(cfg, policy.build(cfg), Router(cfg.rules), None,
                            local.zones(cfg))[1]


def missing_accounts(cfg: Config, user: str | None = None) -> list[ConfigProblem]:
    """`user:` and `group:` naming no account on this machine (*user* given on the command
    line replaces `user:`, which is then not checked)."""
    from forwarder.process import privileges

    return [ConfigProblem(key, reason) for key, reason in
            privileges.missing_accounts(None if user else cfg.user, cfg.group)]


def run(path: str, user: str | None = None, pid_file: str | None = None) -> int:
    cfg = load_or_report(path)
    if cfg is None:
        return EXIT_CONFIG
    accounts = missing_accounts(cfg, user)
    if accounts:  # this is the machine that runs it: say so before binding anything
        report(ConfigError(path, accounts, cfg.positions), path)
        return EXIT_CONFIG
    logs.configure(cfg.log)
    from forwarder.process import daemon

    if cfg.workers > 1:
        from forwarder.process import workers

        return workers.main(cfg, path, user=user or cfg.user, pid_file=pid_file or cfg.pid_file)
    return daemon.main(cfg, path, user=user, pid_file=pid_file)


def reload_running(pid_file: str) -> int:
    import signal

    try:
        with open(pid_file, encoding="ascii") as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as e:
        print(f"{pid_file}: cannot signal the forwarder: {e}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"sent SIGHUP to {pid}")
    return EXIT_OK
