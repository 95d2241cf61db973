"""JSON query log: one line per answered query, written off the event loop.

`QueryLog.record` runs on the event loop for every answered query. It samples, copies the
fields it needs into a tuple and hands that to a bounded queue without waiting: when the
queue is full the line is dropped and counted (forwarder_querylog_dropped_total), never
the query. A writer thread turns each tuple into JSON (reading the answer addresses from
the reply's wire form there, not on the loop) and writes it to the file or to stdout,
flushing whenever it has caught up. A reload with the same settings keeps the log and
reopens the file, so that rotated logs are let go.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import queue
import random
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from forwarder import metrics
from forwarder.config import model
from forwarder.dns import message, names, wire
from forwarder.dns.reply import read as read_reply
from forwarder.errors import ConfigError, ConfigProblem, FormError

if TYPE_CHECKING:
    from forwarder.query import Query, Reply

log = logging.getLogger("forwarder")

CLOSE_TIMEOUT = 2.0  # seconds to write what is queued when the log closes
_STOP = object()
_UTC = datetime.UTC


class QueryLog:
    """Writes sampled query records as JSON lines from a background thread."""

    sees_every_query = True  # one line per answered query
    def __init__(self, settings: model.QueryLogSettings) -> None:
        """Opens the destination. Raises OSError when the file cannot be opened."""
        self.settings = settings
        self.sample = settings.sample
        self.answers = settings.answers
        self.owner: Any = None  # the Runtime that closes this log (a reload may hand it on)
        self._to_stdout = settings.path == "stdout"
        self._out: IO[str] = self._open()
        self._reopen = False
        self._closed = False
        self._queue: queue.Queue[Any] = queue.Queue(settings.queue_size)
        self._thread = threading.Thread(target=self._write_loop, name="forwarder-querylog",
                                        daemon=True)
        self._thread.start()

    def _open(self) -> IO[str]:
        if self._to_stdout:
            return sys.stdout
        opened = _preopened.pop(self.settings.path, None)
        return opened if opened is not None else _open_file(self.settings.path)

    # -- on the event loop -----------------------------------------------------------------

    def record(self, q: Query, reply: Reply, now: float) -> None:
        """Queues the line for *q* answered with *reply* at loop time *now*, if sampled."""
        if self._closed or (self.sample < 1.0 and random.random() >= self.sample):
            return
        rule = q.rule
        upstream = reply.upstream_reply
        item = (time.time(), q.client[0], q.transport, q.qname, q.qtype,
                rule.name if rule is not None else None, q.group, reply.server,
                upstream.rcode if upstream is not None else None, reply.wire, reply.verdict,
                reply.action, reply.violations, reply.protection, reply.ede, reply.rcode,
                reply.answered_by,
                now - q.received,
                dict(q.tags) if q.tags else None,
                _upstream(reply) if self.answers else False)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            metrics.querylog_dropped.inc()

    def reopen(self) -> None:
        """Asks the writer to reopen the file before its next line (after log rotation)."""
        self._reopen = True

    def close(self) -> None:
        """Writes what is queued (waiting at most CLOSE_TIMEOUT), then closes the file."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put(_STOP, timeout=CLOSE_TIMEOUT)
        except queue.Full:
            log.warning("query log: writer is stuck; lines still queued are lost")
            return
        self._thread.join(CLOSE_TIMEOUT)

    def flush(self, timeout: float = 5.0) -> bool:
        """Blocks until every line queued so far is written and flushed; answers whether that
        happened within *timeout* seconds. Call it from a thread, never the event loop."""
        deadline = time.monotonic() + timeout
        done = self._queue.all_tasks_done
        with done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                done.wait(remaining)
        return True

    # -- on the writer thread --------------------------------------------------------------

    def _write_loop(self) -> None:
        pending = 0
        stop = False
        while not stop:
            item = self._queue.get()
            pending += 1
            if item is _STOP:
                stop = True
            else:
                self._write(item)
            if stop or self._queue.empty():
                self._flush()
                for _ in range(pending):
                    self._queue.task_done()
                pending = 0
        if not self._to_stdout:
            try:
                self._out.close()  # flushes what a failed write left buffered
            except (OSError, ValueError) as e:
                log.warning("query log: cannot close %s: %s", self.settings.path, e)

    def _write(self, item: tuple[Any, ...]) -> None:
        try:
            line = format_line(item)
        except Exception:  # a bug in formatting: the line still goes out, with less in it
            log.exception("query log: cannot format a record in full")
            line = _plain_line(item)
        try:
            if self._reopen:
                self._reopen = False
                if not self._to_stdout:
                    self._reopen_file()
            self._out.write(line)
        except (OSError, ValueError) as e:
            metrics.querylog_dropped.inc()
            log.warning("query log: cannot write to %s: %s", self.settings.path, e)

    def _reopen_file(self) -> None:
        """Opens the path anew (log rotation); if it cannot be opened, writes on to the
        file open now rather than losing lines."""
        try:
            out = _open_file(self.settings.path)
        except OSError as e:
            log.warning("query log: cannot reopen %s (%s): writing on to the file already "
                        "open", self.settings.path, e.strerror or e)
            return
        old, self._out = self._out, out
        try:
            old.close()
        except (OSError, ValueError) as e:
            log.warning("query log: cannot close %s: %s", self.settings.path, e)

    def _flush(self) -> None:
        try:
            self._out.flush()
        except (OSError, ValueError) as e:
            log.warning("query log: cannot flush %s: %s", self.settings.path, e)


def format_line(item: tuple[Any, ...]) -> str:
    """Turns one queued record into its JSON line (with the newline)."""
    (stamp, client, protocol, qname, qtype, rule, group, server, upstream_rcode, reply_wire,
     verdict, action, violations, protection, ede, rcode, answered_by, latency, tags,
     upstream) = item
    when = datetime.datetime.fromtimestamp(stamp, _UTC)
    fields = {
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "client": client,
        "protocol": protocol,
        "name": names.to_text(qname),
        "type": wire.qtype_to_text(qtype),
        "rule": rule,
        "group": group,
        "server": server,
        "upstream_rcode": message.rcode_to_text(upstream_rcode) if upstream_rcode is not None
        else None,
        "answers": _addresses(reply_wire),
        "verdict": verdict,
        "action": action,
        "violations": list(violations),
        "policy": protection[0] if protection is not None else None,
        "protected": names.to_text(protection[1])
        if protection is not None and protection[1] is not None else None,
        "ede": [{"code": code, "text": text} for code, text in ede],
        "rcode": message.rcode_to_text(rcode),
        "answered_by": answered_by,
        "latency_ms": round(latency * 1000, 3),
        "tags": tags or {},
    }
    if upstream is not False:  # querylog.answers: the recording `forwarder replay` reads
        fields["upstream_records"] = _records(upstream) if upstream is not None else None
        fields["upstream_reply"] = (base64.b64encode(upstream).decode("ascii")
                                    if upstream is not None else None)
    return json.dumps(fields, separators=(",", ":"), default=str) + "\n"


def _upstream(reply: Reply) -> bytes | None:
    """The upstream's reply behind *reply* (before the answer policy), when one was asked."""
    upstream = reply.upstream_reply
    return bytes(upstream.wire) if upstream is not None else None


def _records(reply_wire: bytes) -> list[str]:
    """The answer and additional records of an upstream reply, as `dig` shows them."""
    try:
        sections = message.parse_sections(reply_wire)
    except ValueError:
        return []
    return [f"{r.name}. {r.ttl} {r.type} {r.value}"
            for r in (*sections.answer, *sections.additional)]


def _addresses(reply_wire: bytes) -> list[str]:
    """The addresses of the answer; none when the answer cannot be read (the line is
    written all the same)."""
    try:
        return [a.text for a in read_reply(bytes(reply_wire)).addresses()]
    except (FormError, ValueError):  # unreadable, or an address that is not one
        return []


def _plain_line(item: tuple[Any, ...]) -> str:
    """The line for a record `format_line` failed on: the same fields, each as plain text
    (JSON escapes whatever they hold), and no answer addresses."""
    keys = ("time", "client", "protocol", "name", "type", "rule", "group", "server",
            "upstream_rcode", "answers", "verdict", "action", "violations", "protection",
            "ede", "rcode", "answered_by", "latency_ms", "tags", "upstream_reply")
    fields: dict[str, Any] = {}
    for name, value in zip(keys, item, strict=True):
        if name == "name" and isinstance(value, bytes):
            value = names.to_text(value)
        elif name == "protection":
            fields["policy"] = str(value[0]) if value else None
            fields["protected"] = repr(value[1]) if value and value[1] is not None else None
            continue
        elif name == "answers":
            value = []
        elif name == "upstream_reply":
            if value is False:
                continue
            value = base64.b64encode(value).decode("ascii") if value else None
        elif not isinstance(value, str | int | float | None):
            value = repr(value)
        fields[name] = value
    return json.dumps(fields, separators=(",", ":")) + "\n"


def _open_file(path: str) -> IO[str]:
    # line-buffered, appending: each line is one write(), so the lines of several
    # worker processes appending to the same file do not interleave
    return open(path, "a", encoding="utf-8", buffering=1)


# files opened before the privilege drop, by path, for the first QueryLog that writes there
_preopened: dict[str, IO[str]] = {}


def open_before_drop(cfg: model.Config, uid: int, gid: int) -> None:
    """Opens (creating) the query log's file while the process is still root, and gives
    it to the user it drops to (*uid*, *gid*): the QueryLog built after the drop writes to
    this handle, and a reopen after log rotation can open the file as that user. Raises
    OSError when the file cannot be opened."""
    settings = cfg.querylog
    if not settings.enabled or settings.path == "stdout" or settings.path in _preopened:
        return
    out = _open_file(settings.path)
    try:
        os.fchown(out.fileno(), uid, gid)
    except OSError:
        out.close()
        raise
    _preopened[settings.path] = out


def build(cfg: model.Config, previous: QueryLog | None) -> QueryLog | None:
    """The query log for *cfg* (None when the config does not use it). A reload with
    unchanged settings keeps the running log (*previous*), reopening its file. Raises
    ConfigError if the file cannot be opened."""
    settings = cfg.querylog
    if not settings.enabled:
        return None
    if previous is not None and previous.settings == settings and not previous._closed:
        previous.reopen()
        return previous
    try:
        return QueryLog(settings)
    except OSError as e:
        raise ConfigError(cfg.source, [ConfigProblem(
            "querylog.path", f"cannot open {settings.path!r}: {e.strerror or e}")],
            cfg.positions) from None
