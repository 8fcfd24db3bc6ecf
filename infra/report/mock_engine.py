"""Run the real Pulumi program under Pulumi's own mock engine and record what it registers.

The offline report (`python -m infra.report`) and the tests use it: the program is the one
`pulumi up` runs; only the engine's resource monitor is replaced (`pulumi.runtime.set_mocks`
with a `MockMonitor`), so every resource's inputs, parent, provider, dependencies and secret
markers are seen exactly as the engine would receive them.

Pulumi's public mock API hands `Mocks.new_resource` the inputs with secrets still wrapped;
unwrapping them here records where each secret was (`RegisteredResource.secret_paths`), so a
report can redact exactly those values. The monitor subclass only adds what `MockResourceArgs`
leaves out: the URN, parent, dependencies and resource options of each registration.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pulumi
from pulumi.runtime import mocks, rpc

from configcheck.problems import Path_
from configcheck.yaml_lines import load_file
from infra import resource_types
from infra.settings import GCP_PROJECT_KEY, HF_TOKEN_KEY, PROJECT, stack_file
from serve.paths import REPO_ROOT

# What a run uses where the real stack has a secret or a project the engine would supply.
# Not a real token: the report redacts it like the real one and refuses to write it.
TEST_HF_TOKEN: Final = "hf_TestTokenNotARealOne0123456789abcdef"
TEST_GCP_PROJECT: Final = "llm-serving-test"


@dataclass
class RegisteredResource:
    type_: str
    name: str
    urn: str
    parent: str
    provider: str
    dependencies: list[str]
    # Inputs as the provider would see them: camelCase keys, secrets unwrapped.
    inputs: dict[str, Any]
    # Where in `inputs` the program passed a secret (("stringData", "token"), ...).
    secret_paths: frozenset[Path_]
    # What the mock engine answered: the id and the state the program reads back.
    resource_id: str
    outputs: dict[str, Any]
    custom: bool
    protect: bool
    retain_on_delete: bool
    deleted_with: str
    ignore_changes: list[str]


@dataclass
class ProgramRun:
    stack: str
    resources: list[RegisteredResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)

    def of_type(self, type_: str) -> list[RegisteredResource]:
        return [r for r in self.resources if r.type_ == type_]

    def one(self, type_: str) -> RegisteredResource:
        found = self.of_type(type_)
        assert len(found) == 1, f"expected one {type_}, found {[r.name for r in found]}"
        return found[0]

    def by_urn(self) -> dict[str, RegisteredResource]:
        return {r.urn: r for r in self.resources}


def _mock_state(type_: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Outputs the real providers compute that the program reads back."""
    state = dict(inputs)
    if type_ in (
        resource_types.NETWORK,
        resource_types.SUBNETWORK,
        resource_types.ROUTER,
        resource_types.NODE_POOL,
    ):
        state.setdefault("name", f"{name}-1a2b3c4")  # the provider's auto-name
    if type_ == resource_types.CLUSTER:
        state.setdefault("name", f"{name}-cluster")
        state["endpoint"] = "203.0.113.10"
        state["masterAuth"] = {"clusterCaCertificate": "Q0EtREFUQQ=="}
    if type_ == resource_types.RANDOM_PASSWORD:
        # The provider's result is a secret of `length` characters; a recognisable stand-in.
        length = int(inputs.get("length", 16))
        state["result"] = rpc.wrap_rpc_secret(("mock-generated-key-" * 8)[:length])
    if type_ == resource_types.SERVICE_ACCOUNT:
        account = inputs.get("accountId", name)
        state["email"] = f"{account}@{TEST_GCP_PROJECT}.iam.gserviceaccount.com"
        state["member"] = f"serviceAccount:{state['email']}"
        state["project"] = TEST_GCP_PROJECT
    return state


def unwrap_secrets(value: Any, path: Path_ = (), found: set[Path_] | None = None) -> Any:
    """`value` with Pulumi's secret wrappers removed; adds the path of each secret to `found`."""
    if rpc.is_rpc_secret(value):
        if found is not None:
            found.add(path)
        return unwrap_secrets(rpc.unwrap_rpc_secret(value), path, None)
    if isinstance(value, dict):
        return {key: unwrap_secrets(item, (*path, key), found) for key, item in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(item, (*path, index), found) for index, item in enumerate(value)]
    return value


@dataclass
class _Answer:
    """What `new_resource` saw and answered for the registration in progress."""

    inputs: dict[str, Any]
    secret_paths: frozenset[Path_]
    resource_id: str
    outputs: dict[str, Any]


class _Mocks(mocks.Mocks):
    def __init__(self) -> None:
        # The SDK registers resources from a thread pool: answers are kept per (type, name),
        # which the engine requires to be unique, not as "the last one".
        self.answers: dict[tuple[str, str], _Answer] = {}
        self._lock = threading.Lock()

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        resource_id = f"{args.name}-id"
        # The state keeps the secret wrappers, so outputs read back stay secret.
        state = _mock_state(args.typ, args.name, args.inputs)
        secret_paths: set[Path_] = set()
        inputs = unwrap_secrets(args.inputs, (), secret_paths)
        answer = _Answer(inputs, frozenset(secret_paths), resource_id, unwrap_secrets(state))
        with self._lock:
            self.answers[(args.typ, args.name)] = answer
        return resource_id, state

    def answer_for(self, type_: str, name: str) -> _Answer | None:
        with self._lock:
            return self.answers.pop((type_, name), None)

    def call(self, args: mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        # An empty failure list, not None: pulumi's MockMonitor iterates it.
        if args.token == resource_types.GET_PROJECT:
            return {"projectId": TEST_GCP_PROJECT, "number": "123456789"}, []
        return {}, []


class _RecordingMonitor(mocks.MockMonitor):
    def __init__(self, run: ProgramRun) -> None:
        self.recording = _Mocks()
        super().__init__(self.recording)
        self.run = run

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        answer = self.recording.answer_for(request.type, request.name)
        if answer is not None:  # None for the root Stack, which the mock monitor answers itself
            self.run.resources.append(
                RegisteredResource(
                    type_=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    provider=request.provider,
                    dependencies=list(request.dependencies),
                    inputs=answer.inputs,
                    secret_paths=answer.secret_paths,
                    resource_id=answer.resource_id,
                    outputs=answer.outputs,
                    custom=request.custom,
                    protect=request.protect,
                    retain_on_delete=request.retainOnDelete,
                    deleted_with=request.deletedWith,
                    ignore_changes=list(request.ignoreChanges),
                )
            )
        return response


def stack_config(stack: str, root: Path = REPO_ROOT, *, with_token: bool = True) -> dict[str, Any]:
    """The engine config a `pulumi up -s STACK` would pass: the stack file plus the secrets."""
    data, _ = load_file(stack_file(stack, root))
    config = {key: value for key, value in (data.get("config") or {}).items() if key != HF_TOKEN_KEY}
    config.setdefault(GCP_PROJECT_KEY, TEST_GCP_PROJECT)
    if with_token:
        config[HF_TOKEN_KEY] = TEST_HF_TOKEN
    return config


@contextmanager
def _engine_config(config: Mapping[str, Any], secret_keys: list[str]) -> Iterator[None]:
    # The engine passes every value as text; structured ones as JSON.
    encoded = {key: value if isinstance(value, str) else json.dumps(value) for key, value in config.items()}
    pulumi.runtime.set_all_config(encoded, secret_keys)
    try:
        yield
    finally:
        pulumi.runtime.set_all_config({}, [])


def run_program(
    stack: str,
    *,
    config: Mapping[str, Any] | None = None,
    secret_keys: list[str] | None = None,
    root: Path = REPO_ROOT,
) -> ProgramRun:
    """Run infra.program for `stack` under the mock engine; raises pulumi.RunError on bad input."""
    from infra.program import define_stack

    config = stack_config(stack, root) if config is None else config
    secret_keys = [HF_TOKEN_KEY] if secret_keys is None else secret_keys
    run = ProgramRun(stack=stack)

    async def resolve(outputs: dict[str, Any]) -> None:
        for name, value in outputs.items():
            output = pulumi.Output.from_input(value)
            run.outputs[name] = await output.future()
            if await output.is_secret():
                run.secret_outputs.add(name)

    def program() -> Any:
        # `pulumi.runtime.test` awaits what this returns once every resource is registered.
        return resolve(define_stack(root))

    # Pulumi's test runner uses the thread's current event loop; an asyncio.run() or an async
    # test framework earlier in the process may have closed and unset it.
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    with _engine_config(config, secret_keys):
        monitor = _RecordingMonitor(run)
        pulumi.runtime.set_mocks(monitor.recording, project=PROJECT, stack=stack, monitor=monitor)
        pulumi.runtime.test(program)()
    return run
