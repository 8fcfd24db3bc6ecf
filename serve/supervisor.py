"""Run a localized Serve deploy document on a private Ray cluster, and leave nothing behind.

`LocalService` starts a Ray head and `serve run` in sessions of their own, walks the readiness
phases (`Phase`) until every model answers, and on stop ends every process of the run. Whatever
way the owner stops, the same routine, `cleanup_run`, ends the run:

- the owner calls it from `stop()` (Ctrl-C, SIGTERM, the parent exiting, a failed start);
- a guard process (`serve.local_guard`, own session, deaf to SIGINT/SIGTERM/SIGHUP) holds the read
  end of a pipe whose only writer is the owner: when the owner dies in any way, SIGKILL included,
  the pipe closes and the guard runs it;
- the next start runs it for every recorded run whose owner and guard are both dead.

A run is found again through its record (`RunRecord`, JSON in `RUNS_DIR`) and recognised by
evidence, never by process name: the run marker in a process's environment, a (pid, start time)
seen before, or membership in a session that such a process confirms is still the run's own.
Other Ray clusters on the machine are never touched.

Nothing here prints: progress goes to an `on_progress` callback.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import json
import math
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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import httpx
import psutil  # no stubs in the dev deps yet (types-psutil)
import yaml

from serve.local_guard import IGNORED_SIGNALS
from serve.localize import (
    custom_resources,
    local_cpus_needed,
    models_not_on_cpu,
    new_api_key,
    served_model_ids,
    warmup_request,
    with_api_keys_dir,
)
from serve.openai_app import LLM_CONFIG_ARG, MODEL_APP_IMPORT_PATH
from serve.paths import REPO_ROOT
from serve.serve_config import document_tasks, model_applications

T = TypeVar("T")

DEFAULT_OBJECT_STORE_BYTES: Final = 256 * 1024**2
# Units of each custom resource the local head declares: deployments ask for fractions of one.
CUSTOM_RESOURCE_UNITS: Final = 1000
DEFAULT_STARTUP_TIMEOUT_S: Final = 600.0
RAY_START_TIMEOUT_S: Final = 180.0
STOP_GRACE_S: Final = 10.0
KILL_WAIT_S: Final = 10.0
FREEZE_ROUNDS: Final = 10
GUARD_START_TIMEOUT_S: Final = 30.0
# Serve's application statuses that mean it gave up (ray/serve/_private/common.py ApplicationStatus).
FAILED_APP_STATUSES: Final = ("DEPLOY_FAILED", "UNHEALTHY")
# How often readiness and liveness are checked; stop requests are noticed every WAKE_S.
CHECK_EVERY_S: Final = 2.0
WAKE_S: Final = 0.25
# Re-reading every process's memory maps costs CPU (smaps walks page tables), so the record of
# the run's /dev/shm files is refreshed at this pace; cleanup reads them once more before killing.
RECORD_EVERY_S: Final = 20.0

# Set in the environment of every process the run starts. Processes that rewrite their argv
# area with a long title (setproctitle: ray::DashboardAgent, ray-dashboard-* modules) lose it
# from /proc/PID/environ, hence the session evidence beside it.
RUN_MARKER_ENV: Final = "LLM_SERVING_LOCAL_RUN"
# Machine-wide (processes and /dev/shm are), per user, and short like the work dirs.
RUNS_DIR: Final = Path("/tmp") / f"llm-serving-runs-{os.getuid()}"
SHM_DIR: Final = Path("/dev/shm")


class Phase(enum.Enum):
    """Where a local service is in its life; readiness advances through these in order."""

    STARTING_RAY = "starting Ray"
    DEPLOYING = "deploying"
    LISTING_MODELS = "listing models"
    WARMING_ENGINES = "warming engines"
    READY = "ready"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Progress:
    phase: Phase
    elapsed_s: float
    detail: str

    def __str__(self) -> str:
        return f"[{self.elapsed_s:5.0f} s] {self.phase.value}: {self.detail}"


ProgressCallback = Callable[[Progress], None]


class LocalServiceError(RuntimeError):
    """The local Ray cluster or Serve application failed, or its processes could not be ended."""


class StopRequested(Exception):
    """A stop was requested (signal or parent exit) before the service was ready."""


class StopRequest:
    """Why, and how urgently, the owner should stop.

    Signal handlers call `request`; it only appends to a list, which is safe in a handler (a lock,
    as in threading.Event, could deadlock against the interrupted main thread). A second request
    makes the stop urgent: no more grace periods. With `watch_parent`, the parent process exiting
    (this process re-parented) counts as one request.
    """

    def __init__(self, *, watch_parent: bool = False) -> None:
        self._parent = os.getppid() if watch_parent else None
        self._parent_gone = False
        self.reasons: list[str] = []

    def request(self, reason: str) -> None:
        self.reasons.append(reason)

    @property
    def reason(self) -> str | None:
        if self._parent is not None and not self._parent_gone and os.getppid() != self._parent:
            self._parent_gone = True
            self.reasons.append(f"parent process {self._parent} exited")
        return self.reasons[0] if self.reasons else None

    @property
    def urgent(self) -> bool:
        return self.reason is not None and len(self.reasons) >= 2


def wait_until(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = CHECK_EVERY_S,
    stop: Callable[[], bool] = lambda: False,
) -> T | None:
    """Call `condition` every `interval` s until it returns a value, which is returned.

    Returns None once `timeout` s have passed or `stop()` is true (checked every WAKE_S, so a stop
    is noticed quickly even with a long interval). Exceptions from `condition` propagate.
    """
    deadline = time.monotonic() + timeout
    next_check = 0.0
    while True:
        now = time.monotonic()
        if now >= next_check:
            value = condition()
            if value is not None:
                return value
            next_check = now + interval
        if stop() or now >= deadline:
            return None
        time.sleep(max(0.0, min(WAKE_S, next_check - now, deadline - now)))


# =========================================================================== processes
@dataclass(frozen=True, order=True)
class ProcessId:
    """A process by pid and start time, so a reused pid is never mistaken for it."""

    pid: int
    create_time: float

    @classmethod
    def of(cls, proc: psutil.Process) -> ProcessId:
        return cls(proc.pid, proc.create_time())

    def process(self) -> psutil.Process | None:
        """The live process, or None if it exited (a zombie counts as exited)."""
        try:
            proc = psutil.Process(self.pid)
            if proc.create_time() == self.create_time and _running(proc):
                return proc
        except psutil.Error:
            pass
        return None


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _has_env(proc: psutil.Process, key: str, value: str) -> bool:
    try:
        return proc.environ().get(key) == value
    except psutil.Error:
        return False


def mapped_shm_files(procs: Iterable[psutil.Process]) -> set[str]:
    """Existing /dev/shm files the processes have mapped or open (POSIX shm, named semaphores).

    vLLM's message queues are `multiprocessing.shared_memory` segments (`psm_*`) unlinked only in
    `ShmRingBuffer.__del__` (vllm/distributed/device_communicators/shm_broadcast.py), so a killed
    engine leaves them behind; Ray's object store maps an already unlinked file, which is skipped.
    """
    found: set[str] = set()
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            paths = [m.path for m in proc.memory_maps(grouped=False)]
            paths += [f.path for f in proc.open_files()]
            found |= {p for p in paths if p.startswith(f"{SHM_DIR}/") and os.path.exists(p)}
    return found


def orphan_semaphores(since: float) -> set[str]:
    """Named multiprocessing semaphores created since `since` (epoch s) that no process maps.

    multiprocessing unlinks `sem.mp-*` at once only under fork (multiprocessing/synchronize.py,
    `unlink_now`); otherwise its resource tracker does at exit, which a killed tracker never does.
    One that no process maps cannot be opened again by anyone: it is garbage.
    """
    candidates = set()
    for path in SHM_DIR.glob("sem.mp-*"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime >= since - 1:
                candidates.add(str(path))
    if not candidates:
        return set()
    return candidates - mapped_shm_files(psutil.process_iter())


# =========================================================================== the run record
@dataclass
class RunRecord:
    """What a later cleanup needs to find a run again, kept as JSON in the runs directory."""

    run_id: str
    owner: ProcessId
    work_dir: str
    started_at: float  # epoch seconds, for orphaned semaphores
    runs_dir: str
    guard: ProcessId | None = None
    sessions: set[int] = field(default_factory=set)
    known: set[ProcessId] = field(default_factory=set)
    shm_files: set[str] = field(default_factory=set)

    @property
    def path(self) -> Path:
        return Path(self.runs_dir) / f"{self.run_id}.json"

    @property
    def guard_log(self) -> Path:
        return Path(self.runs_dir) / f"{self.run_id}.guard.log"

    @property
    def marker(self) -> tuple[str, str]:
        return RUN_MARKER_ENV, self.run_id

    def save(self) -> None:
        """Write atomically: a reader never sees half a record."""
        data = asdict(self)
        data.update(
            sessions=sorted(self.sessions),
            known=[asdict(p) for p in sorted(self.known)],
            shm_files=sorted(self.shm_files),
        )
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(self.path)

    @classmethod
    def load(cls, path: Path) -> RunRecord | None:
        try:
            data = json.loads(path.read_text())
            return cls(
                **{
                    **data,
                    "owner": ProcessId(**data["owner"]),
                    "guard": ProcessId(**data["guard"]) if data.get("guard") else None,
                    "sessions": set(data["sessions"]),
                    "known": {ProcessId(**p) for p in data["known"]},
                    "shm_files": set(data["shm_files"]),
                }
            )
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def is_abandoned(self) -> bool:
        """Neither the owner nor its guard is alive: nobody else will clean this run up."""
        return self.owner.process() is None and (self.guard is None or self.guard.process() is None)


def run_processes(record: RunRecord, confirmed: set[int] | None = None) -> list[psutil.Process]:
    """Every live process of the run (never the caller or the run's guard).

    A process belongs to the run if it carries the run marker, was seen before as the run's
    (pid and start time), or is in one of the run's sessions that such a process confirms. A
    session id is only trusted while confirmed: once a session is empty its number can be reused.
    `confirmed` carries confirmations across calls (processes die between them during a stop).
    """
    confirmed = confirmed if confirmed is not None else set()
    excluded = {os.getpid()} | ({record.guard.pid} if record.guard else set())
    own_session = os.getsid(0)
    evident: list[psutil.Process] = []
    by_session: dict[int, list[psutil.Process]] = {}
    for proc in psutil.process_iter():
        if proc.pid in excluded or not _running(proc):
            continue
        try:
            sid = os.getsid(proc.pid)
        except OSError:
            continue
        if _has_env(proc, *record.marker) or _known(record, proc):
            evident.append(proc)
            if sid != own_session:
                confirmed.add(sid)
        elif sid in record.sessions:
            by_session.setdefault(sid, []).append(proc)
    return evident + [p for sid in confirmed for p in by_session.get(sid, [])]


def _known(record: RunRecord, proc: psutil.Process) -> bool:
    try:
        return ProcessId.of(proc) in record.known
    except psutil.Error:
        return False


# =========================================================================== cleanup
def cleanup_run(
    record: RunRecord,
    *,
    note: Callable[[str], None] = lambda _msg: None,
    urgent: Callable[[], bool] = lambda: False,
    keep_work_dir: bool = False,
) -> None:
    """End every process of the run, remove its /dev/shm files, work dir and record. Idempotent.

    The one routine behind every way a run ends (the owner's stop, its guard, a later start):
    1. freeze the run's processes (SIGSTOP) and note them and their /dev/shm files in the record:
       frozen, none can create a file the note would miss (an engine starting up while the stop
       begins would otherwise leak its queues), and a cleaner that takes over finds them;
    2. SIGTERM all but the GCS and let them run again, then the GCS once they are gone (the
       order of Ray's own `ray stop`, ray/scripts/scripts.py `stop`: "GCS should exit after all
       other processes exit"); SIGKILL what is left after STOP_GRACE_S, at once if `urgent()`;
       repeat for processes started meanwhile;
    3. unlink the noted files and orphaned semaphores, remove the work dir, then the record.
    Serve gets no graceful shutdown: every process of its cluster ends here anyway.
    Raises LocalServiceError if processes survive SIGKILL (the record stays for a retry).
    """
    note = _never_raising(note)
    confirmed: set[int] = set()
    for attempt in range(3):
        procs = _freeze(record, confirmed)
        if not procs:
            break
        _note_processes(record, procs)
        if attempt == 0:
            note(f"ending {len(procs)} process(es) of the run")
        _terminate(procs, 0.0 if attempt else STOP_GRACE_S, urgent)
    survivors = sorted(p.pid for p in run_processes(record, confirmed))
    removed = _remove_files(record, keep_work_dir)
    if survivors:
        raise LocalServiceError(f"processes of run {record.run_id} survived SIGKILL: {survivors}")
    note(f"no process of run {record.run_id} left; {removed} /dev/shm file(s) removed")
    with contextlib.suppress(FileNotFoundError):
        record.guard_log.unlink()
    with contextlib.suppress(FileNotFoundError):
        record.path.unlink()


def _never_raising(note: Callable[[str], None]) -> Callable[[str], None]:
    """`note`, minus its failures: a progress line that cannot be written (the terminal or pipe
    went away with the parent) must not abort a cleanup halfway."""

    def safe(message: str) -> None:
        with contextlib.suppress(Exception):
            note(message)

    return safe


def _freeze(record: RunRecord, confirmed: set[int]) -> list[psutil.Process]:
    """SIGSTOP every process of the run, rescanning until no new one turns up (a stopped process
    starts no other), and return them all."""
    frozen: dict[psutil.Process, None] = {}
    for _ in range(FREEZE_ROUNDS):
        new = [p for p in run_processes(record, confirmed) if p not in frozen]
        if not new:
            break
        _signal_all(new, signal.SIGSTOP)
        frozen.update(dict.fromkeys(new))
    return list(frozen)


def _note_processes(record: RunRecord, procs: list[psutil.Process]) -> bool:
    """Add the processes and their /dev/shm files to the record; save it if anything is new."""
    known = set(record.known)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            known.add(ProcessId.of(proc))
    shm = record.shm_files | mapped_shm_files(procs)
    if known == record.known and shm == record.shm_files:
        return False
    record.known, record.shm_files = known, shm
    record.save()
    return True


def _terminate(procs: list[psutil.Process], grace_s: float, urgent: Callable[[], bool]) -> None:
    gcs = [p for p in procs if _name(p) == "gcs_server"]
    others = [p for p in procs if p not in gcs]
    _signal_all(others, signal.SIGTERM)
    _signal_all(procs, signal.SIGCONT)  # the GCS too: the others may talk to it while exiting
    _wait_gone(others, grace_s, urgent)
    _signal_all(gcs, signal.SIGTERM)
    _wait_gone(gcs, grace_s, urgent)
    alive = [p for p in procs if _running(p)]
    _signal_all(alive, signal.SIGKILL)
    _wait_gone(alive, KILL_WAIT_S)


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


def _signal_all(procs: Iterable[psutil.Process], sig: signal.Signals) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def _wait_gone(procs: list[psutil.Process], timeout: float, stop: Callable[[], bool] = lambda: False) -> None:
    # Not psutil.wait_procs: it waits for a non-child until its pid is gone, which a zombie's is
    # not until its parent reaps it, and it cannot be cut short by a second stop request.
    wait_until(
        lambda: True if not any(_running(p) for p in procs) else None,
        timeout=timeout,
        interval=0.1,
        stop=stop,
    )


def _remove_files(record: RunRecord, keep_work_dir: bool) -> int:
    removed = 0
    for path in sorted(record.shm_files | orphan_semaphores(record.started_at)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            removed += 1
    if not keep_work_dir:
        shutil.rmtree(record.work_dir, ignore_errors=True)
    return removed


def sweep_abandoned_runs(runs_dir: Path = RUNS_DIR, note: Callable[[str], None] = lambda _m: None) -> int:
    """Clean up every recorded run whose owner and guard are both dead; how many were found."""
    count = 0
    for path in sorted(runs_dir.glob("*.json")):
        record = RunRecord.load(path)
        if record is None or not record.is_abandoned():
            continue
        count += 1
        note(f"removing what run {record.run_id} (pid {record.owner.pid}) left behind")
        cleanup_run(record, note=note)
    return count


def start_guard(record: RunRecord) -> int:
    """Start the run's guard; returns the write end of its pipe, to keep open until the run is over.

    The guard's copy of the read end reaches EOF only when every write end is closed: this
    process's is not inheritable (PEP 446) and Popen closes other descriptors, so that happens
    exactly when this process closes it or dies.
    """
    read_end, write_end = os.pipe()
    env = {k: v for k, v in os.environ.items() if k != RUN_MARKER_ENV}
    try:
        with record.guard_log.open("ab") as log:
            guard = subprocess.Popen(
                [sys.executable, "-m", "serve.local_guard", record.runs_dir, record.run_id],
                stdin=read_end,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO_ROOT,  # `python -m serve.local_guard` without an installed package too
                start_new_session=True,
            )
    finally:
        os.close(read_end)
    record.guard = ProcessId.of(psutil.Process(guard.pid))
    record.save()
    if wait_until(lambda: _ignores_stop_signals(guard), timeout=GUARD_START_TIMEOUT_S, interval=0.02) is None:
        raise LocalServiceError(f"the run's guard did not start (see {record.guard_log})")
    return write_end


def _ignores_stop_signals(guard: subprocess.Popen[bytes]) -> bool | None:
    """True once the guard ignores the stop signals (its first act); None before.

    Read from the SigIgn mask in /proc/PID/status (proc(5)).
    """
    if guard.poll() is not None:
        raise LocalServiceError(f"the run's guard exited with code {guard.returncode}")
    try:
        status = Path(f"/proc/{guard.pid}/status").read_text()
    except OSError:
        return None
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
    wanted = sum(1 << (sig - 1) for sig in IGNORED_SIGNALS)
    return True if mask & wanted == wanted else None


# =========================================================================== the service
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


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


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


def _failure_summary(app: Mapping[str, Any]) -> dict[str, Any]:
    deployments = app.get("deployments") or {}
    return {
        "status": app.get("status"),
        "message": (app.get("message") or "")[-2000:],
        "deployments": {
            name: {"status": d.get("status"), "message": (d.get("message") or "")[-2000:]}
            for name, d in deployments.items()
            if d.get("status") != "HEALTHY"
        },
    }


class LocalService:
    """A private Ray head plus `serve run` of a localized Serve deploy document.

    Use as a context manager: `__enter__` returns once every phase up to READY has passed
    (Serve reports every application RUNNING, `/v1/models` lists every model and, with
    `wait_for_engines`, every model has answered a one-token chat request); `__exit__` stops.
    Pass a `StopRequest` that signal handlers feed to have a start interrupted (StopRequested)
    and a stop hurried.
    """

    def __init__(
        self,
        serve_config: Mapping[str, Any],
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        num_cpus: int | None = None,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        wait_for_engines: bool = True,
        echo_logs: bool = False,
        on_progress: ProgressCallback | None = None,
        stop_request: StopRequest | None = None,
        runs_dir: Path = RUNS_DIR,
        api_key: str | None = None,
        tolerate_failed_models: bool = False,
    ) -> None:
        self._adopt(serve_config)
        # Like the cluster: a model whose application fails is reported and left out, and the
        # endpoint serves the others (its requests get a 503). Off, any failure stops the start.
        self.tolerate_failed_models = tolerate_failed_models
        self.failed_models: dict[str, dict[str, Any]] = {}
        self.host, self.port = host, port
        self.num_cpus = num_cpus if num_cpus is not None else local_cpus_needed(serve_config)
        self.startup_timeout_s = startup_timeout_s
        self.wait_for_engines = wait_for_engines
        self.echo_logs = echo_logs
        self.runs_dir = runs_dir
        self.stop_request = stop_request or StopRequest()
        self.phase = Phase.STOPPED
        self._on_progress = on_progress or (lambda _p: None)
        self._serve_config = self._on_this_port(serve_config)
        self._auth_token = secrets.token_hex(32)
        # The key the OpenAI app requires (serve/openai_app.py); one is made up when none is given.
        self.api_key = api_key or new_api_key()
        self._http = httpx.Client(trust_env=False, timeout=10.0)
        self._record: RunRecord | None = None
        self._guard_pipe: int | None = None
        self._ports: _ClusterPorts | None = None
        self._ray_start: subprocess.Popen[bytes] | None = None
        self._serve_proc: subprocess.Popen[bytes] | None = None
        self._gcs: psutil.Process | None = None
        self._answered: dict[str, bool] = {}
        self._started_at = 0.0
        self._next_record = 0.0
        self._last_note = ""
        self._keep_work_dir = False
        self._hurried = False

    # ------------------------------------------------------------------ addresses
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def api_keys_dir(self) -> Path:
        return self.work_dir / "api-keys"

    @property
    def _keyed(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def gcs_address(self) -> str:
        assert self._ports is not None, "not started"
        return f"127.0.0.1:{self._ports.gcs}"

    @property
    def dashboard_url(self) -> str:
        assert self._ports is not None, "not started"
        return f"http://127.0.0.1:{self._ports.dashboard}"

    @property
    def metrics_url(self) -> str:
        """The head's Prometheus export (Ray's metrics agent on `--metrics-export-port`): every Ray
        Serve (`ray_serve_*`) and vLLM (`ray_vllm_*`) metric of this one-node cluster, the port
        KubeRay names `metrics` (8080) on a cluster's Ray pods."""
        assert self._ports is not None, "not started"
        return f"http://127.0.0.1:{self._ports.metrics_export}/metrics"

    @property
    def work_dir(self) -> Path:
        assert self._record is not None, "not started"
        return Path(self._record.work_dir)

    @property
    def log_path(self) -> Path:
        return self.work_dir / "serve-run.log"

    @property
    def run_id(self) -> str:
        assert self._record is not None, "not started"
        return self._record.run_id

    # ------------------------------------------------------------------ progress
    def _enter(self, phase: Phase, detail: str) -> None:
        self.phase = phase
        self._note(detail, force=True)

    def _note(self, detail: str, *, force: bool = False) -> None:
        if force or detail != self._last_note:
            self._last_note = detail
            elapsed = time.monotonic() - self._started_at if self._started_at else 0.0
            self._on_progress(Progress(self.phase, elapsed, detail))

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LocalService:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start Ray and Serve and wait for every readiness phase; on any failure, stop first."""
        if self._record is not None:
            raise RuntimeError("a LocalService starts once")
        if _port_in_use(self.host, self.port):
            raise LocalServiceError(f"{self.host}:{self.port} is already in use; choose another port")
        self._started_at = time.monotonic()
        self._enter(Phase.STARTING_RAY, "looking for leftovers of earlier runs")
        self.runs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        sweep_abandoned_runs(self.runs_dir, self._note)
        if self.stop_request.reason is not None:
            raise StopRequested(self.stop_request.reason)
        self._record = self._new_record()
        try:
            self._guard_pipe = start_guard(self._record)
            self._start_ray()
            self._start_serve()
            self._wait_ready()
        except LocalServiceError:
            self._keep_work_dir = True  # its logs explain the failure
            self.stop()
            raise
        except BaseException:
            self.stop()
            raise

    def _new_record(self) -> RunRecord:
        run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
        work_dir = Path(tempfile.mkdtemp(prefix="llm-serving-", dir="/tmp"))  # short: Ray's sockets
        (work_dir / "tmp").mkdir()
        keys = work_dir / "api-keys"
        keys.mkdir(mode=0o700)
        key_file = keys / "local"
        key_file.touch(mode=0o600)
        key_file.write_text(self.api_key + "\n")
        record = RunRecord(
            run_id=run_id,
            owner=ProcessId.of(psutil.Process()),
            work_dir=str(work_dir),
            started_at=time.time(),
            runs_dir=str(self.runs_dir),
        )
        record.save()
        return record

    def _env(self) -> dict[str, str]:
        assert self._record is not None
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        env.update(
            {
                RUN_MARKER_ENV: self._record.run_id,
                # Ray 2.60 turns token auth on for `ray start` when ~/.ray/auth_token exists but not
                # for clients that connect to it; a per-run token makes both sides agree and keeps
                # this cluster closed to other local processes.
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": self._auth_token,
                "RAY_USAGE_STATS_ENABLED": "0",
                # Nothing may be downloaded: the model is a local directory.
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
                # Serve imports the app builder (serve.openai_app) in Ray's worker processes.
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
                ),
                # vLLM's IPC sockets and rendezvous files and multiprocessing's temp dirs go here
                # and are removed with the work dir, even when a process had to be killed.
                "TMPDIR": str(self.work_dir / "tmp"),
                # Ray keeps up to num_cpus idle workers around; the model-download task's worker
                # has imported vLLM (~630 MiB RSS each). Without spares idle workers exit at once.
                "RAY_num_workers_soft_limit": "0",
                "RAY_prestart_worker_first_driver": "0",
            }
        )
        return env

    def _spawn(self, command: list[str], log: Path | None) -> subprocess.Popen[bytes]:
        """Start `command` in a new session of the run, noted in the record before anything else."""
        assert self._record is not None
        if log is None:
            proc = subprocess.Popen(command, env=self._env(), start_new_session=True)
        else:
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, env=self._env(), start_new_session=True
                )
        self._record.sessions.add(proc.pid)
        self._record.save()
        return proc

    def _start_ray(self) -> None:
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
        resources = custom_resources(self._serve_config)
        if resources:
            command += ["--resources", json.dumps(dict.fromkeys(sorted(resources), CUSTOM_RESOURCE_UNITS))]
        self._note(f"a private Ray head ({self.num_cpus} logical CPUs) at {self.gcs_address}")
        self._ray_start = self._spawn(command, self.work_dir / "ray-start.log")
        if self._wait_for(self._ray_started, RAY_START_TIMEOUT_S) is None:
            raise LocalServiceError(f"`ray start` did not finish in {RAY_START_TIMEOUT_S:.0f} s")

    def _start_serve(self) -> None:
        assert self._record is not None
        config_path = self.work_dir / "serve-config.yaml"
        config = with_api_keys_dir(self._serve_config, self.api_keys_dir)
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        serve_cli = [sys.executable, "-m", "ray.serve.scripts"]
        command = [*serve_cli, "run", "--address", self.gcs_address, str(config_path)]
        self._serve_proc = self._spawn(command, None if self.echo_logs else self.log_path)

    def _adopt(self, serve_config: Mapping[str, Any]) -> None:
        """Take the document's models as the ones this service serves; ValueError when it serves
        none or one not localized for the CPU."""
        model_ids = served_model_ids(serve_config)
        if not model_ids:
            raise ValueError(f"the serve config has no {MODEL_APP_IMPORT_PATH} application")
        not_cpu = models_not_on_cpu(serve_config)
        if not_cpu:
            raise ValueError(
                f"models {', '.join(not_cpu)} are not configured for CPU; pass the config through "
                "serve.localize.localize_serve_config() first"
            )
        self.model_ids: list[str] = model_ids
        self._tasks = document_tasks(serve_config)
        self._model_apps = {
            app["args"][LLM_CONFIG_ARG]["model_loading_config"]["model_id"]: app["name"]
            for app in model_applications(serve_config)
        }

    def _on_this_port(self, serve_config: Mapping[str, Any]) -> dict[str, Any]:
        document = copy.deepcopy(dict(serve_config))
        document["http_options"] = {
            **dict(document.get("http_options") or {}),
            "host": self.host,
            "port": self.port,
        }
        return document

    def redeploy(self, serve_config: Mapping[str, Any], timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S) -> None:
        """Submit a changed (localized) deploy document to the running Serve the way KubeRay
        submits a changed serveConfigV2, the whole document PUT to the dashboard's Serve REST API,
        and return once Serve has applied it: exactly its applications, each RUNNING with the
        submitted args, every deployment HEALTHY with its target number of replicas, all running
        (a rolling restart has finished)."""
        self._adopt(serve_config)
        document = self._on_this_port(serve_config)
        submitted = with_api_keys_dir(document, self.api_keys_dir)
        response = self._http.put(
            f"{self.dashboard_url}/api/serve/applications/",
            json=submitted,
            headers={"Authorization": f"Bearer {self._auth_token}"},
            timeout=30.0,
        )
        if response.status_code >= 400:
            raise LocalServiceError(f"Serve refused the document ({response.status_code}): {response.text}")
        self._serve_config = document
        if self._wait_for(lambda: self._applied(submitted), timeout_s) is None:
            raise self._failure(f"Serve did not apply the new document within {timeout_s:.0f} s")

    def _applied(self, submitted: Mapping[str, Any]) -> str | None:
        apps = self._app_statuses()
        if apps is None:
            return None
        wanted = {app["name"]: app for app in submitted["applications"]}
        if set(apps) != set(wanted):
            return None
        for name, app in apps.items():
            if app.get("status") in FAILED_APP_STATUSES:
                raise self._failure(f"Serve could not deploy {name}: " + json.dumps(_failure_summary(app)))
            deployed = app.get("deployed_app_config") or {}
            if app.get("status") != "RUNNING" or deployed.get("args") != wanted[name].get("args"):
                return None
            for deployment in (app.get("deployments") or {}).values():
                replicas = deployment.get("replicas") or []
                if (
                    deployment.get("status") != "HEALTHY"
                    or len(replicas) != deployment.get("target_num_replicas")
                    or any(replica.get("state") != "RUNNING" for replica in replicas)
                ):
                    return None
        return f"applied: {', '.join(sorted(apps))}"

    def replicas(self) -> dict[str, list[dict[str, Any]]]:
        """Each deployment's replicas as Serve reports them (replica_id, pid, state, ...), by
        `<application>/<deployment>`."""
        return {key: list(details.get("replicas") or []) for key, details in self._deployments().items()}

    def deployment_configs(self) -> dict[str, dict[str, Any]]:
        """Each deployment's options as Serve applies them (autoscaling, max_ongoing_requests, ...),
        by `<application>/<deployment>`."""
        return {
            key: dict(details.get("deployment_config") or {}) for key, details in self._deployments().items()
        }

    def _deployments(self) -> dict[str, Mapping[str, Any]]:
        """Serve's details of every deployment, by `<application>/<deployment>`."""
        return {
            f"{name}/{deployment_name}": deployment
            for name, app in (self._app_statuses() or {}).items()
            for deployment_name, deployment in (app.get("deployments") or {}).items()
        }

    # ------------------------------------------------------------------ readiness
    def _wait_ready(self) -> None:
        steps: list[tuple[Phase, str, Callable[[], str | None]]] = [
            (Phase.DEPLOYING, f"serve run (models: {', '.join(self.model_ids)})", self._deployed),
            (Phase.LISTING_MODELS, "waiting for /v1/models to list every model", self._listed),
        ]
        if self.wait_for_engines:
            steps.append(
                (Phase.WARMING_ENGINES, f"{len(self.model_ids)} engine(s) loading in parallel", self._warmed)
            )
        for phase, detail, step in steps:
            self._enter(phase, detail)
            remaining = self.startup_timeout_s - (time.monotonic() - self._started_at)
            if self._wait_for(step, remaining) is None:
                raise self._failure(
                    f"the local service was not ready within {self.startup_timeout_s:.0f} s "
                    f"(still {phase.value})"
                )
        self._enter(Phase.READY, "every model answers" if self.wait_for_engines else "models listed")

    def _wait_for(self, step: Callable[[], str | None], timeout: float) -> str | None:
        """Wait for one readiness step, checking liveness and stop requests while waiting."""

        def condition() -> str | None:
            if self.stop_request.reason is not None:
                raise StopRequested(self.stop_request.reason)
            if self.phase is not Phase.STARTING_RAY:
                self.check_alive()
            self._refresh_record()
            return step()

        def stopping() -> bool:
            return self.stop_request.reason is not None

        done = wait_until(condition, timeout=max(0.0, timeout), interval=CHECK_EVERY_S, stop=stopping)
        if done is None and stopping():
            raise StopRequested(self.stop_request.reason)
        if done is not None:
            self._note(done)
        return done

    def _ray_started(self) -> str | None:
        assert self._ray_start is not None and self._record is not None
        code = self._ray_start.poll()
        if code is None:
            return None
        if code != 0:
            log = self.work_dir / "ray-start.log"
            raise LocalServiceError(f"`ray start` failed (exit {code}):\n{_tail(log)}")
        gcs = [p for p in run_processes(self._record) if _name(p) == "gcs_server"]
        if not gcs:
            raise LocalServiceError("`ray start` succeeded but no GCS process of this run is running")
        self._gcs = gcs[0]
        return f"Ray is up (dashboard {self.dashboard_url})"

    def _deployed(self) -> str | None:
        apps = self._app_statuses()
        if apps is None:
            self._note("waiting for Serve to accept the config")
            return None
        failed = {n: a for n, a in apps.items() if a.get("status") in FAILED_APP_STATUSES}
        tolerated = {m: a for m, a in self._model_apps.items() if a in failed and self.tolerate_failed_models}
        if set(failed) - set(tolerated.values()):
            failures = {n: _failure_summary(a) for n, a in failed.items()}
            raise self._failure("Serve could not deploy: " + json.dumps(failures, indent=2))
        for model, app in tolerated.items():
            if model not in self.failed_models:
                self.failed_models[model] = _failure_summary(failed[app])
                status = self.failed_models[model]["status"]
                self._note(f"model {model}: application {app} is {status}; serving the others")
        names = sorted(app["name"] for app in self._serve_config["applications"])
        states = {name: apps.get(name, {}).get("status", "NOT_STARTED") for name in names}
        summary = ", ".join(f"{n}={s}" for n, s in states.items())
        if all(s == "RUNNING" or n in tolerated.values() for n, s in states.items()):
            return f"applications {summary}"
        self._note(f"applications {summary}")
        return None

    @property
    def serving_model_ids(self) -> list[str]:
        """The models the service answers for: all, less those whose application failed."""
        return [m for m in self.model_ids if m not in self.failed_models]

    def _listed(self) -> str | None:
        if set(self.model_ids) <= self._listed_models():
            return f"/v1/models lists {', '.join(self.model_ids)}"
        return None

    def _warmed(self) -> str | None:
        if not self._answered:
            self._answered = dict.fromkeys(self.serving_model_ids, False)
            for model in self._answered:
                threading.Thread(target=self._probe, args=(model,), daemon=True).start()
        done = [m for m, ok in self._answered.items() if ok]
        if len(done) == len(self._answered):
            return "every engine answers"
        if done:
            self._note(f"answering: {', '.join(done)}")
        return None

    def _get_json(self, url: str, headers: Mapping[str, str] | None = None) -> Any:
        """The JSON body of a 200 answer, or None if the server is not (yet) answering."""
        try:
            response = self._http.get(url, headers=headers)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    def application_statuses(self) -> dict[str, str]:
        """Each Serve application's status (RUNNING, DEPLOYING, DEPLOY_FAILED, UNHEALTHY, ...)."""
        return {name: str(app.get("status")) for name, app in (self._app_statuses() or {}).items()}

    def _app_statuses(self) -> dict[str, Any] | None:
        """Serve's view of the applications (the dashboard's REST API), or None if not up yet."""
        body = self._get_json(
            f"{self.dashboard_url}/api/serve/applications/",
            headers={"Authorization": f"Bearer {self._auth_token}"},
        )
        apps = body.get("applications") if isinstance(body, dict) else None
        return apps if isinstance(apps, dict) else None

    def _listed_models(self) -> set[str]:
        body = self._get_json(f"{self.openai_base_url}/models", headers=self._keyed)
        data = body.get("data", []) if isinstance(body, dict) else []
        return {str(m.get("id")) for m in data if isinstance(m, dict)}

    def _probe(self, model: str) -> None:
        """Send the smallest request of the model's task (a one-token chat, a one-word embedding,
        one scored pair) until one succeeds, scaling it up from zero.

        Runs in its own thread with its own client: stop() closes the main one.
        """
        path, request = warmup_request(model, self._tasks.get(model, "generate"))
        deadline = self._started_at + self.startup_timeout_s
        with httpx.Client(trust_env=False) as client:
            while self.phase is Phase.WARMING_ENGINES and time.monotonic() < deadline:
                timeout = max(5.0, min(deadline - time.monotonic(), 120.0))
                try:
                    url = f"{self.openai_base_url}{path}"
                    response = client.post(url, headers=self._keyed, timeout=timeout, **request)
                    if response.status_code == 200:
                        self._answered[model] = True
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(CHECK_EVERY_S)

    @property
    def model_tasks(self) -> dict[str, str]:
        """Each served model's task (generate, embed, rerank, transcribe)."""
        return dict(self._tasks)

    # ------------------------------------------------------------------ while running
    def check_alive(self) -> None:
        """Raise LocalServiceError if `serve run` or the Ray cluster's GCS has exited."""
        assert self._serve_proc is not None, "not started"
        code = self._serve_proc.poll()
        if code is not None:
            raise self._failure(f"`serve run` exited with code {code}")
        if self._gcs is not None and not _running(self._gcs):
            raise self._failure("the local Ray cluster's GCS is gone")

    def serve_until_stopped(self) -> str:
        """Block while serving; return the reason once a stop is requested (LocalServiceError if
        the service dies)."""

        def condition() -> None:
            self.check_alive()
            self._refresh_record()

        wait_until(
            condition,
            timeout=math.inf,
            interval=CHECK_EVERY_S,
            stop=lambda: self.stop_request.reason is not None,
        )
        return self.stop_request.reason or "stop requested"

    def _refresh_record(self) -> None:
        """Note new processes and /dev/shm files in the record, at RECORD_EVERY_S."""
        if self._record is None or time.monotonic() < self._next_record:
            return
        self._next_record = time.monotonic() + RECORD_EVERY_S
        _note_processes(self._record, run_processes(self._record))

    def _failure(self, message: str) -> LocalServiceError:
        details = "" if self.echo_logs else f"\n--- last lines of {self.log_path} ---\n{_tail(self.log_path)}"
        return LocalServiceError(message + details)

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """End Serve, every process of the run and its files (see cleanup_run); idempotent.

        The guard's pipe is closed only afterwards: if this process dies meanwhile, or the
        cleanup fails, the guard (which then finds the record still there) does it again.
        """
        if self._record is None or self.phase is Phase.STOPPED:
            return
        reason = self.stop_request.reason or "done"
        self._enter(Phase.STOPPING, f"run {self._record.run_id} ({reason})")
        try:
            cleanup_run(self._record, note=self._note, urgent=self._urgent, keep_work_dir=self._keep_work_dir)
            for proc in (self._serve_proc, self._ray_start):
                if proc is not None:
                    proc.poll()  # reap: cleanup ended them
        finally:
            if self._guard_pipe is not None:
                os.close(self._guard_pipe)
                self._guard_pipe = None
            self._http.close()
        self._enter(Phase.STOPPED, "nothing of the run is left")

    def _urgent(self) -> bool:
        if not self.stop_request.urgent:
            return False
        if not self._hurried:
            self._hurried = True
            self._note(f"asked again ({self.stop_request.reasons[-1]}): no more grace periods")
        return True
