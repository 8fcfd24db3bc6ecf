"""The offline plan report (infra/report, `python -m infra.plan STACK --out DIR`): the printed
tables, the written manifests, `--diff`, and the errors it exits with."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from helpers.crd_schema import validate_ray_service
from helpers.generated_catalog import generated_models
from helpers.stack_files import STACKS, copy_inputs, raw_config

from infra.plan import ServingPlan
from infra.plan.endpoint import kserve_aliases
from infra.plan.model_store import mirror_code_config_map_name
from infra.plan.ray_service import app_code_config_map_name
from infra.report import __main__ as cli
from infra.report.manifests import (
    GCP_PROJECT_PLACEHOLDER,
    HF_TOKEN_REDACTED,
    SECRET_REDACTED,
    SecretLeakError,
    build_manifests,
    redact_secrets,
    write_manifests,
)
from infra.report.mock_engine import TEST_GCP_PROJECT, TEST_HF_TOKEN, ProgramRun
from infra.report.tables import usd
from infra.settings import AUTOSCALING_KEY, HF_TOKEN_KEY, TIERS_KEY, stack_file
from infra.versions import KUBERAY_CHART, KUBERAY_CHART_REPO, KUBERAY_NAMESPACE, KUBERAY_VERSION
from serve.paths import CATALOG_FILE_NAME, REPO_ROOT
from serve.serve_config import document_llm_configs

LOCATED = re.compile(r"^\S+:\d+: \S+: .+$")
# Values only the mock engine makes up; none may reach a written file.
MOCK_VALUES = ("gke-id", "203.0.113.10", "Q0EtREFUQQ==", TEST_GCP_PROJECT)


@dataclass
class Report:
    stack: str
    code: int
    stdout: str
    stderr: str
    out: Path


def run_report(*args: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(list(args))
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Report]:
    found = {}
    for stack in STACKS:
        out = tmp_path_factory.mktemp(f"plan-{stack}")
        code, stdout, stderr = run_report(stack, "--out", str(out), "--root", str(REPO_ROOT))
        found[stack] = Report(stack, code, stdout, stderr, out)
    return found


def documents(report: Report) -> dict[str, Any]:
    """Every written file (relative path -> parsed YAML)."""
    return {
        path.relative_to(report.out).as_posix(): yaml.safe_load(path.read_text())
        for path in sorted(report.out.rglob("*"))
        if path.is_file()
    }


def of_kind(report: Report, kind: str) -> tuple[str, dict[str, Any]]:
    found = [(name, doc) for name, doc in documents(report).items() if doc.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {[name for name, _ in found]}"
    return found[0]


def row(stdout: str, first_cell: str) -> str:
    rows = [
        line for line in stdout.splitlines() if re.search(rf"[│|]\s*{re.escape(first_cell)}\s*[│|]", line)
    ]
    assert len(rows) == 1, f"no single table row for {first_cell!r}"
    return rows[0]


def table(stdout: str, title: str) -> str:
    """The lines of the table whose title starts with `title` (through its bottom border)."""
    lines = stdout.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(title))
    end = next(index for index in range(start, len(lines)) if lines[index].startswith("└"))
    return "\n".join(lines[start : end + 1])


# --- the printed report -------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_report_prints_every_model_pool_and_cost(
    reports: dict[str, Report], plans: dict[str, ServingPlan], stack: str
) -> None:
    report, plan = reports[stack], plans[stack]
    assert report.code == 0, report.stderr
    assert report.stderr == ""
    for placement in plan.placements:
        line = row(report.stdout, placement.model_id)
        memory = placement.memory
        for cell in (
            placement.tier,
            f"{placement.min_replicas}..{placement.max_replicas}",
            f"{memory.weights_gib:.2f}",
            f"{memory.kv_cache_gib:.2f}",
            f"{memory.overhead_gib:.2f}",
            f"{memory.headroom_gib:.2f}",
        ):
            assert cell in line, (placement.model_id, cell, line)
        gpus = (
            f"{placement.gpu_fraction:g} (shared)" if placement.gpu_fraction else placement.gpus_per_replica
        )
        assert re.search(rf"[│|]\s*{re.escape(str(gpus))}\s*[│|]", line)
    for skipped in plan.skipped:
        line = row(report.stdout, skipped.model_id)
        assert skipped.reason in line
    for pool in plan.node_pools:
        line = row(table(report.stdout, "Node pools"), pool.name)
        assert pool.machine.machine_type in line
        assert f"{pool.min_nodes}..{pool.max_nodes}" in line
        assert usd(pool.usd_per_node_hour) in line
        assert ("yes" if pool.spot else "no") in line
        if pool.gke_accelerator:
            assert f"{pool.gke_accelerator} x {pool.accelerator_count}" in line


@pytest.mark.parametrize("stack", STACKS)
def test_report_prints_how_every_pool_fits_its_nodes(
    reports: dict[str, Report], plans: dict[str, ServingPlan], stack: str
) -> None:
    fits = table(reports[stack].stdout, "Node fit")
    for fit in plans[stack].node_fits:
        line = row(fits, fit.pool.name)
        assert fit.pool.machine.machine_type in line
        assert f"{fit.nodes_needed}/{fit.nodes_needed_during_upgrade} of {fit.pool.max_nodes}" in line
        assert f"{fit.node.cpu_millis / 1000:.2f} / {fit.node.memory_mib / 1024:.1f}" in line
    assert "ray-head (+ autoscaler sidecar)" in fits and "second ray-head" in fits


@pytest.mark.parametrize("stack", STACKS)
def test_cost_figures_equal_plan_cost(
    reports: dict[str, Report], plans: dict[str, ServingPlan], stack: str
) -> None:
    report, cost = reports[stack], plans[stack].cost
    summary = re.search(
        r"Hourly cost: idle \$([\d.,]+), at max \$([\d.,]+) \(prices read on (\S+), (\S+)\)", report.stdout
    )
    assert summary, report.stdout
    assert float(summary[1].replace(",", "")) == cost.idle_usd_per_hour
    assert float(summary[2].replace(",", "")) == cost.max_usd_per_hour
    assert (summary[3], summary[4]) == (cost.prices_read_on, cost.prices_region)
    total = row(report.stdout, "total")
    assert usd(cost.idle_usd_per_hour) in total and usd(cost.max_usd_per_hour) in total
    for line in cost.lines:
        cells = row(report.stdout, line.item)
        assert usd(line.idle_usd_per_hour) in cells and usd(line.max_usd_per_hour) in cells


@pytest.mark.parametrize("stack", STACKS)
def test_missing_token_is_reported_with_the_command(reports: dict[str, Report], stack: str) -> None:
    assert (
        f"hfToken is not set in Pulumi.{stack}.yaml: `pulumi up` will refuse until you run "
        f"`pulumi config set --secret llm-serving:hfToken <token> -s {stack}`"
    ) in reports[stack].stdout


def test_encrypted_token_is_reported_as_set(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    copy_inputs(root)
    stack_path = stack_file("dev", root)
    stack_path.write_text(
        stack_path.read_text() + f"  {HF_TOKEN_KEY}:\n    secure: AAABAKJ0ZXN0LWNpcGhlcnRleHQtbm90LXJlYWw=\n"
    )
    code, stdout, stderr = run_report("dev", "--out", str(tmp_path / "out"), "--root", str(root))
    assert code == 0, stderr
    assert "hfToken is set in Pulumi.dev.yaml" in stdout
    assert "is not set" not in stdout.split("gcp:project")[0]
    secret = yaml.safe_load((tmp_path / "out" / "20-secret-hf-token.yaml").read_text())
    assert secret["stringData"] == {"token": HF_TOKEN_REDACTED}


# --- the written manifests ----------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_ray_service_yaml_is_the_plans_spec_and_valid(
    reports: dict[str, Report], plans: dict[str, ServingPlan], stack: str
) -> None:
    name, ray_service = of_kind(reports[stack], "RayService")
    assert name == "40-rayservice-llm.yaml"
    assert ray_service["apiVersion"] == "ray.io/v1"
    assert ray_service["metadata"]["name"] == "llm" and ray_service["metadata"]["namespace"] == "llm-serving"
    assert set(ray_service) == {"apiVersion", "kind", "metadata", "spec"}
    # The stack file names no project: the report writes the placeholder where the program put
    # the provider's project (the bucket and the image registry in the spec).
    planned = json.loads(
        json.dumps(plans[stack].ray_service_spec).replace(TEST_GCP_PROJECT, GCP_PROJECT_PLACEHOLDER)
    )
    assert ray_service["spec"] == planned
    assert GCP_PROJECT_PLACEHOLDER in ray_service["spec"]["serveConfigV2"]
    assert validate_ray_service(ray_service) == []


@pytest.mark.parametrize("stack", STACKS)
def test_kubernetes_objects_are_written_in_apply_order(
    reports: dict[str, Report], plans: dict[str, ServingPlan], stack: str
) -> None:
    plan, docs = plans[stack], documents(reports[stack])
    kubernetes = {name: doc for name, doc in docs.items() if "/" not in name}
    aliases = [f"20-service-{a.service}.yaml" for a in kserve_aliases(plan.served_model_ids) if a.service]
    assert sorted(kubernetes) == sorted(
        [
            "10-helmrelease-kuberay-operator.yaml",
            "10-namespace-llm-serving.yaml",
            # Cluster-scoped, one per tier: the order GKE scales the tier's pools up in.
            *[f"10-computeclass-{document['metadata']['name']}.yaml" for document in plan.compute_classes],
            # Cluster-scoped too, only with spare nodes; the placeholders after it and the namespace.
            *[f"10-priorityclass-{c['metadata']['name']}.yaml" for c in [plan.spare_priority_class] if c],
            *[f"20-deployment-{d['metadata']['name']}.yaml" for d in plan.spare_deployments],
            f"20-configmap-{app_code_config_map_name()}.yaml",
            f"20-configmap-{mirror_code_config_map_name()}.yaml",
            "20-serviceaccount-model-mirror.yaml",
            "20-serviceaccount-ray.yaml",
            # The mirror Jobs complete before the RayService is created.
            *[f"30-job-{job['metadata']['name']}.yaml" for job in plan.mirror_jobs],
            f"20-configmap-{plan.env_config_map_name}.yaml",
            "20-networkpolicy-deny-ingress.yaml",
            "20-networkpolicy-ray-pods.yaml",
            *[f"20-poddisruptionbudget-{b['metadata']['name']}.yaml" for b in plan.disruption_budgets],
            "20-podmonitoring-kuberay-operator.yaml",
            "20-podmonitoring-ray.yaml",
            "20-secret-hf-token.yaml",
            "20-secret-openai-api-keys.yaml",
            *aliases,
            # Before the RayService: KubeRay finds it and adopts it.
            f"20-service-{plan.serve_service['metadata']['name']}.yaml",
            "40-rayservice-llm.yaml",
        ]
    )
    namespace = kubernetes["10-namespace-llm-serving.yaml"]
    assert (namespace["apiVersion"], namespace["kind"], namespace["metadata"]["name"]) == (
        "v1",
        "Namespace",
        "llm-serving",
    )
    config_map = kubernetes[f"20-configmap-{plan.env_config_map_name}.yaml"]
    assert config_map["data"] == plan.env_config_map_data and config_map["immutable"] is True
    secret = kubernetes["20-secret-hf-token.yaml"]
    assert secret["kind"] == "Secret" and secret["stringData"] == {"token": HF_TOKEN_REDACTED}
    assert "data" not in secret

    release = kubernetes["10-helmrelease-kuberay-operator.yaml"]
    assert release["kind"] == "HelmRelease" and "helm.sh/v3" in release["apiVersion"]
    spec = release["spec"]
    assert (spec["chart"], spec["version"], spec["repo"], spec["namespace"]) == (
        KUBERAY_CHART,
        KUBERAY_VERSION,
        KUBERAY_CHART_REPO,
        KUBERAY_NAMESPACE,
    )
    assert spec["values"] == {"nodeSelector": plan.system_pool.labels}
    text = (reports[stack].out / "10-helmrelease-kuberay-operator.yaml").read_text()
    assert text.startswith("# Not a Kubernetes object: the inputs of the Pulumi resource")


@pytest.mark.parametrize("stack", STACKS)
def test_gcp_inputs_are_written_with_readable_placeholders(
    reports: dict[str, Report], plans: dict[str, ServingPlan], stack: str
) -> None:
    plan, report = plans[stack], reports[stack]
    docs = {name: doc for name, doc in documents(report).items() if name.startswith("gcp/")}
    cluster = docs["gcp/30-cluster-gke.yaml"]
    assert cluster["type"] == "gcp:container/cluster:Cluster"
    assert cluster["properties"]["deletionProtection"] is False
    assert (
        cluster["properties"]["workloadIdentityConfig"]["workloadPool"]
        == f"{GCP_PROJECT_PLACEHOLDER}.svc.id.goog"
    )
    assert cluster["properties"]["nodeConfig"]["serviceAccount"] == "${gke-nodes.email}"
    account = docs["gcp/10-serviceaccount-gke-nodes.yaml"]
    assert account["properties"]["accountId"] == f"llm-serving-{stack}-nodes"
    members = [doc for name, doc in docs.items() if name.startswith("gcp/20-iammember-")]
    assert members and all(m["properties"]["member"] == "${gke-nodes.member}" for m in members)
    for pool in plan.node_pools:
        properties = docs[f"gcp/40-nodepool-gke-{pool.name}.yaml"]["properties"]
        assert properties["cluster"] == "${gke.id}"
        assert properties["nodeConfig"]["machineType"] == pool.machine.machine_type
        assert properties["nodeLocations"] == list(pool.zones)
        if pool.gke_accelerator:
            (accelerator,) = properties["nodeConfig"]["guestAccelerators"]
            assert (accelerator["type"], accelerator["count"]) == (
                pool.gke_accelerator,
                pool.accelerator_count,
            )
            assert properties["autoscaling"]["totalMaxNodeCount"] == pool.max_nodes
    assert len([n for n in docs if n.startswith("gcp/40-nodepool-")]) == len(plan.node_pools)
    assert docs["gcp/30-cluster-gke.yaml"]["properties"]["subnetwork"] == "${gke-network-nodes.id}"
    for path in report.out.rglob("*.yaml"):
        text = path.read_text()
        for value in MOCK_VALUES:
            assert value not in text, (path, value)


@pytest.mark.parametrize("stack", STACKS)
def test_test_token_is_never_written_or_printed(reports: dict[str, Report], stack: str) -> None:
    report = reports[stack]
    files = [path for path in report.out.rglob("*") if path.is_file()]
    assert len(files) >= 15
    for path in files:
        assert TEST_HF_TOKEN not in path.read_text(), path
    assert TEST_HF_TOKEN not in report.stdout and TEST_HF_TOKEN not in report.stderr


def test_a_secret_in_a_document_stops_the_write(program_runs: dict[str, ProgramRun], tmp_path: Path) -> None:
    manifests = build_manifests(program_runs["dev"])
    manifests[0].document["leak"] = TEST_HF_TOKEN
    with pytest.raises(SecretLeakError):
        write_manifests(manifests, tmp_path / "out", secrets=[TEST_HF_TOKEN])
    assert not (tmp_path / "out").exists()


def test_secret_paths_are_redacted_keeping_their_shape() -> None:
    inputs = {
        "stringData": {"token": "hf_x", "other": "y"},
        "kubeconfig": "apiVersion: v1",
        "plain": {"n": 2},
        "items": [{"secret": "s"}, {"public": "p"}],
    }
    redacted = redact_secrets(
        inputs, [("stringData",), ("kubeconfig",), ("items", 0, "secret")], frozenset({"hf_x"})
    )
    assert redacted == {
        "stringData": {"token": HF_TOKEN_REDACTED, "other": HF_TOKEN_REDACTED},
        "kubeconfig": SECRET_REDACTED,
        "plain": {"n": 2},
        "items": [{"secret": SECRET_REDACTED}, {"public": "p"}],
    }
    assert inputs["stringData"] == {"token": "hf_x", "other": "y"}, "the run's inputs are not modified"


def test_stale_files_are_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "gcp").mkdir(parents=True)
    (out / "30-nodepool-gke-gpu-a100.yaml").write_text("stale: true\n")
    (out / "gcp" / "30-nodepool-gke-gpu-a100.yaml").write_text("stale: true\n")
    (out / "notes.txt").write_text("kept\n")
    code, _, stderr = run_report("dev", "--out", str(out), "--root", str(REPO_ROOT))
    assert code == 0, stderr
    assert not (out / "gcp" / "30-nodepool-gke-gpu-a100.yaml").exists()
    assert not (out / "30-nodepool-gke-gpu-a100.yaml").exists()
    assert (out / "notes.txt").read_text() == "kept\n"


# --- --diff -------------------------------------------------------------------------------


def expected_setting_changes(a: str, b: str) -> dict[str, tuple[Any, Any]]:
    """Tier and autoscaling leaves that differ between two stack files, computed independently."""

    def leaves(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        if isinstance(value, dict):
            for key, item in value.items():
                yield from leaves(item, f"{prefix}.{key}")
        else:
            yield prefix, value

    def flat(stack: str) -> dict[str, Any]:
        config = raw_config(stack)
        return dict(kv for key in (TIERS_KEY, AUTOSCALING_KEY) for kv in leaves(config.get(key, {}), key))

    before, after = flat(a), flat(b)
    return {
        key: (before.get(key), after.get(key))
        for key in before.keys() | after.keys()
        if before.get(key) != after.get(key)
    }


def test_diff_lists_exactly_the_settings_that_differ(plans: dict[str, ServingPlan]) -> None:
    code, stdout, stderr = run_report("dev", "--diff", "prod", "--root", str(REPO_ROOT))
    assert code == 0, stderr
    listed = {}
    for line in stdout.splitlines():
        match = re.match(r"^\s+(llm-serving:\S+): (.+) -> (.+)$", line)
        if match:
            listed[match[1]] = (match[2], match[3])
    expected = expected_setting_changes("dev", "prod")
    assert expected, "the shipped stacks are expected to differ"
    assert set(listed) == set(expected)

    def shown(value: Any) -> str:
        return ("true" if value else "false") if isinstance(value, bool) else str(value)

    for key, (before, after) in expected.items():
        assert listed[key] == (shown(before), shown(after)), key
    assert "llm-serving:tiers.l4.maxNodes: 2 -> 6" in stdout
    assert "Other settings that differ" not in stdout
    assert "Served models" not in stdout and "Node pools" not in stdout  # only the differences

    dev, prod = plans["dev"], plans["prod"]
    only_prod = [m for m in prod.served_model_ids if m not in dev.served_model_ids]
    assert f"Models served only in prod: {', '.join(only_prod)}" in stdout
    assert "Models served only in dev: (none)" in stdout
    delta = round(prod.cost.max_usd_per_hour - dev.cost.max_usd_per_hour, 4)
    assert (
        f"max: {usd(dev.cost.max_usd_per_hour)} -> {usd(prod.cost.max_usd_per_hour)} (+{usd(delta)})"
        in stdout
    )


def test_diff_flags_settings_outside_tiers_and_autoscaling(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    copy_inputs(root)
    prod = stack_file("prod", root)
    prod.write_text(prod.read_text().replace("config:\n", "config:\n  gcp:project: my-prod-project\n", 1))
    code, stdout, stderr = run_report("dev", "--diff", "prod", "--root", str(root))
    assert code == 0, stderr
    other = stdout.split("Other settings that differ")[1]
    assert "gcp:project: (unset) -> my-prod-project" in other


# --- errors -------------------------------------------------------------------------------


def test_broken_stack_file_exits_1_with_located_lines(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    copy_inputs(root)
    stack = stack_file("dev", root)
    stack.write_text(
        stack.read_text().replace("maxNodes: 2", 'maxNodes: "two"').replace("minReplicas:", "minReplica:")
    )
    result = subprocess.run(
        [sys.executable, "-m", "infra.plan", "dev", "--out", str(tmp_path / "out"), "--root", str(root)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(LOCATED.match(line) for line in lines), result.stderr
    assert any("Pulumi.dev.yaml:" in line and "tiers.t4.maxNodes" in line for line in lines)
    assert any("autoscaling.minReplica" in line for line in lines)
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()


def test_broken_catalog_exits_1_with_located_lines(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    copy_inputs(root)
    catalog = root / CATALOG_FILE_NAME
    catalog.write_text(catalog.read_text().replace("tier: l4", "tier: h100", 1))
    code, stdout, stderr = run_report("dev", "--root", str(root))
    assert code == 1 and stdout == ""
    lines = stderr.splitlines()
    assert lines and all(LOCATED.match(line) for line in lines), stderr
    assert any("model_catalog.yaml:" in line and "h100" in line for line in lines)


def test_program_errors_exit_1_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: Any, **kwargs: Any) -> ProgramRun:
        raise pulumi.RunError(
            "Pulumi.dev.yaml:3: config.llm-serving:hfToken: required\nPulumi.dev.yaml:9: x: y"
        )

    monkeypatch.setattr(cli, "run_program", failing)
    code, _, stderr = run_report("dev", "--root", str(REPO_ROOT))
    assert code == 1
    assert stderr.splitlines() == [
        "Pulumi.dev.yaml:3: config.llm-serving:hfToken: required",
        "Pulumi.dev.yaml:9: x: y",
    ]


def test_unknown_stack_is_a_located_problem() -> None:
    code, _, stderr = run_report("staging", "--root", str(REPO_ROOT))
    assert code == 1
    assert all(LOCATED.match(line) for line in stderr.splitlines()) and "Pulumi.staging.yaml" in stderr


# --- a large catalog ----------------------------------------------------------------------


def test_report_for_a_200_model_catalog(plans: dict[str, ServingPlan], tmp_path: Path) -> None:
    root = tmp_path / "repo"
    copy_inputs(root)
    models = generated_models(plans["dev"].settings.enabled_tiers())
    (root / CATALOG_FILE_NAME).write_text(yaml.safe_dump({"models": models}, sort_keys=False))
    code, stdout, stderr = run_report("dev", "--out", str(tmp_path / "out"), "--root", str(root))
    assert code == 0, stderr
    for model in models:
        row(stdout, model["id"])
    ray_service = yaml.safe_load((tmp_path / "out" / "40-rayservice-llm.yaml").read_text())
    served = document_llm_configs(yaml.safe_load(ray_service["spec"]["serveConfigV2"]))
    assert len(served) == len(models)
