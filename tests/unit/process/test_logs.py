"""The operator log's format: one record is one line, whatever its message carries."""

from __future__ import annotations

import io
import logging

from forwarder.process import logs

FORGED = "\n1999-01-01 00:00:00,000 ERROR forwarder: forged"


def emit(message: str, *args: object, exc: BaseException | None = None) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.OneLineFormatter(logs.FORMAT))
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error(message, *args, exc_info=exc)
    finally:
        logger.removeHandler(handler)
    return out.getvalue()


def test_newlines_and_escape_sequences_in_a_message_are_escaped() -> None:
    """Log: a message with a newline, a forged record and ESC stays one line, with escapes."""
    text = emit("upstream said %s", "bad" + FORGED + "\x1b[31mred\r\x00")
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "\x1b" not in text and "\r" not in text and "\x00" not in text
    assert "bad\\0101999-01-01 00:00:00,000 ERROR forwarder: forged\\027[31mred\\013\\000" \
        in text
    assert "\\u2028" in emit("a\u2028b") and "\u2028" not in emit("a\u2028b")


def test_a_traceback_cannot_start_a_record_of_its_own() -> None:
    """Log: an exception whose text holds a forged record keeps it on an indented line."""
    try:
        raise ValueError("boom" + FORGED + "\x1b]0;title\x07")
    except ValueError as e:
        text = emit("hook failed", exc=e)
    lines = text.rstrip("\n").split("\n")
    assert lines[0].endswith("ERROR tests.logs: hook failed")
    assert all(line.startswith((" ", "\t")) for line in lines[1:])
    assert any("Traceback (most recent call last):" in line for line in lines)
    assert not any(line.startswith("1999") for line in lines)
    assert "\x1b" not in text and "\x07" not in text
