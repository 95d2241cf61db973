"""The exception tree: what can go wrong with input, upstreams, hooks and configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class ForwarderError(Exception):
    """Root of every error the forwarder raises on purpose."""


class DropPacket(ForwarderError):
    """The datagram cannot be answered at all (too short, or a response): drop it, count it."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class FormError(ForwarderError):
    """The header is readable but the rest of the message is malformed: answer FORMERR."""

    def __init__(self, reason: str, kind: str = "formerr") -> None:
        super().__init__(reason)
        self.kind = kind


class StartError(ForwarderError):
    """A part of the server cannot start (the metrics port is taken): the message says
    which and why, on one line; the process exits 1, as for a DNS port in use."""


class UpstreamError(ForwarderError):
    """Every try of an upstream group failed; carries the Extended DNS Error to send."""

    def __init__(self, ede_code: int, text: str) -> None:
        super().__init__(text)
        self.ede_code = ede_code
        self.text = text


class HookError(ForwarderError):
    """An operator's hook raised, overran its time limit, or returned something invalid."""

    def __init__(self, hook: str, kind: str, text: str) -> None:
        super().__init__(text)
        self.hook = hook
        self.kind = kind
        self.text = text


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in a configuration file: where it is and what is wrong."""

    path: str  # the field, as `zones[2].upstream`; "" for the file as a whole
    reason: str
    line: int = 0  # 1-based; 0 when not known (data that did not come from a file)
    column: int = 0
    at_key: bool = False  # the key itself is wrong (unknown, duplicate), not its value

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason

    def where(self, source: str) -> str:
        """`FILE:LINE:COLUMN`, or `FILE` when the position is not known."""
        return f"{source}:{self.line}:{self.column}" if self.line else source


class Locator(Protocol):
    """Gives a problem its line and column (`config.source.Positions`)."""

    def locate(self, problem: ConfigProblem) -> ConfigProblem: ...


class ConfigError(ForwarderError):
    """A configuration file is invalid; lists every problem found, each with its field path
    and, given *positions*, its line and column, in file order."""

    def __init__(self, source: str, problems: list[ConfigProblem],
                 positions: Locator | None = None) -> None:
        if positions is not None:
            located = [positions.locate(p) for p in problems]
            problems = sorted(located, key=lambda p: (p.line, p.column))
        self.source = source
        self.problems = tuple(problems)
        super().__init__(self.render())

    def lines(self) -> list[str]:
        """One line per problem: `FILE:LINE:COLUMN: field.path: reason`."""
        return [f"{p.where(self.source)}: {p}" for p in self.problems]

    def render(self) -> str:
        return "\n".join(self.lines())
