"""The lookup service's routes: a FastAPI application over a :class:`~lakeloop.serving.ServingStore`.

``GET /v1/recommendations/{user_id}``, ``GET /v1/predictions/{key}`` and their batch forms
``POST /v1/recommendations`` (``{"user_ids": [...]}``) and ``POST /v1/predictions`` (``{"keys": [...]}``),
``/healthz``, ``/readyz``, ``/metrics``, and the OpenAPI document at ``/openapi.json`` (``/docs`` renders
it).  Every answer is JSON, errors included (``{"error": "..."}``).  Each lookup resolves the current
version and the values in one consistent step, so no response mixes two versions.  The HTTP server, the
limits and the metrics are in :mod:`lakeloop.serving.server`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import Response

from lakeloop.serving.base import ServingStore

__all__ = ["create_app", "ServiceError", "ReadinessCheck", "AppOptions", "FastLookups", "HOT_ROUTES"]

log = logging.getLogger(__name__)

_USER_ID = re.compile(r"^-?[0-9]{1,19}$")
# serving keys are written as text; ':' and glob characters never occur in them
_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,256}$")
_INT64 = 2 ** 63

#: a readiness check: ``None`` when ready, else the reason it is not
ReadinessCheck = Callable[[], "str | None"]


class ServiceError(Exception):
    """A request that is answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = int(status), message


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def error_body(status: int, message: str) -> bytes:
    return orjson.dumps({"error": message})


# -- documentation models (responses are built directly, never validated on the way out) ------------------
class Item(BaseModel):
    item_id: int
    score: float


class Recommendations(BaseModel):
    user_id: int
    items: list[dict[str, Any]] = Field(description="the user's top-N from the current version, [] if none")
    realtime: dict[str, Any] | None = Field(None, description="the user's real-time view, when there is one")


class UsersRequest(BaseModel):
    user_ids: list[int] = Field(min_length=1, description="64-bit user ids, at most serve.max_batch_keys")


class KeysRequest(BaseModel):
    keys: list[str] = Field(min_length=1, description="keys (letters, digits, _ . -), at most serve.max_batch_keys")


class BatchResults(BaseModel):
    version: str | None = Field(description="the version every result was read from")
    results: list[dict[str, Any] | None] = Field(description="one per requested key, in order; null: not found")


class Health(BaseModel):
    status: str
    version: str | None


class ErrorBody(BaseModel):
    error: str


@dataclass
class AppOptions:
    """What the routes need besides the store."""

    max_batch_keys: int = 1000
    #: extra readiness checks by name (a model being loaded, ...); the store's reachability is always checked
    readiness: Mapping[str, ReadinessCheck] = field(default_factory=dict)
    #: ``/metrics`` body and content type, or ``None`` for no metrics route
    metrics: Callable[[], tuple[bytes, str]] | None = None


_ERRORS = {400: {"model": ErrorBody, "description": "malformed id or key"},
           404: {"model": ErrorBody, "description": "unknown key"},
           503: {"model": ErrorBody, "description": "serving store unavailable"}}


def create_app(store: ServingStore, options: AppOptions | None = None) -> FastAPI:
    """The FastAPI application answering lookups from ``store``."""
    options = options or AppOptions()
    app = FastAPI(title="lakeloop lookup service", version="1",
                  description="Top-N recommendations and predictions from the serving store's current version, "
                              "merged with the real-time view.", redirect_slashes=False)
    app.state.store = store
    _add_error_handlers(app)
    _add_lookup_routes(app, store, options)
    _add_health_routes(app, store, options)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> Response:
        return json_response(exc.status, {"error": exc.message})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404:
            message = (f"no route {request.url.path!r}; routes: /v1/recommendations/<user_id>, "
                       "/v1/predictions/<key>, /healthz, /readyz, /metrics, /docs")
        return json_response(exc.status_code, {"error": message}, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        return json_response(422, {"error": f"{'.'.join(map(str, first['loc']))}: {first['msg']}",
                                   "detail": errors})


def _user_id(raw: str) -> int:
    if not _USER_ID.match(raw) or not -_INT64 <= int(raw) < _INT64:
        raise ServiceError(400, f"user id {raw!r}: expected a 64-bit integer")
    return int(raw)


def _key(raw: str) -> str:
    if not _KEY.match(raw):
        raise ServiceError(400, f"key {raw!r}: expected letters, digits, '_', '.' or '-'")
    return raw


def _read(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """A store read; any store failure is a 503 and the service lives on."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - a store failure becomes a 503
        log.warning("%s failed: %s", what, exc)
        raise ServiceError(503, f"lookup failed: serving store unavailable ({exc})") from None


def recommendation(store: ServingStore, raw: str) -> dict[str, Any]:
    """``GET /v1/recommendations/{raw}``: the body of a 200, or :class:`ServiceError`."""
    uid = _user_id(raw)
    found = _read("lookup", store.lookup, uid)
    if found is None:
        raise ServiceError(404, f"user {uid}: no recommendations")
    return _recommendation(uid, found)


def prediction(store: ServingStore, raw: str) -> dict[str, Any]:
    """``GET /v1/predictions/{raw}``: the body of a 200, or :class:`ServiceError`."""
    key = _key(raw)
    found = _read("lookup", store.lookup, key)
    if found is None:
        raise ServiceError(404, f"key {key!r}: not found")
    return {"key": key, **found}


#: the single-key GET routes: prefix -> (route template, handler); answered by :class:`FastLookups`
HOT_ROUTES = {"/v1/recommendations/": ("/v1/recommendations/{user_id}", recommendation),
              "/v1/predictions/": ("/v1/predictions/{key}", prediction)}


class _Route:
    """What :class:`FastLookups` puts in ``scope["route"]`` (the metrics read the template from it)."""

    def __init__(self, path: str) -> None:
        self.path = path


class FastLookups:
    """ASGI: answers the single-key lookups (the hot path) without FastAPI's request machinery, with the
    same handlers as the FastAPI routes; every other request goes to ``app``."""

    def __init__(self, app: Any, store: ServingStore) -> None:
        self.app, self.store = app, store
        self.routes = {prefix: (_Route(template), handler) for prefix, (template, handler) in HOT_ROUTES.items()}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and scope["method"] == "GET" and path.startswith("/v1/"):
            slash = path.find("/", 4) + 1
            hot = self.routes.get(path[:slash]) if slash else None
            raw = path[slash:]
            if hot is not None and raw and "/" not in raw:
                route, handler = hot
                scope["route"] = route
                try:
                    status, body = 200, handler(self.store, raw)
                except ServiceError as exc:
                    status, body = exc.status, {"error": exc.message}
                await _send_json(send, status, orjson.dumps(body))
                return
        await self.app(scope, receive, send)


async def _send_json(send: Any, status: int, payload: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]})
    await send({"type": "http.response.body", "body": payload})


def _recommendation(user_id: int, found: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": user_id, "items": found.get("value") or []}
    if "realtime" in found:
        body["realtime"] = found["realtime"]
    return body


def _batch_limit(n: int, options: AppOptions) -> None:
    if n > options.max_batch_keys:
        raise ServiceError(422, f"{n} keys in one request: at most {options.max_batch_keys} (serve.max_batch_keys)")


def _add_lookup_routes(app: FastAPI, store: ServingStore, options: AppOptions) -> None:
    @app.get("/v1/recommendations/{user_id}", response_model=Recommendations, responses=_ERRORS,
             summary="a user's top-N items merged with the real-time view")
    async def recommendations(user_id: str) -> Response:
        return json_response(200, recommendation(store, user_id))

    @app.get("/v1/predictions/{key}", responses=_ERRORS,
             summary="any key of the current version: its fields (or value) plus realtime")
    async def get_prediction(key: str) -> Response:
        return json_response(200, prediction(store, key))

    @app.post("/v1/recommendations", response_model=BatchResults, responses=_ERRORS,
              summary="several users at once, all from one version")
    async def recommendations_batch(body: UsersRequest) -> Response:
        _batch_limit(len(body.user_ids), options)
        for uid in body.user_ids:
            if not -_INT64 <= uid < _INT64:
                raise ServiceError(422, f"user id {uid}: expected a 64-bit integer")
        version, found = _read("lookup", store.lookup_many, body.user_ids)
        results = [None if f is None else _recommendation(uid, f) for uid, f in zip(body.user_ids, found, strict=True)]
        return json_response(200, {"version": version, "results": results})

    @app.post("/v1/predictions", response_model=BatchResults, responses=_ERRORS,
              summary="several keys at once, all from one version")
    async def predictions_batch(body: KeysRequest) -> Response:
        _batch_limit(len(body.keys), options)
        keys = [_key(k) for k in body.keys]
        version, found = _read("lookup", store.lookup_many, keys)
        results = [None if f is None else {"key": k, **f} for k, f in zip(keys, found, strict=True)]
        return json_response(200, {"version": version, "results": results})

    # malformed lookup paths (missing or extra segments) are bad requests, not unknown routes
    @app.get("/v1/{kind}/{rest:path}", include_in_schema=False)
    async def malformed(kind: str, rest: str) -> Response:
        if kind in ("recommendations", "predictions"):
            raise ServiceError(400, f"bad path '/v1/{kind}/{rest}': expected /v1/{kind}/<id>")
        raise HTTPException(404)


def _add_health_routes(app: FastAPI, store: ServingStore, options: AppOptions) -> None:
    @app.get("/healthz", response_model=Health, responses={503: {"model": ErrorBody}},
             summary="the store answers; names the version being served")
    async def healthz() -> Response:
        try:
            version = store.current_version()
        except Exception as exc:  # noqa: BLE001 - any store failure means unhealthy
            log.warning("health check failed: %s", exc)
            return json_response(503, {"error": f"serving store unavailable: {exc}"})
        return json_response(200, {"status": "ok", "version": version})

    @app.get("/readyz", responses={503: {"model": ErrorBody}},
             summary="ready to take traffic: the store answers and every configured check passes")
    async def readyz() -> Response:
        checks: dict[str, str] = {}
        try:
            version = store.current_version()
            checks["store"] = "ok"
        except Exception as exc:  # noqa: BLE001
            version, checks["store"] = None, f"unavailable: {exc}"
        for name, check in options.readiness.items():
            try:
                reason = check()
            except Exception as exc:  # noqa: BLE001
                reason = f"check failed: {exc}"
            checks[name] = reason or "ok"
        failed = {k: v for k, v in checks.items() if v != "ok"}
        if failed:
            return json_response(503, {"error": "not ready: " + "; ".join(f"{k} {v}" for k, v in failed.items()),
                                       "checks": checks})
        return json_response(200, {"status": "ready", "version": version, "checks": checks})

    if options.metrics is not None:
        render = options.metrics

        @app.get("/metrics", include_in_schema=True, summary="Prometheus metrics (text exposition format)")
        async def metrics() -> Response:
            body, content_type = render()
            return Response(body, media_type=content_type)
