"""The model bucket, its Workload Identity grants, the mirror Jobs and the image registry: the pure
plan, and what the program registers for them under the mock engine."""

from __future__ import annotations

import re

import pytest
from helpers.stack_files import STACKS

from infra import resource_types
from infra.components import cluster as cluster_component
from infra.plan import ServingPlan
from infra.plan.model_store import (
    MIRROR_KSA,
    RAY_KSA,
    READER_ROLE,
    WORKLOAD_IDENTITY_ANNOTATION,
    WRITER_ROLE,
    image_via_registry,
    mirror_job_name,
    model_bucket_name,
)
from infra.plan.ray_service import NAMESPACE
from infra.report.mock_engine import TEST_GCP_PROJECT, ProgramRun, RegisteredResource
from serve.serve_config import REQUEST_TIMEOUT_SECONDS, ROUTER_TIMEOUT_ENV


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- pure naming ------------------------------------------------------------------------------


def test_bucket_names_are_valid_gcs_names_for_any_project_and_stack() -> None:
    for project in ("a" * 30, "my-proj-123456", None):
        for stack_name in ("dev", "prod", "x" * 40, "feature-branch-preview-1234"):
            name = model_bucket_name(project, stack_name)
            assert re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", name), name
    long = {model_bucket_name("a" * 30, "x" * 40 + suffix) for suffix in "ab"}
    assert len(long) == 2, "shortened names stay unique"


def test_docker_hub_images_keep_their_path_and_official_ones_gain_library() -> None:
    assert image_via_registry("us-central1", "p", "dev", "rayproject/ray-llm:2.60.0-py312-cu130") == (
        "us-central1-docker.pkg.dev/p/llm-dev-dockerhub/rayproject/ray-llm:2.60.0-py312-cu130"
    )
    assert image_via_registry("europe-west4", "p", "prod", "docker.io/busybox:1.37") == (
        "europe-west4-docker.pkg.dev/p/llm-prod-dockerhub/library/busybox:1.37"
    )


def test_a_revision_bump_is_a_new_job_and_names_are_kubernetes_names(plans: dict[str, ServingPlan]) -> None:
    model = plans["prod"].served[0]
    bumped = model.model_copy(update={"revision": "f" * 40})
    assert mirror_job_name(bumped) != mirror_job_name(model)
    assert mirror_job_name(model.model_copy(update={"id": "another-name"})) == mirror_job_name(model)
    for plan in plans.values():
        for job in plan.mirror_jobs:
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", job["metadata"]["name"])


def test_one_job_per_repo_and_revision(plans: dict[str, ServingPlan]) -> None:
    plan = plans["prod"]
    twin = plan.served[0].model_copy(update={"id": "same-weights-other-name"})
    from infra.plan import build_plan

    catalog = plan.catalog.model_copy(update={"models": (*plan.catalog.models, twin)})
    doubled = build_plan(catalog, plan.settings, project=plan.project)
    assert len(doubled.mirror_jobs) == len(plan.mirror_jobs)
    sources = {llm["model_loading_config"]["model_source"] for llm in doubled.llm_configs}
    assert len(sources) == len(doubled.served) - 1, "both names read the same mirrored folder"


def test_the_mirror_job_runs_on_the_system_pool_with_the_token_and_the_code(
    plans: dict[str, ServingPlan], stack: str
) -> None:
    plan = plans[stack]
    for job, model in zip(plan.mirror_jobs, plan.served, strict=True):
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert pod["serviceAccountName"] == MIRROR_KSA
        assert pod["nodeSelector"] == plan.system_pool.labels
        assert pod["restartPolicy"] == "Never"
        command = container["command"]
        assert command[:3] == ["python", "-m", "serve.model_mirror"]
        assert command[command.index("--model-id") + 1] == model.source
        assert command[command.index("--revision") + 1] == model.revision
        assert command[command.index("--bucket") + 1] == plan.model_bucket
        mounted = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
        assert len(mounted) == 1 and next(iter(mounted)).startswith("model-mirror-")


def test_ray_pods_read_the_bucket_and_wait_out_a_cold_start(
    plans: dict[str, ServingPlan], stack: str
) -> None:
    plan = plans[stack]
    spec = plan.ray_service_spec["rayClusterConfig"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    assert {group["template"]["spec"]["serviceAccountName"] for group in groups} == {RAY_KSA}
    head_env = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": ROUTER_TIMEOUT_ENV, "value": str(REQUEST_TIMEOUT_SECONDS)} in head_env
    assert plan.serve_config["http_options"]["request_timeout_s"] == REQUEST_TIMEOUT_SECONDS
    for llm, model in zip(plan.llm_configs, plan.served, strict=True):
        assert llm["model_loading_config"]["model_source"] == (
            f"gs://{plan.model_bucket}/models/{model.source}/{model.revision}"
        )


# --- under the mock engine ----------------------------------------------------------------------


def _one(run: ProgramRun, type_: str) -> RegisteredResource:
    (found,) = run.of_type(type_)
    return found


def test_the_bucket_is_private_regional_and_goes_with_the_stack(
    program_runs: dict[str, ProgramRun], plans: dict[str, ServingPlan], stack: str
) -> None:
    run, plan = program_runs[stack], plans[stack]
    bucket = _one(run, resource_types.BUCKET).inputs
    assert bucket["name"] == plan.model_bucket == model_bucket_name(TEST_GCP_PROJECT, stack)
    assert bucket["location"] == plan.settings.region.upper()
    assert bucket["uniformBucketLevelAccess"] is True
    assert bucket["publicAccessPrevention"] == "enforced"
    assert bucket["forceDestroy"] is True, "`pulumi destroy` must not stop at a bucket with objects"
    assert run.outputs["model_bucket"] == f"gs://{plan.model_bucket}"


def test_readers_and_writers_are_separate_accounts_bound_to_their_pods(
    program_runs: dict[str, ProgramRun], stack: str
) -> None:
    run = program_runs[stack]
    accounts = {
        a.urn: a for a in run.of_type(resource_types.SERVICE_ACCOUNT) if a.name.startswith("model-store-")
    }
    assert len(accounts) == 2
    roles = {m.inputs["role"]: m for m in run.of_type(resource_types.BUCKET_IAM_MEMBER)}
    assert set(roles) == {READER_ROLE, WRITER_ROLE}
    for member in roles.values():
        assert member.inputs["bucket"] == _one(run, resource_types.BUCKET).inputs["name"]
    bindings = run.of_type(resource_types.SERVICE_ACCOUNT_IAM_MEMBER)
    principals = {b.inputs["member"] for b in bindings}
    assert principals == {
        f"serviceAccount:{TEST_GCP_PROJECT}.svc.id.goog[{NAMESPACE}/{ksa}]" for ksa in (RAY_KSA, MIRROR_KSA)
    }
    assert {b.inputs["role"] for b in bindings} == {"roles/iam.workloadIdentityUser"}
    service_accounts = {
        s.inputs["metadata"]["name"]: s for s in run.of_type(resource_types.KUBERNETES_SERVICE_ACCOUNT)
    }
    assert set(service_accounts) == {RAY_KSA, MIRROR_KSA}
    emails = {
        f"{a.inputs['accountId']}@{TEST_GCP_PROJECT}.iam.gserviceaccount.com" for a in accounts.values()
    }
    assert {
        s.inputs["metadata"]["annotations"][WORKLOAD_IDENTITY_ANNOTATION] for s in service_accounts.values()
    } == emails


def test_jobs_wait_for_their_grants_and_the_ray_service_waits_for_the_jobs(
    program_runs: dict[str, ProgramRun], stack: str
) -> None:
    run = program_runs[stack]
    by_urn = run.by_urn()
    # Depending on the ModelStore component is depending on each of its resources.
    grants = {
        r.urn
        for t in (resource_types.BUCKET_IAM_MEMBER, resource_types.SERVICE_ACCOUNT_IAM_MEMBER)
        for r in run.of_type(t)
    }
    assert len(grants) == 4
    jobs = run.of_type(resource_types.JOB)
    assert jobs
    ray_service = _one(run, resource_types.RAY_SERVICE)
    for job in jobs:
        assert grants <= set(job.dependencies), job.name
        assert job.urn in ray_service.dependencies, job.name
        kinds = {by_urn[d].type_ for d in job.dependencies if d in by_urn}
        assert {
            resource_types.SECRET,
            resource_types.CONFIG_MAP,
            resource_types.KUBERNETES_SERVICE_ACCOUNT,
        } <= kinds


def test_images_stream_from_the_stacks_remote_repository(
    program_runs: dict[str, ProgramRun], plans: dict[str, ServingPlan], stack: str
) -> None:
    run, plan = program_runs[stack], plans[stack]
    repository = _one(run, resource_types.ARTIFACT_REPOSITORY).inputs
    assert repository["mode"] == "REMOTE_REPOSITORY" and repository["format"] == "DOCKER"
    assert repository["location"] == plan.settings.region
    assert repository["remoteRepositoryConfig"]["dockerRepository"]["publicRepository"] == "DOCKER_HUB"
    assert plan.image.startswith(
        f"{plan.settings.region}-docker.pkg.dev/{TEST_GCP_PROJECT}/{repository['repositoryId']}/"
    )
    for pool in run.of_type(resource_types.NODE_POOL):
        config = pool.inputs["nodeConfig"]
        assert config["imageType"] == cluster_component.NODE_IMAGE_TYPE == "COS_CONTAINERD", pool.name
        assert config["gcfsConfig"] == {"enabled": True}, pool.name
    # The node service account may pull from it (roles/artifactregistry.reader on the project).
    assert "roles/artifactregistry.reader" in cluster_component.NODE_SERVICE_ACCOUNT_ROLES


def test_the_request_timeout_outlasts_every_modelled_cold_start(plans: dict[str, ServingPlan]) -> None:
    from infra.plan.cold_start import cold_start_budget, slower_than

    for plan in plans.values():
        assert slower_than(REQUEST_TIMEOUT_SECONDS, cold_start_budget(plan)) == ()
    # Why it was raised: Ray Serve LLM's own 600 s would answer 408 before prod's 32B model is up.
    assert slower_than(600, cold_start_budget(plans["prod"]))


def test_workload_identity_bindings_wait_for_the_cluster(
    program_runs: dict[str, ProgramRun], stack: str
) -> None:
    """The workload pool exists once the cluster does; IAM refuses a binding before that."""
    run = program_runs[stack]
    cluster = _one(run, resource_types.CLUSTER)
    for binding in run.of_type(resource_types.SERVICE_ACCOUNT_IAM_MEMBER):
        assert cluster.urn in binding.dependencies, binding.name


def test_long_or_odd_stack_names_give_distinct_valid_ids() -> None:
    from infra.plan.model_store import google_account_id, image_repository_id

    for stack_name in ("production-us-west1", "Dev_1", "a.b", "x" * 60):
        ids = {google_account_id(stack_name, role) for role in ("models-read", "models-write")}
        assert len(ids) == 2, ids
        for account in ids:
            assert re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", account), account
        assert re.fullmatch(r"[a-z][a-z0-9-]{0,62}", image_repository_id(stack_name))
    assert google_account_id("prod", "models-read") == "llm-prod-models-read"


def test_a_failed_mirror_job_is_replaced_by_the_next_up(plans: dict[str, ServingPlan]) -> None:
    from infra.components.llm_service import MIRROR_TIMEOUT
    from infra.plan.model_store import MIRROR_DEADLINE_SECONDS

    for job in plans["prod"].mirror_jobs:
        assert job["metadata"]["annotations"]["pulumi.com/replaceUnready"] == "true"
        assert job["spec"]["activeDeadlineSeconds"] == MIRROR_DEADLINE_SECONDS
    assert int(MIRROR_TIMEOUT.removesuffix("m")) * 60 > MIRROR_DEADLINE_SECONDS
