"""Server selection policies: the order in which a group tries its servers for one query."""

from __future__ import annotations

import itertools
import random
from typing import Protocol

from forwarder.config.model import Selection


class ServerLike(Protocol):
    healthy: bool
    srtt: float


class Sequential:
    """Always in configuration order: the first server takes all load until it fails."""

    def order(self, servers: list[ServerLike]) -> list[ServerLike]:
        return servers  # callers never change an order: no copy per query


class RoundRobin:
    """Each query starts at the next server."""

    def __init__(self) -> None:
        self._next = itertools.count()

    def order(self, servers: list[ServerLike]) -> list[ServerLike]:
        start = next(self._next) % len(servers)
        return servers[start:] + servers[:start]


class Random:
    """A fresh random order per query."""

    def order(self, servers: list[ServerLike]) -> list[ServerLike]:
        return random.sample(servers, len(servers))


class Fastest:
    """Lowest smoothed round-trip time first."""

    def order(self, servers: list[ServerLike]) -> list[ServerLike]:
        return sorted(servers, key=lambda s: s.srtt)


POLICIES = {Selection.SEQUENTIAL: Sequential, Selection.ROUND_ROBIN: RoundRobin,
            Selection.RANDOM: Random, Selection.FASTEST: Fastest}


def build(selection: Selection) -> Sequential | RoundRobin | Random | Fastest:
    return POLICIES[selection]()


def healthy_first(ordered: list[ServerLike], skip_down: bool = False) -> list[ServerLike]:
    """Moves servers marked down behind the healthy ones, or with *skip_down* leaves them out
    while any server is up. Either way every server is tried when all are down."""
    for s in ordered:
        if not s.healthy:
            break
    else:
        return ordered  # the common case, without building a list
    up = [s for s in ordered if s.healthy]
    if not up:
        return ordered
    if skip_down:
        return up
    return up + [s for s in ordered if not s.healthy]
