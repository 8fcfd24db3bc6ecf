"""Managed Prometheus scraping the Ray pods and the KubeRay operator, the Cloud Monitoring dashboard
and the alert policies.

Everything here is rendered by `infra.plan.observability` (metrics, queries, panels, alerts,
thresholds); this component only creates the resources. The queries select on the cluster's
name, which GKE knows only once the cluster exists, so they are Outputs of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from infra.components.llm_service import MANAGED_BY
from infra.plan.observability import (
    EVALUATION_INTERVAL,
    OPERATOR_POD_MONITORING_NAME,
    POD_MONITORING_API_VERSION,
    POD_MONITORING_NAME,
    PREEMPTION_LABEL,
    RULE_GROUP,
    Alert,
    Scope,
    alerts,
    dashboard_json,
    operator_pod_monitoring_spec,
    pod_monitoring_spec,
    preemption_log_filter,
    preemption_log_metric_name,
    preemption_tier_extractor,
)
from infra.versions import KUBERAY_NAMESPACE

AUTO_CLOSE: Final = "1800s"


@dataclass(frozen=True)
class ObservabilityArgs:
    stack: str
    """Names the dashboard and the alert policies (display names only)."""
    cluster_name: pulumi.Output[str]
    """The GKE cluster's name: every query selects on it, so two stacks in a project never mix."""
    namespace: pulumi.Input[str]
    """The serving namespace, from the Namespace resource: the PodMonitoring is created after it
    and deleted before it."""
    kubernetes_provider: pulumi.ProviderResource
    operator: pulumi.Resource
    """The KubeRay operator's release: its namespace exists once it does, and its pod is scraped."""
    alert_email: str | None
    """Where alerts notify (`llm-serving:alertEmail`); None: no notification channel."""


def _condition(alert: Alert, cluster_name: pulumi.Output[str]) -> gcp.monitoring.AlertPolicyConditionArgs:
    query = cluster_name.apply(
        lambda cluster: next(a for a in alerts(Scope(cluster)) if a.name == alert.name).condition
    )
    return gcp.monitoring.AlertPolicyConditionArgs(
        display_name=alert.title,
        condition_prometheus_query_language=gcp.monitoring.AlertPolicyConditionConditionPrometheusQueryLanguageArgs(
            query=query,
            duration=alert.duration,
            evaluation_interval=EVALUATION_INTERVAL,
            alert_rule=alert.name,
            rule_group=RULE_GROUP,
            # Cloud Monitoring refuses a PromQL condition over a metric it has never received, and
            # on a fresh stack nothing has been scraped yet (Ray exports the 5xx counter only after
            # a first error): validation would fail the first `pulumi up`.
            disable_metric_validation=True,
        ),
    )


class Observability(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llm-serving:infra:Observability", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.pod_monitoring = k8s.apiextensions.CustomResource(
            f"{name}-pod-monitoring",
            api_version=POD_MONITORING_API_VERSION,
            kind="PodMonitoring",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=POD_MONITORING_NAME, namespace=args.namespace, labels=MANAGED_BY
            ),
            spec=pod_monitoring_spec(),
            opts=pulumi.ResourceOptions(parent=self, provider=args.kubernetes_provider),
        )

        self.operator_pod_monitoring = k8s.apiextensions.CustomResource(
            f"{name}-operator-pod-monitoring",
            api_version=POD_MONITORING_API_VERSION,
            kind="PodMonitoring",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=OPERATOR_POD_MONITORING_NAME, namespace=KUBERAY_NAMESPACE, labels=MANAGED_BY
            ),
            spec=operator_pod_monitoring_spec(),
            opts=pulumi.ResourceOptions(
                parent=self, provider=args.kubernetes_provider, depends_on=[args.operator]
            ),
        )

        self.preemptions = gcp.logging.Metric(
            f"{name}-spot-preemptions",
            name=args.cluster_name.apply(preemption_log_metric_name),
            description="Spot VMs of the stack's GKE GPU pools that Compute Engine preempted",
            filter=args.cluster_name.apply(preemption_log_filter),
            metric_descriptor=gcp.logging.MetricMetricDescriptorArgs(
                metric_kind="DELTA",
                value_type="INT64",
                unit="1",
                labels=[
                    gcp.logging.MetricMetricDescriptorLabelArgs(
                        key=PREEMPTION_LABEL, value_type="STRING", description="GPU tier of the node pool"
                    )
                ],
            ),
            label_extractors={PREEMPTION_LABEL: preemption_tier_extractor()},
            opts=child,
        )

        self.dashboard = gcp.monitoring.Dashboard(
            f"{name}-dashboard",
            dashboard_json=args.cluster_name.apply(lambda cluster: dashboard_json(args.stack, cluster)),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.preemptions]),
        )

        self.notification_channel = (
            gcp.monitoring.NotificationChannel(
                f"{name}-alert-email",
                type="email",
                display_name=f"llm-serving {args.stack} alerts",
                labels={"email_address": args.alert_email},
                opts=child,
            )
            if args.alert_email
            else None
        )
        channels = [self.notification_channel.id] if self.notification_channel is not None else None

        self.alert_policies = [
            gcp.monitoring.AlertPolicy(
                f"{name}-{re.sub(r'(?<!^)(?=[A-Z])', '-', alert.name).lower()}",
                display_name=f"llm-serving {args.stack}: {alert.title}",
                combiner="OR",
                conditions=[_condition(alert, args.cluster_name)],
                severity=alert.severity,
                documentation=gcp.monitoring.AlertPolicyDocumentationArgs(
                    content=alert.documentation, mime_type="text/markdown", subject=alert.title
                ),
                alert_strategy=gcp.monitoring.AlertPolicyAlertStrategyArgs(auto_close=AUTO_CLOSE),
                notification_channels=channels,
                opts=child,
            )
            # The rules' shape (names, thresholds, durations) does not depend on the cluster.
            for alert in alerts(Scope("<cluster>"))
        ]
        self.register_outputs({"dashboard": self.dashboard.id})
