"""A real `forwarder run` process for tests that need one (exit codes, signals, the operator
log as it is written, privilege drops): its config file, its log, the systemd notify
socket it reports READY=1 on, a dnspython client for its port, and its end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.name
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import poll_process


class ForwarderProcess:
    """One `forwarder run -c FILE` process tree started by a test."""

    def __init__(self, tmp: Path, cfg: dict[str, Any], log: str = "forwarder.log") -> None:
        self.tmp = tmp
        self.path = tmp / "forwarder.yaml"
        self.log = tmp / log
        self.port = int(cfg["listen"][0]["port"])
        metrics = cfg.get("metrics", {})
        self.http = (int(metrics.get("listen", ":9153").rsplit(":", 1)[1])
                     if metrics.get("enabled", True) else None)
        self.proc: asyncio.subprocess.Process | None = None
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(tmp / "notify"))
        self.notify.setblocking(False)
        self.write(cfg)

    def write(self, cfg: dict[str, Any]) -> None:
        self.path.write_text(yaml.safe_dump(cfg))

    async def start(self, *args: str) -> None:
        env = {**os.environ, "NOTIFY_SOCKET": str(self.tmp / "notify"),
               "TMPDIR": str(self.tmp)}
        with open(self.log, "wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "forwarder", "run", "-c", str(self.path), *args,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="backslashreplace")

    async def notified(self, field: str, timeout: float = 20.0) -> str:
        """Waits for a notify datagram holding *field* (`READY=1`, ...); answers it whole."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {field} from the forwarder:\n{self.log_text()}")
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.notify, 4096), min(left, 0.5))
            except TimeoutError:
                self.check_running()
                continue
            text = data.decode()
            if field in text.split("\n"):
                return text

    async def ready(self, timeout: float = 20.0) -> str:
        """Waits for READY=1 (the process serves from then on); answers the datagram."""
        return await self.notified("READY=1", timeout)

    def check_running(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is not None:
            pytest.fail(f"forwarder exited with {self.proc.returncode}:\n{self.log_text()}")

    async def ask(self, name: str | dns.name.Name, qtype: str = "A", transport: str = "udp",
                  timeout: float = 2.0, **make: Any) -> dns.message.Message:
        q = dns.message.make_query(name, qtype, **make)
        if transport == "udp":
            return await dns.asyncquery.udp(q, "127.0.0.1", port=self.port, timeout=timeout)
        return await dns.asyncquery.tcp(q, "127.0.0.1", port=self.port, timeout=timeout)

    async def poll(self, what: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Calls *what* until it answers something true (see conftest.poll_process)."""
        assert self.proc is not None
        return await poll_process(what, self.proc, self.log, timeout)

    async def get(self, path: str) -> tuple[int, str]:
        """GETs *path* from the metrics address: (status, body)."""
        def fetch() -> tuple[int, str]:
            url = f"http://127.0.0.1:{self.http}{path}"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        return await asyncio.to_thread(fetch)

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of *name*'s samples matching *labels*, as /metrics shows it now."""
        _, text = await self.get("/metrics")
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    total += sample.value
        return total

    async def metric_is(self, name: str, value: float, **labels: str) -> bool:
        return await self.metric(name, **labels) == value

    async def stop(self, timeout: float = 20.0, signum: int = signal.SIGTERM) -> int:
        """Sends *signum*; answers the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signum)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    def children(self) -> set[int]:
        """Live (not zombie) child processes (the workers of a supervisor), from /proc."""
        found = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.pid and fields[0] != "Z":
                    found.add(int(stat.parent.name))
        return found

    async def close(self) -> None:
        self.notify.close()
        if self.proc is not None and self.proc.returncode is None:
            for child in self.children():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


@contextlib.asynccontextmanager
async def forwarder_process(tmp: Path, cfg: dict[str, Any],
                            *args: str) -> AsyncIterator[ForwarderProcess]:
    """A started `forwarder run` process, once it told systemd READY=1; killed at the end
    if the test did not stop it."""
    fwd = ForwarderProcess(tmp, cfg)
    try:
        await fwd.start(*args)
        await fwd.ready()
        yield fwd
    finally:
        await fwd.close()
