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

import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Final

# The builder argument this module adds to Ray's LLMServingArgs (and removes before Ray sees them).
API_KEYS_DIR_ARG: Final = "api_keys_dir"
IMPORT_PATH: Final = "serve.openai_app:build_app"
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


def split_args(args: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(Ray's LLMServingArgs, the keys directory). The directory is required: no key, no app."""
    ray_args = dict(args)
    keys_dir = ray_args.pop(API_KEYS_DIR_ARG, None)
    if not isinstance(keys_dir, str) or not keys_dir:
        raise ValueError(f"{IMPORT_PATH} needs `{API_KEYS_DIR_ARG}`: the directory holding the API keys")
    return ray_args, keys_dir


def build_app(args: dict[str, Any]) -> Any:
    """`ray.serve.llm.build_openai_app`'s multi-model application with the keyed ingress app."""
    from ray import serve
    from ray.llm._internal.common.dict_utils import maybe_apply_llm_deployment_config_defaults
    from ray.llm._internal.serve.core.configs.openai_api_models import to_model_metadata
    from ray.serve.llm import LLMServingArgs, build_llm_deployment
    from ray.serve.llm.ingress import make_fastapi_ingress

    ray_args, keys_dir = split_args(args)
    # Its validators turn every config into an LLMConfig and the ingress config into IngressClsConfig.
    serving: Any = LLMServingArgs.model_validate(ray_args)
    configs = serving.llm_configs
    ingress_cls = serving.ingress_cls_config.ingress_cls
    options = maybe_apply_llm_deployment_config_defaults(
        ingress_cls.get_deployment_options(configs), serving.ingress_deployment_config
    )
    keyed_ingress = make_fastapi_ingress(ingress_cls, app=keyed_fastapi_app(keys_dir))
    deployment: Any = serve.deployment(keyed_ingress, **options)
    return deployment.bind(
        llm_deployments={c.model_id: build_llm_deployment(c) for c in configs},
        model_cards={c.model_id: to_model_metadata(c.model_id, c) for c in configs},
        lora_paths={
            c.model_id: c.lora_config.dynamic_lora_loading_path for c in configs if c.lora_config is not None
        },
        **serving.ingress_cls_config.ingress_extra_kwargs,
    )
