"""Chat, embeddings, score, rerank and transcription on one endpoint, for real: Ray Serve + vLLM (CPU
build) with the tiny models this project builds (a chat model, which vLLM's pooling runner also
serves as an embedder, a one-label cross-encoder and a Whisper-shaped speech model), behind the
project's keyed app builder.

Requests go through the `openai` client where it has the call (chat, embeddings, transcriptions)
and plain HTTP for vLLM's `/v1/score` and the builder's `/v1/rerank` (Jina/Cohere shape). A request
for a task a model does not serve gets a 400 that names what it serves.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from helpers.local_run import free_port
from helpers.tiny_catalog import WARM, tiny_entry
from openai import OpenAI

from configcheck.problems import LineMap
from serve.catalog import parse_catalog
from serve.localize import localize_serve_config, silent_wav
from serve.serve_config import serve_config
from serve.supervisor import LocalService
from serve.tiny_model import ensure_tiny_model, ensure_tiny_reranker, ensure_tiny_whisper

pytestmark = pytest.mark.slow

CHAT, EMBED, RERANK, SPEECH = "tiny-chat", "tiny-embed", "tiny-rerank", "tiny-whisper"
NON_EMPTY = {"min_tokens": 4}


def _speech_model() -> dict[str, Any]:
    """The tiny Whisper's facts (serve/tiny_model.py), as `catalog add --task transcribe` reads them."""
    from serve.tiny_model import MAX_TARGET_POSITIONS, WHISPER_HEADS, WHISPER_LAYERS, WHISPER_SOURCE_POSITIONS

    model = tiny_entry(SPEECH, "transcribe")
    model["max_model_len"] = MAX_TARGET_POSITIONS
    model["architecture"] = {
        **model["architecture"],
        "num_layers": WHISPER_LAYERS,
        "num_attention_heads": WHISPER_HEADS,
        "num_kv_heads": WHISPER_HEADS,
        "max_position_embeddings": MAX_TARGET_POSITIONS,
        "encoder_positions": WHISPER_SOURCE_POSITIONS,
    }
    return model


@pytest.fixture(scope="module")
def service() -> Iterator[LocalService]:
    models = parse_catalog(
        {
            "models": [
                tiny_entry(CHAT, "generate"),
                tiny_entry(EMBED, "embed"),
                tiny_entry(RERANK, "rerank"),
                _speech_model(),
            ]
        },
        "tasks.yaml",
        LineMap(),
    ).models
    config = localize_serve_config(
        serve_config(list(models), WARM),
        ensure_tiny_model(),
        reranker_dir=ensure_tiny_reranker(),
        transcriber_dir=ensure_tiny_whisper(),
    )
    with LocalService(config, port=free_port(), startup_timeout_s=900.0) as running:
        yield running


@pytest.fixture(scope="module")
def client(service: LocalService) -> OpenAI:
    return OpenAI(base_url=service.openai_base_url, api_key=service.api_key, timeout=120.0, max_retries=0)


def _post(service: LocalService, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{service.base_url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {service.api_key}"},
        timeout=120.0,
        trust_env=False,
    )


def test_one_endpoint_lists_every_task(client: OpenAI) -> None:
    assert sorted(m.id for m in client.models.list()) == sorted([CHAT, EMBED, RERANK, SPEECH])


def test_chat(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=8, extra_body=NON_EMPTY
    )
    assert reply.choices[0].message.content


def test_embeddings_with_the_openai_client(client: OpenAI) -> None:
    result = client.embeddings.create(model=EMBED, input=["the quick brown fox", "hello world"])
    assert [item.index for item in result.data] == [0, 1]
    vectors = [item.embedding for item in result.data]
    assert len(vectors[0]) == len(vectors[1]) == 128  # the tiny model's hidden size
    assert vectors[0] != vectors[1]
    assert result.usage.prompt_tokens > 0


def test_score(service: LocalService) -> None:
    response = _post(
        service, "/v1/score", {"model": RERANK, "text_1": "a fox", "text_2": ["the fox", "a cat"]}
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [item["index"] for item in data] == [0, 1]
    assert all(isinstance(item["score"], float) for item in data)


def test_rerank_in_the_jina_cohere_shape(service: LocalService) -> None:
    documents = ["the fox jumps", "a cat sleeps", "hello world"]
    response = _post(
        service, "/v1/rerank", {"model": RERANK, "query": "a fox", "documents": documents, "top_n": 2}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == RERANK and body["usage"]["total_tokens"] > 0
    results = body["results"]
    assert len(results) == 2
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    for result in results:
        assert result["document"]["text"] == documents[result["index"]]
    # The same pairs through /v1/score give the same numbers.
    scored = _post(service, "/v1/score", {"model": RERANK, "text_1": "a fox", "text_2": documents}).json()
    by_index = {item["index"]: item["score"] for item in scored["data"]}
    for result in results:
        assert result["relevance_score"] == pytest.approx(by_index[result["index"]])


def test_transcription_with_the_openai_client(client: OpenAI) -> None:
    """A WAV upload (multipart, as OpenAI's API takes it) decoded, resampled and transcribed by
    vLLM's speech-to-text route; the tiny model's text is noise, but it is text."""
    result = client.audio.transcriptions.create(
        model=SPEECH,
        file=("hello.wav", silent_wav(2.0)),
        language="en",
        extra_body={"max_completion_tokens": 4},
    )
    assert isinstance(result.text, str)


def test_a_request_for_another_task_gets_a_400_naming_what_the_model_serves(
    client: OpenAI, service: LocalService
) -> None:
    with pytest.raises(openai.BadRequestError) as chat_on_embedder:
        client.chat.completions.create(
            model=EMBED, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    assert "serves embed (/v1/embeddings)" in chat_on_embedder.value.response.text
    with pytest.raises(openai.BadRequestError) as embed_on_chat:
        client.embeddings.create(model=CHAT, input=["x"])
    assert "serves generate" in embed_on_chat.value.response.text
    rerank_on_chat = _post(service, "/v1/rerank", {"model": CHAT, "query": "q", "documents": ["d"]})
    assert rerank_on_chat.status_code == 400 and "serves generate" in rerank_on_chat.text
    with pytest.raises(openai.BadRequestError) as transcribe_on_chat:
        client.audio.transcriptions.create(model=CHAT, file=("a.wav", silent_wav()))
    assert "serves generate" in transcribe_on_chat.value.response.text
    with pytest.raises(openai.BadRequestError) as chat_on_speech:
        client.chat.completions.create(
            model=SPEECH, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    assert "serves transcribe (/v1/audio/transcriptions)" in chat_on_speech.value.response.text


def test_the_new_routes_need_the_key(service: LocalService) -> None:
    for path in ("/v1/rerank", "/v1/score", "/v1/embeddings", "/v1/audio/transcriptions"):
        response = httpx.post(
            f"{service.base_url}{path}", json={"model": RERANK}, timeout=30.0, trust_env=False
        )
        assert response.status_code == 401, path
