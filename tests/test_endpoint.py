"""A private, keyed endpoint (infra/plan/endpoint.py, infra/components/llm_service.py): the internal
load balancer on a reserved address, the keys Secret, the NetworkPolicies (read as a small
reachability model) and the KServe-style aliases, for dev and prod under the mock engine.

The key check itself is tests/test_openai_app.py (ASGI) and tests/test_e2e_local.py (the real server).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from typing import Any

import pytest
from helpers import kuberay_services as kuberay
from helpers.mock_runs import serve_services
from helpers.stack_files import STACKS

from infra import resource_types
from infra.plan import ServingPlan
from infra.plan import endpoint as ep
from infra.plan.network import NODE_CIDR
from infra.plan.ray_service import (
    API_KEYS_SECRET_NAME,
    APP_CODE_MOUNT_PATH,
    NAMESPACE,
    PORTS,
    RAY_SERVICE_NAME,
)
from infra.report.mock_engine import (
    TEST_HF_TOKEN,
    ProgramRun,
    run_program,
    stack_config,
)
from infra.resource_types import SKIP_AWAIT_ANNOTATION
from infra.settings import API_KEYS_KEY, HF_TOKEN_KEY
from serve.serve_config import API_KEYS_MOUNT_PATH, APP_NAME, ROUTE_PREFIX, SERVE_HTTP_PORT

EXTRA_KEYS = ["sk-team-a-0123456789abcdef", "sk-team-b-0123456789abcdef"]


def _spec(run: ProgramRun) -> dict[str, Any]:
    spec: dict[str, Any] = run.one(resource_types.RAY_SERVICE).inputs["spec"]
    return spec


# --- the internal address --------------------------------------------------------------------


def test_the_address_is_a_usable_host_of_the_node_subnet() -> None:
    network = ipaddress.ip_network(NODE_CIDR)
    address = ipaddress.ip_address(ep.serve_address())
    # Google Cloud reserves the network, gateway, second-to-last and broadcast addresses.
    reserved = {network.network_address, network.network_address + 1, network.broadcast_address - 1}
    reserved.add(network.broadcast_address)
    assert address in network and address not in reserved
    assert ep.serve_address("10.0.0.0/29") == "10.0.0.5"


@pytest.mark.parametrize("stack", STACKS)
def test_the_serve_service_is_an_internal_load_balancer_on_the_reserved_address(
    program_runs: dict[str, ProgramRun], stack: str
) -> None:
    run = program_runs[stack]
    address = run.one(resource_types.ADDRESS)
    assert address.inputs["addressType"] == "INTERNAL" and address.inputs["address"] == ep.serve_address()
    assert address.inputs["subnetwork"] == run.one(resource_types.SUBNETWORK).resource_id
    serve_service = _spec(run)["serveService"]
    assert serve_service["metadata"]["annotations"] == {
        "networking.gke.io/load-balancer-type": "Internal",
        "networking.gke.io/internal-load-balancer-allow-global-access": "true",
    }
    assert serve_service["spec"]["type"] == "LoadBalancer"
    assert serve_service["spec"]["loadBalancerIP"] == ep.serve_address()
    # KubeRay keeps a user port whose name matches the head's `serve` port (service.go BuildServeService).
    head = _spec(run)["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    # Its target is the head's port by name, so pods without one (workers) are no endpoints of it.
    assert {p["name"]: p["containerPort"] for p in head["ports"]}["serve"] == 8000
    (port,) = serve_service["spec"]["ports"]
    assert port == {"name": "serve", "port": 80, "targetPort": "serve"}
    # Not part of rayClusterConfig: changing it never starts a new cluster.
    assert "serveService" not in json.dumps(_spec(run)["rayClusterConfig"])
    # The stack's serve Service claims the address; the RayService comes after that Service.
    (service,) = serve_services(run)
    assert address.urn in service.dependencies
    assert service.urn in run.one(resource_types.RAY_SERVICE).dependencies
    # Destroyed after the namespace, whose deletion waits for the load balancer's cleanup.
    assert address.urn in run.one(resource_types.NAMESPACE).dependencies
    assert run.outputs["openai_internal_url"] == f"http://{ep.serve_address()}/v1"


# --- the serve Service exists before every model runs ------------------------------------------

CLUSTER = "llm-x7k2p"  # a name of KubeRay's GenerateRayClusterName form
NEXT_CLUSTER = "llm-q9w4m"
CLUSTER_IP = "10.30.0.17"


@pytest.mark.parametrize("stack", STACKS)
def test_the_stack_creates_the_serve_service_under_kuberays_name_before_the_ray_service(
    program_runs: dict[str, ProgramRun], stack: str
) -> None:
    run = program_runs[stack]
    (service,) = serve_services(run)
    metadata, spec = service.inputs["metadata"], service.inputs["spec"]
    # The name KubeRay looks up: it then updates this Service instead of creating its own.
    assert metadata["name"] == kuberay.serve_service_name(RAY_SERVICE_NAME) == ep.SERVE_SERVICE_NAME
    assert metadata["namespace"] == NAMESPACE
    serve_service = _spec(run)["serveService"]
    # KubeRay copies the RayService's serveService spec on every switch: equal but the selector.
    assert {k: v for k, v in spec.items() if k != "selector"} == serve_service["spec"]
    assert spec["selector"] == {"ray.io/node-type": "head", "ray.io/serve": "true"}
    assert metadata["annotations"] == {
        **serve_service["metadata"]["annotations"],
        SKIP_AWAIT_ANNOTATION: "true",
    }
    # Not KubeRay's: no association labels (its suspend deletes Services by them), no owner.
    assert not set(kuberay.ORIGIN_LABELS) & set(metadata.get("labels", {}))
    assert "ownerReferences" not in metadata
    # The selector is KubeRay's once it has switched; Pulumi must never write it back.
    assert service.ignore_changes == ["spec.selector"]
    assert service.urn in run.one(resource_types.RAY_SERVICE).dependencies


def _pods(plan: ServingPlan, cluster: str, head_proxy_healthy: bool) -> dict[str, dict[str, str]]:
    spec = plan.ray_service_spec["rayClusterConfig"]
    pods = {
        "head": kuberay.pod_labels(
            spec["headGroupSpec"]["template"], "head", "headgroup", cluster, head_proxy_healthy
        )
    }
    for group in spec["workerGroupSpecs"]:
        pods[group["groupName"]] = kuberay.pod_labels(
            group["template"], "worker", group["groupName"], cluster
        )
    for deployment in plan.spare_deployments:
        pods[deployment["metadata"]["name"]] = dict(deployment["spec"]["template"]["metadata"]["labels"])
    for job in plan.mirror_jobs:
        pods[job["metadata"]["name"]] = dict(job["spec"]["template"]["metadata"].get("labels", {}))
    return pods


@pytest.mark.parametrize("stack", STACKS)
def test_before_kuberay_switches_the_service_selects_only_a_head_whose_proxy_answers(
    plans: dict[str, ServingPlan], stack: str
) -> None:
    plan = plans[stack]
    selector = plan.serve_service["spec"]["selector"]
    serving = _pods(plan, CLUSTER, head_proxy_healthy=True)
    assert len(serving) > 1
    assert [name for name, labels in serving.items() if kuberay.selects(selector, labels)] == ["head"]
    # A new head starts with ray.io/serve "false" (BuildPod); no endpoint until its proxy answers.
    starting = _pods(plan, CLUSTER, head_proxy_healthy=False)
    assert not any(kuberay.selects(selector, labels) for labels in starting.values())


@pytest.mark.parametrize("stack", STACKS)
def test_kuberay_takes_the_service_over_at_first_readiness_keeping_address_and_annotations(
    plans: dict[str, ServingPlan], stack: str
) -> None:
    plan = plans[stack]
    ours = copy.deepcopy(plan.serve_service)
    ours["spec"]["clusterIP"] = CLUSTER_IP
    taken, action = kuberay.reconcile_serve_service(ours, RAY_SERVICE_NAME, plan.ray_service_spec, CLUSTER)
    assert action == "updated"
    assert taken["spec"]["selector"] == {"ray.io/cluster": CLUSTER, "ray.io/serve": "true"}
    # Everything else the load balancer depends on is unchanged.
    assert taken["metadata"] == ours["metadata"]
    unchanged = ("selector",)
    assert {k: v for k, v in taken["spec"].items() if k not in unchanged} == {
        k: v for k, v in ours["spec"].items() if k not in unchanged
    }
    # Later reconciles of the same cluster write nothing; an upgrade moves only the selector.
    assert kuberay.reconcile_serve_service(taken, RAY_SERVICE_NAME, plan.ray_service_spec, CLUSTER) == (
        taken,
        "kept",
    )
    moved, action = kuberay.reconcile_serve_service(
        taken, RAY_SERVICE_NAME, plan.ray_service_spec, NEXT_CLUSTER
    )
    assert action == "updated" and moved["spec"]["selector"][kuberay.CLUSTER_LABEL] == NEXT_CLUSTER
    assert {k: v for k, v in moved["spec"].items() if k != "selector"} == {
        k: v for k, v in taken["spec"].items() if k != "selector"
    }


def _proxy_ready(routes: dict[str, str], is_head: bool) -> bool:
    """Ray 2.60's own `ProxyRouter.ready_for_traffic` (what the proxy's `/-/healthz`, which
    KubeRay's `updateHeadPodServeLabel` calls, answers from), after Serve's controller has sent
    it `routes` (application -> route prefix) and no replica of any of them runs yet."""
    from ray.serve._private.common import DeploymentID, EndpointInfo
    from ray.serve._private.proxy_router import ProxyRouter

    class NoReplicaYet:
        def running_replicas_populated(self) -> bool:
            return False

    router = ProxyRouter(lambda endpoint, info: NoReplicaYet())  # type: ignore[arg-type,return-value]
    router.update_routes(
        {
            DeploymentID(name="OpenAiIngress", app_name=app): EndpointInfo(route=route)
            for app, route in routes.items()
        }
    )
    ready, _ = router.ready_for_traffic(is_head)
    return ready


def test_the_head_proxy_answers_once_the_router_has_a_route_though_no_model_runs() -> None:
    """Serve registers an application's route when it deploys it (application_state.py), before any
    replica runs, so the head's proxy is ready while a model application still deploys or has
    failed. A worker's proxy would wait for replicas; ours run on the head only."""
    routes = {APP_NAME: ROUTE_PREFIX}
    assert _proxy_ready(routes, is_head=True)
    assert not _proxy_ready({}, is_head=True)
    assert not _proxy_ready(routes, is_head=False)


@pytest.mark.parametrize("stack", STACKS)
def test_one_model_that_cannot_start_no_longer_keeps_the_endpoint_from_existing(
    plans: dict[str, ServingPlan], stack: str
) -> None:
    """KubeRay creates or switches the Service only for a cluster whose every application is
    RUNNING. With one warm model stuck DEPLOYING (no capacity) or DEPLOY_FAILED (a bad revision),
    KubeRay alone never reaches `reconcileServices`; the stack's Service already selects the head,
    whose proxy answers for the router (above)."""
    plan = plans[stack]
    apps = {app["name"]: "RUNNING" for app in plan.serve_config["applications"]}
    router = next(app for app in plan.serve_config["applications"] if app["name"] == APP_NAME)
    head_serves = _proxy_ready({APP_NAME: router["route_prefix"]}, is_head=True)
    pods = _pods(plan, CLUSTER, head_proxy_healthy=head_serves)
    selector = plan.serve_service["spec"]["selector"]
    stuck_model = next(name for name in apps if name != APP_NAME)
    for status in ("DEPLOYING", "DEPLOY_FAILED"):
        apps[stuck_model] = status
        assert not kuberay.cluster_is_ready(apps)
        assert [name for name, labels in pods.items() if kuberay.selects(selector, labels)] == ["head"]
    # Once every application runs, KubeRay adopts the stack's Service instead of creating one.
    apps[stuck_model] = "RUNNING"
    assert kuberay.cluster_is_ready(apps)
    _, action = kuberay.reconcile_serve_service(
        plan.serve_service, RAY_SERVICE_NAME, plan.ray_service_spec, CLUSTER
    )
    assert action == "updated"


@pytest.mark.parametrize("stack", STACKS)
def test_nothing_in_the_ray_service_keeps_the_head_out_or_fails_it_early(
    plans: dict[str, ServingPlan], program_runs: dict[str, ProgramRun], stack: str
) -> None:
    """`excludeHeadPodFromServeSvc` pins the head's ray.io/serve label to "false"
    (`updateHeadPodServeLabel`): the Service would never get an endpoint. And KubeRay's
    `ray.io/initializing-timeout` counts on zero endpoints until every application runs
    (`calculateConditions`), which the stack's Service ends early: it could no longer fire."""
    assert "excludeHeadPodFromServeSvc" not in plans[stack].ray_service_spec
    metadata = program_runs[stack].one(resource_types.RAY_SERVICE).inputs["metadata"]
    assert "ray.io/initializing-timeout" not in (metadata.get("annotations") or {})


# --- keys ------------------------------------------------------------------------------------


def _keys_secret(run: ProgramRun) -> Any:
    (secret,) = [
        s for s in run.of_type(resource_types.SECRET) if s.inputs["metadata"]["name"] == API_KEYS_SECRET_NAME
    ]
    return secret


@pytest.mark.parametrize("stack", STACKS)
def test_the_generated_key_lives_only_in_the_keys_secret_and_a_secret_output(
    program_runs: dict[str, ProgramRun], stack: str
) -> None:
    run = program_runs[stack]
    password = run.one(resource_types.RANDOM_PASSWORD)
    assert password.inputs["length"] >= 32 and password.inputs["special"] is False
    secret = _keys_secret(run)
    generated = secret.inputs["stringData"][ep.GENERATED_KEY_NAME]
    assert set(secret.inputs["stringData"]) == {ep.GENERATED_KEY_NAME}
    assert ("stringData",) in secret.secret_paths
    assert "openai_api_key" in run.secret_outputs and run.outputs["openai_api_key"] == generated
    for resource in run.resources:
        if resource is not secret:
            assert generated not in json.dumps(resource.inputs, default=str), resource.name
    plain = {name: value for name, value in run.outputs.items() if name not in run.secret_outputs}
    assert generated not in json.dumps(plain, default=str)


def test_extra_keys_from_the_stack_are_added_as_secrets_and_leak_nowhere() -> None:
    config = {**stack_config("prod"), API_KEYS_KEY: json.dumps(EXTRA_KEYS)}
    run = run_program("prod", config=config, secret_keys=[HF_TOKEN_KEY, API_KEYS_KEY])
    secret = _keys_secret(run)
    data = secret.inputs["stringData"]
    assert [data["extra-0"], data["extra-1"]] == EXTRA_KEYS and ep.GENERATED_KEY_NAME in data
    assert ("stringData",) in secret.secret_paths
    for resource in run.resources:
        if resource is not secret:
            dumped = json.dumps(resource.inputs, default=str)
            assert not any(key in dumped for key in EXTRA_KEYS), resource.name
    assert not any(key in json.dumps(run.outputs, default=str) for key in EXTRA_KEYS)


def test_a_plain_text_key_in_the_stack_is_refused_before_anything_is_created() -> None:
    import pulumi

    config = {**stack_config("dev"), API_KEYS_KEY: json.dumps(EXTRA_KEYS)}
    with pytest.raises(pulumi.RunError) as raised:
        run_program("dev", config=config, secret_keys=[HF_TOKEN_KEY])
    message = str(raised.value)
    assert "llm-serving:apiKeys" in message and "plain text" in message
    assert not any(key in message for key in EXTRA_KEYS)


@pytest.mark.parametrize("stack", STACKS)
def test_the_head_reads_the_keys_from_the_mounted_secret(
    program_runs: dict[str, ProgramRun], stack: str
) -> None:
    head = _spec(program_runs[stack])["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    volumes = {v["name"]: v for v in head["volumes"]}
    (mount,) = [m for m in head["containers"][0]["volumeMounts"] if m["mountPath"] == API_KEYS_MOUNT_PATH]
    assert volumes[mount["name"]]["secret"] == {"secretName": API_KEYS_SECRET_NAME} and mount["readOnly"]
    env = {e["name"]: e.get("value") for e in head["containers"][0]["env"]}
    assert env["PYTHONPATH"] == APP_CODE_MOUNT_PATH
    # Not in an env var: those are read once at start, and would put the keys in the pod spec.
    assert API_KEYS_SECRET_NAME not in json.dumps(head["containers"][0]["env"])


# --- network policies: who reaches what on a Ray pod -------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    matched = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", "the model knows In only"
        matched = matched and labels.get(expression["key"]) in expression["values"]
    return matched


def reachable(policies: list[dict[str, Any]], pod: dict[str, str], source: dict[str, Any], port: int) -> bool:
    """Kubernetes NetworkPolicy semantics for ingress to `pod` in the serving namespace: isolated if
    any policy selects it; then allowed if any rule of a selecting policy admits the source and port.
    `source`: {"namespace": ..., "labels": {...}} for a pod, {"ip": ...} for anything else."""
    selecting = [p["spec"] for p in policies if _selects(p["spec"]["podSelector"], pod)]
    if not selecting:
        return True
    for spec in selecting:
        for rule in spec.get("ingress", []):
            ports = rule.get("ports")
            if ports is not None and port not in {p["port"] for p in ports}:
                continue
            peers = rule.get("from")
            if peers is None:
                return True
            for peer in peers:
                if "ipBlock" in peer:
                    if "ip" in source and ipaddress.ip_address(source["ip"]) in ipaddress.ip_network(
                        peer["ipBlock"]["cidr"]
                    ):
                        return True
                    continue
                if "namespace" not in source:
                    continue
                namespaces = peer.get("namespaceSelector")
                if namespaces is None:
                    in_namespace = source["namespace"] == "llm-serving"
                else:
                    in_namespace = _selects(namespaces, {"kubernetes.io/metadata.name": source["namespace"]})
                pods = peer.get("podSelector")
                if in_namespace and (pods is None or _selects(pods, source.get("labels", {}))):
                    return True
    return False


RAY_POD = {"ray.io/is-ray-node": "yes", "ray.io/node-type": "head"}
CONTROL_PORTS = (PORTS["gcs-server"], PORTS["dashboard"], PORTS["client"], 52365, 10002)


def test_ray_control_ports_are_reachable_only_from_ray_pods() -> None:
    policies = ep.network_policies()
    outsiders = [
        {"ip": "10.10.0.7"},  # a VM or node in the VPC
        {"namespace": "default", "labels": {}},
        {"namespace": "llm-serving", "labels": {"app": "something-else"}},
        {"namespace": "kube-system", "labels": {}},
    ]
    for port in CONTROL_PORTS:
        assert reachable(policies, RAY_POD, {"namespace": "llm-serving", "labels": RAY_POD}, port)
        for source in outsiders:
            assert not reachable(policies, RAY_POD, source, port), (source, port)


def test_the_serve_port_operator_and_collectors_get_exactly_their_port() -> None:
    policies = ep.network_policies()
    assert reachable(policies, RAY_POD, {"ip": "10.10.0.7"}, SERVE_HTTP_PORT)
    assert reachable(policies, RAY_POD, {"namespace": "default", "labels": {}}, SERVE_HTTP_PORT)
    operator = {"namespace": ep.OPERATOR_NAMESPACE, "labels": {}}
    assert reachable(policies, RAY_POD, operator, PORTS["dashboard"])
    assert not reachable(policies, RAY_POD, operator, PORTS["gcs-server"])
    for namespace in ("gke-gmp-system", "gmp-system"):  # GKE's managed collection; self-deployed
        collector = {"namespace": namespace, "labels": {}}
        assert reachable(policies, RAY_POD, collector, ep.METRICS_PORT)
        assert not reachable(policies, RAY_POD, collector, PORTS["dashboard"])


def test_other_pods_in_the_namespace_are_closed_by_default() -> None:
    other = {"app": "mirror-job"}
    assert not reachable(ep.network_policies(), other, {"ip": "10.10.0.7"}, SERVE_HTTP_PORT)


def test_the_model_has_teeth() -> None:
    """Without the policies every port is open; with a policy that allows everyone, too."""
    assert reachable([], RAY_POD, {"ip": "10.10.0.7"}, PORTS["dashboard"])
    allow_all = [{"spec": {"podSelector": {}, "ingress": [{}]}}]
    assert reachable(allow_all, RAY_POD, {"ip": "10.10.0.7"}, PORTS["dashboard"])


@pytest.mark.parametrize("stack", STACKS)
def test_the_program_registers_the_policies_before_the_ray_service(
    program_runs: dict[str, ProgramRun], stack: str
) -> None:
    run = program_runs[stack]
    registered = run.of_type(resource_types.NETWORK_POLICY)
    by_name = {p.inputs["metadata"]["name"]: p.inputs["spec"] for p in registered}  # registered in any order
    assert by_name == {p["metadata"]["name"]: p["spec"] for p in ep.network_policies()}
    assert all(p.inputs["metadata"]["namespace"] == "llm-serving" for p in registered)
    depends = run.one(resource_types.RAY_SERVICE).dependencies
    assert all(p.urn in depends for p in registered)


# --- KServe-style aliases ----------------------------------------------------------------------


def test_aliases_are_dns_labels_or_say_why_not() -> None:
    ids = ["qwen2-5-1-5b-instruct", "a" * 53, "a" * 54, "3b-model", "Upper"]
    aliases = {a.model_id: a for a in ep.kserve_aliases(ids)}
    assert aliases["qwen2-5-1-5b-instruct"].service == "qwen2-5-1-5b-instruct-predictor"
    assert aliases["a" * 53].service == "a" * 53 + "-predictor"
    assert aliases["a" * 54].service is None and "longer than 63" in aliases["a" * 54].reason
    assert aliases["3b-model"].service is None and "DNS label" in aliases["3b-model"].reason
    assert aliases["Upper"].service is None


@pytest.mark.parametrize("stack", STACKS)
def test_every_served_model_has_a_predictor_name_for_the_one_endpoint(
    program_runs: dict[str, ProgramRun], plans: dict[str, ServingPlan], stack: str
) -> None:
    run = program_runs[stack]
    services = {s.inputs["metadata"]["name"]: s.inputs for s in run.of_type(resource_types.SERVICE)}
    for model_id in plans[stack].served_model_ids:
        alias = services[f"{model_id}-predictor"]
        assert alias["spec"] == {
            "type": "ExternalName",
            "externalName": "llm-serve-svc.llm-serving.svc.cluster.local",
        }
        assert run.outputs["kserve_aliases"][model_id] == f"{model_id}-predictor"
    assert re.fullmatch(
        r"http://llm-serve-svc\.llm-serving\.svc\.cluster\.local/v1", run.outputs["openai_cluster_url"]
    )


def test_the_hf_token_stays_out_of_the_keys_secret(program_runs: dict[str, ProgramRun]) -> None:
    assert TEST_HF_TOKEN not in json.dumps(_keys_secret(program_runs["prod"]).inputs)
