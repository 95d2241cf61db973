"""Reload when the configuration file changes (`reload: {watch: true}`), for deployments
that replace the file rather than signal the process: a Kubernetes ConfigMap volume, a
configuration management run.

Every `reload.interval` seconds the service stats the file and compares its identity and
contents' stamp (device, inode, size, modification time) with the file as it was when the
running configuration was read from it (`Server.file_stamp`, taken before each read, also
by SIGHUP's reload, so that a file SIGHUP already loaded is not loaded twice). stat follows
symlinks, so the swap Kubernetes makes (the file is a symlink through `..data`, which is
atomically pointed at a new directory) shows as a new inode. A change calls the same
`Server.reload` as SIGHUP: an invalid file is rejected with its errors logged and counted,
and the running configuration keeps serving. A file caught half-written fails to load and
is loaded again once the write ends (its size or time changes again). A file that is gone
is reported once and waited for.

The running configuration decides: a reload that turns `watch` off stops the looking (the
loop keeps its cheap timer), one that turns it on starts it. With `workers:` above 1 each
worker watches on its own, as each would reload on SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forwarder.server import Server

log = logging.getLogger("forwarder")

Stamp = tuple[int, int, int, int] | None  # (st_dev, st_ino, st_size, st_mtime_ns); None: gone


def stamp(path: str) -> Stamp:
    """The file's identity and change stamp, following symlinks; None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class ConfigWatch:
    """Polls the server's configuration file and reloads the server when it changes."""

    def __init__(self, server: Server, path: str) -> None:
        self.server = server
        self.path = path
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            settings = self.server.config.reload
            await asyncio.sleep(settings.interval)
            if settings.watch and not self.server.stopping:
                await self.check()

    async def check(self) -> bool | None:
        """Looks at the file once; reloads if it changed. Answers the reload's success, or
        None when nothing was reloaded."""
        now = stamp(self.path)
        if now == self.server.file_stamp:  # as last read, by this watch or by SIGHUP
            return None
        if now is None:
            self.server.file_stamp = None
            log.warning("configuration file %s is gone; still serving the running "
                        "configuration, waiting for it to come back", self.path)
            return None
        log.info("configuration file %s changed: reloading", self.path)
        return await self.server.reload()


def service(server: Server) -> ConfigWatch | None:
    """The file watch for *server*, or None when it was not started from a file."""
    if server.config_path is None:
        return None
    return ConfigWatch(server, server.config_path)
