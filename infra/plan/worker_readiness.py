"""GPU worker readiness that means "this Ray node is up", and why it keeps workers out of the
serve Service. Pure: no Pulumi.

**The problem.** KubeRay v1.7.0 gives every Ray container a readiness probe unless the template
sets one (`common/pod.go` `initLivenessAndReadinessProbe`, l.795 `if rayContainer.ReadinessProbe
== nil`). On a RayService worker it adds a check of the Serve proxy on the pod, `wget
localhost:8000/-/healthz` with failureThreshold 1 (l.813-826). Serve's proxies run on the head only
(`proxy_location: HeadOnly`, serve/serve_config.py), so that check never passes: every worker is
NotReady for its whole life (ray-project/kuberay#4994). A PodDisruptionBudget over pods that are
never Ready is inert with `unhealthyPodEvictionPolicy: AlwaysAllow` and blocks every eviction
with `IfHealthyBudget` (infra/plan/disruption.py).

**The fix.** The worker template sets the probe itself: the one KubeRay uses for Ray >= 2.53 on
every node, an HTTP GET of the dashboard agent's `/api/healthz` on port 52365 (`pod.go` l.743-750,
`utils/constant.go` `RayNodeHealthPath`, `DefaultDashboardAgentListenPort`), which answers 200 while
the node's raylet is alive (ray/dashboard/modules/reporter/healthz_agent.py `unified_health`, Ray
2.60), with KubeRay's own timings (`constant.go` l.306-312). KubeRay then adds no proxy check.

**Why that keeps workers out of the serve Service.** Workers carry `ray.io/serve=true` (`pod.go`
l.836-843), which the serve Service selects on, so a Ready worker would be an endpoint. It is not,
because the Service's port names its target: `targetPort: serve`. KubeRay keeps a user-given
`spec.serveService` port whole when its name matches a serve port of the head container
(`common/service.go` `BuildServeService`, l.245-263), so the named target reaches the Service. The
EndpointSlice controller resolves a named target per pod among the pod's declared container ports
and skips the Service port for a pod that declares none of that name (kubernetes/kubernetes
`staging/src/k8s.io/endpointslice/utils.go` `getEndpointPorts`, `FindPort`); such a pod lands in a
slice with no ports (`reconciler.go` groups endpoints by their port set). kube-proxy builds a
Service port's backends only from a slice's ports (`pkg/proxy/endpointslicecache.go`
`endpointInfoByServicePort`), and Cilium, which GKE Dataplane V2 runs, attaches a slice's
addresses to the ports the slice lists (cilium `pkg/k8s/endpoints.go` `ParseEndpointSliceV1`). The
head declares a `serve` container port (infra/plan/ray_service.py PORTS); workers declare only the
metrics port KubeRay adds (`pod.go` l.689-695). All read 2026-11-27 (Kubernetes at its stored
HEAD; Cilium's stored copy).

Side effect: KubeRay counts the RayService's serve endpoints over every EndpointSlice of the
Service, port-less ones included (`rayservice_controller.go` `calculateNumServeEndpointsFromSlices`),
so Ready workers count toward `status.numServeEndpoints` and the `Ready` condition. Only real GKE
shows the EndpointSlices (`kubectl get endpointslices -l kubernetes.io/service-name=llm-serve-svc`).

Changing the worker probe changes the pod template: KubeRay starts one NewCluster upgrade when it
is first applied (and switches the serve Service, with its new named target, at the same time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from serve.serve_config import PROXY_LOCATION

# KubeRay v1.7.0 ray-operator/controllers/ray/utils/constant.go.
SERVE_PORT_NAME: Final = "serve"  # ServingPortName: the head's serve port, merged by this name
RAY_NODE_HEALTH_PATH: Final = "/api/healthz"  # RayNodeHealthPath
DASHBOARD_AGENT_PORT: Final = 52365  # DefaultDashboardAgentListenPort
READINESS_TIMINGS: Final = {  # DefaultReadinessProbe*
    "initialDelaySeconds": 10,
    "timeoutSeconds": 2,
    "periodSeconds": 5,
    "successThreshold": 1,
    "failureThreshold": 10,
}
SERVE_PROXY_HEALTH_PATH: Final = "/-/healthz"  # RayServeProxyHealthPath, on the serve port
HEAD_ONLY: Final = "HeadOnly"  # Serve's ProxyLocation value with no proxy on worker nodes
DEFAULT_PROTOCOL: Final = "TCP"  # Kubernetes' default for container and Service ports


def worker_readiness_probe() -> dict[str, Any]:
    """KubeRay's own node probe for Ray >= 2.53, set on the worker so KubeRay adds no proxy check."""
    return {"httpGet": {"path": RAY_NODE_HEALTH_PATH, "port": DASHBOARD_AGENT_PORT}, **READINESS_TIMINGS}


def worker_can_be_ready(container: Mapping[str, Any], proxy_location: str = PROXY_LOCATION) -> bool:
    """Whether a RayService worker built from `container` can ever be Ready: with its own probe (a
    node check that passes while the raylet lives) yes; with KubeRay's, only where Serve runs a
    proxy on the worker, i.e. not under HeadOnly."""
    if container.get("readinessProbe") is not None:
        return True
    return proxy_location != HEAD_ONLY


def endpoint_port(service_port: Mapping[str, Any], containers: Sequence[Mapping[str, Any]]) -> int | None:
    """The pod port a Service port reaches on a pod, or None when the pod has no such port
    (EndpointSlice `FindPort`: a number is taken as is; a name must match a declared container
    port of the same protocol). An absent targetPort is the Service port itself."""
    target = service_port.get("targetPort", service_port["port"])
    if isinstance(target, int):
        return target
    protocol = service_port.get("protocol", DEFAULT_PROTOCOL)
    for container in containers:
        for port in container.get("ports") or []:
            if port.get("name") == target and port.get("protocol", DEFAULT_PROTOCOL) == protocol:
                return int(port["containerPort"])
    return None


def receives_serve_traffic(
    service_port: Mapping[str, Any], containers: Sequence[Mapping[str, Any]], ready: bool
) -> bool:
    """Whether the data path sends a Service port's traffic to a selected pod: it must be Ready and
    the slice it lands in must list the port (kube-proxy and Cilium take backends per slice port)."""
    return ready and endpoint_port(service_port, containers) is not None


def kuberay_serve_ports(
    head_ports: Sequence[Mapping[str, Any]], user_ports: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The serve Service's ports as KubeRay builds them (`BuildServeService`): the head container's
    ports named `serve` or `serve-*`, each replaced whole by the user's port of the same name."""
    by_name = {port["name"]: port for port in user_ports}
    auto = [
        {"name": port["name"], "port": port["containerPort"]}
        for port in head_ports
        if port["name"] == SERVE_PORT_NAME or port["name"].startswith(f"{SERVE_PORT_NAME}-")
    ]
    return [dict(by_name.get(port["name"], port)) for port in auto] if auto else [dict(p) for p in user_ports]
