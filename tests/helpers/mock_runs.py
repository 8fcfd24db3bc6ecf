"""The real Pulumi program under the mock engine, run once per stack for the whole session.

`shipped_run(stack)` is cached: the `program_runs` fixture and every test share one run per
stack. Treat a run as read-only; deep-copy inputs before changing them.
"""

from __future__ import annotations

import functools

from infra import resource_types
from infra.report.mock_engine import ProgramRun, RegisteredResource, run_program


@functools.cache
def shipped_run(stack: str) -> ProgramRun:
    """The program for `stack` over the repository's own catalog and stack file, with the test token."""
    return run_program(stack)


def serve_services(run: ProgramRun) -> list[RegisteredResource]:
    """The Services a run registers other than the KServe-style ExternalName aliases: the serve
    Service, which the program creates for KubeRay to adopt (infra/plan/endpoint.py)."""
    return [
        r
        for r in run.of_type(resource_types.SERVICE)
        if (r.inputs.get("spec") or {}).get("type") != "ExternalName"
    ]
