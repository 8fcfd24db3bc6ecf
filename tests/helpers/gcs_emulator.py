"""A GCS emulator on localhost for the tests: gcp-storage-emulator (PyPI), as a child process.

A child process rather than a thread of the test: some of pyarrow's GCS calls hold the GIL while
they wait for the server (Ray's `download_model` hung forever against an in-process emulator). The
child asks the kernel to kill it when its parent dies (PR_SET_PDEATHSIG), so a killed test run
leaves nothing behind, and is stopped on exit otherwise.

Ray's gs:// path (pyarrow's GcsFileSystem, google-cloud-cpp) reaches it through
`CLOUD_STORAGE_EMULATOR_ENDPOINT`, the variable google-cloud-cpp reads; with a service-account
key file of a locally made key it signs its own tokens and never calls Google, so the model
sources stay the production `gs://bucket/...` URIs.
"""

from __future__ import annotations

import ctypes
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from helpers.local_run import free_port

EMULATOR_ENV = "CLOUD_STORAGE_EMULATOR_ENDPOINT"
_PR_SET_PDEATHSIG = 1
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class GcsEmulator:
    host: str
    port: int
    pid: int

    @property
    def endpoint(self) -> str:
        """`host:port`, as pyarrow's `endpoint_override` takes it."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def filesystem(self) -> Any:
        from pyarrow.fs import GcsFileSystem

        return GcsFileSystem(anonymous=True, scheme="http", endpoint_override=self.endpoint)


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@contextmanager
def running_emulator(bucket: str) -> Iterator[GcsEmulator]:
    """An empty, in-memory emulator holding `bucket`, stopped on exit."""
    port = free_port()
    command = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--in-memory", "--default-bucket", bucket, "-q"]
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1.0, trust_env=False)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the GCS emulator did not start on port {port}") from None
                time.sleep(0.1)
        yield GcsEmulator("127.0.0.1", port, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fake_service_account_key(directory: Path) -> Path:
    """A service-account key file with a freshly made RSA key: google-cloud-cpp signs its own JWTs
    with it (no call to Google), which the emulator accepts without checking."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = directory / "fake-service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "llm-serving-test",
                "private_key_id": "0",
                "private_key": pem,
                "client_email": "mirror@llm-serving-test.iam.gserviceaccount.com",
                "client_id": "0",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    return path
