"""The fuzzing harness: a forwarder and its fake upstream on an event loop of their own
thread (hypothesis drives tests synchronously), the mutations applied to real messages,
and how many examples a run tries.

tests/e2e/test_fuzz_client.py and tests/e2e/test_fuzz_upstream.py are the targets; they
run a few hundred examples in the default suite, and scripts/fuzz.py runs them for as long
and as many examples as asked (FORWARDER_FUZZ_EXAMPLES, FORWARDER_FUZZ_SECONDS).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from forwarder import config as config_mod
from forwarder.server import Server
from tests.fakes import FakeUpstream

EXAMPLES = int(os.environ.get("FORWARDER_FUZZ_EXAMPLES", "150"))
SECONDS = float(os.environ.get("FORWARDER_FUZZ_SECONDS", "0"))  # 0: no time limit
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck), derandomize=False)


class TimeBox:
    """Ends one fuzz test's long run on time: the examples drawn more than
    FORWARDER_FUZZ_SECONDS after its first are skipped."""

    def __init__(self) -> None:
        self.end: float | None = None
        self.tried = 0

    def over(self) -> bool:
        if self.end is None:
            self.end = time.monotonic() + SECONDS if SECONDS else float("inf")
        if time.monotonic() > self.end:
            return True
        self.tried += 1
        return False


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed, as `forwarder run` uses."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class ServerThread:
    """A forwarder and one FakeUpstream serving on their own event loop in a thread."""

    def __init__(self, make_config: Callable[[str], dict[str, Any]]) -> None:
        self.make_config = make_config
        self.loop = _new_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-server",
                                       daemon=True)
        self.upstream: FakeUpstream | None = None
        self.server: Server | None = None

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> ServerThread:
        self.thread.start()

        async def start() -> None:
            self.upstream = FakeUpstream()
            await self.upstream.__aenter__()
            cfg = config_mod.from_data(self.make_config(self.upstream.addr), "<fuzz>")
            self.server = Server(cfg)
            await self.server.start()

        self.run(start())
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self.server is not None:
                await self.server.stop(deadline=2.0)
            if self.upstream is not None:
                await self.upstream.__aexit__(None, None, None)

        try:
            self.run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()

    def address(self, transport: str) -> tuple[str, int]:
        assert self.server is not None
        return self.server.address(transport)


# --- mutations -------------------------------------------------------------------------------

FLIP, SET, INSERT, DELETE, TRUNCATE = range(5)

mutations = st.lists(
    st.tuples(st.sampled_from([FLIP, SET, INSERT, DELETE, TRUNCATE]),
              st.integers(0, 1023), st.integers(0, 255)),
    min_size=1, max_size=8)


def mutate(data: bytes, steps: list[tuple[int, int, int]], start: int = 0) -> bytes:
    """Applies *steps* (from `mutations`) to *data* at or after offset *start*: bit flips,
    byte sets, insertions, deletions and truncations."""
    out = bytearray(data)
    for op, where, value in steps:
        span = len(out) - start
        if span <= 0:
            out += bytes([value])
            continue
        at = start + where % span
        if op == FLIP:
            out[at] ^= 1 << (value % 8)
        elif op == SET:
            out[at] = value
        elif op == INSERT:
            out[at:at] = bytes([value]) * (1 + value % 4)
        elif op == DELETE:
            del out[at : at + 1 + value % 8]
        else:
            del out[at:]
    return bytes(out)
