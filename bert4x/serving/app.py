"""The HTTP JSON service: FastAPI routes over dynamic batchers, with limits and metrics.

A *service* (one per task run, see ``tasks/serving.py``) names its batch functions and its
endpoints; this module turns them into an ASGI app with:

* ``/health`` (what is served, and task requests received and in progress) and ``/metrics``
  (Prometheus text: requests by endpoint and status, latency, batch sizes, queue depth), plus
  an optional page at ``/``;
* limits: request body size (413), items per request and characters per text (422, checked by
  :func:`check_texts`), waiting items (429), and a time limit per request (504);
* one JSON shape for every error, ``{"error": {"status", "message", "details"}}``: bad input is
  always a 4xx, and an unknown path a 404, never a 500.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from bert4x.serving.batching import DynamicBatcher, ServerBusy


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask and how batches form."""

    max_body_bytes: int = 64 * 1024
    max_items: int = 64  # texts (or pairs) per request
    max_text_chars: int = 1000
    timeout_seconds: float = 30.0
    max_batch: int = 32
    batch_wait_ms: float = 5.0
    max_waiting: int = 4096  # items queued per batcher before requests get 429


class BadRequest(Exception):
    """Input a handler rejects after parsing (HTTP 422, or ``status``)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def check_text(text: str, limits: Limits, field: str = "text") -> None:
    """Reject a text that is blank or longer than the limit."""
    if not text.strip():
        raise BadRequest(f"{field} is empty or white space")
    if len(text) > limits.max_text_chars:
        raise BadRequest(f"{field} has {len(text)} characters; at most {limits.max_text_chars}")


def check_texts(texts: Sequence[str], limits: Limits, field: str = "texts",
                max_items: Optional[int] = None) -> None:
    """Reject an empty list, too many texts (``max_items``, default the limit's), and any text
    :func:`check_text` rejects."""
    max_items = limits.max_items if max_items is None else max_items
    if not texts:
        raise BadRequest(f"{field} is empty: give at least one text")
    if len(texts) > max_items:
        raise BadRequest(f"{field} has {len(texts)} items; at most {max_items} per request")
    for number, text in enumerate(texts):
        check_text(text, limits, f"{field}[{number}]")


Submit = Callable[[str, Sequence[Any]], Awaitable[List[Any]]]


@dataclasses.dataclass
class Endpoint:
    """``POST path``: the body parsed as ``request``, answered by ``handle(body, submit)``."""

    path: str
    request: type
    handle: Callable[[BaseModel, Submit], Awaitable[dict]]
    summary: str


@dataclasses.dataclass
class BatchFunction:
    """``function(items) -> results``, run on the model thread; ``max_batch`` overrides the
    limit (1 for work that does not batch, such as beam search)."""

    function: Callable[[List[Any]], Sequence[Any]]
    max_batch: Optional[int] = None


class Metrics:
    """The Prometheus series of one app (its own registry, so apps in one process don't mix)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("bert4x_requests", "HTTP requests", ["endpoint", "status"],
                                registry=self.registry)
        self.latency = Histogram("bert4x_request_seconds", "request latency", ["endpoint"],
                                 registry=self.registry,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.batch_size = Histogram("bert4x_batch_size", "items per model call", ["batcher"],
                                    registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.batch_seconds = Histogram("bert4x_batch_seconds", "model call time", ["batcher"],
                                       registry=self.registry)
        self.waiting = Gauge("bert4x_waiting_items", "items queued for a model call",
                             ["batcher"], registry=self.registry)


def _error(status: int, message: str, details: Any = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message, "details": details}},
                        status_code=status)


class _BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes gets 413 before any parsing, whether it
    declares its length or streams it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(scope, receive, send)
        received, rejected = 0, False

        async def counting_receive():
            # Past the limit the app is told the client left (it stops reading) and whatever
            # it answers is dropped for the 413 below.
            nonlocal received, rejected
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    rejected = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not rejected:
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not rejected:
                raise
        if rejected:
            await self._reject(scope, receive, send)

    async def _reject(self, scope, receive, send):
        response = _error(413, f"request body over {self.limit} bytes")
        await response(scope, receive, send)


def create_app(services: Sequence[Any], limits: Limits = Limits(),
               page: Optional[str] = None) -> FastAPI:
    """The app serving every endpoint of ``services``; ``page``: HTML for ``/``.

    Each service has ``name``, ``batch_functions() -> {name: BatchFunction}`` and
    ``endpoints() -> [Endpoint]``.
    """
    metrics = Metrics()
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                     thread_name_prefix="bert4x-model")
    batchers: Dict[str, DynamicBatcher] = {}
    for service in services:
        for name, spec in service.batch_functions().items():
            if name in batchers:
                raise ValueError(f"two services define the batch function {name!r}")
            batchers[name] = DynamicBatcher(
                name, spec.function, executor, max_batch=spec.max_batch or limits.max_batch,
                wait_seconds=limits.batch_wait_ms / 1000, max_waiting=limits.max_waiting,
                on_batch=_batch_recorder(metrics, name))
    endpoints: List[Tuple[str, Endpoint]] = [(service.name, endpoint) for service in services
                                             for endpoint in service.endpoints()]
    paths = [endpoint.path for _, endpoint in endpoints]
    if len(set(paths)) != len(paths):
        raise ValueError(f"two services serve the same path: {sorted(paths)}")

    @contextlib.asynccontextmanager
    async def lifespan(_):
        for batcher in batchers.values():
            batcher.start()
        yield
        for batcher in batchers.values():
            await batcher.stop()
        executor.shutdown(wait=True)

    app = FastAPI(title="bert4x", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.add_middleware(_BodyLimit, limit=limits.max_body_bytes)

    async def submit(batcher: str, items: Sequence[Any]) -> List[Any]:
        return await batchers[batcher].submit(items)

    for _, endpoint in endpoints:
        _add_route(app, endpoint, submit, limits)

    # Task requests received and being handled, by path: what a graceful shutdown must finish.
    received, handling = dict.fromkeys(paths, 0), dict.fromkeys(paths, 0)

    @app.get("/health")
    async def health():
        return {"status": "ok", "tasks": [service.name for service in services],
                "endpoints": {endpoint.path: task for task, endpoint in endpoints},
                "waiting": {name: batcher.waiting for name, batcher in batchers.items()},
                "received": received, "handling": handling}

    known = set(paths) | {"/health", "/metrics", "/"}

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        path = request.url.path if request.url.path in known else "other"
        task_path = path in handling
        if task_path:
            received[path] += 1
            handling[path] += 1
        try:
            response = await call_next(request)
        finally:
            if task_path:
                handling[path] -= 1
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics")
    async def prometheus():
        for name, batcher in batchers.items():
            metrics.waiting.labels(name).set(batcher.waiting)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if page is not None:
        @app.get("/", response_class=HTMLResponse)
        async def index():
            return page

    @app.exception_handler(RequestValidationError)
    async def invalid(_, error: RequestValidationError):
        details = [{"where": ".".join(str(part) for part in e["loc"]), "problem": e["msg"]}
                   for e in error.errors()]
        first = details[0] if details else {"where": "body", "problem": "invalid"}
        return _error(422, f"{first['where']}: {first['problem']}", details)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        message = error.detail if isinstance(error.detail, str) else "request failed"
        if error.status_code == 404:
            message = f"no endpoint {request.url.path}; GET /health lists them"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return _error(error.status_code, message)

    return app


def _batch_recorder(metrics: Metrics, name: str):
    def record(size: int, seconds: float):
        metrics.batch_size.labels(name).observe(size)
        metrics.batch_seconds.labels(name).observe(seconds)
    return record


def _add_route(app: FastAPI, endpoint: Endpoint, submit: Submit, limits: Limits) -> None:
    async def route(body):
        try:
            return await asyncio.wait_for(endpoint.handle(body, submit), limits.timeout_seconds)
        except BadRequest as error:
            return _error(error.status, str(error))
        except ServerBusy as error:
            response = _error(429, f"server busy: {error}")
            response.headers["Retry-After"] = "1"
            return response
        except asyncio.TimeoutError:
            return _error(504, f"no answer within {limits.timeout_seconds:g} s")
        except Exception as error:  # a bug or a model failure, never bad input
            return _error(500, f"internal error: {type(error).__name__}: {error}")

    # The body's type is the endpoint's request model: FastAPI reads it from the annotation
    # (set here, since this module's annotations are strings it could not resolve).
    route.__annotations__ = {"body": endpoint.request}

    app.add_api_route(endpoint.path, route, methods=["POST"], summary=endpoint.summary)


