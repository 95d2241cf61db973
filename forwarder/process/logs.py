"""The operator log's format: one record is one line, whatever text it carries.

Names reach log messages in presentation form already (`wire.name_to_text` escapes them
as dig does); this formatter is the net under everything else a message may carry (an
upstream's EDE text, a hook's exception message): control characters, newlines and ESC
are written as `\\DDD` escapes, so no text can start a line of its own or drive a
terminal. A traceback keeps its lines, but each line after the record's first starts
with white space, so that it can never pass for a record of its own.
"""

from __future__ import annotations

import logging
import re
import sys

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


def setup(level: str) -> None:
    """Sends the operator log to stderr at *level* in the one-line format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
