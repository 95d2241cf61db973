"""The suite runs where the forwarder runs: async tests on uvloop when it is installed (the
loop `forwarder run` picks), and modules marked `both_loops` on the default asyncio loop as
well (the fallback when uvloop is missing)."""

from __future__ import annotations

import asyncio

import pytest

uvloop = pytest.importorskip("uvloop")


async def test_async_tests_run_on_uvloop() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


@pytest.mark.both_loops
async def test_both_loops_marker_adds_a_run_on_the_default_loop(
        request: pytest.FixtureRequest) -> None:
    on_uvloop = isinstance(asyncio.get_running_loop(), uvloop.Loop)
    assert request.node.name.endswith("[uvloop]" if on_uvloop else "[asyncio]")
