"""How applications reach the models, and what nothing else may reach. Pure: no Pulumi.

- **Keys.** A Secret `openai-api-keys` holds one key per data entry: one the stack generates,
  plus `llm-serving:apiKeys`. It is mounted on the Ray head, where the OpenAI ingress checks
  `Authorization: Bearer` (`serve/openai_app.py`). The Secret's name is fixed and its content is
  not in any pod template, so adding or removing a key changes no RayCluster hash (KubeRay v1.7.0
  `utils.GenerateHashWithoutReplicasAndWorkersToDelete` hashes the cluster spec only): `pulumi up`
  rewrites the Secret, the kubelet updates the mounted files when it next syncs the pod
  (typically within one to two minutes: a removed key works that long), and the ingress reads
  them again every few seconds. No new Ray cluster.
- **One internal address.** KubeRay builds the serve Service from `spec.serveService`, keeping
  its type, annotations and `loadBalancerIP`, replacing the selector with the active cluster's
  and merging ports by name (`common/service.go` `BuildServeService`, v1.7.0). It does so only
  when it creates the Service; later it copies just the spec, and only when it switches clusters
  (`rayservice_controller.go` `reconcileServices`), so these values are chosen once, here. It is a
  GKE internal passthrough Network Load Balancer (`networking.gke.io/load-balancer-type:
  Internal`, with global access; GKE "LoadBalancer Service parameters") on a static internal
  address the stack reserves in the node subnetwork, so the URL is known at preview and survives
  every upgrade. Chosen over a Gateway of class `gke-l7-rilb`: that needs a proxy-only subnet,
  the Gateway API on the cluster and an HTTPRoute KubeRay's NewCluster switch would not move
  (KubeRay moves only the serve Service's selector); an L4 load balancer adds no hop and no idle
  proxy cost, and authentication is the app's job either way. Port 80 on the Service, Serve's
  8000 on the pod. KubeRay creates the serve Service only once every Serve application is
  RUNNING (`rayservice_controller.go` `reconcileServicesToReadyCluster`), so the address answers
  from then on.
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
from infra.versions import KUBERAY_NAMESPACE
from serve.serve_config import SERVE_HTTP_PORT

GENERATED_KEY_NAME: Final = "generated"
GENERATED_KEY_LENGTH: Final = 48
EXTRA_KEY_PREFIX: Final = "extra-"

SERVE_SERVICE_NAME: Final = f"{RAY_SERVICE_NAME}-serve-svc"  # KubeRay's GenerateServeServiceName
SERVE_SERVICE_PORT: Final = 80
# Internal, and reachable from the VPC's other regions too (GKE "LoadBalancer Service parameters":
# global access). KubeRay copies annotations only when it first creates the Service.
INTERNAL_LB_ANNOTATIONS: Final = {
    "networking.gke.io/load-balancer-type": "Internal",
    "networking.gke.io/internal-load-balancer-allow-global-access": "true",
}

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
