"""Read YAML while remembering the line of every key, and expand ${VAR}.

Errors in a rule file must name the line, so the loader records, for each
path of keys and list indexes, the line where that node starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

from streamheal.errors import RuleFileProblem


Path = tuple[str | int, ...]

# `$${` stands for a literal `${` (a password holding one, say).
ESCAPED_OPENING = "$${"
_VARIABLE = re.compile(
    r"\$\$\{|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
)


# Far above any real rule file (the examples hold a few hundred values), far
# below what makes loading slow: nested aliases ("billion laughs") multiply.
MAX_EXPANDED_VALUES = 100_000


class _LineLoader(yaml.SafeLoader):
    """A safe loader that refuses aliases expanding to too many values.

    An alias is one node in the composed graph, but every walk over the
    document (line collection, ${VAR} expansion, validation) visits it once
    per reference, so the loader counts values with aliases expanded and stops
    at the alias that passes `MAX_EXPANDED_VALUES`.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._expanded_values = 0
        self._expanded_sizes: dict[int, int] = {}
        self._open_anchors: set[str] = set()

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML stubs
        if isinstance(event, yaml.AliasEvent):
            return self._compose_alias(event, parent, index)

        # An alias inside its own anchor's value would make every walk endless.
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._open_anchors.discard(anchor)
        self._expanded_values += 1

        return node

    def _compose_alias(
        self, event: yaml.AliasEvent, parent: yaml.Node | None, index: int
    ) -> yaml.Node | None:
        if event.anchor in self._open_anchors:
            raise _problem_at(
                event,
                f"the alias *{event.anchor} is inside the value it names; "
                "a rule file cannot refer to itself",
            )

        node = super().compose_node(parent, index)
        if node is not None:
            self._expanded_values += self._expanded_size(node)
        if self._expanded_values > MAX_EXPANDED_VALUES:
            raise _problem_at(
                event,
                f"aliases here expand to more than {MAX_EXPANDED_VALUES:,} values; "
                "a rule file this large is not supported",
            )

        return node

    def _expanded_size(self, node: yaml.Node) -> int:
        """How many values the node stands for with every alias in it expanded."""
        size = self._expanded_sizes.get(id(node))
        if size is not None:
            return size

        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        size = 1 + sum(self._expanded_size(child) for child in children)
        self._expanded_sizes[id(node)] = size

        return size


def _problem_at(event: yaml.Event, problem: str) -> yaml.YAMLError:
    # The pure-Python loader's marks are yaml.error.Mark; the stubs also allow
    # the C loader's.
    mark = event.start_mark if isinstance(event.start_mark, yaml.error.Mark) else None

    return yaml.composer.ComposerError(None, None, problem, mark)


# A key given twice: its path, its line, and the line it was first given on.
Duplicate = tuple[Path, int, int]


def _compose_with_lines(text: str) -> tuple[Any, dict[Path, int], list[Duplicate]]:
    loader = _LineLoader(text)
    try:
        root = loader.get_single_node()
        lines: dict[Path, int] = {}
        duplicates: list[Duplicate] = []
        if root is not None:
            _collect_lines(root, (), lines, duplicates)
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return data, lines, duplicates


def _collect_lines(
    node: yaml.Node, path: Path, lines: dict[Path, int], duplicates: list[Duplicate]
) -> None:
    """Note the line of every node, and every key given twice in one mapping."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in first_line:
                duplicates.append(((*path, key), line, first_line[key]))
            first_line.setdefault(key, line)
            _collect_lines(value_node, (*path, key), lines, duplicates)
            # The key's line, not its value's, names the field.
            lines[(*path, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _collect_lines(item, (*path, index), lines, duplicates)


def load_yaml_with_lines(
    text: str, source: str
) -> tuple[Any, dict[Path, int], list[RuleFileProblem], list[RuleFileProblem]]:
    """Parse YAML text; return the data, key lines, syntax and duplicate-key problems.

    A syntax problem leaves no data. A key given twice (YAML would silently
    keep the last) is reported beside whatever else the file gets wrong.
    """
    try:
        data, lines, duplicates = _compose_with_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        syntax = RuleFileProblem(source, line, "(syntax)", f"{problem}.")
        return None, {}, [syntax], []
    duplicate_keys = [
        RuleFileProblem(
            source,
            line,
            format_path(path),
            f"is given twice (first on line {first_line}); only one is allowed.",
        )
        for path, line, first_line in duplicates
    ]
    return data, lines, [], duplicate_keys


def expand_variables(
    data: Any,
    lines: Mapping[Path, int],
    source: str,
    environ: Mapping[str, str] | None = None,
    path: Path = (),
) -> tuple[Any, list[RuleFileProblem]]:
    """Replace ${VAR} and ${VAR:-default} in every string from the environment.

    `${VAR:-default}` takes the default when VAR is unset or empty, as the
    shell's `:-` does; `${VAR}` with VAR set to "" becomes "", and an unset
    `${VAR}` without a default is a problem naming file, line and field.
    """
    env = os.environ if environ is None else environ
    problems: list[RuleFileProblem] = []

    if isinstance(data, dict):
        result: dict[Any, Any] = {}
        for key, value in data.items():
            result[key], found = expand_variables(
                value, lines, source, env, (*path, key)
            )
            problems += found
        return result, problems

    if isinstance(data, list):
        items = []
        for index, value in enumerate(data):
            item, found = expand_variables(value, lines, source, env, (*path, index))
            items.append(item)
            problems += found
        return items, problems

    if not isinstance(data, str) or "${" not in data:
        return data, problems

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == ESCAPED_OPENING:
            return "${"
        name, default = match.group("name"), match.group("default")
        value = env.get(name)
        if default is not None:
            return value or default
        if value is not None:
            return value
        problems.append(
            RuleFileProblem(
                source,
                line_of(lines, path),
                format_path(path),
                f"the environment variable {name} is not set and has no default "
                f"(write ${{{name}:-default}} to give one).",
            )
        )
        return ""

    expanded = _VARIABLE.sub(substitute, data)
    if "${" in _VARIABLE.sub("", data):
        problems.append(
            RuleFileProblem(
                source,
                line_of(lines, path),
                format_path(path),
                "has a ${ without its closing }; write ${NAME} or ${NAME:-default}.",
            )
        )
    return expanded, problems


def line_of(lines: Mapping[Path, int], path: Path) -> int | None:
    """The line of the nearest node on the path that the loader saw."""
    for length in range(len(path), -1, -1):
        line = lines.get(tuple(path[:length]))
        if line is not None:
            return line
    return None


def format_path(path: Path) -> str:
    """Write a path as a reader would: rules[2].keys."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"
