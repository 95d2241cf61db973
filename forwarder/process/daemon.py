"""`forwarder run`: one serving process from start to exit: bind, write the pid file, drop
privileges, notify systemd, serve until SIGTERM, and say why it could not start.

With `workers:` above 1, `forwarder run` starts the supervisor in
forwarder/process/workers.py instead, which forks the serving processes; they run
`run_worker`: the same steps, but they report to the
supervisor over a pipe instead of to systemd, leave the pid file to it, fold their metric
counts into the shared files every second, and only worker 0 serves HTTP. The server (and
with it prometheus_client) is imported only inside a serving process, so that the
supervisor can switch metrics to multiprocess mode before anything loads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from forwarder.config.model import Config
from forwarder.process import exits, privileges
from forwarder.process.sdnotify import Notifier

if TYPE_CHECKING:
    from forwarder.server import Server

log = logging.getLogger("forwarder")

HEARTBEAT = 1.0  # seconds between a worker's metric flushes and `alive` messages
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess directory


def status_line(server: Server) -> str:
    from forwarder.upstream.health import rule_groups

    rt = server.runtime
    groups = [rt.groups[name] for name in rule_groups(rt.config)]
    healthy = sum(1 for g in groups if any(s.healthy for s in g.servers))
    return f"serving {len(rt.config.rules)} rules, {healthy} of {len(groups)} groups healthy"


def prepare(server: Server, cfg: Config, user: str | None, pid_file: str | None) -> int | None:
    """Binds *server*'s listeners, writes *pid_file* and drops to *user*: what a serving
    process does before it serves. Answers the exit code when it cannot, else None."""
    try:
        server.bind()
    except OSError as e:
        log.error("cannot bind %s: %s", ", ".join(lst.label for lst in cfg.listen), e.strerror)
        return exits.EXIT_FAILURE
    from forwarder import runtime

    runtime.preload()
    try:
        if pid_file:
            privileges.write_pid_file(pid_file)  # before the drop: /run belongs to root
        if user:
            if privileges.running_as_root():
                from forwarder import querylog  # loads prometheus_client: serving processes only

                uid, gid = privileges.user_ids(user, cfg.group)
                querylog.open_before_drop(cfg, uid, gid)  # a directory only root may write
                if pid_file:
                    privileges.keep_pid_file(pid_file)  # removed at exit, by root
            privileges.drop_privileges(user, cfg.group)
        elif privileges.running_as_root() and not cfg.allow_root:
            log.error("refusing to serve as root: set `user:` (or --user) to drop privileges "
                      "after binding, or `allow_root: true`")
            return exits.EXIT_FAILURE
    except (privileges.PrivilegeError, privileges.PidFileError) as e:
        log.error("%s", e)
        return exits.EXIT_FAILURE
    except OSError as e:
        log.error("querylog.path: cannot open %r: %s", cfg.querylog.path, e.strerror or e)
        return exits.EXIT_CONFIG
    return None


async def start_or_report(server: Server) -> int | None:
    """Starts *server*; answers None, or the exit code after logging why it cannot start:
    its runtime cannot be built (a hook file that does not import as the service user, a
    query log it cannot open: EXIT_CONFIG), or a part of it cannot start (the metrics port
    is taken: EXIT_FAILURE, as for a DNS port in use)."""
    from forwarder.errors import ConfigError, StartError

    try:
        await server.start()
    except ConfigError as e:
        for line in e.lines():
            log.error("%s", line)
        server.close_sockets()
        return exits.EXIT_CONFIG
    except StartError as e:
        log.error("%s", e)
        await server.stop(deadline=0)  # what started before it
        return exits.EXIT_FAILURE
    return None


async def serve(cfg: Config, path: str, user: str | None, pid_file: str | None) -> int:
    """Runs one forwarder process; answers its exit code."""
    from forwarder.server import Server

    server = Server(cfg, path, build=False)  # hooks and the query log after the drop
    pid_file = pid_file or cfg.pid_file
    user = user or cfg.user
    failed = prepare(server, cfg, user, pid_file)
    if failed is not None:
        return failed

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
        failed = await start_or_report(server)
        if failed is not None:
            return failed
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
    return server.exit_code


def main(cfg: Config, path: str, user: str | None = None, pid_file: str | None = None) -> int:
    """Runs one serving process (`workers: 1`) to its end; answers its exit code."""
    return run_to_exit_code(serve(cfg, path, user, pid_file))


def run_to_exit_code(process: Coroutine[Any, Any, int]) -> int:
    """Runs one serving process's coroutine; answers its exit code, 1 on an internal error."""
    try:
        return exits.run_loop(process)
    except KeyboardInterrupt:
        return exits.EXIT_OK
    except Exception:
        log.exception("fatal error")
        print("forwarder stopped on an internal error", file=sys.stderr)
        return exits.EXIT_FAILURE


# --- one of `workers:` processes (forwarder/process/workers.py starts them) ---------------------


class Link:
    """A worker's end of its pipe to the supervisor."""

    def __init__(self, index: int, fd: int) -> None:
        self.index = index
        self.fd = fd

    def send(self, *words: str) -> bool:
        """Sends one message line; answers False when the supervisor is gone."""
        line = " ".join(words).replace("\n", " ")[:1000] + "\n"  # < PIPE_BUF: one write
        try:
            os.write(self.fd, line.encode("utf-8", "replace"))
        except OSError:
            return False
        return True


class _WorkerTag(logging.Filter):
    """Marks each log record of a worker process with its index (`worker N: ` in text,
    a `worker` field in JSON)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def run_worker(link: Link, cfg: Config, path: str, user: str | None) -> int:
    """Runs one worker process to its end; answers its exit code."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerTag(link.index))
    return run_to_exit_code(_serve_worker(link, cfg, path, user))


async def _serve_worker(link: Link, cfg: Config, path: str, user: str | None) -> int:
    from forwarder import metrics
    from forwarder.server import Server

    server = Server(cfg, path, build=False)  # hooks and the query log after the drop
    server.worker = link.index
    if metrics.MULTIPROCESS:
        _hand_over_metric_files(user, cfg.group)
    failed = prepare(server, cfg, user, None)
    if failed is not None:
        return failed

    def reloaded(ok: bool) -> None:
        link.send("reloaded", "ok" if ok else "failed", status_line(server))

    server.on_reload.append(reloaded)
    failed = await start_or_report(server)
    if failed is not None:
        return failed
    server.install_signal_handlers()
    link.send("ready", status_line(server))
    heartbeat = asyncio.ensure_future(_heartbeat(server, link, metrics.MULTIPROCESS))
    try:
        await server.wait_stopped()
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        if metrics.MULTIPROCESS:
            _flush()  # the last counts, for the scrapes of the other workers
    log.info("stopped")
    return server.exit_code


def _hand_over_metric_files(user: str | None, group: str | None) -> None:
    """Before a worker running as root drops to *user*: the metric files it has created so
    far become that user's, so that worker 0 (also that user) can read them whatever the
    umask. Files created after the drop are the user's anyway."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory or not user or not privileges.running_as_root():
        return
    try:
        uid, gid = privileges.user_ids(user, group)
    except privileges.PrivilegeError:
        return  # the drop itself fails and says why
    suffix = f"_{os.getpid()}.db"
    for name in os.listdir(directory):
        if name.endswith(suffix):
            os.chown(os.path.join(directory, name), uid, gid)


async def _heartbeat(server: Server, link: Link, flush: bool) -> None:
    """Every HEARTBEAT: folds this worker's pending counts into its metric files (worker 0
    scrapes them from there) and tells the supervisor the event loop is alive."""
    while True:
        await asyncio.sleep(HEARTBEAT)
        if flush:
            _flush()
        if not link.send("alive"):
            log.error("the supervisor is gone; stopping")
            await server.stop()
            return


def _flush() -> None:
    from forwarder import metrics

    try:
        metrics.PENDING.flush()
    except Exception:  # a count lost must not end the heartbeat (the watchdog hangs on it)
        log.exception("cannot write the metric files")
