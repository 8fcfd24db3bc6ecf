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

from infra import resource_types
from infra.plan import ServingPlan
from infra.plan.node_pools import GKE_DRIVER_BRANCH, GPU_DRIVER_VERSION
from infra.report.mock_engine import ProgramRun
from infra.versions import KUBERAY_VERSION
from serve.paths import REPO_ROOT
from serve.versions import (
    MIN_DRIVER_FOR_CUDA,
    RAY_CUDA_TAG,
    RAY_LLM_IMAGE,
    RAY_LLM_IMAGE_CUDA,
    RAY_LLM_IMAGE_PYTHON,
    RAY_PYTHON_TAG,
    RAY_VERSION,
)


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


def test_image_tag_names_the_images_python_and_cuda() -> None:
    assert (
        f"rayproject/ray-llm:{RAY_VERSION}-py{RAY_LLM_IMAGE_PYTHON.replace('.', '')}"
        f"-cu{RAY_LLM_IMAGE_CUDA.replace('.', '')}"
    ) == RAY_LLM_IMAGE
    assert (RAY_PYTHON_TAG, RAY_CUDA_TAG) == ("py312", "cu130")


def test_the_pinned_rays_llm_extra_is_built_for_the_images_cuda() -> None:
    # The installed Ray wheel (the pinned version) names its LLM dependencies by CUDA major:
    # the image that release ships must be built for the same CUDA.
    llm_requirements = [r for r in importlib.metadata.requires("ray") or [] if 'extra == "llm"' in r]
    cuda_majors = {match.group(1) for r in llm_requirements if (match := re.search(r"-cu(\d+)\b", r))}
    assert cuda_majors == {RAY_LLM_IMAGE_CUDA.split(".")[0]}, llm_requirements


def test_the_pools_driver_runs_the_images_cuda() -> None:
    needed_branch = int(MIN_DRIVER_FOR_CUDA[RAY_LLM_IMAGE_CUDA].split(".")[0])
    assert GKE_DRIVER_BRANCH[GPU_DRIVER_VERSION] >= needed_branch
    # GKE's DEFAULT driver (R535) could not run CUDA 13: the pools must ask for LATEST.
    assert GKE_DRIVER_BRANCH["DEFAULT"] < needed_branch


@pytest.mark.parametrize("stack", STACKS)
def test_every_gpu_pool_installs_that_driver(program_runs: dict[str, ProgramRun], stack: str) -> None:
    pools = program_runs[stack].of_type(resource_types.NODE_POOL)
    gpu_pools = [pool for pool in pools if pool.inputs["nodeConfig"].get("guestAccelerators")]
    assert gpu_pools
    for pool in gpu_pools:
        (accelerator,) = pool.inputs["nodeConfig"]["guestAccelerators"]
        assert accelerator["gpuDriverInstallationConfig"] == {"gpuDriverVersion": GPU_DRIVER_VERSION}


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
    # Docker Hub's image, pulled through the stack's Artifact Registry remote repository.
    registry = f"{plan.settings.region}-docker.pkg.dev/{plan.project}/llm-{stack}-dockerhub/"
    for container in containers:
        assert container["image"] == registry + RAY_LLM_IMAGE, container["name"]
    for job in plan.mirror_jobs:
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == registry + RAY_LLM_IMAGE
