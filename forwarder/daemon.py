"""`forwarder run`: one serving process from start to exit: bind, write the pid file, drop
privileges, notify systemd, serve until SIGTERM, and say why it could not start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

from forwarder import cli, privileges
from forwarder.config.model import Config
from forwarder.sdnotify import Notifier
from forwarder.server import Server

log = logging.getLogger("forwarder")


def status_line(server: Server) -> str:
    rt = server.runtime
    groups = {r.upstream for r in rt.config.rules if r.upstream}
    healthy = sum(1 for name in groups if any(s.healthy for s in rt.groups[name].servers))
    return f"serving {len(rt.config.rules)} rules, {healthy} of {len(groups)} groups healthy"


async def serve(cfg: Config, path: str, user: str | None, pid_file: str | None) -> int:
    """Runs one forwarder process; answers its exit code."""
    server = Server(cfg, path)
    try:
        server.bind()
    except OSError as e:
        log.error("cannot bind %s: %s", ", ".join(lst.label for lst in cfg.listen), e.strerror)
        return cli.EXIT_FAILURE
    pid_file = pid_file or cfg.pid_file
    user = user or cfg.user
    try:
        if pid_file:
            privileges.write_pid_file(pid_file)  # before the drop: /run belongs to root
        if user:
            privileges.drop_privileges(user, cfg.group)
        elif privileges.running_as_root() and not cfg.allow_root:
            log.error("refusing to serve as root: set `user:` (or --user) to drop privileges "
                      "after binding, or `allow_root: true`")
            return cli.EXIT_FAILURE
    except (privileges.PrivilegeError, privileges.PidFileError) as e:
        log.error("%s", e)
        return cli.EXIT_FAILURE

    notifier = Notifier()

    def on_signal(what: str) -> None:
        if what == "reload":
            notifier.reloading()
        else:
            notifier.stopping()

    def reloaded(_ok: bool) -> None:
        notifier.ready(status_line(server))

    server.on_reload.append(reloaded)
    watchdog: asyncio.Task[None] | None = None
    try:
        await server.start()
        server.install_signal_handlers(on_signal)
        notifier.ready(status_line(server))
        watchdog = asyncio.ensure_future(notifier.watchdog_loop())
        await server.wait_stopped()
    finally:
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        if pid_file:
            privileges.remove_pid_file(pid_file)
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
