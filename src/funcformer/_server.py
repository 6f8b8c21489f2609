"""The HTTP server: every function under a directory behind one endpoint (`funcformer serve`).

    funcformer serve functions/ --port 8000
    curl -s localhost:8000/v1/functions/sentiment -d '{"inputs": ["Great battery."]}'

One Engine holds every function, so functions on one backbone share it in memory and, per
batch, one encoder pass. A request is checked on the event loop (API key, size limits, schema,
inputs), queued, and coalesced with concurrent ones into engine batches that run in a worker
thread, so the loop stays responsive while torch computes (see `_serving`). Artifacts that
change on disk are reloaded (polling, and SIGHUP); queued requests finish on the version they
were admitted on. Errors are JSON: `{"error": {"type", "message", "field"?}}`; bad input is
never a 500.
"""

# No `from __future__ import annotations` here: FastAPI reads the route functions' annotations
# (Request, the body models) at definition time, and Request is imported only when an app is made.
import asyncio
import hmac
import ipaddress
import json
import logging
import os
import signal
import struct
import threading
from collections.abc import Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from ._artifact import MANIFEST, function_folders
from ._cache import Cache, MemoryCache
from ._errors import DataError, FuncformerError, require
from ._serving import (
    Batcher,
    Batching,
    HTTPError,
    Job,
    Limits,
    Registry,
    Version,
    admit,
    admit_generation,
    admit_options,
    check_options,
    group_of,
)

log = logging.getLogger("funcformer.server")
DOCS_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
               "redoc.standalone.js": "text/javascript", "favicon.png": "image/png"}
"""The docs pages' scripts, style and icon, served from the `fastapi-offline` package (the
`server` extra) so that /docs and /redoc work on a host with no internet."""
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc",
                        "/openapi.json", *(f"/docs/assets/{name}" for name in DOCS_ASSETS)})
"""Paths served without the API key: probes and the API description (no function names)."""
ROUTES = ("POST /v1/functions/{name}, GET /v1/functions, POST /v1/embeddings, GET /healthz, "
          "GET /readyz, GET /metrics, GET /docs")
"""What a 404 or 405 lists."""
RUNTIMES = ("torch", "onnx", "onnx-int8")
DTYPES = (None, "float32", "bfloat16", "float16")
SERVER_CACHE_ITEMS = 20_000
"""The default in-memory cache's size: an embedding's cached JSON is ~8 kB, so ~160 MB at most."""
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class FunctionRequest(BaseModel):
    """POST /v1/functions/{name}."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[Any] = Field(min_length=1, description="Texts (a pair function takes "
                              "[text_a, text_b] pairs); one output per input, in order.")
    options: dict[str, Any] = Field(default_factory=dict, description="Call options of the "
                                    "function (e.g. k for search); GET /v1/functions lists them.")


class FunctionResponse(BaseModel):
    outputs: list[dict[str, Any]] = Field(description="The task's result per input, as JSON.")


class EmbeddingRequest(BaseModel):
    """POST /v1/embeddings, as OpenAI's embeddings API takes it (unknown fields ignored)."""

    model_config = ConfigDict(extra="ignore")
    input: str | list[str] = Field(description="A text or a (non-empty) list of texts.")
    model: str = Field(description="An embed function's name, or a backbone that the served "
                       "functions use (embeddings without training).")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(None, description="Must equal the model's size if "
                                         "given.")  # not "32" or true, as OpenAI's
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        # one message for the field, not pydantic's per union branch ('input.str')
        if isinstance(value, str) or (isinstance(value, list) and value
                                      and all(isinstance(v, str) for v in value)):
            return value
        raise ValueError("expected a text or a non-empty list of texts")


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: dict[str, int]


class ErrorBody(BaseModel):
    error: dict[str, str]


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in (
        (401, "Missing or invalid API key"), (404, "Unknown function or model"),
        (413, "Over a size limit (named in the message)"), (422, "Invalid request or input"),
        (429, "Queue full; see Retry-After"), (503, "Function failed to load, or loading"))}


class Server:
    """Everything one app runs: the Engine, its registry of functions, the batcher, metrics
    and the reload poller. `create_app` makes one and runs it in the app's lifespan."""

    def __init__(self, directory: Path, *, batching: Batching, limits: Limits,
                 cache: Cache | str | os.PathLike[str] | None, runtime: str,
                 reload_interval: float, reload_signal: bool, dtype: str | None = None,
                 device: str = "cpu") -> None:
        from ._engine import Engine

        self.limits = limits
        self.reload_interval = reload_interval
        self.reload_signal = reload_signal
        self.engine = Engine(cache=MemoryCache(SERVER_CACHE_ITEMS) if cache == "memory"
                             else cache)
        self.metrics = Metrics(self)
        self.registry = Registry(directory, self.engine, runtime=runtime, dtype=dtype,
                                 device=device,
                                 on_load=lambda r: self.metrics.loads.labels(r).inc())
        self.batcher = Batcher(self.engine, batching, limits.max_queue,
                               observe=self.metrics.observe_batch)
        self._watcher: asyncio.Task[None] | None = None
        self._signalled: set[asyncio.Task[None]] = set()
        """Scans started by SIGHUP, referenced until done (the loop keeps only weak ones)."""

    @property
    def ready(self) -> bool:
        return self.registry.scanned.is_set()

    async def start(self) -> None:
        """Start batching and load the functions in the background (GET /readyz says when)."""
        self.batcher.start()
        loop = asyncio.get_running_loop()
        self._watcher = loop.create_task(self._watch())
        if self.reload_signal and threading.current_thread() is threading.main_thread():
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._signalled.add(task)
        task.add_done_callback(self._signalled.discard)

    async def stop(self) -> None:
        if self.reload_signal and threading.current_thread() is threading.main_thread():
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await self.batcher.stop()

    async def reload(self) -> None:
        """Scan the directory now (SIGHUP); a failure is logged, never raised."""
        try:
            await self.registry.scan()
        except Exception:
            log.exception("Scanning %s for functions failed", self.registry.directory)

    async def _watch(self) -> None:
        await self.reload()
        while self.reload_interval > 0:
            await asyncio.sleep(self.reload_interval)
            await self.reload()

    async def run(self, version: Version, inputs: list[Any], options: dict[str, Any],
                  render: Callable[[list[Any]], bytes], receive: Any = None) -> bytes:
        """Queue one request's inputs and wait for its response body. `receive`: the request's
        ASGI receive, watched for the client's disconnect, which cancels the job (uvicorn
        does not cancel a request whose client went away; a generation ran on to its end)."""
        loop = asyncio.get_running_loop()
        job = Job(group=group_of(version, options), version=version, inputs=inputs,
                  options=options, render=render, future=loop.create_future(),
                  arrived=loop.time())
        self.batcher.submit(job)
        watch = asyncio.ensure_future(_disconnected(receive)) if receive is not None else None
        try:
            if watch is not None:
                await asyncio.wait({job.future, watch}, return_when=asyncio.FIRST_COMPLETED)
                if not job.future.done():  # the client went away: nobody reads this answer
                    raise HTTPError(499, "client_gone", "The client disconnected.")
            return await job.future
        except (FuncformerError, ValueError) as err:  # the function rejected this input
            option = getattr(err, "option", None)
            if option is not None and option in options:  # ...or one of the call's options
                raise HTTPError(422, "invalid_request", f"options.{option}: {err}",
                                field=f"options.{option}") from None
            raise HTTPError(422, "invalid_input", str(err)) from None
        except TypeError as err:
            if options:  # an option of the wrong type
                raise HTTPError(422, "invalid_request", f"options: {err}",
                                field="options") from None
            raise internal_error(err) from None
        except HTTPError:
            raise
        except Exception as err:
            raise internal_error(err) from None
        finally:
            if watch is not None:
                watch.cancel()
            if not job.future.done():  # left without its answer (gone, or cancelled): the
                job.future.cancel()    # batcher skips it, and a generation for it stops


async def _disconnected(receive: Any) -> None:
    """Return once `receive` (called after the body was read) says the client disconnected."""
    message = await receive()
    while message["type"] != "http.disconnect":  # more body: read past it
        message = await receive()


def internal_error(err: BaseException) -> HTTPError:
    """A bug, not bad input: logged with its traceback, answered with a 500 saying so."""
    log.error("Internal error: %s", err, exc_info=err)
    return HTTPError(500, "internal", f"Internal error ({type(err).__name__}). This is a bug "
                     "in funcformer; the server log has the traceback.")


class Metrics:
    """Prometheus metrics in a registry of the app's own (several apps may share a process)."""

    def __init__(self, server: Server) -> None:
        prometheus = require("prometheus_client", "server")
        self.registry = prometheus.CollectorRegistry()
        self.requests = prometheus.Counter(
            "funcformer_requests", "Inference requests by function and HTTP status",
            ["function", "status"], registry=self.registry)
        self.latency = prometheus.Histogram(
            "funcformer_request_seconds", "Inference request latency, from arrival to answer",
            ["function"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_inputs = prometheus.Histogram(
            "funcformer_batch_inputs", "Inputs per engine batch", buckets=SIZE_BUCKETS,
            registry=self.registry)
        self.batch_requests = prometheus.Histogram(
            "funcformer_batch_requests", "Requests coalesced into one engine batch",
            buckets=SIZE_BUCKETS, registry=self.registry)
        self.loads = prometheus.Counter("funcformer_artifact_loads", "Artifact loads by result",
                                        ["result"], registry=self.registry)
        self.registry.register(_StateCollector(server))

    def observe_batch(self, jobs: list[Job]) -> None:
        self.batch_inputs.observe(sum(len(job.inputs) for job in jobs))
        self.batch_requests.observe(len(jobs))

    def text(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _StateCollector:
    """Values read when scraped: cache hits and misses, functions by status, queue depth."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        cache = self.server.engine.cache
        if cache is not None:
            yield CounterMetricFamily("funcformer_cache_hits", "Result and feature cache hits",
                                      value=cache.hits)
            yield CounterMetricFamily("funcformer_cache_misses", "Result and feature cache "
                                      "misses", value=cache.misses)
        functions = GaugeMetricFamily("funcformer_functions", "Functions by status",
                                      labels=["status"])
        counts: dict[str, int] = {"ready": 0, "failed": 0, "loading": 0}
        for entry in self.server.registry.describe():
            counts[entry["status"]] += 1
        for status, count in counts.items():
            functions.add_metric([status], count)
        yield functions
        yield GaugeMetricFamily("funcformer_queue_inputs", "Inputs waiting for a batch",
                                value=self.server.batcher.queued)


def create_app(directory: str | os.PathLike[str], *, api_key: str | None = None,
               max_batch_tokens: int = Batching.max_tokens,
               max_wait_ms: float = Batching.max_wait_ms,
               cache: Cache | str | os.PathLike[str] | None = "memory",
               limits: Limits | None = None, runtime: str = "torch",
               reload_interval: float = 1.0, reload_signal: bool = False,
               dtype: str | None = None, device: str = "cpu",
               cors_origins: Sequence[str] = ()) -> Any:
    """A FastAPI app serving every function artifact under `directory` (one per folder).

    `cache`: "memory" (an LRU of 20,000 entries), an SQLite path, a Cache, or None.
    `runtime`: "onnx" / "onnx-int8" run every function but generate ones on its ONNX export
    (generate functions run on torch).
    `dtype`: "bfloat16" runs the torch runtime's encoders in bfloat16 (about 2x the texts/s of
    float32 on CPUs with AMX or AVX512-BF16, at a small numerical cost); None is float32.
    `device`: the torch runtime's device ("cuda", "cuda:1"; checked here, before any load).
    `cors_origins`: web pages (origins such as "https://app.example.com") whose scripts may
    call the server from a browser; "*" for any, with an API key only.
    `reload_interval`: seconds between scans of `directory` (0: only on `reload_signal`,
    which reloads on SIGHUP when the app runs in the main thread). Functions load in the
    background once the app starts; GET /readyz answers 200 when they have.

    >>> app = create_app("functions", api_key="s3cret")       # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)         # doctest: +SKIP
    """
    fastapi = require("fastapi", "server")
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory. Fix: pass the directory holding your "
                        "function folders (each written by 'funcformer train --out').")
    if (root / MANIFEST).is_file():
        raise DataError(f"{root} is itself a function (it holds {MANIFEST}); serve takes the "
                        f"directory of function folders. Fix: funcformer serve "
                        f"{root.parent}, or move {root.name} into a folder of its own.")
    if not _holds_functions(root):
        log.warning("%s holds no functions yet (folders written by 'funcformer train --out'); "
                    "those added later are loaded as they appear.", root)
    _check_runtime(runtime, dtype, device)
    check_api_key(api_key)
    origins = check_origins(cors_origins, api_key)
    limits = limits or Limits()
    server = Server(root, batching=Batching(max_tokens=max_batch_tokens,
                                            max_wait_ms=max_wait_ms),
                    limits=limits, cache=cache, runtime=runtime, dtype=dtype, device=device,
                    reload_interval=reload_interval, reload_signal=reload_signal)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    # redirect_slashes off: '/v1/functions/x/' got a 307 to an http:// URL built from the
    # Host header (wrong behind a TLS proxy); now a JSON 404 naming the routes
    assets = _docs_assets()
    app = fastapi.FastAPI(title="funcformer", lifespan=lifespan, version=_version(),
                          redirect_slashes=False, docs_url=None if assets else "/docs",
                          redoc_url=None if assets else "/redoc",
                          description="Trained funcformer functions over HTTP. Send the API "
                          "key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'.")
    app.state.server = server
    if api_key is not None:
        _declare_key(app)
    _error_handlers(app)
    _function_routes(app, server)
    _service_routes(app, server)
    if assets:
        _docs_routes(app, assets)
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=limits.max_body_bytes,
                       metrics=server.metrics, served=lambda: server.registry.slots,
                       origins=origins)
    if origins:  # outside the Guard: a preflight carries no key and is answered here
        from starlette.middleware.cors import CORSMiddleware

        # allow_private_network: Chromium asks it of a public page calling a loopback server
        # (a 400 'Disallowed CORS private-network' without it)
        app.add_middleware(CORSMiddleware, allow_origins=list(origins),
                           allow_methods=["GET", "POST"], max_age=600,
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"],
                           allow_private_network=True)
    return app


def route_path(scope: dict[str, Any]) -> str:
    """The path a request's route is matched on: without the `root_path` a proxy mounts the
    server under (uvicorn --root-path /api puts '/api/healthz' in scope["path"]), exactly as
    Starlette's router strips it; the Guard compared the whole path, so behind such a proxy
    /healthz needed the key and /v1/ bodies were not read as JSON.

    >>> [route_path({"path": p, "root_path": r}) for p, r in [("/api/healthz", "/api"),
    ...  ("/api//healthz", "/api/"), ("//healthz", "/"), ("/apix/healthz", "/api")]]
    ['/healthz', '/healthz', '/healthz', '/apix/healthz']
    """
    path, root = scope["path"], scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root):] if path[len(root)] == "/" else path


def check_origins(origins: Sequence[str], api_key: str | None) -> tuple[str, ...]:
    """`--cors-origin` values as browsers send them ('https://app.example.com', no path or
    trailing slash), or a DataError with the fix; "*" only with an API key (without one, any
    page visited could run the functions)."""
    if isinstance(origins, str):  # taken one character at a time
        raise DataError(f"cors_origins must be a list of origins, got the string {origins!r:.80}."
                        f" Fix: cors_origins=[{origins!r:.80}].")
    out = []
    for origin in origins:
        if origin == "*":
            if api_key is None:
                raise DataError("--cors-origin '*' lets every web page call the server, and "
                                "it has no API key. Fix: name the pages' origins (e.g. "
                                "--cors-origin http://localhost:3000), or set --api-key.")
            out.append(origin)
            continue
        if not _is_origin(origin.lower()):
            raise DataError(f"--cors-origin {origin!r:.80} is not an origin as a browser sends "
                            "it. Fix: the scheme, host and port only, e.g. "
                            "https://app.example.com or http://localhost:3000 (no path or "
                            "trailing slash, no wildcard, no default port :443 / :80, a "
                            "non-ASCII host in its xn-- form).")
        out.append(origin.lower())
    return tuple(out)


def _is_origin(origin: str) -> bool:
    """Whether `origin` (lowercased) is one a browser would send: http(s), an ASCII host of
    letters, digits, '-' and '.' (or a bracketed IPv6 address), and a port only when it is
    not the scheme's default (browsers leave those out, so such a value never matches).

    >>> [_is_origin(o) for o in ("https://app.example.com", "http://localhost:3000",
    ...  "http://[::1]:8000", "https://x:443", "http://*.example.com", "https://x/")]
    [True, True, True, False, False, False]
    """
    import re

    match = re.fullmatch(r"(https?)://(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::([0-9]{1,5}))?", origin)
    if match is None or match.group(2).startswith((".", "-")):
        return False
    port = match.group(3)
    default = "443" if match.group(1) == "https" else "80"
    return port is None or (port != default and 0 < int(port) < 65536)


def _holds_functions(root: Path) -> bool:
    """Whether `root` has a function folder (a cheap look: no file of it is read)."""
    try:
        return bool(function_folders(root))
    except OSError as err:
        raise DataError(f"{root}: cannot be read ({err.strerror}). Fix: serve a directory "
                        "this user can read.") from None


def _declare_key(app: Any) -> None:
    """The schema names the API key (bearer or X-API-Key) on every guarded route, so /docs
    offers 'Authorize' and its 'Try it out' calls send the key (they all got 401)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()  # FastAPI keeps it as app.openapi_schema
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
            for path, item in schema["paths"].items():
                for operation in ([] if path in OPEN_PATHS else item.values()):
                    operation["security"] = [{"bearer": []}, {"apiKey": []}]
        return app.openapi_schema

    app.openapi = openapi


def _version() -> str:
    from ._version import __version__

    return __version__


def _function_routes(app: Any, server: Server) -> None:
    from fastapi import Request

    @app.get("/v1/functions", tags=["functions"], responses={401: ERRORS[401]})
    async def list_functions() -> dict[str, Any]:
        """Every function: name, status (ready, failed, loading), task, labels, version
        (digest), metrics, call options, and the last load error if any."""
        return {"functions": server.registry.describe()}

    @app.post("/v1/functions/{name}", tags=["functions"], response_model=FunctionResponse,
              responses=ERRORS)
    async def call_function(name: str, body: FunctionRequest, request: Request) -> Any:
        """Run function `name`: one output per input, in input order."""
        if name in server.registry.slots:
            request.state.function = name
        version = server.registry.acquire(name)
        try:
            admit_options(body.options, server.limits)  # sizes first: 413, never an echo
            check_options(version.function, body.options)
            inputs = admit(version.function, body.inputs, server.limits)
            admit_generation(version.function, inputs, body.options, server.limits)
            return _json(await server.run(version, inputs, body.options, _render_outputs,
                                          request.receive))
        finally:
            server.registry.release(version)

    @app.post("/v1/embeddings", tags=["functions"], response_model=EmbeddingResponse,
              responses=ERRORS)
    async def embeddings(body: EmbeddingRequest, request: Request) -> Any:
        """Embeddings in the shape of OpenAI's API, from an embed function or a backbone."""
        version = await server.registry.acquire_embedder(body.model)
        request.state.function = body.model
        try:
            fn = version.function
            size = fn.backbone.hidden_size
            if body.dimensions is not None and body.dimensions != size:
                raise HTTPError(422, "invalid_request", f"dimensions: '{body.model}' gives "
                                f"{size}-dimensional embeddings, not {body.dimensions}.",
                                field="dimensions")
            texts = [body.input] if isinstance(body.input, str) else body.input
            inputs = admit(fn, texts, server.limits, "input") if texts else []
            render = _embedding_renderer(fn, body.model, body.encoding_format, inputs)
            return _json(await server.run(version, inputs, {}, render) if inputs
                         else render([]))
        finally:
            server.registry.release(version)


def _service_routes(app: Any, server: Server) -> None:
    from fastapi import Response

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, str]:
        """200 while the process serves HTTP."""
        return {"status": "ok"}

    # HEAD too, for probes that use it (one route: FastAPI would name two operations alike)
    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)

    @app.get("/readyz", tags=["service"], responses={503: {"description": "Still loading"}})
    async def readyz() -> Any:
        """200 once the functions have been loaded (failed ones counted), else 503."""
        if not server.ready:
            return _json(json.dumps({"status": "loading"}).encode(), 503)
        statuses = [entry["status"] for entry in server.registry.describe()]
        return {"status": "ready", "functions": statuses.count("ready"),
                "failed": statuses.count("failed")}

    @app.get("/metrics", tags=["service"])
    async def metrics() -> Any:
        """Prometheus text format: requests by function and status, latency, batch sizes,
        queue depth, cache hits and misses, functions by status, artifact loads."""
        body, content_type = server.metrics.text()
        return Response(body, media_type=content_type)


def _docs_assets() -> Path | None:
    """The folder of `fastapi-offline`'s copies of Swagger UI and ReDoc, or None where that
    package is missing (FastAPI's pages then load them from a public CDN, as they used to)."""
    import importlib.util

    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        log.warning("/docs and /redoc load their scripts from a public CDN (blank without "
                    "internet): install 'funcformer[server]' to serve them from here.")
        return None
    folder = Path(spec.origin).parent / "static"
    return folder if all((folder / name).is_file() for name in DOCS_ASSETS) else None


def _docs_routes(app: Any, assets: Path) -> None:
    """/docs and /redoc as FastAPI makes them, their scripts served from `assets` (a fixed
    list of files: nothing in a request's path names a file) instead of a CDN."""
    from fastapi import Request, Response
    from fastapi.openapi.docs import (
        get_redoc_html,
        get_swagger_ui_html,
        get_swagger_ui_oauth2_redirect_html,
    )

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> Any:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{app.swagger_ui_oauth2_redirect_url}",
            swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
            swagger_favicon_url=f"{root}/docs/assets/favicon.png")

    @app.get(app.swagger_ui_oauth2_redirect_url, include_in_schema=False)
    async def swagger_redirect() -> Any:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> Any:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}/docs/assets/redoc.standalone.js",
                              redoc_favicon_url=f"{root}/docs/assets/favicon.png",
                              with_google_fonts=False)

    def serve(body: bytes, media_type: str) -> Callable[[], Any]:
        async def asset() -> Any:
            return Response(body, media_type=media_type,
                            headers={"Cache-Control": "public, max-age=86400"})

        return asset

    for name, media_type in DOCS_ASSETS.items():
        app.add_api_route(f"/docs/assets/{name}", serve((assets / name).read_bytes(), media_type),
                          methods=["GET"], include_in_schema=False)


def _json(body: bytes, status: int = 200) -> Any:
    from fastapi import Response

    return Response(body, status_code=status, media_type="application/json")


def _render_outputs(results: list[Any]) -> bytes:
    outputs = [r.to_dict() for r in results]
    return json.dumps({"outputs": outputs}, ensure_ascii=False).encode()


def _embedding_renderer(fn: Any, model: str, encoding: str,
                        texts: list[str]) -> Callable[[list[Any]], bytes]:
    """Builds the OpenAI-shaped body in the worker thread (token counts need the tokenizer)."""

    def render(results: list[Any]) -> bytes:
        data = [{"object": "embedding", "index": i,
                 "embedding": _base64(r.vector) if encoding == "base64" else r.vector}
                for i, r in enumerate(results)]
        tokens = (sum(len(ids) for ids in fn.backbone.tokenize(
            texts, fn.manifest.config.get("max_length")).input_ids) if texts else 0)
        return json.dumps({"object": "list", "data": data, "model": model,
                           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}).encode()

    return render


def _base64(vector: list[float]) -> str:
    """Little-endian float32 bytes, base64: what OpenAI's clients decode."""
    import base64

    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _error_handlers(app: Any) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPError)
    async def known(request: Any, err: HTTPError) -> Any:
        return _error_response(err)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Any, err: RequestValidationError) -> Any:
        return _error_response(validation_error(err.errors()))

    @app.exception_handler(HTTPException)
    async def routing(request: Any, err: HTTPException) -> Any:
        if err.status_code == 400 and "parsing the body" in str(err.detail):
            # not UTF-8, nested past the JSON parser's depth, or an over-long number
            return _error_response(HTTPError(
                422, "invalid_json", "body: cannot be read as JSON (not UTF-8 text, nested "
                "too deeply, or a number too long). Fix: send the request as UTF-8 JSON.",
                field="body"))
        kinds = {404: "not_found", 405: "method_not_allowed"}
        message = str(err.detail)
        if err.status_code in kinds:
            message = (f"{message}: {request.method} {request.scope['path'][:80]}. Routes: "
                       f"{ROUTES}.")
        known = HTTPError(err.status_code, kinds.get(err.status_code, "error"), message)
        known.headers.update(err.headers or {})  # 405's Allow
        return _error_response(known)

    @app.exception_handler(Exception)
    async def bug(request: Any, err: Exception) -> Any:
        return _error_response(internal_error(err))


def _error_response(err: HTTPError) -> Any:
    response = _json(_error_bytes(err), err.status)
    response.headers.update(err.headers)
    return response


def validation_error(errors: Any) -> HTTPError:
    """422 naming the first field at fault ('inputs.2'); malformed JSON names the body."""
    first = next(iter(errors))
    location = [str(p) for p in first.get("loc", ())]
    if location[:1] == ["body"]:
        location = location[1:]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", first.get("msg"))
        return HTTPError(422, "invalid_json", f"body: not valid JSON: {reason} (at character "
                         f"{'.'.join(location) or 0}).", field="body")
    # a client's key can be any length: the message quotes at most 80 characters of each part
    location = [part if len(part) <= 80 else part[:80] + "..." for part in location]
    field = ".".join(location) or "body"
    message = str(first.get("msg")).removeprefix("Value error, ")  # our validators' own words
    return HTTPError(422, "invalid_request", f"{field}: {message}.", field=field)


class Guard:
    """ASGI middleware in front of the app: the API key (compared in constant time), the body
    size (read here, so an oversize body is never parsed), and request metrics."""

    def __init__(self, app: Any, *, api_key: str | None, max_body_bytes: int,
                 metrics: Metrics, served: Callable[[], Any] = dict,
                 origins: Sequence[str] = ()) -> None:
        self.app = app
        self.origins = {o.encode() for o in origins}  # pages let in without a key
        self.key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.served = served  # the names of the functions served now

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        started = loop.time()
        status: list[int] = [0]
        state = scope.setdefault("state", {})  # shared with the copy `_as_json` may make

        async def record(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        await self._guarded(scope, receive, record)
        if scope["method"] == "POST" and route_path(scope).startswith("/v1/"):
            function = state.get("function") or self._named(route_path(scope))
            # 499 (nginx's "client closed request"): gone before any answer was sent
            self.metrics.requests.labels(function, str(status[0] or 499)).inc()
            self.metrics.latency.labels(function).observe(loop.time() - started)

    def _named(self, path: str) -> str:
        """The served function a request's path names, for a request rejected before its
        route ran (a body that fails validation); "-" for any other name, so a client cannot
        add metric labels."""
        name = path.removeprefix("/v1/functions/")
        return name if name != path and name in self.served() else "-"

    async def _guarded(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = route_path(scope)
        if self.key is None and path not in OPEN_PATHS:
            foreign = _foreign(scope, self.origins)
            if foreign is not None:
                return await _send_error(send, foreign)
        if self.key is not None and path not in OPEN_PATHS \
                and not self._authorized(scope):
            error = HTTPError(401, "unauthorized", "Missing or invalid API key. Send it as "
                              "'Authorization: Bearer KEY' or 'X-API-Key: KEY'.",
                              headers={"WWW-Authenticate": "Bearer"})
            return await _send_error(send, error)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        if path.startswith("/v1/"):
            scope = _as_json(scope)
        body = await self._read_body(scope, receive)
        if isinstance(body, HTTPError):
            return await _send_error(send, body)
        if body is None:
            return None  # the client went away
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    def _authorized(self, scope: dict[str, Any]) -> bool:
        headers = dict(scope["headers"])
        given = headers.get(b"x-api-key", b"")
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer":
            given = token.strip()
        assert self.key is not None
        return hmac.compare_digest(given, self.key)

    async def _read_body(self, scope: dict[str, Any], receive: Any) -> bytes | HTTPError | None:
        too_large = HTTPError(413, "too_large", f"The request body is over the limit of "
                              f"{self.max_body_bytes:,} bytes (--max-body-bytes). Fix: send "
                              "fewer or shorter inputs per request.")
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return too_large
            if not message.get("more_body"):
                return b"".join(chunks)


def _foreign(scope: dict[str, Any], allowed: set[bytes] | frozenset[bytes] = frozenset()
             ) -> HTTPError | None:
    """A 403 for a request that a server without an API key (one on this machine's loopback)
    must not answer: one addressed to another host name (a page that rebound its own name to
    127.0.0.1 could read the answers), or sent by a web page of another site (a form or a
    text/plain fetch needs no CORS preflight: any page visited could run the functions)."""
    # every Host and Origin header, not the last one (Starlette reads the first)
    hosts = [v for k, v in scope["headers"] if k == b"host"]
    origins = [v for k, v in scope["headers"] if k == b"origin"]
    host = next((v for v in hosts if not _loopback(v)), None)
    origin = next((v for v in origins if not _loopback(v, origin=True)
                   and v.strip().lower() not in allowed), None)
    if host is not None:
        return HTTPError(403, "forbidden", f"This server has no API key, so it answers only "
                         f"requests addressed to this machine's loopback (localhost, "
                         f"127.0.0.1, [::1]); this one was addressed to "
                         f"{_shown(host)}. Fix: call it as http://127.0.0.1:PORT (or "
                         "localhost), or start it with --api-key to serve other names.")
    if origin is not None:
        return HTTPError(403, "forbidden", f"This server has no API key, so it refuses "
                         f"requests from web pages of other sites (this one came from "
                         f"{_shown(origin)}): any page visited could otherwise run its "
                         "functions. Fix: call it from a program or a page on localhost, let "
                         "that page in with --cors-origin, or start it with --api-key.")
    return None


def _loopback(value: bytes, origin: bool = False) -> bool:
    """Whether a Host ('localhost:8000', '[::1]:8000') or Origin ('http://127.0.0.1:3000')
    header names this machine's loopback: localhost, a *.localhost name, 127.0.0.0/8 or ::1.

    >>> _loopback(b"127.0.0.1:8000"), _loopback(b"[::1]"), _loopback(b"app.localhost")
    (True, True, True)
    >>> _loopback(b"evil.example:8000"), _loopback(b"null", origin=True)
    (False, False)
    >>> _loopback(b"localhost:80@evil"), _loopback(b"[::1]evil"), _loopback(b"a/.localhost")
    (False, False, False)
    """
    text = value.decode("latin-1").strip().lower()
    if origin:
        _, found, text = text.partition("://")
        if not found:  # "null": a sandboxed frame or a file: page
            return False
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        if port and not (port.startswith(":") and port[1:].isdigit()):
            return False
    else:
        host, _, port = text.partition(":")
        if port and not port.isdigit():
            return False
    host = host.rstrip(".")
    if not host or any(c in host for c in "/@?#\\ "):
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _shown(value: bytes) -> str:
    """A header value quoted in an error, at most 80 characters of it."""
    text = value.decode("latin-1")
    return repr(text if len(text) <= 80 else text[:80] + "...")


def _as_json(scope: dict[str, Any]) -> dict[str, Any]:
    """The /v1 routes take JSON only: the body is read as JSON whatever its content type
    (`curl -d` sends a form's, a browser's fetch with a string body text/plain)."""
    given = dict(scope["headers"]).get(b"content-type", b"").lower()
    kind = given.partition(b";")[0].strip()
    if kind == b"application/json" or (kind.startswith(b"application/")
                                       and kind.endswith(b"+json")):
        return scope  # what FastAPI parses as JSON (text/json, x-ndjson it would not)
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


def _error_bytes(err: HTTPError) -> bytes:
    """ASCII JSON: an error may quote what the client sent, lone surrogates included."""
    return json.dumps(err.body()).encode()


async def _send_error(send: Any, err: HTTPError) -> None:
    body = _error_bytes(err)
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _check_runtime(runtime: str, dtype: str | None, device: str) -> None:
    """Settings no function could load with are refused when the app is made, not as a
    failed load per function."""
    if runtime not in RUNTIMES:
        raise DataError(f"Unknown runtime '{runtime}'. Choose {', '.join(RUNTIMES)}.")
    if dtype not in DTYPES:
        raise DataError(f"Unknown dtype '{dtype}'. Choose {', '.join(map(str, DTYPES[1:]))}.")
    if dtype is not None and runtime != "torch":
        raise DataError(f"dtype '{dtype}' applies to the torch runtime; runtime '{runtime}' "
                        "runs the ONNX export as exported. Fix: drop --dtype, or use "
                        "--runtime torch.")
    if str(device).partition(":")[0] != "cpu" and runtime != "torch":
        raise DataError(f"device '{device}' applies to the torch runtime; runtime '{runtime}' "
                        "runs the ONNX export on the CPU. Fix: drop --device, or use "
                        "--runtime torch.")
    from ._backbone import check_device

    check_device(device)  # 'tpu', or 'cuda' on a machine without one


def check_api_key(api_key: str | None) -> None:
    """Refuse a key that is empty (`--api-key "$KEY"` with KEY unset served with no key at
    all) or has spaces around it (headers arrive stripped, so it could never match)."""
    if api_key is not None and (not api_key.strip() or api_key != api_key.strip()):
        raise DataError("The API key is empty or starts or ends with whitespace: an empty one "
                        "would leave the server open, and one with spaces around it could not "
                        "be presented. Fix: pass --api-key (or FUNCFORMER_API_KEY) a key "
                        "without surrounding spaces, or leave both unset to serve this machine "
                        "only, with no key.")


def check_binding(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond this machine without an API key, and refuse a bad key
    (`check_api_key`)."""
    check_api_key(api_key)
    if api_key or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise DataError(f"Refusing to listen on {host} without an API key: anyone who can "
                        "reach it could run your functions. Fix: pass --api-key KEY (or set "
                        "FUNCFORMER_API_KEY), or listen on 127.0.0.1.")


def serve_command(directory: str | os.PathLike[str], *, host: str = "127.0.0.1",
                  port: int = 8000, api_key: str | None = None,
                  max_batch_tokens: int = Batching.max_tokens,
                  max_wait_ms: float = Batching.max_wait_ms,
                  cache: str | os.PathLike[str] | None = None, limits: Limits | None = None,
                  runtime: str = "torch", reload_interval: float = 1.0,
                  log_level: str = "info", dtype: str | None = None,
                  device: str = "cpu", cors_origins: Sequence[str] = ()) -> None:
    """Serve `directory` over HTTP until SIGTERM or Ctrl+C (`funcformer serve`).

    `api_key` defaults to the FUNCFORMER_API_KEY environment variable; without one, only a
    loopback `host` is allowed. `cache`: an SQLite file (default: in memory). SIGTERM drains
    the requests in flight and returns normally.

    >>> serve_command("functions", port=8000)   # doctest: +SKIP
    """
    uvicorn = require("uvicorn", "server")
    if api_key is None:  # an empty flag is refused below, not taken for "no key"
        api_key = os.environ.get("FUNCFORMER_API_KEY")
    check_binding(host, api_key)
    openmp_defaults(os.environ)  # (read when torch loads, after this line)
    app = create_app(directory, api_key=api_key, max_batch_tokens=max_batch_tokens,
                     max_wait_ms=max_wait_ms, cache=cache or "memory", limits=limits,
                     runtime=runtime, reload_interval=reload_interval, reload_signal=True,
                     dtype=dtype, device=device, cors_origins=cors_origins)
    logging.getLogger("funcformer.server").setLevel(logging.INFO)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=30)
    with _sigterm_returns():
        uvicorn.Server(config).run()


def openmp_defaults(environ: MutableMapping[str, str]) -> None:
    """OpenMP waits for `funcformer serve`, unless the user chose a policy.

    Threads that spin between parallel regions for long (GNU OpenMP's default, about 3 ms)
    compete with the event loop and any neighbour for the cores: 2.5x slower under load on 2
    cores. Threads that sleep at once (`OMP_WAIT_POLICY=PASSIVE`) pay a wake-up in each of a
    forward pass's parallel regions: one short text took 10.5 ms against 4.7 ms. So the
    policy is passive, and GNU OpenMP (torch's on Linux) first spins 10,000 rounds (about
    0.1 ms), which bridges the gaps inside a forward pass: 4.8 ms, and the same texts/s under
    load (docs/server.md).

    >>> env = {}; openmp_defaults(env); env
    {'OMP_WAIT_POLICY': 'PASSIVE', 'GOMP_SPINCOUNT': '10000'}
    >>> env = {"OMP_WAIT_POLICY": "ACTIVE"}; openmp_defaults(env); env
    {'OMP_WAIT_POLICY': 'ACTIVE'}
    """
    if "OMP_WAIT_POLICY" in environ:  # (a spin count would override the user's policy)
        return
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    environ.setdefault("GOMP_SPINCOUNT", "10000")


@contextmanager
def _sigterm_returns() -> Any:
    """uvicorn re-raises SIGTERM after its graceful shutdown; with a no-op handler in place,
    that re-raise returns, so a drained server exits 0."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
