"""The OpenAI applications the cluster and `make serve-local` run: Ray Serve LLM's, behind API keys.

One Serve application per model (`build_model_app`: Ray's `LLMServer` deployment for one LLM
config, not exposed over HTTP) and one router application at `/` (`build_app`: Ray's OpenAI
ingress, holding a handle to each model's deployment in its own application). Why not Ray's
single `build_openai_app` application: an application's status is its worst deployment's
(ray/serve/_private/application_state.py `_determine_app_status`), and KubeRay v1.7.0 creates the
serve Service, or switches it to a new cluster, only when every application is RUNNING
(ray-operator/controllers/ray/rayservice_controller.go `getAndCheckServeStatus`). With every model
in one application, one model whose replicas fail to start (a bad revision) marks the whole
endpoint failed; split, only that model's application is, and its requests get a 503 naming it
while the others answer. A handle to a deployment of another application is Serve's own API
(`serve.get_deployment_handle(name, app_name=...)`, ray/serve/api.py), and Ray's ingress takes
plain handles (`OpenAiIngress.__init__`).

Ray 2.60's `build_openai_app` checks no credentials (its ingress middleware is error handling,
CORS, metrics and a request id: `ray/llm/_internal/serve/core/ingress/ingress.py` `init`). This
builder builds the same application from the same parts (`LLMServingArgs`, `build_llm_deployment`,
`OpenAiIngress.get_deployment_options`, the documented `make_fastapi_ingress(cls, app=...)`),
and hands the ingress a FastAPI app that is Ray's own plus one outermost middleware: every
request needs `Authorization: Bearer <key>`, compared in constant time against the keys in a
directory, except CORS preflights and the routes listed in `OPEN_PATHS`. Serve's own health
routes (`/-/healthz`, `/-/routes`) are answered by Serve's proxy and never reach an app.

The keys directory is a mounted Kubernetes Secret on the cluster (one file per key; the kubelet
updates the files when it next syncs the pod, typically within one to two minutes, so keys rotate
without a restart) and a private directory of the run locally. The files are read again at most
every `RELOAD_EVERY_S`. WebSocket connections need the key too (no route uses them today).

This file is mounted alone into the Ray head (a ConfigMap, `infra/components/llm_service.py`),
so it imports only the standard library and what the Ray image has: never `serve.*` or `infra`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any, Final

# What each task runs as in vLLM 0.32 (its pooling runner for embeddings and cross-encoders;
# `convert` adapts a model, a no-op for one that already pools: vllm/config/model.py
# `_get_convert_type`, vllm/model_executor/models/adapters.py). The catalog's `task` picks one.
# Speech to text runs on the generate runner: vLLM serves transcription for models that implement
# it (Whisper: vllm/model_executor/models/whisper.py, `SupportsTranscription`), with no argument.
TASK_ENGINE_KWARGS: Final[dict[str, dict[str, str]]] = {
    "generate": {},
    "embed": {"runner": "pooling", "convert": "embed"},
    "rerank": {"runner": "pooling", "convert": "classify"},
    "transcribe": {},
}
# Which routes serve which task; a request for a model of another task gets a 400 naming its own.
TASK_ROUTES: Final[dict[str, tuple[str, ...]]] = {
    "generate": ("/v1/chat/completions", "/v1/completions"),
    "embed": ("/v1/embeddings",),
    "rerank": ("/v1/score", "/v1/rerank"),
    "transcribe": ("/v1/audio/transcriptions",),
}
# Ray's ingress method behind each task route (ray/llm/_internal/serve/core/ingress/ingress.py
# DEFAULT_ENDPOINTS); `rerank` is this module's own.
ROUTE_METHODS: Final[dict[str, str]] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/score": "score",
    "/v1/rerank": "rerank",
    "/v1/audio/transcriptions": "transcriptions",
}


def task_of(engine_kwargs: dict[str, Any] | None) -> str:
    """The task an LLM config's engine kwargs set up, where they tell (the pooling tasks); else
    generate. The router's entries declare each model's task from the catalog: generate and
    transcribe look alike here."""
    kwargs = engine_kwargs or {}
    for task, settings in TASK_ENGINE_KWARGS.items():
        if settings and all(kwargs.get(key) == value for key, value in settings.items()):
            return task
    return "generate"


def wrong_task_message(model: str, task: str, route: str) -> str:
    return f"model {model!r} serves {task} ({', '.join(TASK_ROUTES[task])}), not {route}"


# The router application's builder arguments: where the keys are, Ray's ingress deployment
# options, and each model's entry (`router_entry`).
API_KEYS_DIR_ARG: Final = "api_keys_dir"
INGRESS_DEPLOYMENT_CONFIG_ARG: Final = "ingress_deployment_config"
MODELS_ARG: Final = "models"
# A model application's one argument: its `ray.serve.llm.LLMConfig` document.
LLM_CONFIG_ARG: Final = "llm_config"
IMPORT_PATH: Final = "serve.openai_app:build_app"
MODEL_APP_IMPORT_PATH: Final = "serve.openai_app:build_model_app"
# Ray Serve LLM's name for a model's deployment (ray/llm/_internal/serve/core/server/builder.py
# `build_llm_deployment` and `_get_deployment_name`), which dashboards and alerts select on
# (`deployment` label). The model application sets it explicitly, so the router's handle and the
# deployment cannot drift apart if Ray's default changes.
MODEL_DEPLOYMENT_PREFIX: Final = "LLMServer:"
# What the router answers for a model whose application failed (no replica running and Serve
# gave up starting one: `DeploymentUnavailableError`, ray/serve/_private/router.py).
UNAVAILABLE_STATUS: Final = 503
# Serve 2.60 refuses a request at once only if its handle already knew the deployment had failed
# when the request arrived (ray/serve/_private/router.py checks `_deployment_available` on entry;
# `update_deployment_targets` only sets it and fails nothing already queued). A request queued
# before that (the first one through a new handle, or one that woke a model from zero whose
# replicas then all fail) would wait for a replica that never comes, up to the request timeout.
# So a request still waiting for its first answer asks Serve, this often, whether it gave up on
# the model (`model_gave_up`); the answer is shared by every waiting request.
UNAVAILABLE_CHECK_EVERY_S: Final = 5.0
# Serve's deployment statuses once replicas fail (ray/serve/_private/common.py `DeploymentStatus`:
# DEPLOY_FAILED at first deploy, UNHEALTHY later), and the triggers that mean its replicas do not
# start (`DeploymentStatusTrigger`; deployment_state.py sets REPLICA_STARTUP_FAILED after
# `_failed_to_start_threshold` failed starts in a row). HEALTH_CHECK_FAILED is not one: a replica
# that died (an engine killed, a node reclaimed) is being replaced, and its requests wait for the
# replacement as they wait out a cold start.
FAILED_STATUSES: Final = ("DEPLOY_FAILED", "UNHEALTHY")
GAVE_UP_TRIGGERS: Final = ("REPLICA_STARTUP_FAILED", "DEPLOYMENT_ACTOR_FAILED")
# The ingress deployment keeps Ray's name: logs, metrics (`deployment` label) and dashboards see
# the same deployment as with `build_openai_app`.
INGRESS_DEPLOYMENT: Final = "OpenAiIngress"
RELOAD_EVERY_S: Final = 5.0
POLICY_VIOLATION: Final = 1008  # WebSocket close code for a refused connection (RFC 6455 7.4.1)
# Routes of the app that answer without a key: none of the model routes. (KubeRay's probes call
# Serve's proxy health route, which never reaches the app.)
OPEN_PATHS: Final = frozenset({"/-/healthz", "/-/routes"})

logger = logging.getLogger("ray.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class KeyFile:
    """The keys in a directory: one key per regular file whose name does not start with `.`
    (a mounted Secret also holds `..data` and timestamped directories, which are skipped)."""

    def __init__(self, directory: str | os.PathLike[str], reload_every_s: float = RELOAD_EVERY_S) -> None:
        self.directory = Path(directory)
        self.reload_every_s = reload_every_s
        self._keys: tuple[bytes, ...] = ()
        self._read_at = float("-inf")
        self._lock = threading.Lock()
        self._warned_empty = False

    def _read(self) -> tuple[bytes, ...]:
        keys: list[bytes] = []
        try:
            entries = sorted(self.directory.iterdir())
        except OSError as error:
            logger.error("API keys directory %s cannot be read: %s", self.directory, error.strerror)
            return ()
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            try:
                key = entry.read_bytes().strip()
            except OSError:
                continue
            if key:
                keys.append(key)
        return tuple(keys)

    def keys(self) -> tuple[bytes, ...]:
        now = time.monotonic()
        with self._lock:
            if now - self._read_at >= self.reload_every_s:
                self._keys, self._read_at = self._read(), now
                if not self._keys and not self._warned_empty:
                    logger.error("no API key in %s: every request is refused", self.directory)
                self._warned_empty = not self._keys
            return self._keys

    def accepts(self, presented: bytes) -> bool:
        """Constant time in the presented key: every configured key is compared, no early exit."""
        accepted = False
        for key in self.keys():
            accepted |= hmac.compare_digest(presented, key)
        return accepted and bool(presented)


def bearer_token(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer":
                return token.strip()
            return None
    return None


def unauthorized_body(message: str) -> bytes:
    """OpenAI's shape for a missing or wrong key (HTTP 401, `invalid_api_key`)."""
    return json.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }
    ).encode()


class ApiKeyMiddleware:
    """Pure ASGI (streams pass through untouched): refuse a request without a configured key."""

    def __init__(self, app: ASGIApp, *, key_file: KeyFile) -> None:
        self.app = app
        self.key_file = key_file

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)  # lifespan, and Serve's health routes
            return
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)  # CORS preflights carry no credentials
            return
        token = bearer_token(scope.get("headers") or [])
        if token is not None and self.key_file.accepts(token):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": POLICY_VIOLATION})
            return
        message = (
            "Missing API key: send `Authorization: Bearer <key>`."
            if token is None
            else "Incorrect API key provided."
        )
        body = unauthorized_body(message)
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="llm-serving"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def keyed_fastapi_app(keys_dir: str | os.PathLike[str]) -> Any:
    """Ray's ingress FastAPI app (its routes are added by `make_fastapi_ingress`) with the key check
    outermost: Starlette runs the last-added middleware first."""
    from ray.llm._internal.serve.core.ingress.ingress import init

    app = init()
    app.add_middleware(ApiKeyMiddleware, key_file=KeyFile(keys_dir))
    return app


@functools.cache
def task_aware_ingress() -> Any:
    """Ray's `OpenAiIngress` that refuses a request for a model of another task (400, naming the
    model's task and routes) and adds `/v1/rerank` (Jina/Cohere shape, vLLM's `RerankRequest` and
    `RerankResponse`) on top of Ray's `/v1/score`. Built on first use, so importing this module
    never imports Ray; Serve pickles the class by value like the one `make_fastapi_ingress` makes."""
    from fastapi import Request, status
    from ray import serve
    from ray.llm._internal.serve.core.configs.openai_api_models import (
        OpenAIHTTPException,
        ScoreRequest,
        to_model_metadata,
    )
    from ray.llm._internal.serve.core.ingress.ingress import OpenAiIngress
    from ray.serve.exceptions import DeploymentUnavailableError
    from starlette.responses import JSONResponse, Response
    from vllm.entrypoints.pooling.scoring.protocol import (
        RerankDocument,
        RerankRequest,
        RerankResponse,
        RerankResult,
        RerankUsage,
    )

    def guarded(route: str) -> Callable[..., Any]:
        parent = getattr(OpenAiIngress, ROUTE_METHODS[route])

        @functools.wraps(parent)
        async def method(self: Any, body: Any, request: Request) -> Any:
            self.require_task(body.model, route)
            return await parent(self, body, request)

        return method

    class TaskAwareOpenAiIngress(OpenAiIngress):
        def __init__(self, models: dict[str, dict[str, Any]]) -> None:
            # Handles by name, not by lookup: a model's application may still be deploying, or have
            # failed, when the router starts (`_check_exists=False`); a request for it then waits
            # for its replicas or gets `DeploymentUnavailableError`.
            handles = {
                model_id: serve.get_deployment_handle(
                    model_deployment_name(model_id), app_name=entry["application"], _check_exists=False
                )
                for model_id, entry in models.items()
            }
            cards = {
                model_id: to_model_metadata(model_id, _card_config(model_id, entry.get("max_model_len")))
                for model_id, entry in models.items()
            }
            super().__init__(llm_deployments=handles, model_cards=cards)
            self.model_tasks = {model_id: entry["task"] for model_id, entry in models.items()}
            self.model_applications = {model_id: entry["application"] for model_id, entry in models.items()}
            self._serve_status: tuple[float, dict[str, Any]] = (float("-inf"), {})
            self._serve_status_lock = asyncio.Lock()

        async def _applications(self) -> dict[str, Any]:
            """`serve.status()`'s applications as plain data, at most UNAVAILABLE_CHECK_EVERY_S old.
            Asked in a thread: it waits on Serve's controller."""
            async with self._serve_status_lock:
                read_at, applications = self._serve_status
                if time.monotonic() - read_at >= UNAVAILABLE_CHECK_EVERY_S:
                    try:
                        # Bounded: a slow or restarting controller must not hold waiting requests.
                        status = await asyncio.wait_for(
                            asyncio.to_thread(serve.status), timeout=UNAVAILABLE_CHECK_EVERY_S
                        )
                    except TimeoutError:
                        return applications  # the last answer: no news is not a failure
                    applications = dataclasses.asdict(status)["applications"]
                    self._serve_status = (time.monotonic(), applications)
                return applications

        async def _gave_up(self, model: str) -> bool:
            application = self.model_applications.get(model)
            if application is None:
                return False
            applications = await self._applications()
            return model_gave_up(applications, application, model_deployment_name(model))

        async def _get_response(self, *, body: Any, call_method: str, raw_request: Any = None) -> Any:
            model = body.model or ""
            stream = OpenAiIngress._get_response(
                self, body=body, call_method=call_method, raw_request=raw_request
            )
            unavailable = OpenAIHTTPException(
                status_code=UNAVAILABLE_STATUS,
                message=unavailable_message(model),
                type="ServiceUnavailableError",
            )
            first = asyncio.ensure_future(stream.__anext__())
            try:
                while not first.done():
                    await asyncio.wait({first}, timeout=UNAVAILABLE_CHECK_EVERY_S)
                    if not first.done() and await self._gave_up(model):
                        raise unavailable
                item = first.result()
            except StopAsyncIteration:
                return
            except DeploymentUnavailableError:
                raise unavailable from None
            finally:
                if not first.done():
                    first.cancel()
            yield item
            async for item in stream:
                yield item

        def require_task(self, model: str | None, route: str) -> None:
            task = self.model_tasks.get(model or "")
            if task is not None and route not in TASK_ROUTES[task]:
                raise OpenAIHTTPException(
                    status_code=status.HTTP_400_BAD_REQUEST,
                    message=wrong_task_message(model or "", task, route),
                    type="invalid_request_error",
                )

        chat = guarded("/v1/chat/completions")
        completions = guarded("/v1/completions")
        embeddings = guarded("/v1/embeddings")
        score = guarded("/v1/score")
        transcriptions = guarded("/v1/audio/transcriptions")

        async def rerank(self, body: RerankRequest, request: Request) -> Response:
            self.require_task(body.model, "/v1/rerank")
            documents = body.documents if isinstance(body.documents, list) else [body.documents]
            scored = await OpenAiIngress.score(
                self, ScoreRequest(model=body.model, text_1=body.query, text_2=documents), request
            )
            answer = json.loads(bytes(scored.body))
            ranked = sorted(answer["data"], key=lambda item: item["score"], reverse=True)
            if body.top_n:
                ranked = ranked[: body.top_n]
            response = RerankResponse(
                id=answer["id"],
                model=answer["model"],
                usage=RerankUsage(
                    prompt_tokens=answer["usage"]["prompt_tokens"],
                    total_tokens=answer["usage"]["total_tokens"],
                ),
                results=[
                    RerankResult(
                        index=item["index"],
                        document=RerankDocument(text=_text(documents[item["index"]])),
                        relevance_score=item["score"],
                    )
                    for item in ranked
                ],
            )
            return JSONResponse(content=response.model_dump())

    # FastAPI reads the route's types from its annotations; this module's are strings (PEP 563)
    # naming classes imported in this function, which FastAPI could not resolve from the module.
    TaskAwareOpenAiIngress.rerank.__annotations__ = {
        "body": RerankRequest,
        "request": Request,
        "return": Response,
    }
    return TaskAwareOpenAiIngress


def _card_config(model_id: str, max_model_len: int | None) -> Any:
    """The LLM config fields Ray's model card reads (`to_model_metadata`: the id, the context length,
    and vision support, which Ray learns only on the model's own replica), without the rest."""
    from ray.serve.llm import LLMConfig

    engine_kwargs = {} if max_model_len is None else {"max_model_len": max_model_len}
    return LLMConfig(model_loading_config={"model_id": model_id}, engine_kwargs=engine_kwargs)


def _text(document: Any) -> str | None:
    return document if isinstance(document, str) else None


def endpoint_map() -> dict[str, Callable[[Any], Callable[..., Any]]]:
    """Ray's default routes plus `/v1/rerank`."""
    from ray.llm._internal.serve.core.ingress.ingress import DEFAULT_ENDPOINTS

    return {**DEFAULT_ENDPOINTS, "rerank": lambda app: app.post("/v1/rerank")}


def model_deployment_name(model_id: str) -> str:
    return MODEL_DEPLOYMENT_PREFIX + model_id.replace("/", "--").replace(".", "_")


def model_gave_up(applications: Mapping[str, Any], application: str, deployment: str) -> bool:
    """Whether a model's replicas do not start, from `serve.status()`'s applications as plain data:
    its deployment failed because replicas failed to start, and none is running; or its
    application failed before the deployment existed (its builder raised). An application not
    deployed yet, or replacing a replica that died, is still coming."""
    app = applications.get(application)
    if not isinstance(app, Mapping):
        return False
    found = (app.get("deployments") or {}).get(deployment)
    if not isinstance(found, Mapping):
        return bool(app.get("status") == "DEPLOY_FAILED")
    running = (found.get("replica_states") or {}).get("RUNNING", 0)
    return (
        found.get("status") in FAILED_STATUSES
        and found.get("status_trigger") in GAVE_UP_TRIGGERS
        and not running
    )


def unavailable_message(model: str) -> str:
    return (
        f"model {model!r} is unavailable: its replicas failed to start "
        "(weights that do not load, or an engine error); the other models still answer"
    )


def router_entry(llm_config: Mapping[str, Any], application: str, task: str | None = None) -> dict[str, Any]:
    """The router's entry for one model application: where its deployment is, its task and the
    context length its model card reports (Ray's `to_model_metadata` reads `max_model_len`)."""
    if task is None:
        task = task_of(llm_config.get("engine_kwargs"))
    if task not in TASK_ROUTES:
        model_id = llm_config["model_loading_config"]["model_id"]
        raise ValueError(f"model {model_id!r} has task {task!r}; the tasks are {', '.join(TASK_ROUTES)}")
    return {
        "application": application,
        "task": task,
        "max_model_len": (llm_config.get("engine_kwargs") or {}).get("max_model_len"),
    }


def split_args(args: Mapping[str, Any]) -> tuple[dict[str, Any], str, dict[str, dict[str, Any]]]:
    """The router's (ingress deployment options, keys directory, model entries). The directory is
    required (no key, no app), and so is at least one model."""
    known = {API_KEYS_DIR_ARG, INGRESS_DEPLOYMENT_CONFIG_ARG, MODELS_ARG}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"{IMPORT_PATH} takes {', '.join(sorted(known))}; remove {', '.join(unknown)}")
    keys_dir = args.get(API_KEYS_DIR_ARG)
    if not isinstance(keys_dir, str) or not keys_dir:
        raise ValueError(f"{IMPORT_PATH} needs `{API_KEYS_DIR_ARG}`: the directory holding the API keys")
    models = args.get(MODELS_ARG)
    if not isinstance(models, Mapping) or not models:
        raise ValueError(f"{IMPORT_PATH} needs `{MODELS_ARG}`: each model id's application and task")
    entries: dict[str, dict[str, Any]] = {}
    for model_id, entry in models.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("application"), str):
            raise ValueError(f"`{MODELS_ARG}.{model_id}` needs `application`: the model's Serve application")
        if entry.get("task") not in TASK_ROUTES:
            task = entry.get("task")
            tasks = ", ".join(TASK_ROUTES)
            raise ValueError(f"`{MODELS_ARG}.{model_id}.task` is {task!r}; the tasks are {tasks}")
        entries[str(model_id)] = dict(entry)
    return dict(args.get(INGRESS_DEPLOYMENT_CONFIG_ARG) or {}), keys_dir, entries


def build_app(args: dict[str, Any]) -> Any:
    """The router application: Ray's OpenAI ingress behind API keys, routing by `model` to each
    model's own application."""
    from ray import serve
    from ray.llm._internal.common.dict_utils import maybe_apply_llm_deployment_config_defaults
    from ray.serve.llm.ingress import make_fastapi_ingress

    ingress_config, keys_dir, models = split_args(args)
    ingress_cls = task_aware_ingress()
    options = maybe_apply_llm_deployment_config_defaults(
        ingress_cls.get_deployment_options(None), ingress_config
    )
    keyed_ingress = make_fastapi_ingress(
        ingress_cls, endpoint_map=endpoint_map(), app=keyed_fastapi_app(keys_dir)
    )
    deployment: Any = serve.deployment(keyed_ingress, name=INGRESS_DEPLOYMENT, **options)
    return deployment.bind(models=models)


def build_model_app(args: dict[str, Any]) -> Any:
    """One model's application: Ray Serve LLM's `LLMServer` deployment for its LLM config."""
    from ray.serve.llm import LLMConfig, build_llm_deployment

    unknown = sorted(set(args) - {LLM_CONFIG_ARG})
    if unknown or LLM_CONFIG_ARG not in args:
        raise ValueError(f"{MODEL_APP_IMPORT_PATH} takes one argument, `{LLM_CONFIG_ARG}`")
    config = LLMConfig.model_validate(args[LLM_CONFIG_ARG])
    return build_llm_deployment(
        config, override_serve_options={"name": model_deployment_name(config.model_id)}
    )
