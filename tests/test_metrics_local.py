"""Every query is real: the metrics and labels the dashboard and the alerts use exist in Ray's
own Prometheus export, seen on a real local run (Ray Serve + vLLM CPU build, the tiny model).

One model of the dev stack is served by `serve.supervisor.LocalService` (what `make serve-local`
runs), a few chat requests go through it (plain, streamed, a repeated long prompt so the prefix
cache hits, an unknown model for an HTTP error), then the head's metrics endpoint, the one
`make serve-local` prints and KubeRay names `metrics` on every Ray pod, is scraped until every
declared series has appeared (Ray's metrics agent exports on an interval).

Not checked here, because they exist only on the cluster (`infra.plan.observability.CLUSTER_ONLY`,
each with its source in `METRICS[].emitted_by`): GKE's managed DCGM GPU metrics (`DCGM_FI_DEV_*`,
GPU nodes only) and the spot-preemption log-based metric (Compute Engine audit logs). Nor are
the labels Managed Prometheus adds at ingestion (`cluster`, `namespace`, ...:
`MANAGED_PROMETHEUS_LABELS`), which the queries select on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from helpers.local_run import free_port
from openai import APIStatusError, OpenAI
from prometheus_client.parser import text_string_to_metric_families

from infra.plan import build_plan_for_stack
from infra.plan import observability as obs
from serve.localize import localize_serve_config
from serve.paths import REPO_ROOT
from serve.supervisor import LocalService
from serve.tiny_model import ensure_tiny_model

pytestmark = pytest.mark.slow

ONE_MODEL = "qwen2-5-1-5b-instruct"
NON_EMPTY = {"min_tokens": 4}  # the tiny model may otherwise stop at once (tests/test_e2e_local.py)
# About 370 tokens of the tiny tokenizer: more than one KV block, so a repeat hits the prefix cache.
LONG_PROMPT = " ".join(["the quick brown fox jumps over the lazy dog"] * 12)
EXPORT_TIMEOUT_S = 120.0

Labels = dict[str, set[str]]  # series name -> label names seen


@pytest.fixture(scope="module")
def service() -> Iterator[LocalService]:
    plan = build_plan_for_stack("dev", REPO_ROOT)
    config = localize_serve_config(plan.serve_config, ensure_tiny_model(), [ONE_MODEL])
    with LocalService(config, port=free_port(), startup_timeout_s=900.0) as running:
        yield running


def scrape(url: str) -> Labels:
    text = httpx.get(url, timeout=10.0, trust_env=False).text
    seen: Labels = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            seen.setdefault(sample.name, set()).update(sample.labels)
    return seen


def _expected() -> dict[str, obs.Metric]:
    return {name: m for m in obs.METRICS if not m.cluster_only for name in m.series_names}


@pytest.fixture(scope="module")
def exported(service: LocalService) -> tuple[Labels, str]:
    client = OpenAI(base_url=service.openai_base_url, api_key=service.api_key, timeout=120.0, max_retries=0)
    hello = [{"role": "user", "content": "Say hello."}]
    client.chat.completions.create(model=ONE_MODEL, messages=hello, max_tokens=8, extra_body=NON_EMPTY)  # type: ignore[arg-type]
    for _chunk in client.chat.completions.create(
        model=ONE_MODEL,
        messages=hello,  # type: ignore[arg-type]
        max_tokens=8,
        stream=True,
        extra_body=NON_EMPTY,
    ):
        pass
    for _ in range(3):
        client.chat.completions.create(
            model=ONE_MODEL,
            messages=[{"role": "user", "content": LONG_PROMPT}],
            max_tokens=4,
        )
    with pytest.raises(APIStatusError):
        client.chat.completions.create(model="no-such-model", messages=hello, max_tokens=2)  # type: ignore[arg-type]

    expected = _expected()
    deadline = time.monotonic() + EXPORT_TIMEOUT_S
    seen: Labels = {}
    while time.monotonic() < deadline:
        seen = scrape(service.metrics_url)
        if set(expected) <= set(seen):
            break
        time.sleep(2.0)
    return seen, service.metrics_url


def test_every_metric_the_dashboard_and_alerts_use_is_exported(exported: tuple[Labels, str]) -> None:
    seen, url = exported
    missing = sorted(set(_expected()) - set(seen))
    assert missing == [], f"not in {url}: {missing}"


def test_every_label_the_queries_use_is_on_the_exported_series(exported: tuple[Labels, str]) -> None:
    seen, _ = exported
    for name, metric in _expected().items():
        wanted = set(metric.labels) | ({"le"} if name.endswith("_bucket") else set())
        assert wanted <= seen.get(name, set()), f"{name}: lacks {wanted - seen.get(name, set())}"
        # Managed Prometheus adds these at ingestion; Ray must not have them already (a clash
        # would be renamed `exported_<label>` and the queries' selectors would miss).
        assert not set(obs.MANAGED_PROMETHEUS_LABELS) & seen.get(name, set()), name


def test_the_label_values_are_what_the_queries_match(
    service: LocalService, exported: tuple[Labels, str]
) -> None:
    text = httpx.get(service.metrics_url, timeout=10.0, trust_env=False).text
    values: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label in ("model_name", "deployment", "error_code"):
                if label in sample.labels:
                    values.setdefault(label, set()).add(sample.labels[label])
    assert ONE_MODEL in values["model_name"]  # vLLM's served_model_name is the catalog id
    assert f"{obs.MODEL_DEPLOYMENT_PREFIX}{ONE_MODEL}" in values["deployment"]
    assert "404" in values["error_code"]  # the unknown model


def test_the_cluster_only_metrics_are_declared_with_their_source() -> None:
    cluster_only = [m for m in obs.METRICS if m.cluster_only] + [obs.preemption_metric("c")]
    assert {m.source for m in cluster_only} == set(obs.CLUSTER_ONLY)
    assert all(m.emitted_by for m in cluster_only)
