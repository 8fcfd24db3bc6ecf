"""Shared test helpers: the repo root, the shared reference files next to it, and both stacks' plans."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest

from infra.plan import ServingPlan, build_plan_for_stack
from infra.versions import KUBERAY_VERSION
from serve.paths import REPO_ROOT

STACKS: Final = ("dev", "prod")
KUBERAY_DIR_NAME: Final = f"kuberay-v{KUBERAY_VERSION}"


def shared_dir() -> Path:
    """`../shared` next to the repo: design notes and the KubeRay release files the checks read.

    Missing reference files fail the test that needs them (never a skip): a check that
    quietly does not run is worse than no check.
    """
    path = REPO_ROOT.parent / "shared"
    if not path.is_dir():
        pytest.fail(f"shared reference directory {path} is missing: check out ../shared next to the repo")
    return path


def kuberay_dir() -> Path:
    path = shared_dir() / KUBERAY_DIR_NAME
    crds = path / "crds"
    if not crds.is_dir():
        pytest.fail(
            f"KubeRay CRDs not found at {crds}: copy the {KUBERAY_DIR_NAME} release's crds/ there "
            "(ray.io_rayservices.yaml, ray.io_rayclusters.yaml)"
        )
    return path


@pytest.fixture(scope="session")
def plans() -> dict[str, ServingPlan]:
    """Both stacks' plans, built once. Treat them as read-only: deep-copy before changing anything."""
    return {stack: build_plan_for_stack(stack, REPO_ROOT) for stack in STACKS}
