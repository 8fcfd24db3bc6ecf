"""Run the stack's real serving layer (Ray Serve LLM + vLLM) on this machine's CPU.

The input is the same Serve deploy document the RayService carries as serveConfigV2.
`localize_serve_config` keeps every model's id and Serve settings and changes only what a CPU
and a local tiny model need; `LocalService` starts a private Ray head, runs `serve run` on the
localized document, waits until `/v1/models` lists every model, and on exit stops Serve and
every process of that Ray cluster (by process id, never by name, so other Ray clusters on the
machine survive).

    with LocalService(localize_serve_config(config, ensure_tiny_model())) as svc:
        OpenAI(base_url=svc.openai_base_url, api_key="local").models.list()
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final

import yaml

from serve.tiny_model import MAX_POSITION_EMBEDDINGS
from serve.versions import OPENAI_APP_IMPORT_PATH

# --------------------------------------------------------------------------- CPU adaptation
# vLLM's CPU backend sizes its KV cache from this env var (GiB) instead of gpu_memory_utilization.
KV_CACHE_ENV: Final = "VLLM_CPU_KVCACHE_SPACE"
DEFAULT_KV_CACHE_GIB: Final = 1
# float32: the tiny model is stored in float32, and this machine's CPU (AVX2, no AVX-512/AMX)
# has no native bf16 matmul, so bf16 would be emulated and slower.
CPU_DTYPE: Final = "float32"
# One replica is three processes (Serve replica, vLLM engine core, vLLM worker), about 3 GiB RSS
# with the tiny model and a 1 GiB KV cache: on a small machine a second replica per model only
# costs memory and competes for the same cores, so local autoscaling stops at one.
LOCAL_MAX_REPLICAS: Final = 1
# torch.compile warm-up takes about 50 s per engine on 2 cores and buys nothing for a tiny model;
# eager mode halves the time to a ready service (measured: 114 s instead of 207 s for two models).
CPU_ENFORCE_EAGER: Final = True
# Engine arguments that only mean something for GPUs, for the real checkpoint, or for
# multi-device runs; the CPU run with the tiny model drops them.
DROPPED_ENGINE_KWARGS: Final = frozenset(
    {
        "revision",
        "tokenizer_revision",
        "code_revision",
        "quantization",
        "gpu_memory_utilization",
        "kv_cache_memory_bytes",
        "kv_cache_dtype",
        "cpu_offload_gb",
        "pipeline_parallel_size",
        "data_parallel_size",
        "distributed_executor_backend",
        "tokenizer",
        "hf_overrides",
        "speculative_config",
    }
)

# --------------------------------------------------------------------------- local Ray cluster
DEFAULT_NUM_CPUS: Final = 8  # logical CPUs: lets ingress, routers and engines all be placed
DEFAULT_OBJECT_STORE_BYTES: Final = 256 * 1024**2
DEFAULT_STARTUP_TIMEOUT_S: Final = 600.0
STOP_GRACE_S: Final = 15.0
SERVE_SHUTDOWN_TIMEOUT_S: Final = 90.0


def _llm_apps(config: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for app in config.get("applications", []):
        if app.get("import_path") == OPENAI_APP_IMPORT_PATH:
            yield app


def served_model_ids(serve_config: Mapping[str, Any]) -> list[str]:
    """The OpenAI model ids a Serve deploy document serves, in document order."""
    return [
        llm["model_loading_config"]["model_id"]
        for app in _llm_apps(serve_config)
        for llm in app.get("args", {}).get("llm_configs", [])
    ]


def _localize_llm_config(llm: Mapping[str, Any], model_dir: Path, kv_cache_gib: int) -> dict[str, Any]:
    out = copy.deepcopy(dict(llm))
    loading = out["model_loading_config"]
    loading["model_source"] = str(Path(model_dir).resolve())
    if "tokenizer_source" in loading:
        loading["tokenizer_source"] = loading["model_source"]

    out.pop("accelerator_type", None)
    out.pop("placement_group_config", None)  # GPU bundles; the CPU backend's default is {"CPU": 1}
    out["accelerator_config"] = {"kind": "cpu"}

    engine = {k: v for k, v in out.get("engine_kwargs", {}).items() if k not in DROPPED_ENGINE_KWARGS}
    engine["tensor_parallel_size"] = 1
    engine["dtype"] = CPU_DTYPE
    engine["enforce_eager"] = CPU_ENFORCE_EAGER
    engine["max_model_len"] = min(
        int(engine.get("max_model_len", MAX_POSITION_EMBEDDINGS)), MAX_POSITION_EMBEDDINGS
    )
    if "max_num_batched_tokens" in engine and not engine.get("enable_chunked_prefill", True):
        engine["max_num_batched_tokens"] = max(int(engine["max_num_batched_tokens"]), engine["max_model_len"])
    out["engine_kwargs"] = engine

    runtime_env = dict(out.get("runtime_env") or {})
    env_vars = dict(runtime_env.get("env_vars") or {})
    env_vars[KV_CACHE_ENV] = str(kv_cache_gib)
    runtime_env["env_vars"] = env_vars
    out["runtime_env"] = runtime_env

    deployment = dict(out.get("deployment_config") or {})
    autoscaling = deployment.get("autoscaling_config")
    if isinstance(autoscaling, Mapping):
        autoscaling = dict(autoscaling)
        autoscaling["max_replicas"] = min(int(autoscaling.get("max_replicas", 1)), LOCAL_MAX_REPLICAS)
        for key in ("min_replicas", "initial_replicas"):
            if autoscaling.get(key) is not None:
                autoscaling[key] = min(int(autoscaling[key]), autoscaling["max_replicas"])
        deployment["autoscaling_config"] = autoscaling
    if isinstance(deployment.get("num_replicas"), int):
        deployment["num_replicas"] = min(deployment["num_replicas"], LOCAL_MAX_REPLICAS)
    out["deployment_config"] = deployment
    return out


def localize_serve_config(
    serve_config: Mapping[str, Any],
    model_dir: Path,
    models: Sequence[str] | None = None,
    *,
    kv_cache_gib: int = DEFAULT_KV_CACHE_GIB,
) -> dict[str, Any]:
    """A copy of `serve_config` that runs on this machine's CPU with the local model in `model_dir`.

    Every selected model (all when `models` is None) keeps its model id and its Serve settings;
    its weights come from `model_dir`, it runs on the CPU backend (`accelerator_config: cpu`, no
    `accelerator_type`) in float32 and eager mode with one tensor-parallel rank, a KV cache of
    `kv_cache_gib` GiB (vLLM's `VLLM_CPU_KVCACHE_SPACE`, set in the replica's runtime_env) and a
    context capped at the tiny model's limit; revision, quantization and GPU-only engine arguments
    are dropped. Autoscaling keeps min_replicas (0 still scales to zero) but is capped at one
    replica per model (see LOCAL_MAX_REPLICAS). Models not selected are left out.
    Raises ValueError for an unknown or empty selection, listing the ids the config serves.
    """
    valid = served_model_ids(serve_config)
    if not valid:
        raise ValueError(f"the serve config has no {OPENAI_APP_IMPORT_PATH} application with llm_configs")
    if len(set(valid)) != len(valid):
        raise ValueError(f"the serve config serves a model id twice: {valid}")
    if models is not None:
        selected = list(dict.fromkeys(models))
        unknown = [m for m in selected if m not in valid]
        if unknown:
            raise ValueError(
                f"unknown model id(s) {', '.join(map(repr, unknown))}; this stack serves: {', '.join(valid)}"
            )
        if not selected:
            raise ValueError(f"no model selected; this stack serves: {', '.join(valid)}")
    else:
        selected = valid
    if kv_cache_gib < 1:
        raise ValueError(f"kv_cache_gib must be at least 1 (vLLM reads {KV_CACHE_ENV} in whole GiB)")

    out = copy.deepcopy(dict(serve_config))
    applications = []
    for app in out.get("applications", []):
        if app.get("import_path") == OPENAI_APP_IMPORT_PATH:
            llm_configs = [
                _localize_llm_config(llm, model_dir, kv_cache_gib)
                for llm in app.get("args", {}).get("llm_configs", [])
                if llm["model_loading_config"]["model_id"] in selected
            ]
            if not llm_configs:
                continue
            app["args"]["llm_configs"] = llm_configs
        applications.append(app)
    out["applications"] = applications
    return out


# =========================================================================== local service
class LocalServiceError(RuntimeError):
    """The local Ray cluster or Serve application failed to start."""


def _free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _http_json(
    method: str, url: str, body: Any = None, timeout: float = 10.0, token: str | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode(errors="replace")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _session_pids(session_ids: set[int]) -> set[int]:
    """Every live process whose session is one of `session_ids` (the sessions this service made)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) in session_ids:
                pids.add(int(entry))
        except OSError:
            continue
    return pids


def _signal_pids(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(session_ids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = _session_pids(session_ids)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


@dataclass(frozen=True)
class _ClusterPorts:
    gcs: int
    client_server: int
    dashboard: int
    dashboard_agent_listen: int
    dashboard_agent_grpc: int
    metrics_export: int
    runtime_env_agent: int
    node_manager: int
    object_manager: int

    @classmethod
    def allocate(cls) -> _ClusterPorts:
        return cls(*_free_ports(9))


# `serve run` catches KeyboardInterrupt and then shuts Serve down; SIGINT must not be ignored in it
# even when this process was started with SIGINT ignored (e.g. as a background job).
_SERVE_RUN = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from ray.serve.scripts import cli; sys.argv[0] = 'serve'; sys.exit(cli())"
)


class LocalService:
    """A private Ray head plus `serve run` of a (localized) Serve deploy document.

    Use as a context manager; `__enter__` returns once Serve reports the application RUNNING,
    `GET /v1/models` lists every model and (with `wait_for_engines`) every model has answered a
    one-token chat request. Every process the service starts lives in one of two new sessions
    (the Ray cluster's and `serve run`'s); `stop()` ends exactly those, by process id.
    """

    def __init__(
        self,
        serve_config: Mapping[str, Any],
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        num_cpus: int = DEFAULT_NUM_CPUS,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        wait_for_engines: bool = True,
        echo_logs: bool = False,
        keep_logs: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.model_ids: list[str] = served_model_ids(serve_config)
        if not self.model_ids:
            raise ValueError(f"the serve config has no {OPENAI_APP_IMPORT_PATH} application with llm_configs")
        not_cpu = [
            llm["model_loading_config"]["model_id"]
            for app in _llm_apps(serve_config)
            for llm in app["args"]["llm_configs"]
            if (llm.get("accelerator_config") or {}).get("kind") != "cpu"
        ]
        if not_cpu:
            raise ValueError(
                f"models {', '.join(not_cpu)} are not configured for CPU; pass the config through "
                "localize_serve_config() first"
            )
        self.host = host
        self.port = port
        self.num_cpus = num_cpus
        self.startup_timeout_s = startup_timeout_s
        self.wait_for_engines = wait_for_engines
        self.echo_logs = echo_logs
        self.keep_logs = keep_logs
        self._progress = progress or (lambda _msg: None)
        self._serve_config = copy.deepcopy(dict(serve_config))
        self._serve_config["http_options"] = {
            **dict(self._serve_config.get("http_options") or {}),
            "host": host,
            "port": port,
        }
        self.work_dir: Path | None = None
        self.session_ids: set[int] = set()
        self.seen_pids: set[int] = set()
        self.shared_memory_files: set[Path] = set()
        self._ports: _ClusterPorts | None = None
        self._serve_proc: subprocess.Popen[bytes] | None = None
        self._stopped = True
        self._started_at = 0.0
        self._auth_token = secrets.token_hex(32)

    # ------------------------------------------------------------------ addresses
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def gcs_address(self) -> str:
        assert self._ports is not None, "not started"
        return f"127.0.0.1:{self._ports.gcs}"

    @property
    def dashboard_url(self) -> str:
        assert self._ports is not None, "not started"
        return f"http://127.0.0.1:{self._ports.dashboard}"

    @property
    def _tmp_dir(self) -> Path:
        assert self.work_dir is not None, "not started"
        return self.work_dir / "tmp"

    @property
    def log_path(self) -> Path:
        assert self.work_dir is not None, "not started"
        return self.work_dir / "serve-run.log"

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LocalService:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        if not self._stopped:
            raise RuntimeError("LocalService is already running")
        if _port_in_use(self.host, self.port):
            raise LocalServiceError(f"{self.host}:{self.port} is already in use; choose another port")
        self._stopped = False
        self._started_at = time.time()
        self.work_dir = Path(tempfile.mkdtemp(prefix="llm-serving-", dir="/tmp"))  # short: Ray's sockets
        self._tmp_dir.mkdir()
        try:
            self._start_ray()
            self._start_serve()
            self._wait_ready()
            self._record_shared_memory()
        except BaseException:
            self.keep_logs = True
            self.stop()
            raise

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        env.update(
            {
                # Ray 2.60 turns token auth on for `ray start` when ~/.ray/auth_token exists but not
                # for clients that connect to it; a per-service token makes both sides agree and keeps
                # this cluster closed to other local processes.
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": self._auth_token,
                "RAY_USAGE_STATS_ENABLED": "0",
                # Nothing may be downloaded: the model is a local directory.
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
                # vLLM's IPC sockets and rendezvous files and multiprocessing's temp dirs go here
                # and are removed with the work dir, even when a process had to be killed.
                "TMPDIR": str(self._tmp_dir),
                # Ray keeps up to num_cpus idle workers around; the model-download task's worker
                # has imported vLLM (~630 MiB RSS each). Without spares idle workers exit at once.
                "RAY_num_workers_soft_limit": "0",
                "RAY_prestart_worker_first_driver": "0",
            }
        )
        return env

    def _start_ray(self) -> None:
        assert self.work_dir is not None
        self._ports = ports = _ClusterPorts.allocate()
        # fmt: off
        command = [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--head",
            "--num-cpus", str(self.num_cpus), "--num-gpus", "0",
            "--object-store-memory", str(DEFAULT_OBJECT_STORE_BYTES),
            "--temp-dir", str(self.work_dir / "ray"),
            "--port", str(ports.gcs),
            "--ray-client-server-port", str(ports.client_server),
            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(ports.dashboard),
            "--dashboard-agent-listen-port", str(ports.dashboard_agent_listen),
            "--dashboard-agent-grpc-port", str(ports.dashboard_agent_grpc),
            "--metrics-export-port", str(ports.metrics_export),
            "--runtime-env-agent-port", str(ports.runtime_env_agent),
            "--node-manager-port", str(ports.node_manager),
            "--object-manager-port", str(ports.object_manager),
            "--min-worker-port", "0", "--max-worker-port", "0",  # random: no clash with other clusters
            "--disable-usage-stats",
        ]
        # fmt: on
        self._progress(f"starting a local Ray head ({self.num_cpus} logical CPUs) at {self.gcs_address}")
        log = self.work_dir / "ray-start.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=self._env(), start_new_session=True
            )
        self.session_ids.add(proc.pid)
        try:
            code = proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise LocalServiceError(f"`ray start` did not finish in 180 s:\n{_tail(log)}") from None
        if code != 0:
            raise LocalServiceError(f"`ray start` failed (exit {code}):\n{_tail(log)}")
        self._record_pids()

    def _start_serve(self) -> None:
        assert self.work_dir is not None
        config_path = self.work_dir / "serve-config.yaml"
        config_path.write_text(yaml.safe_dump(self._serve_config, sort_keys=False))
        command = [sys.executable, "-c", _SERVE_RUN, "run", "--address", self.gcs_address, str(config_path)]
        self._progress(f"serve run {config_path} (models: {', '.join(self.model_ids)})")
        if self.echo_logs:
            self._serve_proc = subprocess.Popen(command, env=self._env(), start_new_session=True)
        else:
            with self.log_path.open("wb") as out:
                self._serve_proc = subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, env=self._env(), start_new_session=True
                )
        self.session_ids.add(self._serve_proc.pid)

    def _record_pids(self) -> None:
        self.seen_pids |= _session_pids(self.session_ids)

    def _failure(self, message: str) -> LocalServiceError:
        details = "" if self.echo_logs else f"\n--- last lines of {self.log_path} ---\n{_tail(self.log_path)}"
        return LocalServiceError(message + details)

    def check_alive(self) -> None:
        """Raise LocalServiceError if `serve run` or the Ray cluster's GCS has exited."""
        assert self._serve_proc is not None, "not started"
        code = self._serve_proc.poll()
        if code is not None:
            raise self._failure(f"`serve run` exited with code {code}")
        if not any(_process_name(pid) == "gcs_server" for pid in _session_pids(self.session_ids)):
            raise self._failure("the local Ray cluster's GCS is gone")

    def _app_statuses(self) -> dict[str, Any] | None:
        """Serve's view of the applications (from the dashboard's REST API), or None if not up yet."""
        try:
            status, body = _http_json(
                "GET", f"{self.dashboard_url}/api/serve/applications/", timeout=10, token=self._auth_token
            )
        except (OSError, urllib.error.URLError):
            return None
        if status != 200 or not isinstance(body, dict):
            return None
        apps = body.get("applications")
        return apps if isinstance(apps, dict) else None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        started = time.monotonic()
        last_note = ""

        def note(message: str) -> None:
            nonlocal last_note
            if message != last_note:
                self._progress(f"[{time.monotonic() - started:5.0f} s] {message}")
                last_note = message

        expected_apps = {app["name"] for app in self._serve_config["applications"]}
        phase = "Serve to deploy the applications"
        answered: dict[str, bool] = {}
        while True:
            self.check_alive()
            self._record_pids()
            if time.monotonic() > deadline:
                raise self._failure(
                    f"the local service was not ready within {self.startup_timeout_s:.0f} s "
                    f"(waiting for {phase})"
                )
            apps = self._app_statuses()
            if apps is not None:
                failed = {n: a for n, a in apps.items() if a.get("status") in ("DEPLOY_FAILED", "UNHEALTHY")}
                if failed:
                    summary = {n: _failure_summary(a) for n, a in failed.items()}
                    raise self._failure("Serve could not deploy: " + json.dumps(summary, indent=2))
            if phase.startswith("Serve"):
                if apps is None:
                    note("waiting for Serve to accept the config")
                else:
                    states = {name: apps.get(name, {}).get("status", "NOT_STARTED") for name in expected_apps}
                    note("applications: " + ", ".join(f"{n}={s}" for n, s in sorted(states.items())))
                    if all(s == "RUNNING" for s in states.values()):
                        phase = "/v1/models to list every model"
                        continue
            elif phase.startswith("/v1/models"):
                if set(self.model_ids) <= self._listed_models():
                    note(f"/v1/models lists {', '.join(self.model_ids)}")
                    if not self.wait_for_engines:
                        return
                    phase = "every engine to answer"
                    note(f"waiting for the engines to answer ({len(self.model_ids)} loading in parallel)")
                    for model in self.model_ids:
                        threading.Thread(
                            target=self._probe, args=(model, deadline, answered), daemon=True
                        ).start()
                    continue
                note("waiting for /v1/models")
            else:
                done = [m for m in self.model_ids if answered.get(m)]
                if len(done) == len(self.model_ids):
                    note("every engine answers")
                    return
                if done:
                    note(f"answering: {', '.join(done)}")
            time.sleep(2.0)

    def _listed_models(self) -> set[str]:
        try:
            status, body = _http_json("GET", f"{self.openai_base_url}/models", timeout=10)
        except (OSError, urllib.error.URLError):
            return set()
        if status != 200 or not isinstance(body, dict):
            return set()
        return {str(m.get("id")) for m in body.get("data", []) if isinstance(m, dict)}

    def _probe(self, model: str, deadline: float, answered: dict[str, bool]) -> None:
        """Send one-token chat requests to `model` until one succeeds (scaling it up from zero)."""
        request = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        while time.monotonic() < deadline and not self._stopped:
            try:
                status, _body = _http_json(
                    "POST",
                    f"{self.openai_base_url}/chat/completions",
                    request,
                    timeout=max(5.0, min(deadline - time.monotonic(), 120.0)),
                )
            except (OSError, urllib.error.URLError):
                status = 0
            if status == 200:
                answered[model] = True
                return
            time.sleep(2.0)

    def stop(self) -> None:
        """Stop Serve, then every process of this service's sessions; idempotent.

        Order: `serve run` gets SIGINT and shuts Serve down (replicas, then engines); then every
        remaining process of the cluster's session gets SIGTERM, the GCS last (it outlives its
        raylet otherwise), and whatever is left after a grace period gets SIGKILL. Finally the
        shared-memory files these processes had mapped (vLLM's message queues, which it does not
        unlink when its replica is stopped) and the work dir are removed.
        """
        if self._stopped:
            return
        self._stopped = True
        with _signals_deferred():
            self._stop()

    def _stop(self) -> None:
        self._record_pids()
        self._record_shared_memory()
        if self._serve_proc is not None and self._serve_proc.poll() is None:
            self._progress("shutting Serve down")
            with contextlib.suppress(ProcessLookupError):
                self._serve_proc.send_signal(signal.SIGINT)
            try:
                self._serve_proc.wait(timeout=SERVE_SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._serve_proc.kill()
                self._serve_proc.wait(timeout=10)
        if self.session_ids:
            self._progress("stopping the local Ray cluster")
            self._record_pids()
            self._record_shared_memory()
            _terminate_sessions(self.session_ids)
        for path in sorted(self.shared_memory_files | _orphan_semaphores(self._started_at)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if self.work_dir is not None and not self.keep_logs:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _record_shared_memory(self) -> None:
        for pid in _session_pids(self.session_ids):
            self.shared_memory_files |= _mapped_shared_memory(pid)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold off Ctrl-C / SIGTERM while shutting down, so a second one cannot strand processes.

    The signals are not lost: one that arrives meanwhile is re-raised once shutdown is done.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda signum, _frame: caught.append(signum)) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            signal.raise_signal(caught[0])


def _orphan_semaphores(since: float) -> set[Path]:
    """Named multiprocessing semaphores created since `since` that no live process has open.

    vLLM's engine processes create them (`/dev/shm/sem.mp-*`) and leak them when their replica is
    stopped; one that no process maps can never be used again.
    """
    if since <= 0:
        return set()
    candidates = set()
    for path in Path("/dev/shm").glob("sem.mp-*"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime >= since - 1:
                candidates.add(path)
    if not candidates:
        return set()
    in_use: set[Path] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            in_use |= _mapped_shared_memory(int(entry))
    return candidates - in_use


def _terminate_sessions(session_ids: set[int]) -> None:
    pids = _session_pids(session_ids)
    gcs = {pid for pid in pids if _process_name(pid) == "gcs_server"}
    _signal_pids(pids - gcs, signal.SIGTERM)
    left = _wait_gone_except(session_ids, gcs, STOP_GRACE_S)
    _signal_pids(gcs, signal.SIGTERM)
    left = _wait_gone(session_ids, 5)
    if left:
        _signal_pids(left, signal.SIGKILL)
        left = _wait_gone(session_ids, 10)
    if left:
        raise LocalServiceError(f"processes of the local service survived SIGKILL: {sorted(left)}")


def _wait_gone_except(session_ids: set[int], keep: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = _session_pids(session_ids) - keep
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _mapped_shared_memory(pid: int) -> set[Path]:
    """Files under /dev/shm that process `pid` has mapped or open (POSIX shm, named semaphores)."""
    found: set[Path] = set()
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
            if path.startswith("/dev/shm/"):
                found.add(Path(path.removesuffix(" (deleted)")))
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("/dev/shm/"):
                    found.add(Path(target.removesuffix(" (deleted)")))
    return found


def _failure_summary(app: Mapping[str, Any]) -> dict[str, Any]:
    deployments = app.get("deployments") or {}
    return {
        "status": app.get("status"),
        "message": app.get("message", "")[-2000:],
        "deployments": {
            name: {"status": d.get("status"), "message": (d.get("message") or "")[-2000:]}
            for name, d in deployments.items()
            if d.get("status") != "HEALTHY"
        },
    }


def _example_curl(base_url: str, model_id: str) -> str:
    body = json.dumps(
        {"model": model_id, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 32}
    )
    return f"curl {base_url}/v1/chat/completions -H 'Content-Type: application/json' -d '{body}'"


def run_local(
    serve_config: Mapping[str, Any],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    num_cpus: int = DEFAULT_NUM_CPUS,
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
    echo_logs: bool = False,
) -> int:
    """Serve a localized deploy document until Ctrl-C / SIGTERM, then stop everything; exit code.

    Prints progress to stderr, and the URL and an example request once every model answers.
    """

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def on_terminate(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    service = LocalService(
        serve_config,
        host=host,
        port=port,
        num_cpus=num_cpus,
        startup_timeout_s=startup_timeout_s,
        echo_logs=echo_logs,
        progress=progress,
    )
    previous = {sig: signal.signal(sig, on_terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with service:
            sources = sorted(
                {
                    str(llm["model_loading_config"].get("model_source"))
                    for app in _llm_apps(serve_config)
                    for llm in app["args"]["llm_configs"]
                }
            )
            logs = "the console" if echo_logs else str(service.log_path)
            print(
                "\n".join(
                    [
                        "",
                        f"Serving {', '.join(service.model_ids)} at {service.openai_base_url} (OpenAI API)",
                        f"  weights: {', '.join(sources)}",
                        "  try:",
                        f"    {_example_curl(service.base_url, service.model_ids[0])}",
                        f"  Serve logs: {logs}",
                        "Ctrl-C stops Serve and the local Ray cluster.",
                        "",
                    ]
                ),
                flush=True,
            )
            while True:
                service.check_alive()
                time.sleep(2.0)
    except KeyboardInterrupt:
        progress("stopped")
        return 0
    except LocalServiceError as error:
        progress(f"error: {error}")
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
