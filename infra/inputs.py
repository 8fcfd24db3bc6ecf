"""The two input files of a stack, loaded and validated together: the one entry point the
Pulumi program, the offline report and local serving share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from configcheck.problems import ConfigError, Problem
from infra.settings import EngineConfig, StackSettings, load_stack, settings_from_engine
from serve.catalog import Catalog, load_catalog
from serve.paths import CATALOG_FILE_NAME, REPO_ROOT


@dataclass(frozen=True)
class Inputs:
    catalog: Catalog
    settings: StackSettings


def load_inputs(stack: str, root: Path = REPO_ROOT, *, engine: EngineConfig | None = None) -> Inputs:
    """`model_catalog.yaml` and the stack's settings under `root`, or one ConfigError with every
    problem in either file.

    `engine`: the config the Pulumi engine passed (inside `pulumi up/preview`); without it the
    settings are read from `Pulumi.<stack>.yaml` alone.
    """
    problems: list[Problem] = []
    catalog = settings = None
    try:
        catalog = load_catalog(root / CATALOG_FILE_NAME)
    except ConfigError as error:
        problems += error.problems
    try:
        settings = load_stack(stack, root) if engine is None else settings_from_engine(stack, engine, root)
    except ConfigError as error:
        problems += error.problems
    if problems or catalog is None or settings is None:
        raise ConfigError(problems)
    return Inputs(catalog=catalog, settings=settings)
