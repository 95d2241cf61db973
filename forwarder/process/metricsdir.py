"""The private directory where the worker processes of `workers: N` keep their metric files
(prometheus_client's multiprocess mode, see forwarder/metrics.py): made by the supervisor
before any process imports prometheus_client, handed to the user the workers drop to,
told when a worker is gone, and removed at exit."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile

from forwarder.config.model import Config
from forwarder.process import daemon, privileges

log = logging.getLogger("forwarder")


class MetricsDir:
    """The workers' metric files, or nothing when metrics are off."""

    def __init__(self) -> None:
        self.path: str | None = None

    def create(self, cfg: Config, user: str | None) -> None:
        """With metrics on: a fresh private directory, owned by the user the workers drop
        to, named in the environment the workers inherit. Must run before any process
        imports prometheus_client."""
        os.environ.pop(daemon.MULTIPROC_ENV, None)
        os.environ.pop(daemon.MULTIPROC_ENV.lower(), None)
        if not cfg.metrics.enabled:
            return  # nothing scrapes: each worker keeps plain in-memory values
        if "prometheus_client" in sys.modules:
            log.warning("prometheus_client was loaded before the workers started: metrics "
                        "of the workers may not be merged")
        runtime_dir = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]  # systemd: tmpfs
        self.path = tempfile.mkdtemp(prefix="forwarder-metrics-", dir=runtime_dir or None)
        if user and privileges.running_as_root():
            uid, gid = privileges.user_ids(user, cfg.group)
            os.chown(self.path, uid, gid)
        os.environ[daemon.MULTIPROC_ENV] = self.path

    def worker_gone(self, pid: int) -> None:
        """Tells prometheus_client that worker *pid* is gone (its live gauges stop
        counting)."""
        if self.path is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self.path)

    def remove(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            os.environ.pop(daemon.MULTIPROC_ENV, None)
            self.path = None
