"""The located-problem toolkit shared by the catalog and the stack files (`configcheck`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import yaml
from helpers.stack_files import copy_inputs

from configcheck.problems import ConfigError, Problem
from configcheck.secrets import REDACTED, redact
from infra.plan import build_plan_for_stack
from infra.settings import stack_file
from serve.catalog import main as catalog_main
from serve.paths import CATALOG_FILE_NAME, REPO_ROOT

DEV_STACK_FILE: Final = stack_file("dev").name

# Shaped like a real Hugging Face token (hf_ + 34 letters and digits); not a real one.
TOKEN: Final = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567"


def test_a_problem_never_carries_a_token() -> None:
    problem = Problem("f.yaml", 3, f"config.{TOKEN}", f"{TOKEN!r} is not a GCP zone name")
    assert TOKEN not in str(problem)
    assert str(problem) == f"f.yaml:3: config.{REDACTED}: '{REDACTED}' is not a GCP zone name"


def test_redaction_leaves_ordinary_text_alone() -> None:
    text = "hf_token is missing; hf_short is not a token; run pulumi config set --secret"
    assert redact(text) == text


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every scalar and every mapping key (as (*path, KEY, key)) in a document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, "KEY", key)
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path


def _with_token(document: Any, path: tuple[Any, ...]) -> Any:
    """A copy of `document` with the value (or the key) at `path` replaced by the token."""
    if not path:
        return TOKEN
    if path[0] == "KEY":
        return {(TOKEN if key == path[1] else key): item for key, item in document.items()}
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        return {key: _with_token(item, rest) if key == head else item for key, item in document.items()}
    return [_with_token(item, rest) if index == head else item for index, item in enumerate(document)]


def _places(file_name: str) -> list[tuple[Any, ...]]:
    return list(_leaves(yaml.safe_load((REPO_ROOT / file_name).read_text())))


def _messages_with_token(tmp_path: Path, file_name: str, path: tuple[Any, ...]) -> str:
    copy_inputs(tmp_path)
    target = tmp_path / file_name
    target.write_text(yaml.safe_dump(_with_token(yaml.safe_load(target.read_text()), path)))
    try:
        build_plan_for_stack("dev", tmp_path)
    except ConfigError as error:
        return str(error)
    return ""


@pytest.mark.parametrize("path", _places(DEV_STACK_FILE), ids=str)
def test_no_stack_file_message_echoes_a_pasted_token(tmp_path: Path, path: tuple[Any, ...]) -> None:
    messages = _messages_with_token(tmp_path, DEV_STACK_FILE, path)
    assert messages, f"a token at {path} was accepted"
    assert TOKEN not in messages


@pytest.mark.parametrize("path", _places(CATALOG_FILE_NAME), ids=str)
def test_no_catalog_message_echoes_a_pasted_token(
    tmp_path: Path, path: tuple[Any, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    messages = _messages_with_token(tmp_path, CATALOG_FILE_NAME, path)
    catalog_main(["check", str(tmp_path / CATALOG_FILE_NAME)])
    printed = capsys.readouterr()
    assert TOKEN not in messages + printed.out + printed.err
