"""Pulumi type tokens of the resources the program registers, as the engine (and policies) see them,
and the metadata annotations the program writes and the policy pack reads back.

No imports: the policy pack reads these too and must not load the program's modules. A test
checks that every resource the program registers has its token here.
"""

from typing import Final

NETWORK: Final = "gcp:compute/network:Network"
SUBNETWORK: Final = "gcp:compute/subnetwork:Subnetwork"
ROUTER: Final = "gcp:compute/router:Router"
ROUTER_NAT: Final = "gcp:compute/routerNat:RouterNat"
ADDRESS: Final = "gcp:compute/address:Address"
CLUSTER: Final = "gcp:container/cluster:Cluster"
NODE_POOL: Final = "gcp:container/nodePool:NodePool"
SERVICE_ACCOUNT: Final = "gcp:serviceaccount/account:Account"
PROJECT_IAM_MEMBER: Final = "gcp:projects/iAMMember:IAMMember"
KUBERNETES_PROVIDER: Final = "pulumi:providers:kubernetes"
HELM_RELEASE: Final = "kubernetes:helm.sh/v3:Release"
NAMESPACE: Final = "kubernetes:core/v1:Namespace"
SECRET: Final = "kubernetes:core/v1:Secret"
CONFIG_MAP: Final = "kubernetes:core/v1:ConfigMap"
SERVICE: Final = "kubernetes:core/v1:Service"
NETWORK_POLICY: Final = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
POD_DISRUPTION_BUDGET: Final = "kubernetes:policy/v1:PodDisruptionBudget"
RANDOM_PASSWORD: Final = "random:index/randomPassword:RandomPassword"
RAY_SERVICE: Final = "kubernetes:ray.io/v1:RayService"
RAY_CLUSTER: Final = "kubernetes:ray.io/v1:RayCluster"
COMPUTE_CLASS: Final = "kubernetes:cloud.google.com/v1:ComputeClass"
POD_MONITORING: Final = "kubernetes:monitoring.googleapis.com/v1:PodMonitoring"
DASHBOARD: Final = "gcp:monitoring/dashboard:Dashboard"
ALERT_POLICY: Final = "gcp:monitoring/alertPolicy:AlertPolicy"
NOTIFICATION_CHANNEL: Final = "gcp:monitoring/notificationChannel:NotificationChannel"
LOG_METRIC: Final = "gcp:logging/metric:Metric"
BUCKET: Final = "gcp:storage/bucket:Bucket"
BUCKET_IAM_MEMBER: Final = "gcp:storage/bucketIAMMember:BucketIAMMember"
SERVICE_ACCOUNT_IAM_MEMBER: Final = "gcp:serviceaccount/iAMMember:IAMMember"
ARTIFACT_REPOSITORY: Final = "gcp:artifactregistry/repository:Repository"
KUBERNETES_SERVICE_ACCOUNT: Final = "kubernetes:core/v1:ServiceAccount"
JOB: Final = "kubernetes:batch/v1:Job"
DEPLOYMENT: Final = "kubernetes:apps/v1:Deployment"
PRIORITY_CLASS: Final = "kubernetes:scheduling.k8s.io/v1:PriorityClass"
# Data sources the program calls (invokes), not resources.
GET_PROJECT: Final = "gcp:organizations/getProject:getProject"

PROVIDER_PREFIX: Final = "pulumi:providers:"

# Metadata annotation: pulumi-kubernetes registers the object without its await logic (readiness of
# a Deployment's pods, a Service's endpoints and load balancer address; 10 min by default)
# (pulumi/pulumi-kubernetes#417, "Create pulumi.com/skipAwait annotation", read 2026-11-27).
SKIP_AWAIT_ANNOTATION: Final = "pulumi.com/skipAwait"
# GKE's annotation that makes a LoadBalancer Service an internal passthrough Network Load Balancer;
# without it (or one of the two other ways below) GKE gives the Service an external address (GKE
# "LoadBalancer Service parameters"; "Internal passthrough Network Load Balancer" concepts).
GKE_LOAD_BALANCER_TYPE_ANNOTATION: Final = "networking.gke.io/load-balancer-type"
GKE_INTERNAL_LOAD_BALANCER: Final = "Internal"
# The same request in the older annotation, and as GKE's load balancer class.
GKE_LEGACY_LOAD_BALANCER_TYPE_ANNOTATION: Final = "cloud.google.com/load-balancer-type"
GKE_INTERNAL_LOAD_BALANCER_CLASS: Final = "networking.gke.io/l4-regional-internal"
