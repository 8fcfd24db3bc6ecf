"""What KubeRay v1.7.0 does with a RayService's serve Service and its pods' labels, as a small model
the endpoint tests run the rendered objects through. Read from ray-project/kuberay at v1.7.0,
ray-operator/controllers/ray (2026-11-27); the upgrade strategy is NewCluster, not incremental.

- `serve_service_kuberay_builds`: `common/service.go` `BuildServeService` for a RayService with a
  user `spec.serveService`: the user's Service with the selector replaced by the cluster's
  (`ray.io/cluster` + `ray.io/serve: "true"`), ports merged by name with the head container's serve
  ports (`getServicePorts`, `isServingPort`), KubeRay's labels added and its name set.
- `reconcile_serve_service`: `rayservice_controller.go` `reconcileServices`: create the built
  Service (owned by the RayService) when none exists; keep an existing one whose selector names the
  same cluster; otherwise replace its spec with the built one, keeping its ClusterIP, and nothing
  else (metadata stays).
- `cluster_is_ready`: `getAndCheckServeStatus`: a cluster is ready to get the Service only when it
  has applications and every one is RUNNING; `reconcileServicesToReadyCluster` runs only then.
- `pod_labels`: `common/pod.go` `labelPod` and `BuildPod`: the template's labels, KubeRay's (not
  overridable: node type, group, cluster), and `ray.io/serve`: "true" on workers, "false" on a new
  head until `updateHeadPodServeLabel` finds its Serve proxy healthy.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

SERVE_LABEL: Final = "ray.io/serve"  # utils.RayClusterServingServiceLabelKey
CLUSTER_LABEL: Final = "ray.io/cluster"  # utils.RayClusterLabelKey
ORIGIN_LABELS: Final = ("ray.io/originated-from-cr-name", "ray.io/originated-from-crd")
RUNNING: Final = "RUNNING"  # rayv1.ApplicationStatusEnum.RUNNING


def serve_service_name(ray_service_name: str) -> str:
    return f"{ray_service_name}-serve-svc"  # utils.GenerateServeServiceName


def _is_serving_port(name: str) -> bool:
    return name == "serve" or name.startswith("serve-")


def serve_service_kuberay_builds(
    ray_service_name: str, ray_service_spec: Mapping[str, Any], cluster_name: str
) -> dict[str, Any]:
    user = copy.deepcopy(dict(ray_service_spec["serveService"]))
    head = ray_service_spec["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    detected = [
        {"name": port["name"], "port": port["containerPort"]}
        for port in head.get("ports", [])
        if _is_serving_port(port.get("name", ""))
    ]
    spec = dict(user.get("spec") or {})
    spec["selector"] = {CLUSTER_LABEL: cluster_name, SERVE_LABEL: "true"}
    if detected:
        user_ports = {port["name"]: port for port in spec.get("ports", [])}
        spec["ports"] = [user_ports.get(port["name"], port) for port in detected]
    metadata = dict(user.get("metadata") or {})
    metadata["name"] = metadata.get("name") or serve_service_name(ray_service_name)
    metadata["labels"] = {
        **(metadata.get("labels") or {}),
        "ray.io/originated-from-cr-name": ray_service_name,
        "ray.io/originated-from-crd": "RayService",
        SERVE_LABEL: f"{ray_service_name}-serve",
    }
    return {"metadata": metadata, "spec": spec}


def reconcile_serve_service(
    existing: Mapping[str, Any] | None,
    ray_service_name: str,
    ray_service_spec: Mapping[str, Any],
    cluster_name: str,
) -> tuple[dict[str, Any], str]:
    """The Service after one `reconcileServices` for a ready cluster, and what KubeRay did."""
    built = serve_service_kuberay_builds(ray_service_name, ray_service_spec, cluster_name)
    if existing is None:
        owned = copy.deepcopy(built)
        owned["metadata"]["ownerReferences"] = [{"kind": "RayService", "name": ray_service_name}]
        return owned, "created"
    if (existing["spec"].get("selector") or {}).get(CLUSTER_LABEL) == cluster_name:
        return copy.deepcopy(dict(existing)), "kept"
    updated = copy.deepcopy(dict(existing))
    updated["spec"] = {**copy.deepcopy(built["spec"]), "clusterIP": existing["spec"].get("clusterIP")}
    return updated, "updated"


def cluster_is_ready(application_statuses: Mapping[str, str]) -> bool:
    return bool(application_statuses) and all(status == RUNNING for status in application_statuses.values())


def pod_labels(
    template: Mapping[str, Any], node_type: str, group: str, cluster_name: str, proxy_healthy: bool = False
) -> dict[str, str]:
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels[SERVE_LABEL] = "true" if node_type == "worker" or proxy_healthy else "false"
    labels.update(
        {
            "ray.io/is-ray-node": "yes",
            CLUSTER_LABEL: cluster_name,
            "ray.io/node-type": node_type,
            "ray.io/group": group,
            "app.kubernetes.io/name": "kuberay",
            "app.kubernetes.io/created-by": "kuberay-operator",
        }
    )
    return labels


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())
