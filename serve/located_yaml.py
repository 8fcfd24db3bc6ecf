"""YAML loading that remembers the line of every key and list item.

PyYAML's composer keeps a start mark on every node; walking the node tree once gives a
map from a value's path (("models", 2, "tier")) to its 1-based line, so validation errors
can name the line a person has to edit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from serve.problems import ConfigError, LineMap, Path_, Problem, format_path


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader used for both composing and constructing, so both see the same document."""


def _walk(node: yaml.Node, path: Path_, lines: LineMap, file: str, problems: list[Problem]) -> None:
    lines.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                where = (*path, key)
                problems.append(
                    Problem(file, line, format_path(where), f"duplicate key {key!r}: keep only one of them")
                )
                continue
            seen.add(key)
            lines.lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, file, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, file, problems)


def load_text(text: str, file: str) -> tuple[Any, LineMap]:
    """Parse YAML text; syntax errors and duplicate keys become a ConfigError naming file and line."""
    try:
        node = yaml.compose(text, Loader=_StrictLoader)
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = (error.problem or str(error)).strip()
        raise ConfigError([Problem(file, line, "(yaml)", f"invalid YAML: {reason}; fix the syntax")]) from None
    except yaml.YAMLError as error:
        raise ConfigError([Problem(file, 1, "(yaml)", f"invalid YAML: {error}")]) from None
    lines = LineMap()
    problems: list[Problem] = []
    if node is not None:
        _walk(node, (), lines, file, problems)
    if problems:
        raise ConfigError(problems)
    return data, lines


def load_file(path: Path) -> tuple[Any, LineMap]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [Problem(str(path), 1, "(file)", "file not found: create it or pass the right path")]
        ) from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            [Problem(str(path), 1, "(file)", f"not UTF-8 text ({error.reason}); save it as UTF-8")]
        ) from None
    return load_text(text, str(path))
