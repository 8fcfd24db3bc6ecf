"""Small pieces the tests that run the real local server share: a free port to serve on, and the
figures a run measured, kept in build/ for the README to record."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def record_figures(path: Path, figures: dict[str, Any]) -> None:
    """Merge `figures` into the JSON file at `path` (created with its folder) and print them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    recorded = json.loads(path.read_text()) if path.exists() else {}
    recorded.update(figures)
    path.write_text(json.dumps(recorded, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
