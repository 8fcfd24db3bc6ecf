"""The repository's input files (the catalog and the stack files) as tests read, copy and break them.

- `raw_config` / `raw_catalog` read a file as written, with plain PyYAML and none of the
  project's own loading code, so a test can compare the project's reading with the file;
- `copy_inputs` copies the catalog and every stack file into a temporary root;
- the mutations (`sub`, `drop_line`, `tier_block`, ...) break a file's text in one way; each
  asserts that what it edits is there, so a mutation never silently changes nothing.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import yaml

from infra.settings import AUTOSCALING_KEY, TIERS_KEY, stack_file
from serve.paths import CATALOG_FILE_NAME, REPO_ROOT

STACKS: Final = ("dev", "prod")

Text = str | bytes
Mutation = Callable[[str], Text]


def raw_config(stack: str, root: Path = REPO_ROOT) -> dict[str, Any]:
    """The stack file's `config:` mapping as written."""
    config: dict[str, Any] = yaml.safe_load(stack_file(stack, root).read_text(encoding="utf-8"))["config"]
    return config


def raw_catalog(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The catalog file as written."""
    catalog: dict[str, Any] = yaml.safe_load((root / CATALOG_FILE_NAME).read_text(encoding="utf-8"))
    return catalog


def enabled_tiers(stack: str) -> set[str]:
    return {name for name, tier in raw_config(stack)[TIERS_KEY].items() if tier["enabled"]}


def copy_inputs(root: Path) -> Path:
    """Copy the catalog and every stack file into `root` (created if needed); returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / CATALOG_FILE_NAME, root / CATALOG_FILE_NAME)
    for stack in STACKS:
        shutil.copy(stack_file(stack), stack_file(stack, root))
    return root


def find_line(text: str, needle: str, nth: int = 1) -> int:
    """The 1-based number of the `nth` line of `text` containing `needle`."""
    hits = [number for number, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) >= nth, f"{needle!r} (occurrence {nth}) is not in the written file:\n{text}"
    return hits[nth - 1]


# --- mutations of a file's text --------------------------------------------------------------


def sub(old: str, new: str, nth: int = 1) -> Mutation:
    """Replace the `nth` occurrence of `old` (which must exist)."""

    def apply(text: str) -> str:
        start = -1
        for _ in range(nth):
            start = text.find(old, start + 1)
            assert start >= 0, f"{old!r} (occurrence {nth}) not in the shipped file"
        return text[:start] + new + text[start + len(old) :]

    return apply


def chain(*steps: Mutation) -> Mutation:
    def apply(text: str) -> Text:
        out: Text = text
        for step in steps:
            assert isinstance(out, str)
            out = step(out)
        return out

    return apply


def append(extra: str) -> Mutation:
    return lambda text: text + extra


def const(content: Text) -> Mutation:
    return lambda _text: content


def keep(text: str) -> str:
    """No change: for cases whose stack file is intact and whose catalog is changed instead."""
    return text


def edit(change: Callable[[Any], Any]) -> Mutation:
    """Load the YAML, change the data (in place or by returning a new value), dump it again."""

    def apply(text: str) -> str:
        data = yaml.safe_load(text)
        result = change(data)
        return yaml.safe_dump(data if result is None else result, sort_keys=False)

    return apply


def drop_line(needle: str, nth: int = 1) -> Mutation:
    """Delete the nth line that contains `needle`."""

    def apply(text: str) -> str:
        lines = text.splitlines(keepends=True)
        hits = [i for i, line in enumerate(lines) if needle in line]
        assert len(hits) >= nth, f"{needle!r} (occurrence {nth}) not in the shipped file"
        del lines[hits[nth - 1]]
        return "".join(lines)

    return apply


def drop_block(header: str, nth: int = 1) -> Mutation:
    """Delete the nth line containing `header` and the more-indented lines under it."""

    def apply(text: str) -> str:
        lines = text.splitlines(keepends=True)
        hits = [i for i, line in enumerate(lines) if header in line]
        assert len(hits) >= nth, f"{header!r} (occurrence {nth}) not in the shipped file"
        start = hits[nth - 1]
        indent = len(lines[start]) - len(lines[start].lstrip())
        end = start + 1
        while end < len(lines) and (
            not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
        ):
            end += 1
        return "".join(lines[:start] + lines[end:])

    return apply


def tier_block(tier: str, key: str, value: str) -> Mutation:
    """Replace the line `key: <anything>` inside the given tier's block of a stack file.

    The replacement must change the text: setting a key to the value it already has is refused.
    """

    def apply(text: str) -> str:
        start = text.index(f"\n    {tier}:\n")
        end = text.find("\n    ", start + 1)
        while end >= 0 and text[end + 5] == " ":
            end = text.find("\n    ", end + 1)
        block_end = end if end >= 0 else len(text)
        block = text[start:block_end]
        changed = re.sub(rf"(\n      ){re.escape(key)}:[^\n]*", rf"\g<1>{value}", block, count=1)
        assert changed != block, f"{key} not in tier {tier}, or already `{value}`"
        return text[:start] + changed + text[block_end:]

    return apply


def scaling(key: str, value: str) -> Mutation:
    """Replace the line `key: <anything>` of the autoscaling block (the only keys indented by 4)."""

    def apply(text: str) -> str:
        changed = re.sub(rf"\n    {re.escape(key)}: [^\n]*", f"\n    {value}", text, count=1)
        assert changed != text, f"{key} not in the {AUTOSCALING_KEY} block, or already `{value}`"
        return changed

    return apply
