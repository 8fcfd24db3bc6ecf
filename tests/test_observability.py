"""Dashboards and alerts as code (infra/plan/observability.py, infra/components/observability.py):
the PodMonitoring against Managed Prometheus' own CRD, the dashboard's structure, every query
through a real PromQL parser and against the declared metrics, the alert policies the program
registers for dev and prod, the optional alert email, and the committed layout picture.

That the declared Ray and vLLM metrics and labels really exist is `tests/test_metrics_local.py`
(slow: a real local run, scraped).
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
import yaml
from helpers.crd_schema import crd_errors, crd_json_schema
from helpers.promql import query_uses
from helpers.shared_files import kuberay_dir
from helpers.stack_files import STACKS

from infra import resource_types
from infra.plan import ServingPlan
from infra.plan import observability as obs
from infra.plan.cold_start import model_cold_start
from infra.plan.ray_service import NAMESPACE
from infra.report import dashboard_picture
from infra.report.mock_engine import ProgramRun, RegisteredResource, run_program, stack_config
from infra.report.tables import make_console, print_plan
from infra.settings import ALERT_EMAIL_KEY
from infra.versions import KUBERAY_NAMESPACE

MOCK_CLUSTER = "gke-cluster"  # the name the mock engine gives the cluster
SCOPE = obs.Scope(MOCK_CLUSTER)
SERIES_TO_METRIC = {name: metric for metric in obs.METRICS for name in metric.series_names}
PROTECTED = set(obs.MANAGED_PROMETHEUS_LABELS) | {
    "top_level_controller",
    "top_level_controller_type",
    "__address__",
}


def _metric_of(name: str) -> obs.Metric:
    if name in SERIES_TO_METRIC:
        return SERIES_TO_METRIC[name]
    preemptions = obs.preemption_metric(MOCK_CLUSTER)
    assert name == preemptions.name, f"{name} is not declared in infra.plan.observability.METRICS"
    return preemptions


def _all_queries() -> list[tuple[str, str]]:
    found = [(f"panel {p.title} / {s.name}", s.query) for p in obs.panels(SCOPE) for s in p.series]
    return found + [(f"alert {a.name}", a.condition) for a in obs.alerts(SCOPE)]


# --- the scrape ----------------------------------------------------------------------------


def _pod_monitoring_resources(run: ProgramRun) -> dict[str, RegisteredResource]:
    """The program's PodMonitorings by name."""
    return {r.inputs["metadata"]["name"]: r for r in run.of_type(resource_types.POD_MONITORING)}


def _pod_monitorings(run: ProgramRun) -> dict[str, dict[str, Any]]:
    """The program's PodMonitorings by name, as documents."""
    return {
        name: {key: resource.inputs[key] for key in ("apiVersion", "kind", "metadata", "spec")}
        for name, resource in _pod_monitoring_resources(run).items()
    }


def _pod_monitoring(run: ProgramRun) -> dict[str, Any]:
    return _pod_monitorings(run)[obs.POD_MONITORING_NAME]


@pytest.mark.parametrize("stack", STACKS)
def test_pod_monitorings_validate_against_the_managed_prometheus_crd(
    program_runs: dict[str, ProgramRun], stack: str
) -> None:
    documents = _pod_monitorings(program_runs[stack])
    assert {name: d["metadata"]["namespace"] for name, d in documents.items()} == {
        obs.POD_MONITORING_NAME: NAMESPACE,
        obs.OPERATOR_POD_MONITORING_NAME: KUBERAY_NAMESPACE,
    }
    # The CRD's CEL rules (not evaluated by the JSON Schema) that touch what the spec sets.
    _, cel = crd_json_schema("PodMonitoring")
    assert ".spec.targetLabels.fromPod[].to" in cel and ".spec.endpoints[]" in cel
    for document in documents.values():
        assert crd_errors("PodMonitoring", document) == []
        _check_cel_rules(document["spec"])


def _check_cel_rules(spec: dict[str, Any]) -> None:
    for mapping in spec.get("targetLabels", {}).get("fromPod", []):
        assert mapping["to"] not in PROTECTED
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] not in (0, "0") and "timeout" not in endpoint
        assert {"authorization", "basicAuth", "oauth2", "tls"}.isdisjoint(endpoint)
        for rule in endpoint["metricRelabeling"]:
            assert rule.get("targetLabel") not in PROTECTED
            assert rule["action"] != "labeldrop" or "regex" in rule


def test_the_crd_check_has_teeth() -> None:
    spec = obs.pod_monitoring_spec()
    spec["endpoints"][0]["prot"] = "metrics"
    spec["selector"]["matchLabel"] = {}
    document = {
        "apiVersion": obs.POD_MONITORING_API_VERSION,
        "kind": "PodMonitoring",
        "metadata": {"name": "ray", "namespace": NAMESPACE},
        "spec": spec,
    }
    errors = "\n".join(crd_errors("PodMonitoring", document))
    assert "'prot' was unexpected" in errors and "'matchLabel' was unexpected" in errors


def test_pod_monitoring_selects_kuberays_ray_pods_on_their_metrics_port() -> None:
    """KubeRay v1.7.0 labels every Ray pod `ray.io/is-ray-node: yes` and `ray.io/node-type`
    (common/pod.go labelPod) and names port 8080 `metrics` (utils/constant.go)."""
    spec = obs.pod_monitoring_spec()
    assert spec["selector"]["matchLabels"] == {"ray.io/is-ray-node": "yes"}
    (expression,) = spec["selector"]["matchExpressions"]
    assert expression == {"key": "ray.io/node-type", "operator": "In", "values": ["head", "worker"]}
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == "metrics"
    # Exactly the series the queries use are kept (cost: GMP bills per sample).
    (keep,) = endpoint["metricRelabeling"]
    kept = re.compile(f"^(?:{keep['regex']})$")
    used = {name for _, query in _all_queries() for name in query_uses(query).metrics}
    ray_used = {name for name in used if _metric_of(name).source in obs.RAY_SOURCES}
    assert ray_used and all(kept.match(name) for name in ray_used)
    assert not kept.match("ray_node_cpu_utilization")


@pytest.mark.parametrize("stack", STACKS)
def test_the_operator_pod_monitoring_selects_the_released_operator_pod(
    program_runs: dict[str, ProgramRun], stack: str
) -> None:
    """The chart's deployment.yaml (kuberay-helm v1.7.0) labels the pod `app.kubernetes.io/name:`
    its `kuberay-operator.name` (the values' `nameOverride`) and `app.kubernetes.io/instance:` the
    release's name, serves /metrics on the container port `http`, and emits the metrics while
    `metrics.enabled` (values.yaml, in ../shared as the release's operator-values.yaml)."""
    values = yaml.safe_load((kuberay_dir() / "operator-values.yaml").read_text())
    release = program_runs[stack].one(resource_types.HELM_RELEASE).inputs
    assert values["metrics"]["enabled"] is True
    assert {"nameOverride", "metrics"}.isdisjoint(release.get("values", {}))
    spec = obs.operator_pod_monitoring_spec()
    assert spec["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": values["nameOverride"],
        "app.kubernetes.io/instance": release["name"],
    }
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == "http"
    (keep,) = endpoint["metricRelabeling"]
    kept = re.compile(f"^(?:{keep['regex']})$")
    assert kept.match("kuberay_service_condition_upgrade_in_progress")
    assert not kept.match("kuberay_cluster_info") and not kept.match("ray_serve_num_http_requests_total")


@pytest.mark.parametrize("stack", STACKS)
def test_the_operator_is_scraped_once_its_release_exists(
    program_runs: dict[str, ProgramRun], stack: str
) -> None:
    run = program_runs[stack]
    monitoring = _pod_monitoring_resources(run)[obs.OPERATOR_POD_MONITORING_NAME]
    assert run.one(resource_types.HELM_RELEASE).urn in monitoring.dependencies


@pytest.mark.parametrize("stack", STACKS)
def test_an_upgrade_is_called_stalled_only_after_twice_the_longest_modelled_cold_start(
    plans: dict[str, ServingPlan], stack: str
) -> None:
    plan = plans[stack]
    longest = max(model_cold_start(plan, model).design_seconds for model in plan.served)
    assert 2 * longest <= obs.UPGRADE_STALLED_MINUTES * 60, (stack, longest)
    (alert,) = [a for a in obs.alerts(SCOPE) if a.name == "UpgradeStalled"]
    assert alert.duration_s == obs.UPGRADE_STALLED_MINUTES * 60
    assert 'name="llm"' in alert.expression and 'condition="true"' in alert.expression
    assert f'namespace="{KUBERAY_NAMESPACE}"' in alert.expression


@pytest.mark.parametrize("stack", STACKS)
def test_pod_monitoring_is_in_the_namespace_and_goes_before_it(
    program_runs: dict[str, ProgramRun], stack: str
) -> None:
    run = program_runs[stack]
    monitoring = _pod_monitoring_resources(run)[obs.POD_MONITORING_NAME]
    namespace = run.one(resource_types.NAMESPACE)
    assert namespace.urn in monitoring.dependencies
    assert monitoring.provider.startswith(run.one(resource_types.KUBERNETES_PROVIDER).urn)


@pytest.mark.parametrize("stack", STACKS)
def test_cluster_runs_managed_prometheus_and_dcgm(program_runs: dict[str, ProgramRun], stack: str) -> None:
    config = program_runs[stack].one(resource_types.CLUSTER).inputs["monitoringConfig"]
    assert config == {
        "enableComponents": ["SYSTEM_COMPONENTS", "DCGM"],
        "managedPrometheus": {"enabled": True},
    }


# --- every query -----------------------------------------------------------------------------


@pytest.mark.parametrize(("where", "query"), _all_queries(), ids=[w for w, _ in _all_queries()])
def test_every_query_parses_and_uses_only_declared_metrics_and_labels(where: str, query: str) -> None:
    uses = query_uses(query)  # raises on a syntax error
    assert uses.metrics, where
    declared: set[str] = {"le"}
    for name in uses.metrics:
        metric = _metric_of(name)
        declared |= set(metric.labels)
        if metric.source in obs.RAY_SOURCES or metric.source is obs.Source.KUBERAY:
            scope = {"cluster", "namespace"}
        elif metric.source is obs.Source.PREEMPTION_LOG:
            scope = {"monitored_resource"}  # a VM's metric: no `cluster` label (its name is per cluster)
        else:
            scope = {"cluster"}
        assert scope <= uses.matchers[name], f"{where}: {name} is not scoped to the stack's cluster"
        assert uses.matchers[name] - scope <= set(metric.labels), f"{where}: {name} {uses.matchers[name]}"
    assert uses.grouping <= declared, f"{where}: grouped by undeclared labels {uses.grouping - declared}"


def test_the_query_check_has_teeth() -> None:
    with pytest.raises(Exception):  # noqa: B017 - the parser raises its own (Rust-side) error type
        query_uses("sum by (model_name (ray_vllm_num_requests_waiting)")
    uses = query_uses('sum by (tier) (rate(not_declared{cluster="x"}[5m]))')
    assert uses.metrics == {"not_declared"} and uses.grouping == {"tier"}
    with pytest.raises(AssertionError):
        _metric_of("not_declared")


def test_the_5xx_ratio_leaves_out_serves_own_health_routes() -> None:
    (alert,) = [a for a in obs.alerts(SCOPE) if a.name == "Http5xxRate"]
    numerator, denominator = alert.expression.split(" / ")
    for side in (numerator, denominator):
        assert f'route!~"{obs.SERVE_OWN_ROUTES}"' in side
    assert re.fullmatch(obs.SERVE_OWN_ROUTES, "/-/healthz") and not re.fullmatch(
        obs.SERVE_OWN_ROUTES, "/v1/chat/completions"
    )


def test_the_preemption_panel_selects_the_vm_metric_not_a_cluster_label() -> None:
    (panel,) = [p for p in obs.panels(SCOPE) if p.title == "Spot preemptions"]
    query = panel.series[0].query
    assert 'monitored_resource="gce_instance"' in query and "cluster=" not in query


def test_every_declared_metric_is_used() -> None:
    used = {_metric_of(name).name for _, query in _all_queries() for name in query_uses(query).metrics}
    assert {m.name for m in obs.METRICS} <= used


# --- the dashboard -----------------------------------------------------------------------------


def test_dashboard_structure() -> None:
    board = obs.dashboard("dev", SCOPE)
    mosaic = board["mosaicLayout"]
    assert mosaic["columns"] == 48
    cells: set[tuple[int, int]] = set()
    for tile in mosaic["tiles"]:
        assert tile["xPos"] >= 0 and tile["yPos"] >= 0 and tile["width"] > 0 and tile["height"] > 0
        assert tile["xPos"] + tile["width"] <= 48, tile["widget"]["title"]
        covered = {
            (x, y)
            for x in range(tile["xPos"], tile["xPos"] + tile["width"])
            for y in range(tile["yPos"], tile["yPos"] + tile["height"])
        }
        assert not covered & cells, f"{tile['widget']['title']} overlaps another tile"
        cells |= covered
        widget = tile["widget"]
        assert widget["title"]
        assert ("xyChart" in widget) != ("sectionHeader" in widget)
        for data_set in widget.get("xyChart", {}).get("dataSets", []):
            assert set(data_set["timeSeriesQuery"]) == {"prometheusQuery", "unitOverride"}
            query_uses(data_set["timeSeriesQuery"]["prometheusQuery"])
    titles = [tile["widget"]["title"] for tile in mosaic["tiles"]]
    assert len(titles) == len(set(titles))
    for wanted in (
        "Time to first token",
        "Time per output token",
        "Requests running and waiting",
        "Tokens per second",
        "KV-cache usage",
        "Prefix-cache hit rate",
        "Replicas: target vs running",
        "HTTP errors by code",
        "GPU utilisation",
        "GPU memory used",
        "GPU nodes",
        "Spot preemptions",
        "Cold start: replica creation to ready",
    ):
        assert wanted in titles
    latency = next(p for p in obs.panels(SCOPE) if p.title == "Time to first token")
    assert [s.name for s in latency.series] == ["p50", "p90", "p99"]


@pytest.mark.parametrize("stack", STACKS)
def test_program_registers_the_dashboard(program_runs: dict[str, ProgramRun], stack: str) -> None:
    run = program_runs[stack]
    board = json.loads(run.one(resource_types.DASHBOARD).inputs["dashboardJson"])
    assert board == obs.dashboard(stack, SCOPE)
    assert run.outputs["dashboard_url"].startswith("https://console.cloud.google.com/monitoring/dashboards/")
    metric = run.one(resource_types.LOG_METRIC).inputs
    assert metric["name"] == obs.preemption_log_metric_name(MOCK_CLUSTER)
    assert obs.PREEMPTION_METHOD in metric["filter"]
    assert metric["labelExtractors"] == {"tier": obs.preemption_tier_extractor()}


def test_the_committed_layout_picture_is_the_current_definition() -> None:
    committed = dashboard_picture.PICTURE.read_text(encoding="utf-8")
    assert obs.layout_digest() in committed
    assert committed == dashboard_picture.render(), "run: python -m infra.report.dashboard_picture"


# --- alerts ------------------------------------------------------------------------------------

EXPECTED_ALERTS = {
    # name: (threshold in the condition, duration, severity)
    "TtftP90High": ("> 2", "600s", "WARNING"),
    "RequestsWaitingTooLong": ("> 5", "600s", "WARNING"),
    "KvCacheSaturated": ("> 0.95", "900s", "WARNING"),
    "Http5xxRate": ("> 0.05", "300s", "ERROR"),
    "ModelApplicationFailed": ("< 3", "300s", "ERROR"),
    "NoReplicaWhileRequestsArrive": ("> 0", "900s", "CRITICAL"),
    "UpgradeStalled": ("> 0", "3600s", "WARNING"),
}


@pytest.mark.parametrize("stack", STACKS)
def test_alert_policies_are_registered_with_their_defaults(
    program_runs: dict[str, ProgramRun], stack: str
) -> None:
    run = program_runs[stack]
    policies = run.of_type(resource_types.ALERT_POLICY)
    by_rule = {}
    for policy in policies:
        (condition,) = policy.inputs["conditions"]
        by_rule[condition["conditionPrometheusQueryLanguage"]["alertRule"]] = policy
    assert set(by_rule) == set(EXPECTED_ALERTS)
    for alert in obs.alerts(SCOPE):
        threshold, duration, severity = EXPECTED_ALERTS[alert.name]
        policy = by_rule[alert.name].inputs
        (condition,) = policy["conditions"]
        promql = condition["conditionPrometheusQueryLanguage"]
        assert promql["query"] == alert.condition and promql["query"].endswith(f") {threshold}")
        assert promql["duration"] == duration and promql["evaluationInterval"] == "60s"
        # Fresh stacks have no samples yet; validation would refuse the policy (review of #14).
        assert promql["disableMetricValidation"] is True
        assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", promql["alertRule"])
        assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", promql["ruleGroup"])
        assert policy["severity"] == severity and policy["combiner"] == "OR"
        assert policy["documentation"]["content"] and policy["displayName"].startswith(
            f"llm-serving {stack}: "
        )
        assert "notificationChannels" not in policy, "no channel unless llm-serving:alertEmail is set"
    assert resource_types.NOTIFICATION_CHANNEL not in {r.type_ for r in run.resources}


def test_an_alert_email_adds_one_channel_every_policy_notifies() -> None:
    config = {**stack_config("prod"), ALERT_EMAIL_KEY: "oncall@example.com"}
    run = run_program("prod", config=config)
    channel = run.one(resource_types.NOTIFICATION_CHANNEL)
    assert channel.inputs["type"] == "email"
    assert channel.inputs["labels"] == {"email_address": "oncall@example.com"}
    for policy in run.of_type(resource_types.ALERT_POLICY):
        assert policy.inputs["notificationChannels"] == [channel.resource_id]


@pytest.mark.parametrize("stack", STACKS)
def test_the_plan_report_lists_the_dashboard_and_the_alerts(plans: dict[str, Any], stack: str) -> None:
    buffer = io.StringIO()
    print_plan(make_console(buffer), plans[stack])
    printed = buffer.getvalue()
    assert obs.dashboard_display_name(stack) in printed
    for panel in obs.panels(SCOPE):
        assert panel.title in printed
    for alert in obs.alerts(SCOPE):
        assert alert.name in printed
    assert "llm-serving:alertEmail unset" in printed
