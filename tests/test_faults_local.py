"""Faults on the real local server: one model failing must not take the endpoint or the other
models with it (the one-application-per-model layout, serve/openai_app.py).

Three tiny chat models behind the keyed router, served for real by Ray Serve + vLLM (CPU build):
`alpha` and `beta` load, `broken`'s weights are a truncated safetensors file, as a bad revision
would leave them.

- A model whose weights do not load: its application fails (DEPLOY_FAILED), the router and the
  other models stay RUNNING, `/v1/models` still lists it, and its requests get a 503 that names
  it, at once, while the others answer.
- Under steady load on `alpha` and `beta`, `alpha`'s vLLM engine process is SIGKILLed (what a spot
  reclaim does to an engine): Serve's health check finds the replica dead and starts another.
  Measured: `alpha`'s failed requests and time to recovery, and `beta`'s failures (goal: zero).

The figures are printed and written to build/fault-local.json; the README records a run. No
assertion is on time except that recovery happens at all within RECOVERY_TIMEOUT_S.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import httpx
import psutil
import pytest
from helpers.local_run import free_port, record_figures
from helpers.steady_load import Outcome, SteadyLoad, chat
from helpers.tiny_catalog import WARM, tiny_entry

from configcheck.problems import LineMap
from serve.catalog import parse_catalog
from serve.localize import localize_serve_config
from serve.openai_app import LLM_CONFIG_ARG, UNAVAILABLE_STATUS
from serve.paths import REPO_ROOT
from serve.serve_config import APP_NAME, model_app_name, model_applications, serve_config
from serve.supervisor import LocalService
from serve.tiny_model import ensure_tiny_model

pytestmark = pytest.mark.slow

ALPHA, BETA, BROKEN = "alpha", "beta", "broken"
CLIENTS_PER_MODEL: Final = 2
STEADY_S: Final = 15.0
RECOVERY_TIMEOUT_S: Final = 420.0
# Successes in a row, each sent after the kill, that count as recovered.
RECOVERED_AFTER: Final = 3
FIGURES_FILE: Final = REPO_ROOT / "build" / "fault-local.json"


def _broken_copy(model_dir: Path, into: Path) -> Path:
    """The tiny model with its weights cut in half: config and tokenizer read, the weights do not."""
    broken = into / "broken-model"
    shutil.copytree(model_dir, broken)
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return broken


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    models = parse_catalog(
        {
            "models": [
                tiny_entry(ALPHA, "generate"),
                tiny_entry(BETA, "generate"),
                tiny_entry(BROKEN, "generate"),
            ]
        },
        "faults.yaml",
        LineMap(),
    ).models
    model_dir = ensure_tiny_model()
    config = localize_serve_config(serve_config(list(models), WARM), model_dir)
    broken_dir = _broken_copy(model_dir, tmp_path_factory.mktemp("weights"))
    for app in model_applications(config):
        loading = app["args"][LLM_CONFIG_ARG]["model_loading_config"]
        if loading["model_id"] == BROKEN:
            loading["model_source"] = str(broken_dir)
    with LocalService(
        config, port=free_port(), startup_timeout_s=900.0, tolerate_failed_models=True
    ) as running:
        yield running


# =========================================================================== weights that do not load
def test_a_model_whose_weights_do_not_load_fails_alone(service: LocalService) -> None:
    assert list(service.failed_models) == [BROKEN]
    statuses = service.application_statuses()
    assert statuses[model_app_name(BROKEN)] == "DEPLOY_FAILED"
    assert {statuses[APP_NAME], statuses[model_app_name(ALPHA)], statuses[model_app_name(BETA)]} == {
        "RUNNING"
    }
    # What KubeRay asks the head's proxy before it labels the head ray.io/serve=true, and so puts
    # it behind the stack's serve Service (infra/plan/endpoint.py): healthy, failed model or not.
    assert httpx.get(f"{service.base_url}/-/healthz", timeout=10).status_code == 200


def test_the_failed_model_gets_a_503_naming_it_and_the_others_answer(service: LocalService) -> None:
    with httpx.Client(trust_env=False) as client:
        listed = client.get(
            f"{service.openai_base_url}/models", headers={"Authorization": f"Bearer {service.api_key}"}
        )
        assert sorted(m["id"] for m in listed.json()["data"]) == [ALPHA, BETA, BROKEN]
        started = time.monotonic()
        refused = chat(client, service, BROKEN)
        refused_in = time.monotonic() - started
        assert refused.status_code == UNAVAILABLE_STATUS, refused.text
        assert f"model '{BROKEN}' is unavailable" in refused.text
        for model in (ALPHA, BETA):
            answer = chat(client, service, model)
            assert answer.status_code == 200, answer.text
    record_figures(
        FIGURES_FILE,
        {"broken_weights": {"refused_with": refused.status_code, "refused_in_s": round(refused_in, 2)}},
    )


# =========================================================================== an engine killed under load
def _engine_processes(app: str) -> list[psutil.Process]:
    """The vLLM processes under the Serve replica of `app` (its engine core and what that started)."""
    replicas = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(f"ServeReplica:{app}:" in part for part in (p.info["cmdline"] or []))
    ]
    assert len(replicas) == 1, f"expected one replica process of {app}, found {len(replicas)}"
    children = replicas[0].children(recursive=True)
    assert children, f"the replica of {app} has no engine process"
    return children


def _recovered_at(outcomes: list[Outcome], killed_at: float) -> float | None:
    """When the RECOVERED_AFTER-th success in a row, each sent after the kill, was answered."""
    run = 0
    for outcome in sorted((o for o in outcomes if o.sent_at > killed_at), key=lambda o: o.answered_at):
        run = run + 1 if outcome.status == 200 else 0
        if run == RECOVERED_AFTER:
            return outcome.answered_at
    return None


def test_killing_one_models_engine_under_load_costs_the_other_model_nothing(service: LocalService) -> None:
    statuses_seen: dict[str, set[str]] = {}
    with SteadyLoad(service, (ALPHA, BETA), CLIENTS_PER_MODEL) as load:
        time.sleep(STEADY_S)
        before = {model: len(load.of(model)) for model in (ALPHA, BETA)}
        engines = _engine_processes(model_app_name(ALPHA))
        killed_at = time.monotonic()
        for process in engines:
            process.send_signal(signal.SIGKILL)
        recovered = None
        while recovered is None and time.monotonic() - killed_at < RECOVERY_TIMEOUT_S:
            for name, status in service.application_statuses().items():
                statuses_seen.setdefault(name, set()).add(status)
            time.sleep(1.0)
            recovered = _recovered_at(load.of(ALPHA), killed_at)
    alpha, beta = load.of(ALPHA), load.of(BETA)
    assert before[ALPHA] > 0 and before[BETA] > 0, "the load reached both models before the kill"
    assert recovered is not None, f"{ALPHA} did not recover within {RECOVERY_TIMEOUT_S:.0f} s"
    alpha_failed = [o for o in alpha if o.status != 200]
    beta_failed = [o for o in beta if o.status != 200]
    beta_during_outage = [
        o for o in beta if o.status == 200 and killed_at < o.sent_at and o.answered_at < recovered
    ]
    figures = {
        "engine_killed": {
            "clients_per_model": CLIENTS_PER_MODEL,
            "killed_processes": len(engines),
            "alpha_requests": len(alpha),
            "alpha_failed": len(alpha_failed),
            "alpha_failed_statuses": sorted({str(o.status) for o in alpha_failed}),
            "alpha_recovery_s": round(recovered - killed_at, 1),
            # Failures happen only at the kill: the requests the dead engine held, and those routed
            # to its replica before Serve's health check found it dead; later ones wait for the
            # replacement, as requests wait out a cold start.
            "alpha_failures_until_s": round(
                max((o.answered_at for o in alpha_failed), default=killed_at) - killed_at, 1
            ),
            "alpha_longest_answer_after_kill_s": round(
                max(
                    (o.answered_at - o.sent_at for o in alpha if o.sent_at > killed_at and o.status == 200),
                    default=0.0,
                ),
                1,
            ),
            "beta_requests": len(beta),
            "beta_failed": len(beta_failed),
            "beta_answered_during_alpha_outage": len(beta_during_outage),
            "statuses_seen": {name: sorted(seen) for name, seen in sorted(statuses_seen.items())},
        }
    }
    record_figures(FIGURES_FILE, figures)
    assert beta_failed == [], f"{BETA} failed {len(beta_failed)} requests while {ALPHA} recovered"
    assert beta_during_outage, f"{BETA} answered nothing while {ALPHA} was down"
    assert statuses_seen[APP_NAME] == {"RUNNING"} and statuses_seen[model_app_name(BETA)] == {"RUNNING"}
