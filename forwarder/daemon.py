"""`forwarder run`: one serving process from start to exit: bind, drop privileges, notify
systemd, serve until SIGTERM, and report why it could not start."""

from __future__ import annotations

import asyncio
import logging
import sys

from forwarder import cli
from forwarder.config.model import Config
from forwarder.server import Server

log = logging.getLogger("forwarder")


async def serve(cfg: Config, path: str, user: str | None, pid_file: str | None) -> int:
    server = Server(cfg, path)
    try:
        server.bind()
    except OSError as e:
        log.error("cannot bind %s: %s", ", ".join(lst.label for lst in cfg.listen), e.strerror)
        return cli.EXIT_FAILURE
    await server.start()
    server.install_signal_handlers()
    await server.wait_stopped()
    log.info("stopped")
    return cli.EXIT_OK


def main(cfg: Config, path: str, user: str | None = None, pid_file: str | None = None) -> int:
    try:
        return cli.run_loop(serve(cfg, path, user, pid_file))
    except KeyboardInterrupt:
        return cli.EXIT_OK
    except Exception:
        log.exception("fatal error")
        print("forwarder stopped on an internal error", file=sys.stderr)
        return cli.EXIT_FAILURE


__all__ = ["asyncio", "main", "serve"]
