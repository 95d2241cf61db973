"""Process lifecycle: bind the listeners, start them and the background services, reload on
SIGHUP (the old configuration keeps serving if the new one is invalid), drain on SIGTERM."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from forwarder import __version__, metrics, runtime
from forwarder import config as config_mod
from forwarder.config import schema
from forwarder.config.model import Config, Listener
from forwarder.errors import ConfigError
from forwarder.hooks import calls as hook_calls
from forwarder.listeners import sockets, tcp, udp
from forwarder.pipeline import Accounting, Pipeline
from forwarder.process import logs, watch
from forwarder.process.exits import EXIT_FAILURE, EXIT_OK

log = logging.getLogger("forwarder")

PORT_ZERO_ATTEMPTS = 20  # listeners on port 0 (tests): UDP picks the port, TCP must get it too


class Service(Protocol):
    """A background part of the server (health checks, HTTP endpoints, query log writer)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def _service_factories() -> tuple[Callable[[Server], Service | None], ...]:
    """Background services in start order; each answers a Service, or None when unused."""
    from forwarder.aws import refresh
    from forwarder.listeners import http
    from forwarder.process import collector
    from forwarder.upstream import health

    return (health.service, refresh.service, http.service, collector.service, watch.service)


class Server:
    """One forwarder process: listeners, the current runtime, and the services around it."""

    def __init__(self, cfg: Config, config_path: str | None = None, reuse_port: bool = False,
                 build: bool = True):
        """*build* False leaves building the runtime (importing hooks, opening the query
        log) to start(), so that `run` can bind and drop privileges first."""
        self.config = cfg
        self.config_path = config_path
        # the file as the running configuration was read from it (reload.watch compares)
        self.file_stamp = watch.stamp(config_path) if config_path is not None else None
        self.reuse_port = reuse_port or cfg.workers > 1
        self.holder = runtime.RuntimeHolder(runtime.build(cfg) if build else None)
        self.pipeline = Pipeline(self.holder)
        self.accounting = Accounting()
        self.udp: list[udp.UdpListener] = []
        self.tcp: list[tcp.TcpListener] = []
        self.services: list[Service] = []
        self.health: Any = None  # upstream.health.HealthService, once started
        self.aws: Any = None  # aws.refresh.RefreshService, once started
        self.inventory: Any = None  # the AWS inventory in use (aws.inventory.Inventory)
        self.http_address: tuple[str, int] | None = None  # /metrics, /healthz, /readyz
        self.worker: int | None = None  # index among `workers:` processes; None when alone
        self.listening = False
        self.stopping = False
        self.exit_code = EXIT_OK  # EXIT_FAILURE when the stop left a hook call running
        self.on_reload: list[Callable[[bool], Awaitable[None] | None]] = []
        # start-only settings the file changed since the start, by key: their new values
        self.restart_pending: dict[str, Any] = {}
        self._stopped = asyncio.Event()
        self._signal_tasks: set[asyncio.Future[Any]] = set()
        metrics.config_reloads.labels("success")
        metrics.config_reloads.labels("failure")
        metrics.config_last_reload_success.set(time.time())
        metrics.config_last_reload_ok.set(1)

    @property
    def runtime(self) -> runtime.Runtime:
        return self.holder.current

    def bind(self) -> None:
        """Binds every listener socket (before privileges are dropped). Raises OSError."""
        try:
            for listener in self.config.listen:
                for attempt in range(PORT_ZERO_ATTEMPTS):
                    if self._bind_listener(listener, last=attempt == PORT_ZERO_ATTEMPTS - 1):
                        break
        except OSError:
            self.close_sockets()
            raise

    def _bind_listener(self, listener: Listener, last: bool) -> bool:
        """Binds UDP and TCP for *listener*. Answers False when port 0 gave UDP a port that
        TCP cannot have (a client socket in TIME_WAIT holds it): the caller tries again."""
        limits = self.config.limits
        port = listener.port
        udp_sock = None
        if "udp" in listener.protocols:
            udp_sock = sockets.bind(listener, socket.SOCK_DGRAM, self.reuse_port,
                                    limits.udp_buffer)
            port = udp_sock.getsockname()[1]  # port 0: TCP takes the same port
        if "tcp" in listener.protocols:
            bound = type(listener)(listener.address, port, listener.protocols)
            try:
                sock = sockets.bind(bound, socket.SOCK_STREAM, self.reuse_port)
            except OSError as e:
                if udp_sock is not None:
                    udp_sock.close()
                if listener.port == 0 and e.errno == errno.EADDRINUSE and not last:
                    return False
                raise
            self.tcp.append(tcp.TcpListener(sock, self.pipeline, self.accounting, limits))
        if udp_sock is not None:
            self.udp.append(udp.UdpListener(udp_sock, self.pipeline, self.accounting))
        return True

    async def start(self) -> None:
        """Reads the AWS inventory (with an `aws:` section), builds the runtime if not yet
        built (raises ConfigError), binds if not yet bound, starts listening, then the
        background services."""
        if self.config.aws is not None and self.config.aws.discovers and self.aws is None:
            from forwarder.aws import refresh

            self.aws = refresh.RefreshService(self)
            inventory = await self.aws.load_first()
            if self.holder.current is not None:
                self.use_inventory(inventory)
            self.inventory = inventory
        if self.holder.current is None:
            self.holder.current = runtime.build(self.config, inventory=self.inventory)
        if not self.udp and not self.tcp:
            self.bind()
        for u in self.udp:
            u.start()
        for t in self.tcp:
            await t.start()
        self.listening = True
        for factory in _service_factories():
            service = factory(self)
            if service is not None:
                await service.start()
                self.services.append(service)
        cfg, listeners = self.config, self.describe_listeners()
        log.info("forwarder %s serving on %s with %s: %d rules, %d upstream groups, %d policies",
                 __version__, ", ".join(listeners), self.config_path or cfg.source,
                 len(cfg.rules), len(cfg.upstreams), len(cfg.policies),
                 extra={"version": __version__, "config": self.config_path or cfg.source,
                        "listeners": listeners, "rules": len(cfg.rules),
                        "groups": len(cfg.upstreams), "policies": len(cfg.policies)})

    def describe_listeners(self) -> list[str]:
        out = []
        for proto, listeners in (("udp", self.udp), ("tcp", self.tcp)):
            for listener in listeners:
                host, port = listener.address
                out.append(f"{proto} [{host}]:{port}" if ":" in host else f"{proto} {host}:{port}")
        return out

    def address(self, proto: str = "udp") -> tuple[str, int]:
        """The first bound address for *proto* (tests bind port 0)."""
        return (self.udp if proto == "udp" else self.tcp)[0].address

    async def reload(self) -> bool:
        """Reloads the configuration file; keeps the old one on any error. Answers success."""
        if self.config_path is None:
            log.warning("reload asked, but the server was not started from a file")
            return False
        self.file_stamp = watch.stamp(self.config_path)  # before reading: no change is missed
        try:
            cfg = await asyncio.to_thread(config_mod.load, self.config_path)
            self.apply(cfg)
        except ConfigError as e:
            metrics.config_reloads.labels("failure").inc()
            metrics.config_last_reload_ok.set(0)
            for line in e.lines():
                log.error("reload rejected: %s", line)
            log.error("reload failed; still serving the previous configuration")
            await self._notify_reload(False)
            return False
        await self._notify_reload(True)
        return True

    def apply(self, cfg: Config) -> None:
        """Swaps in a new configuration, keeping the running start-only settings (each one
        the file changes is logged). Raises ConfigError if its runtime cannot be built."""
        running = schema.start_only(self.config)
        differ = {key: value for key, value in schema.start_only(cfg).items()
                  if value != running[key]}
        cfg = schema.keep_start_only(cfg, self.config)
        self._swap(runtime.build(cfg, previous=self.holder.current, inventory=self.inventory))
        self.config = cfg
        logs.configure(cfg.log)
        self._restart_needed(differ, running)
        metrics.config_reloads.labels("success").inc()
        metrics.config_last_reload_success.set(time.time())
        metrics.config_last_reload_ok.set(1)
        log.info("configuration reloaded from %s: %d rules, %d groups", cfg.source,
                 len(cfg.rules), len(cfg.upstreams))

    def use_inventory(self, inventory: Any) -> None:
        """Swaps in a runtime built from the same configuration and a new AWS inventory, as
        a reload does. Raises ConfigError if it cannot be built."""
        self._swap(runtime.build(self.config, previous=self.holder.current,
                                 inventory=inventory))
        self.inventory = inventory

    def _swap(self, new: runtime.Runtime) -> None:
        """Makes *new* the current runtime and releases what only the old one used."""
        old = self.holder.swap(new)
        kept = {id(s) for g in new.groups.values() for s in g.servers}
        for group in old.groups.values():
            for state in group.servers:
                if id(state) not in kept:
                    state.close()  # a server the new configuration dropped
        old.close()

    def _restart_needed(self, differ: dict[str, Any], running: dict[str, Any]) -> None:
        """Logs each start-only setting the file sets to another value than the running
        one, once: not again on the next reload of the same value, nor once the file is
        back to the running value. Workers share one file: worker 0 speaks for them."""
        if self.worker in (None, 0):
            for key, value in differ.items():
                if self.restart_pending.get(key) != value:
                    log.warning("%s: %s in %s, %s running: only a restart applies it; the "
                                "running value stays until then", key, _shown(value),
                                self.config_path, _shown(running[key]),
                                extra={"key": key, "configured": _shown(value),
                                       "running": _shown(running[key])})
        self.restart_pending = differ

    async def _notify_reload(self, ok: bool) -> None:
        for callback in self.on_reload:
            result = callback(ok)
            if asyncio.iscoroutine(result):
                await result

    async def stop(self, deadline: float = 5.0) -> None:
        """Stops accepting, finishes in-flight queries within *deadline*, closes everything."""
        if self.stopping:
            await self._stopped.wait()
            return
        self.stopping = True
        for u in self.udp:
            u.stop_reading()
            u.take_queued()  # they came before the stop: answered within the deadline
        for t in self.tcp:
            t.stop_accepting()
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        try:
            async with asyncio.timeout(deadline):
                await self.pipeline.drain()
        except TimeoutError:
            log.warning("shutdown deadline reached with queries still in flight")
        for t in self.tcp:
            t.close_connections()
        stuck = await hook_calls.stop_stragglers(end - loop.time())
        for what in sorted(set(stuck)):
            log.error("%s is still running %g s after the stop began (%d call(s)): it "
                      "ignores cancellation; stopping without it, exit status 1", what,
                      deadline, stuck.count(what))
            self.exit_code = EXIT_FAILURE
        for service in reversed(self.services):
            try:
                await service.stop()
            except Exception:
                log.exception("error stopping a service")
        self.close_sockets()
        self.listening = False
        self.holder.current.close()
        for group in self.holder.current.groups.values():
            for state in group.servers:
                state.close()
        self._stopped.set()

    def close_sockets(self) -> None:
        for u in self.udp:
            u.close()
        for t in self.tcp:
            t.close()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def _keep(self, task: asyncio.Future[Any]) -> None:
        self._signal_tasks.add(task)
        task.add_done_callback(self._signal_tasks.discard)

    def install_signal_handlers(self, on_signal: Callable[[str], Any] | None = None) -> None:
        """SIGHUP reloads; SIGTERM and SIGINT drain and stop."""
        loop = asyncio.get_running_loop()

        def reload() -> None:
            if on_signal:
                on_signal("reload")
            self._keep(asyncio.ensure_future(self.reload()))

        def terminate() -> None:
            if on_signal:
                on_signal("stop")
            self._keep(asyncio.ensure_future(self.stop()))

        loop.add_signal_handler(signal.SIGHUP, reload)
        loop.add_signal_handler(signal.SIGTERM, terminate)
        loop.add_signal_handler(signal.SIGINT, terminate)


def _shown(value: Any) -> str:
    """A setting's value as the YAML would say it."""
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(getattr(v, "label", str(v)) for v in value) + "]"
    return str(value)
