"""Turn pydantic validation errors into located, actionable problems."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, TypeVar, Union

from pydantic import BaseModel, ValidationError

from serve.problems import ConfigError, LineMap, Path_, Problem, locate

ModelT = TypeVar("ModelT", bound=BaseModel)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model reached through Optional/list/dict/Annotated wrappers, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType, list, tuple, dict, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _model_at(root: type[BaseModel], path: Path_) -> type[BaseModel] | None:
    current: type[BaseModel] | None = root
    for part in path:
        if current is None:
            return None
        if isinstance(part, int):
            continue
        field = next(
            (f for name, f in current.model_fields.items() if part in (name, f.alias)),
            None,
        )
        if field is None:
            # A dict keyed by free names (tiers by tier name): stay on the value model.
            continue
        current = _model_in(field.annotation)
    return current


def allowed_keys(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def unknown_key_message(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
    return f"unknown key {key!r}; {hint}"


def _message(root: type[BaseModel], error: Any) -> str:
    kind, loc = error["type"], tuple(error["loc"])
    if kind == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        allowed = allowed_keys(parent) if parent is not None else []
        return unknown_key_message(str(loc[-1]), allowed)
    if kind == "missing":
        return "required field is missing: add it"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    elif "input" in error and not isinstance(error["input"], dict | list):
        message = f"{message} (got {error['input']!r})"
    return message


def validation_problems(
    model: type[ModelT], data: Any, file: str, lines: LineMap, prefix: Path_ = ()
) -> tuple[ModelT | None, list[Problem]]:
    """Validate `data` (found at `prefix` in the file) as `model`: the value, or its located problems."""
    try:
        return model.model_validate(data), []
    except ValidationError as errors:
        problems: list[Problem] = []
        for error in errors.errors(include_url=False):
            loc = tuple(part for part in error["loc"] if not _is_union_tag(part))
            message = _message(model, {**error, "loc": loc})
            problems.append(locate(file, lines, (*prefix, *loc), message))
        return None, problems


def validate(model: type[ModelT], data: Any, file: str, lines: LineMap, prefix: Path_ = ()) -> ModelT:
    """Validate `data` as `model`, raising one located problem per pydantic error."""
    value, problems = validation_problems(model, data, file, lines, prefix)
    if value is None:
        raise ConfigError(problems)
    return value


def _is_union_tag(part: Any) -> bool:
    # pydantic inserts the member type name (e.g. "function-after[...]") into union locs.
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool"})
