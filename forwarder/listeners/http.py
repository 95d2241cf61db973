"""HTTP endpoints on `metrics.listen`: /metrics (Prometheus exposition), /healthz (the
process serves) and /readyz (listeners bound, and every rule's upstream group has a server
up and a passing canary; otherwise 503 with a JSON body saying which group and why).

With `workers:` above 1, worker 0 alone serves these: /metrics merges every worker's
metrics (multiprocess mode), /healthz and /readyz answer from worker 0's own view (its
listeners and its health checks), and /readyz says which worker answered.

A deliberately small HTTP/1.1 server on asyncio streams: one request per connection, a
bounded request head, a read deadline and a cap on open connections, so that a slow or
hostile client can neither stall the event loop nor exhaust the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from typing import TYPE_CHECKING

from prometheus_client import exposition

from forwarder import metrics
from forwarder.config.values import parse_server
from forwarder.errors import StartError
from forwarder.upstream import health

if TYPE_CHECKING:
    from forwarder.server import Server

log = logging.getLogger("forwarder")

MAX_HEAD = 8192  # bytes of request line and headers
READ_TIMEOUT = 5.0  # seconds to send the request head
WRITE_TIMEOUT = 10.0  # seconds for the client to take the response
MAX_CONNECTIONS = 64

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


class HttpService:
    """Serves /metrics, /healthz and /readyz for one Server."""

    def __init__(self, server: Server, host: str, port: int) -> None:
        self.server = server
        self.host = host
        self.port = port
        self._listener: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Binds the HTTP address. Raises StartError (e.g. the port is taken)."""
        try:
            self._listener = await asyncio.start_server(
                self._connection, self.host, self.port, limit=MAX_HEAD, reuse_address=True)
        except OSError as e:
            where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
            why = os.strerror(e.errno) if e.errno else str(e)  # asyncio words it at length
            raise StartError(f"cannot bind metrics.listen {where}: {why}") from None
        address = self._listener.sockets[0].getsockname()[:2]
        self.server.http_address = address
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        log.info("metrics on http://%s:%d/metrics (also /healthz, /readyz)", host, address[1])

    async def stop(self) -> None:
        if self._listener is None:
            return
        self._listener.close()
        for writer in list(self._writers):
            writer.close()
        await self._listener.wait_closed()
        self._listener = None

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._writers.add(writer)
        try:
            status, headers, body, head_only = await self._request(reader)
            await self._respond(writer, status, headers, body, head_only)
        except (ConnectionError, TimeoutError):
            pass
        except Exception:
            log.exception("http: internal error")
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _request(
        self, reader: asyncio.StreamReader
    ) -> tuple[int, dict[str, str], bytes, bool]:
        """Reads one request head; answers (status, headers, body, whether HEAD was asked)."""
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            return 408, {}, b"request head not received in time\n", False
        except asyncio.LimitOverrunError:
            return 431, {}, b"request head too large\n", False
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                raise ConnectionResetError from None  # connected and left: nothing to answer
            return 400, {}, b"incomplete request\n", False
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, {}, b"malformed request line\n", False
        method, target = parts[0], parts[1]
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return 405, {"Allow": "GET, HEAD"}, b"only GET and HEAD\n", False
        accept = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        path = target.split("?", 1)[0]
        status, headers, body = self._route(path, accept)
        return status, headers, body, head_only

    def _route(self, path: str, accept: str) -> tuple[int, dict[str, str], bytes]:
        if path == "/metrics":
            encode, content_type = exposition.choose_encoder(accept)
            return 200, {"Content-Type": content_type}, encode(metrics.exposition_registry())
        if path == "/healthz":
            return 200, {"Content-Type": TEXT}, b"ok\n"
        if path == "/readyz":
            ready, report = health.readiness(self.server)
            if self.server.worker is not None:
                report["worker"] = {"index": self.server.worker, "pid": os.getpid(),
                                    "workers": self.server.config.workers}
            body = json.dumps(report, indent=2, sort_keys=True).encode() + b"\n"
            return (200 if ready else 503), {"Content-Type": JSON}, body
        return 404, {"Content-Type": TEXT}, b"not found: try /metrics, /healthz or /readyz\n"

    async def _respond(self, writer: asyncio.StreamWriter, status: int, headers: dict[str, str],
                       body: bytes, head_only: bool) -> None:
        headers.setdefault("Content-Type", TEXT)
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += [f"Content-Length: {len(body)}", "Cache-Control: no-store",
                  "Connection: close", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1"))
        if not head_only:
            writer.write(body)
        async with asyncio.timeout(WRITE_TIMEOUT):
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()


def service(server: Server) -> HttpService | None:
    """Answers the HTTP service for *server*, or None when metrics are disabled or another
    worker serves them."""
    settings = server.config.metrics
    if not settings.enabled or server.worker not in (None, 0):
        return None
    address = parse_server(settings.listen, any_port=True)
    return HttpService(server, address.host, address.port)
