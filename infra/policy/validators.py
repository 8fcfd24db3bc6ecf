"""The stack's policy rules, as plain validate functions and the policies that wrap them.

Each validator has the `ResourceValidation` signature `(args, report_violation) -> None` and is
pure: it reads only `args.resource_type` and `args.props` and reports every problem it finds, so
the tests call it directly with a `ResourceValidationArgs`. A rule that needs to see other
resources (a fallback pool and the spot pool it backs) is a stack rule, `StackValidation`
`(args, report_violation)` over `args.resources`, each read the same way. `__main__.py` only hands `POLICIES`
to a `PolicyPack` (which starts a gRPC server and never returns).

What the engine passes, and what that means here:
- `props` are the resource's inputs with camelCase keys (`nodeConfig.guestAccelerators`), secrets
  already unwrapped, numbers as floats (`0.0 == 0`), wrapped in read-only `Mapping`/`Sequence`
  proxies (never `dict`/`list`: test with `collections.abc`).
- During a preview an input computed from another resource's output is unknown, and reading it
  raises `UnknownValueError`; the SDK turns that into an advisory "can't run during preview" note
  and the rule runs again, with known values, during `pulumi up`. The structural rules let that
  happen; the scans for leaked tokens skip unknown values (an unknown value is no literal).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pulumi_policy import (
    Policy,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

from configcheck.secrets import HF_TOKEN_PATTERN
from infra.node_labels import FALLBACK_FOR_LABEL, POOL_LABEL
from infra.resource_types import (
    CLUSTER,
    GKE_INTERNAL_LOAD_BALANCER,
    GKE_INTERNAL_LOAD_BALANCER_CLASS,
    GKE_LEGACY_LOAD_BALANCER_TYPE_ANNOTATION,
    GKE_LOAD_BALANCER_TYPE_ANNOTATION,
    NETWORK_POLICY,
    NODE_POOL,
    RAY_CLUSTER,
    RAY_SERVICE,
    SECRET,
    SERVICE,
)
from infra.versions import KUBERAY_NAMESPACE

# Taint effects that keep pods without a matching toleration off a node (PREFER_NO_SCHEDULE does not).
REPELLING_TAINT_EFFECTS: Final = frozenset({"NO_SCHEDULE", "NO_EXECUTE"})
# Machine families that come with GPUs attached even when guestAccelerators is left out.
GPU_MACHINE_PREFIXES: Final = ("a2-", "a3-", "a4-", "g2-", "g4-")
# The Compute Engine default service account (holds Editor on the project); "default" names it too.
DEFAULT_COMPUTE_SA_SUFFIX: Final = "-compute@developer.gserviceaccount.com"
# Ray's unauthenticated control ports on the head node, by KubeRay's container port names.
RAY_INTERNAL_PORTS: Final = {"dashboard": 8265, "gcs-server": 6379, "gcs": 6379, "client": 10001}
EXPOSING_SERVICE_TYPES: Final = frozenset({"LoadBalancer", "NodePort"})
# KubeRay names the head's Service `<RayCluster or RayService name>-head-svc`; it carries the
# control ports (and, for a RayService, the serve port, which `<name>-serve-svc` is for).
RAY_HEAD_SERVICE_SUFFIX: Final = "-head-svc"
# Ingress (networking.k8s.io, and the legacy extensions group) and Gateway API routes
# (gateway.networking.k8s.io, any version) route traffic from outside the cluster to Services.
INGRESS_GROUPS: Final = frozenset({"networking.k8s.io", "extensions"})
GATEWAY_GROUP: Final = "gateway.networking.k8s.io"
GATEWAY_ROUTE_KINDS: Final = frozenset({"HTTPRoute", "GRPCRoute", "TCPRoute", "TLSRoute", "UDPRoute"})
HF_TOKEN_ENV_NAMES: Final = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"})

Validator = Callable[[ResourceValidationArgs, ReportViolation], None]
StackValidator = Callable[[StackValidationArgs, ReportViolation], None]


def _get(value: Any, *path: str) -> Any:
    """The value at `path` under a mapping, or None where a step is missing or not a mapping."""
    for key in path:
        if not isinstance(value, Mapping) or key not in _keys(value):
            return None
        value = value[key]
    return value


def _keys(mapping: Mapping[str, Any]) -> set[str]:
    # Iterating reads keys only; `in`/`.get` would read the value and raise on an unknown one.
    return set(iter(mapping))


def _items(value: Any) -> list[Any]:
    """The elements of a list input (None and scalars give none)."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return list(value)
    return []


def _known_children(value: Any) -> Iterator[tuple[str, Any]]:
    """(key or index, child) of a mapping or list, skipping children unknown during a preview."""
    if isinstance(value, Mapping):
        for key in list(iter(value)):
            try:
                yield str(key), value[key]
            except UnknownValueError:
                continue
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        for index in range(len(value)):
            try:
                yield str(index), value[index]
            except UnknownValueError:
                continue


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every known (dotted path, value) in a props tree, containers included, depth first."""
    yield path, value
    for key, child in _known_children(value):
        yield from _walk(child, f"{path}.{key}" if path else key)


# --- GKE node pools ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pool:
    """A node pool as written: a NodePool resource, or an entry of a Cluster's `nodePools`."""

    label: str
    props: Mapping[str, Any]

    @property
    def node_config(self) -> Any:
        return _get(self.props, "nodeConfig")

    def is_gpu(self) -> bool:
        if _items(_get(self.node_config, "guestAccelerators")):
            return True
        machine_type = _get(self.node_config, "machineType")
        return isinstance(machine_type, str) and machine_type.startswith(GPU_MACHINE_PREFIXES)

    def node_label(self, key: str) -> Any:
        return _get(self.node_config, "labels", key)

    @property
    def fallback_for(self) -> str | None:
        """The `llm-serving/pool` label of the spot pool this on-demand pool says it backs."""
        value = self.node_label(FALLBACK_FOR_LABEL)
        return value if isinstance(value, str) and value else None

    def is_spot(self) -> bool:
        return _get(self.node_config, "spot") is True


def _pools(args: ResourceValidationArgs) -> list[_Pool]:
    return _pools_of(args.resource_type, args.name, args.props)


def _pools_of(resource_type: str, name: str, props: Mapping[str, Any]) -> list[_Pool]:
    if resource_type == NODE_POOL:
        return [_Pool(f"node pool {name}", props)]
    if resource_type == CLUSTER:
        return [
            _Pool(f"cluster {name} node pool {_get(pool, 'name') or index}", pool)
            for index, pool in enumerate(_items(_get(props, "nodePools")))
            if isinstance(pool, Mapping)
        ]
    return []


def validate_gpu_pool_tainted_and_spot(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    """A GPU pool repels pods that do not tolerate it, and runs on spot VMs, unless it is labelled
    as the on-demand fallback of a spot pool (`llm-serving/fallback-for`). Whether that spot pool
    exists in the stack is the stack rule `validate_gpu_fallback_backs_a_spot_pool`: one resource
    cannot see the others."""
    for pool in _pools(args):
        if not pool.is_gpu():
            continue
        taints = [taint for taint in _items(_get(pool.node_config, "taints")) if isinstance(taint, Mapping)]
        effects = sorted({str(_get(taint, "effect")) for taint in taints})
        if not any(_get(taint, "effect") in REPELLING_TAINT_EFFECTS for taint in taints):
            found = f"its taint effects are {effects}" if taints else "it has no taints"
            report_violation(
                f"GPU {pool.label} must be tainted with effect NO_SCHEDULE or NO_EXECUTE "
                f"(nodeConfig.taints), so only GPU workers land on it; {found}",
                None,
            )
        if not pool.is_spot() and pool.fallback_for is None:
            report_violation(
                f"GPU {pool.label} must run on spot VMs (nodeConfig.spot: true), or be the on-demand "
                f"fallback of a spot pool (node label {FALLBACK_FOR_LABEL}: <that pool's {POOL_LABEL}>)",
                None,
            )


def validate_gpu_fallback_backs_a_spot_pool(
    args: StackValidationArgs, report_violation: ReportViolation
) -> None:
    """Every GPU pool labelled `llm-serving/fallback-for: <name>` is on-demand and backs a spot GPU
    pool of the same stack whose `llm-serving/pool` label is <name>: an on-demand GPU pool is
    allowed only behind spot capacity, never on its own."""
    pools = [
        pool
        for resource in args.resources
        for pool in _pools_of(resource.resource_type, resource.name, resource.props)
        if pool.is_gpu()
    ]
    by_name: dict[str, list[_Pool]] = {}
    for pool in pools:
        name = pool.node_label(POOL_LABEL)
        if isinstance(name, str):
            by_name.setdefault(name, []).append(pool)
    for pool in pools:
        backed = pool.fallback_for
        if backed is None:
            continue
        targets = [target for target in by_name.get(backed, []) if target is not pool]
        if not targets:
            report_violation(
                f"GPU {pool.label} is labelled the fallback of {backed} ({FALLBACK_FOR_LABEL}), but no GPU "
                f"pool of the stack has {POOL_LABEL}: {backed}; point the label at the spot pool it backs",
                None,
            )
        elif not any(target.is_spot() for target in targets):
            report_violation(
                f"GPU {pool.label} is labelled the fallback of {backed}, which is not a spot pool; a "
                "fallback backs spot capacity: make that pool spot or remove the fallback",
                None,
            )
        elif pool.is_spot():
            report_violation(
                f"GPU {pool.label} is labelled the on-demand fallback of {backed} but runs on spot VMs; "
                f"remove {FALLBACK_FOR_LABEL} or set nodeConfig.spot: false",
                None,
            )


def validate_gpu_pool_scales_to_zero(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """A GPU pool is autoscaled with a minimum of zero nodes and is not created with nodes."""
    for pool in _pools(args):
        if not pool.is_gpu():
            continue
        autoscaling = _get(pool.props, "autoscaling")
        if not isinstance(autoscaling, Mapping):
            report_violation(
                f"GPU {pool.label} must be autoscaled (autoscaling with totalMinNodeCount: 0 "
                "or minNodeCount: 0), so it costs nothing while idle",
                None,
            )
        else:
            minimums = {
                key: _get(autoscaling, key)
                for key in ("totalMinNodeCount", "minNodeCount")
                if _get(autoscaling, key) is not None
            }
            if not minimums or any(value != 0 for value in minimums.values()):
                shown = ", ".join(f"{key}: {value:g}" for key, value in minimums.items()) or "no minimum set"
                report_violation(
                    f"GPU {pool.label} must be able to scale to zero "
                    f"(autoscaling.totalMinNodeCount or minNodeCount must be 0; {shown})",
                    None,
                )
        for key in ("nodeCount", "initialNodeCount"):
            count = _get(pool.props, key)
            if count is not None and count != 0:
                report_violation(
                    f"GPU {pool.label} must not start with GPU nodes ({key}: {count:g}; leave it unset or 0 "
                    "and let the autoscaler add nodes on demand)",
                    None,
                )


# --- GKE cluster and node identity -----------------------------------------------------------


def validate_cluster_hardening(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """The cluster has Workload Identity and shielded nodes, stated explicitly."""
    if args.resource_type != CLUSTER:
        return
    if not _get(args.props, "workloadIdentityConfig", "workloadPool"):
        report_violation(
            f"cluster {args.name} must enable Workload Identity "
            "(workloadIdentityConfig.workloadPool: <project>.svc.id.goog)",
            None,
        )
    if _get(args.props, "enableShieldedNodes") is not True:
        report_violation(f"cluster {args.name} must set enableShieldedNodes: true", None)


def _service_account_problem(node_config: Any) -> str | None:
    account = _get(node_config, "serviceAccount")
    if not account:
        return "uses the Compute Engine default service account (nodeConfig.serviceAccount is not set)"
    if account == "default" or str(account).endswith(DEFAULT_COMPUTE_SA_SUFFIX):
        return f"uses the Compute Engine default service account ({account})"
    return None


def _metadata_problem(node_config: Any) -> str | None:
    mode = _get(node_config, "workloadMetadataConfig", "mode")
    if mode is not None and mode != "GKE_METADATA":
        return f"exposes the node's metadata server to pods (workloadMetadataConfig.mode: {mode})"
    return None


def validate_node_service_account(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Nodes run as a dedicated least-privilege service account, never the default compute one.

    Checked where nodes are defined: every NodePool and inline `nodePools` entry, and the
    cluster's own `nodeConfig`, which GKE uses for the default pool (that pool still exists,
    briefly, when removeDefaultNodePool is set, so a set value is checked even then).
    """
    labelled: list[tuple[str, Any]] = [(f"GKE {pool.label}", pool.node_config) for pool in _pools(args)]
    if args.resource_type == CLUSTER:
        node_config = _get(args.props, "nodeConfig")
        if _get(args.props, "removeDefaultNodePool") is not True or _get(node_config, "serviceAccount"):
            labelled.append((f"the default node pool of cluster {args.name}", node_config))
    for label, node_config in labelled:
        for problem in (_service_account_problem(node_config), _metadata_problem(node_config)):
            if problem:
                report_violation(f"{label} {problem}; use a dedicated node service account", None)


# --- Ray's control ports ---------------------------------------------------------------------


def _exposed_ray_ports(ports: Any) -> list[str]:
    exposed = []
    ray_port_numbers = set(RAY_INTERNAL_PORTS.values())
    for port in _items(ports):
        values = [_get(port, "port"), _get(port, "targetPort"), _get(port, "name")]
        if any(value in ray_port_numbers or value in RAY_INTERNAL_PORTS for value in values):
            exposed.append(str(_get(port, "name") or _get(port, "port")))
    return exposed


def _kubernetes_kind(resource_type: str) -> tuple[str, str] | None:
    """(API group, kind) of a Kubernetes type token: `kubernetes:<group>/<version>:<Kind>`, where
    the core group is written `core`; None for other providers' types."""
    provider, _, rest = resource_type.partition(":")
    group_version, _, kind = rest.partition(":")
    if provider != "kubernetes" or "/" not in group_version or not kind:
        return None
    group = group_version.rsplit("/", 1)[0]
    return ("" if group == "core" else group), kind


@dataclass(frozen=True)
class _Backend:
    """One Service a route sends traffic to: where it is written, the Service name and its port."""

    field: str
    name: Any
    port: Any


def _ingress_backends(props: Mapping[str, Any]) -> Iterator[_Backend]:
    """`spec.defaultBackend` and every `spec.rules[].http.paths[].backend`, in both the
    networking.k8s.io/v1 shape (`service: {name, port: {number | name}}`) and the legacy v1beta1
    shape (`serviceName`, `servicePort`)."""
    spec = _get(props, "spec")
    backends: list[tuple[str, Any]] = [("spec.defaultBackend", _get(spec, "defaultBackend"))]
    backends.append(("spec.backend", _get(spec, "backend")))
    for r, rule in enumerate(_items(_get(spec, "rules"))):
        for p, path in enumerate(_items(_get(rule, "http", "paths"))):
            backends.append((f"spec.rules.{r}.http.paths.{p}.backend", _get(path, "backend")))
    for field, backend in backends:
        if not isinstance(backend, Mapping):
            continue
        service = _get(backend, "service")
        if isinstance(service, Mapping):
            port = _get(service, "port")
            number, port_name = _get(port, "number"), _get(port, "name")
            yield _Backend(
                f"{field}.service", _get(service, "name"), number if number is not None else port_name
            )
        elif _get(backend, "serviceName") is not None:
            yield _Backend(field, _get(backend, "serviceName"), _get(backend, "servicePort"))


def _route_backends(props: Mapping[str, Any]) -> Iterator[_Backend]:
    """Every Service a Gateway API route sends to: `spec.rules[].backendRefs[]` and the
    `backendRef` of a RequestMirror filter (on the rule or on a backendRef). References to other
    kinds (`kind` other than Service, or a non-core `group`) are not Services and are skipped."""
    for r, rule in enumerate(_items(_get(props, "spec", "rules"))):
        refs: list[tuple[str, Any]] = []
        holders = [(f"spec.rules.{r}", rule)]
        for b, ref in enumerate(_items(_get(rule, "backendRefs"))):
            refs.append((f"spec.rules.{r}.backendRefs.{b}", ref))
            holders.append((f"spec.rules.{r}.backendRefs.{b}", ref))
        for where, holder in holders:
            for f, filter_ in enumerate(_items(_get(holder, "filters"))):
                mirror = _get(filter_, "requestMirror", "backendRef")
                refs.append((f"{where}.filters.{f}.requestMirror.backendRef", mirror))
        for field, ref in refs:
            if not isinstance(ref, Mapping) or _get(ref, "kind") not in (None, "Service"):
                continue
            if _get(ref, "group") not in (None, ""):
                continue
            yield _Backend(field, _get(ref, "name"), _get(ref, "port"))


def _backend_problem(backend: _Backend) -> str | None:
    """Why a route's backend reaches Ray's control plane, or None."""
    port_names = set(RAY_INTERNAL_PORTS)
    port_numbers = set(RAY_INTERNAL_PORTS.values())
    if isinstance(backend.name, str) and backend.name.endswith(RAY_HEAD_SERVICE_SUFFIX):
        return (
            f"{backend.field} sends traffic to the Ray head Service {backend.name} (dashboard, GCS and "
            "client ports); route to the serve Service (<name>-serve-svc) instead"
        )
    if backend.port in port_numbers or backend.port in port_names:
        return f"{backend.field} sends traffic to Ray's control port {backend.port} (Service {backend.name})"
    return None


def validate_ray_ports_not_exposed(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Ray's dashboard (8265), GCS (6379) and client (10001) ports stay inside the cluster.

    They are unauthenticated: whoever reaches them can run code on the cluster. Checked on
    Services the program creates, on the Services KubeRay creates from a RayService or
    RayCluster spec (policies never see those, so the spec that asks for them is judged), and on
    Ingresses and Gateway API routes, which carry outside traffic to a Service: none may point at
    a control port (by number or by KubeRay's port name) or at the Ray head Service itself.
    """
    kind = _kubernetes_kind(args.resource_type)
    if kind is not None and (
        (kind[0] in INGRESS_GROUPS and kind[1] == "Ingress")
        or (kind[0] == GATEWAY_GROUP and kind[1] in GATEWAY_ROUTE_KINDS)
    ):
        backends = _ingress_backends(args.props) if kind[1] == "Ingress" else _route_backends(args.props)
        for backend in backends:
            problem = _backend_problem(backend)
            if problem:
                report_violation(
                    f"{kind[1]} {args.name} {problem}; Ray's control ports must stay inside the cluster "
                    "(use `kubectl port-forward`)",
                    None,
                )
        return
    if args.resource_type == SERVICE:
        service_type = _get(args.props, "spec", "type")
        exposed = _exposed_ray_ports(_get(args.props, "spec", "ports"))
        if service_type in EXPOSING_SERVICE_TYPES and exposed:
            report_violation(
                f"Service {args.name} of type {service_type} exposes Ray's control ports {exposed} "
                "outside the cluster; use ClusterIP and `kubectl port-forward`",
                None,
            )
        return
    if args.resource_type == RAY_SERVICE:
        head = _get(args.props, "spec", "rayClusterConfig", "headGroupSpec")
        serve_service = _get(args.props, "spec", "serveService", "spec")
        if _get(serve_service, "type") in EXPOSING_SERVICE_TYPES and _exposed_ray_ports(
            _get(serve_service, "ports")
        ):
            report_violation(
                f"RayService {args.name} serveService of type {_get(serve_service, 'type')} exposes "
                "Ray's control ports outside the cluster",
                None,
            )
    elif args.resource_type == RAY_CLUSTER:
        head = _get(args.props, "spec", "headGroupSpec")
    else:
        return
    for field, service_type in (
        ("headGroupSpec.serviceType", _get(head, "serviceType")),
        ("headGroupSpec.headService.spec.type", _get(head, "headService", "spec", "type")),
    ):
        if service_type in EXPOSING_SERVICE_TYPES:
            report_violation(
                f"{args.resource_type.rsplit(':', 1)[-1]} {args.name} sets {field}: {service_type}, which "
                "exposes the Ray head's dashboard, GCS and client ports outside the cluster; "
                "leave it ClusterIP and use `kubectl port-forward`",
                None,
            )


# --- NetworkPolicies around the Ray pods -------------------------------------------------------

# KubeRay labels every Ray pod with these (common/pod.go labelPod); a policy that selects pods by
# any of them, or selects every pod, governs Ray pods.
RAY_POD_LABEL_PREFIX: Final = "ray.io/"
# The operator reads Serve's status from the head's dashboard (KubeRay utils/dashboardclient).
OPERATOR_DASHBOARD_PORT: Final = RAY_INTERNAL_PORTS["dashboard"]


def validate_load_balancers_internal(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == SERVICE:
        service, where = args.props, f"Service {args.name}"
    elif args.resource_type == RAY_SERVICE:
        service, where = _get(args.props, "spec", "serveService"), f"RayService {args.name} serveService"
    else:
        return
    if _get(service, "spec", "type") != "LoadBalancer":
        return
    annotations = _get(service, "metadata", "annotations")
    annotations = annotations if isinstance(annotations, Mapping) else {}
    internal = (
        annotations.get(GKE_LOAD_BALANCER_TYPE_ANNOTATION) == GKE_INTERNAL_LOAD_BALANCER
        or annotations.get(GKE_LEGACY_LOAD_BALANCER_TYPE_ANNOTATION) == GKE_INTERNAL_LOAD_BALANCER
        or _get(service, "spec", "loadBalancerClass") == GKE_INTERNAL_LOAD_BALANCER_CLASS
    )
    if not internal:
        report_violation(
            f"{where} is a LoadBalancer without the annotation {GKE_LOAD_BALANCER_TYPE_ANNOTATION}: "
            f"{GKE_INTERNAL_LOAD_BALANCER} (or loadBalancerClass {GKE_INTERNAL_LOAD_BALANCER_CLASS}), "
            "so GKE gives it an external address; add the annotation or use ClusterIP",
            None,
        )


def _selects_ray_pods(pod_selector: Any) -> bool:
    labels = _get(pod_selector, "matchLabels")
    expressions = _items(_get(pod_selector, "matchExpressions"))
    if not (isinstance(labels, Mapping) and labels) and not expressions:
        return True  # {} selects every pod of the namespace
    keys = set(labels) if isinstance(labels, Mapping) else set()
    keys |= {str(_get(e, "key")) for e in expressions}
    return any(key.startswith(RAY_POD_LABEL_PREFIX) for key in keys)


def _peer_is_ray_pods(peer: Any) -> bool:
    """A peer limited to Ray pods: a pod selector on KubeRay's labels (any namespace selector)."""
    pods = _get(peer, "podSelector")
    return (
        pods is not None
        and _selects_ray_pods(pods)
        and bool(_get(pods, "matchLabels") or _items(_get(pods, "matchExpressions")))
    )


def _peer_is_operator(peer: Any) -> bool:
    labels = _get(peer, "namespaceSelector", "matchLabels")
    return isinstance(labels, Mapping) and labels.get("kubernetes.io/metadata.name") == KUBERAY_NAMESPACE


def validate_ray_control_ports_closed(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    """No NetworkPolicy over Ray pods admits anything but Ray pods to Ray's control ports.

    Dataplane V2 unions every policy that selects a pod, so one permissive rule opens the port
    whatever the others say. A rule counts as opening a control port when it lists that port (by
    number or KubeRay's port name) or lists no ports at all, and admits a peer that is not a Ray
    pod: no `from` (everyone), an ipBlock, or a namespace without a Ray pod selector. The KubeRay
    operator's namespace may reach the dashboard port, which it reads Serve's status from.
    """
    if args.resource_type != NETWORK_POLICY:
        return
    spec = _get(args.props, "spec")
    if not _selects_ray_pods(_get(spec, "podSelector")):
        return
    control = {**RAY_INTERNAL_PORTS}
    for r, rule in enumerate(_items(_get(spec, "ingress"))):
        ports = _items(_get(rule, "ports"))
        listed = {_get(p, "port") for p in ports}
        if ports:
            opened = sorted({name for name, number in control.items() if number in listed or name in listed})
        else:
            opened = sorted(control)
        if not opened:
            continue
        peers = _items(_get(rule, "from"))
        outsiders = [p for p in peers if not _peer_is_ray_pods(p)] if peers else ["everyone"]
        for peer in outsiders:
            if (
                peer != "everyone"
                and _peer_is_operator(peer)
                and ports
                and listed
                <= {
                    OPERATOR_DASHBOARD_PORT,
                    "dashboard",
                }
            ):
                continue
            who = (
                "every source"
                if peer == "everyone"
                else f"peer {dict(peer) if isinstance(peer, Mapping) else peer}"
            )
            report_violation(
                f"NetworkPolicy {args.name} spec.ingress[{r}] admits {who} to Ray's control ports "
                f"{opened}; allow them only from Ray pods (podSelector on ray.io/ labels) and the "
                "serve port from clients",
                None,
            )
            break


# --- The Hugging Face token ------------------------------------------------------------------


def _env_var_problems(props: Mapping[str, Any]) -> Iterator[str]:
    """Container `env` lists (any pod template, any depth) that set a token variable by value."""
    for path, value in _walk(props):
        if path.rsplit(".", 1)[-1] != "env" or isinstance(value, Mapping):
            continue
        for index, var in _known_children(value):
            try:
                name = _get(var, "name")
            except UnknownValueError:
                continue
            if name not in HF_TOKEN_ENV_NAMES:
                continue
            where = f"{path}.{index} ({name})"
            if "value" in _keys(var):
                yield f"sets {where} with `value`; take it from the Secret with valueFrom.secretKeyRef"
            elif not isinstance(_get(var, "valueFrom", "secretKeyRef"), Mapping):
                yield f"sets {where} without valueFrom.secretKeyRef; take it from the Secret"


def validate_hf_token_only_in_secret(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """The Hugging Face token lives only in a Kubernetes Secret.

    No other resource may carry a literal token anywhere in its inputs (ConfigMap data, Helm
    values, a RayService's pod templates or its serveConfigV2 text), and the env vars that hold
    it (HF_TOKEN, HUGGING_FACE_HUB_TOKEN) must read it with valueFrom.secretKeyRef.
    """
    if args.resource_type == SECRET:
        return
    for path, value in _walk(args.props):
        if isinstance(value, str) and HF_TOKEN_PATTERN.search(value):
            report_violation(
                f"{args.resource_type} {args.name} has a literal Hugging Face token at {path}; "
                "keep it only in the kubernetes:core/v1:Secret and reference that",
                None,
            )
    for problem in _env_var_problems(args.props):
        report_violation(f"{args.resource_type} {args.name} {problem}", None)


# --- The pack --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    validate: Validator


@dataclass(frozen=True)
class StackRule:
    """A rule over every resource of the stack at once (what one resource cannot tell)."""

    name: str
    description: str
    validate: StackValidator


RULES: Final = (
    Rule(
        "gpu-pool-tainted-and-spot",
        "Every GPU node pool is tainted (NO_SCHEDULE/NO_EXECUTE) and runs on spot VMs, or is labelled "
        "the on-demand fallback of a spot pool.",
        validate_gpu_pool_tainted_and_spot,
    ),
    Rule(
        "gpu-pool-scales-to-zero",
        "Every GPU node pool autoscales from a minimum of zero and is not created with nodes.",
        validate_gpu_pool_scales_to_zero,
    ),
    Rule(
        "gke-cluster-hardening",
        "The GKE cluster enables Workload Identity and shielded nodes.",
        validate_cluster_hardening,
    ),
    Rule(
        "gke-node-service-account",
        "GKE nodes run as a dedicated service account with the GKE metadata server, never the "
        "Compute Engine default service account.",
        validate_node_service_account,
    ),
    Rule(
        "ray-ports-not-exposed",
        "No LoadBalancer or NodePort Service, Ingress or Gateway API route exposes Ray's dashboard, GCS "
        "or client port or the Ray head Service.",
        validate_ray_ports_not_exposed,
    ),
    Rule(
        "load-balancers-internal",
        "Every LoadBalancer Service, the RayService's serveService included, is a GKE internal load "
        "balancer: the endpoint is reachable from the VPC only.",
        validate_load_balancers_internal,
    ),
    Rule(
        "ray-control-ports-closed",
        "NetworkPolicies over Ray pods admit only Ray pods to Ray's dashboard, GCS and client ports "
        "(and the KubeRay operator to the dashboard).",
        validate_ray_control_ports_closed,
    ),
    Rule(
        "hf-token-only-in-secret",
        "The Hugging Face token appears only in a Kubernetes Secret and reaches pods via secretKeyRef.",
        validate_hf_token_only_in_secret,
    ),
)


STACK_RULES: Final = (
    StackRule(
        "gpu-fallback-backs-a-spot-pool",
        "An on-demand GPU pool labelled as a fallback backs a spot GPU pool of the same stack.",
        validate_gpu_fallback_backs_a_spot_pool,
    ),
)
RULE_NAMES: Final = tuple(rule.name for rule in (*RULES, *STACK_RULES))


def policies() -> list[Policy]:
    """One policy per rule; the pack's enforcement level applies to all."""
    return [
        *(
            ResourceValidationPolicy(name=r.name, description=r.description, validate=r.validate)
            for r in RULES
        ),
        *(
            StackValidationPolicy(name=r.name, description=r.description, validate=r.validate)
            for r in STACK_RULES
        ),
    ]
