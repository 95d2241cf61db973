"""The operator log on stderr: text or JSON lines (`log:` in the configuration, the
`--log-level` option), and one record is one line, whatever text it carries.

JSON lines carry `timestamp` (UTC, ISO 8601), `level`, `logger` and `message`, then the
record's structured fields (what the code passes in `extra=`: the policy log's policy,
rule, client, name, addresses and action, the start line's listeners and counts) and
`worker` in a worker process; an exception comes as `exception`. JSON escapes every
control character itself.

Names reach log messages in presentation form already (`names.to_text` escapes them
as dig does); this formatter is the net under everything else a message may carry (an
upstream's EDE text, a hook's exception message): control characters, newlines and ESC
are written as `\\DDD` escapes, so no text can start a line of its own or drive a
terminal. A traceback keeps its lines, but each line after the record's first starts
with white space, so that it can never pass for a record of its own.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from typing import Any

from forwarder.config.model import LogFormat, LogSettings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_UNSAFE_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\{code:03d}" if code < 256 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """Answers *text* with every control character (newline included) as a `\\DDD` escape."""
    return _UNSAFE.sub(_escape, text)


class OneLineFormatter(logging.Formatter):
    """A `logging.Formatter` whose records cannot forge other records (module text)."""

    def format(self, record: logging.LogRecord) -> str:
        # the exception text is made here, not taken from record.exc_text: another
        # handler may have cached it there unindented
        record.message = record.getMessage()
        worker = getattr(record, "worker", None)
        if worker is not None:
            record.message = f"worker {worker}: {record.message}"
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = escape(self.formatMessage(record))
        if record.exc_info:
            text += "\n" + _indent(self.formatException(record.exc_info))
        elif record.exc_text:
            text += "\n" + _indent(record.exc_text)
        if record.stack_info:
            text += "\n" + _indent(self.formatStack(record.stack_info))
        return text


def _indent(text: str) -> str:
    lines = _UNSAFE_BUT_NEWLINE.sub(_escape, text).split("\n")
    return "\n".join(line if line[:1].isspace() else "  " + line for line in lines)


# what every LogRecord has: the rest of a record's attributes are its structured fields
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record (module text)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


_FORMATTERS = {LogFormat.TEXT: lambda: OneLineFormatter(FORMAT), LogFormat.JSON: JsonFormatter}
_handler: logging.Handler | None = None  # the stderr handler setup() installed
_cli_level: str | None = None  # --log-level: wins over `log.level`


def setup(level: str | None = None) -> None:
    """Sends the operator log to stderr in the one-line text format, at *level* (the
    command line's `--log-level`; None: info until a configuration says otherwise)."""
    global _handler, _cli_level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(FORMAT))
    logging.basicConfig(level=getattr(logging, (level or "info").upper()), handlers=[handler])
    if handler in logging.getLogger().handlers:  # else logging was set up already (tests)
        _handler, _cli_level = handler, level


def configure(settings: LogSettings) -> None:
    """Applies a configuration's `log:` (at start and on each reload) to the log setup()
    installed; a level given on the command line stays."""
    if _handler is None:
        return  # not a command's process (tests, the lab): leave its logging alone
    _handler.setFormatter(_FORMATTERS[settings.format]())
    logging.getLogger().setLevel(getattr(logging, (_cli_level or settings.level).upper()))
