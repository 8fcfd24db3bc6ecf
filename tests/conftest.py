"""Fixtures the test modules share. Constants and functions live in `helpers`, not here."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import pytest
from helpers.stack_files import STACKS

from infra.plan import ServingPlan, build_plan_for_stack
from serve.paths import REPO_ROOT

if TYPE_CHECKING:
    from infra.report.mock_engine import ProgramRun


@pytest.fixture(scope="session")
def plans() -> dict[str, ServingPlan]:
    """Both stacks' plans for the project the mock engine's provider names (as the program plans
    them), built once. Treat them as read-only: deep-copy before changing anything."""
    from infra.report.mock_engine import TEST_GCP_PROJECT

    return {stack: build_plan_for_stack(stack, REPO_ROOT, project=TEST_GCP_PROJECT) for stack in STACKS}


@pytest.fixture(scope="session")
def program_runs() -> dict[str, ProgramRun]:
    """The real Pulumi program for both stacks under the mock engine, run once. Read-only."""
    from helpers.mock_runs import shipped_run

    return {stack: shipped_run(stack) for stack in STACKS}


@pytest.fixture(scope="session")
def ray_oracles() -> ModuleType:
    """`helpers.ray_oracles`: Ray's and vLLM's own definitions, imported on first use (about 11 s)."""
    from helpers import ray_oracles

    return ray_oracles
