"""Reading a configuration file's YAML: the data, where each field is, and duplicate keys.

`read(text)` answers the loaded data, the `Positions` of every field path (the paths
problems name: `zones[2].upstream`, `upstreams.corp.servers[0]`), and a problem for
each key given twice in one mapping (YAML would silently keep the last one). `Positions`
gives every problem its `line:column`, also problems found after loading (a hook file,
a hosts file): a path with no position of its own takes its nearest parent's.
`beside(source, path)` is where a path the file names lies (relative to the file).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from forwarder.errors import ConfigProblem

Mark = tuple[int, int]  # 1-based line and column

MERGE_TAG = "tag:yaml.org,2002:merge"
MAX_NODES = 200_000  # aliases can multiply a small file's nodes; past this, parents answer


@dataclass(frozen=True, slots=True)
class Positions:
    """Where each field path is in the file: its value (or, for a block below its key,
    the key) and, for mapping entries, its key."""

    values: dict[str, Mark] = dataclasses.field(default_factory=dict)
    keys: dict[str, Mark] = dataclasses.field(default_factory=dict)

    def of(self, path: str, at_key: bool = False) -> Mark | None:
        """The position of *path*, or of its nearest parent that has one; None when
        nothing is known (data that did not come from a file)."""
        if at_key and path in self.keys:
            return self.keys[path]
        while path not in self.values:
            if not path:
                return None
            path = path[:max(path.rfind("."), path.rfind("["), 0)]
        return self.values[path]

    def locate(self, problem: ConfigProblem) -> ConfigProblem:
        """*problem* with its line and column filled in (when known and not yet given)."""
        if problem.line:
            return problem
        mark = self.of(problem.path, problem.at_key)
        if mark is None:
            return problem
        return dataclasses.replace(problem, line=mark[0], column=mark[1])


def beside(source: str, path: str) -> str:
    """*path* as a configuration file read from *source* names it: relative to that file's
    directory (the working directory for data that did not come from a file, such as
    `<test>`), `~` expanded."""
    base = os.path.dirname(os.path.abspath(source)) if source and not source.startswith(
        "<") else os.getcwd()
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def read(text: str) -> tuple[Any, Positions, list[ConfigProblem]]:
    """Loads *text* (one YAML document, safe tags only). Answers the data, the positions
    and the duplicate-key problems. Raises yaml.YAMLError."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        positions = Positions()
        walker = _Walker(positions)
        if node is None:
            return None, positions, []
        positions.values[""] = _mark(node)
        walker.walk(node, "")  # before constructing: that flattens `<<` merges in place
        return loader.construct_document(node), positions, list(walker.problems.values())
    finally:
        loader.dispose()


def _mark(node: Node) -> Mark:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Walker:
    """Records the position of every field path below a node, and duplicate keys."""

    def __init__(self, positions: Positions) -> None:
        self.positions = positions
        self.problems: dict[Mark, ConfigProblem] = {}  # an anchor walked twice reports once
        self.nodes = 0
        self.active: set[int] = set()  # mappings and lists being walked (recursive aliases)

    def walk(self, node: Node, path: str, merged: bool = False) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES or id(node) in self.active:
            return
        if isinstance(node, MappingNode):
            self.active.add(id(node))
            self._mapping(node, path, merged)
            self.active.discard(id(node))
        elif isinstance(node, SequenceNode):
            self.active.add(id(node))
            for i, item in enumerate(node.value):
                self._record(self.positions.values, f"{path}[{i}]", _mark(item), merged)
                self.walk(item, f"{path}[{i}]", merged)
            self.active.discard(id(node))

    def _mapping(self, node: MappingNode, path: str, merged: bool) -> None:
        seen: dict[str, Mark] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                merges.append(value_node)
                continue
            key = str(key_node.value) if isinstance(key_node, ScalarNode) else "?"
            child = f"{path}.{key}" if path else key
            key_mark = _mark(key_node)
            if key in seen and not merged:
                self.problems.setdefault(key_mark, ConfigProblem(
                    child, f"duplicate key: {key!r} is also defined at line {seen[key][0]}, "
                    f"column {seen[key][1]}; YAML would keep only the last one, so merge the "
                    "two or remove one",
                    key_mark[0], key_mark[1], at_key=True))
            seen[key] = key_mark
            same_line = value_node.start_mark.line == key_node.start_mark.line
            # a block below its key: the key is where the entry is
            self._record(self.positions.keys, child, key_mark, merged)
            self._record(self.positions.values, child,
                         _mark(value_node) if same_line else key_mark, merged)
            self.walk(value_node, child, merged)
        for value_node in merges:  # `<<: *base`: keys given here win over the merged ones
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                self.walk(source, path, merged=True)

    @staticmethod
    def _record(table: dict[str, Mark], path: str, mark: Mark, merged: bool) -> None:
        if merged:
            table.setdefault(path, mark)
        else:
            table[path] = mark
