"""The Pulumi program (infra/program.py, infra/components/) under Pulumi's mock engine, for both
stacks: what it registers, that it registers exactly the pure plan, teardown order, secrets,
that dev and prod differ only in their settings, and that bad input stops it."""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from helpers.agreement import agreement_problems
from helpers.crd_schema import crd_errors
from helpers.documents import ray_containers
from helpers.mock_runs import serve_services
from helpers.stack_files import STACKS, copy_inputs, find_line, raw_catalog, tier_block

from infra import resource_types
from infra.components import cluster as cluster_component
from infra.plan import ServingPlan
from infra.plan.endpoint import serve_address
from infra.plan.node_pools import (
    COMPUTE_CLASS_KEY,
    FALLBACK_FOR_LABEL,
    POOL_LABEL,
    SYSTEM_POOL,
    TIER_LABEL,
    compute_class_name,
)
from infra.plan.ray_service import HF_SECRET_KEY, HF_SECRET_NAME
from infra.plan.spare_capacity import AUTOSCALER_EXPENDABLE_PRIORITY_CUTOFF
from infra.report.mock_engine import (
    TEST_GCP_PROJECT,
    TEST_HF_TOKEN,
    ProgramRun,
    RegisteredResource,
    run_program,
    stack_config,
)
from infra.settings import ALERT_EMAIL_KEY, API_KEYS_KEY, HF_TOKEN_KEY, TIERS_KEY, stack_file
from infra.versions import KUBERAY_CHART, KUBERAY_VERSION
from serve.paths import CATALOG_FILE_NAME
from serve.serve_config import HF_TOKEN_ENV, document_llm_configs
from serve.tiers import TierName

CLUSTER = resource_types.CLUSTER
NODE_POOL = resource_types.NODE_POOL
PROVIDER = resource_types.KUBERNETES_PROVIDER
RELEASE = resource_types.HELM_RELEASE
RAY_SERVICE = resource_types.RAY_SERVICE
SECRET = resource_types.SECRET
SERVICE = resource_types.SERVICE
CONFIG_MAP = resource_types.CONFIG_MAP
NAMESPACE = resource_types.NAMESPACE
COMPUTE_CLASS = resource_types.COMPUTE_CLASS
GKE_TO_K8S_EFFECT = {
    "NO_SCHEDULE": "NoSchedule",
    "PREFER_NO_SCHEDULE": "PreferNoSchedule",
    "NO_EXECUTE": "NoExecute",
}


@pytest.fixture(params=STACKS)
def run(request: pytest.FixtureRequest, program_runs: dict[str, ProgramRun]) -> ProgramRun:
    return program_runs[request.param]


@pytest.fixture
def plan(run: ProgramRun, plans: dict[str, ServingPlan]) -> ServingPlan:
    return plans[run.stack]


def gpu_pools(run: ProgramRun) -> list[RegisteredResource]:
    """Every GPU pool: the tiers' own and the on-demand fallbacks behind them."""
    return [p for p in run.of_type(NODE_POOL) if p.inputs["nodeConfig"].get("guestAccelerators")]


def is_fallback(pool: RegisteredResource) -> bool:
    return FALLBACK_FOR_LABEL in pool.inputs["nodeConfig"]["labels"]


def ray_service_spec(run: ProgramRun) -> dict[str, Any]:
    spec: dict[str, Any] = run.one(RAY_SERVICE).inputs["spec"]
    return spec


# --- what is registered ---------------------------------------------------------------


def test_registers_every_component(run: ProgramRun, plan: ServingPlan) -> None:
    types = [r.type_ for r in run.resources]
    for component in (
        "llm-serving:infra:GkeCluster",
        "llm-serving:infra:KubeRayOperator",
        "llm-serving:infra:LlmService",
        "llm-serving:infra:ModelStore",
    ):
        assert types.count(component) == 1
    for single in (
        CLUSTER,
        PROVIDER,
        RELEASE,
        RAY_SERVICE,
        resource_types.NAMESPACE,
        resource_types.ADDRESS,
        resource_types.RANDOM_PASSWORD,
        resource_types.BUCKET,
        resource_types.ARTIFACT_REPOSITORY,
    ):
        assert types.count(single) == 1, single
    # HF token + keys; env + app code + mirror code
    assert types.count(SECRET) == 2 and types.count(CONFIG_MAP) == 3
    assert types.count(resource_types.JOB) == len(plan.mirror_jobs)
    assert len(run.of_type(NODE_POOL)) == 1 + len(plan.gpu_pools) + len(plan.fallback_pools)
    assert len(run.of_type(COMPUTE_CLASS)) == len(plan.gpu_pools)
    # The program makes the serve Service (KubeRay adopts it) and the KServe-style names; KubeRay
    # makes the head Services.
    service_types = sorted(s.inputs["spec"]["type"] for s in run.of_type(SERVICE))
    assert service_types == ["ExternalName"] * (len(service_types) - 1) + ["LoadBalancer"]


def test_cluster_is_hardened_and_destroyable(run: ProgramRun) -> None:
    cluster = run.one(CLUSTER).inputs
    assert cluster["deletionProtection"] is False
    assert cluster["removeDefaultNodePool"] is True
    assert cluster["networkingMode"] == "VPC_NATIVE"
    assert cluster["workloadIdentityConfig"]["workloadPool"] == f"{TEST_GCP_PROJECT}.svc.id.goog"
    assert cluster["enableShieldedNodes"] is True
    assert cluster["releaseChannel"]["channel"] in {"RAPID", "REGULAR", "STABLE"}
    (account,) = [a for a in run.of_type(resource_types.SERVICE_ACCOUNT) if a.name == "gke-nodes"]
    email = f"{account.inputs['accountId']}@{TEST_GCP_PROJECT}.iam.gserviceaccount.com"
    assert cluster["nodeConfig"]["serviceAccount"] == email
    for pool in run.of_type(NODE_POOL):
        config = pool.inputs["nodeConfig"]
        assert config["serviceAccount"] == email and "compute@developer" not in email
        assert config["workloadMetadataConfig"]["mode"] == "GKE_METADATA"
        assert config["shieldedInstanceConfig"] == {
            "enableSecureBoot": True,
            "enableIntegrityMonitoring": True,
        }
    roles = {m.inputs["role"] for m in run.of_type(resource_types.PROJECT_IAM_MEMBER)}
    assert roles == set(cluster_component.NODE_SERVICE_ACCOUNT_ROLES)
    assert not any(r in roles for r in ("roles/editor", "roles/owner"))


def test_gpu_pools_are_spot_tainted_and_scale_from_zero(run: ProgramRun, plan: ServingPlan) -> None:
    # Machine, accelerator, zones and node bounds are the plan's: test_the_program_registers_exactly_the_plan.
    pools = [pool for pool in gpu_pools(run) if not is_fallback(pool)]
    assert len(pools) == len(plan.gpu_pools) >= 1
    for pool in gpu_pools(run):
        config = pool.inputs["nodeConfig"]
        assert config["spot"] is not is_fallback(pool)
        (accelerator,) = config["guestAccelerators"]
        assert accelerator["gpuDriverInstallationConfig"]["gpuDriverVersion"] in {"DEFAULT", "LATEST"}
        tier_class = compute_class_name(TierName(config["labels"][TIER_LABEL]))
        # GKE binds a manually created pool to a compute class by this label and taint.
        assert config["labels"][COMPUTE_CLASS_KEY] == tier_class
        taints = {(t["key"], t["value"]) for t in config["taints"]}
        assert (COMPUTE_CLASS_KEY, tier_class) in taints
        taint_keys = {t["key"] for t in config["taints"]}
        assert {TIER_LABEL, "cloud.google.com/gke-spot"} & taint_keys == (
            {TIER_LABEL} if is_fallback(pool) else {TIER_LABEL, "cloud.google.com/gke-spot"}
        )
        assert all(t["effect"] == "NO_SCHEDULE" for t in config["taints"])
        scaling = pool.inputs["autoscaling"]
        assert scaling["locationPolicy"] == "ANY"
        assert "minNodeCount" not in scaling and "nodeCount" not in pool.inputs
        assert pool.inputs["initialNodeCount"] == 0


def test_fallback_pools_back_a_spot_pool_of_their_tier(run: ProgramRun) -> None:
    """prod's l4 tier has an on-demand pool behind its spot pool; dev has none."""
    by_pool = {p.inputs["nodeConfig"]["labels"][POOL_LABEL]: p.inputs for p in gpu_pools(run)}
    fallbacks = [p.inputs for p in gpu_pools(run) if is_fallback(p)]
    assert len(fallbacks) == {"dev": 0, "prod": 1}[run.stack]
    for fallback in fallbacks:
        backed = by_pool[fallback["nodeConfig"]["labels"][FALLBACK_FOR_LABEL]]
        assert backed["nodeConfig"]["spot"] is True and fallback["nodeConfig"]["spot"] is False
        same = ("machineType", "guestAccelerators", "diskSizeGb", "diskType", "imageType")
        assert {k: fallback["nodeConfig"][k] for k in same} == {k: backed["nodeConfig"][k] for k in same}
        assert fallback["nodeLocations"] == backed["nodeLocations"]
        assert fallback["autoscaling"]["totalMinNodeCount"] == 0
        assert fallback["autoscaling"]["totalMaxNodeCount"] == backed["autoscaling"]["totalMaxNodeCount"]
        tier_labels = {TIER_LABEL, COMPUTE_CLASS_KEY}
        assert {k: fallback["nodeConfig"]["labels"][k] for k in tier_labels} == {
            k: backed["nodeConfig"]["labels"][k] for k in tier_labels
        }


def test_compute_classes_order_the_registered_pools(run: ProgramRun, plan: ServingPlan) -> None:
    """One valid ComputeClass per tier, naming the pools by the names GKE gives them; the RayService
    depends on each (its workers select them) and each goes through the cluster's provider."""
    names = {r.outputs["name"]: r for r in run.of_type(NODE_POOL)}
    classes = run.of_type(COMPUTE_CLASS)
    assert {c.inputs["metadata"]["name"] for c in classes} == {
        compute_class_name(p.tier) for p in plan.gpu_pools if p.tier
    }
    ray_service = run.one(RAY_SERVICE)
    for resource in classes:
        document = resource.inputs
        assert (document["apiVersion"], document["kind"]) == ("cloud.google.com/v1", "ComputeClass")
        assert crd_errors("ComputeClass", document) == []
        pools = [names[pool] for priority in document["spec"]["priorities"] for pool in priority["nodepools"]]
        assert [is_fallback(pool) for pool in pools] == [False] + [True] * (len(pools) - 1)
        assert (
            len(pools) == {"dev": 1, "prod": 2 if document["metadata"]["name"] == "gpu-l4" else 1}[run.stack]
        )
        for pool in pools:
            assert pool.inputs["nodeConfig"]["labels"][COMPUTE_CLASS_KEY] == document["metadata"]["name"]
            assert pool.urn in resource.dependencies or pool.urn in _deps_closure(run, resource.urn)
        assert resource.urn in ray_service.dependencies
        assert resource.provider.rsplit("::", 1)[0] == run.one(PROVIDER).urn


def _deps_closure(run: ProgramRun, urn: str) -> set[str]:
    graph = _depends_on(run)
    seen: set[str] = set()
    pending = [urn]
    while pending:
        node = pending.pop()
        if node not in seen:
            seen.add(node)
            pending.extend(graph.get(node, ()))
    return seen


def test_system_pool_is_on_demand_cpu(run: ProgramRun) -> None:
    (system,) = [p for p in run.of_type(NODE_POOL) if not p.inputs["nodeConfig"].get("guestAccelerators")]
    config = system.inputs["nodeConfig"]
    assert config.get("spot") is False and not config.get("taints")
    assert config["labels"] == {POOL_LABEL: SYSTEM_POOL}


def test_worker_groups_tolerate_and_select_their_registered_pools(run: ProgramRun) -> None:
    """The taints and labels as GKE registers them (the agreement check compares neither); GPU
    counts and replica bounds against the plan's pools are tests/test_ray_service.py. A worker
    tolerates exactly its spot pool's taints and may land on every pool of its tier, fallback too."""
    spec = ray_service_spec(run)
    tiers: dict[str, list[RegisteredResource]] = {}
    for pool in gpu_pools(run):
        tiers.setdefault(pool.inputs["nodeConfig"]["labels"][TIER_LABEL], []).append(pool)
    groups = spec["rayClusterConfig"]["workerGroupSpecs"]
    assert {g["groupName"] for g in groups} == set(tiers)
    for group in groups:
        pod = group["template"]["spec"]
        for pool in tiers[group["groupName"]]:
            config = pool.inputs["nodeConfig"]
            expected = [
                {
                    "key": t["key"],
                    "operator": "Equal",
                    "value": t["value"],
                    "effect": GKE_TO_K8S_EFFECT[t["effect"]],
                }
                for t in config["taints"]
            ]
            if is_fallback(pool):
                assert all(toleration in pod["tolerations"] for toleration in expected)
            else:
                by_text = functools.partial(json.dumps, sort_keys=True)
                assert sorted(pod["tolerations"], key=by_text) == sorted(expected, key=by_text)
            assert pod["nodeSelector"].items() <= config["labels"].items()
        assert pod["nodeSelector"] == {COMPUTE_CLASS_KEY: compute_class_name(TierName(group["groupName"]))}


def test_spare_nodes_are_placeholders_only_where_the_stack_keeps_them(
    program_runs: dict[str, ProgramRun],
) -> None:
    """Dev keeps no spare node: nothing is created, not even the PriorityClass. Prod keeps one L4."""
    dev, prod = program_runs["dev"], program_runs["prod"]
    assert dev.of_type(resource_types.DEPLOYMENT) == [] and dev.of_type(resource_types.PRIORITY_CLASS) == []
    (priority_class,) = prod.of_type(resource_types.PRIORITY_CLASS)
    assert priority_class.inputs["value"] >= AUTOSCALER_EXPENDABLE_PRIORITY_CUTOFF
    assert priority_class.inputs["preemptionPolicy"] == "Never"
    assert priority_class.inputs["globalDefault"] is False
    assert "namespace" not in priority_class.inputs["metadata"], "a PriorityClass is cluster-scoped"
    (deployment,) = prod.of_type(resource_types.DEPLOYMENT)
    assert deployment.inputs["metadata"]["name"] == "spare-l4"
    assert deployment.inputs["metadata"]["namespace"] == prod.one(NAMESPACE).inputs["metadata"]["name"]
    assert deployment.inputs["spec"]["replicas"] == 1
    pod = deployment.inputs["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == priority_class.inputs["metadata"]["name"]


def test_the_spare_l4_placeholder_is_an_l4_workers_room_on_the_registered_spot_pool(
    program_runs: dict[str, ProgramRun],
) -> None:
    """Against what the program registers: the RayService's l4 worker and the GKE pools."""
    prod = program_runs["prod"]
    (deployment,) = prod.of_type(resource_types.DEPLOYMENT)
    pod = deployment.inputs["spec"]["template"]["spec"]
    (group,) = [
        g for g in ray_service_spec(prod)["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "l4"
    ]
    (worker,) = group["template"]["spec"]["containers"]
    (placeholder,) = pod["containers"]
    assert placeholder["resources"] == worker["resources"] and placeholder["image"] == worker["image"]
    assert pod["tolerations"] == group["template"]["spec"]["tolerations"]
    l4_pools = [p for p in gpu_pools(prod) if p.inputs["nodeConfig"]["labels"][TIER_LABEL] == "l4"]
    (spot,) = [p for p in l4_pools if not is_fallback(p)]
    (fallback,) = [p for p in l4_pools if is_fallback(p)]
    assert spot.inputs["nodeConfig"]["spot"] is True
    assert pod["nodeSelector"].items() <= spot.inputs["nodeConfig"]["labels"].items()
    assert not pod["nodeSelector"].items() <= fallback.inputs["nodeConfig"]["labels"].items()
    # The pools keep scaling to zero: the spare node is the placeholder's doing, not minNodes.
    assert all(p.inputs["autoscaling"]["totalMinNodeCount"] == 0 for p in l4_pools)


def test_operator_release_is_pinned_on_the_system_pool(run: ProgramRun) -> None:
    release = run.one(RELEASE).inputs
    assert release["chart"] == KUBERAY_CHART and release["version"] == KUBERAY_VERSION
    assert release["name"] == "kuberay-operator", "a fixed Helm release name, no random suffix"
    assert release["values"]["nodeSelector"] == {POOL_LABEL: SYSTEM_POOL}


def test_outputs(run: ProgramRun, plan: ServingPlan) -> None:
    # served_models and the cost are the plan's: test_the_program_registers_exactly_the_plan.
    outputs = run.outputs
    assert outputs["skipped_models"] == {s.model_id: s.reason for s in plan.skipped}
    assert "port-forward svc/llm-serve-svc 8000:80" in outputs["openai_port_forward"]
    assert outputs["openai_internal_url"] == f"http://{serve_address()}/v1"
    assert outputs["openai_cluster_url"] == "http://llm-serve-svc.llm-serving.svc.cluster.local/v1"
    assert "openai_api_key" in run.secret_outputs
    assert set(outputs["kserve_aliases"]) == set(plan.served_model_ids)
    assert "port-forward svc/llm-head-svc 8265:8265" in outputs["dashboard_port_forward"]
    assert "kubeconfig" in run.secret_outputs
    kubeconfig = yaml.safe_load(outputs["kubeconfig"])
    user = kubeconfig["users"][0]["user"]["exec"]
    assert user["command"] == "gke-gcloud-auth-plugin" and user["provideClusterInfo"] is True
    assert user["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    assert kubeconfig["clusters"][0]["cluster"]["server"].startswith("https://")


# --- the program registers the pure plan -------------------------------------------------


def test_the_program_registers_exactly_the_plan(run: ProgramRun, plan: ServingPlan) -> None:
    """The RayService spec, the env ConfigMap, the node pools, the served models and the cost."""
    assert agreement_problems(plan, run) == []
    resource = run.one(RAY_SERVICE)
    assert resource.inputs["apiVersion"] == "ray.io/v1" and resource.inputs["kind"] == "RayService"
    assert yaml.safe_load(resource.inputs["spec"]["serveConfigV2"]) == plan.serve_config
    cost = run.outputs["estimated_cost_usd_per_hour"]
    assert (cost["prices_read_on"], cost["prices_region"]) == (
        plan.cost.prices_read_on,
        plan.cost.prices_region,
    )


def test_the_agreement_check_has_teeth(
    program_runs: dict[str, ProgramRun], plans: dict[str, ServingPlan]
) -> None:
    # The prod plan against the dev program: pools, models, cost and the spec all differ.
    joined = "\n".join(agreement_problems(plans["prod"], program_runs["dev"]))
    for topic in (
        "RayService spec",
        "node pools",
        "served models",
        "cost",
        "disruption budgets",
        "ComputeClasses",
        "spare Deployments",
        "spare PriorityClass",
    ):
        assert topic in joined


# --- teardown ------------------------------------------------------------------------


def _depends_on(run: ProgramRun) -> dict[str, set[str]]:
    """What the engine orders deletes by: explicit and property dependencies, parent and provider."""
    graph: dict[str, set[str]] = {}
    for resource in run.resources:
        edges = set(resource.dependencies)
        if resource.provider:
            edges.add(resource.provider.rsplit("::", 1)[0])
        graph[resource.urn] = edges
    return graph


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, pending = set(), [start]
    while pending:
        node = pending.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            pending.extend(graph.get(node, ()))
    return False


def test_teardown_order(run: ProgramRun) -> None:
    graph = _depends_on(run)
    ray_service, release = run.one(RAY_SERVICE).urn, run.one(RELEASE).urn
    provider, cluster = run.one(PROVIDER).urn, run.one(CLUSTER).urn
    # Deleted in reverse: RayService, then operator, then provider, then pools and cluster.
    assert _reaches(graph, ray_service, release), "RayService must be deleted before the operator"
    assert _reaches(graph, release, provider), "the operator must be deleted before the provider"
    for pool in run.of_type(NODE_POOL):
        assert _reaches(graph, provider, pool.urn), "the provider must be deleted before every pool"
        assert _reaches(graph, pool.urn, cluster)
    for in_cluster in run.resources:
        if in_cluster.type_.startswith("kubernetes:"):
            assert _reaches(graph, in_cluster.urn, provider), in_cluster.name
    # The serve Service goes after the RayService (so KubeRay cannot make it again), before its
    # namespace, and the reserved address its load balancer held goes last.
    (serve_service,) = serve_services(run)
    address = run.one(resource_types.ADDRESS).urn
    assert _reaches(graph, ray_service, serve_service.urn)
    assert _reaches(graph, serve_service.urn, run.one(NAMESPACE).urn)
    assert _reaches(graph, run.one(NAMESPACE).urn, address)
    # The placeholders go before their PriorityClass and their namespace; they need no RayService.
    for deployment in run.of_type(resource_types.DEPLOYMENT):
        assert _reaches(graph, deployment.urn, run.one(resource_types.PRIORITY_CLASS).urn)
        assert _reaches(graph, deployment.urn, run.one(NAMESPACE).urn)
        assert not _reaches(graph, deployment.urn, ray_service)
    # The classes go after the RayService whose workers select them, and before the pools they name.
    for compute_class in run.of_type(COMPUTE_CLASS):
        assert _reaches(graph, ray_service, compute_class.urn), compute_class.name
        for pool in run.of_type(NODE_POOL):
            assert _reaches(graph, compute_class.urn, pool.urn), (compute_class.name, pool.name)


def test_nothing_is_protected_and_only_the_env_config_map_is_retained(run: ProgramRun) -> None:
    namespace = run.one(NAMESPACE)
    for resource in run.resources:
        assert not resource.protect, resource.name
        if resource.type_ == CONFIG_MAP:
            # The old cluster of a NewCluster upgrade keeps creating pods that read the ConfigMap
            # the same `pulumi up` replaces: a replaced one stays, and goes with its namespace.
            assert resource.retain_on_delete and resource.deleted_with == namespace.urn, resource.name
        else:
            assert not resource.retain_on_delete, resource.name
            assert not resource.deleted_with, f"{resource.name}: in-cluster objects are deleted explicitly"


# --- secrets -------------------------------------------------------------------------


def _token_places(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every input value that contains the test token."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _token_places(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _token_places(item, (*path, index))
    elif isinstance(value, str) and TEST_HF_TOKEN in value:
        yield path


def test_hf_token_is_only_a_secret_in_the_secret(run: ProgramRun) -> None:
    holders = []
    for resource in run.resources:
        for path in _token_places(resource.inputs):
            wrapped = any(path[: len(secret)] == secret for secret in resource.secret_paths)
            assert wrapped, f"{resource.type_} {resource.name} {path} holds the HF token in plain text"
            holders.append(resource.type_)
    assert holders == [SECRET]
    assert TEST_HF_TOKEN not in repr(run.outputs)
    # Only the mirror Jobs read it from that Secret; the Ray pods carry none (tests/test_ray_service.py).
    (secret,) = [s.inputs for s in run.of_type(SECRET) if s.inputs["metadata"]["name"] == HF_SECRET_NAME]
    assert secret["metadata"]["name"] == HF_SECRET_NAME
    assert secret["type"] == "Opaque" and secret["stringData"] == {HF_SECRET_KEY: TEST_HF_TOKEN}
    jobs = run.of_type(resource_types.JOB)
    assert jobs
    for job in jobs:
        (container,) = job.inputs["spec"]["template"]["spec"]["containers"]
        assert [e["valueFrom"]["secretKeyRef"] for e in container["env"] if e["name"] == HF_TOKEN_ENV] == [
            {"name": HF_SECRET_NAME, "key": HF_SECRET_KEY}
        ]
    assert HF_SECRET_NAME not in json.dumps(ray_service_spec(run))


# --- dev vs prod: only tiers and autoscaling differ ----------------------------------

# Every input path allowed to differ between stacks, as regular expressions over
# "<type>/<name>:<path>". Each is derived from tier or autoscaling settings.
ALLOWED_STACK_DIFFERENCES = (
    # GPU pools exist per enabled tier; their size, machine (gpusPerNode), zones and spot-ness
    # are tier settings.
    rf"^{NODE_POOL}/gke-gpu-\w+:(<exists>|autoscaling\..*|nodeLocations.*|nodeConfig\.(machineType|spot|taints.*|guestAccelerators.*))$",
    # A tier's on-demand fallback pool (`onDemandFallback`) exists or not, and its compute class
    # lists it or not; the class itself follows the tier's `enabled`.
    rf"^{NODE_POOL}/gke-gpu-\w+-ondemand:<exists>$",
    rf"^{COMPUTE_CLASS}/gke-gpu-\w+-class:(<exists>|spec\.priorities.*)$",
    # Worker groups mirror the tiers; serveConfigV2 carries replica autoscaling and the models
    # of enabled tiers.
    rf"^{RAY_SERVICE}/llm-rayservice:spec\.rayClusterConfig\.workerGroupSpecs.*$",
    rf"^{RAY_SERVICE}/llm-rayservice:spec\.serveConfigV2$",
    # One KServe-style alias per served model: the served models follow the enabled tiers. So
    # does the mirror Job of each served model's revision.
    rf"^{SERVICE}/llm-alias-[a-z0-9-]+-predictor:<exists>$",
    rf"^{resource_types.JOB}/llm-mirror-[a-z0-9-]+:<exists>$",
    # One disruption budget per worker group; how many nodes it keeps follows the warm replicas
    # (minReplicas) and the tier's gpusPerNode.
    rf"^{resource_types.POD_DISRUPTION_BUDGET}/llm-pdb-ray-worker-\w+:(<exists>|spec\.minAvailable)$",
    # A tier's spare nodes (`spareNodes`): its placeholder Deployment exists or not, and so does the
    # placeholders' PriorityClass (only while some tier keeps spare nodes).
    rf"^{resource_types.DEPLOYMENT}/llm-spare-\w+:(<exists>|spec\.replicas)$",
    rf"^{resource_types.PRIORITY_CLASS}/llm-spare-priority-class:<exists>$",
    # The system pool sits in the first zone of the first enabled tier.
    rf"^{NODE_POOL}/gke-system:nodeLocations.*$",
    # The one optional key that is neither: `llm-serving:alertEmail` adds an email notification
    # channel and points the alert policies at it. It changes who hears about an alert, never
    # what serves, scrapes or alerts (README, "Dashboards and alerts").
    rf"^{resource_types.NOTIFICATION_CHANNEL}/observability-alert-email:<exists>$",
    rf"^{resource_types.ALERT_POLICY}/observability-[a-z0-9-]+:notificationChannels.*$",
)


def _flatten(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{path}.{key}" if path else str(key)))
        return flat
    if isinstance(value, list) and value:
        flat = {}
        for index, item in enumerate(value):
            flat.update(_flatten(item, f"{path}[{index}]"))
        return flat
    return {path: value}


def _normalised(run: ProgramRun) -> dict[str, dict[str, Any]]:
    """Inputs by resource, with the stack's own name (its identity, not a setting) masked."""
    # Not after a dot: `pkg.dev` in an Artifact Registry host is not the dev stack.
    masked = re.compile(rf"(?<![\w.]){re.escape(run.stack)}\b")
    return {
        f"{r.type_}/{r.name}": {
            path: masked.sub("<stack>", value) if isinstance(value, str) else value
            for path, value in _flatten(r.inputs).items()
        }
        for r in run.resources
    }


def stack_differences(a: ProgramRun, b: ProgramRun) -> list[str]:
    left, right = _normalised(a), _normalised(b)
    found = []
    for resource in sorted(set(left) | set(right)):
        if resource not in left or resource not in right:
            found.append(f"{resource}:<exists>")
            continue
        for path in sorted(set(left[resource]) | set(right[resource])):
            if left[resource].get(path, "<absent>") != right[resource].get(path, "<absent>"):
                found.append(f"{resource}:{path}")
    return found


def disallowed(differences: list[str]) -> list[str]:
    return [d for d in differences if not any(re.match(p, d) for p in ALLOWED_STACK_DIFFERENCES)]


def test_dev_and_prod_differ_only_in_tier_and_autoscaling(program_runs: dict[str, ProgramRun]) -> None:
    differences = stack_differences(program_runs["dev"], program_runs["prod"])
    assert differences, "the stacks are expected to differ in tiers and autoscaling"
    assert disallowed(differences) == []
    # The differences the stack files really make are all visible.
    assert any("workerGroupSpecs" in d for d in differences)
    assert f"{NODE_POOL}/gke-gpu-a100:<exists>" in differences
    assert f"{NODE_POOL}/gke-gpu-l4-ondemand:<exists>" in differences
    assert f"{COMPUTE_CLASS}/gke-gpu-l4-class:spec.priorities[1].nodepools[0]" in differences


def test_an_alert_email_in_one_stack_is_an_allowed_difference(program_runs: dict[str, ProgramRun]) -> None:
    prod_with_email = run_program(
        "prod", config={**stack_config("prod"), ALERT_EMAIL_KEY: "oncall@example.com"}
    )
    differences = stack_differences(program_runs["prod"], prod_with_email)
    assert f"{resource_types.NOTIFICATION_CHANNEL}/observability-alert-email:<exists>" in differences
    assert disallowed(differences) == []
    assert disallowed(stack_differences(program_runs["dev"], prod_with_email)) == []


def test_rotating_api_keys_changes_only_the_keys_secret(program_runs: dict[str, ProgramRun]) -> None:
    """Adding or removing `llm-serving:apiKeys` is a Secret update: no pod template, no new Ray
    cluster (the head mounts the Secret by name; the ingress re-reads the files)."""
    keys = json.dumps(["sk-team-a-0123456789abcdef", "sk-team-b-0123456789abcdef"])
    with_keys = run_program(
        "dev",
        config={**stack_config("dev"), API_KEYS_KEY: keys},
        secret_keys=[HF_TOKEN_KEY, API_KEYS_KEY],
    )
    assert stack_differences(program_runs["dev"], with_keys) == [
        f"{SECRET}/llm-api-keys:stringData.extra-0",
        f"{SECRET}/llm-api-keys:stringData.extra-1",
    ]


def test_the_stack_rule_fails_on_a_non_tier_difference(
    program_runs: dict[str, ProgramRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_component, "RELEASE_CHANNEL", "RAPID")
    prod_on_rapid = run_program("prod")
    offending = disallowed(stack_differences(program_runs["dev"], prod_on_rapid))
    assert offending == [f"{CLUSTER}/gke:releaseChannel.channel"]


# --- model changes update Serve in place ------------------------------------------------


def test_model_change_touches_only_serve_config(tmp_path: Path, program_runs: dict[str, ProgramRun]) -> None:
    root = copy_inputs(tmp_path)
    catalog = raw_catalog(root)
    served = program_runs["dev"].outputs["served_models"][0]
    model = next(m for m in catalog["models"] if m["id"] == served)
    model["engine"]["max_num_seqs"] = model["engine"].get("max_num_seqs", 16) + 16
    (root / CATALOG_FILE_NAME).write_text(yaml.safe_dump(catalog, sort_keys=False))

    changed = run_program("dev", config=stack_config("dev", root), root=root)
    before, after = ray_service_spec(program_runs["dev"]), ray_service_spec(changed)
    assert after["serveConfigV2"] != before["serveConfigV2"]
    assert after["rayClusterConfig"] == before["rayClusterConfig"], (
        "a model change must not start a new cluster"
    )
    differences = stack_differences(program_runs["dev"], changed)
    assert differences == [f"{RAY_SERVICE}/llm-rayservice:spec.serveConfigV2"]


def test_serve_config_reaches_ray_inline_not_through_a_mounted_file(run: ProgramRun) -> None:
    spec = ray_service_spec(run)
    assert isinstance(spec["serveConfigV2"], str)
    configs = document_llm_configs(yaml.safe_load(spec["serveConfigV2"]))
    assert configs and all("model_loading_config" in config for config in configs)
    # What names a served model: its id and where its weights come from.
    served = {
        value for config in configs for value in config["model_loading_config"].values() if len(value) > 3
    }
    for config_map in run.of_type(CONFIG_MAP):
        # The code ConfigMaps hold Python source (which names the config's fields), never a model.
        data = yaml.safe_dump(config_map.inputs["data"])
        assert "serveConfig" not in data, "the serve config must not live in a ConfigMap"
        assert not {value for value in served if value in data}, "models must not live in a ConfigMap"
        assert config_map.inputs["immutable"] is True
    rendered = yaml.safe_dump(spec["rayClusterConfig"])
    assert "serveConfig" not in rendered


def test_every_config_map_is_read_by_the_ray_pods_or_the_mirror_jobs(run: ProgramRun) -> None:
    names = {c.inputs["metadata"]["name"] for c in run.of_type(CONFIG_MAP)}
    mirror_code = {
        v["configMap"]["name"]
        for job in run.of_type(resource_types.JOB)
        for v in job.inputs["spec"]["template"]["spec"]["volumes"]
        if "configMap" in v
    }
    assert len(mirror_code) == 1 and mirror_code < names
    names -= mirror_code
    spec = ray_service_spec(run)["rayClusterConfig"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group, container in zip(groups, ray_containers(ray_service_spec(run)), strict=True):
        read = {ref["configMapRef"]["name"] for ref in container["envFrom"]}
        read |= {v["configMap"]["name"] for v in group["template"]["spec"]["volumes"] if "configMap" in v}
        assert read == names


# --- bad input stops the program before anything is registered --------------------------


def _run_expecting_error(stack: str, config: dict[str, Any], secret_keys: list[str] | None = None) -> str:
    with pytest.raises(pulumi.RunError) as raised:
        run_program(stack, config=config, secret_keys=secret_keys)
    message = str(raised.value)
    assert "Traceback" not in message
    return message


def test_missing_hf_token_is_refused() -> None:
    message = _run_expecting_error("dev", stack_config("dev", with_token=False))
    assert "pulumi config set --secret llm-serving:hfToken" in message
    assert re.search(r"Pulumi\.dev\.yaml:\d+: config\.llm-serving:hfToken: ", message)


def test_unknown_stack_key_is_refused_with_its_name() -> None:
    config = {**stack_config("dev"), "llm-serving:clusterName": "mine"}
    message = _run_expecting_error("dev", config)
    assert "llm-serving:clusterName" in message


def test_bad_tier_value_is_refused_at_its_line() -> None:
    """The engine's value is wrong; the problem points at the line a person edits in the stack file."""
    config = copy.deepcopy(stack_config("dev"))
    config[TIERS_KEY]["l4"]["maxNodes"] = 0
    message = _run_expecting_error("dev", config)
    # The line of l4's maxNodes, found by writing a marker there.
    marked = tier_block("l4", "maxNodes", "maxNodes: <marker>")(stack_file("dev").read_text())
    line = find_line(marked, "<marker>")
    assert f"Pulumi.dev.yaml:{line}: config.llm-serving:tiers.l4.maxNodes: " in message


def test_plain_text_token_in_the_stack_file_is_refused(tmp_path: Path) -> None:
    root = copy_inputs(tmp_path)
    with stack_file("dev", root).open("a") as written:
        written.write(f"  {HF_TOKEN_KEY}: {TEST_HF_TOKEN}\n")
    with pytest.raises(pulumi.RunError) as raised:
        run_program("dev", config=stack_config("dev", root), root=root)
    assert "pulumi config set --secret llm-serving:hfToken <token> -s dev" in str(raised.value)
    assert TEST_HF_TOKEN not in str(raised.value)


def test_keys_the_engine_does_not_pass_come_from_the_stack_file(program_runs: dict[str, ProgramRun]) -> None:
    # Automation API or another harness may pass only the secret; the stack file supplies the rest.
    partial = run_program("dev", config={HF_TOKEN_KEY: TEST_HF_TOKEN}, secret_keys=[HF_TOKEN_KEY])
    full = program_runs["dev"]
    assert sorted((r.type_, r.name) for r in partial.resources) == sorted(
        (r.type_, r.name) for r in full.resources
    )
    assert partial.one(RAY_SERVICE).inputs == full.one(RAY_SERVICE).inputs


def test_every_registered_resource_type_is_named_in_resource_types(run: ProgramRun) -> None:
    # The policy pack and the report match on these tokens: one the SDK spells differently
    # would make a rule or a manifest silently skip the resource.
    tokens = {value for name, value in vars(resource_types).items() if name.isupper()}
    custom = {resource.type_ for resource in run.resources if resource.custom}
    assert custom <= tokens, custom - tokens
