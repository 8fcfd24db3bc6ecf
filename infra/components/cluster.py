"""The GKE cluster: VPC-native, Workload Identity, shielded nodes, a least-privilege node
service account, an on-demand system pool, one spot GPU pool per enabled tier (and an on-demand
one behind it where the tier asks), and the compute classes that order each tier's pools."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from infra.plan.network import DATAPATH_PROVIDER, NetworkSpec
from infra.plan.node_pools import GPU_DRIVER_VERSION, NodePoolSpec
from infra.plan.observability import MONITORING_COMPONENTS

RELEASE_CHANNEL: Final = "REGULAR"
OAUTH_SCOPES: Final = ["https://www.googleapis.com/auth/cloud-platform"]
# The roles GKE's hardening guide gives a node service account instead of the default
# Compute Engine account (which holds Editor on the project).
NODE_SERVICE_ACCOUNT_ROLES: Final = (
    # The one role GKE documents for a custom node service account (logging, monitoring and
    # metadata writers): "Use least privileged service accounts for nodes",
    # https://cloud.google.com/kubernetes-engine/docs/how-to/hardening-your-cluster (read 2026-11-26).
    "roles/container.defaultNodeServiceAccount",
    # What the pools need besides: pulling images from the project's Artifact Registry (image
    # streaming works only from there); public Docker Hub pulls need no role, only Cloud NAT.
    "roles/artifactregistry.reader",
    # Image streaming with a node account other than Compute Engine's default needs it on the
    # project that holds the image ("Use Image streaming to pull container images", Requirements,
    # https://cloud.google.com/kubernetes-engine/docs/how-to/image-streaming, read 2026-11-26).
    "roles/serviceusage.serviceUsageConsumer",
)
BOOT_DISK_TYPE: Final = "pd-balanced"
# Image streaming (GKE's "gcfs"): a container starts once the files it reads first are there and
# the rest streams in, instead of after a full pull of the ~10 GB Ray image. It needs the COS
# containerd node image and an image in Artifact Registry (the stack's Docker Hub remote
# repository, infra/components/model_store.py): "Use Image streaming to pull container images",
# https://cloud.google.com/kubernetes-engine/docs/how-to/image-streaming (read 2026-11-26).
NODE_IMAGE_TYPE: Final = "COS_CONTAINERD"


def _node_config(
    pool: NodePoolSpec, service_account: pulumi.Input[str]
) -> gcp.container.NodePoolNodeConfigArgs:
    accelerators = (
        [
            gcp.container.NodePoolNodeConfigGuestAcceleratorArgs(
                type=pool.gke_accelerator,
                count=pool.accelerator_count,
                gpu_driver_installation_config=gcp.container.NodePoolNodeConfigGuestAcceleratorGpuDriverInstallationConfigArgs(
                    gpu_driver_version=GPU_DRIVER_VERSION
                ),
            )
        ]
        if pool.gke_accelerator
        else None
    )
    return gcp.container.NodePoolNodeConfigArgs(
        machine_type=pool.machine.machine_type,
        spot=pool.spot,
        guest_accelerators=accelerators,
        taints=[
            gcp.container.NodePoolNodeConfigTaintArgs(key=t.key, value=t.value, effect=t.gke_effect)
            for t in pool.taints
        ]
        or None,
        labels=dict(pool.labels),
        service_account=service_account,
        oauth_scopes=OAUTH_SCOPES,
        disk_size_gb=pool.boot_disk_gib,
        disk_type=BOOT_DISK_TYPE,
        image_type=NODE_IMAGE_TYPE,
        gcfs_config=gcp.container.NodePoolNodeConfigGcfsConfigArgs(enabled=True),
        workload_metadata_config=gcp.container.NodePoolNodeConfigWorkloadMetadataConfigArgs(
            mode="GKE_METADATA"
        ),
        shielded_instance_config=gcp.container.NodePoolNodeConfigShieldedInstanceConfigArgs(
            enable_secure_boot=True, enable_integrity_monitoring=True
        ),
    )


def kubeconfig(name: str, endpoint: str, ca_certificate: str) -> str:
    """A kubeconfig that authenticates with gke-gcloud-auth-plugin (the only supported way)."""
    context = f"gke-{name}"
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": context,
                    "cluster": {
                        "server": f"https://{endpoint}",
                        "certificate-authority-data": ca_certificate,
                    },
                }
            ],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
            "current-context": context,
            "users": [
                {
                    "name": context,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "gke-gcloud-auth-plugin",
                            "installHint": "Install gke-gcloud-auth-plugin: "
                            "gcloud components install gke-gcloud-auth-plugin",
                            "provideClusterInfo": True,
                        }
                    },
                }
            ],
        },
        indent=2,
    )


def _ca_certificate(master_auth: object) -> str:
    """The cluster CA from `master_auth`, whether it arrives as an output type or a plain dict."""
    if master_auth is None:
        return ""
    if isinstance(master_auth, dict):
        return str(master_auth.get("cluster_ca_certificate") or master_auth.get("clusterCaCertificate") or "")
    return str(getattr(master_auth, "cluster_ca_certificate", "") or "")


@dataclass(frozen=True)
class GkeClusterArgs:
    stack: str
    """Stack name, part of the node service account's id (one account per stack and project)."""
    region: str
    """Region of the regional cluster; each pool lists its own zones in it."""
    workload_pool: pulumi.Input[str]
    """Workload Identity pool, `<project>.svc.id.goog`."""
    network: pulumi.Input[str]
    """The VPC (`GkeNetwork.network.id`)."""
    subnetwork: pulumi.Input[str]
    """The nodes' subnetwork, which carries the pod and service ranges."""
    ranges: NetworkSpec
    """Names of the subnetwork's pod and service ranges."""
    egress: pulumi.Resource
    """The Cloud NAT private nodes reach the internet through (image pulls, weight downloads)."""
    system_pool: NodePoolSpec
    """The on-demand CPU pool for the Ray head and the operator."""
    gpu_pools: Sequence[NodePoolSpec]
    """One tainted GPU pool per enabled tier."""
    fallback_pools: Sequence[NodePoolSpec] = ()
    """The on-demand pools behind spot ones (`onDemandFallback`)."""
    compute_classes: Sequence[Mapping[str, Any]] = ()
    """One ComputeClass document per tier (`ServingPlan.compute_classes`), naming pools by plan name."""


def with_pool_names(document: Mapping[str, Any], names: Mapping[str, pulumi.Input[str]]) -> dict[str, Any]:
    """A ComputeClass spec whose `nodepools` entries are the pools' names in GKE (the provider
    names each pool, so the plan's name is only the key to it)."""
    spec = dict(document["spec"])
    spec["priorities"] = [
        {**priority, "nodepools": [names[pool] for pool in priority["nodepools"]]}
        for priority in spec["priorities"]
    ]
    return spec


class GkeCluster(pulumi.ComponentResource):
    """The cluster, its node pools and a Kubernetes provider that waits for the pools."""

    def __init__(self, name: str, args: GkeClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-serving:infra:GkeCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        stack, region = args.stack, args.region

        self.node_service_account = gcp.serviceaccount.Account(
            f"{name}-nodes",
            account_id=f"llm-serving-{stack}-nodes"[:30].rstrip("-"),
            display_name=f"llm-serving {stack} GKE nodes",
            opts=child,
        )
        self.node_roles = [
            gcp.projects.IAMMember(
                f"{name}-nodes-{role.removeprefix('roles/').replace('.', '-')}",
                project=self.node_service_account.project,
                role=role,
                member=self.node_service_account.member,
                opts=child,
            )
            for role in NODE_SERVICE_ACCOUNT_ROLES
        ]

        self.cluster = gcp.container.Cluster(
            name,
            location=region,
            # Pools are managed separately; GKE still needs one node to create the cluster.
            remove_default_node_pool=True,
            initial_node_count=1,
            node_config=gcp.container.ClusterNodeConfigArgs(
                service_account=self.node_service_account.email, oauth_scopes=OAUTH_SCOPES
            ),
            network=args.network,
            subnetwork=args.subnetwork,
            networking_mode="VPC_NATIVE",
            ip_allocation_policy=gcp.container.ClusterIpAllocationPolicyArgs(
                cluster_secondary_range_name=args.ranges.pod_range_name,
                services_secondary_range_name=args.ranges.service_range_name,
            ),
            # Nodes without external IPs (org policy constraints/compute.vmExternalIpAccess); the
            # control plane keeps its public endpoint, so `pulumi` and `kubectl` reach it as
            # before (authenticated by IAM through gke-gcloud-auth-plugin). No /28 for the
            # control plane: clusters since GKE 1.29 use Private Service Connect and take its
            # address from the node subnetwork.
            private_cluster_config=gcp.container.ClusterPrivateClusterConfigArgs(
                enable_private_nodes=True, enable_private_endpoint=False
            ),
            datapath_provider=DATAPATH_PROVIDER,
            workload_identity_config=gcp.container.ClusterWorkloadIdentityConfigArgs(
                workload_pool=args.workload_pool
            ),
            release_channel=gcp.container.ClusterReleaseChannelArgs(channel=RELEASE_CHANNEL),
            enable_shielded_nodes=True,
            # Managed Service for Prometheus (managed collection: the PodMonitoring in
            # infra/components/observability.py) and GKE's managed DCGM GPU metrics.
            monitoring_config=gcp.container.ClusterMonitoringConfigArgs(
                enable_components=list(MONITORING_COMPONENTS),
                managed_prometheus=gcp.container.ClusterMonitoringConfigManagedPrometheusArgs(enabled=True),
            ),
            # `pulumi destroy` must work on every stack without a manual step; guard prod by
            # hand with `pulumi state protect` (README) rather than a per-stack switch.
            deletion_protection=False,
            # `node_config` only shapes the default pool GKE creates and this removes at once.
            # The provider reads it back from the cluster and treats a difference as a reason to
            # replace the whole cluster (the SDK's own docstring warns against the pairing):
            # set it once, never diff it.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["nodeConfig"]),
        )

        pools = (args.system_pool, *args.gpu_pools, *args.fallback_pools)
        self.node_pools: list[gcp.container.NodePool] = []
        for pool in pools:
            self.node_pools.append(
                gcp.container.NodePool(
                    f"{name}-{pool.name}",
                    cluster=self.cluster.id,
                    location=region,
                    node_locations=list(pool.zones),
                    node_config=_node_config(pool, self.node_service_account.email),
                    # A constant initial count: GKE replaces a pool whose initial count changes,
                    # so min-node edits go to the autoscaling bounds only.
                    initial_node_count=pool.initial_nodes,
                    autoscaling=gcp.container.NodePoolAutoscalingArgs(
                        total_min_node_count=pool.min_nodes,
                        total_max_node_count=pool.max_nodes,
                        location_policy="ANY",
                    ),
                    management=gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
                    # Nodes come up with their roles granted and a way out to pull images; on
                    # destroy the pools go before the grants and the NAT they use.
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[*self.node_roles, args.egress]),
                )
            )

        plain_kubeconfig: pulumi.Output[str] = pulumi.Output.all(
            self.cluster.name, self.cluster.endpoint, self.cluster.master_auth
        ).apply(lambda args: kubeconfig(args[0], args[1], _ca_certificate(args[2])))
        self.kubeconfig: pulumi.Output[str] = pulumi.Output.secret(plain_kubeconfig)
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            # A stable identity, so a refreshed kubeconfig (new token, rotated CA) does not
            # replace the provider and everything created through it.
            cluster_identifier=self.cluster.id,
            opts=pulumi.ResourceOptions(parent=self, depends_on=self.node_pools),
        )
        # Through the provider, so after every pool on create and, on destroy, deleted before them
        # (and after the RayService, whose workers select them).
        names = {pool.name: resource.name for pool, resource in zip(pools, self.node_pools, strict=True)}
        self.compute_classes = [
            k8s.apiextensions.CustomResource(
                f"{name}-{document['metadata']['name']}-class",
                api_version=document["apiVersion"],
                kind=document["kind"],
                metadata=k8s.meta.v1.ObjectMetaArgs(name=document["metadata"]["name"]),
                spec=with_pool_names(document, names),
                opts=pulumi.ResourceOptions(parent=self, provider=self.provider),
            )
            for document in args.compute_classes
        ]
        self.register_outputs({"cluster_name": self.cluster.name, "kubeconfig": self.kubeconfig})
