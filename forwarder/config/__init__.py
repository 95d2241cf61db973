"""Configuration: `load(path)` reads YAML into a validated, immutable `Config`.

Raises ConfigError listing every problem as `FILE: field.path: reason`.
"""

from __future__ import annotations

from typing import Any

import yaml

from forwarder.config import model, parse, validate
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
    return load_text(text, path)


def load_text(text: str, source: str = "<config>") -> Config:
    """Validates configuration given as YAML text. Raises ConfigError."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(e, "problem", None) or str(e)
        raise ConfigError(source, [ConfigProblem(where, f"invalid YAML: {reason}")]) from None
    return from_data(data, source)


def from_data(data: Any, source: str = "<config>") -> Config:
    """Validates already-loaded YAML data. Raises ConfigError."""
    problems: list[ConfigProblem] = []
    if data is None:
        data = {}
    cfg = parse.parse(data, source, problems)
    validate.validate(cfg, problems)
    if problems:
        raise ConfigError(source, problems)
    return cfg
