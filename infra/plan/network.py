"""The stack's own VPC: one subnetwork with secondary ranges for pods and services, private
nodes that reach the internet (Hugging Face, Docker Hub) through Cloud NAT.

Not a stack setting (stacks differ only in tiers and autoscaling): every stack gets its own
VPC with the same ranges, so two stacks in one project never overlap anything but their names.

Sizes, from GKE's "VPC-native clusters" guidance (read 2026-11-26): GKE gives each node a /24
of the pod range at 110 pods per node, so a /14 holds 1,024 nodes; a /20 node range holds
4,092 node IPs (and, on PSC-based clusters, the control plane's internal endpoint); a /20
service range holds 4,096 Services. Google's reference (accelerated-platforms
platforms/gke/base/core/networking/compute_network.tf) uses the same NAT settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

NODE_CIDR: Final = "10.10.0.0/20"
POD_RANGE_NAME: Final = "pods"
POD_CIDR: Final = "10.16.0.0/14"
SERVICE_RANGE_NAME: Final = "services"
SERVICE_CIDR: Final = "10.20.0.0/20"
# Cloud NAT: GKE-private nodes have no external IP; NAT gives every subnet range a way out.
NAT_IP_ALLOCATION: Final = "AUTO_ONLY"
NAT_SOURCE_RANGES: Final = "ALL_SUBNETWORKS_ALL_IP_RANGES"
NAT_LOG_FILTER: Final = "ERRORS_ONLY"
# Dataplane V2 (eBPF, anetd): NetworkPolicy is enforced without the Calico add-on.
DATAPATH_PROVIDER: Final = "ADVANCED_DATAPATH"


@dataclass(frozen=True)
class NetworkSpec:
    region: str
    node_cidr: str = NODE_CIDR
    pod_range_name: str = POD_RANGE_NAME
    pod_cidr: str = POD_CIDR
    service_range_name: str = SERVICE_RANGE_NAME
    service_cidr: str = SERVICE_CIDR
