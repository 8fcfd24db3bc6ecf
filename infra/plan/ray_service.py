"""The RayService spec: a CPU head on the system pool, one autoscaling worker group per GPU tier.

What goes where, so a model change never rebuilds the GPU cluster: every catalog model
lives only in `serveConfigV2` (inline, never a mounted file that can be stale); the
`rayClusterConfig` depends only on tiers, the image and the env ConfigMap's name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import yaml

import serve.openai_app
from infra.plan.gke_nodes import schedulable
from infra.plan.model_store import RAY_KSA
from infra.plan.mounted_code import PACKAGE, code_volume, content_name, module_files
from infra.plan.node_pools import NodePoolSpec, worker_node_selector, worker_tolerations
from infra.plan.worker_readiness import SERVE_PORT_NAME, worker_readiness_probe
from infra.settings import MAX_NODES_PER_TIER
from serve.gpu_share import SPREAD_RESOURCE
from serve.serve_config import (
    API_KEYS_MOUNT_PATH,
    HEAD_NODE_RESOURCE,
    REQUEST_TIMEOUT_SECONDS,
    ROUTER_TIMEOUT_ENV,
    SERVE_HTTP_PORT,
)
from serve.tiers import TIERS, TierName
from serve.versions import RAY_LLM_IMAGE, RAY_VERSION

NAMESPACE: Final = "llm-serving"
RAY_SERVICE_NAME: Final = "llm"
HF_SECRET_NAME: Final = "hf-token"
HF_SECRET_KEY: Final = "token"
ENV_CONFIG_MAP_PREFIX: Final = "ray-env"
# Env every Ray process starts with: no phoning home from Ray, vLLM or the HF hub client.
RAY_POD_ENV: Final = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "VLLM_NO_USAGE_STATS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}
# NewCluster: a pod-template change starts a second cluster and switches traffic when its
# apps are healthy. It needs spare GPU quota for a while; model changes never trigger it.
UPGRADE_STRATEGY: Final = "NewCluster"
AUTOSCALER_IDLE_TIMEOUT_SECONDS: Final = 300

HEAD_CPUS: Final = 4
HEAD_MEMORY_GIB: Final = 16
# KubeRay's defaults for the autoscaler sidecar (ray-operator/controllers/ray/common/pod.go
# `BuildAutoscalerContainer`, v1.7.0), written out so the node-fit check counts them; setting
# `autoscalerOptions.resources` replaces the whole block, so limits are set too.
AUTOSCALER_CPU_MILLIS: Final = 500
AUTOSCALER_MEMORY_MIB: Final = 512
# The RayCluster's worker-group bounds are not what limits scaling and must never change:
# KubeRay v1.7.0 leaves replicas/minReplicas/maxReplicas out of the hash it compares
# (utils/util.go `GenerateHashWithoutReplicasAndWorkersToDelete`), so an edited bound would
# never reach the running cluster. Ray may ask for up to the most nodes any stack allows;
# what binds is Serve's max_replicas (serveConfigV2, applied in place) and the GKE pool's
# maxNodes (applied by GKE). minNodes keeps GKE nodes warm; Ray starts a worker pod on one in
# seconds when a replica needs it.
WORKER_MIN_REPLICAS: Final = 0
WORKER_MAX_REPLICAS: Final = MAX_NODES_PER_TIER
# A reclaimed spot VM gets 30 s notice, of which GKE's graceful node shutdown gives ordinary
# pods 15 s and keeps the rest for system pods ("Spot VMs", termination:
# https://cloud.google.com/kubernetes-engine/docs/concepts/spot-vms, read 2026-11-26); a
# longer grace period is cut there. Every GPU worker uses it, spot or not, so that switching
# a tier to spot changes nothing KubeRay would have to roll out.
SPOT_POD_SHUTDOWN_SECONDS: Final = 15
WORKER_GRACE_SECONDS: Final = SPOT_POD_SHUTDOWN_SECONDS
# On SIGTERM, `ray start` marks the node draining and waits up to this long for it to empty
# before killing its processes (ray/_private/node.py `_drain_node_before_shutdown`, default
# 30 s: longer than the pod lives). Under the grace period, with room for the teardown (killing
# the node's processes, `kill_all_processes`); Serve stops the node's replicas
# REPLICA_GRACEFUL_SHUTDOWN_SECONDS before the drain's deadline (infra/plan/reclaim.py).
RAY_TEARDOWN_SECONDS: Final = 3
WORKER_DRAIN_TIMEOUT_SECONDS: Final = WORKER_GRACE_SECONDS - RAY_TEARDOWN_SECONDS
DRAIN_TIMEOUT_ENV: Final = "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"

# The app builder (serve/openai_app.py) reaches the Ray image as a ConfigMap mounted at
# APP_CODE_MOUNT_PATH, laid out as the package it is in this repo, so the serve config's
# import path `serve.openai_app:build_app` is the same on the cluster and locally. Named by
# content like the env ConfigMap: a code change is a new pod template (a NewCluster upgrade).
APP_CODE_CONFIG_MAP_PREFIX: Final = "ray-app"
APP_CODE_MOUNT_PATH: Final = "/opt/llm-serving"
APP_CODE_VOLUME: Final = "app-code"
APP_CODE_PACKAGE: Final = PACKAGE
# The keys Secret (infra/plan/endpoint.py), mounted where the ingress reads it: the head.
API_KEYS_SECRET_NAME: Final = "openai-api-keys"
API_KEYS_VOLUME: Final = "api-keys"

# The serve port by KubeRay's name for it: the serve Service targets it by that name.
PORTS: Final = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, SERVE_PORT_NAME: SERVE_HTTP_PORT}


def env_config_map_name(data: Mapping[str, str] = RAY_POD_ENV) -> str:
    """Content-addressed, so a change makes a new immutable ConfigMap and a new pod template."""
    return content_name(ENV_CONFIG_MAP_PREFIX, data)


def app_code_files() -> dict[str, str]:
    """The ConfigMap data that makes `serve.openai_app` importable in the Ray image."""
    return module_files(serve.openai_app)


def app_code_config_map_name(files: Mapping[str, str] | None = None) -> str:
    return content_name(APP_CODE_CONFIG_MAP_PREFIX, app_code_files() if files is None else files)


def _app_code_volume() -> dict[str, Any]:
    files = app_code_files()
    return code_volume(APP_CODE_VOLUME, app_code_config_map_name(files), files)


def ray_resources_param(resources: dict[str, int]) -> str:
    """rayStartParams `resources`: a JSON object in single quotes, the form KubeRay v1.7.0 writes
    itself (common/pod.go `addWellKnownAcceleratorResources`, l.1471). KubeRay trims the quotes and
    parses the JSON before it adds `num-gpus` from the container's GPU limit (`getResourcesMap`,
    l.1494-1506; escaped inner quotes fail that parse, and KubeRay then skips `num-gpus` and logs an
    error for every pod); Ray's autoscaler drops the outer pair and any backslashes
    (autoscaler/_private/kuberay/autoscaling_config.py `_get_custom_resources`); and the shell
    that runs `ray start --resources=<value>` takes the single quotes off."""
    return "'" + json.dumps(resources, sort_keys=True) + "'"


def worker_container_resources(pool: NodePoolSpec) -> tuple[int, int]:
    """Whole CPUs and GiB a worker pod requests: all an empty node of the pool can schedule
    (GKE's allocatable less its own node pods, `gke_nodes.schedulable`), one worker per node."""
    node = schedulable(pool.machine)
    return node.cpu_millis // 1000, node.memory_mib // 1024


def _ray_env() -> list[dict[str, Any]]:
    # Weights come from the stack's bucket (infra/plan/model_store.py); the Ray pods carry no HF
    # token, and any Hub lookup left in a library fails at once instead of waiting on the network.
    return [{"name": "HF_HUB_OFFLINE", "value": "1"}]


def _quantities(cpu_millis: int, memory_mib: int, gpus: int = 0) -> dict[str, dict[str, str]]:
    """Requests equal to limits (Guaranteed QoS: the last pods the kubelet evicts)."""
    cpu = str(cpu_millis // 1000) if cpu_millis % 1000 == 0 else f"{cpu_millis}m"
    memory = f"{memory_mib // 1024}Gi" if memory_mib % 1024 == 0 else f"{memory_mib}Mi"
    quantities = {"cpu": cpu, "memory": memory}
    if gpus:
        quantities["nvidia.com/gpu"] = str(gpus)
    return {"requests": dict(quantities), "limits": dict(quantities)}


def _container(name: str, image: str, cpus: int, memory_gib: int, gpus: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "env": [*_ray_env(), {"name": "PYTHONPATH", "value": APP_CODE_MOUNT_PATH}],
        "envFrom": [{"configMapRef": {"name": env_config_map_name()}}],
        "resources": _quantities(cpus * 1000, memory_gib * 1024, gpus),
        "volumeMounts": [{"name": APP_CODE_VOLUME, "mountPath": APP_CODE_MOUNT_PATH, "readOnly": True}],
    }


def head_group(system: NodePoolSpec, image: str = RAY_LLM_IMAGE) -> dict[str, Any]:
    container = _container("ray-head", image, HEAD_CPUS, HEAD_MEMORY_GIB)
    # The OpenAI ingress runs here; its own limit must not cut a request waiting out a cold start.
    container["env"].append({"name": ROUTER_TIMEOUT_ENV, "value": str(REQUEST_TIMEOUT_SECONDS)})
    container["ports"] = [{"name": name, "containerPort": port} for name, port in PORTS.items()]
    # The ingress (on the head only) reads the keys from these files; the kubelet rewrites them
    # when the Secret changes, so keys rotate without touching the pod template.
    container["volumeMounts"].append(
        {"name": API_KEYS_VOLUME, "mountPath": API_KEYS_MOUNT_PATH, "readOnly": True}
    )
    return {
        # num-gpus 0: no model replica may land on the head. The head-only resource is what
        # the OpenAI ingress requires, so it runs here (and requests are accepted while every
        # GPU group is at zero) and never on a GPU node.
        "rayStartParams": {
            "num-gpus": "0",
            "num-cpus": str(HEAD_CPUS),
            "dashboard-host": "0.0.0.0",
            "resources": ray_resources_param({HEAD_NODE_RESOURCE: 1}),
        },
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/component": "ray-head"}},
            "spec": {
                "serviceAccountName": RAY_KSA,
                "nodeSelector": dict(system.labels),
                "containers": [container],
                "volumes": [
                    _app_code_volume(),
                    {"name": API_KEYS_VOLUME, "secret": {"secretName": API_KEYS_SECRET_NAME}},
                ],
            },
        },
    }


def worker_component(tier: TierName) -> str:
    """The worker template's `app.kubernetes.io/component` label: set by us, so the same on every
    Ray cluster KubeRay starts (infra/plan/disruption.py selects on it)."""
    return f"ray-worker-{tier.value}"


def worker_ray_resources(pool: NodePoolSpec) -> dict[str, int]:
    """The custom Ray resources a worker of `pool` declares: its tier's accelerator type and, on
    nodes of several GPUs, the one unit a replica that must be spread asks for
    (serve/gpu_share.py SPREAD_RESOURCE). Declared whatever the catalog and the stack's replicas
    say, so that a stack edit never changes the cluster spec."""
    assert pool.tier is not None, "worker groups are for GPU pools"
    spread = {SPREAD_RESOURCE: 1} if pool.accelerator_count > 1 else {}
    return {**TIERS[pool.tier].ray_resources, **spread}


def worker_group(pool: NodePoolSpec, image: str = RAY_LLM_IMAGE) -> dict[str, Any]:
    assert pool.tier is not None, "worker groups are for GPU pools"
    cpus, memory_gib = worker_container_resources(pool)
    container = _container("ray-worker", image, cpus, memory_gib, pool.accelerator_count)
    container["env"].append({"name": DRAIN_TIMEOUT_ENV, "value": str(WORKER_DRAIN_TIMEOUT_SECONDS)})
    # Ready means "this Ray node is up", not "behind a Serve proxy" (infra/plan/worker_readiness.py).
    container["readinessProbe"] = worker_readiness_probe()
    container["volumeMounts"].append({"name": "dshm", "mountPath": "/dev/shm"})
    return {
        "groupName": pool.tier.value,
        "replicas": WORKER_MIN_REPLICAS,
        "minReplicas": WORKER_MIN_REPLICAS,
        "maxReplicas": WORKER_MAX_REPLICAS,
        "rayStartParams": {
            "num-cpus": str(cpus),
            # The autoscaler knows a group only by what it declares: without the
            # accelerator_type resource a group at zero is never scaled up for a model that
            # asks for it (Ray infers accelerator types only for TPUs).
            "resources": ray_resources_param(worker_ray_resources(pool)),
        },
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/component": worker_component(pool.tier)}},
            "spec": {
                # Reads the model bucket as its Google service account (Workload Identity).
                "serviceAccountName": RAY_KSA,
                "nodeSelector": worker_node_selector(pool.tier),
                "tolerations": worker_tolerations(pool.tier),
                "terminationGracePeriodSeconds": WORKER_GRACE_SECONDS,
                "containers": [container],
                # vLLM's tensor-parallel workers exchange tensors through shared memory.
                "volumes": [
                    _app_code_volume(),
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{memory_gib // 4}Gi"}},
                ],
            },
        },
    }


def ray_cluster_config(
    system: NodePoolSpec, gpu_pools: Sequence[NodePoolSpec], image: str = RAY_LLM_IMAGE
) -> dict[str, Any]:
    """The RayService's `rayClusterConfig`: a function of the pools and the image, never of the models."""
    return {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "version": "v2",
            "upscalingMode": "Default",
            "idleTimeoutSeconds": AUTOSCALER_IDLE_TIMEOUT_SECONDS,
            "resources": _quantities(AUTOSCALER_CPU_MILLIS, AUTOSCALER_MEMORY_MIB),
        },
        "headGroupSpec": head_group(system, image),
        "workerGroupSpecs": [worker_group(pool, image) for pool in gpu_pools],
    }


def ray_service_spec(
    serve_config: dict[str, Any], cluster_config: dict[str, Any], serve_service: dict[str, Any]
) -> dict[str, Any]:
    """`serveService` sits outside `rayClusterConfig`: changing it never starts a new cluster. KubeRay
    copies its spec onto the stack's serve Service on every cluster switch (infra/plan/endpoint.py)."""
    return {
        "upgradeStrategy": {"type": UPGRADE_STRATEGY},
        "serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False),
        "rayClusterConfig": cluster_config,
        "serveService": serve_service,
    }
