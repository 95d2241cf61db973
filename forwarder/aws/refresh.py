"""The AWS inventory at run time: read at start, refreshed in the background, swapped in
like a reload, and reported in /readyz and the metrics.

- At start (`RefreshService.load_first`), the API is read once within a deadline; when that
  fails, the last good inventory is read from `aws.state_file`. Without either the server
  starts anyway (resolution that does not need AWS keeps working), the parts that need the
  inventory fail closed (SERVFAIL), and /readyz says the inventory is not loaded.
- Every `aws.refresh` (sooner, every `RETRY` at most, while the last read failed; at once
  after a reload) the API is read again in a daemon thread (boto3 blocks; a stopping
  server never waits for it). A read that found something new rebuilds the runtime from
  the same configuration and the new inventory and swaps it in atomically, as a reload
  does (queries in flight finish on the old one). The state file is rewritten atomically.
- A failed read is logged and counted; the last good inventory stays in use. /readyz
  reports it stale, and the server not ready, once it is older than `aws.stale_after`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from forwarder import metrics
from forwarder.aws import inventory as inventory_mod
from forwarder.aws.inventory import Inventory
from forwarder.config import model
from forwarder.errors import ConfigError

if TYPE_CHECKING:
    from forwarder.server import Server

log = logging.getLogger("forwarder.aws")

RETRY = 30.0  # seconds: the longest wait before reading again after a failed read
T = TypeVar("T")


class RefreshService:
    """Keeps a Server's AWS inventory current (see the module docstring)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.last_error: str | None = None
        self.last_attempt: float | None = None
        self.last_success: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reloaded = False
        self._waiters: list[asyncio.Future[bool]] = []
        for result in ("success", "failure"):
            metrics.aws_refreshes.labels(result)
        metrics.PENDING.flushers.add(self)

    # --- start and stop --------------------------------------------------------------------

    async def load_first(self) -> Inventory | None:
        """The inventory to start with: from the API, else from the state file, else None."""
        settings = self.server.config.aws
        assert settings is not None
        try:
            inv = await asyncio.wait_for(read(settings), 2 * settings.timeout)
        except Exception as e:
            self._failed(describe(e))
            return self._from_state_file(settings)
        self._succeeded(inv, settings)
        return inv

    async def start(self) -> None:
        self.server.on_reload.append(self._on_reload)
        self._task = asyncio.create_task(self._run(), name="aws-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(ValueError):
            self.server.on_reload.remove(self._on_reload)
        metrics.PENDING.flushers.discard(self)

    # --- the loop --------------------------------------------------------------------------

    def _on_reload(self, ok: bool) -> None:
        if ok:
            self._reloaded = True
            self._wake.set()

    async def _run(self) -> None:
        while True:
            settings = self.server.config.aws
            if settings is None or not settings.discovers:
                await self._wake.wait()
            else:
                wait = settings.refresh if self.last_error is None else min(settings.refresh,
                                                                            RETRY)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
            self._wake.clear()
            settings = self.server.config.aws
            if settings is not None and settings.discovers:
                await self.refresh()

    def next_attempt(self) -> asyncio.Future[bool]:
        """A future that the next read sets to whether it worked (after its swap)."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    async def refresh(self) -> bool:
        """Reads the API once and swaps in what it found. Answers whether the read worked."""
        ok = await self._refresh()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(ok)
        return ok

    async def _refresh(self) -> bool:
        settings = self.server.config.aws
        if settings is None or not settings.discovers:
            return False
        reloaded, self._reloaded = self._reloaded, False
        try:
            inv = await read(settings)
        except Exception as e:
            self._failed(describe(e))
            return False
        changed = not inv.same_contents(self.server.inventory)
        self._succeeded(inv, settings, quiet=not changed)
        try:
            if changed or reloaded:
                self.server.use_inventory(inv)
            else:
                self.server.inventory = inv  # the same findings, newer: only the age changes
        except ConfigError as e:  # aws.ip_ranges became unreadable: keep what serves
            log.error("AWS inventory not applied: %s", e.render())
        if settings.state_file is not None:
            await asyncio.to_thread(self._save, settings.state_file, inv)
        return True

    # --- outcomes --------------------------------------------------------------------------

    def _succeeded(self, inv: Inventory, settings: model.AwsSettings, quiet: bool = False) -> None:
        self.last_attempt = self.last_success = time.time()
        if self.last_error is not None:
            log.warning("AWS inventory read again after failures")
        self.last_error = None
        metrics.aws_refreshes.labels("success").inc()
        counts = inv.counts()
        for kind, n in counts.items():
            metrics.aws_endpoints.labels(kind).set(n)
        (log.debug if quiet else log.info)(
            "AWS inventory: %d Interface, %d Gateway and %d inbound endpoints in %d "
            "account/region scope(s)", counts["interface"], counts["gateway"],
            counts["inbound"], len(inv.scopes))

    def _failed(self, error: str) -> None:
        self.last_attempt = time.time()
        self.last_error = error
        metrics.aws_refreshes.labels("failure").inc()
        inv = self.server.inventory
        kept = (f"keeping the inventory read {inv.age():.0f} s ago" if inv is not None
                else "no inventory yet")
        log.warning("AWS inventory read failed: %s; %s", error, kept)

    def _from_state_file(self, settings: model.AwsSettings) -> Inventory | None:
        if settings.state_file is None:
            log.error("no AWS inventory: the API could not be read and aws.state_file is not "
                      "set; the rules that need the inventory answer SERVFAIL until it is read")
            return None
        try:
            inv = inventory_mod.read_state(settings.state_file)
        except inventory_mod.StateFileError as e:
            log.error("no AWS inventory: the API could not be read, and %s", e)
            return None
        log.warning("starting from the AWS inventory in %s, read %.0f s ago",
                    settings.state_file, inv.age())
        for kind, n in inv.counts().items():
            metrics.aws_endpoints.labels(kind).set(n)
        return inv

    @staticmethod
    def _save(path: str, inv: Inventory) -> None:
        try:
            inventory_mod.write_state(path, inv)
        except OSError as e:
            log.warning("cannot write the AWS state file %s: %s", path, e.strerror or e)

    def flush(self) -> None:
        """Brings the inventory's age up to date (called when the metrics are collected)."""
        inv = self.server.inventory
        if inv is not None:
            metrics.aws_inventory_age.set(inv.age())

    # --- readiness -------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the inventory lets the server be ready, and the report for /readyz."""
        settings = self.server.config.aws
        inv = self.server.inventory
        report: dict[str, Any] = {"last_error": self.last_error}
        if settings is None or not settings.discovers:  # nothing read from the API
            return True, {**report, "reason": "ok"}
        if inv is None:
            why = f": {self.last_error}" if self.last_error else ""
            return False, {**report, "reason": f"AWS inventory not loaded{why}",
                           "stale": True}
        age = inv.age()
        stale = settings.stale_after > 0 and age > settings.stale_after
        report.update(source=inv.source, age_seconds=round(age, 1), stale=stale,
                      endpoints=inv.counts(), missing=missing_references(self.server))
        if stale:
            report["reason"] = (f"AWS inventory is stale: read {age:.0f} s ago, more than "
                                f"aws.stale_after ({settings.stale_after:g} s)")
            return False, report
        report["reason"] = "ok"
        return True, report


def missing_references(server: Server) -> list[str]:
    """The inbound endpoints `aws:inbound/...` servers name that the inventory lacks."""
    inv = server.inventory
    out = []
    for group in server.config.upstreams:
        for key in group.discovered:
            if inv is None or inv.inbound_endpoint(key) is None:
                out.append(f"upstreams.{group.name}: {key}")
    return out


async def read(settings: model.AwsSettings) -> Inventory:
    """Reads the API in a daemon thread. Raises DiscoveryError."""
    from forwarder.aws import api

    return await in_daemon_thread(api.discover, settings)


async def in_daemon_thread(fn: Callable[..., T], *args: Any) -> T:
    """Runs *fn* in a daemon thread: unlike the default executor, a process that is
    stopping never waits for a call stuck on the network."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as e:
            result, error = None, e
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="aws-discovery", daemon=True).start()
    return await future


def describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "the AWS API did not answer in time"
    return str(error) or error.__class__.__name__


def service(server: Server) -> RefreshService:
    """The refresh service of *server*: the one `Server.start` made to load the first
    inventory, or an idle one that starts reading once a reload adds an `aws:` section."""
    if server.aws is None:
        server.aws = RefreshService(server)
    return server.aws
