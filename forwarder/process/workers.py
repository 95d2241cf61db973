"""`workers: N`: a supervisor process and N forked worker processes sharing the ports.

Each worker is a whole forwarder (forwarder/process/daemon.py `run_worker`): it binds its
own listener sockets with SO_REUSEPORT, so the kernel spreads queries over the workers by
client address and port, drops privileges and serves. The supervisor serves no queries; it
keeps its privileges so that it can start a replacement that binds the same ports, and it:

- writes the pid file and is the process systemd watches (READY=1 once every worker serves,
  RELOADING=1/READY=1 around a reload once every worker reported the result, STOPPING=1,
  STATUS=, and WATCHDOG=1 only while every serving worker's event loop keeps reporting);
- forwards SIGHUP to every worker (each reloads the file on its own);
- on SIGTERM/SIGINT asks every worker to drain and exits once all are gone;
- restarts a worker that dies (RESTART_LIMIT in RESTART_WINDOW, then it stops everything
  and exits 1); a worker that cannot start at first (a port in use) stops everything too;
- with metrics on, points prometheus_client at a private directory (multiprocess mode, see
  forwarder/metrics.py) before any process imports it, tells it when a worker is gone, and
  removes the directory at exit. Worker 0 serves /metrics, /healthz and /readyz.

Workers report to the supervisor over a pipe, one line per message: `ready STATUS`,
`reloaded ok|failed STATUS` and, every second, `alive`. A worker whose pipe
breaks has lost its supervisor and stops.

The supervisor has no event loop: it forks from a process that never created one and never
imported the server, and waits in a selector on the pipes and a signal wake-up pipe.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import selectors
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from forwarder import config as config_mod
from forwarder.config import schema
from forwarder.config.model import Config
from forwarder.errors import ConfigError
from forwarder.process import daemon, exits, privileges
from forwarder.process.metricsdir import MetricsDir
from forwarder.process.sdnotify import Notifier, watchdog_interval

log = logging.getLogger("forwarder")

RESTART_LIMIT = 5  # unexpected worker exits tolerated ...
RESTART_WINDOW = 60.0  # ... within this many seconds; one more stops the server
START_TIMEOUT = 60.0  # seconds a worker may take from fork to serving
STOP_TIMEOUT = 15.0  # seconds for the workers to drain after SIGTERM, then SIGKILL
TICK = 1.0  # the supervisor looks at its timers at least this often
SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
# kept from the start when the supervisor adopts a reloaded file for the workers it restarts


def main(cfg: Config, path: str, user: str | None = None, pid_file: str | None = None) -> int:
    """Runs the supervisor and its workers until SIGTERM; answers the exit code."""
    try:
        return Supervisor(cfg, path, user, pid_file).run()
    except KeyboardInterrupt:  # before the signal handlers were in place
        return exits.EXIT_OK
    except Exception:
        log.exception("fatal error")
        print("forwarder stopped on an internal error", file=sys.stderr)
        return exits.EXIT_FAILURE


# --- the supervisor ----------------------------------------------------------------------


@dataclass(eq=False)
class _Worker:
    index: int
    pid: int
    fd: int  # read end of its pipe
    generation: int  # reloads asked for before it was started
    started: float
    ready: bool = False
    seen: float = 0.0  # when it last reported
    status: str = ""
    buffer: bytes = b""


class Supervisor:
    """Starts, watches, reloads and stops the worker processes (see the module text)."""

    def __init__(self, cfg: Config, path: str, user: str | None, pid_file: str | None) -> None:
        self.cfg = cfg  # what a worker starts with: the last file every worker accepted
        self.path = path
        self.user = user
        self.pid_file = pid_file
        self.count = cfg.workers
        self.notifier = Notifier()
        self.workers: dict[int, _Worker] = {}  # alive, by index
        self.serving = False  # every worker reported ready at least once
        self.generation = 0  # reloads asked for
        self.reload_pending: set[int] | None = None  # pids whose reload result is awaited
        self.reload_failed = False
        self.restarts: collections.deque[float] = collections.deque()
        self.exit_code: int | None = None  # set once stopping
        self.stop_deadline = 0.0
        self.metrics = MetricsDir()
        self.watchdog = watchdog_interval()
        self.next_ping = 0.0
        self._selector = selectors.DefaultSelector()
        self._wake_r = self._wake_w = -1  # signal numbers arrive here
        self._old_handlers: dict[int, Any] = {}

    def run(self) -> int:
        if privileges.running_as_root() and not self.user and not self.cfg.allow_root:
            log.error("refusing to serve as root: set `user:` (or --user) to drop privileges "
                      "after binding, or `allow_root: true`")
            return exits.EXIT_FAILURE
        if any(listener.port == 0 for listener in self.cfg.listen):
            log.error("workers: %d needs a fixed port for every listener: with port 0 each "
                      "worker would get a port of its own", self.count)
            return exits.EXIT_CONFIG
        try:
            self.metrics.create(self.cfg, self.user)
            if self.pid_file:
                privileges.write_pid_file(self.pid_file)
        except (privileges.PrivilegeError, privileges.PidFileError, OSError) as e:
            log.error("%s", e)
            self.metrics.remove()
            return exits.EXIT_FAILURE
        self._install_signals()
        try:
            for index in range(self.count):
                self._spawn(index)
            while self.workers or self.exit_code is None:
                self._step()
        finally:
            self._kill_all()
            self._restore_signals()
            if self.pid_file:
                privileges.remove_pid_file(self.pid_file)
            self.metrics.remove()
            self._selector.close()
        log.info("stopped")
        return self.exit_code or exits.EXIT_OK

    # -- set-up ------------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        # the handlers do nothing: the signal numbers arrive on the wake-up pipe
        for sig in SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, _ignore)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def _restore_signals(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- workers -----------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        """Forks worker *index*. The child never returns from here."""
        read_fd, write_fd = os.pipe()
        # blocked across the fork: a signal must not reach the child's copy of our handlers
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                code = exits.EXIT_FAILURE
                try:
                    os.close(read_fd)
                    self._become_worker(index)
                    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                    code = daemon.run_worker(daemon.Link(index, write_fd), self.cfg, self.path,
                                            self.user)
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else int(e.code is not None)
                except BaseException:
                    with contextlib.suppress(BaseException):
                        log.exception("fatal error")
                finally:
                    with contextlib.suppress(BaseException):
                        logging.shutdown()
                        sys.stdout.flush()
                        sys.stderr.flush()
                    os._exit(code)  # never back into the supervisor's code
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        worker = _Worker(index, pid, read_fd, self.generation, time.monotonic())
        self.workers[index] = worker
        self._selector.register(read_fd, selectors.EVENT_READ, worker)
        log.info("started worker %d (pid %d)", index, pid)

    def _become_worker(self, index: int) -> None:
        """In a fresh child: lets go of everything that belongs to the supervisor."""
        signal.set_wakeup_fd(-1)
        for sig in SIGNALS:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT
                          else signal.SIG_DFL)
        for fd in (self._wake_r, self._wake_w, *(w.fd for w in self.workers.values())):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._selector.close()
        self.workers.clear()
        # the supervisor is the one process that talks to systemd
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            os.environ.pop(name, None)

    def _forget(self, worker: _Worker) -> None:
        self.workers.pop(worker.index, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(worker.fd)
        with contextlib.suppress(OSError):
            os.close(worker.fd)
        self.metrics.worker_gone(worker.pid)  # (prometheus_client loads only now: after the fork)
        if self.reload_pending is not None and worker.pid in self.reload_pending:
            self.reload_pending.discard(worker.pid)
            self._reload_finished_if_done()

    def _signal_worker(self, worker: _Worker, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, sig)

    # -- the loop ----------------------------------------------------------------------

    def _step(self) -> None:
        now = time.monotonic()
        timeout = TICK
        if self.watchdog is not None:
            timeout = min(timeout, max(0.0, self.next_ping - now))
        if self.exit_code is not None:
            timeout = min(timeout, max(0.0, self.stop_deadline - now))
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                self._signals()
            elif key.data.index in self.workers and self.workers[key.data.index] is key.data:
                self._read(key.data)
        self._reap()
        self._timers(time.monotonic())

    def _signals(self) -> None:
        try:
            data = os.read(self._wake_r, 512)
        except BlockingIOError:
            return
        for signum in data:
            if signum == signal.SIGHUP:
                self._reload()
            elif signum in (signal.SIGTERM, signal.SIGINT):
                self._stop(exits.EXIT_OK, f"received {signal.Signals(signum).name}")

    def _read(self, worker: _Worker) -> None:
        try:
            data = os.read(worker.fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        if not data:  # the worker exited; _reap says how
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(worker.fd)
            return
        *lines, worker.buffer = (worker.buffer + data).split(b"\n")
        for line in lines:
            self._message(worker, line.decode("utf-8", "replace"))

    def _message(self, worker: _Worker, line: str) -> None:
        worker.seen = time.monotonic()
        kind, _, rest = line.partition(" ")
        if kind == "ready":
            worker.ready = True
            worker.status = rest
            if worker.generation != self.generation:
                # a reload was asked for while it started: it must reload too
                worker.generation = self.generation
                self._signal_worker(worker, signal.SIGHUP)
            if self.serving:
                log.info("worker %d (pid %d) serving again", worker.index, worker.pid)
                self.notifier.status(self.status())
            elif len(self.workers) == self.count and all(w.ready for w in self.workers.values()):
                self.serving = True
                log.info("%d workers serving", self.count)
                self.notifier.ready(self.status())
        elif kind == "reloaded":
            result, _, worker.status = rest.partition(" ")
            if self.reload_pending is not None and worker.pid in self.reload_pending:
                self.reload_pending.discard(worker.pid)
                self.reload_failed |= result != "ok"
                self._reload_finished_if_done()

    def _reap(self) -> None:
        for worker in list(self.workers.values()):
            try:
                pid, status = os.waitpid(worker.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = worker.pid, -1
            if pid:
                self._exited(worker, status)

    def _exited(self, worker: _Worker, status: int) -> None:
        self._forget(worker)
        how = _describe(status)
        if self.exit_code is not None:
            log.info("worker %d (pid %d) %s", worker.index, worker.pid, how)
            if not _clean_exit(status):
                self.exit_code = exits.EXIT_FAILURE
            return
        if not self.serving:
            log.error("worker %d (pid %d) %s before serving; stopping", worker.index,
                      worker.pid, how)
            self._stop(exits.EXIT_FAILURE, f"worker {worker.index} could not start")
            return
        now = time.monotonic()
        while self.restarts and self.restarts[0] < now - RESTART_WINDOW:
            self.restarts.popleft()
        if len(self.restarts) >= RESTART_LIMIT:
            log.error("worker %d (pid %d) %s after %d restarts within %d s; stopping",
                      worker.index, worker.pid, how, len(self.restarts), RESTART_WINDOW)
            self._stop(exits.EXIT_FAILURE, "workers keep exiting")
            return
        self.restarts.append(now)
        log.warning("worker %d (pid %d) %s; restarting it", worker.index, worker.pid, how)
        self._spawn(worker.index)
        self.notifier.status(self.status())

    def _timers(self, now: float) -> None:
        if self.exit_code is not None:
            if self.workers and now >= self.stop_deadline:
                log.error("%d worker(s) still running %d s after SIGTERM: killing them",
                          len(self.workers), STOP_TIMEOUT)
                for worker in self.workers.values():
                    self._signal_worker(worker, signal.SIGKILL)
                self.exit_code = exits.EXIT_FAILURE
                self.stop_deadline = now + STOP_TIMEOUT
            return
        for worker in self.workers.values():
            if not worker.ready and now - worker.started > START_TIMEOUT:
                log.error("worker %d (pid %d) not serving %d s after it started: killing it",
                          worker.index, worker.pid, START_TIMEOUT)
                self._signal_worker(worker, signal.SIGKILL)
                worker.started = now  # once: _reap sees it go
        if self.watchdog is not None and now >= self.next_ping:
            self.next_ping = now + self.watchdog / 2
            # a serving worker that has not reported for a whole interval has a stuck loop
            if all(not w.ready or now - w.seen < self.watchdog for w in self.workers.values()):
                self.notifier.watchdog()

    # -- reload and stop ---------------------------------------------------------------

    def _reload(self) -> None:
        if self.exit_code is not None:
            return
        self.generation += 1
        ready = [w for w in self.workers.values() if w.ready]
        for worker in ready:
            worker.generation = self.generation
            self._signal_worker(worker, signal.SIGHUP)
        if not self.serving:
            return  # still starting: READY=1 comes once every worker serves
        log.info("reloading %d workers", len(ready))
        self.notifier.reloading()
        self.reload_pending = {w.pid for w in ready}
        self.reload_failed = False
        self._reload_finished_if_done()

    def _reload_finished_if_done(self) -> None:
        if self.reload_pending:
            return
        self.reload_pending = None
        if not self.reload_failed:
            self._adopt_reloaded_file()
        self.notifier.ready(self.status())

    def _adopt_reloaded_file(self) -> None:
        """Every worker took the file: a worker started from now on starts with it too (with
        the start-only settings of the running ones)."""
        try:
            cfg = config_mod.load(self.path)
        except ConfigError:
            log.warning("%s changed again during the reload: restarted workers start with "
                        "the previous configuration", self.path)
            return
        self.cfg = schema.keep_start_only(cfg, self.cfg)

    def _stop(self, code: int, reason: str) -> None:
        if self.exit_code is None:
            log.info("stopping %d workers: %s", len(self.workers), reason)
            self.notifier.stopping(f"stopping: {reason}")
            self.exit_code = code
            self.stop_deadline = time.monotonic() + STOP_TIMEOUT
            for worker in self.workers.values():
                self._signal_worker(worker, signal.SIGTERM)
        else:
            self.exit_code = max(self.exit_code, code)

    def _kill_all(self) -> None:
        """Leaves no worker behind when the supervisor itself fails."""
        for worker in list(self.workers.values()):
            self._signal_worker(worker, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(worker.pid, 0)
            self._forget(worker)

    def status(self) -> str:
        """The STATUS= line: how many workers serve, and what worker 0 last said."""
        serving = sum(1 for w in self.workers.values() if w.ready)
        first = self.workers.get(0)
        detail = f": {first.status}" if first is not None and first.status else ""
        return f"{serving} of {self.count} workers up{detail}"


def _ignore(signum: int, frame: Any) -> None:
    pass


def _describe(status: int) -> str:
    if status < 0:
        return "is gone"
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def _clean_exit(status: int) -> bool:
    """Answers whether a worker asked to stop ended as asked (drained, or by SIGTERM
    before it had a loop to drain)."""
    if status < 0:
        return True
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status) == signal.SIGTERM
    return os.waitstatus_to_exitcode(status) == 0
