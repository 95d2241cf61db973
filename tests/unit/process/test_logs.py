"""The operator log's format: one record is one line, whatever its message carries."""

from __future__ import annotations

import datetime
import io
import json
import logging
from typing import Any

from forwarder.process import daemon, logs

FORGED = "\n1999-01-01 00:00:00,000 ERROR forwarder: forged"


def emit(message: str, *args: object, exc: BaseException | None = None,
         formatter: logging.Formatter | None = None, extra: dict[str, Any] | None = None,
         worker: int | None = None) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter or logs.OneLineFormatter(logs.FORMAT))
    if worker is not None:
        handler.addFilter(daemon._WorkerTag(worker))
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error(message, *args, exc_info=exc, extra=extra)
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


def test_json_lines_carry_the_fields_and_the_structured_extra() -> None:
    """Log (JSON): timestamp, level, logger, message, then what the code passed in
    `extra=` (here the policy log's fields), one object per line."""
    before = datetime.datetime.now(datetime.UTC)
    text = emit("policy violation policy=%s", "private-only", formatter=logs.JsonFormatter(),
                extra={"policy": "private-only", "qname": "s3.amazonaws.com.",
                       "addresses": ["52.219.1.1"], "action": "servfail"})
    assert text.count("\n") == 1
    line = json.loads(text)
    assert list(line)[:4] == ["timestamp", "level", "logger", "message"]
    assert line["level"] == "error" and line["logger"] == "tests.logs"
    assert line["message"] == "policy violation policy=private-only"
    assert {k: line[k] for k in ("policy", "qname", "addresses", "action")} == {
        "policy": "private-only", "qname": "s3.amazonaws.com.", "addresses": ["52.219.1.1"],
        "action": "servfail"}
    stamp = datetime.datetime.fromisoformat(line["timestamp"])
    assert line["timestamp"].endswith("Z") and stamp >= before.replace(microsecond=0)


def test_json_lines_escape_everything_and_keep_exceptions_in_one_line() -> None:
    try:
        raise ValueError("boom" + FORGED)
    except ValueError as e:
        text = emit("bad %s", "x" + FORGED + "\x1b[31m", exc=e, formatter=logs.JsonFormatter())
    assert text.count("\n") == 1 and "\x1b" not in text
    line = json.loads(text)
    assert line["message"] == "bad x" + FORGED + "\x1b[31m"
    assert "Traceback (most recent call last):" in line["exception"]


def test_a_worker_s_records_say_which_worker() -> None:
    assert "ERROR tests.logs: worker 3: hello" in emit("hello", worker=3)
    assert json.loads(emit("hello", worker=3, formatter=logs.JsonFormatter()))["worker"] == 3
