"""`make serve-local` end to end: the dev stack's serve application on this CPU, driven with `openai`.

The service is started exactly as `make serve-local` starts it (`python -m infra.local --stack dev`)
in a child process that carries a unique marker in its environment. Every process of the local Ray
cluster and vLLM inherits that environment, so after Ctrl-C the test can prove none is left.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest
from conftest import REPO_ROOT
from openai import OpenAI

from infra.plan import build_plan_for_stack

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 900.0
# The tiny model's weights are random: it may sample its end-of-text token first and answer
# nothing. vLLM's `min_tokens` holds stop tokens back for a few tokens, so content is never empty.
NON_EMPTY = {"min_tokens": 4}
SHUTDOWN_TIMEOUT_S = 180.0
MARKER_ENV = "LLM_SERVING_E2E_MARKER"
READY_LINE = re.compile(r"^Serving (?P<models>.+) at (?P<url>http://\S+/v1) \(OpenAI API\)$")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def marked_processes(marker: str) -> set[int]:
    """Live processes whose environment carries `marker` (those the service started)."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.add(int(entry))
    return found


@dataclass
class ServeLocal:
    process: subprocess.Popen[str]
    marker: str
    base_url: str
    model_ids: list[str]
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    pids_while_running: set[int] = field(default_factory=set)

    def client(self) -> OpenAI:
        return OpenAI(base_url=self.base_url, api_key="local", timeout=120.0, max_retries=0)

    def logs(self) -> str:
        return "--- stdout ---\n" + "".join(self.stdout) + "--- stderr ---\n" + "".join(self.stderr[-80:])


def _pump(stream: object, sink: list[str], lines: queue.Queue[str] | None) -> None:
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        sink.append(line)
        if lines is not None:
            lines.put(line)


@pytest.fixture(scope="module")
def dev_models() -> list[str]:
    return build_plan_for_stack("dev", REPO_ROOT).served_model_ids


@pytest.fixture(scope="module")
def serve_local(dev_models: list[str]) -> Iterator[ServeLocal]:
    marker = uuid.uuid4().hex
    port = _free_port()
    env = {**os.environ, MARKER_ENV: marker}
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.local", "--stack", "dev", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout_lines: queue.Queue[str] = queue.Queue()
    service = ServeLocal(process=process, marker=marker, base_url="", model_ids=[])
    threading.Thread(target=_pump, args=(process.stdout, service.stdout, stdout_lines), daemon=True).start()
    threading.Thread(target=_pump, args=(process.stderr, service.stderr, None), daemon=True).start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not service.base_url:
            if process.poll() is not None:
                pytest.fail(f"serve-local exited with {process.returncode} before serving\n{service.logs()}")
            if time.monotonic() > deadline:
                pytest.fail(f"serve-local did not serve within {STARTUP_TIMEOUT_S:.0f} s\n{service.logs()}")
            try:
                line = stdout_lines.get(timeout=2.0).strip()
            except queue.Empty:
                continue
            ready = READY_LINE.match(line)
            if ready:
                service.base_url = ready["url"]
                service.model_ids = ready["models"].split(", ")
        service.pids_while_running = marked_processes(marker)
        yield service
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
        for pid in marked_processes(marker):
            os.kill(pid, signal.SIGKILL)


def test_it_prints_the_url_and_an_example_curl(serve_local: ServeLocal, dev_models: list[str]) -> None:
    printed = "".join(serve_local.stdout)
    assert serve_local.model_ids == dev_models
    assert f"curl {serve_local.base_url.removesuffix('/v1')}/v1/chat/completions" in printed
    assert f'"model": "{dev_models[0]}"' in printed


def test_models_listed_are_the_served_catalog_ids(serve_local: ServeLocal, dev_models: list[str]) -> None:
    listed = sorted(model.id for model in serve_local.client().models.list())
    assert listed == sorted(dev_models)


def test_chat_completion_for_every_served_model(serve_local: ServeLocal, dev_models: list[str]) -> None:
    client = serve_local.client()
    for model in dev_models:
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=16,
            extra_body=NON_EMPTY,
        )
        assert reply.model == model
        assert reply.choices[0].message.content, f"{model}: empty content"
        assert reply.usage is not None
        assert reply.usage.prompt_tokens > 0
        assert 4 <= reply.usage.completion_tokens <= 16
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_chat_completion_for_every_served_model(
    serve_local: ServeLocal, dev_models: list[str]
) -> None:
    client = serve_local.client()
    for model in dev_models:
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Count to five."}],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=NON_EMPTY,
        )
        pieces, usage, chunks = [], None, 0
        for chunk in stream:
            chunks += 1
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                usage = chunk.usage
        assert chunks > 1, f"{model}: the answer was not streamed"
        assert "".join(pieces), f"{model}: empty streamed content"
        assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0


def test_unknown_model_gets_a_4xx_that_names_it(serve_local: ServeLocal) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        serve_local.client().chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    assert 400 <= raised.value.status_code < 500
    # Ray Serve LLM answers {"detail": "...Could not find base model with ID \"no-such-model\"."}
    assert "no-such-model" in raised.value.response.text


def test_ctrl_c_stops_serve_and_ray_and_leaves_no_process(serve_local: ServeLocal) -> None:
    # Runs last in this module: it ends the service the other tests used.
    assert len(serve_local.pids_while_running) >= 3, "the marker did not reach Ray's processes"
    serve_local.process.send_signal(signal.SIGINT)
    assert serve_local.process.wait(timeout=SHUTDOWN_TIMEOUT_S) == 0, serve_local.logs()
    deadline = time.monotonic() + 10
    while marked_processes(serve_local.marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert marked_processes(serve_local.marker) == set(), serve_local.logs()
    assert "stopped" in "".join(serve_local.stderr)
