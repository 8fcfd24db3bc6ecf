"""The Kubernetes objects a plan's RayService spec becomes, and the containers inside them."""

from __future__ import annotations

import copy
from typing import Any

from infra.plan.ray_service import NAMESPACE, RAY_SERVICE_NAME


def ray_service_document(spec: dict[str, Any]) -> dict[str, Any]:
    """The whole RayService object the program applies with this spec (a deep copy)."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": RAY_SERVICE_NAME, "namespace": NAMESPACE},
        "spec": copy.deepcopy(spec),
    }


def ray_cluster_document(cluster_spec: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster KubeRay creates from a RayService's rayClusterConfig (a deep copy)."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": f"{RAY_SERVICE_NAME}-raycluster", "namespace": NAMESPACE},
        "spec": copy.deepcopy(cluster_spec),
    }


def ray_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container (and init container) of the head and the worker groups of a RayService spec."""
    cluster = spec["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    return [c for t in templates for c in t["spec"]["containers"] + t["spec"].get("initContainers", [])]
