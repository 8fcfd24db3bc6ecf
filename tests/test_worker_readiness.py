"""Workers that can be Ready, and a serve Service that still reaches the head only."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from helpers.stack_files import STACKS

from infra.plan import ServingPlan
from infra.plan.worker_readiness import (
    DASHBOARD_AGENT_PORT,
    RAY_NODE_HEALTH_PATH,
    endpoint_port,
    kuberay_serve_ports,
    receives_serve_traffic,
    worker_can_be_ready,
)
from serve.serve_config import PROXY_LOCATION, SERVE_HTTP_PORT


def _containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = group["template"]["spec"]["containers"]
    return containers


def _serve_port(plan: ServingPlan) -> dict[str, Any]:
    """The serve Service's port as KubeRay builds it from the head and `spec.serveService`."""
    spec = plan.ray_service_spec
    head = _containers(spec["rayClusterConfig"]["headGroupSpec"])[0]
    (port,) = kuberay_serve_ports(head["ports"], spec["serveService"]["spec"]["ports"])
    return port


@pytest.mark.parametrize("stack", STACKS)
def test_workers_probe_the_ray_node_like_kuberay_does(plans: dict[str, ServingPlan], stack: str) -> None:
    for group in plans[stack].ray_cluster_config["workerGroupSpecs"]:
        probe = _containers(group)[0]["readinessProbe"]
        assert probe["httpGet"] == {"path": "/api/healthz", "port": 52365}
        assert (RAY_NODE_HEALTH_PATH, DASHBOARD_AGENT_PORT) == ("/api/healthz", 52365)
        assert worker_can_be_ready(_containers(group)[0])


def test_without_its_own_probe_a_headonly_worker_is_never_ready(plans: dict[str, ServingPlan]) -> None:
    """KubeRay's probe adds the Serve proxy check, and HeadOnly runs no proxy on a worker."""
    assert PROXY_LOCATION == "HeadOnly"
    worker = copy.deepcopy(_containers(plans["prod"].ray_cluster_config["workerGroupSpecs"][0])[0])
    del worker["readinessProbe"]
    assert not worker_can_be_ready(worker)
    assert worker_can_be_ready(worker, proxy_location="EveryNode")


@pytest.mark.parametrize("stack", STACKS)
def test_serve_traffic_reaches_the_head_and_no_worker(plans: dict[str, ServingPlan], stack: str) -> None:
    plan = plans[stack]
    port = _serve_port(plan)
    # KubeRay keeps the user's port whole: the named target survives.
    assert port["targetPort"] == "serve"
    head = _containers(plan.ray_cluster_config["headGroupSpec"])
    assert endpoint_port(port, head) == SERVE_HTTP_PORT
    for group in plan.ray_cluster_config["workerGroupSpecs"]:
        worker = _containers(group)
        assert worker_can_be_ready(worker[0])
        assert endpoint_port(port, worker) is None
        assert not receives_serve_traffic(port, worker, ready=True)


def test_a_numbered_target_would_send_traffic_to_ready_workers(plans: dict[str, ServingPlan]) -> None:
    """Why the target is named: the port as it was (8000 by number) reaches every selected pod."""
    plan = plans["prod"]
    numbered = {**_serve_port(plan), "targetPort": SERVE_HTTP_PORT}
    worker = _containers(plan.ray_cluster_config["workerGroupSpecs"][0])
    assert receives_serve_traffic(numbered, worker, ready=True)
    # ... which only the never-passing proxy probe used to prevent.
    assert not receives_serve_traffic(numbered, worker, ready=False)


def test_endpoint_port_matches_name_and_protocol() -> None:
    containers = [{"ports": [{"name": "serve", "containerPort": 8000}, {"name": "m", "containerPort": 8080}]}]
    assert endpoint_port({"port": 80, "targetPort": "serve"}, containers) == 8000
    assert endpoint_port({"port": 80, "targetPort": "serve", "protocol": "UDP"}, containers) is None
    assert endpoint_port({"port": 80, "targetPort": "other"}, containers) is None
    assert endpoint_port({"port": 80}, []) == 80


def test_kuberay_merges_ports_by_name() -> None:
    head = [{"name": "dashboard", "containerPort": 8265}, {"name": "serve", "containerPort": 8000}]
    assert kuberay_serve_ports(head, []) == [{"name": "serve", "port": 8000}]
    user = [{"name": "serve", "port": 80, "targetPort": "serve"}, {"name": "extra", "port": 1}]
    assert kuberay_serve_ports(head, user) == [{"name": "serve", "port": 80, "targetPort": "serve"}]
    # A user port under another name does not replace the head's.
    assert kuberay_serve_ports(head, [{"name": "http", "port": 80}]) == [{"name": "serve", "port": 8000}]
