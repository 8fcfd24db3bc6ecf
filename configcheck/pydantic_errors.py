"""Turn pydantic validation errors into located, actionable problems."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, TypeVar, Union

from pydantic import BaseModel, ValidationError

from configcheck.problems import LineMap, Path_, Problem, locate

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


def _normalized(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def closest_key(key: str, allowed: list[str], cutoff: float = 0.6) -> str | None:
    """The allowed key `key` was probably meant to be: same letters in another style, or a near spelling."""
    same = [name for name in allowed if _normalized(name) == _normalized(key)]
    if same:
        return same[0]
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=cutoff)
    if close:
        return close[0]
    by_letters = {_normalized(name): name for name in allowed}
    close = difflib.get_close_matches(_normalized(key), list(by_letters), n=1, cutoff=cutoff)
    return by_letters[close[0]] if close else None


def unknown_key_message(key: str, allowed: list[str]) -> str:
    close = closest_key(str(key), allowed)
    hint = f"did you mean {close!r}?" if close else f"allowed keys: {', '.join(allowed)}"
    return f"unknown key {str(key)!r}; {hint}"


def describe(value: Any) -> str:
    """A value as a person reading the YAML would name it."""
    if value is None:
        return "nothing (null or an empty value)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _type_message(kind: str, value: Any) -> str | None:
    """Messages for wrong types, each saying what to write instead."""
    got = describe(value) + (": write a value" if value is None else "")
    if kind == "int_type":
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return f"expected a whole number, got {got}: remove the quotes"
        if isinstance(value, float):
            return f"expected a whole number, got {got}: drop the fraction"
        return f"expected a whole number, got {got}"
    if kind == "float_type":
        if isinstance(value, str):
            return f"expected a number, got {got}: write the number without quotes"
        return f"expected a number, got {got}"
    if kind == "bool_type":
        return f"expected true or false, got {got}: write true or false without quotes"
    if kind == "string_type":
        return f"expected text, got {got}: write text, in quotes if YAML would read it as another type"
    if kind == "list_type":
        return f"expected a list ('- item' lines or [a, b]), got {got}"
    if kind in ("dict_type", "model_type", "model_attributes_type", "dataclass_type"):
        return f"expected a mapping of 'key: value' lines, got {got}"
    return None


def _message(root: type[BaseModel], error: Any) -> str:
    kind, loc = error["type"], tuple(error["loc"])
    if kind == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        allowed = allowed_keys(parent) if parent is not None else []
        return unknown_key_message(str(loc[-1]), allowed)
    if kind == "missing":
        name = loc[-1] if loc else "field"
        return f"required field {name!r} is missing: add `{name}: <value>` here"
    ctx = error.get("ctx") or {}
    if kind == "too_short" and "min_length" in ctx:
        return f"must list at least {ctx['min_length']} item(s), got {ctx.get('actual_length', 0)}: add some"
    if kind == "too_long" and "max_length" in ctx:
        return f"must list at most {ctx['max_length']} items, got {ctx.get('actual_length')}: remove some"
    typed = _type_message(kind, error.get("input"))
    if typed is not None:
        return typed
    message = str(error["msg"])
    if message.startswith("Value error, "):
        return message.removeprefix("Value error, ")
    message = message.replace("Input should be", "must be", 1)
    message = message.replace("List should have", "must have", 1)
    if "input" in error and not isinstance(error["input"], dict | list):
        message = f"{message}, got {error['input']!r}: change the value"
    return message


def validation_problems(
    model: type[ModelT], data: Any, file: str, lines: LineMap, prefix: Path_ = ()
) -> tuple[ModelT | None, list[Problem]]:
    """Validate `data` (found at `prefix` in the file) as `model`: the value, or its located problems."""
    try:
        # Strict: YAML already has real numbers and booleans, so a quoted "8" or "yes" is a
        # mistake to report, not a value to convert.
        return model.model_validate(data, strict=True), []
    except ValidationError as errors:
        problems: list[Problem] = []
        for error in errors.errors(include_url=False):
            raw_loc = tuple(error["loc"])
            # The last part of an unknown key's loc is the key itself, whatever it looks like.
            keep_last = error["type"] == "extra_forbidden" and raw_loc
            loc = tuple(part for part in raw_loc[:-1] if not _is_union_tag(part))
            if keep_last or (raw_loc and not _is_union_tag(raw_loc[-1])):
                loc = (*loc, raw_loc[-1])
            message = _message(model, {**error, "loc": loc})
            problems.append(locate(file, lines, (*prefix, *loc), message))
        return None, problems


def _is_union_tag(part: Any) -> bool:
    # pydantic inserts the member type name (e.g. "function-after[...]") into union locs.
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool"})
