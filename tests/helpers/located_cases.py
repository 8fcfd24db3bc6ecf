"""Data-driven bad-input cases and the runner that checks what a person sees.

A case copies the shipped catalog and stack files into a temporary directory, breaks one of
them (or several things at once), and checks every printed problem:

- catalog cases run the real `python -m serve.catalog check PATH` entry point (`main([...])`):
  it must exit 1 and print only `FILE:LINE: field.path: message` lines plus the count;
- stack cases go through `infra.plan.build_plan_for_stack` (what the plan report and the
  Pulumi program call): a `ConfigError` whose every line has that same form;
- the line is the real line of the offending key or value in the file as written (computed
  from the written text, never hard-coded), the field path names the key, and the message
  says how to fix it; no traceback anywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest

from configcheck.problems import ConfigError
from helpers.stack_files import Mutation, Text, copy_inputs, find_line
from infra.plan import build_plan_for_stack
from infra.settings import AUTOSCALING_KEY, TIERS_KEY, stack_file
from serve.catalog import main as catalog_main
from serve.paths import CATALOG_FILE_NAME

# The field of a problem: a dotted/indexed key path (keys may be `namespace:name`) or a
# parenthesised pseudo-field for problems that are not about one key.
FIELD: Final = r"\((?:yaml|file|document)\)|[\w-]+(?::[\w-]+)?(?:\.[\w-]+(?::[\w-]+)?|\[\d+\])*"
CATALOG: Final = "catalog"
TIERS: Final = f"config.{TIERS_KEY}"
SCALING: Final = f"config.{AUTOSCALING_KEY}"
MISSING: Final = ("required field", "is missing", "add")


@dataclass(frozen=True)
class Expect:
    """One problem line that must be printed.

    `at`: the problem's line is the `nth` line of the written file containing this text;
    `line`: an explicit line (for bytes that are not text); neither: any line in the file.
    """

    field: str
    words: tuple[str, ...]
    at: str | None = None
    nth: int = 1
    line: int | None = None


@dataclass(frozen=True)
class Case:
    id: str
    target: str  # CATALOG, or the stack whose file is mutated
    mutate: Mutation | None  # None: the file does not exist
    expects: tuple[Expect, ...]
    min_problems: int = 1
    max_problems: int | None = None
    catalog: Mutation | None = field(default=None)  # a stack case may also change the catalog


def E(field: str, *words: str, at: str | None = None, nth: int = 1, line: int | None = None) -> Expect:
    return Expect(field=field, words=words, at=at, nth=nth, line=line)


def missing(field_path: str, key: str, at: str, nth: int = 1) -> Expect:
    return E(field_path, *MISSING, f"'{key}'", at=at, nth=nth)


def C(id: str, mutate: Mutation | None, *expects: Expect, min_problems: int = 1) -> Case:
    """A catalog case."""
    return Case(id=id, target=CATALOG, mutate=mutate, expects=expects, min_problems=min_problems)


def S(
    id: str,
    mutate: Mutation | None,
    *expects: Expect,
    stack: str = "dev",
    min_problems: int = 1,
    max_problems: int | None = None,
    catalog: Mutation | None = None,
) -> Case:
    """A stack-file case (optionally with a changed catalog too)."""
    return Case(
        id=id,
        target=stack,
        mutate=mutate,
        expects=expects,
        min_problems=min_problems,
        max_problems=max_problems,
        catalog=catalog,
    )


def ids(cases: list[Case]) -> list[str]:
    return [case.id for case in cases]


def written(case: Case, root: Path) -> tuple[Path, Text | None]:
    """Write the case's files into `root`: (the mutated file's path, what was written to it)."""
    copy_inputs(root)
    if case.catalog is not None:
        catalog = root / CATALOG_FILE_NAME
        content = case.catalog(catalog.read_text(encoding="utf-8"))
        assert isinstance(content, str)
        catalog.write_text(content, encoding="utf-8")
    path = root / CATALOG_FILE_NAME if case.target == CATALOG else stack_file(case.target, root)
    if case.mutate is None:
        path.unlink()
        return path, None
    content = case.mutate(path.read_text(encoding="utf-8"))
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path, content


def problem_lines(case: Case, path: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """What the person sees: the CLI's stderr (catalog) or the plan's ConfigError (stacks)."""
    if case.target == CATALOG:
        code = catalog_main(["check", str(path)])
        out = capsys.readouterr()
        assert code == 1, f"check accepted a bad catalog:\n{out.out}"
        assert "Traceback" not in out.err + out.out
        assert "models OK" not in out.out
        *lines, summary = out.err.splitlines()
        assert summary == f"{path}: {len(lines)} problem{'s' if len(lines) != 1 else ''}"
        return lines
    with pytest.raises(ConfigError) as raised:
        build_plan_for_stack(case.target, root=root)
    text = str(raised.value)
    assert "Traceback" not in text
    return text.splitlines()


def parse(line: str, path: Path) -> tuple[int, str, str]:
    """(line, field, message) of one `FILE:LINE: field.path: message` problem line about `path`."""
    match = re.fullmatch(rf"{re.escape(str(path))}:(\d+): ({FIELD}): (\S.*)", line)
    assert match, f"not `FILE:LINE: field.path: message` for {path}: {line!r}"
    return int(match.group(1)), match.group(2), match.group(3)


def check_case(case: Case, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Write the case under `root` and check every problem line a person would see."""
    path, content = written(case, root)
    lines = problem_lines(case, path, root, capsys)
    assert len(lines) >= max(case.min_problems, len(case.expects)), "\n".join(lines)
    if case.max_problems is not None:
        assert len(lines) <= case.max_problems, "\n".join(lines)

    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content or ""
    line_count = max(1, len(text.splitlines()))
    parsed = [parse(line, path) for line in lines]
    for number, _field, message in parsed:
        assert 1 <= number <= line_count, f"line {number} is outside the file ({line_count} lines)"
        assert len(message) >= 10, message

    for expect in case.expects:
        line = expect.line
        if expect.at is not None:
            line = find_line(text, expect.at, expect.nth)
        hits = [
            (number, message)
            for number, field_path, message in parsed
            if field_path == expect.field and all(word in message for word in expect.words)
        ]
        assert hits, f"no problem on {expect.field} saying {expect.words}; got:\n" + "\n".join(lines)
        if line is not None:
            assert line in [number for number, _ in hits], (
                f"{expect.field} reported on line(s) {[n for n, _ in hits]}, expected line {line}:\n"
                + "\n".join(lines)
            )


def assert_distinct(cases: list[Case], at_least: int) -> None:
    """Case ids are unique (each is a test id) and there are at least `at_least` of them."""
    names = ids(cases)
    assert len(set(names)) == len(names), sorted(name for name in names if names.count(name) > 1)
    assert len(names) >= at_least
