"""One Ray version everywhere: installed Ray, the pyproject pin, the image tag and the RayService."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from typing import Any

import pytest
import yaml
from helpers.documents import ray_containers
from helpers.shared_files import KUBERAY_DIR_NAME, kuberay_dir
from helpers.stack_files import STACKS

from infra.plan import ServingPlan
from infra.versions import KUBERAY_VERSION
from serve.paths import REPO_ROOT
from serve.versions import RAY_LLM_IMAGE, RAY_PYTHON_TAG, RAY_VERSION


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_installed_ray_is_the_pinned_version() -> None:
    # The installed distribution's metadata: no need to import Ray (seconds) to read its version.
    assert importlib.metadata.version("ray") == RAY_VERSION


def test_image_is_built_for_the_installed_ray() -> None:
    # The tag family is <ray>-<python>-<cuda>; its Ray is the one installed here (and pinned).
    match = re.fullmatch(r"rayproject/ray-llm:(\d+\.\d+\.\d+)-(py\d+)-(cu\d+)", RAY_LLM_IMAGE)
    assert match, f"{RAY_LLM_IMAGE} is not a rayproject/ray-llm:<ray>-<python>-<cuda> tag"
    assert match[1] == importlib.metadata.version("ray"), (
        f"{RAY_LLM_IMAGE} is not built for the installed Ray"
    )


def test_pyproject_pins_the_same_ray() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    pins = [
        match.group(1)
        for requirements in extras.values()
        for requirement in requirements
        if (match := re.fullmatch(r"ray\[[a-z,]+\]==([0-9.]+)", requirement.replace(" ", "")))
    ]
    assert pins, "pyproject.toml has no `ray[...]==X` pin"
    assert set(pins) == {RAY_VERSION}


def test_image_python_matches_the_project_python() -> None:
    requires = _pyproject()["project"]["requires-python"]
    major_minor = re.search(r">=\s*(\d+)\.(\d+)", requires)
    assert major_minor is not None, requires
    assert f"py{major_minor.group(1)}{major_minor.group(2)}" == RAY_PYTHON_TAG
    assert f"-{RAY_PYTHON_TAG}-" in RAY_LLM_IMAGE


def test_kuberay_chart_pin_matches_the_crds_the_tests_read() -> None:
    """The release files in ../shared are that release's: its chart values pin the operator image."""
    directory = kuberay_dir()
    assert directory.name == KUBERAY_DIR_NAME
    values = yaml.safe_load((directory / "operator-values.yaml").read_text(encoding="utf-8"))
    assert values["image"] == {
        "repository": "quay.io/kuberay/operator",
        "tag": f"v{KUBERAY_VERSION}",
        "pullPolicy": "IfNotPresent",
    }


@pytest.mark.parametrize("stack", STACKS)
def test_rayservice_uses_the_pinned_ray_and_image(plans: dict[str, ServingPlan], stack: str) -> None:
    plan = plans[stack]
    assert plan.ray_service_spec["rayClusterConfig"]["rayVersion"] == RAY_VERSION
    containers = ray_containers(plan.ray_service_spec)
    assert len(containers) == 1 + len(plan.gpu_pools)
    for container in containers:
        assert container["image"] == RAY_LLM_IMAGE, container["name"]
