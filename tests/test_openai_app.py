"""The API-key check in front of Ray's OpenAI ingress (serve/openai_app.py), at the ASGI level.

The real server with the real ingress is tests/test_e2e_local.py (401 without or with a wrong
key on every model route, health open, the `openai` client with the key); here the middleware is
driven with httpx's ASGI transport around a stand-in app, so every branch runs in milliseconds.
"""

from __future__ import annotations

import ast
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

import serve.openai_app as openai_app
from serve.openai_app import ApiKeyMiddleware, KeyFile, bearer_token, split_args

KEY = "sk-test-0123456789abcdef0123"
OTHER = "sk-other-0123456789abcdef01"


async def _inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Stands in for Ray's ingress: 200 with the path it saw."""
    body = json.dumps({"path": scope["path"]}).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    directory.mkdir()
    (directory / "generated").write_text(KEY + "\n")
    return directory


def _client(keys_dir: Path, reload_every_s: float = 0.0) -> httpx.AsyncClient:
    app = ApiKeyMiddleware(_inner, key_file=KeyFile(keys_dir, reload_every_s=reload_every_s))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def _get(
    keys_dir: Path, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> httpx.Response:
    async with _client(keys_dir) as client:
        return await client.request(method, path, headers=headers or {})


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path", ["/v1/models", "/v1/chat/completions", "/v1/embeddings", "/tokenize", "/docs"]
)
async def test_every_route_needs_a_key(keys_dir: Path, path: str) -> None:
    missing = await _get(keys_dir, path)
    assert missing.status_code == 401
    assert missing.json() == {
        "error": {
            "message": "Missing API key: send `Authorization: Bearer <key>`.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    wrong = await _get(keys_dir, path, {"Authorization": f"Bearer {OTHER}"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "Incorrect API key provided."
    assert OTHER not in wrong.text and KEY not in wrong.text
    right = await _get(keys_dir, path, {"Authorization": f"Bearer {KEY}"})
    assert right.status_code == 200 and right.json() == {"path": path}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "header",
    [f"Basic {KEY}", KEY, "Bearer", "Bearer ", f"bearer {KEY}x", f"Bearer {KEY[:-1]}", f"Bearer {KEY} extra"],
)
async def test_anything_but_the_exact_bearer_key_is_refused(keys_dir: Path, header: str) -> None:
    assert (await _get(keys_dir, "/v1/models", {"Authorization": header})).status_code == 401


@pytest.mark.anyio
async def test_the_scheme_is_case_insensitive(keys_dir: Path) -> None:
    assert (await _get(keys_dir, "/v1/models", {"Authorization": f"bearer {KEY}"})).status_code == 200


@pytest.mark.anyio
async def test_health_routes_and_cors_preflight_pass_without_a_key(keys_dir: Path) -> None:
    for path in sorted(openai_app.OPEN_PATHS):
        assert (await _get(keys_dir, path)).status_code == 200
    assert (await _get(keys_dir, "/v1/chat/completions", method="OPTIONS")).status_code == 200


@pytest.mark.anyio
async def test_keys_rotate_without_a_restart(keys_dir: Path) -> None:
    """The kubelet rewrites a mounted Secret's files; the next read sees the new set."""
    async with _client(keys_dir) as client:
        ok = {"Authorization": f"Bearer {KEY}"}
        other = {"Authorization": f"Bearer {OTHER}"}
        assert (await client.get("/v1/models", headers=ok)).status_code == 200
        (keys_dir / "extra-0").write_text(OTHER)
        assert (await client.get("/v1/models", headers=other)).status_code == 200
        (keys_dir / "generated").unlink()
        assert (await client.get("/v1/models", headers=ok)).status_code == 401
        assert (await client.get("/v1/models", headers=other)).status_code == 200


@pytest.mark.anyio
async def test_a_websocket_without_the_key_is_closed_before_the_app_sees_it(keys_dir: Path) -> None:
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    middleware = ApiKeyMiddleware(app, key_file=KeyFile(keys_dir))
    scope = {"type": "websocket", "path": "/v1/realtime", "headers": []}
    await middleware(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}] and seen == []
    keyed = {**scope, "headers": [(b"authorization", f"Bearer {KEY}".encode())]}
    await middleware(keyed, receive, send)
    assert seen == ["websocket"]


def test_keys_are_read_at_most_every_reload_interval(keys_dir: Path) -> None:
    key_file = KeyFile(keys_dir, reload_every_s=3600)
    assert key_file.keys() == (KEY.encode(),)
    (keys_dir / "extra-0").write_text(OTHER)
    assert key_file.keys() == (KEY.encode(),), "re-read before the interval"


def test_a_mounted_secrets_bookkeeping_entries_are_not_keys(tmp_path: Path) -> None:
    """A Secret volume holds `..data` (a symlink to a timestamped directory) and a symlink per key."""
    stamped = tmp_path / "..2026_11_26_16_00_00.123"
    stamped.mkdir()
    (stamped / "generated").write_text(KEY)
    (tmp_path / "..data").symlink_to(stamped.name)
    (tmp_path / "generated").symlink_to("..data/generated")
    (tmp_path / ".hidden").write_text("not-a-key-000000000000")
    assert KeyFile(tmp_path).keys() == (KEY.encode(),)


def test_no_keys_refuses_everything(tmp_path: Path) -> None:
    assert not KeyFile(tmp_path).accepts(b"")
    assert not KeyFile(tmp_path / "missing").accepts(KEY.encode())
    (tmp_path / "blank").write_text("\n")
    assert KeyFile(tmp_path).keys() == ()


def test_every_key_is_compared_in_constant_time(keys_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit: a match on the first key still compares the rest, each with hmac."""
    for index in range(3):
        (keys_dir / f"extra-{index}").write_text(f"{OTHER}{index}")
    calls: list[bytes] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return compare(a, b)

    monkeypatch.setattr(openai_app.hmac, "compare_digest", counting)
    assert KeyFile(keys_dir).accepts(KEY.encode())
    assert len(calls) == 4


def test_bearer_token_reads_only_the_authorization_header() -> None:
    assert bearer_token([(b"x-api-key", KEY.encode())]) is None
    assert bearer_token([(b"Authorization", f"Bearer {KEY}".encode())]) == KEY.encode()


ROUTE = {"m": {"application": "model-m", "task": "generate", "max_model_len": 64}}


def test_the_router_requires_a_keys_directory_and_its_models() -> None:
    with pytest.raises(ValueError, match="api_keys_dir"):
        split_args({"models": ROUTE})
    with pytest.raises(ValueError, match="needs `models`"):
        split_args({"api_keys_dir": "/k"})
    assert split_args({"models": ROUTE, "api_keys_dir": "/k"}) == ({}, "/k", ROUTE)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"llm_configs": []}, "remove llm_configs"),
        ({"models": {"m": {"task": "generate"}}}, "needs `application`"),
        ({"models": {"m": {"application": "model-m", "task": "chat"}}}, "task` is 'chat'"),
    ],
)
def test_the_router_refuses_arguments_it_would_not_use(args: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_args({"api_keys_dir": "/k", "models": ROUTE, **args})


# --- the module reaches the Ray image alone ------------------------------------------------------

ALLOWED_TOP_LEVEL = {"ray", "fastapi", "starlette", "vllm"}  # all in the ray-llm image


def test_it_imports_only_the_standard_library_and_what_the_ray_image_has() -> None:
    tree = ast.parse(Path(openai_app.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) - {"__future__"} <= ALLOWED_TOP_LEVEL, imported


def test_it_imports_from_the_configmap_layout_alone(tmp_path: Path) -> None:
    """As the Ray pods see it: `serve/openai_app.py` and an empty `serve/__init__.py` under
    PYTHONPATH (infra/plan/ray_service.py app_code_files), nothing else of this repo."""
    from infra.plan.ray_service import APP_CODE_PACKAGE, app_code_files

    package = tmp_path / APP_CODE_PACKAGE
    package.mkdir()
    for name, text in app_code_files().items():
        (package / name).write_text(text)
    code = "import serve.openai_app as m, sys; print(m.__file__); assert 'infra' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(tmp_path)!r}); {code}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(package / "openai_app.py")


def test_the_keyed_app_is_rays_ingress_app_with_the_check_outermost(ray_oracles: ModuleType) -> None:
    app = openai_app.keyed_fastapi_app("/nonexistent")
    assert app.user_middleware[0].cls is ApiKeyMiddleware  # Starlette runs index 0 first
    rays = [m.cls for m in ray_oracles_ingress_app().user_middleware]
    assert [m.cls for m in app.user_middleware[1:]] == rays


def ray_oracles_ingress_app() -> Any:
    from ray.llm._internal.serve.core.ingress.ingress import init

    return init()


def test_every_task_route_takes_its_request_from_the_json_body(ray_oracles: ModuleType) -> None:
    """FastAPI resolves a route's body type from its annotations; an unresolved one silently turns
    `body` into a required query parameter (every request a 400)."""
    from ray.serve.llm.ingress import make_fastapi_ingress

    app = openai_app.keyed_fastapi_app("/nonexistent")
    make_fastapi_ingress(openai_app.task_aware_ingress(), endpoint_map=openai_app.endpoint_map(), app=app)
    routes = {getattr(r, "path", None): r for r in app.routes}
    for path in openai_app.ROUTE_METHODS:
        dependant = routes[path].dependant
        assert [p.name for p in dependant.body_params] == ["body"], path
        assert not dependant.query_params, path


# --- when the router stops waiting for a model ------------------------------------------------


def _serve_status(app_status: str, deployment: dict[str, Any] | None) -> dict[str, Any]:
    """`serve.status()`'s applications as the router reads them: Ray's own dataclasses, asdict'ed."""
    import dataclasses

    from ray.serve._private.common import DeploymentStatus, DeploymentStatusTrigger, ReplicaState
    from ray.serve.schema import (
        ApplicationStatus,
        ApplicationStatusOverview,
        DeploymentStatusOverview,
        ServeStatus,
    )

    deployments = {}
    if deployment is not None:
        deployments["LLMServer:m"] = DeploymentStatusOverview(
            status=DeploymentStatus(deployment["status"]),
            status_trigger=DeploymentStatusTrigger(deployment.get("trigger", "UNSPECIFIED")),
            replica_states={ReplicaState(state): n for state, n in deployment["replicas"].items()},
            message="",
        )
    overview = ApplicationStatusOverview(
        status=ApplicationStatus(app_status), message="", last_deployed_time_s=0.0, deployments=deployments
    )
    applications: dict[str, Any] = dataclasses.asdict(ServeStatus(applications={"model-m": overview}))[
        "applications"
    ]
    return applications


STARTS_FAIL = "REPLICA_STARTUP_FAILED"
DIED = "HEALTH_CHECK_FAILED"


@pytest.mark.parametrize(
    ("app_status", "deployment", "gave_up"),
    [
        ("DEPLOYING", {"status": "UPDATING", "replicas": {"STARTING": 1}}, False),
        ("RUNNING", {"status": "HEALTHY", "replicas": {}}, False),  # at zero, waking up
        ("RUNNING", {"status": "UPSCALING", "replicas": {"STARTING": 1}}, False),
        ("DEPLOY_FAILED", {"status": "DEPLOY_FAILED", "replicas": {}, "trigger": STARTS_FAIL}, True),
        ("UNHEALTHY", {"status": "UNHEALTHY", "replicas": {}, "trigger": STARTS_FAIL}, True),
        ("UNHEALTHY", {"status": "UNHEALTHY", "replicas": {"STARTING": 1}, "trigger": STARTS_FAIL}, True),
        # one replica of two still answers
        ("UNHEALTHY", {"status": "UNHEALTHY", "replicas": {"RUNNING": 1}, "trigger": STARTS_FAIL}, False),
        # a replica died (engine killed, node reclaimed): its replacement is coming
        (
            "UNHEALTHY",
            {"status": "UNHEALTHY", "replicas": {"STARTING": 1}, "trigger": "HEALTH_CHECK_FAILED"},
            False,
        ),
        ("DEPLOY_FAILED", None, True),  # the builder raised: no deployment at all
        ("DEPLOYING", None, False),
    ],
)
def test_the_router_gives_up_on_a_model_only_when_its_replicas_do_not_start(
    ray_oracles: ModuleType, app_status: str, deployment: dict[str, Any] | None, gave_up: bool
) -> None:
    from serve.openai_app import model_deployment_name, model_gave_up

    applications = _serve_status(app_status, deployment)
    assert model_gave_up(applications, "model-m", model_deployment_name("m")) is gave_up
    assert model_gave_up(applications, "model-other", model_deployment_name("m")) is False
