"""The RayService spec: a CPU head on the system pool, one autoscaling worker group per GPU tier.

What goes where, so a model change never rebuilds the GPU cluster: every catalog model
lives only in `serveConfigV2` (inline, never a mounted file that can be stale); the
`rayClusterConfig` depends only on tiers, the image and the env ConfigMap's name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import yaml

from infra.plan.node_pools import NodePoolSpec
from serve.serve_config import HF_TOKEN_ENV, SERVE_HTTP_PORT
from serve.tiers import TIERS, Allocatable, allocatable
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
# What GKE daemonsets (logging, metadata server, device plugin, kube-proxy) take on a GPU node.
DAEMONSET_CPU_MILLIS: Final = 500
DAEMONSET_MEMORY_MIB: Final = 1536
# Spot VMs get ~30 s notice; give the Ray worker that long to exit after SIGTERM.
WORKER_GRACE_SECONDS: Final = 30

PORTS: Final = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "serve": SERVE_HTTP_PORT}


def env_config_map_name(data: Mapping[str, str] = RAY_POD_ENV) -> str:
    """Content-addressed, so a change makes a new immutable ConfigMap and a new pod template."""
    digest = hashlib.sha256(json.dumps(dict(data), sort_keys=True).encode()).hexdigest()[:8]
    return f"{ENV_CONFIG_MAP_PREFIX}-{digest}"


def ray_resources_param(resources: dict[str, int]) -> str:
    """rayStartParams `resources`: a JSON object quoted the way `ray start --resources` takes it."""
    return '"' + json.dumps(resources, sort_keys=True).replace('"', '\\"') + '"'


def worker_container_resources(pool: NodePoolSpec) -> tuple[int, int]:
    """Whole CPUs and GiB a worker pod requests: the node's allocatable less daemonset headroom."""
    node: Allocatable = allocatable(pool.machine)
    cpus = (node.cpu_millis - DAEMONSET_CPU_MILLIS) // 1000
    memory_gib = (node.memory_mib - DAEMONSET_MEMORY_MIB) // 1024
    return cpus, memory_gib


def _ray_env() -> list[dict[str, Any]]:
    return [
        {
            "name": HF_TOKEN_ENV,
            "valueFrom": {"secretKeyRef": {"name": HF_SECRET_NAME, "key": HF_SECRET_KEY}},
        }
    ]


def _container(name: str, cpus: int, memory_gib: int, gpus: int = 0) -> dict[str, Any]:
    quantities: dict[str, str] = {"cpu": str(cpus), "memory": f"{memory_gib}Gi"}
    if gpus:
        quantities["nvidia.com/gpu"] = str(gpus)
    return {
        "name": name,
        "image": RAY_LLM_IMAGE,
        "env": _ray_env(),
        "envFrom": [{"configMapRef": {"name": env_config_map_name()}}],
        "resources": {"requests": dict(quantities), "limits": dict(quantities)},
    }


def head_group(system: NodePoolSpec) -> dict[str, Any]:
    container = _container("ray-head", HEAD_CPUS, HEAD_MEMORY_GIB)
    container["ports"] = [{"name": name, "containerPort": port} for name, port in PORTS.items()]
    return {
        # num-gpus 0: no model replica may land on the head; the OpenAI router does, so that
        # requests are accepted while every GPU group is at zero.
        "rayStartParams": {"num-gpus": "0", "num-cpus": str(HEAD_CPUS), "dashboard-host": "0.0.0.0"},
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/component": "ray-head"}},
            "spec": {"nodeSelector": dict(system.labels), "containers": [container]},
        },
    }


def worker_group(pool: NodePoolSpec) -> dict[str, Any]:
    assert pool.tier is not None, "worker groups are for GPU pools"
    cpus, memory_gib = worker_container_resources(pool)
    container = _container("ray-worker", cpus, memory_gib, pool.accelerator_count)
    container["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    return {
        "groupName": pool.tier.value,
        "replicas": pool.min_nodes,
        "minReplicas": pool.min_nodes,
        "maxReplicas": pool.max_nodes,
        "rayStartParams": {
            "num-cpus": str(cpus),
            # The autoscaler knows a group only by what it declares: without the
            # accelerator_type resource a group at zero is never scaled up for a model that
            # asks for it (Ray infers accelerator types only for TPUs).
            "resources": ray_resources_param(TIERS[pool.tier].ray_resources),
        },
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/component": f"ray-worker-{pool.tier.value}"}},
            "spec": {
                "nodeSelector": dict(pool.labels),
                "tolerations": [taint.toleration() for taint in pool.taints],
                "terminationGracePeriodSeconds": WORKER_GRACE_SECONDS,
                "containers": [container],
                # vLLM's tensor-parallel workers exchange tensors through shared memory.
                "volumes": [
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{memory_gib // 4}Gi"}}
                ],
            },
        },
    }


def ray_cluster_config(system: NodePoolSpec, gpu_pools: Sequence[NodePoolSpec]) -> dict[str, Any]:
    """The RayService's `rayClusterConfig`: a function of the pools alone, never of the models."""
    return {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "version": "v2",
            "upscalingMode": "Default",
            "idleTimeoutSeconds": AUTOSCALER_IDLE_TIMEOUT_SECONDS,
        },
        "headGroupSpec": head_group(system),
        "workerGroupSpecs": [worker_group(pool) for pool in gpu_pools],
    }


def ray_service_spec(serve_config: dict[str, Any], cluster_config: dict[str, Any]) -> dict[str, Any]:
    return {
        "upgradeStrategy": {"type": UPGRADE_STRATEGY},
        "serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False),
        "rayClusterConfig": cluster_config,
    }
