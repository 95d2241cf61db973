"""The young-generation collector service: it collects on its own while the server idles,
and freezes what exists at start until a reload or the stop."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from forwarder.process.collector import YoungCollector


@pytest.fixture
def no_automatic_collections() -> Iterator[None]:
    """Automatic collections off, so that any collection seen comes from the service."""
    old = gc.get_threshold()
    gc.set_threshold(1_000_000_000, 1_000_000_000, 1_000_000_000)
    try:
        yield
    finally:
        gc.set_threshold(*old)


async def test_young_generations_are_collected_while_idle(no_automatic_collections: None,
                                                          ) -> None:
    collected = asyncio.Event()
    generations: list[int] = []

    def seen(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop":
            generations.append(info["generation"])
            collected.set()

    gc.callbacks.append(seen)
    collector = YoungCollector(interval=0.01)
    try:
        await collector.start()
        await asyncio.wait_for(collected.wait(), 5)
    finally:
        await collector.stop()
        gc.callbacks.remove(seen)
    assert generations[0] == 1


async def test_freezes_from_start_until_reload_or_stop() -> None:
    collector = YoungCollector()
    try:
        await collector.start()
        assert gc.get_freeze_count() > 0
        collector.reloaded(False)  # a rejected reload keeps the running configuration
        assert gc.get_freeze_count() > 0
        collector.reloaded(True)
        assert gc.get_freeze_count() == 0
        await collector.stop()
        await collector.start()
        assert gc.get_freeze_count() > 0
    finally:
        await collector.stop()
    assert gc.get_freeze_count() == 0


async def test_frozen_while_any_server_in_the_process_serves() -> None:
    """Several servers in one process (tests, `forwarder lab`): the stop of one leaves the
    others frozen; the reload callbacks come and go with each collector."""
    first_reloads: list[object] = []
    second_reloads: list[object] = []
    first = YoungCollector(on_reload=first_reloads)
    second = YoungCollector(on_reload=second_reloads)
    try:
        await first.start()
        await second.start()
        assert len(first_reloads) == len(second_reloads) == 1
        await second.stop()
        assert second_reloads == []
        assert gc.get_freeze_count() > 0
    finally:
        await first.stop()
        await second.stop()
    assert first_reloads == []
    assert gc.get_freeze_count() == 0
