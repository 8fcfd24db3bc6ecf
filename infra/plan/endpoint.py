"""How applications reach the models, and what nothing else may reach. Pure: no Pulumi.

- **Keys.** A Secret `openai-api-keys` holds one key per data entry: one the stack generates,
  plus `llm-serving:apiKeys`. It is mounted on the Ray head, where the OpenAI ingress checks
  `Authorization: Bearer` (`serve/openai_app.py`). The Secret's name is fixed and its content is
  not in any pod template, so adding or removing a key changes no RayCluster hash (KubeRay v1.7.0
  `utils.GenerateHashWithoutReplicasAndWorkersToDelete` hashes the cluster spec only): `pulumi up`
  rewrites the Secret, the kubelet updates the mounted files when it next syncs the pod
  (typically within one to two minutes: a removed key works that long), and the ingress reads
  them again every few seconds. No new Ray cluster.
- **One internal address.** A GKE internal passthrough Network Load Balancer
  (`networking.gke.io/load-balancer-type: Internal`, with global access; GKE "LoadBalancer Service
  parameters") on a static internal address the stack reserves in the node subnetwork, so the URL
  is known at preview and survives every upgrade. Chosen over a Gateway of class `gke-l7-rilb`:
  that needs a proxy-only subnet, the Gateway API on the cluster and an HTTPRoute KubeRay's
  NewCluster switch would not move (KubeRay moves only the serve Service's selector); an L4 load
  balancer adds no hop and no idle proxy cost, and authentication is the app's job either way.
  Port 80 on the Service, Serve's 8000 on the pod.
- **It exists before the models do.** KubeRay v1.7.0 creates the serve Service only once every
  Serve application is RUNNING (`rayservice_controller.go` `getAndCheckServeStatus` sets `isReady`
  false for any other status; `reconcileServicesToReadyCluster` runs only when a cluster is
  ready), so one warm model that cannot start (no capacity, a bad revision) would keep the
  endpoint from existing at all. So the stack creates the Service itself, before the RayService,
  under the name KubeRay uses (`serve_service_object`). KubeRay finds it and, at the first
  readiness, rewrites only its spec, keeping its ClusterIP and metadata (`reconcileServices`: an
  existing Service is updated when its selector's `ray.io/cluster` differs, else left alone).
  Until then it selects the head by labels KubeRay sets itself: `ray.io/node-type: head`
  (`common/pod.go` `labelPod`, not overridable) and `ray.io/serve: "true"`, which KubeRay gives
  the head once its Serve proxy answers (`updateHeadPodServeLabel`, for the active and the
  pending cluster; `BuildPod` starts it at "false"). The head proxy answers as soon as it has a
  route (ray/serve/_private/proxy_router.py `ready_for_traffic`: the head is ready with no
  replica), so the router and every model that runs answer while another model still deploys.
  KubeRay then copies the spec from `spec.serveService` on every cluster switch, so the two are
  built here from one function and must stay equal except for the selector. The selector is
  KubeRay's from then on: Pulumi ignores it (`ignore_changes`), and since KubeRay's update owns the
  (atomic) selector, pulumi-kubernetes' server-side apply leaves an ignored field another manager
  owns out of its patch (provider `handleSSAIgnoreFields`), so a later `pulumi up` never points
  it back at both clusters. Without the cluster label, during a
  NewCluster upgrade it would select both heads, so the label-only selector is right only before
  KubeRay's first switch, when there is one cluster (or, after a cluster-spec change made before
  any readiness, the old pending cluster for KubeRay's deletion delay). Pulumi does not wait for
  it (`pulumi.com/skipAwait`): its await wants endpoints and the load balancer's address
  (pulumi-kubernetes `core/v1` Service), and the head only exists after the RayService, which
  waits for the Service. On destroy Pulumi deletes it after the RayService and waits until GKE's
  Service finalizer has removed the load balancer, before the namespace and the address. The
  Service carries none of KubeRay's association labels, so KubeRay's suspend (which deletes
  Services by those labels: `deleteRayServiceOwnedResources`) leaves it, and no owner reference,
  so deleting the RayService does not garbage-collect it.
- **Network policies** (enforced by Dataplane V2): every pod of the namespace refuses ingress
  except what these allow: Ray pods to each other on any port (GCS, raylet, object manager,
  workers); the KubeRay operator to the dashboard (it reads Serve's status there:
  `utils/dashboardclient`); Managed Prometheus' collectors to the metrics port; and Serve's HTTP
  port from anywhere (the operator's proxy health check uses it too): a client's address reaches
  the pod unchanged or rewritten to a node's (`externalTrafficPolicy: Cluster`), so no selector
  can single out the load balancer. The ILB is internal and the nodes private: only the VPC
  reaches it, and every route needs a key. KubeRay's httpGet probes (port 52365, Ray >= 2.53)
  come from the pod's own node, which NetworkPolicy always admits.
- **KServe-style names.** `<model-id>-predictor` for every served model: an ExternalName
  Service pointing at the serve Service's cluster DNS name, so `http://<id>-predictor.llm-serving
  .svc.cluster.local/v1` reaches the one endpoint the way KServe's predictor URLs do (port 80).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from infra.plan.network import NODE_CIDR
from infra.plan.ray_service import NAMESPACE, PORTS, RAY_SERVICE_NAME
from infra.plan.worker_readiness import SERVE_PORT_NAME
from infra.resource_types import (
    GKE_INTERNAL_LOAD_BALANCER,
    GKE_LOAD_BALANCER_TYPE_ANNOTATION,
    SKIP_AWAIT_ANNOTATION,
)
from infra.versions import KUBERAY_NAMESPACE
from serve.serve_config import SERVE_HTTP_PORT

GENERATED_KEY_NAME: Final = "generated"
GENERATED_KEY_LENGTH: Final = 48
EXTRA_KEY_PREFIX: Final = "extra-"

SERVE_SERVICE_NAME: Final = f"{RAY_SERVICE_NAME}-serve-svc"  # KubeRay's GenerateServeServiceName
SERVE_SERVICE_PORT: Final = 80
# Internal, and reachable from the VPC's other regions too (GKE "LoadBalancer Service parameters":
# global access). On the stack's Service from its creation; KubeRay never rewrites metadata.
INTERNAL_LB_ANNOTATIONS: Final = {
    GKE_LOAD_BALANCER_TYPE_ANNOTATION: GKE_INTERNAL_LOAD_BALANCER,
    "networking.gke.io/internal-load-balancer-allow-global-access": "true",
}

# The serve Service's selector until KubeRay's first switch: the head of whichever cluster has a
# live Serve proxy. Both labels are KubeRay's own (module docstring), v1.7.0 `utils/constant.go`
# RayNodeTypeLabelKey and RayClusterServingServiceLabelKey.
HEAD_SERVE_SELECTOR: Final = {"ray.io/node-type": "head", "ray.io/serve": "true"}
# What Pulumi leaves to KubeRay once it has taken the Service over.
KUBERAY_OWNED_SERVICE_FIELDS: Final = ("spec.selector",)

KSERVE_SUFFIX: Final = "-predictor"
_DNS_1035: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_LABEL_MAX: Final = 63

OPERATOR_NAMESPACE: Final = KUBERAY_NAMESPACE
# Managed Service for Prometheus' collectors: ordinary DaemonSet pods (no hostNetwork), in
# `gke-gmp-system` under GKE's managed collection and `gmp-system` in the self-deployed /
# multi-cloud installs (GoogleCloudPlatform/prometheus-engine manifests/operator.yaml). Both are
# allowed: a wrong guess here silences every dashboard and alert.
GMP_NAMESPACES: Final = ("gke-gmp-system", "gmp-system")
METRICS_PORT: Final = 8080  # KubeRay v1.7.0 utils.DefaultMetricsPort
RAY_POD_SELECTOR: Final = {"ray.io/is-ray-node": "yes"}  # KubeRay common/pod.go labelPod
DENY_ALL_POLICY: Final = "deny-ingress"
RAY_POLICY: Final = "ray-pods"


def serve_address(node_cidr: str = NODE_CIDR) -> str:
    """The internal address of the OpenAI endpoint: the last address of the node subnetwork that
    Google Cloud does not reserve (it keeps the network, gateway, second-to-last and broadcast
    addresses: VPC "Subnets", reserved IPv4 addresses). Nodes take addresses from the bottom."""
    network = ipaddress.ip_network(node_cidr)
    return str(network.broadcast_address - 2)


def internal_url(address: str) -> str:
    return f"http://{address}/v1"


def cluster_url() -> str:
    return f"http://{SERVE_SERVICE_NAME}.{NAMESPACE}.svc.cluster.local/v1"


def serve_service(address: str) -> dict[str, Any]:
    """The RayService `spec.serveService`: KubeRay sets its name, selector and labels."""
    return {
        "metadata": {"annotations": dict(INTERNAL_LB_ANNOTATIONS)},
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerIP": address,
            # Named: only pods that declare a `serve` port (the head) are its endpoints, though Ready
            # workers carry the Service's selector labels too (infra/plan/worker_readiness.py).
            "ports": [{"name": SERVE_PORT_NAME, "port": SERVE_SERVICE_PORT, "targetPort": SERVE_PORT_NAME}],
        },
    }


def serve_service_object(address: str) -> dict[str, Any]:
    """The serve Service the stack creates before the RayService (metadata.name and spec): the
    RayService's `serveService` under KubeRay's name, selecting the live head by labels."""
    document = serve_service(address)
    return {
        "metadata": {
            "name": SERVE_SERVICE_NAME,
            "annotations": {**document["metadata"]["annotations"], SKIP_AWAIT_ANNOTATION: "true"},
        },
        "spec": {**document["spec"], "selector": dict(HEAD_SERVE_SELECTOR)},
    }


def api_key_names(extra: int) -> list[str]:
    """Data keys of the keys Secret: the generated key, then one per `llm-serving:apiKeys` item."""
    return [GENERATED_KEY_NAME, *(f"{EXTRA_KEY_PREFIX}{index}" for index in range(extra))]


@dataclass(frozen=True)
class Alias:
    model_id: str
    service: str | None
    """The `<id>-predictor` Service name, or None when the id cannot make one (`reason`)."""
    reason: str = ""


def kserve_aliases(model_ids: Sequence[str]) -> list[Alias]:
    aliases = []
    for model_id in model_ids:
        name = f"{model_id}{KSERVE_SUFFIX}"
        if len(name) > DNS_LABEL_MAX:
            aliases.append(Alias(model_id, None, f"{name} is longer than {DNS_LABEL_MAX} characters"))
        elif not _DNS_1035.match(name):
            aliases.append(
                Alias(
                    model_id,
                    None,
                    f"{name} is not a DNS label (lowercase letters, digits, '-'; a letter first)",
                )
            )
        else:
            aliases.append(Alias(model_id, name))
    return aliases


def alias_service(alias: Alias) -> dict[str, Any]:
    return {
        "metadata": {"name": alias.service, "labels": {"llm-serving/model": alias.model_id}},
        "spec": {
            "type": "ExternalName",
            "externalName": f"{SERVE_SERVICE_NAME}.{NAMESPACE}.svc.cluster.local",
        },
    }


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def _namespaces(names: Sequence[str]) -> dict[str, Any]:
    return {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(names)}
            ]
        }
    }


def network_policies() -> list[dict[str, Any]]:
    """NetworkPolicy documents (metadata.name and spec) for the serving namespace."""
    ray_pods = {"matchLabels": dict(RAY_POD_SELECTOR)}
    return [
        {
            "metadata": {"name": DENY_ALL_POLICY},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": []},
        },
        {
            "metadata": {"name": RAY_POLICY},
            "spec": {
                "podSelector": ray_pods,
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": [{"podSelector": ray_pods}]},
                    {
                        "from": [_namespace(OPERATOR_NAMESPACE)],
                        "ports": [{"protocol": "TCP", "port": PORTS["dashboard"]}],
                    },
                    {
                        "from": [_namespaces(GMP_NAMESPACES)],
                        "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
                    },
                    {"ports": [{"protocol": "TCP", "port": SERVE_HTTP_PORT}]},
                ],
            },
        },
    ]
