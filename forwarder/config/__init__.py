"""Configuration: `load(path)` reads YAML into a validated, immutable `Config`.

Raises ConfigError listing every problem, in file order, as
`FILE:LINE:COLUMN: field.path: reason`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from forwarder.config import model, parse, source, validate
from forwarder.config.model import Config
from forwarder.errors import ConfigError, ConfigProblem

__all__ = ["Config", "ConfigError", "load", "load_text", "model"]


def load(path: str) -> Config:
    """Reads and validates the configuration file at *path*. Raises ConfigError."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        problem = ConfigProblem("", f"cannot read the file: {e.strerror}")
        raise ConfigError(path, [problem]) from None
    except UnicodeDecodeError as e:
        problem = ConfigProblem("", f"not UTF-8 text: {e.reason} at byte {e.start}")
        raise ConfigError(path, [problem]) from None
    return load_text(text, path)


def load_text(text: str, source_name: str = "<config>") -> Config:
    """Validates configuration given as YAML text. Raises ConfigError."""
    try:
        data, positions, problems = source.read(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        reason = getattr(e, "problem", None) or str(e)
        context, where = getattr(e, "context", None), getattr(e, "context_mark", None)
        if context and where and where is not mark:
            reason += f" ({context} at line {where.line + 1}, column {where.column + 1})"
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        problem = ConfigProblem("", f"invalid YAML: {reason}", line, column)
        raise ConfigError(source_name, [problem]) from None
    return from_data(data, source_name, positions, problems)


def from_data(data: Any, source_name: str = "<config>",
              positions: source.Positions | None = None,
              problems: list[ConfigProblem] | None = None) -> Config:
    """Validates already-loaded YAML data (*positions* say where each field was, when it
    came from a file). Raises ConfigError."""
    problems = list(problems or [])
    positions = positions or source.Positions()
    if data is None:
        data = {}
    cfg = parse.parse(data, source_name, problems)
    validate.validate(cfg, problems)
    if problems:
        raise ConfigError(source_name, problems, positions)
    return dataclasses.replace(cfg, positions=positions)
