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


CANCEL_GRACE = 0.25  # seconds the tasks left when the process ends have to finish


def run_loop(coro: Coroutine[Any, Any, int]) -> int:
    """Runs *coro* on uvloop when it is installed, else on the default loop, as
    `asyncio.run` does, except that the tasks still running when it returns get
    CANCEL_GRACE seconds to end after being cancelled instead of being waited for without
    end (a hook's coroutine that ignores cancellation must not keep the process alive)."""
    try:
        import uvloop
    except ImportError:
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                _, stuck = loop.run_until_complete(asyncio.wait(tasks, timeout=CANCEL_GRACE))
                for task in stuck:  # reported by whoever left them (Server.stop)
                    task._log_destroy_pending = False  # type: ignore[attr-defined]
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(
                asyncio.wait([loop.create_task(loop.shutdown_default_executor())],
                             timeout=CANCEL_GRACE))
        finally:
            asyncio.set_event_loop(None)
            loop.close()


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
