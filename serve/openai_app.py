"""The OpenAI application the cluster and `make serve-local` run: Ray Serve LLM's, behind API keys.

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

import functools
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
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
    generate. `model_tasks` is what the builder uses: generate and transcribe look alike here."""
    kwargs = engine_kwargs or {}
    for task, settings in TASK_ENGINE_KWARGS.items():
        if settings and all(kwargs.get(key) == value for key, value in settings.items()):
            return task
    return "generate"


def resolve_tasks(declared: Mapping[str, str], models: Iterable[tuple[str, Any]]) -> dict[str, str]:
    """Each model's task from `models` (id, engine kwargs): the serve config's `model_tasks`
    (written from the catalog), else what its engine kwargs tell. An unknown task is a ValueError."""
    found: dict[str, str] = {}
    for model_id, engine_kwargs in models:
        task = declared.get(model_id) or task_of(engine_kwargs)
        if task not in TASK_ROUTES:
            raise ValueError(f"model {model_id!r} has task {task!r}; the tasks are {', '.join(TASK_ROUTES)}")
        found[model_id] = task
    return found


def wrong_task_message(model: str, task: str, route: str) -> str:
    return f"model {model!r} serves {task} ({', '.join(TASK_ROUTES[task])}), not {route}"


# The builder arguments this module adds to Ray's LLMServingArgs (and removes before Ray sees them).
API_KEYS_DIR_ARG: Final = "api_keys_dir"
MODEL_TASKS_ARG: Final = "model_tasks"
IMPORT_PATH: Final = "serve.openai_app:build_app"
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
    from ray.llm._internal.serve.core.configs.openai_api_models import OpenAIHTTPException, ScoreRequest
    from ray.llm._internal.serve.core.ingress.ingress import OpenAiIngress
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
        def __init__(self, *args: Any, model_tasks: dict[str, str] | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.model_tasks = dict(model_tasks or {})

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


def _text(document: Any) -> str | None:
    return document if isinstance(document, str) else None


def endpoint_map() -> dict[str, Callable[[Any], Callable[..., Any]]]:
    """Ray's default routes plus `/v1/rerank`."""
    from ray.llm._internal.serve.core.ingress.ingress import DEFAULT_ENDPOINTS

    return {**DEFAULT_ENDPOINTS, "rerank": lambda app: app.post("/v1/rerank")}


def split_args(args: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, str]]:
    """(Ray's LLMServingArgs, the keys directory, the declared task of each model). The directory
    is required: no key, no app."""
    ray_args = dict(args)
    declared = ray_args.pop(MODEL_TASKS_ARG, None) or {}
    keys_dir = ray_args.pop(API_KEYS_DIR_ARG, None)
    if not isinstance(keys_dir, str) or not keys_dir:
        raise ValueError(f"{IMPORT_PATH} needs `{API_KEYS_DIR_ARG}`: the directory holding the API keys")
    return ray_args, keys_dir, dict(declared)


def build_app(args: dict[str, Any]) -> Any:
    """`ray.serve.llm.build_openai_app`'s multi-model application with the keyed ingress app."""
    from ray import serve
    from ray.llm._internal.common.dict_utils import maybe_apply_llm_deployment_config_defaults
    from ray.llm._internal.serve.core.configs.openai_api_models import to_model_metadata
    from ray.llm._internal.serve.core.ingress.ingress import OpenAiIngress
    from ray.serve.llm import LLMServingArgs, build_llm_deployment
    from ray.serve.llm.ingress import make_fastapi_ingress

    ray_args, keys_dir, declared = split_args(args)
    # Its validators turn every config into an LLMConfig and the ingress config into IngressClsConfig.
    serving: Any = LLMServingArgs.model_validate(ray_args)
    configs = serving.llm_configs
    if serving.ingress_cls_config.ingress_cls is not OpenAiIngress:
        raise ValueError(f"{IMPORT_PATH} serves its own ingress class; remove ingress_cls_config.ingress_cls")
    ingress_cls = task_aware_ingress()
    options = maybe_apply_llm_deployment_config_defaults(
        ingress_cls.get_deployment_options(configs), serving.ingress_deployment_config
    )
    keyed_ingress = make_fastapi_ingress(
        ingress_cls, endpoint_map=endpoint_map(), app=keyed_fastapi_app(keys_dir)
    )
    deployment: Any = serve.deployment(keyed_ingress, name=INGRESS_DEPLOYMENT, **options)
    return deployment.bind(
        llm_deployments={c.model_id: build_llm_deployment(c) for c in configs},
        model_cards={c.model_id: to_model_metadata(c.model_id, c) for c in configs},
        lora_paths={
            c.model_id: c.lora_config.dynamic_lora_loading_path for c in configs if c.lora_config is not None
        },
        model_tasks=resolve_tasks(declared, ((c.model_id, c.engine_kwargs) for c in configs)),
        **serving.ingress_cls_config.ingress_extra_kwargs,
    )
