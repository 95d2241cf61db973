"""Keeps the garbage collector's pauses short: a young-generation collection every second.

CPython collects its youngest generation when the objects allocated there outnumber those
freed by 700. A forwarder at steady state frees about as many as it allocates (a stored
answer evicts an old one), so no collection may run for minutes while new cache entries
pile up unexamined, and the collection that finally runs walks all of them at once. The
cache stores its entries as tuples the collector stops tracking once it has looked at them
(stages/cache.py); this service has it look every second, so each pass sees about one
second of new entries and none of them reaches the old generation, whose full collections
would otherwise walk every entry (60-90 ms with 100,000 entries on a 2.5 GHz VM core).

Once serving, what exists (modules, functions, the first configuration: some 30,000
objects that live as long as the process) is frozen out of every later collection, which
then costs well under a millisecond instead of some 20 ms. A reload thaws it again, so
the configuration it replaced can be collected; so does the stop of the last server in
the process (tests and `forwarder lab` run several).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Any

INTERVAL = 1.0  # seconds between young collections


_running = 0  # collectors started and not yet stopped in this process


class YoungCollector:
    """Runs `gc.collect(1)` every *interval* seconds, and
    freezes what exists when the server starts serving, until a reload or the stop.
    *on_reload* is the server's list of reload callbacks, joined while running."""

    def __init__(self, interval: float = INTERVAL,
                 on_reload: list[Callable[[bool], object]] | None = None) -> None:
        self.interval = interval
        self._on_reload = on_reload
        self._timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        global _running
        if self._timer is not None:
            return
        _running += 1
        gc.collect(1)  # the young garbage of starting up is not frozen with the rest
        gc.freeze()
        if self._on_reload is not None:
            self._on_reload.append(self.reloaded)
        self._schedule()

    def reloaded(self, ok: bool) -> None:
        if ok:
            gc.unfreeze()

    async def stop(self) -> None:
        global _running
        if self._timer is None:
            return
        self._timer.cancel()
        self._timer = None
        _running -= 1
        if self._on_reload is not None and self.reloaded in self._on_reload:
            self._on_reload.remove(self.reloaded)
        if not _running:
            gc.unfreeze()  # what the servers leave behind may be collected again

    def _schedule(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._collect)

    def _collect(self) -> None:
        gc.collect(1)
        self._schedule()


def service(server: Any) -> YoungCollector:
    return YoungCollector(on_reload=server.on_reload)
