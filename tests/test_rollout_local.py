"""Changing a running stack on the real local server: what `pulumi up` with an edited stack file or
catalog does to Serve, submitted the way KubeRay submits a changed serveConfigV2 (the whole deploy
document PUT to the dashboard's Serve REST API, `LocalService.redeploy`).

Two tiny chat models behind the keyed router, served for real by Ray Serve + vLLM (CPU build),
under steady load throughout:

- the stack's autoscaling changes (an override of each model's deployment, not its application's
  args): Serve applies it to the running replicas; every replica (its id and process) is kept, the
  new options are what Serve reports, no request fails;
- a model leaves the catalog: the router's args change, so Serve replaces the router; with the
  surge (serve/serve_config.py ROUTER_MAX_SURGE_PERCENT) the new router runs before the old one
  stops, the remaining model's replica is kept and none of its requests fails.

The figures (requests, failures, the longest answer while Serve applied the change) are printed
and written to build/rollout-local.json; the README records a run. No assertion is on time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Final

import pytest
from helpers.local_run import free_port, record_figures
from helpers.steady_load import Outcome, SteadyLoad
from helpers.tiny_catalog import WARM, tiny_entry

from configcheck.problems import LineMap
from serve.autoscaling import ReplicaAutoscaling
from serve.catalog import parse_catalog
from serve.localize import localize_serve_config
from serve.openai_app import model_deployment_name
from serve.paths import REPO_ROOT
from serve.serve_config import APP_NAME, model_app_name, serve_config
from serve.supervisor import LocalService
from serve.tiny_model import ensure_tiny_model

pytestmark = pytest.mark.slow

ALPHA, BETA = "alpha", "beta"
CLIENTS_PER_MODEL: Final = 2
STEADY_S: Final = 5.0
APPLY_TIMEOUT_S: Final = 300.0
FIGURES_FILE: Final = REPO_ROOT / "build" / "rollout-local.json"
ROUTER: Final = f"{APP_NAME}/OpenAiIngress"
# Every field differs from WARM's except the replica bounds, which the local run caps at one.
RESCALED: Final = ReplicaAutoscaling(
    min_replicas=WARM.min_replicas,
    max_replicas=WARM.max_replicas,
    target_ongoing_requests=WARM.target_ongoing_requests / 2,
    max_ongoing_requests=WARM.max_ongoing_requests // 2,
    upscale_delay_seconds=WARM.upscale_delay_seconds + 5,
    downscale_delay_seconds=WARM.downscale_delay_seconds / 2,
)


def _document(model_ids: list[str], autoscaling: ReplicaAutoscaling) -> dict[str, Any]:
    models = parse_catalog(
        {"models": [tiny_entry(model_id, "generate") for model_id in model_ids]}, "rollout.yaml", LineMap()
    ).models
    return localize_serve_config(serve_config(list(models), autoscaling), ensure_tiny_model())


def _model_key(model_id: str) -> str:
    return f"{model_app_name(model_id)}/{model_deployment_name(model_id)}"


@pytest.fixture(scope="module")
def service() -> Iterator[LocalService]:
    with LocalService(_document([ALPHA, BETA], WARM), port=free_port(), startup_timeout_s=900.0) as running:
        yield running


def _replica_ids(service: LocalService) -> dict[str, set[tuple[str, int | None]]]:
    return {
        key: {(str(replica["replica_id"]), replica.get("pid")) for replica in replicas}
        for key, replicas in service.replicas().items()
    }


def _under_load(
    service: LocalService, models: tuple[str, ...], document: dict[str, Any]
) -> tuple[list[Outcome], float, float]:
    """Redeploy `document` while `models` are under steady load: the outcomes, and when the
    document was submitted and when Serve had applied it."""
    with SteadyLoad(service, models, CLIENTS_PER_MODEL) as load:
        time.sleep(STEADY_S)
        submitted = time.monotonic()
        service.redeploy(document, timeout_s=APPLY_TIMEOUT_S)
        applied = time.monotonic()
        time.sleep(STEADY_S)
    return load.outcomes, submitted, applied


def _figures(outcomes: list[Outcome], submitted: float, applied: float) -> dict[str, Any]:
    during = [o for o in outcomes if o.answered_at > submitted and o.sent_at < applied]
    longest = max((o.answered_at - o.sent_at for o in during), default=0.0)
    return {
        "requests": len(outcomes),
        "failed": sum(o.status != 200 for o in outcomes),
        "applied_in_s": round(applied - submitted, 1),
        "requests_while_applying": len(during),
        "longest_answer_while_applying_s": round(longest, 2),
    }


def test_an_autoscaling_change_keeps_every_replica_and_reaches_them(service: LocalService) -> None:
    before = _replica_ids(service)
    outcomes, submitted, applied = _under_load(service, (ALPHA, BETA), _document([ALPHA, BETA], RESCALED))
    assert _replica_ids(service) == before, "Serve replaced a replica for an autoscaling change"
    configs = service.deployment_configs()
    for model_id in (ALPHA, BETA):
        config = configs[_model_key(model_id)]
        assert config["max_ongoing_requests"] == RESCALED.max_ongoing_requests
        scaling = config["autoscaling_config"]
        assert scaling["target_ongoing_requests"] == RESCALED.target_ongoing_requests
        assert scaling["upscale_delay_s"] == RESCALED.upscale_delay_seconds
        assert scaling["downscale_delay_s"] == RESCALED.downscale_delay_seconds
    figures = _figures(outcomes, submitted, applied)
    record_figures(FIGURES_FILE, {"autoscaling_changed": figures})
    assert figures["failed"] == 0 and figures["requests_while_applying"] > 0


def test_removing_a_model_replaces_the_router_before_stopping_it(service: LocalService) -> None:
    before = _replica_ids(service)
    outcomes, submitted, applied = _under_load(service, (ALPHA,), _document([ALPHA], RESCALED))
    after = _replica_ids(service)
    assert service.application_statuses() == {APP_NAME: "RUNNING", model_app_name(ALPHA): "RUNNING"}
    assert after[ROUTER] and after[ROUTER].isdisjoint(before[ROUTER]), "the router was not replaced"
    assert after[_model_key(ALPHA)] == before[_model_key(ALPHA)], f"{ALPHA}'s replica was replaced"
    figures = _figures(outcomes, submitted, applied)
    record_figures(FIGURES_FILE, {"model_removed": figures})
    assert figures["failed"] == 0 and figures["requests_while_applying"] > 0
