"""Loading operators' hook files and calling them: the HookChain the pipeline runs.

`load_hooks` imports each configured file once per Runtime build; a file that does not
import, or defines neither hook, makes the configuration invalid (ConfigError), so a
reload keeps the old Runtime. `HookChain.on_query` runs before the query goes upstream
(after the zone rule is chosen, so hooks see it); `HookChain.on_response` runs on every
answer from an upstream, the cache or local records, after the answer policy.

An answer a hook makes (`Answer`, and the answer an on_response chain ends with after a
`Replace`) is judged by the answer policy as an upstream's would be (policy/guard.py),
unless the hook marked it `trusted=True`: such answers are counted instead
(forwarder_hook_trusted_answers_total).

A hook that raises, overruns its time limit or returns something other than a verdict
for its phase costs that query a HookError (the pipeline answers SERVFAIL with EDE 0 and
counts it); its traceback is logged once per burst. `forwarder.hooks.calls` calls each
function and contains its failures.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import inspect
import logging
import os
import re
import sys
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import Any

from forwarder import hooks, metrics
from forwarder.config import model, source
from forwarder.dns import message, wire
from forwarder.errors import ConfigError, ConfigProblem
from forwarder.hooks import calls
from forwarder.query import DROP, Query, Reply, error_reply
from forwarder.stages.router import Router

log = logging.getLogger("forwarder")

ERROR_KINDS = ("exception", "timeout", "invalid_verdict")
# judges an answer a hook made: (query, reply, "hook NAME") -> the reply to send
Judge = Callable[[Query, Reply, str], Awaitable[Reply]]
QUERY_VERDICTS = "Continue, Answer, Reroute, Refuse or Drop"
RESPONSE_VERDICTS = "Continue, Replace, Block or Drop"


@dataclass(eq=False)
class LoadedHook:
    """One imported hook file and what it defines."""

    name: str  # the file name without .py: the metric label and the name in error texts
    path: str
    timeout: float
    options: Mapping[str, Any]
    module: ModuleType
    on_query: Callable[..., Any] | None
    on_response: Callable[..., Any] | None
    errors: calls.ErrorLog = field(default_factory=calls.ErrorLog)


# --- loading -----------------------------------------------------------------------------------


def load_hooks(cfg: model.Config) -> list[LoadedHook]:
    """Imports every hook file of *cfg*, in order. Relative paths are relative to the
    configuration file's directory. Raises ConfigError listing every file that fails."""
    problems: list[ConfigProblem] = []
    loaded: list[LoadedHook] = []
    taken: set[str] = set()
    for index, settings in enumerate(cfg.hooks):
        path = source.beside(cfg.source, settings.path)
        name = _hook_name(path, index, taken)
        hook = _load_one(index, name, path, settings, problems)
        if hook is not None:
            loaded.append(hook)
    if problems:
        raise ConfigError(cfg.source, problems, cfg.positions)
    for hook in loaded:
        for kind in ERROR_KINDS:
            metrics.hook_errors.labels(hook.name, kind)  # export zeros from the start
    return loaded


def _hook_name(path: str, index: int, taken: set[str]) -> str:
    stem = os.path.splitext(os.path.basename(path))[0] or f"hook{index}"
    name = stem if stem not in taken else f"{stem}#{index}"
    taken.add(name)
    return name


def _load_one(
    index: int, name: str, path: str, settings: model.HookSettings,
    problems: list[ConfigProblem],
) -> LoadedHook | None:
    where = f"hooks[{index}].path"

    def fail(reason: str) -> None:
        problems.append(ConfigProblem(where, reason))
        metrics.hook_errors.labels(name, "import").inc()

    if not os.path.isfile(path):
        fail(f"hook file {path} not found")
        return None
    module_name = f"forwarder_hook_{index}_{re.sub(r'[^0-9A-Za-z_]', '_', name)}"
    loader = _FreshSourceLoader(module_name, path)
    spec = importlib.util.spec_from_loader(module_name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # while it runs: dataclasses and pickling look here
    try:
        loader.exec_module(module)
    except BaseException as e:  # KeyboardInterrupt, SystemExit, ...: hook code, not ours
        fail(f"cannot import {path}: {_describe(e, path)}")
        return None
    finally:
        sys.modules.pop(module_name, None)  # a reload imports a fresh copy
    on_query = getattr(module, "on_query", None)
    on_response = getattr(module, "on_response", None)
    if on_query is None and on_response is None:
        fail(f"{path} defines neither on_query(ctx) nor on_response(ctx, response)")
        return None
    for fn, label, args in ((on_query, "on_query", 1), (on_response, "on_response", 2)):
        if fn is None:
            continue
        if not callable(fn):
            fail(f"{path}: {label} is not a function")
            return None
        try:
            inspect.signature(fn).bind(*([None] * args))
        except TypeError:
            wanted = "(ctx)" if args == 1 else "(ctx, response)"
            fail(f"{path}: {label} must accept {wanted}")
            return None
        except ValueError:  # no signature to check (a builtin): calling it will tell
            pass
    options = MappingProxyType(dict(settings.options))
    setup = getattr(module, "setup", None)
    if callable(setup):
        try:
            setup(options)
        except BaseException as e:
            fail(f"{path}: setup(options) raised {_describe(e, path)}")
            return None
    return LoadedHook(name, path, settings.timeout, options, module, on_query, on_response)


class _FreshSourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles the file on every load: no __pycache__ beside operators' files, and an
    edit is never hidden by a cached bytecode file of the same size and second."""

    def get_code(self, fullname: str) -> Any:
        return self.source_to_code(self.get_data(self.path), self.path)


def _describe(e: BaseException, path: str) -> str:
    """Says what went wrong and, when it can, on which line of the hook file."""
    if isinstance(e, SyntaxError) and e.filename == path:
        return f"SyntaxError: {e.msg} (line {e.lineno})"
    line = next((f.lineno for f in reversed(traceback.extract_tb(e.__traceback__))
                 if f.filename == path), None)
    where = f" (line {line})" if line is not None else ""
    return f"{type(e).__name__}: {e}{where}"


# --- calling -----------------------------------------------------------------------------------


class HookChain:
    """The loaded hooks of one Runtime, called in configuration order."""

    __slots__ = ("_groups", "_judge", "_query_hooks", "_response_hooks", "_router", "hooks")

    sees_every_query = True  # hooks run on every query and answer
    def __init__(self, loaded: list[LoadedHook], router: Router, groups: Mapping[str, Any],
                 judge: Judge | None = None):
        self.hooks = tuple(loaded)
        self._query_hooks = tuple(h for h in loaded if h.on_query is not None)
        self._response_hooks = tuple(h for h in loaded if h.on_response is not None)
        self._router = router
        self._groups = groups
        self._judge = judge

    async def on_query(self, q: Query) -> Reply | None:
        """Runs every on_query hook: None to carry on (maybe rerouted), a Reply to answer
        with, or query.DROP. Raises HookError."""
        if q.rule is None:  # route first, so hooks see the rule and its group
            q.rule = self._router.route(q.qname, q.qtype, q.client[0])
        for hook in self._query_hooks:
            verdict = await calls.call(hook, "on_query", hook.on_query,  # type: ignore[arg-type]
                                  (hooks.Context(q, hook.name, hook.options),))
            with calls.blamed_on(hook, "on_query"):
                reply = self._query_verdict(hook, q, verdict)
            if reply is not None:
                if isinstance(verdict, hooks.Answer):
                    return await self._judged(hook, q, reply, verdict.trusted)
                return reply
        return None

    async def _judged(self, hook: LoadedHook, q: Query, reply: Reply, trusted: bool) -> Reply:
        """The answer *hook* made, judged by the answer policy unless it is trusted."""
        if trusted:
            metrics.hook_trusted.labels(hook.name).inc()
            q.note(f"hook {hook.name}: trusted answer: not judged by any policy")
            return reply
        if self._judge is None:
            return reply
        return await self._judge(q, reply, f"hook {hook.name}")

    def _query_verdict(self, hook: LoadedHook, q: Query, verdict: object) -> Reply | None:
        if verdict is None or verdict is hooks.Continue or isinstance(verdict, hooks.Continue):
            return None
        if q.trace is not None:
            q.note(f"hook {hook.name}: on_query returned {verdict!r}")
        if isinstance(verdict, hooks.Reroute):
            if verdict.group not in self._groups:
                raise calls.invalid(hook, "on_query",
                               f"Reroute to unknown upstream group {verdict.group!r}")
            q.group = verdict.group
            return None
        if isinstance(verdict, hooks.Answer):
            try:
                data = message.build_answer(q, verdict._wire_records, verdict.rcode,
                                            verdict._wire_authority)
            except ValueError as e:
                raise calls.invalid(hook, "on_query", f"Answer cannot be sent: {e}") from None
            ede = (verdict.ede,) if verdict.ede is not None else ()
            return Reply(data, verdict.rcode, "hook", ede)  # type: ignore[arg-type]
        if isinstance(verdict, hooks.Refuse):
            text = verdict.ede_text or f"refused by hook {hook.name}"
            return error_reply(q, wire.Rcode.REFUSED, wire.Ede.PROHIBITED, text, by="hook")
        if verdict is hooks.Drop or isinstance(verdict, hooks.Drop):
            return DROP
        raise calls.invalid(hook, "on_query",
                       f"returned {_kind(verdict)}; expected {QUERY_VERDICTS}")

    async def on_response(self, q: Query, reply: Reply) -> Reply:
        """Runs every on_response hook on *reply*; answers the reply to send (or DROP).
        Raises HookError."""
        if not self._response_hooks or reply is DROP:
            return reply
        view = hooks.Response(reply)
        replaced: tuple[LoadedHook, bool] | None = None  # the last Replace: by whom, trusted
        for hook in self._response_hooks:
            verdict = await calls.call(hook, "on_response", hook.on_response,  # type: ignore[arg-type]
                                  (hooks.Context(q, hook.name, hook.options), view))
            with calls.blamed_on(hook, "on_response"):
                new, final = _response_verdict(hook, q, reply, verdict)
            if final:
                return new
            if new is not reply:
                reply, view = new, hooks.Response(new)
                replaced = (hook, bool(getattr(verdict, "trusted", False)))
        if replaced is not None:
            return await self._judged(replaced[0], q, reply, replaced[1])
        return reply


def _response_verdict(hook: LoadedHook, q: Query, reply: Reply,
                      verdict: object) -> tuple[Reply, bool]:
    """The reply after one on_response verdict, and whether it ends the chain."""
    if verdict is None or verdict is hooks.Continue or isinstance(verdict, hooks.Continue):
        return reply, False
    if q.trace is not None:
        q.note(f"hook {hook.name}: on_response returned {verdict!r}")
    if isinstance(verdict, hooks.Replace):
        return _replaced(hook, q, reply, verdict), False
    if isinstance(verdict, hooks.Block):
        text = verdict.text or f"blocked by hook {hook.name}"
        return error_reply(q, verdict.rcode, wire.Ede.BLOCKED, text, by="hook"), True
    if verdict is hooks.Drop or isinstance(verdict, hooks.Drop):
        return DROP, True
    raise calls.invalid(hook, "on_response",
                   f"returned {_kind(verdict)}; expected {RESPONSE_VERDICTS}")


def _replaced(hook: LoadedHook, q: Query, reply: Reply, verdict: hooks.Replace) -> Reply:
    rcode = reply.rcode if verdict.rcode is None else verdict.rcode
    records, authority, additional = verdict._wire
    try:
        data = message.build_answer(q, records, rcode, authority, additional)  # type: ignore[arg-type]
    except ValueError as e:
        raise calls.invalid(hook, "on_response", f"Replace cannot be sent: {e}") from None
    ede = (verdict.ede,) if verdict.ede is not None else ()
    return Reply(data, rcode, "hook", ede)  # type: ignore[arg-type]


def _kind(value: object) -> str:
    if value is None:
        return "None"
    if isinstance(value, type):
        return f"the class {value.__name__}"
    return type(value).__name__


def build(cfg: model.Config, router: Router, groups: Mapping[str, Any],
          judge: Judge | None = None) -> HookChain | None:
    """The chain of hooks *cfg* names (None when there are none), whose answers *judge*
    judges. Raises ConfigError when a hook file cannot be loaded."""
    if not cfg.hooks:
        return None
    return HookChain(load_hooks(cfg), router, groups, judge)


def check(cfg: model.Config) -> int:
    """Loads the hook files of *cfg* (as a reload would) and answers how many there are.
    Raises ConfigError when one cannot be loaded."""
    if not cfg.hooks:
        return 0
    return len(load_hooks(cfg))
