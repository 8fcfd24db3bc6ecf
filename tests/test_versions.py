"""One Ray version everywhere: installed Ray, the pyproject pin, the image tag and the RayService."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import ray
from conftest import KUBERAY_DIR_NAME, REPO_ROOT, STACKS

from infra.plan import ServingPlan
from infra.versions import KUBERAY_VERSION
from serve.versions import RAY_LLM_IMAGE, RAY_PYTHON_TAG, RAY_VERSION


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _ray_containers(plan: ServingPlan) -> list[dict[str, Any]]:
    cluster = plan.ray_service_spec["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    containers: list[dict[str, Any]] = []
    for template in templates:
        spec = template["spec"]
        containers += spec["containers"] + spec.get("initContainers", [])
    return containers


def test_installed_ray_is_the_pinned_version() -> None:
    assert ray.__version__ == RAY_VERSION


def test_image_tag_carries_the_ray_version() -> None:
    repository, tag = RAY_LLM_IMAGE.rsplit(":", 1)
    assert repository == "rayproject/ray-llm"
    assert tag.split("-")[0] == RAY_VERSION, f"{RAY_LLM_IMAGE} is not built for Ray {RAY_VERSION}"
    assert RAY_VERSION in tag


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
    assert f"kuberay-v{KUBERAY_VERSION}" == KUBERAY_DIR_NAME


@pytest.mark.parametrize("stack", STACKS)
def test_rayservice_uses_the_pinned_ray_and_image(plans: dict[str, ServingPlan], stack: str) -> None:
    plan = plans[stack]
    assert plan.ray_service_spec["rayClusterConfig"]["rayVersion"] == RAY_VERSION
    containers = _ray_containers(plan)
    assert len(containers) == 1 + len(plan.gpu_pools)
    for container in containers:
        assert container["image"] == RAY_LLM_IMAGE, container["name"]
