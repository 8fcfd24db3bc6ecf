"""Run the real Pulumi program under Pulumi's own mock engine and record what it registers.

Used by the tests, the policy tests and the offline plan report (`python -m infra.plan`):
the program is the one `pulumi up` runs; only the engine's resource monitor is replaced,
so every resource's inputs, parent, provider, dependencies and secret markers are seen
exactly as the engine would receive them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pulumi
from google.protobuf import json_format
from pulumi.runtime import config as runtime_config
from pulumi.runtime import mocks, rpc
from pulumi.runtime.settings import SETTINGS
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from infra.pulumi_config import REPO_ROOT
from infra.settings import GCP_PROJECT_KEY, HF_TOKEN_KEY, PROJECT
from serve.located_yaml import load_file

# Pulumi's wire marker for a secret value inside a serialized property map.
SECRET_SIG: Final = "1b47061264138c4ac30d75fd1eb44270"
SIG_KEY: Final = "4dabf18193072939515e22adb298388d"
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
    inputs: dict[str, Any]
    # The inputs as sent on the wire, secrets still wrapped in their signature objects.
    wire_inputs: dict[str, Any]
    custom: bool
    protect: bool
    retain_on_delete: bool
    deleted_with: str


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
    if type_ == "gcp:container/cluster:Cluster":
        state.setdefault("name", f"{name}-cluster")
        state["endpoint"] = "203.0.113.10"
        state["masterAuth"] = {"clusterCaCertificate": "Q0EtREFUQQ=="}
    if type_ == "gcp:serviceaccount/account:Account":
        account = inputs.get("accountId", name)
        state["email"] = f"{account}@{TEST_GCP_PROJECT}.iam.gserviceaccount.com"
        state["member"] = f"serviceAccount:{state['email']}"
        state["project"] = TEST_GCP_PROJECT
    return state


class _Mocks(mocks.Mocks):
    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        return f"{args.name}-id", _mock_state(args.typ, args.name, args.inputs)

    def call(self, args: mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        # An empty failure list, not None: pulumi's MockMonitor iterates it.
        if args.token == "gcp:organizations/getProject:getProject":
            return {"projectId": TEST_GCP_PROJECT, "number": "123456789"}, []
        return {}, []


class _RecordingMonitor(mocks.MockMonitor):
    def __init__(self, run: ProgramRun) -> None:
        super().__init__(_Mocks())
        self.run = run

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.run.resources.append(
                RegisteredResource(
                    type_=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    provider=request.provider,
                    dependencies=list(request.dependencies),
                    inputs=_inputs(request),
                    wire_inputs=json_format.MessageToDict(request.object),
                    custom=request.custom,
                    protect=request.protect,
                    retain_on_delete=request.retainOnDelete,
                    deleted_with=request.deletedWith,
                )
            )
        return response


def _unwrap_secrets(value: Any) -> Any:
    if rpc.is_rpc_secret(value):
        return _unwrap_secrets(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {key: _unwrap_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unwrap_secrets(item) for item in value]
    return value


def _inputs(request: Any) -> dict[str, Any]:
    """Inputs as the provider would see them: secrets unwrapped, camelCase keys."""
    return dict(_unwrap_secrets(rpc.deserialize_properties(request.object)))


def stack_config(stack: str, root: Path = REPO_ROOT, *, with_token: bool = True) -> dict[str, Any]:
    """The engine config a `pulumi up -s STACK` would pass: the stack file plus the secrets."""
    data, _ = load_file(root / f"Pulumi.{stack}.yaml")
    config = {key: value for key, value in (data.get("config") or {}).items() if key != HF_TOKEN_KEY}
    config.setdefault(GCP_PROJECT_KEY, TEST_GCP_PROJECT)
    if with_token:
        config[HF_TOKEN_KEY] = TEST_HF_TOKEN
    return config


@contextmanager
def _engine_config(config: Mapping[str, Any], secret_keys: list[str]) -> Iterator[None]:
    encoded = {key: value if isinstance(value, str) else json.dumps(value) for key, value in config.items()}
    saved = {name: os.environ.get(name) for name in ("PULUMI_CONFIG", "PULUMI_CONFIG_SECRET_KEYS")}
    os.environ["PULUMI_CONFIG"] = json.dumps(encoded)
    os.environ["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(secret_keys)
    runtime_config.set_all_config(encoded, secret_keys)
    try:
        yield
    finally:
        runtime_config.set_all_config({}, [])
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_program(
    stack: str,
    *,
    config: Mapping[str, Any] | None = None,
    secret_keys: list[str] | None = None,
    root: Path = REPO_ROOT,
    preview: bool = False,
) -> ProgramRun:
    """Run infra.program for `stack` under the mock engine; raises pulumi.RunError on bad input."""
    from infra.program import define_stack

    config = stack_config(stack, root) if config is None else config
    secret_keys = [HF_TOKEN_KEY] if secret_keys is None else secret_keys
    run = ProgramRun(stack=stack)
    outputs: dict[str, Any] = {}

    async def _resolve() -> None:
        for name, value in outputs.items():
            output = pulumi.Output.from_input(value)
            run.outputs[name] = await output.future()
            if await output.is_secret():
                run.secret_outputs.add(name)

    def program() -> None:
        outputs.update(define_stack(root))

    with _engine_config(config, secret_keys):
        SETTINGS.rpc_manager.clear()
        SETTINGS.outputs.clear()
        pulumi.runtime.set_mocks(
            _Mocks(), project=PROJECT, stack=stack, preview=preview, monitor=_RecordingMonitor(run)
        )
        _sync_await(run_pulumi_func(program))
        _sync_await(run_pulumi_func(lambda: _sync_await(_resolve())))
    return run
