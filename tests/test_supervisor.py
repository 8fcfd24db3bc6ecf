"""The supervisor's parts, without Ray: finding a run's processes, cleanup, the guard, the sweep
of abandoned runs, stop requests, the wait helper and the readiness phases.

A "run" here is a few small Python processes started the way the supervisor starts Ray: in new
sessions, with the run marker in their environment, one of them mapping a /dev/shm file, one
with a child whose environment lacks the marker (as Ray's agents look after setproctitle), one
deaf to SIGTERM. Bystanders (no marker, or another run's marker) must survive every cleanup.
The real server, stopped in every way, is tests/test_e2e_local.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from infra.plan import build_plan_for_stack
from serve import supervisor
from serve.localize import localize_serve_config
from serve.paths import REPO_ROOT
from serve.supervisor import (
    RUN_MARKER_ENV,
    LocalService,
    LocalServiceError,
    Phase,
    ProcessId,
    Progress,
    RunRecord,
    StopRequest,
    StopRequested,
    cleanup_run,
    run_processes,
    sweep_abandoned_runs,
    wait_until,
)

# argv: SHM_PATH|-  MODE (plain | parent | stubborn)
FAKE_PROCESS = textwrap.dedent(
    """
    import mmap, os, signal, subprocess, sys, time
    shm, mode = sys.argv[1], sys.argv[2]
    if shm != "-":
        fd = os.open(shm, os.O_CREAT | os.O_RDWR, 0o600)
        os.ftruncate(fd, 4096)
        mapped = mmap.mmap(fd, 4096)
        os.close(fd)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "parent":
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env={})
    print("ready", flush=True)
    time.sleep(600)
    """
)

# argv: RUNS_DIR RUN_ID WORK_DIR MODE (die | clean). Owns a run with a guard and one process.
FAKE_OWNER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    import psutil
    from serve.supervisor import RUN_MARKER_ENV, ProcessId, RunRecord, cleanup_run, start_guard
    runs_dir, run_id, work_dir, mode = sys.argv[1:]
    record = RunRecord(run_id=run_id, owner=ProcessId.of(psutil.Process()), work_dir=work_dir,
                       started_at=time.time(), runs_dir=runs_dir)
    record.save()
    start_guard(record)
    env = {**os.environ, RUN_MARKER_ENV: run_id}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=env,
                             start_new_session=True)
    record.sessions.add(child.pid)
    record.save()
    print(child.pid, record.guard.pid, flush=True)
    if mode == "clean":
        cleanup_run(record)
        sys.exit(0)
    time.sleep(600)
    """
)


@dataclass
class FakeRun:
    record: RunRecord
    leaders: list[subprocess.Popen[str]] = field(default_factory=list)

    def processes(self) -> list[psutil.Process]:
        return run_processes(self.record)


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[str]]]:
    """Every process a test starts; killed with the sessions they lead, and reaped, afterwards."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        _kill_session(proc.pid)
        proc.kill()
        proc.wait()


@pytest.fixture
def strays() -> Iterator[list[ProcessId]]:
    """Processes a test's processes start (the guard, an owner's child); killed afterwards."""
    found: list[ProcessId] = []
    yield found
    for pid in found:
        proc = pid.process()
        if proc is not None:
            proc.kill()


@pytest.fixture
def shm_paths() -> Iterator[list[Path]]:
    paths: list[Path] = []
    yield paths
    for path in paths:
        path.unlink(missing_ok=True)


def _kill_session(sid: int) -> None:
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                proc.kill()
        except (OSError, psutil.Error):
            continue


def _start(
    spawned: list[subprocess.Popen[str]], mode: str, shm: Path | None = None, run_id: str | None = None
) -> subprocess.Popen[str]:
    env = dict(os.environ)
    if run_id is not None:
        env[RUN_MARKER_ENV] = run_id
    proc = subprocess.Popen(
        [sys.executable, "-c", FAKE_PROCESS, str(shm) if shm else "-", mode],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    spawned.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _new_record(tmp_path: Path, owner: ProcessId | None = None) -> RunRecord:
    work_dir = tmp_path / f"work-{uuid.uuid4().hex[:8]}"
    work_dir.mkdir()
    (work_dir / "log").write_text("a log")
    record = RunRecord(
        run_id=uuid.uuid4().hex,
        owner=owner or ProcessId.of(psutil.Process()),
        work_dir=str(work_dir),
        started_at=time.time(),
        runs_dir=str(tmp_path),
    )
    record.save()
    return record


def _shm(shm_paths: list[Path]) -> Path:
    path = supervisor.SHM_DIR / f"llm-serving-test-{uuid.uuid4().hex[:8]}"
    shm_paths.append(path)
    return path


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture
def fake_run(
    tmp_path: Path,
    spawned: list[subprocess.Popen[str]],
    shm_paths: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> FakeRun:
    monkeypatch.setattr(supervisor, "STOP_GRACE_S", 1.0)  # the stubborn process waits it out
    record = _new_record(tmp_path)
    run = FakeRun(record)
    run.leaders.append(_start(spawned, "parent", _shm(shm_paths), record.run_id))
    run.leaders.append(_start(spawned, "stubborn", None, record.run_id))
    record.sessions |= {p.pid for p in run.leaders}
    record.save()
    return run


def test_a_run_is_found_by_marker_and_by_the_sessions_it_confirms(
    fake_run: FakeRun, spawned: list[subprocess.Popen[str]]
) -> None:
    other_run = _start(spawned, "plain", None, run_id=uuid.uuid4().hex)
    unmarked = _start(spawned, "plain")
    found = {p.pid for p in fake_run.processes()}
    leader = fake_run.leaders[0].pid
    unmarked_child = [c.pid for c in psutil.Process(leader).children()]
    assert len(unmarked_child) == 1 and not _has_marker(unmarked_child[0])
    assert found == {leader, fake_run.leaders[1].pid, *unmarked_child}
    assert other_run.pid not in found and unmarked.pid not in found


def _has_marker(pid: int) -> bool:
    return RUN_MARKER_ENV in psutil.Process(pid).environ()


def test_cleanup_ends_the_run_removes_its_files_and_spares_everything_else(
    fake_run: FakeRun, spawned: list[subprocess.Popen[str]], shm_paths: list[Path]
) -> None:
    bystander_shm = _shm(shm_paths)
    bystanders = [_start(spawned, "plain", bystander_shm), _start(spawned, "plain", None, uuid.uuid4().hex)]
    run_pids = {p.pid for p in fake_run.processes()}
    run_shm = shm_paths[0]
    orphan = supervisor.SHM_DIR / f"sem.mp-test{uuid.uuid4().hex[:6]}"
    shm_paths.append(orphan)
    orphan.write_bytes(b"\0" * 32)  # a leaked multiprocessing semaphore nobody maps
    notes: list[str] = []

    cleanup_run(fake_run.record, note=notes.append)

    assert not [pid for pid in run_pids if _alive(pid)]
    assert not run_shm.exists() and not orphan.exists()
    assert not Path(fake_run.record.work_dir).exists() and not fake_run.record.path.exists()
    assert all(_alive(p.pid) for p in bystanders) and bystander_shm.exists()
    assert any("no process of run" in n for n in notes), notes


def test_a_recorded_session_without_evidence_is_not_trusted(
    tmp_path: Path, spawned: list[subprocess.Popen[str]]
) -> None:
    # A session id outlives nothing: once empty it can be reused, here by a bystander.
    bystander = _start(spawned, "plain")
    record = _new_record(tmp_path)
    record.sessions.add(bystander.pid)
    cleanup_run(record)
    assert _alive(bystander.pid)


def test_cleanup_is_idempotent(fake_run: FakeRun) -> None:
    cleanup_run(fake_run.record)
    cleanup_run(fake_run.record)
    assert fake_run.processes() == []


def _start_owner(
    tmp_path: Path, mode: str, spawned: list[subprocess.Popen[str]], strays: list[ProcessId]
) -> tuple[RunRecord, int, int]:
    run_id, work_dir = uuid.uuid4().hex, tmp_path / "work"
    work_dir.mkdir()
    owner = subprocess.Popen(
        [sys.executable, "-c", FAKE_OWNER, str(tmp_path), run_id, str(work_dir), mode],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    spawned.append(owner)
    assert owner.stdout is not None
    child, guard = map(int, owner.stdout.readline().split())
    strays.extend(ProcessId.of(psutil.Process(pid)) for pid in (child, guard))
    record = RunRecord.load(tmp_path / f"{run_id}.json")
    assert record is not None
    return record, child, guard


def test_the_guard_cleans_up_when_its_owner_is_killed(
    tmp_path: Path, spawned: list[subprocess.Popen[str]], strays: list[ProcessId]
) -> None:
    record, child, guard = _start_owner(tmp_path, "die", spawned, strays)
    assert os.getsid(guard) == guard, "the guard runs in a session of its own"
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        os.kill(guard, sig)
    time.sleep(0.5)
    assert _alive(guard), "the guard ignores SIGINT, SIGTERM and SIGHUP"
    assert _alive(child)

    spawned[-1].kill()  # the owner, SIGKILL
    spawned[-1].wait()

    assert wait_until(lambda: True if not _alive(guard) else None, timeout=30, interval=0.2)
    assert not _alive(child)
    assert not record.path.exists() and not Path(record.work_dir).exists()
    assert not record.guard_log.exists()


def test_the_guard_leaves_quietly_after_its_owner_cleaned_up(
    tmp_path: Path, spawned: list[subprocess.Popen[str]], strays: list[ProcessId]
) -> None:
    record, child, guard = _start_owner(tmp_path, "clean", spawned, strays)
    assert spawned[-1].wait(timeout=30) == 0
    assert wait_until(lambda: True if not _alive(guard) else None, timeout=10, interval=0.2)
    assert not _alive(child) and not record.path.exists()


def test_a_start_sweeps_abandoned_runs_and_leaves_live_ones_alone(
    tmp_path: Path, spawned: list[subprocess.Popen[str]]
) -> None:
    dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner.wait()
    abandoned = _new_record(tmp_path, owner=ProcessId(dead_owner.pid, 0.0))
    abandoned_proc = _start(spawned, "plain", None, abandoned.run_id)
    live = _new_record(tmp_path)  # owned by this test process, which is alive
    live_proc = _start(spawned, "plain", None, live.run_id)

    assert sweep_abandoned_runs(tmp_path) == 1

    assert not _alive(abandoned_proc.pid) and not abandoned.path.exists()
    assert _alive(live_proc.pid) and live.path.exists()
    assert RunRecord.load(live.path) == live


def test_stop_requests_count_and_notice_the_parent_exiting(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = StopRequest()
    assert plain.reason is None and not plain.urgent
    plain.request("SIGTERM")
    assert plain.reason == "SIGTERM" and not plain.urgent
    plain.request("SIGINT")
    assert plain.urgent and plain.reason == "SIGTERM"

    watching = StopRequest(watch_parent=True)
    assert watching.reason is None
    parent = os.getppid()
    # Re-parented: the parent exited (to init, or to a subreaper; not the pid it was, which is 1
    # itself when this test runs in a job whose shell has exited).
    monkeypatch.setattr(os, "getppid", lambda: parent + 1)
    assert watching.reason is not None and "exited" in watching.reason
    assert not watching.urgent, "the parent exiting counts once"


def test_wait_until_returns_the_value_or_none_at_timeout_or_stop() -> None:
    calls = iter([None, None, "done"])
    assert wait_until(lambda: next(calls), timeout=5, interval=0.01) == "done"
    started = time.monotonic()
    assert wait_until(lambda: None, timeout=0.3, interval=0.05) is None
    assert 0.3 <= time.monotonic() - started < 2
    started = time.monotonic()
    assert wait_until(lambda: None, timeout=60, interval=30, stop=lambda: True) is None
    assert time.monotonic() - started < 1, "a stop is noticed without waiting for the interval"


# ----------------------------------------------------------------- readiness phases, no Ray
@pytest.fixture
def stubbed_service(monkeypatch: pytest.MonkeyPatch) -> tuple[LocalService, list[Progress]]:
    """A LocalService whose readiness steps answer from a script instead of a Ray cluster."""
    monkeypatch.setattr(supervisor, "CHECK_EVERY_S", 0.01)
    config = localize_serve_config(
        build_plan_for_stack("dev", REPO_ROOT).serve_config,
        Path("/models/tiny"),
        reranker_dir=Path("/models/tiny-reranker"),
    )
    progress: list[Progress] = []
    service = LocalService(config, on_progress=progress.append, startup_timeout_s=5)
    service._started_at = time.monotonic()
    monkeypatch.setattr(service, "check_alive", lambda: None)
    answers: dict[str, list[str | None]] = {
        "_deployed": [None, "deployed"],
        "_listed": [None, None, "listed"],
        "_warmed": ["warm"],
    }
    for name, script in answers.items():
        steps = iter(script)
        monkeypatch.setattr(service, name, lambda steps=steps: next(steps, None))
    return service, progress


def test_readiness_walks_the_phases_in_order(stubbed_service: tuple[LocalService, list[Progress]]) -> None:
    service, progress = stubbed_service
    service._wait_ready()
    phases = list(dict.fromkeys(p.phase for p in progress))
    assert phases == [Phase.DEPLOYING, Phase.LISTING_MODELS, Phase.WARMING_ENGINES, Phase.READY]
    assert [p.detail for p in progress if p.detail in ("deployed", "listed", "warm")] == [
        "deployed",
        "listed",
        "warm",
    ]


def test_a_stop_request_interrupts_readiness(
    stubbed_service: tuple[LocalService, list[Progress]], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, _progress = stubbed_service
    monkeypatch.setattr(service, "_listed", lambda: None)
    service.stop_request.request("SIGINT")
    with pytest.raises(StopRequested, match="SIGINT"):
        service._wait_ready()


def test_a_phase_that_never_completes_fails_with_its_name(
    stubbed_service: tuple[LocalService, list[Progress]], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, _progress = stubbed_service
    service.startup_timeout_s = 0.3
    monkeypatch.setattr(service, "_listed", lambda: None)
    monkeypatch.setattr(service, "_failure", lambda message: LocalServiceError(message))
    with pytest.raises(LocalServiceError, match="still listing models"):
        service._wait_ready()


def test_a_config_that_was_not_localized_is_refused() -> None:
    with pytest.raises(ValueError, match="not configured for CPU"):
        LocalService(build_plan_for_stack("dev", REPO_ROOT).serve_config)
