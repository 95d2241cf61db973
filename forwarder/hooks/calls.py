"""Calling one hook function: its time limit, the containment of whatever it raises, the
HookError a failure costs its query (logged at most once per burst), and the calls that
were cancelled but have not ended (a coroutine that ignores cancellation).

Whatever a hook raises is its failure, BaseExceptions included (KeyboardInterrupt,
SystemExit, GeneratorExit): none may stop the server. A coroutine runs in a task of its own
that is cancelled when the limit passes, and the query goes on without waiting for it to
end, so a hook that ignores the cancellation keeps only itself running (`stop_stragglers`
is the server's last word on those).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from forwarder.errors import HookError

if TYPE_CHECKING:
    from forwarder.hooks.runner import LoadedHook

log = logging.getLogger("forwarder")

ERROR_LOG_INTERVAL = 10.0  # seconds: at most one logged error (with traceback) per hook


class ErrorLog:
    """Logs a hook's failures of each kind at most once per interval (a burst of failures
    gives one traceback), saying how many were not logged."""

    __slots__ = ("_kinds",)

    def __init__(self) -> None:
        self._kinds: dict[str, list[float | int]] = {}  # kind -> [next log time, suppressed]

    def log(self, kind: str, text: str, exc: BaseException | None) -> None:
        now = time.monotonic()
        state = self._kinds.setdefault(kind, [0.0, 0])
        if now < state[0]:
            state[1] += 1
            return
        if state[1]:
            text += (f" ({state[1]} more like this in the last {ERROR_LOG_INTERVAL:.0f}s "
                     "were not logged)")
        state[0], state[1] = now + ERROR_LOG_INTERVAL, 0
        log.error("%s", text, exc_info=exc)


async def call(hook: LoadedHook, phase: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Calls one hook function within its time limit (the module text says how). Raises
    HookError.

    A plain function cannot be stopped from the event loop, so its overrun is only noticed
    when it returns; its verdict is then discarded.
    """
    started = time.perf_counter()
    try:
        result = fn(*args)
    except BaseException as e:
        raise raised(hook, phase, e) from None
    if inspect.isawaitable(result):
        outcome = await _await(hook, phase, result)
        if isinstance(outcome, _Raised):
            raise raised(hook, phase, outcome.error)
        return outcome
    if time.perf_counter() - started > hook.timeout:
        raise timeout(hook, phase, sync=True)
    return result


class _Raised:
    """What a hook's coroutine raised, carried out of its task as a value: a task that
    raises KeyboardInterrupt or SystemExit would stop the event loop."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


async def _contained(awaitable: Any) -> Any:
    try:
        return await awaitable
    except BaseException as e:
        return _Raised(e)


# hook calls cancelled (their time was up, or their query was cancelled) that have not
# ended yet, with what to call them in the log: "hook NAME: on_query"
_stragglers: dict[asyncio.Future[Any], str] = {}


async def _await(hook: LoadedHook, phase: str, awaitable: Any) -> Any:
    """Runs a hook's awaitable in its own task for at most the hook's time limit. Raises
    HookError on a timeout, CancelledError when the query itself is cancelled."""
    task = asyncio.ensure_future(_contained(awaitable))
    try:
        done, _ = await asyncio.wait((task,), timeout=hook.timeout)
    except asyncio.CancelledError:  # the query itself is being cancelled: so is its hook
        _abandon(task, f"hook {hook.name}: {phase}")
        raise
    if not done:
        _abandon(task, f"hook {hook.name}: {phase}")
        raise timeout(hook, phase)
    return task.result()


def _abandon(task: asyncio.Future[Any], what: str) -> None:
    task.cancel()
    if not task.done():
        _stragglers[task] = what
        task.add_done_callback(_forget)


def _forget(task: asyncio.Future[Any]) -> None:
    _stragglers.pop(task, None)


def stragglers() -> list[str]:
    """The hook calls cancelled but still running, as "hook NAME: on_query"."""
    return sorted(_stragglers.values())


async def stop_stragglers(timeout: float) -> list[str]:
    """Cancels the hook calls still running once more and waits for them at most *timeout*
    seconds; answers those that still run (they ignore cancellation)."""
    if not _stragglers:
        return []
    for task in list(_stragglers):
        task.cancel()
    await asyncio.wait(list(_stragglers), timeout=max(timeout, 0.0))
    return stragglers()


def raised(hook: LoadedHook, phase: str, e: BaseException) -> HookError:
    hook.errors.log("exception", f"hook {hook.name}: {phase} raised {type(e).__name__}: {e}", e)
    return HookError(hook.name, "exception", f"hook {hook.name}: {phase} raised "
                     f"{type(e).__name__}")


def timeout(hook: LoadedHook, phase: str, sync: bool = False) -> HookError:
    limit_ms = f"{hook.timeout * 1000:g} ms"
    how = " (a plain function cannot be interrupted; make it async)" if sync else ""
    hook.errors.log("timeout", f"hook {hook.name}: {phase} took longer than {limit_ms}{how}", None)
    return HookError(hook.name, "timeout", f"hook {hook.name}: {phase} took longer than "
                     f"{limit_ms}")


def invalid(hook: LoadedHook, phase: str, what: str) -> HookError:
    hook.errors.log("invalid_verdict", f"hook {hook.name}: {phase}: {what}", None)
    return HookError(hook.name, "invalid_verdict", f"hook {hook.name}: {phase}: {what}")


@contextlib.contextmanager
def blamed_on(hook: LoadedHook, phase: str) -> Iterator[None]:
    """Reading a verdict runs code of the hook's making too (a verdict subclass, its
    repr): whatever that raises is the hook's failure."""
    try:
        yield
    except HookError:
        raise
    except BaseException as e:
        raise raised(hook, phase, e) from None
