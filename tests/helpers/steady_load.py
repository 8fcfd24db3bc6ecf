"""Steady chat load on the real local server: client threads per model, each sending one short
chat after the other, every outcome recorded (tests/test_faults_local.py, test_rollout_local.py)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Final

import httpx

from serve.supervisor import LocalService

REQUEST_TIMEOUT_S: Final = 300.0


@dataclass(frozen=True)
class Outcome:
    model: str
    sent_at: float
    answered_at: float
    status: int | None  # None: no HTTP answer (connection error or timeout)


def chat(client: httpx.Client, service: LocalService, model: str) -> httpx.Response:
    return client.post(
        f"{service.openai_base_url}/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        headers={"Authorization": f"Bearer {service.api_key}"},
        timeout=REQUEST_TIMEOUT_S,
    )


class SteadyLoad:
    """`clients_per_model` threads per model, each sending one short chat after the other."""

    def __init__(self, service: LocalService, models: tuple[str, ...], clients_per_model: int) -> None:
        self.service = service
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(model,), daemon=True)
            for model in models
            for _ in range(clients_per_model)
        ]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT_S + 10)

    def _loop(self, model: str) -> None:
        with httpx.Client(trust_env=False) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    status: int | None = chat(client, self.service, model).status_code
                except httpx.HTTPError:
                    status = None
                with self._lock:
                    self.outcomes.append(Outcome(model, sent, time.monotonic(), status))

    def of(self, model: str) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.model == model]
