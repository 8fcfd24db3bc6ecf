"""Strict pydantic bases for input files, and the ordering rules they share."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel


class Strict(BaseModel):
    """An input-file mapping: unknown keys are errors, values are immutable once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CamelStrict(Strict):
    """Pulumi config keys are camelCase; the Python names stay snake_case."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


def not_below(field: str, lower: str, *, fix: str, camel: bool = True) -> Any:
    """A validator on `field` refusing a value below the (earlier-declared) field `lower`.

    On the upper field rather than the whole model, so the located error names the line with
    the number a person has to change.
    """
    label = to_camel if camel else str

    def check(cls: type[BaseModel], value: float, info: ValidationInfo) -> float:
        bound = info.data.get(lower)
        if bound is not None and value < bound:
            raise ValueError(f"{label(field)} {value:g} is below {label(lower)} {bound:g}; {fix}")
        return value

    return field_validator(field)(check)


def not_above(field: str, upper: str, *, fix: str, camel: bool = True) -> Any:
    """A validator on `field` refusing a value above the (earlier-declared) field `upper`: the mirror
    of `not_below`, for a field that is the later of the two (its line is the one to change)."""
    label = to_camel if camel else str

    def check(cls: type[BaseModel], value: float, info: ValidationInfo) -> float:
        bound = info.data.get(upper)
        if bound is not None and value > bound:
            raise ValueError(f"{label(field)} {value:g} is above {label(upper)} {bound:g}; {fix}")
        return value

    return field_validator(field)(check)
