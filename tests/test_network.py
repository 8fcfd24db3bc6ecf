"""The stack's own network (`infra.components.network`) and how the cluster uses it, under the
mock engine: no `default` VPC, private nodes with a way out, Dataplane V2, and a teardown order
that removes the cluster before the network it lives in."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from helpers.mock_runs import shipped_run

from infra import resource_types
from infra.plan.network import (
    DATAPATH_PROVIDER,
    NODE_CIDR,
    POD_CIDR,
    POD_RANGE_NAME,
    SERVICE_CIDR,
    SERVICE_RANGE_NAME,
)
from infra.report.mock_engine import ProgramRun

STACKS = ("dev", "prod")


@pytest.fixture(scope="module", params=STACKS)
def run(request: pytest.FixtureRequest) -> ProgramRun:
    return shipped_run(request.param)


def _depends_on(run: ProgramRun, dependent: str, dependency: str) -> bool:
    """`dependent` (a type token) transitively depends on `dependency`, so it is deleted first."""
    by_urn = run.by_urn()
    targets = {r.urn for r in run.of_type(dependency)}
    start = run.one(dependent)
    seen, stack = set(), list(start.dependencies)
    while stack:
        urn = stack.pop()
        if urn in targets:
            return True
        if urn in seen or urn not in by_urn:
            continue
        seen.add(urn)
        stack.extend(by_urn[urn].dependencies)
    return False


def test_the_vpc_is_custom_mode_with_one_regional_subnetwork(run: ProgramRun) -> None:
    network = run.one(resource_types.NETWORK).inputs
    assert network["autoCreateSubnetworks"] is False
    subnetwork = run.one(resource_types.SUBNETWORK).inputs
    assert subnetwork["ipCidrRange"] == NODE_CIDR
    assert subnetwork["privateIpGoogleAccess"] is True
    assert subnetwork["region"] == run.one(resource_types.CLUSTER).inputs["location"]
    ranges = {r["rangeName"]: r["ipCidrRange"] for r in subnetwork["secondaryIpRanges"]}
    assert ranges == {POD_RANGE_NAME: POD_CIDR, SERVICE_RANGE_NAME: SERVICE_CIDR}


def test_the_ranges_do_not_overlap_and_are_big_enough() -> None:
    nodes, pods, services = (ipaddress.ip_network(c) for c in (NODE_CIDR, POD_CIDR, SERVICE_CIDR))
    assert not nodes.overlaps(pods) and not nodes.overlaps(services) and not pods.overlaps(services)
    assert all(n.is_private for n in (nodes, pods, services))
    # GKE takes a /24 of the pod range per node (110 pods): room for far more nodes than any stack.
    assert pods.num_addresses // 256 >= 3 * 32 + 2
    assert nodes.num_addresses - 4 >= 3 * 32 + 2


def test_private_nodes_get_out_through_cloud_nat(run: ProgramRun) -> None:
    nat = run.one(resource_types.ROUTER_NAT).inputs
    assert nat["sourceSubnetworkIpRangesToNat"] == "ALL_SUBNETWORKS_ALL_IP_RANGES"
    assert nat["natIpAllocateOption"] == "AUTO_ONLY"
    router = run.one(resource_types.ROUTER)
    assert nat["router"] == router.outputs["name"]
    assert _depends_on(run, resource_types.ROUTER_NAT, resource_types.ROUTER)
    assert _depends_on(run, resource_types.ROUTER, resource_types.NETWORK)


def test_the_cluster_lives_in_that_network_with_private_nodes(run: ProgramRun) -> None:
    cluster: dict[str, Any] = run.one(resource_types.CLUSTER).inputs
    network, subnetwork = run.one(resource_types.NETWORK), run.one(resource_types.SUBNETWORK)
    assert cluster["network"] == network.resource_id
    assert cluster["subnetwork"] == subnetwork.resource_id
    assert cluster["ipAllocationPolicy"] == {
        "clusterSecondaryRangeName": POD_RANGE_NAME,
        "servicesSecondaryRangeName": SERVICE_RANGE_NAME,
    }
    # Nodes without external IPs; the control plane keeps its public endpoint for pulumi/kubectl.
    assert cluster["privateClusterConfig"] == {"enablePrivateNodes": True, "enablePrivateEndpoint": False}
    assert cluster["datapathProvider"] == DATAPATH_PROVIDER == "ADVANCED_DATAPATH"
    assert "networkPolicy" not in cluster, "Dataplane V2 enforces NetworkPolicy itself"


def test_destroy_removes_the_cluster_before_its_network(run: ProgramRun) -> None:
    # Pulumi deletes dependents first: the cluster (and so every pool and in-cluster object)
    # goes before the subnetwork and VPC; the NAT before its router, the router before the VPC.
    assert _depends_on(run, resource_types.CLUSTER, resource_types.SUBNETWORK)
    assert _depends_on(run, resource_types.CLUSTER, resource_types.NETWORK)
    assert _depends_on(run, resource_types.SUBNETWORK, resource_types.NETWORK)


def test_pools_come_up_after_their_way_out_and_their_roles(run: ProgramRun) -> None:
    # Nodes pull images through the NAT and log and report metrics as the node account; on
    # destroy the pools go first, then the grants and the NAT.
    nat = run.one(resource_types.ROUTER_NAT).urn
    roles = {member.urn for member in run.of_type(resource_types.PROJECT_IAM_MEMBER)}
    for pool in run.of_type(resource_types.NODE_POOL):
        assert nat in pool.dependencies, pool.name
        assert roles <= set(pool.dependencies), pool.name


def test_the_cluster_never_diffs_the_removed_default_pools_config(run: ProgramRun) -> None:
    cluster = run.one(resource_types.CLUSTER)
    assert cluster.inputs["removeDefaultNodePool"] is True
    assert cluster.ignore_changes == ["nodeConfig"]
