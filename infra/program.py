"""The Pulumi program: the plan for this stack, turned into resources.

Everything decided here is decided in `infra.plan`; this module only wires components
together in dependency order, which is also the reverse of the teardown order:
network -> cluster + pools -> Kubernetes provider -> compute classes, KubeRay operator -> namespace,
Secret, ConfigMap -> RayService; the namespace -> PodMonitoring; the cluster's name -> dashboard, alerts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi_gcp as gcp

from configcheck.problems import ConfigError
from infra.components.cluster import GkeCluster, GkeClusterArgs
from infra.components.kuberay import KubeRayOperator, KubeRayOperatorArgs
from infra.components.llm_service import LlmService, LlmServiceArgs
from infra.components.model_store import ModelStore, ModelStoreArgs
from infra.components.network import GkeNetwork, GkeNetworkArgs
from infra.components.observability import Observability, ObservabilityArgs
from infra.plan import ServingPlan, build_plan_for_stack
from infra.plan.endpoint import SERVE_SERVICE_PORT, cluster_url, internal_url, kserve_aliases
from infra.plan.model_store import MIRROR_KSA, RAY_KSA
from infra.plan.ray_service import NAMESPACE, PORTS, RAY_SERVICE_NAME
from infra.pulumi_config import engine_config, extra_api_keys, hf_token
from serve.paths import REPO_ROOT


def provider_project() -> str | None:
    """The project resources go to: gcp:project, else the Google provider's own (GOOGLE_PROJECT,
    gcloud config). The bucket's and the image's names carry it, and the plan needs them known."""
    configured = pulumi.Config("gcp").get("project")
    if configured:
        return configured
    project_id = gcp.organizations.get_project().project_id
    if not project_id:
        pulumi.log.warn(
            "the Google provider names no project; set gcp:project (`pulumi config set gcp:project <id>`)"
        )
    return project_id or None


def plan_for_running_stack(root: Path = REPO_ROOT) -> ServingPlan:
    """The plan of the stack being deployed; every problem in the catalog or the stack's config
    becomes one line of a RunError (no traceback, nothing created)."""
    try:
        return build_plan_for_stack(
            pulumi.get_stack(), root, engine=engine_config(), project=provider_project()
        )
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from None


def _workload_pool(project: str | None) -> pulumi.Input[str]:
    if project:
        return f"{project}.svc.id.goog"
    # No gcp:project in config: the provider's project (e.g. from GOOGLE_PROJECT).
    return gcp.organizations.get_project_output().project_id.apply(lambda project: f"{project}.svc.id.goog")


def port_forward_command(service: str, port: int, service_port: int | None = None) -> str:
    remote = port if service_port is None else service_port
    return f"kubectl -n {NAMESPACE} port-forward svc/{RAY_SERVICE_NAME}-{service} {port}:{remote}"


def dashboard_url(dashboard_id: str, project: str | None) -> str:
    """The Cloud Console page of a dashboard whose id is `projects/<number>/dashboards/<id>`."""
    url = f"https://console.cloud.google.com/monitoring/dashboards/builder/{dashboard_id.rsplit('/', 1)[-1]}"
    return f"{url}?project={project}" if project else url


def define_stack(root: Path = REPO_ROOT) -> dict[str, Any]:
    """Create every resource of the running stack; returns the stack outputs."""
    plan = plan_for_running_stack(root)
    settings = plan.settings
    network = GkeNetwork("gke-network", GkeNetworkArgs(spec=plan.network))
    cluster = GkeCluster(
        "gke",
        GkeClusterArgs(
            stack=plan.stack,
            region=settings.region,
            workload_pool=_workload_pool(plan.project),
            network=network.network.id,
            subnetwork=network.subnetwork.id,
            ranges=plan.network,
            egress=network.nat,
            system_pool=plan.system_pool,
            gpu_pools=plan.gpu_pools,
            fallback_pools=plan.fallback_pools,
            compute_classes=plan.compute_classes,
        ),
    )
    model_store = ModelStore(
        "model-store",
        ModelStoreArgs(
            stack=plan.stack,
            region=settings.region,
            bucket_name=plan.model_bucket,
            namespace=NAMESPACE,
            workload_pool=_workload_pool(plan.project),
            cluster=cluster.cluster,
        ),
    )
    in_cluster = pulumi.ResourceOptions(provider=cluster.provider)
    operator = KubeRayOperator(
        "kuberay-operator", KubeRayOperatorArgs(node_selector=plan.system_pool.labels), opts=in_cluster
    )
    service = LlmService(
        "llm",
        LlmServiceArgs(
            namespace=NAMESPACE,
            hf_token=hf_token(),
            env_config_map_name=plan.env_config_map_name,
            env=plan.env_config_map_data,
            ray_service_spec=plan.ray_service_spec,
            operator=operator.release,
            extra_api_keys=extra_api_keys(),
            aliases=kserve_aliases(plan.served_model_ids),
            endpoint_address=network.openai_address,
            serve_service=plan.serve_service,
            service_accounts={ksa: model_store.accounts[ksa].email for ksa in (RAY_KSA, MIRROR_KSA)},
            mirror_jobs=plan.mirror_jobs,
            model_store=model_store,
            disruption_budgets=plan.disruption_budgets,
            compute_classes=cluster.compute_classes,
            spare_priority_class=plan.spare_priority_class,
            spare_deployments=plan.spare_deployments,
        ),
        opts=in_cluster,
    )
    observability = Observability(
        "observability",
        ObservabilityArgs(
            stack=plan.stack,
            cluster_name=cluster.cluster.name,
            namespace=service.namespace.metadata.name,
            kubernetes_provider=cluster.provider,
            operator=operator.release,
            alert_email=settings.alert_email,
        ),
    )
    return {
        "cluster_name": cluster.cluster.name,
        "kubeconfig": cluster.kubeconfig,
        "namespace": NAMESPACE,
        "openai_port_forward": port_forward_command("serve-svc", PORTS["serve"], SERVE_SERVICE_PORT),
        "openai_base_url": f"http://127.0.0.1:{PORTS['serve']}/v1",
        # Inside the VPC (the internal load balancer) and inside the cluster (the Service's DNS name).
        "openai_internal_url": network.openai_address.address.apply(internal_url),
        "openai_cluster_url": cluster_url(),
        "openai_api_key": pulumi.Output.secret(service.generated_api_key.result),
        "kserve_aliases": {
            alias.model_id: alias.service or f"none: {alias.reason}"
            for alias in kserve_aliases(plan.served_model_ids)
        },
        "dashboard_port_forward": port_forward_command("head-svc", PORTS["dashboard"]),
        "dashboard_url": pulumi.Output.all(observability.dashboard.id, observability.dashboard.project).apply(
            lambda args: dashboard_url(args[0], args[1])
        ),
        "alert_policies": [policy.display_name for policy in observability.alert_policies],
        "model_bucket": model_store.bucket.name.apply(lambda name: f"gs://{name}"),
        "ray_image": plan.image,
        "served_models": plan.served_model_ids,
        "skipped_models": {skipped.model_id: skipped.reason for skipped in plan.skipped},
        "estimated_cost_usd_per_hour": {
            "idle": plan.cost.idle_usd_per_hour,
            "max": plan.cost.max_usd_per_hour,
            "prices_read_on": plan.cost.prices_read_on,
            "prices_region": plan.cost.prices_region,
        },
    }
