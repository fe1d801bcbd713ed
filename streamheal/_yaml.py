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

_VARIABLE = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
)


class _LineLoader(yaml.SafeLoader):
    """A safe loader that keeps the start mark of every node it builds."""


def _compose_with_lines(text: str) -> tuple[Any, dict[Path, int]]:
    loader = _LineLoader(text)
    try:
        root = loader.get_single_node()
        lines: dict[Path, int] = {}
        if root is not None:
            _collect_lines(root, (), lines)
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return data, lines


def _collect_lines(node: yaml.Node, path: Path, lines: dict[Path, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[(*path, key)] = key_node.start_mark.line + 1
            _collect_lines(value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _collect_lines(item, (*path, index), lines)


def find_duplicate_keys(text: str, source: str) -> list[RuleFileProblem]:
    """A key given twice in one mapping: YAML would silently keep the last."""
    problems: list[RuleFileProblem] = []

    def walk(node: yaml.Node, path: Path) -> None:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key, line = key_node.value, key_node.start_mark.line + 1
                if key in first_line:
                    problems.append(
                        RuleFileProblem(
                            source,
                            line,
                            format_path((*path, key)),
                            f"is given twice (first on line {first_line[key]}); "
                            "only one is allowed.",
                        )
                    )
                first_line.setdefault(key, line)
                walk(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    loader = _LineLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            walk(root, ())
    finally:
        loader.dispose()
    return problems


def load_yaml_with_lines(
    text: str, source: str
) -> tuple[Any, dict[Path, int], list[RuleFileProblem]]:
    """Parse YAML text; return the data, key lines and any syntax problem."""
    try:
        data, lines = _compose_with_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        return None, {}, [RuleFileProblem(source, line, "(syntax)", f"{problem}.")]
    return data, lines, []


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
