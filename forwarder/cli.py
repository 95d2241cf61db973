"""Command line: `forwarder run`, `check-config`, `explain`, `lab`, `reload`, `health`; exit
codes.

Exit codes: 0 success, 1 runtime failure (e.g. cannot bind), 2 invalid configuration or
usage, 3 `lab` expectations not met.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from forwarder import __version__
from forwarder.errors import ConfigError
from forwarder.process import logs
from forwarder.process.exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, load_or_report, report

log = logging.getLogger("forwarder")

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forwarder",
        description="A programmable DNS forwarder for hybrid cloud networks.")
    parser.add_argument("--version", action="version", version=f"forwarder {__version__}")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"],
                        help="log level for messages on stderr (default: info)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve DNS with a configuration file")
    run.add_argument("-c", "--config", required=True, help="path to the YAML configuration")
    run.add_argument("--user", help="drop to this user after binding (overrides `user:`)")
    run.add_argument("--pid-file", help="write the process id here (overrides `pid_file:`)")

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file", help="path to the YAML configuration")

    explain = sub.add_parser("explain", help="show how one name would be answered")
    explain.add_argument("name")
    explain.add_argument("type", nargs="?", default="A")
    explain.add_argument("-c", "--config", required=True, help="path to the YAML configuration")

    lab = sub.add_parser("lab", help="run simulated AWS resolvers and show the policy at work")
    lab.add_argument("--serve", action="store_true",
                     help="keep running after the demo so you can dig it")
    lab.add_argument("--port", type=int, default=5353, help="forwarder port (default 5353)")

    reload = sub.add_parser("reload", help="ask a running forwarder to reload (SIGHUP)")
    reload.add_argument("--pid-file", required=True, help="the pid file of the running forwarder")

    health = sub.add_parser("health", help="probe the forwarder a configuration describes: "
                                           "exit 0 if ready, 1 if not (for HEALTHCHECK)")
    health.add_argument("-c", "--config", required=True, help="path to the YAML configuration")
    health.add_argument("--timeout", type=float, default=4.0,
                        help="seconds to wait for an answer (default 4)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level)
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "run":
        return run(args.config, user=args.user, pid_file=args.pid_file)
    if args.command == "explain":
        from forwarder import explain

        return explain.main(args.name, args.type, args.config)
    if args.command == "lab":
        from forwarder import lab

        return lab.main(serve=args.serve, port=args.port)
    if args.command == "reload":
        return reload_running(args.pid_file)
    if args.command == "health":
        from forwarder.ops import health

        return health.main(args.config, args.timeout)
    return EXIT_CONFIG


def check_config(path: str) -> int:
    cfg = load_or_report(path)
    if cfg is None:
        return EXIT_CONFIG
    from forwarder.hooks import runner
    from forwarder.stages import local

    try:
        runner.check(cfg)  # hook files must import, as they must on start and reload
        local.zones(cfg)  # hosts files must parse and local records fit together
    except ConfigError as e:
        report(e, path)
        return EXIT_CONFIG
    print(f"{path}: ok ({len(cfg.rules)} rules, {len(cfg.upstreams)} upstream groups, "
          f"{len(cfg.policies)} policies)")
    return EXIT_OK


def run(path: str, user: str | None = None, pid_file: str | None = None) -> int:
    cfg = load_or_report(path)
    if cfg is None:
        return EXIT_CONFIG
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
