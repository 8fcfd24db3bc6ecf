"""`make serve-local` end to end: the dev stack's serve application on this CPU, driven with `openai`,
then stopped in every way a person, a script or CI stops it, each time leaving nothing behind.

Every run is started exactly as `make serve-local` starts it (`python -m infra.local --stack dev`),
in a child process that carries a unique marker in its environment. Ray, `serve run`, vLLM and
the run's guard inherit that environment; processes that overwrite theirs (Ray's agents set long
process titles) are found through the sessions marked processes were seen in. While a run is up
the test notes those sessions and every /dev/shm file their processes map; after the stop none of
them may have a process left, and none of those files may exist.

Stop tests serve one model and stop once its vLLM engine has started (its shared-memory queues
exist), which is the state that used to leave a whole Ray cluster and ~1.9 GB of /dev/shm behind.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import httpx
import openai
import pytest
from helpers.local_run import free_port
from openai import OpenAI

from infra.plan import build_plan_for_stack
from serve.localize import warmup_request
from serve.paths import REPO_ROOT
from serve.supervisor import RUNS_DIR, RunRecord, wait_until

pytestmark = pytest.mark.slow

T = TypeVar("T")
STARTUP_TIMEOUT_S = 900.0
SHUTDOWN_TIMEOUT_S = 180.0
# The tiny model's weights are random: it may sample its end-of-text token first and answer
# nothing. vLLM's `min_tokens` holds stop tokens back for a few tokens, so content is never empty.
NON_EMPTY = {"min_tokens": 4}
MARKER_ENV = "LLM_SERVING_E2E_MARKER"
ONE_MODEL = "qwen2-5-1-5b-instruct"
READY_LINE = re.compile(r"^Serving (?P<models>.+) at (?P<url>http://\S+/v1) \(OpenAI API\)$")
SHM = "/dev/shm/"

# How the command is started: directly (as make does), under a parent process the test can kill,
# or as a background job of a bash script (which starts it with SIGINT ignored).
Launch = Literal["direct", "parent", "background"]
_PARENT = (
    "import subprocess, sys; p = subprocess.Popen(sys.argv[1:]); print(p.pid, flush=True); sys.exit(p.wait())"
)
_BACKGROUND = '"$@" & echo $!; wait $!'


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def _running(pid: int) -> bool:
    stat = _read(f"/proc/{pid}/stat")
    # The state follows the parenthesised command name; Z is a zombie (proc(5)).
    return bool(stat) and stat.rsplit(b")", 1)[-1].split()[0] != b"Z"


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _mapped_shm(pid: int) -> set[str]:
    """/dev/shm files `pid` maps or holds open that still exist (read from /proc, as the kernel says)."""
    paths = {line.split(maxsplit=5)[-1] for line in _read(f"/proc/{pid}/maps").decode().splitlines()}
    fd_dir = f"/proc/{pid}/fd"
    with contextlib.suppress(OSError):
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                paths.add(os.readlink(f"{fd_dir}/{fd}"))
    return {p for p in paths if p.startswith(SHM) and os.path.exists(p)}


@dataclass
class CliRun:
    """One `python -m infra.local` run and everything the test saw of it."""

    process: subprocess.Popen[str]  # the command, or the parent / script that started it
    marker: str
    launch: Launch
    started_at: float = field(default_factory=time.time)
    cli_pid: int = 0
    base_url: str = ""
    api_key: str = ""
    model_ids: list[str] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    sessions: set[int] = field(default_factory=set)
    shm_files: set[str] = field(default_factory=set)
    record: RunRecord | None = None
    _lines: queue.Queue[str] = field(default_factory=queue.Queue)

    # ------------------------------------------------------------------ watching
    def logs(self) -> str:
        return "--- stdout ---\n" + "".join(self.stdout) + "--- stderr ---\n" + "".join(self.stderr[-80:])

    def marked(self) -> set[int]:
        needle = f"{MARKER_ENV}={self.marker}".encode()
        return {p for p in _pids() if p != os.getpid() and needle in _read(f"/proc/{p}/environ").split(b"\0")}

    def processes(self) -> set[int]:
        """Live processes of the run: marked ones, and any in a session a marked one was seen in."""
        in_sessions = {pid for pid in _pids() if _sid(pid) in self.sessions}
        return {pid for pid in self.marked() | in_sessions if _running(pid)}

    def observe(self) -> None:
        own_session = os.getsid(0)
        self.sessions |= {sid for pid in self.marked() if (sid := _sid(pid)) not in (None, own_session)}
        for pid in self.processes():
            self.shm_files |= _mapped_shm(pid)
        if self.record is None and self.cli_pid:
            records = (RunRecord.load(path) for path in RUNS_DIR.glob("*.json"))
            self.record = next((r for r in records if r and r.owner.pid == self.cli_pid), None)

    def wait_for(
        self, what: str, condition: Callable[[], T | None], *, observe: bool = True, interval: float = 1.0
    ) -> T:
        def check() -> T | None:
            if observe:
                self.observe()
            if self.process.poll() is not None:
                pytest.fail(f"serve-local exited with {self.process.returncode} before {what}\n{self.logs()}")
            return condition()

        found = wait_until(check, timeout=STARTUP_TIMEOUT_S, interval=interval)
        if found is None:
            pytest.fail(f"serve-local did not reach {what} within {STARTUP_TIMEOUT_S:.0f} s\n{self.logs()}")
        return found

    def wait_for_line(self, pattern: str, stream: Literal["stdout", "stderr"] = "stderr") -> re.Match[str]:
        lines = self.stdout if stream == "stdout" else self.stderr
        regex = re.compile(pattern)

        def match() -> re.Match[str] | None:
            return next(filter(None, map(regex.search, lines)), None)

        return self.wait_for(repr(pattern), match, observe=False, interval=0.05)

    def wait_until_ready(self) -> None:
        ready = self.wait_for_line(READY_LINE.pattern, "stdout")
        self.base_url, self.model_ids = ready["url"], ready["models"].split(", ")
        self.api_key = self.wait_for_line(r"API key \(made up for this run\): (\S+)", "stdout")[1]

    def wait_until_engine_started(self) -> None:
        """Until Ray and `serve run` are up and a vLLM engine has created its shared memory."""
        self.wait_for("a vLLM engine's /dev/shm files", lambda: True if self._live_shm() else None)
        assert self.record is not None, "no run record names this command as its owner"

    def _live_shm(self) -> set[str]:
        return {p for p in self.shm_files if p.startswith(SHM + "psm_") and os.path.exists(p)}

    # ------------------------------------------------------------------ stopping
    def signal_cli(self, sig: signal.Signals) -> None:
        self.observe()
        os.kill(self.cli_pid, sig)

    def wait_exit(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve-local did not exit within {timeout:.0f} s\n{self.logs()}")

    def leftovers(self) -> dict[str, object]:
        left: dict[str, object] = {
            "processes": sorted(self.processes()),
            "shm files": sorted(p for p in self.shm_files if os.path.exists(p)),
            "orphaned semaphores": sorted(self._orphaned_semaphores()),
        }
        if self.record is not None:
            left["run record"] = self.record.path.exists()
            left["work dir"] = Path(self.record.work_dir).exists()
        left["command"] = _running(self.cli_pid)
        return {k: v for k, v in left.items() if v}

    def _orphaned_semaphores(self) -> set[str]:
        new = {str(p) for p in Path(SHM).glob("sem.mp-*") if p.stat().st_mtime >= self.started_at}
        return new - {f for pid in _pids() for f in _mapped_shm(pid)} if new else set()

    def assert_nothing_left(self, timeout: float = 60.0) -> None:
        """Wait for (the guard may still be working), then insist on, a machine free of the run."""
        assert self.sessions, "no session of the run was seen: the marker did not reach it"
        wait_until(lambda: True if not self.leftovers() else None, timeout=timeout, interval=0.5)
        assert self.leftovers() == {}, self.logs()

    def kill_everything(self) -> None:
        """Last resort for a failed test: never leave a Ray cluster behind on the machine."""
        for pid in self.processes():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for path in self.shm_files:
            Path(path).unlink(missing_ok=True)


def _pump(stream: object, sink: list[str], lines: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        sink.append(line)
        lines.put(line)


def start_cli(*args: str, launch: Launch = "direct") -> CliRun:
    """Start `python -m infra.local --stack dev` the way make does, optionally under a wrapper."""
    marker = uuid.uuid4().hex
    command = [sys.executable, "-m", "infra.local", "--stack", "dev", "--port", str(free_port()), *args]
    wrapped = {
        "direct": command,
        "parent": [sys.executable, "-c", _PARENT, *command],
        "background": ["bash", "-c", _BACKGROUND, "bash", *command],
    }[launch]
    process = subprocess.Popen(
        wrapped,
        cwd=REPO_ROOT,
        env={**os.environ, MARKER_ENV: marker},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = CliRun(process=process, marker=marker, launch=launch)
    threading.Thread(target=_pump, args=(process.stdout, run.stdout, run._lines), daemon=True).start()
    threading.Thread(target=_pump, args=(process.stderr, run.stderr, queue.Queue()), daemon=True).start()
    run.cli_pid = process.pid if launch == "direct" else int(run._lines.get(timeout=30))
    return run


@pytest.fixture
def runs() -> Iterator[list[CliRun]]:
    """Runs a test starts; whatever a failed test left of them is killed."""
    started: list[CliRun] = []
    yield started
    for run in started:
        run.kill_everything()


@pytest.fixture
def one_model(runs: list[CliRun]) -> Callable[..., CliRun]:
    """Start a one-model run (what most stop modes need) and wait until its engine has started."""

    def start(launch: Launch = "direct") -> CliRun:
        run = start_cli("--models", ONE_MODEL, launch=launch)
        runs.append(run)
        run.wait_until_engine_started()
        return run

    return start


# =========================================================================== the dev stack, served
@pytest.fixture(scope="module")
def dev_models() -> list[str]:
    return build_plan_for_stack("dev", REPO_ROOT).served_model_ids


@pytest.fixture(scope="module")
def dev_tasks() -> dict[str, str]:
    """Each dev model's task (chat models, and the embedder and reranker beside them)."""
    return {model.id: model.task.value for model in build_plan_for_stack("dev", REPO_ROOT).served}


@pytest.fixture(scope="module")
def dev_chat_models(dev_tasks: dict[str, str]) -> list[str]:
    return [model for model, task in dev_tasks.items() if task == "generate"]


@pytest.fixture(scope="module")
def serve_local(dev_models: list[str]) -> Iterator[CliRun]:
    run = start_cli()
    try:
        run.wait_until_ready()
        run.observe()
        yield run
    finally:
        if run.process.poll() is None:
            run.signal_cli(signal.SIGINT)
            run.wait_exit()
        run.kill_everything()


def client(run: CliRun, api_key: str | None = None) -> OpenAI:
    key = run.api_key if api_key is None else api_key
    return OpenAI(base_url=run.base_url, api_key=key, timeout=120.0, max_retries=0)


def test_it_prints_the_url_and_an_example_curl(serve_local: CliRun, dev_models: list[str]) -> None:
    printed = "".join(serve_local.stdout)
    assert serve_local.model_ids == dev_models
    assert f"curl {serve_local.base_url.removesuffix('/v1')}/v1/chat/completions" in printed
    assert f'"model": "{dev_models[0]}"' in printed
    metrics = re.search(r"metrics \(Prometheus text.*\): (http://127\.0\.0\.1:\d+/metrics)", printed)
    assert metrics, printed
    assert "ray_serve_" in httpx.get(metrics[1], timeout=10.0, trust_env=False).text


def test_every_model_route_needs_the_key_and_health_stays_open(
    serve_local: CliRun, dev_models: list[str]
) -> None:
    """serve/openai_app.py in front of Ray's ingress: 401 in OpenAI's shape without the key or with a
    wrong one, on every model route; Serve's health routes answer without a key."""
    with pytest.raises(openai.AuthenticationError) as wrong:
        client(serve_local, api_key="sk-wrong-key-0123456789").chat.completions.create(
            model=dev_models[0], messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert wrong.value.status_code == 401
    assert wrong.value.response.json()["error"]["code"] == "invalid_api_key"
    assert serve_local.api_key not in wrong.value.response.text
    with pytest.raises(openai.AuthenticationError):
        client(serve_local, api_key="sk-wrong-key-0123456789").models.list()
    root = serve_local.base_url.removesuffix("/v1")
    with httpx.Client(trust_env=False, timeout=30.0) as http:
        for method, path in (
            ("GET", "/v1/models"),
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/completions"),
            ("POST", "/v1/embeddings"),
            ("POST", "/v1/score"),
            ("POST", "/tokenize"),
        ):
            missing = http.request(method, f"{root}{path}", json={"model": dev_models[0]})
            assert missing.status_code == 401, (path, missing.text)
            assert missing.json()["error"]["type"] == "invalid_request_error"
            assert missing.headers["www-authenticate"].startswith("Bearer")
        for path in ("/-/healthz", "/-/routes"):
            assert http.get(f"{root}{path}").status_code == 200, path


def test_models_listed_are_the_served_catalog_ids(serve_local: CliRun, dev_models: list[str]) -> None:
    listed = sorted(model.id for model in client(serve_local).models.list())
    assert listed == sorted(dev_models)


def test_every_served_model_answers_on_its_tasks_route(
    serve_local: CliRun, dev_tasks: dict[str, str]
) -> None:
    """The dev stack serves chat, embeddings and rerank models; each answers its own task's request."""
    assert set(dev_tasks.values()) >= {"generate", "embed", "rerank"}
    for model, task in dev_tasks.items():
        path, request = warmup_request(model, task)
        response = httpx.post(
            f"{serve_local.base_url}{path}",
            headers={"Authorization": f"Bearer {serve_local.api_key}"},
            timeout=120.0,
            trust_env=False,
            **request,
        )
        assert response.status_code == 200, (model, task, response.text)


def test_chat_completion_for_every_chat_model(serve_local: CliRun, dev_chat_models: list[str]) -> None:
    for model in dev_chat_models:
        reply = client(serve_local).chat.completions.create(
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


def test_streamed_chat_completion_for_every_chat_model(
    serve_local: CliRun, dev_chat_models: list[str]
) -> None:
    for model in dev_chat_models:
        stream = client(serve_local).chat.completions.create(
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


def test_unknown_model_gets_a_4xx_that_names_it(serve_local: CliRun) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        client(serve_local).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    assert 400 <= raised.value.status_code < 500
    # Ray Serve LLM answers {"detail": "...Could not find base model with ID \"no-such-model\"."}
    assert "no-such-model" in raised.value.response.text


def test_ctrl_c_stops_serve_and_ray_and_leaves_nothing(serve_local: CliRun) -> None:
    # Runs after the client tests: it ends the service they used.
    assert len(serve_local.processes()) >= 10, "the marker did not reach Ray's processes"
    assert serve_local._live_shm(), "the engines' /dev/shm files were not seen"
    serve_local.signal_cli(signal.SIGINT)
    assert serve_local.wait_exit() == 0, serve_local.logs()
    serve_local.assert_nothing_left()
    assert "stopped" in "".join(serve_local.stderr)


# =========================================================================== every other way to stop it
def test_sigterm_stops_it(one_model: Callable[..., CliRun]) -> None:
    run = one_model()
    run.signal_cli(signal.SIGTERM)
    assert run.wait_exit() == 0, run.logs()
    run.assert_nothing_left()


def test_sigkill_two_seconds_into_a_sigterm_stop_leaves_the_rest_to_the_guard(
    one_model: Callable[..., CliRun],
) -> None:
    # What scripts and CI do: SIGTERM, then SIGKILL shortly after, while the stop is running.
    run = one_model()
    run.signal_cli(signal.SIGTERM)
    run.wait_for_line(r"stopping: run .*\(SIGTERM\)")
    time.sleep(2.0)
    assert run.process.poll() is None, "the stop finished within 2 s: nothing was left to interrupt"
    run.signal_cli(signal.SIGKILL)
    assert run.wait_exit() == -signal.SIGKILL
    run.assert_nothing_left(timeout=SHUTDOWN_TIMEOUT_S)


def test_sigkill_of_the_command_leaves_the_cleanup_to_the_guard(one_model: Callable[..., CliRun]) -> None:
    run = one_model()
    assert run.record is not None and run.record.guard is not None
    run.signal_cli(signal.SIGKILL)
    assert run.wait_exit() == -signal.SIGKILL
    run.assert_nothing_left(timeout=SHUTDOWN_TIMEOUT_S)


def test_the_parent_dying_stops_it(one_model: Callable[..., CliRun]) -> None:
    run = one_model(launch="parent")
    run.process.kill()  # the parent, SIGKILL: the command is re-parented and must notice
    run.process.wait()
    run.assert_nothing_left(timeout=SHUTDOWN_TIMEOUT_S)
    assert "parent process" in "".join(run.stderr)


def test_a_second_ctrl_c_during_the_stop_hurries_it_and_still_leaves_nothing(
    one_model: Callable[..., CliRun],
) -> None:
    run = one_model()
    run.signal_cli(signal.SIGINT)
    run.wait_for_line(r"ending \d+ process\(es\)")
    run.signal_cli(signal.SIGINT)
    assert run.wait_exit(timeout=60) == 0, run.logs()
    run.assert_nothing_left()
    assert "no more grace periods" in "".join(run.stderr)


def test_bash_background_jobs_start_with_sigint_ignored() -> None:
    # The premise of the next test (bash(1): "If job control is not in effect, asynchronous
    # commands ignore SIGINT and SIGQUIT in addition to these inherited handlers.")
    probe = [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"]
    out = subprocess.run(
        ["bash", "-c", _BACKGROUND, "bash", *probe], capture_output=True, text=True, check=True
    )
    assert out.stdout.splitlines()[-1] == "True"


def test_ctrl_c_stops_it_when_a_script_started_it_in_the_background(one_model: Callable[..., CliRun]) -> None:
    run = one_model(launch="background")
    run.signal_cli(signal.SIGINT)
    assert run.wait_exit() == 0, run.logs()  # bash's `wait $!` returns the command's exit code
    run.assert_nothing_left()


def test_the_next_start_removes_what_a_killed_run_and_guard_left(
    one_model: Callable[..., CliRun], runs: list[CliRun]
) -> None:
    killed = one_model()
    assert killed.record is not None and killed.record.guard is not None
    os.kill(killed.record.guard.pid, signal.SIGKILL)
    killed.signal_cli(signal.SIGKILL)
    killed.wait_exit()
    time.sleep(2.0)
    assert killed.processes() and killed._live_shm(), "nothing was left behind to clean up"

    following = start_cli("--models", ONE_MODEL)
    runs.append(following)
    run_id = killed.record.run_id
    following.wait_for_line(rf"removing what run {run_id} \(pid {killed.cli_pid}\) left behind")
    following.wait_for_line(rf"no process of run {run_id} left")
    killed.assert_nothing_left()

    following.wait_for_line("a private Ray head")
    following.signal_cli(signal.SIGINT)  # still starting: a stop during the start
    assert following.wait_exit() == 0, following.logs()
    following.assert_nothing_left()
