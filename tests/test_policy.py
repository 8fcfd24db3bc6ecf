"""The policy pack in infra/policy: each rule on a passing and a violating resource, the pack as
the Pulumi CLI serves it, and every rule over everything the real program registers."""

from __future__ import annotations

import copy
import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, json_format, struct_pb2
from helpers.stack_files import STACKS
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from infra import resource_types
from infra.plan.ray_service import PORTS, RAY_SERVICE_NAME
from infra.policy import validators as v
from infra.policy.validators import (
    CLUSTER,
    NODE_POOL,
    RAY_CLUSTER,
    RAY_SERVICE,
    RULE_NAMES,
    SECRET,
    SERVICE,
    Validator,
)
from infra.report.mock_engine import TEST_HF_TOKEN, RegisteredResource
from serve.paths import REPO_ROOT
from serve.serve_config import HF_TOKEN_ENV

POLICY_DIR = REPO_ROOT / "infra" / "policy"
TOKEN = "hf_" + "Ab1" * 12  # looks like a token to the rule; not a real one
NODE_SA = "llm-serving-dev-nodes@llm-serving-test.iam.gserviceaccount.com"
CONFIG_MAP = resource_types.CONFIG_MAP
HELM_RELEASE = resource_types.HELM_RELEASE
SPOT_ONLY = (
    " must run on spot VMs (nodeConfig.spot: true), or be the on-demand fallback of a spot pool "
    "(node label llm-serving/fallback-for: <that pool's llm-serving/pool>)"
)


def resource_args(type_: str, props: Mapping[str, Any], name: str = "res") -> ResourceValidationArgs:
    """Arguments shaped as the analyzer builds them: inputs behind its unknown-checking proxy."""
    return ResourceValidationArgs(
        resource_type=type_,
        props=unknown_checking_proxy(copy.deepcopy(dict(props))),
        urn=f"urn:pulumi:test::llm-serving::{type_}::{name}",
        name=name,
        opts=PolicyResourceOptions(
            protect=False,
            ignore_changes=[],
            delete_before_replace=None,
            aliases=[],
            custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
            additional_secret_outputs=[],
        ),
        provider=None,
    )


def violations(validate: Validator, type_: str, props: Mapping[str, Any], name: str = "res") -> list[str]:
    found: list[str] = []

    def report_violation(message: str, urn: str | None = None) -> None:
        found.append(message)

    validate(resource_args(type_, props, name), report_violation)
    return found


def one_violation(validate: Validator, type_: str, props: Mapping[str, Any], name: str = "res") -> str:
    found = violations(validate, type_, props, name)
    assert len(found) == 1, found
    return found[0]


# --- resources shaped like the program's ------------------------------------------------------


def gpu_pool(**changes: Any) -> dict[str, Any]:
    pool: dict[str, Any] = {
        "cluster": "projects/p/locations/us-central1/clusters/gke",
        "location": "us-central1",
        "nodeLocations": ["us-central1-a", "us-central1-b"],
        "initialNodeCount": 0,
        "autoscaling": {"totalMinNodeCount": 0, "totalMaxNodeCount": 2, "locationPolicy": "ANY"},
        "nodeConfig": {
            "machineType": "g2-standard-8",
            "spot": True,
            "guestAccelerators": [
                {
                    "type": "nvidia-l4",
                    "count": 1,
                    "gpuDriverInstallationConfig": {"gpuDriverVersion": "LATEST"},
                }
            ],
            "taints": [{"key": "llm-serving/tier", "value": "l4", "effect": "NO_SCHEDULE"}],
            "serviceAccount": NODE_SA,
            "workloadMetadataConfig": {"mode": "GKE_METADATA"},
        },
    }
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = pool
        for key in parents:
            target = target[key]
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value
    return pool


def system_pool() -> dict[str, Any]:
    return {
        "nodeCount": 1,
        "nodeConfig": {"machineType": "e2-standard-4", "serviceAccount": NODE_SA},
    }


def cluster(**changes: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "location": "us-central1",
        "removeDefaultNodePool": True,
        "initialNodeCount": 1,
        "nodeConfig": {"serviceAccount": NODE_SA},
        "workloadIdentityConfig": {"workloadPool": "llm-serving-test.svc.id.goog"},
        "enableShieldedNodes": True,
    }
    props.update(changes)
    return {key: value for key, value in props.items() if value is not None}


def service(type_: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": "ray"}, "spec": {"type": type_, "ports": ports}}


def ray_service(env: list[dict[str, Any]] | None = None, **head: Any) -> dict[str, Any]:
    container = {
        "name": "ray-head",
        "image": "rayproject/ray-llm:2.60.0-py311-cu128",
        "env": env
        if env is not None
        else [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}],
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "llm", "namespace": "llm"},
        "spec": {
            "serveConfigV2": "applications:\n- name: llm\n  import_path: ray.serve.llm:build_openai_app\n",
            "rayClusterConfig": {
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0"},
                    "template": {"spec": {"containers": [container]}},
                    **head,
                },
                "workerGroupSpecs": [
                    {"groupName": "l4", "template": {"spec": {"containers": [dict(container, name="w")]}}}
                ],
            },
        },
    }


# --- GPU pools: tainted and spot ---------------------------------------------------------------


def test_tainted_spot_gpu_pool_passes() -> None:
    assert violations(v.validate_gpu_pool_tainted_and_spot, NODE_POOL, gpu_pool()) == []


def test_non_gpu_pools_are_not_judged_as_gpu_pools() -> None:
    assert violations(v.validate_gpu_pool_tainted_and_spot, NODE_POOL, system_pool()) == []
    assert violations(v.validate_gpu_pool_scales_to_zero, NODE_POOL, system_pool()) == []


def test_untainted_gpu_pool_is_a_violation() -> None:
    message = one_violation(
        v.validate_gpu_pool_tainted_and_spot, NODE_POOL, gpu_pool(nodeConfig__taints=None), "l4"
    )
    assert message.startswith("GPU node pool l4 must be tainted with effect NO_SCHEDULE or NO_EXECUTE")
    assert message.endswith("it has no taints")


def test_prefer_no_schedule_taint_does_not_count() -> None:
    taints = [{"key": "llm-serving/tier", "value": "l4", "effect": "PREFER_NO_SCHEDULE"}]
    message = one_violation(
        v.validate_gpu_pool_tainted_and_spot, NODE_POOL, gpu_pool(nodeConfig__taints=taints)
    )
    assert "its taint effects are ['PREFER_NO_SCHEDULE']" in message


def test_on_demand_gpu_pool_is_a_violation() -> None:
    for spot in (False, None):
        message = one_violation(
            v.validate_gpu_pool_tainted_and_spot, NODE_POOL, gpu_pool(nodeConfig__spot=spot), "l4"
        )
        assert message == "GPU node pool l4" + SPOT_ONLY


def test_gpu_machine_type_without_accelerators_is_a_gpu_pool() -> None:
    pool = gpu_pool(nodeConfig__guestAccelerators=None, nodeConfig__taints=None, nodeConfig__spot=None)
    found = violations(v.validate_gpu_pool_tainted_and_spot, NODE_POOL, pool)
    assert len(found) == 2


def test_inline_cluster_pools_are_judged_too() -> None:
    props = cluster(nodePools=[dict(gpu_pool(nodeConfig__spot=False), name="gpu")])
    message = one_violation(v.validate_gpu_pool_tainted_and_spot, CLUSTER, props, "gke")
    assert message == "GPU cluster gke node pool gpu" + SPOT_ONLY


# --- on-demand fallback pools behind spot ones ----------------------------------------------------


def labelled(pool: dict[str, Any], **labels: str) -> dict[str, Any]:
    pool["nodeConfig"]["labels"] = {**pool["nodeConfig"].get("labels", {}), **labels}
    return pool


def spot_l4() -> dict[str, Any]:
    return labelled(gpu_pool(), **{"llm-serving/pool": "gpu-l4"})


def fallback_l4(**changes: Any) -> dict[str, Any]:
    return labelled(
        gpu_pool(**{"nodeConfig__spot": False, **changes}),
        **{"llm-serving/pool": "gpu-l4-ondemand", "llm-serving/fallback-for": "gpu-l4"},
    )


def stack_violations(*pools: tuple[str, dict[str, Any]]) -> list[str]:
    """The stack rules over node pools given as (name, props), as the analyzer hands them over."""
    resources = [
        PolicyResource(
            resource_type=NODE_POOL,
            props=unknown_checking_proxy(copy.deepcopy(props)),
            urn=f"urn:pulumi:test::llm-serving::{NODE_POOL}::{name}",
            name=name,
            opts=resource_args(NODE_POOL, {}).opts,
            provider=None,
            parent=None,
            dependencies=[],
            property_dependencies={},
        )
        for name, props in pools
    ]
    found: list[str] = []
    for rule in v.STACK_RULES:
        rule.validate(StackValidationArgs(resources), lambda message, urn=None: found.append(message))
    return found


def test_on_demand_fallback_of_a_spot_pool_passes() -> None:
    assert violations(v.validate_gpu_pool_tainted_and_spot, NODE_POOL, fallback_l4()) == []
    assert violations(v.validate_gpu_pool_scales_to_zero, NODE_POOL, fallback_l4()) == []
    assert stack_violations(("gke-gpu-l4", spot_l4()), ("gke-gpu-l4-ondemand", fallback_l4())) == []


def test_a_fallback_must_scale_to_zero_too() -> None:
    message = one_violation(
        v.validate_gpu_pool_scales_to_zero, NODE_POOL, fallback_l4(autoscaling__totalMinNodeCount=1.0)
    )
    assert "must be able to scale to zero" in message


def test_a_fallback_of_a_missing_pool_is_a_violation() -> None:
    (message,) = stack_violations(("gke-gpu-l4-ondemand", fallback_l4()))
    assert "no GPU pool of the stack has llm-serving/pool: gpu-l4" in message
    # A CPU pool by that name does not count: only GPU capacity is backed.
    cpu = labelled({"nodeConfig": {"machineType": "e2-standard-4"}}, **{"llm-serving/pool": "gpu-l4"})
    assert len(stack_violations(("cpu", cpu), ("gke-gpu-l4-ondemand", fallback_l4()))) == 1


def test_a_fallback_of_an_on_demand_pool_is_a_violation() -> None:
    on_demand = labelled(gpu_pool(nodeConfig__spot=False), **{"llm-serving/pool": "gpu-l4"})
    (message,) = stack_violations(("gke-gpu-l4", on_demand), ("gke-gpu-l4-ondemand", fallback_l4()))
    assert "which is not a spot pool" in message


def test_a_spot_pool_labelled_as_a_fallback_is_a_violation() -> None:
    spot_fallback = fallback_l4(nodeConfig__spot=True)
    (message,) = stack_violations(("gke-gpu-l4", spot_l4()), ("gke-gpu-l4-b", spot_fallback))
    assert "runs on spot VMs" in message


def test_a_plain_on_demand_gpu_pool_is_still_a_violation_next_to_a_spot_pool() -> None:
    """Without the label, a spot pool in the stack does not excuse an on-demand one."""
    plain = labelled(gpu_pool(nodeConfig__spot=False), **{"llm-serving/pool": "gpu-l4-ondemand"})
    assert one_violation(v.validate_gpu_pool_tainted_and_spot, NODE_POOL, plain, "l4").endswith(SPOT_ONLY)


def test_stack_rules_pass_on_real_program_and_catch_a_broken_fallback(
    registered: list[RegisteredResource],
) -> None:
    pools = [(r.name, r.inputs) for r in gpu_pools(registered)]
    assert stack_violations(*pools) == []
    fallbacks = [(n, p) for n, p in pools if "llm-serving/fallback-for" in p["nodeConfig"]["labels"]]
    if not fallbacks:
        return  # dev: no fallback to break (tests/test_program.py checks prod has one)
    backed = {p["nodeConfig"]["labels"]["llm-serving/fallback-for"] for _, p in fallbacks}
    # The program's fallbacks without the spot pools they back: each is refused.
    without_backed = [(n, p) for n, p in pools if p["nodeConfig"]["labels"]["llm-serving/pool"] not in backed]
    assert len(stack_violations(*without_backed)) == len(fallbacks)


# --- GPU pools: scale to zero ------------------------------------------------------------------


def test_gpu_pool_that_scales_to_zero_passes() -> None:
    assert violations(v.validate_gpu_pool_scales_to_zero, NODE_POOL, gpu_pool()) == []
    per_zone = gpu_pool(autoscaling={"minNodeCount": 0, "maxNodeCount": 1}, initialNodeCount=None)
    assert violations(v.validate_gpu_pool_scales_to_zero, NODE_POOL, per_zone) == []


def test_gpu_pool_with_a_minimum_is_a_violation() -> None:
    pool = gpu_pool(autoscaling__totalMinNodeCount=1.0)  # the engine sends numbers as floats
    message = one_violation(v.validate_gpu_pool_scales_to_zero, NODE_POOL, pool, "a100")
    assert message == (
        "GPU node pool a100 must be able to scale to zero "
        "(autoscaling.totalMinNodeCount or minNodeCount must be 0; totalMinNodeCount: 1)"
    )


def test_gpu_pool_without_a_minimum_is_a_violation() -> None:
    pool = gpu_pool(autoscaling={"totalMaxNodeCount": 2})
    message = one_violation(v.validate_gpu_pool_scales_to_zero, NODE_POOL, pool)
    assert message.endswith("(autoscaling.totalMinNodeCount or minNodeCount must be 0; no minimum set)")


def test_fixed_size_gpu_pool_is_a_violation() -> None:
    found = violations(v.validate_gpu_pool_scales_to_zero, NODE_POOL, gpu_pool(autoscaling=None, nodeCount=2))
    assert found == [
        "GPU node pool res must be autoscaled (autoscaling with totalMinNodeCount: 0 or minNodeCount: 0), "
        "so it costs nothing while idle",
        "GPU node pool res must not start with GPU nodes (nodeCount: 2; leave it unset or 0 "
        "and let the autoscaler add nodes on demand)",
    ]


def test_gpu_pool_created_with_nodes_is_a_violation() -> None:
    message = one_violation(v.validate_gpu_pool_scales_to_zero, NODE_POOL, gpu_pool(initialNodeCount=1))
    assert "(initialNodeCount: 1;" in message


# --- the cluster -------------------------------------------------------------------------------


def test_hardened_cluster_passes() -> None:
    assert violations(v.validate_cluster_hardening, CLUSTER, cluster()) == []
    assert violations(v.validate_node_service_account, CLUSTER, cluster()) == []


def test_cluster_without_workload_identity_is_a_violation() -> None:
    message = one_violation(
        v.validate_cluster_hardening, CLUSTER, cluster(workloadIdentityConfig=None), "gke"
    )
    assert message == (
        "cluster gke must enable Workload Identity "
        "(workloadIdentityConfig.workloadPool: <project>.svc.id.goog)"
    )


def test_cluster_without_shielded_nodes_is_a_violation() -> None:
    for value in (False, None):
        message = one_violation(
            v.validate_cluster_hardening, CLUSTER, cluster(enableShieldedNodes=value), "gke"
        )
        assert message == "cluster gke must set enableShieldedNodes: true"


def test_default_pool_kept_with_default_service_account_is_a_violation() -> None:
    props = cluster(removeDefaultNodePool=None, nodeConfig=None)
    message = one_violation(v.validate_node_service_account, CLUSTER, props, "gke")
    assert message == (
        "the default node pool of cluster gke uses the Compute Engine default service account "
        "(nodeConfig.serviceAccount is not set); use a dedicated node service account"
    )


def test_removed_default_pool_needs_no_service_account_but_a_set_one_is_checked() -> None:
    assert violations(v.validate_node_service_account, CLUSTER, cluster(nodeConfig=None)) == []
    default = "123456789-compute@developer.gserviceaccount.com"
    message = one_violation(
        v.validate_node_service_account, CLUSTER, cluster(nodeConfig={"serviceAccount": default}), "gke"
    )
    assert f"uses the Compute Engine default service account ({default})" in message


def test_node_pool_service_account() -> None:
    assert violations(v.validate_node_service_account, NODE_POOL, gpu_pool()) == []
    assert violations(v.validate_node_service_account, NODE_POOL, system_pool()) == []
    message = one_violation(
        v.validate_node_service_account, NODE_POOL, gpu_pool(nodeConfig__serviceAccount=None), "l4"
    )
    assert message == (
        "GKE node pool l4 uses the Compute Engine default service account "
        "(nodeConfig.serviceAccount is not set); use a dedicated node service account"
    )
    message = one_violation(
        v.validate_node_service_account, NODE_POOL, gpu_pool(nodeConfig__serviceAccount="default"), "l4"
    )
    assert "(default)" in message


def test_node_pool_exposing_the_node_metadata_server_is_a_violation() -> None:
    pool = gpu_pool(nodeConfig__workloadMetadataConfig={"mode": "GCE_METADATA"})
    message = one_violation(v.validate_node_service_account, NODE_POOL, pool, "l4")
    assert "(workloadMetadataConfig.mode: GCE_METADATA)" in message


def test_unknown_service_account_defers_the_rule_to_the_update() -> None:
    # During a preview the new account's email is unknown: the SDK reports "can't run during
    # preview" (advisory) and the rule runs with the real value during `pulumi up`.
    with pytest.raises(UnknownValueError):
        violations(
            v.validate_node_service_account,
            NODE_POOL,
            gpu_pool(nodeConfig__serviceAccount=UNKNOWN_STRING_VALUE),
        )


# --- Ray's control ports -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service_type", "ports"),
    [
        ("ClusterIP", [{"name": "dashboard", "port": 8265}]),
        ("LoadBalancer", [{"name": "serve", "port": 8000, "targetPort": 8000}]),
        ("NodePort", [{"name": "http", "port": 80, "targetPort": "serve"}]),
    ],
)
def test_services_that_keep_ray_ports_inside_pass(service_type: str, ports: list[dict[str, Any]]) -> None:
    assert violations(v.validate_ray_ports_not_exposed, SERVICE, service(service_type, ports)) == []


@pytest.mark.parametrize(
    ("service_type", "port", "shown"),
    [
        ("LoadBalancer", {"name": "dashboard", "port": 8265}, "dashboard"),
        ("LoadBalancer", {"port": 6379.0}, "6379.0"),
        ("NodePort", {"name": "ray", "port": 443, "targetPort": 10001}, "ray"),
        ("NodePort", {"name": "x", "port": 80, "targetPort": "gcs-server"}, "x"),
    ],
)
def test_exposed_ray_ports_are_a_violation(service_type: str, port: dict[str, Any], shown: str) -> None:
    props = service(service_type, [{"name": "serve", "port": 8000}, port])
    message = one_violation(v.validate_ray_ports_not_exposed, SERVICE, props, "head")
    assert message == (
        f"Service head of type {service_type} exposes Ray's control ports ['{shown}'] outside the cluster; "
        "use ClusterIP and `kubectl port-forward`"
    )


def test_ray_service_with_a_cluster_ip_head_passes() -> None:
    assert violations(v.validate_ray_ports_not_exposed, RAY_SERVICE, ray_service()) == []
    assert (
        violations(v.validate_ray_ports_not_exposed, RAY_SERVICE, ray_service(serviceType="ClusterIP")) == []
    )


def test_ray_service_asking_kuberay_for_an_exposed_head_is_a_violation() -> None:
    message = one_violation(
        v.validate_ray_ports_not_exposed, RAY_SERVICE, ray_service(serviceType="LoadBalancer"), "llm"
    )
    assert message.startswith("RayService llm sets headGroupSpec.serviceType: LoadBalancer, which exposes")
    message = one_violation(
        v.validate_ray_ports_not_exposed,
        RAY_SERVICE,
        ray_service(headService={"spec": {"type": "NodePort"}}),
        "llm",
    )
    assert message.startswith("RayService llm sets headGroupSpec.headService.spec.type: NodePort")


def test_ray_cluster_head_is_checked_too() -> None:
    props = {"spec": {"headGroupSpec": {"serviceType": "NodePort"}}}
    message = one_violation(v.validate_ray_ports_not_exposed, RAY_CLUSTER, props, "rc")
    assert message.startswith("RayCluster rc sets headGroupSpec.serviceType: NodePort")


# --- a private endpoint ------------------------------------------------------------------------

INTERNAL = {"networking.gke.io/load-balancer-type": "Internal"}


@pytest.mark.parametrize("service_type", ["ClusterIP", "ExternalName", "NodePort"])
def test_services_that_are_no_load_balancer_need_no_annotation(service_type: str) -> None:
    props = service(service_type, [{"name": "serve", "port": 80}])
    assert violations(v.validate_load_balancers_internal, SERVICE, props) == []


def test_an_internal_load_balancer_passes_and_every_other_one_is_a_violation() -> None:
    internal = service("LoadBalancer", [{"name": "serve", "port": 80}])
    internal["metadata"]["annotations"] = INTERNAL
    assert violations(v.validate_load_balancers_internal, SERVICE, internal) == []
    for wrong in (None, {}, {"networking.gke.io/load-balancer-type": "External"}):
        props = copy.deepcopy(internal)
        props["metadata"]["annotations"] = wrong
        message = one_violation(v.validate_load_balancers_internal, SERVICE, props, "llm-serve-svc")
        assert message == (
            "Service llm-serve-svc is a LoadBalancer without the annotation "
            "networking.gke.io/load-balancer-type: Internal (or loadBalancerClass "
            "networking.gke.io/l4-regional-internal), so GKE gives it an external address; "
            "add the annotation or use ClusterIP"
        )


def test_gkes_other_two_ways_of_asking_for_an_internal_load_balancer_pass() -> None:
    legacy = service("LoadBalancer", [{"name": "serve", "port": 80}])
    legacy["metadata"]["annotations"] = {"cloud.google.com/load-balancer-type": "Internal"}
    assert violations(v.validate_load_balancers_internal, SERVICE, legacy) == []
    by_class = service("LoadBalancer", [{"name": "serve", "port": 80}])
    by_class["spec"]["loadBalancerClass"] = "networking.gke.io/l4-regional-internal"
    assert violations(v.validate_load_balancers_internal, SERVICE, by_class) == []
    by_class["spec"]["loadBalancerClass"] = "networking.gke.io/l4-regional-external"
    assert len(violations(v.validate_load_balancers_internal, SERVICE, by_class)) == 1


def test_the_ray_service_s_serve_service_must_be_internal_too() -> None:
    props = ray_service()
    props["spec"]["serveService"] = {
        "spec": {"type": "LoadBalancer", "ports": [{"name": "serve", "port": 80}]}
    }
    message = one_violation(v.validate_load_balancers_internal, RAY_SERVICE, props, "llm")
    assert message.startswith("RayService llm serveService is a LoadBalancer without the annotation")
    props["spec"]["serveService"]["metadata"] = {"annotations": INTERNAL}
    assert violations(v.validate_load_balancers_internal, RAY_SERVICE, props) == []


INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
HTTP_ROUTE = "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"
GRPC_ROUTE = "kubernetes:gateway.networking.k8s.io/v1:GRPCRoute"
TCP_ROUTE = "kubernetes:gateway.networking.k8s.io/v1alpha2:TCPRoute"


def ingress(service: str, port: dict[str, Any], default: dict[str, Any] | None = None) -> dict[str, Any]:
    """A networking.k8s.io/v1 Ingress with one path to `service`:`port` (and an optional default)."""
    spec: dict[str, Any] = {
        "ingressClassName": "gce",
        "rules": [
            {
                "host": "llm.example.com",
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": service, "port": port}},
                        }
                    ]
                },
            }
        ],
    }
    if default is not None:
        spec["defaultBackend"] = {"service": default}
    return {"metadata": {"name": "llm", "namespace": "llm-serving"}, "spec": spec}


def route(*backend_refs: dict[str, Any], filters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Gateway API route (HTTPRoute, GRPCRoute and TCPRoute share this shape) with one rule."""
    rule: dict[str, Any] = {"backendRefs": list(backend_refs)}
    if filters is not None:
        rule["filters"] = filters
    return {
        "metadata": {"name": "llm", "namespace": "llm-serving"},
        "spec": {"parentRefs": [{"name": "external", "namespace": "gateways"}], "rules": [rule]},
    }


@pytest.mark.parametrize(
    ("type_", "props"),
    [
        (INGRESS, ingress("llm-serve-svc", {"number": 8000})),
        (
            INGRESS,
            ingress("llm-serve-svc", {"name": "serve"}, default={"name": "web", "port": {"number": 80}}),
        ),
        (HTTP_ROUTE, route({"name": "llm-serve-svc", "port": 8000})),
        (GRPC_ROUTE, route({"name": "llm-serve-svc", "port": 9000})),
        # Not a Service: an imported service of the same port is someone else's to judge.
        (
            HTTP_ROUTE,
            route({"group": "multicluster.x-k8s.io", "kind": "ServiceImport", "name": "x", "port": 8265}),
        ),
        # Other kinds are not routes to Services.
        (CONFIG_MAP, {"data": {"port": "8265"}}),
    ],
)
def test_routes_to_the_serve_service_pass(type_: str, props: dict[str, Any]) -> None:
    assert violations(v.validate_ray_ports_not_exposed, type_, props) == []


@pytest.mark.parametrize(
    ("port", "shown"),
    [
        ({"number": 8265}, "8265"),
        ({"number": 6379.0}, "6379.0"),
        ({"number": 10001}, "10001"),
        ({"name": "dashboard"}, "dashboard"),
    ],
)
def test_ingress_to_a_ray_control_port_is_a_violation(port: dict[str, Any], shown: str) -> None:
    message = one_violation(v.validate_ray_ports_not_exposed, INGRESS, ingress("ray-admin", port), "llm")
    assert message == (
        f"Ingress llm spec.rules.0.http.paths.0.backend.service sends traffic to Ray's control port {shown} "
        "(Service ray-admin); Ray's control ports must stay inside the cluster (use `kubectl port-forward`)"
    )


def test_ingress_to_the_head_service_is_a_violation_on_any_port() -> None:
    props = ingress(
        "llm-serve-svc", {"number": 8000}, default={"name": "llm-head-svc", "port": {"number": 8000}}
    )
    message = one_violation(v.validate_ray_ports_not_exposed, INGRESS, props, "llm")
    assert message.startswith(
        "Ingress llm spec.defaultBackend.service sends traffic to the Ray head Service llm-head-svc"
    )
    assert "route to the serve Service (<name>-serve-svc) instead" in message


def test_legacy_ingress_backend_is_judged_too() -> None:
    props = {
        "spec": {"rules": [{"http": {"paths": [{"backend": {"serviceName": "ray", "servicePort": 10001}}]}}]}
    }
    message = one_violation(
        v.validate_ray_ports_not_exposed, "kubernetes:networking.k8s.io/v1beta1:Ingress", props, "old"
    )
    assert "spec.rules.0.http.paths.0.backend sends traffic to Ray's control port 10001" in message


@pytest.mark.parametrize("type_", [HTTP_ROUTE, GRPC_ROUTE, TCP_ROUTE])
def test_gateway_route_to_a_ray_control_port_is_a_violation(type_: str) -> None:
    props = route({"name": "llm-serve-svc", "port": 8000}, {"name": "ray-gcs", "port": 6379, "weight": 1})
    message = one_violation(v.validate_ray_ports_not_exposed, type_, props, "llm")
    kind = type_.rsplit(":", 1)[-1]
    assert message.startswith(
        f"{kind} llm spec.rules.0.backendRefs.1 sends traffic to Ray's control port 6379 (Service ray-gcs)"
    )


def test_gateway_route_to_the_head_service_or_mirroring_to_it_is_a_violation() -> None:
    found = violations(
        v.validate_ray_ports_not_exposed,
        HTTP_ROUTE,
        route(
            {"kind": "Service", "name": "llm-head-svc", "port": 8000},
            filters=[
                {
                    "type": "RequestMirror",
                    "requestMirror": {"backendRef": {"name": "llm-head-svc", "port": 8265}},
                }
            ],
        ),
        "llm",
    )
    assert [message.split(" sends ")[0] for message in found] == [
        "HTTPRoute llm spec.rules.0.backendRefs.0",
        "HTTPRoute llm spec.rules.0.filters.0.requestMirror.backendRef",
    ]


def test_unknown_backend_defers_the_route_rule_to_the_update() -> None:
    with pytest.raises(UnknownValueError):
        violations(
            v.validate_ray_ports_not_exposed, HTTP_ROUTE, route({"name": UNKNOWN_STRING_VALUE, "port": 8000})
        )


def test_route_rule_knows_the_programs_port_names_and_head_service() -> None:
    # The rule's names for Ray's ports and head Service are KubeRay's, as the program writes them.
    control = {name: port for name, port in PORTS.items() if name != "serve"}
    assert {name: v.RAY_INTERNAL_PORTS[name] for name in control} == control
    head = f"{RAY_SERVICE_NAME}{v.RAY_HEAD_SERVICE_SUFFIX}"
    message = one_violation(
        v.validate_ray_ports_not_exposed, INGRESS, ingress(head, {"number": PORTS["serve"]}), "llm"
    )
    assert f"Ray head Service {head}" in message


# --- the Hugging Face token --------------------------------------------------------------------


def test_token_in_a_secret_and_secret_refs_pass() -> None:
    secret = {"metadata": {"name": "hf-token"}, "type": "Opaque", "stringData": {"token": TOKEN}}
    assert violations(v.validate_hf_token_only_in_secret, SECRET, secret) == []
    assert violations(v.validate_hf_token_only_in_secret, RAY_SERVICE, ray_service()) == []
    config_map = {"data": {"HF_HUB_DISABLE_TELEMETRY": "1", "note": "hf_short"}}
    assert violations(v.validate_hf_token_only_in_secret, CONFIG_MAP, config_map) == []


def test_token_in_a_config_map_is_a_violation() -> None:
    message = one_violation(
        v.validate_hf_token_only_in_secret, CONFIG_MAP, {"data": {"HF_TOKEN": TOKEN}}, "env"
    )
    assert message == (
        f"{CONFIG_MAP} env has a literal Hugging Face token at data.HF_TOKEN; "
        "keep it only in the kubernetes:core/v1:Secret and reference that"
    )


def test_token_inside_serve_config_text_is_a_violation() -> None:
    props = ray_service()
    props["spec"]["serveConfigV2"] += f"  runtime_env:\n    env_vars:\n      HF_TOKEN: {TOKEN}\n"
    message = one_violation(v.validate_hf_token_only_in_secret, RAY_SERVICE, props, "llm")
    assert "has a literal Hugging Face token at spec.serveConfigV2;" in message


def test_token_in_helm_values_is_a_violation() -> None:
    props = {"chart": "kuberay-operator", "values": {"env": [{"name": "X", "value": f"Bearer {TOKEN}"}]}}
    message = one_violation(v.validate_hf_token_only_in_secret, HELM_RELEASE, props, "op")
    assert "at values.env.0.value;" in message


def test_token_env_var_set_by_value_is_a_violation() -> None:
    props = ray_service(env=[{"name": "HF_TOKEN", "value": TOKEN}])
    found = violations(v.validate_hf_token_only_in_secret, RAY_SERVICE, props, "llm")
    head = "spec.rayClusterConfig.headGroupSpec.template.spec.containers.0.env"
    worker = "spec.rayClusterConfig.workerGroupSpecs.0.template.spec.containers.0.env"
    assert found == [
        f"{RAY_SERVICE} llm has a literal Hugging Face token at {head}.0.value; "
        "keep it only in the kubernetes:core/v1:Secret and reference that",
        f"{RAY_SERVICE} llm has a literal Hugging Face token at {worker}.0.value; "
        "keep it only in the kubernetes:core/v1:Secret and reference that",
        f"{RAY_SERVICE} llm sets {head}.0 (HF_TOKEN) with `value`; "
        "take it from the Secret with valueFrom.secretKeyRef",
        f"{RAY_SERVICE} llm sets {worker}.0 (HF_TOKEN) with `value`; "
        "take it from the Secret with valueFrom.secretKeyRef",
    ]


def test_token_env_var_is_judged_even_when_its_value_is_no_token() -> None:
    props = ray_service(env=[{"name": "HUGGING_FACE_HUB_TOKEN", "value": "$(TOKEN)"}])
    found = violations(v.validate_hf_token_only_in_secret, RAY_SERVICE, props)
    assert len(found) == 2
    assert all("(HUGGING_FACE_HUB_TOKEN) with `value`" in message for message in found)
    props = ray_service(
        env=[{"name": "HF_TOKEN", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]
    )
    found = violations(v.validate_hf_token_only_in_secret, RAY_SERVICE, props)
    assert len(found) == 2
    assert all(
        message.endswith("(HF_TOKEN) without valueFrom.secretKeyRef; take it from the Secret")
        for message in found
    )


def test_unknown_values_are_skipped_by_the_token_scan() -> None:
    props = {"data": {"a": UNKNOWN_STRING_VALUE, "b": TOKEN}}
    message = one_violation(v.validate_hf_token_only_in_secret, CONFIG_MAP, props)
    assert "at data.b;" in message


def test_the_programs_token_env_var_is_one_the_rule_knows() -> None:
    assert HF_TOKEN_ENV in v.HF_TOKEN_ENV_NAMES


# --- the pack as the CLI runs it ----------------------------------------------------------------


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """`python -m pulumi.policy <engine> infra/policy`, exactly what pulumi-analyzer-policy-python runs."""
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:0", str(POLICY_DIR)],
        cwd=POLICY_DIR,
        # This checkout's modules, also where the virtualenv's editable install points elsewhere
        # (a git worktree sharing another checkout's .venv).
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 60)
        port = process.stdout.readline().strip() if ready else ""
        if not port.isdigit():
            process.kill()
            _, stderr = process.communicate(timeout=10)
            pytest.fail(f"the policy pack did not start (printed {port!r}):\n{stderr}")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.kill()
        process.wait(timeout=10)


def test_pack_serves_every_rule_as_mandatory(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "llm-serving-policies"
    assert [policy.name for policy in info.policies] == list(RULE_NAMES)
    mandatory = analyzer_pb2.EnforcementLevel.Value("MANDATORY")
    assert {policy.enforcementLevel for policy in info.policies} == {mandatory}


def test_pack_reports_a_violation_over_grpc(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    properties = struct_pb2.Struct()
    json_format.ParseDict(gpu_pool(nodeConfig__spot=False), properties)
    response = analyzer.Analyze(
        analyzer_pb2.AnalyzeRequest(
            type=NODE_POOL,
            properties=properties,
            urn=f"urn:pulumi:dev::llm-serving::{NODE_POOL}::l4",
            name="l4",
        )
    )
    assert [(d.policyName, d.message.splitlines()[-1]) for d in response.diagnostics] == [
        ("gpu-pool-tainted-and-spot", "GPU node pool l4" + SPOT_ONLY)
    ]


# --- the per-stack configuration the workflows pass ------------------------------------------------

POLICY_CONFIG_DIR = POLICY_DIR / "config"
# What the CLI accepts for a rule (pulumi/pulumi pkg/resource/analyzer/config.go): a level, or an
# object with `enforcementLevel` (and properties). Names it does not know it applies silently to
# nothing, so a misspelt rule would leave the real one mandatory without a word.
ENFORCEMENT_LEVELS = {"advisory", "mandatory", "disabled", "remediate"}


def policy_config(stack: str) -> dict[str, Any]:
    config = json.loads((POLICY_CONFIG_DIR / f"{stack}.json").read_text())
    assert isinstance(config, dict), f"{stack}.json: not an object"
    return config


def enforcement_level(value: Any) -> str:
    return value if isinstance(value, str) else value["enforcementLevel"]


@pytest.mark.parametrize("stack", STACKS)
def test_stack_policy_config_names_rules_of_the_pack_with_valid_levels(stack: str) -> None:
    config = policy_config(stack)
    assert set(config) <= {*RULE_NAMES, "all"}, f"{stack}.json: unknown rule names"
    for name, value in config.items():
        assert isinstance(value, str | dict), (name, value)
        assert enforcement_level(value) in ENFORCEMENT_LEVELS, (name, value)


@pytest.mark.parametrize("stack", STACKS)
def test_stack_policy_configs_ship_with_every_rule_mandatory(stack: str) -> None:
    # The starting point: a stack lowers a rule in its own file, in a reviewed pull request.
    assert {name: enforcement_level(value) for name, value in policy_config(stack).items()} == {
        name: "mandatory" for name in RULE_NAMES
    }


def configure(analyzer: analyzer_pb2_grpc.AnalyzerStub, config: Mapping[str, Any]) -> None:
    """What the CLI sends for `--policy-pack-config`: every policy's level, the file's where set."""
    levels = {name: "mandatory" for name in RULE_NAMES}
    levels |= {name: enforcement_level(value) for name, value in config.items() if name != "all"}
    analyzer.Configure(
        analyzer_pb2.ConfigureAnalyzerRequest(
            policyConfig={
                name: analyzer_pb2.PolicyConfig(
                    enforcementLevel=analyzer_pb2.EnforcementLevel.Value(level.upper())
                )
                for name, level in levels.items()
            }
        )
    )


def test_a_stack_config_lowers_a_rule_to_advisory_over_grpc(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    """The escape hatch for a stack that runs GPU pools on demand, as the pack applies it."""
    properties = struct_pb2.Struct()
    json_format.ParseDict(gpu_pool(nodeConfig__spot=False), properties)
    request = analyzer_pb2.AnalyzeRequest(
        type=NODE_POOL, properties=properties, urn=f"urn:pulumi:prod::llm-serving::{NODE_POOL}::l4", name="l4"
    )
    lowered = policy_config("prod") | {"gpu-pool-tainted-and-spot": "advisory"}
    try:
        configure(analyzer, lowered)
        (diagnostic,) = analyzer.Analyze(request).diagnostics
        assert diagnostic.policyName == "gpu-pool-tainted-and-spot"
        assert diagnostic.enforcementLevel == analyzer_pb2.EnforcementLevel.Value("ADVISORY")
        configure(analyzer, policy_config("prod"))
        (diagnostic,) = analyzer.Analyze(request).diagnostics
        assert diagnostic.enforcementLevel == analyzer_pb2.EnforcementLevel.Value("MANDATORY")
    finally:
        configure(analyzer, {})


# --- every rule over the real program -----------------------------------------------------------


def run_rules(type_: str, name: str, inputs: Mapping[str, Any]) -> list[str]:
    """Each ResourceValidationPolicy of the pack on one resource, as `policy: message` lines."""
    found: list[str] = []
    args = resource_args(type_, inputs, name)
    for policy in v.policies():
        if isinstance(policy, StackValidationPolicy):
            continue  # judged over every resource at once: run_stack_rules
        assert isinstance(policy, ResourceValidationPolicy)

        def report_violation(message: str, urn: str | None = None, policy_name: str = policy.name) -> None:
            found.append(f"{policy_name}: {message}")

        policy.validate(args, report_violation)
    return found


@pytest.fixture(params=STACKS)
def registered(request: pytest.FixtureRequest, program_runs: dict[str, Any]) -> list[RegisteredResource]:
    """Every resource the real program registers for a stack, under Pulumi's mock engine."""
    return list(program_runs[request.param].resources)


def test_policies_pass_on_real_program(registered: list[RegisteredResource]) -> None:
    types = {resource.type_ for resource in registered}
    # Not a vacuous pass: the resources every rule is about are there, and so is the token.
    assert {CLUSTER, NODE_POOL, SECRET, RAY_SERVICE} <= types
    assert v.HF_TOKEN_PATTERN.fullmatch(TEST_HF_TOKEN)
    assert any(TEST_HF_TOKEN in json.dumps(r.inputs) for r in registered if r.type_ == SECRET)
    assert gpu_pools(registered), "no GPU node pool registered"

    found = [
        f"{r.type_} {r.name}: {line}" for r in registered for line in run_rules(r.type_, r.name, r.inputs)
    ]
    assert found == []


def gpu_pools(resources: list[RegisteredResource]) -> list[RegisteredResource]:
    return [r for r in resources if r.type_ == NODE_POOL and r.inputs["nodeConfig"].get("guestAccelerators")]


def set_token_env_by_value(value: Any, token: str) -> int:
    """Give every HF_TOKEN env var a literal `value` next to its secretKeyRef; returns how many."""
    count = 0
    if isinstance(value, dict):
        if value.get("name") == HF_TOKEN_ENV and "valueFrom" in value:
            value["value"] = token
            count += 1
        for child in value.values():
            count += set_token_env_by_value(child, token)
    elif isinstance(value, list):
        for child in value:
            count += set_token_env_by_value(child, token)
    return count


def test_policies_catch_changes_to_the_real_resources(registered: list[RegisteredResource]) -> None:
    ray = next(r for r in registered if r.type_ == RAY_SERVICE)
    leaked = copy.deepcopy(ray.inputs)
    head = leaked["spec"]["rayClusterConfig"]["headGroupSpec"]
    head["template"]["spec"]["containers"][0]["env"].append({"name": HF_TOKEN_ENV, "value": TEST_HF_TOKEN})
    head["serviceType"] = "LoadBalancer"
    found = run_rules(RAY_SERVICE, ray.name, leaked)
    assert any(line.startswith("ray-ports-not-exposed: RayService") for line in found), found
    assert any(line.startswith("hf-token-only-in-secret:") and "literal" in line for line in found), found
    assert any("(HF_TOKEN) with `value`" in line for line in found), found

    # The mirror Jobs are the pods that do read the token: by reference only.
    job = next(r for r in registered if r.type_ == resource_types.JOB)
    leaked_job = copy.deepcopy(job.inputs)
    assert set_token_env_by_value(leaked_job, TEST_HF_TOKEN) == 1
    found = run_rules(resource_types.JOB, job.name, leaked_job)
    assert any("(HF_TOKEN) with `value`" in line for line in found), found

    # A tier's own pool (a labelled fallback is on demand by design: its own tests above).
    pool = next(
        p for p in gpu_pools(registered) if "llm-serving/fallback-for" not in p.inputs["nodeConfig"]["labels"]
    )
    on_demand = copy.deepcopy(pool.inputs)
    on_demand["nodeConfig"]["spot"] = False
    on_demand["autoscaling"]["totalMinNodeCount"] = 1
    assert [line.split(":")[0] for line in run_rules(NODE_POOL, pool.name, on_demand)] == [
        "gpu-pool-tainted-and-spot",
        "gpu-pool-scales-to-zero",
    ]


# --- NetworkPolicies over the Ray pods ------------------------------------------------------------


def _policy(ingress: list[dict[str, Any]], selector: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "spec": {
            "podSelector": selector
            if selector is not None
            else {"matchLabels": {"ray.io/is-ray-node": "yes"}},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        }
    }


def test_the_programs_network_policies_pass() -> None:
    from infra.plan.endpoint import network_policies

    for policy in network_policies():
        assert violations(v.validate_ray_control_ports_closed, resource_types.NETWORK_POLICY, policy) == []


@pytest.mark.parametrize(
    "rule",
    [
        {},  # everyone, every port
        {"ports": [{"port": 8265}]},  # everyone, the dashboard
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 6379}]},
        {"from": [{"namespaceSelector": {}}]},  # every namespace, every port
        {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}}}]},
        {"from": [{"podSelector": {}}], "ports": [{"port": "client"}]},  # any pod of the namespace
    ],
)
def test_a_rule_that_opens_a_control_port_beyond_ray_pods_is_a_violation(rule: dict[str, Any]) -> None:
    message = one_violation(
        v.validate_ray_control_ports_closed, resource_types.NETWORK_POLICY, _policy([rule]), "open"
    )
    assert "Ray's control ports" in message and "open" in message


def test_serve_port_for_everyone_and_ray_pods_for_everything_pass() -> None:
    ray = {"podSelector": {"matchLabels": {"ray.io/is-ray-node": "yes"}}}
    operator = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}}}
    ok = _policy(
        [{"ports": [{"port": 8000}]}, {"from": [ray]}, {"from": [operator], "ports": [{"port": 8265}]}]
    )
    assert violations(v.validate_ray_control_ports_closed, resource_types.NETWORK_POLICY, ok) == []
    # A policy over other pods is not judged.
    other = _policy([{}], selector={"matchLabels": {"app": "web"}})
    assert violations(v.validate_ray_control_ports_closed, resource_types.NETWORK_POLICY, other) == []
