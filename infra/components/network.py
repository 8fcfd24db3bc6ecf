"""The cluster's own network: VPC, subnetwork with pod and service ranges, Cloud Router + NAT."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from infra.plan.endpoint import serve_address
from infra.plan.network import NAT_IP_ALLOCATION, NAT_LOG_FILTER, NAT_SOURCE_RANGES, NetworkSpec


@dataclass(frozen=True)
class GkeNetworkArgs:
    spec: NetworkSpec
    """Region and address ranges (infra.plan.network)."""


class GkeNetwork(pulumi.ComponentResource):
    """A custom-mode VPC instead of the project's `default` network (which many organisations
    do not have), for private nodes: no external IPs, outbound through Cloud NAT, Google APIs
    through Private Google Access."""

    def __init__(self, name: str, args: GkeNetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-serving:infra:GkeNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        spec = args.spec
        self.network = gcp.compute.Network(
            name, auto_create_subnetworks=False, routing_mode="REGIONAL", opts=child
        )
        self.subnetwork = gcp.compute.Subnetwork(
            f"{name}-nodes",
            network=self.network.id,
            region=spec.region,
            ip_cidr_range=spec.node_cidr,
            private_ip_google_access=True,
            secondary_ip_ranges=[
                gcp.compute.SubnetworkSecondaryIpRangeArgs(
                    range_name=spec.pod_range_name, ip_cidr_range=spec.pod_cidr
                ),
                gcp.compute.SubnetworkSecondaryIpRangeArgs(
                    range_name=spec.service_range_name, ip_cidr_range=spec.service_cidr
                ),
            ],
            opts=child,
        )
        self.router = gcp.compute.Router(
            f"{name}-router", network=self.network.id, region=spec.region, opts=child
        )
        self.nat = gcp.compute.RouterNat(
            f"{name}-nat",
            router=self.router.name,
            region=spec.region,
            nat_ip_allocate_option=NAT_IP_ALLOCATION,
            source_subnetwork_ip_ranges_to_nat=NAT_SOURCE_RANGES,
            log_config=gcp.compute.RouterNatLogConfigArgs(enable=True, filter=NAT_LOG_FILTER),
            opts=child,
        )
        # The OpenAI endpoint's internal load balancer takes this reserved address (the RayService's
        # serveService names it), so its URL is known at preview and stays across recreates.
        self.openai_address = gcp.compute.Address(
            f"{name}-openai",
            address_type="INTERNAL",
            subnetwork=self.subnetwork.id,
            region=spec.region,
            address=serve_address(spec.node_cidr),
            description="llm-serving: internal address of the OpenAI endpoint",
            opts=child,
        )
        self.register_outputs(
            {
                "network": self.network.id,
                "subnetwork": self.subnetwork.id,
                "openai_address": self.openai_address.address,
            }
        )
