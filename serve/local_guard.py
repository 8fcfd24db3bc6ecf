"""The guard of one local run: cleans the run up when its owner dies, however it dies.

Started by `serve.supervisor.start_guard` in a session of its own, with the read end of a pipe
as stdin whose only writer is the run's owner. It ignores SIGINT, SIGTERM and SIGHUP (a Ctrl-C
or a `kill` aimed at the owner's group must not take it along), blocks until the pipe reports
EOF, which happens when the owner closes it after its own cleanup or dies (the kernel closes the
descriptors of a killed process, SIGKILL included), and then runs the same cleanup routine as the
owner's stop if the run's record is still there.

    python -m serve.local_guard RUNS_DIR RUN_ID      (stdin: the pipe)
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

IGNORED_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} guard {os.getpid()}: {message}", flush=True)


def _wait_for_eof(fd: int) -> None:
    while os.read(fd, 4096):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    for sig in IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    # Imported only now: importing the supervisor (httpx, psutil, yaml) takes a good part of a
    # second, during which a signal would still kill this process.
    from serve.supervisor import RunRecord, cleanup_run

    runs_dir, run_id = argv if argv is not None else sys.argv[1:]
    _wait_for_eof(sys.stdin.fileno())
    record = RunRecord.load(Path(runs_dir) / f"{run_id}.json")
    if record is None:
        return 0  # the owner cleaned up and removed the record
    _log(f"the owner of run {run_id} (pid {record.owner.pid}) is gone; cleaning up")
    cleanup_run(record, note=_log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
