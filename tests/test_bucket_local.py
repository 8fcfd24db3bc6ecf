"""Cold start from the stack's bucket, for real: the project's mirror copies the tiny model into a
local GCS emulator at the exact `gs://` folder the dev plan names, and Ray Serve LLM loads it
from there through its own gs:// path (pyarrow's GcsFileSystem, as on GKE) with the Hub switched
off, then answers an `openai` client chat request. Slow: it starts Ray and vLLM.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.gcs_emulator import EMULATOR_ENV, GcsEmulator, fake_service_account_key, running_emulator
from helpers.local_run import free_port
from openai import OpenAI

from infra.plan import ServingPlan
from serve.catalog import ModelEntry
from serve.localize import localize_serve_config
from serve.model_mirror import LocalSource, mirror_model
from serve.supervisor import LocalService
from serve.tiny_model import ensure_tiny_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chat_model(plans: dict[str, ServingPlan]) -> ModelEntry:
    return next(model for model in plans["dev"].served if model.task.value == "generate")


@pytest.fixture(scope="module")
def emulator(plans: dict[str, ServingPlan]) -> Iterator[GcsEmulator]:
    with running_emulator(plans["dev"].model_bucket) as running:
        yield running


@pytest.fixture(scope="module")
def served_from_bucket(
    plans: dict[str, ServingPlan],
    chat_model: ModelEntry,
    emulator: GcsEmulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalService, Path, dict[str, float]]]:
    plan = plans["dev"]
    timings: dict[str, float] = {}
    report = mirror_model(
        LocalSource(ensure_tiny_model()),
        emulator.filesystem(),
        plan.model_bucket,
        chat_model.source,
        chat_model.revision,
    )
    timings["mirror_s"] = report.seconds
    home = tmp_path_factory.mktemp("hf-home")
    config = localize_serve_config(
        plan.serve_config, ensure_tiny_model(), [chat_model.id], keep_model_source=True
    )
    env = {
        EMULATOR_ENV: emulator.url,
        "GOOGLE_APPLICATION_CREDENTIALS": str(fake_service_account_key(home)),
        # As on the cluster: no token, and nothing may reach the Hub.
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(home),
    }
    saved = {key: os.environ.get(key) for key in (*env, "HF_TOKEN")}
    os.environ.update(env)
    os.environ.pop("HF_TOKEN", None)
    try:
        started = time.monotonic()
        with LocalService(config, port=free_port(), startup_timeout_s=900.0) as running:
            timings["start_to_first_answer_s"] = time.monotonic() - started
            yield running, home, timings
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_the_plans_bucket_source_is_what_gets_served(
    plans: dict[str, ServingPlan],
    chat_model: ModelEntry,
    served_from_bucket: tuple[LocalService, Path, dict[str, float]],
) -> None:
    service, home, timings = served_from_bucket
    llm = next(c for c in plans["dev"].llm_configs if c["model_loading_config"]["model_id"] == chat_model.id)
    assert llm["model_loading_config"]["model_source"].startswith(f"gs://{plans['dev'].model_bucket}/models/")
    # Ray copied the revision's folder into the node's HF cache, named by the bucket's hash file.
    snapshot = (
        home / "hub" / f"models--{chat_model.id.replace('/', '--')}" / "snapshots" / chat_model.revision
    )
    assert (snapshot / "model.safetensors").is_file(), sorted(p.name for p in home.rglob("*"))[:20]
    assert (snapshot / "model.safetensors").read_bytes() == (
        ensure_tiny_model() / "model.safetensors"
    ).read_bytes()

    client = OpenAI(base_url=service.openai_base_url, api_key=service.api_key, max_retries=0, timeout=120.0)
    reply = client.chat.completions.create(
        model=chat_model.id, messages=[{"role": "user", "content": "hello"}], max_tokens=4
    )
    assert reply.choices[0].message.content
    print(f"\nlocal cold start from the bucket: {timings}")
