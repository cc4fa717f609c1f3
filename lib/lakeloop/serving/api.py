"""The lookup service's routes: a FastAPI application over a :class:`~lakeloop.serving.ServingStore`.

``GET /v1/predictions/{key}`` and its batch form ``POST /v1/predictions`` (``{"keys": [...]}``), the app's
routes of ``serve.routes`` (:mod:`lakeloop.serving.routes`: ``GET /v1/<name>/{<key>}`` and ``POST
/v1/<name>`` with ``{<batch_field>: [...]}``), ``/healthz``, ``/readyz``, ``/metrics``, and the OpenAPI
document at ``/openapi.json`` (``/docs`` renders it).  Every answer is JSON, errors included
(``{"error": "..."}``).  Each lookup resolves the current version and the values in one consistent step, so
no response mixes two versions.  The HTTP server, the limits and the metrics are in
:mod:`lakeloop.serving.server`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, create_model
from starlette.exceptions import HTTPException
from starlette.responses import Response

from lakeloop.serving.base import ServingStore
from lakeloop.serving.routes import (
    PREDICTIONS,
    RouteSpec,
    ServiceError,
    parse_key,
    prediction,
    predictions_json,
)

__all__ = ["create_app", "ServiceError", "ReadinessCheck", "AppOptions", "FastLookups", "hot_routes"]

log = logging.getLogger(__name__)

#: the online score route (answered by :class:`FastLookups`, documented by FastAPI)
SCORE_ROUTE = "/v1/score/{model}"

#: a readiness check: ``None`` when ready, else the reason it is not
ReadinessCheck = Callable[[], "str | None"]


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def error_body(status: int, message: str) -> bytes:
    return orjson.dumps({"error": message})


# -- documentation models (responses are built directly, never validated on the way out) ------------------
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


def _title(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").replace(" ", "_").split("_"))


def _response_model(route: RouteSpec) -> type[BaseModel]:
    """The documented answer of ``route``: its key, its value field and the real-time view."""
    key_type = int if route.key_type == "int" else str
    value = route.docs.get("value", f"the {route.noun}'s value from the current version, [] if none")
    realtime = route.docs.get("realtime", f"the {route.noun}'s real-time view, when there is one")
    return create_model(_title(route.name), **{
        route.key: (key_type, ...),
        route.value_field: (list[dict[str, Any]], Field(description=value)),
        "realtime": (dict[str, Any] | None, Field(None, description=realtime))})


def _request_model(route: RouteSpec) -> type[BaseModel]:
    """The documented body of ``POST /v1/<name>``: the list of keys under ``batch_field``."""
    key_type = int if route.key_type == "int" else str
    what = "64-bit" if route.key_type == "int" else "text"
    return create_model(f"{_title(route.noun)}sRequest", **{route.batch_field: (
        list[key_type], Field(min_length=1, description=f"{what} {route.label}s, at most serve.max_batch_keys"))})


@dataclass
class AppOptions:
    """What the routes need besides the store."""

    max_batch_keys: int = 1000
    #: extra readiness checks by name (a model being loaded, ...); the store's reachability is always checked
    readiness: Mapping[str, ReadinessCheck] = field(default_factory=dict)
    #: ``/metrics`` body and content type, or ``None`` for no metrics route
    metrics: Callable[[], tuple[bytes, str]] | None = None
    #: the app's lookup routes (``serve.routes``, :func:`lakeloop.serving.routes.parse_routes`)
    routes: Mapping[str, RouteSpec] = field(default_factory=dict)
    #: the OpenAPI document's description (``serve.description``); ``None``: a generic one
    description: str | None = None
    #: the online models by name (:class:`lakeloop.online.OnlineModel`): ``POST /v1/score/<name>``
    online: Mapping[str, Any] = field(default_factory=dict)


_ERRORS = {400: {"model": ErrorBody, "description": "malformed id or key"},
           404: {"model": ErrorBody, "description": "unknown key"},
           503: {"model": ErrorBody, "description": "serving store unavailable"}}


def create_app(store: ServingStore, options: AppOptions | None = None) -> FastAPI:
    """The FastAPI application answering lookups from ``store``."""
    options = options or AppOptions()
    description = options.description or ("Lookups of the app's routes and predictions from the serving store's "
                                          "current version, merged with the real-time view.")
    app = FastAPI(title="lakeloop lookup service", version="1", description=description, redirect_slashes=False)
    app.state.store = store
    _add_error_handlers(app, options.routes)
    _add_lookup_routes(app, store, options)
    _add_score_routes(app, options)
    _add_health_routes(app, store, options)
    return app


def _add_error_handlers(app: FastAPI, routes: Mapping[str, RouteSpec]) -> None:
    listed = ", ".join([*(f"/v1/{r.name}/<{r.key}>" for r in routes.values()), f"/v1/{PREDICTIONS}/<key>",
                        "/healthz", "/readyz", "/metrics", "/docs"])

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> Response:
        return json_response(exc.status, {"error": exc.message})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404:
            message = f"no route {request.url.path!r}; routes: {listed}"
        return json_response(exc.status_code, {"error": message}, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        return json_response(422, {"error": f"{'.'.join(map(str, first['loc']))}: {first['msg']}",
                                   "detail": errors})


def hot_routes(routes: Mapping[str, RouteSpec]) -> dict[str, tuple[str, Callable[[ServingStore, str], Any]]]:
    """The single-key GET routes answered by :class:`FastLookups`: prefix -> (route template, handler)."""
    hot: dict[str, tuple[str, Callable[[ServingStore, str], Any]]] = {
        f"/v1/{r.name}/": (r.template, r.lookup) for r in routes.values()}
    hot[f"/v1/{PREDICTIONS}/"] = (f"/v1/{PREDICTIONS}/{{key}}", prediction)
    return hot


class _Route:
    """What :class:`FastLookups` puts in ``scope["route"]`` (the metrics read the template from it)."""

    def __init__(self, path: str) -> None:
        self.path = path


class FastLookups:
    """ASGI: answers the single-key lookups (the hot path) without FastAPI's request machinery, with the
    same handlers as the FastAPI routes; every other request goes to ``app``."""

    def __init__(self, app: Any, store: ServingStore, routes: Mapping[str, RouteSpec] | None = None,
                 options: AppOptions | None = None) -> None:
        self.app, self.store, self.options = app, store, options or AppOptions()
        self.routes = {prefix: (_Route(template), handler)
                       for prefix, (template, handler) in hot_routes(routes or {}).items()}
        self.score_route = _Route(SCORE_ROUTE)
        batches = [BatchRoute.of(r) for r in (routes or {}).values() if r.batch_field is not None]
        self.batches = {b.template: (_Route(b.template), b) for b in [*batches, _PREDICTIONS_BATCH]}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if (scope["type"] == "http" and scope["method"] == "POST" and path.startswith("/v1/score/")
                and path[10:] in self.options.online):
            scope["route"] = self.score_route
            try:
                status, body = 200, score_body(self.options.online[path[10:]], _rows(await _read_body(receive)),
                                               self.options)
            except ServiceError as exc:
                status, body = exc.status, {"error": exc.message}
            await _send_json(send, status, orjson.dumps(body))
            return
        if scope["type"] == "http" and scope["method"] == "POST" and path in self.batches:
            await self._batch(scope, receive, send, *self.batches[path])
            return
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


    async def _batch(self, scope: dict, receive: Any, send: Any, route: _Route, batch: BatchRoute) -> None:
        """A batch lookup; a body that is not plainly valid goes to FastAPI's validation (same 422s)."""
        body = await _read_body(receive)
        try:
            wanted = batch.keys(orjson.loads(body)) if _json_content(scope) else None
        except orjson.JSONDecodeError:
            wanted = None
        if wanted is None:
            await self.app(scope, _replay(body, receive), send)
            return
        scope["route"] = route
        try:
            status, payload = 200, batch_answer(self.store, self.options, batch, wanted)
        except ServiceError as exc:
            status, payload = exc.status, orjson.dumps({"error": exc.message})
        await _send_json(send, status, payload)


def _json_content(scope: dict) -> bool:
    """Whether FastAPI would read the body as JSON: no content type, or ``application/json``."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";")[0].strip().lower() == b"application/json"
    return True


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that gives ``body`` again, then what ``receive`` gives (a disconnect)."""
    sent = False

    async def again() -> dict:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _rows(body: bytes) -> Any:
    """The ``rows`` of a score request's JSON body (422 when it is not JSON or has no ``rows``)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ServiceError(422, f"body: not JSON ({exc})") from None
    if not isinstance(parsed, dict) or "rows" not in parsed:
        raise ServiceError(422, "body: expected an object with rows")
    return parsed["rows"]


async def _send_json(send: Any, status: int, payload: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]})
    await send({"type": "http.response.body", "body": payload})


def _batch_limit(n: int, options: AppOptions) -> None:
    if n > options.max_batch_keys:
        raise ServiceError(422, f"{n} keys in one request: at most {options.max_batch_keys} (serve.max_batch_keys)")


def _json_bytes(payload: bytes) -> Response:
    return Response(payload, status_code=200, media_type="application/json")


@dataclass(frozen=True)
class BatchRoute:
    """A batch lookup route, ``POST /v1/<name>`` with ``{field: [keys]}``: what both its FastAPI route and
    :class:`FastLookups` answer it with."""

    template: str
    field: str
    key_type: type
    check: Callable[[Any], Any]
    answer: Callable[[ServingStore, list[Any]], bytes]

    @classmethod
    def of(cls, route: RouteSpec) -> BatchRoute:
        return cls(f"/v1/{route.name}", str(route.batch_field), int if route.key_type == "int" else str,
                   route.check_batch_key, route.batch_json)

    def keys(self, parsed: Any) -> list[Any] | None:
        """The keys of a parsed body when it is exactly what the route's request model accepts as is (an
        object whose ``field`` is a non-empty list of keys of the route's type), else ``None``."""
        wanted = parsed.get(self.field) if isinstance(parsed, dict) and len(parsed) == 1 else None
        if type(wanted) is not list or not wanted or any(type(k) is not self.key_type for k in wanted):
            return None
        return wanted


_PREDICTIONS_BATCH = BatchRoute(f"/v1/{PREDICTIONS}", "keys", str, parse_key, predictions_json)


def batch_answer(store: ServingStore, options: AppOptions, route: BatchRoute, wanted: list[Any]) -> bytes:
    """The JSON answer of ``route`` for the keys of a valid body, or :class:`ServiceError`."""
    _batch_limit(len(wanted), options)
    return route.answer(store, [route.check(k) for k in wanted])


def _endpoint(fn: Callable[..., Any], name: str, annotation: Any) -> Callable[..., Any]:
    """``fn`` with the one parameter ``name`` FastAPI reads (a path parameter or the body)."""
    fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation)])
    return fn


def _add_lookup_routes(app: FastAPI, store: ServingStore, options: AppOptions) -> None:
    """The single-key GET routes (the app's, then ``/v1/predictions/{key}``), then their batch forms."""
    for route in options.routes.values():
        _add_get(app, store, route)

    @app.get(f"/v1/{PREDICTIONS}/{{key}}", responses=_ERRORS,
             summary="any key of the current version: its fields (or value) plus realtime")
    async def get_prediction(key: str) -> Response:
        return json_response(200, prediction(store, key))

    for route in options.routes.values():
        if route.batch_field is not None:
            _add_batch(app, store, options, route)

    @app.post(f"/v1/{PREDICTIONS}", response_model=BatchResults, responses=_ERRORS,
              summary="several keys at once, all from one version")
    async def predictions_batch(body: KeysRequest) -> Response:
        return _json_bytes(batch_answer(store, options, _PREDICTIONS_BATCH, body.keys))

    lookups = {*options.routes, PREDICTIONS}

    # malformed lookup paths (missing or extra segments) are bad requests, not unknown routes
    @app.get("/v1/{kind}/{rest:path}", include_in_schema=False)
    async def malformed(kind: str, rest: str) -> Response:
        if kind in lookups:
            raise ServiceError(400, f"bad path '/v1/{kind}/{rest}': expected /v1/{kind}/<id>")
        raise HTTPException(404)


def _add_get(app: FastAPI, store: ServingStore, route: RouteSpec) -> None:
    """``GET /v1/<name>/{key}`` of a declared route."""
    async def get_one(**params: str) -> Response:
        return json_response(200, route.lookup(store, params[route.key]))

    app.add_api_route(route.template, _endpoint(get_one, route.key, str), methods=["GET"], name=route.name,
                      response_model=_response_model(route), responses=_ERRORS,
                      summary=route.docs.get("get", f"a {route.noun}'s value merged with the real-time view"))


def _add_batch(app: FastAPI, store: ServingStore, options: AppOptions, route: RouteSpec) -> None:
    """``POST /v1/<name>`` with ``{batch_field: [...]}``: every key read from one version."""
    spec = BatchRoute.of(route)

    async def get_many(body: BaseModel) -> Response:
        return _json_bytes(batch_answer(store, options, spec, getattr(body, route.batch_field)))

    app.add_api_route(f"/v1/{route.name}", _endpoint(get_many, "body", _request_model(route)), methods=["POST"],
                      name=f"{route.name}_batch", response_model=BatchResults, responses=_ERRORS,
                      summary=route.docs.get("post", f"several {route.noun}s at once, all from one version"))


class ScoreRequest(BaseModel):
    rows: list[dict[str, Any]] = Field(min_length=1, description=(
        "entities to score: each row holds the entity columns the model's feature sets are keyed by, and may "
        "hold request-time values of feature columns; at most serve.max_batch_keys rows"))


class ScoreResults(BaseModel):
    model: str
    version: str = Field(description="the registered model version that scored every row")
    results: list[dict[str, Any]] = Field(description="one per row, in order: score (and prediction: multiclass)")


def score_body(model: Any, rows: Any, options: AppOptions) -> Any:
    """The answer of ``POST /v1/score/<model>`` for the request's ``rows`` (ServiceError for a bad request)."""
    from lakeloop.online import OnlineError

    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ServiceError(422, "rows: expected a non-empty list of objects")
    _batch_limit(len(rows), options)
    try:
        return model.score(rows)
    except OnlineError as exc:
        raise ServiceError(exc.status, exc.message) from None
    except Exception as exc:  # noqa: BLE001 - the store's failures (the model's are OnlineErrors)
        log.warning("online score failed: %s", exc)
        raise ServiceError(503, f"score failed: serving store unavailable ({exc})") from None


def _add_score_routes(app: FastAPI, options: AppOptions) -> None:
    """``POST /v1/score/{model}`` for every online model (:mod:`lakeloop.online`)."""
    if not options.online:
        return
    names = ", ".join(sorted(options.online))

    @app.post(SCORE_ROUTE, response_model=ScoreResults, responses={
        **_ERRORS, 404: {"model": ErrorBody, "description": "not an online model"},
        503: {"model": ErrorBody, "description": "serving store unavailable or no model version loaded"}},
        summary="score entities online: materialized features, request-time values, the @champion model")
    async def score(model: str, body: ScoreRequest) -> Response:
        found = options.online.get(model)
        if found is None:
            raise ServiceError(404, f"no online model {model!r} (serve.online.models: {names})")
        return json_response(200, score_body(found, body.rows, options))


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
