"""Exit codes every command shares, the event-loop runner, and loading a configuration
for a command (errors printed for the operator): what `cli` and the commands it starts
have in common, below them all so that nothing imports `cli` back."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from forwarder import config as config_mod
from forwarder.errors import ConfigError

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_MISMATCH = 0, 1, 2, 3


def run_loop(coro: Coroutine[Any, Any, int]) -> int:
    """Runs *coro* on uvloop when it is installed, else on the default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def report(e: ConfigError, path: str) -> None:
    """Prints every problem of *e* and how many there are, for the operator."""
    print(e.render(), file=sys.stderr)
    print(f"{path}: {len(e.problems)} problem(s) found", file=sys.stderr)


def load_or_report(path: str) -> config_mod.Config | None:
    """The configuration at *path*, or None after printing why it is invalid."""
    try:
        return config_mod.load(path)
    except ConfigError as e:
        report(e, path)
        return None
