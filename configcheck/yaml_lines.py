"""YAML loading that remembers the line of every key and list item.

PyYAML's composer keeps a start mark on every node; walking the node tree once gives a
map from a value's path (("models", 2, "tier")) to its 1-based line, so validation errors
can name the line a person has to edit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import yaml

from configcheck.problems import ConfigError, LineMap, Path_, Problem, format_path


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


# Parser contexts that name where an unclosed construct was opened: that line is the one to edit.
_OPENED_AT: Final = ("flow sequence", "flow mapping", "quoted scalar")


def _hint(problem: str, context: str) -> str:
    """How to fix the syntax error PyYAML describes as `problem` (inside `context`)."""
    if "\t" in problem or "'\\t'" in problem:
        return "indent with spaces, not tabs"
    if "quoted scalar" in context:
        return "close the quote"
    if "expected ',' or ']'" in problem:
        return "close the '[' with ']' or separate the items with ','"
    if "expected ',' or '}'" in problem:
        return "close the '{' with '}' or separate the entries with ','"
    if "undefined alias" in problem:
        return "define the anchor first (&name) or quote a value that starts with '*'"
    if "mapping values are not allowed" in problem or "expected <block end>" in problem:
        return (
            "check the indentation (the keys of one mapping start in the same column) "
            "and quote values that contain ': '"
        )
    if "could not find expected ':'" in problem:
        return "write each entry as `key: value` and check the indentation"
    return "fix the syntax"


def _syntax_problem(error: yaml.MarkedYAMLError, file: str, last_line: int) -> Problem:
    problem = (error.problem or "").strip() or str(error).strip()
    context = (error.context or "").strip()
    # PyYAML places end-of-file errors on the line after the last one: keep lines in the file.
    problem_line = min(error.problem_mark.line + 1, last_line) if error.problem_mark is not None else None
    context_line = min(error.context_mark.line + 1, last_line) if error.context_mark is not None else None
    line = problem_line or context_line or 1
    where = ""
    if context and context_line is not None:
        if any(opener in context for opener in _OPENED_AT):
            line = context_line  # an unclosed bracket or quote: point at where it was opened
            if problem_line is not None and problem_line != context_line:
                where = f" (noticed on line {problem_line})"
        elif context_line != line:
            where = f" ({context} that starts on line {context_line})"
    return Problem(file, line, "(yaml)", f"invalid YAML: {problem}{where}; {_hint(problem, context)}")


def load_text(text: str, file: str) -> tuple[Any, LineMap]:
    """Parse YAML text; syntax errors and duplicate keys become a ConfigError naming file and line."""
    try:
        node = yaml.compose(text, Loader=_StrictLoader)
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as error:
        raise ConfigError([_syntax_problem(error, file, max(1, len(text.splitlines())))]) from None
    except yaml.YAMLError as error:
        raise ConfigError([Problem(file, 1, "(yaml)", f"invalid YAML: {error}; fix the syntax")]) from None
    lines = LineMap()
    problems: list[Problem] = []
    if node is not None:
        _walk(node, (), lines, file, problems)
    if problems:
        raise ConfigError(problems)
    return data, lines


def load_file(path: Path) -> tuple[Any, LineMap]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            [Problem(str(path), 1, "(file)", "file not found: create it or pass the right path")]
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            [Problem(str(path), 1, "(file)", "is a directory, not a YAML file: pass the file's path")]
        ) from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(
            [Problem(str(path), 1, "(file)", f"cannot be read ({reason}): check the path and permissions")]
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        byte = raw[error.start : error.start + 1].hex()
        raise ConfigError(
            [
                Problem(
                    str(path),
                    line,
                    "(file)",
                    f"not UTF-8 text (byte 0x{byte}: {error.reason}); save the file as UTF-8",
                )
            ]
        ) from None
    return load_text(text, str(path))
