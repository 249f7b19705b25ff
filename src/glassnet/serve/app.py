"""The inference server as an ASGI application: a route table over the protocol codecs.

    server = InferenceServer(ModelRepository("models/"))
    uvicorn.run(server)                      # what `glassnet serve` does
    server.handle("POST", "/v1/models/pima:predict", {}, body)   # the same routes, synchronously (AWS Lambda)

Requests are decoded and encoded on the event loop by the pure functions in ``protocol.py``; the
prediction itself goes to the model version's :class:`~glassnet.serve.batching.Batcher`, which runs
it on its own thread. Every refusal is a :class:`ProtocolError` answered as ``{"error": message}``
with its 4xx status; anything else that goes wrong is a bug, answered 500 and logged with its
traceback, and the server keeps serving.
"""
import asyncio
import collections
import gc
import hmac
import logging
import os
import re
import sys
import time
from dataclasses import dataclass

from . import protocol
from .batching import Batcher, QueueFull
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics
from .protocol import JSON_CONTENT, ProtocolError, dumps

log = logging.getLogger("glassnet.serve")
HTML = "text/html; charset=utf-8"
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
EXTENSIONS = ["model_repository", "binary_tensor_data", "statistics"]


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes


@dataclass
class Request:
    method: str
    path: str
    params: dict
    headers: dict
    body: bytes
    model: str = ""      # filled in by model endpoints, for metrics and access logs
    version: str = ""
    endpoint: str = "other"


@dataclass
class Pending:
    """A decoded prediction request: run ``served.predict(arrays)``, then ``finish(outputs)``."""
    served: object
    arrays: list
    finish: object


def freeze_long_lived():
    """Take what is alive now (modules, models, the server) out of the garbage collector's view.

    CPython's full collections walk every tracked object: with NumPy, uvicorn and a model loaded that
    is ~40k objects and ~10 ms during which no request is served, a few times a second under load
    (p99 5.6-6.2 ms -> 2.1-3.3 ms at 16 connections with this, and ~5% more requests per second;
    benchmarks/serve_bench.py). Called after models load; it first unfreezes, so a retired model
    version that only the collector can free (reference cycles) is freed by the collection here."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _json(obj, status=200, headers=None):
    h = {"content-type": JSON_CONTENT}
    if headers:
        h.update(headers)
    return Response(status, h, dumps(obj))


def _refused_by_model(error):
    """A ValueError from the model's predict, past the protocol's checks (an Embedding's token id out of range...):
    the request's fault, a 400 with the model's message (glassnet's errors name the problem and the fix)."""
    return ProtocolError(f"The model cannot take this input: {error}", 400)


def _error(error, status=None):
    """A ProtocolError (or message and status) as the ``{"error": ...}`` response."""
    headers = {"content-type": JSON_CONTENT}
    headers.update(getattr(error, "headers", None) or {})
    return Response(status or error.status, headers, protocol.error_body(error))


def _static(name):
    with open(os.path.join(STATIC, name), "rb") as f:
        return f.read()


V1 = r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
V2 = r"/v2/models/(?P<name>[^/]+?)(?:/versions/(?P<version>[^/]+?))?"


class InferenceServer:
    """ASGI app serving the models of a :class:`~glassnet.serve.repository.ModelRepository`."""

    # path -> {method: (handler name, endpoint label)}; then the model routes, tried in order
    STATIC_ROUTES = {
        "/": {"GET": ("page", "page")},
        "/docs": {"GET": ("docs", "docs")},
        "/openapi.json": {"GET": ("openapi", "openapi")},
        "/metrics": {"GET": ("metrics", "metrics")},
        "/v2": {"GET": ("v2_server", "server")},
        "/v2/health/live": {"GET": ("live", "health")},
        "/v2/health/ready": {"GET": ("ready", "health")},
        "/v2/repository/index": {"POST": ("v2_index", "repository")},
    }
    MODEL_ROUTES = [
        (re.compile(V1 + r":predict"), {"POST": ("tf_predict", "predict")}),
        (re.compile(V1 + r":explain"), {"POST": ("tf_explain", "explain")}),
        (re.compile(V1 + r"/metadata"), {"GET": ("tf_metadata", "metadata")}),
        (re.compile(V1), {"GET": ("tf_status", "status")}),
        (re.compile(V2 + r"/infer"), {"POST": ("v2_infer", "infer")}),
        (re.compile(V2 + r"/ready"), {"GET": ("v2_model_ready", "ready")}),
        (re.compile(V2), {"GET": ("v2_model_metadata", "metadata")}),
    ]
    PUBLIC = frozenset({"live", "ready", "page", "docs", "openapi"})  # open even with an API key

    def __init__(self, repository, *, max_batch_size=64, batch_timeout_ms=0.0, request_timeout_s=30.0,
                 max_body_bytes=32 * 1024 * 1024, api_key=None, cors_origins=(), poll_seconds=2.0,
                 access_log=True, log_stream=None, max_queue_rows=100_000, freeze_gc=True):
        self.repository = repository
        self.max_batch_size = int(max_batch_size)
        self.batch_timeout_s = float(batch_timeout_ms) / 1000.0
        self.request_timeout_s = float(request_timeout_s) if request_timeout_s else None
        self.max_body_bytes = int(max_body_bytes)
        self.api_key = api_key or None
        self.cors_origins = tuple(cors_origins or ())
        self.poll_seconds = float(poll_seconds or 0)
        self.access_log = access_log
        self.log_stream = log_stream or sys.stderr
        self.max_queue_rows = max_queue_rows
        self.freeze_gc = freeze_gc
        self._retiring = []  # batchers of unloaded versions, until their threads end
        self.metrics = Metrics()
        self._batchers = {}
        self._poller = None
        self._sweeper = None
        self._deadlines = collections.deque()
        self._accepting = True
        self._page_html = self._docs_html = None  # not _page/_docs: those are the handlers

    # --- lifecycle --------------------------------------------------------------------------------
    def load(self):
        """Load what is in the repository now (synchronously); returns the served model versions."""
        loaded, unloaded = self.repository.refresh()
        self._retiring += self._models_changed(loaded, unloaded)
        return self.repository.all()

    def _models_changed(self, loaded, unloaded):
        """Retire the batchers of unloaded versions (each finishes its queue, then its thread ends);
        returns them."""
        retired = []
        for served in unloaded:
            batcher = self._batchers.pop(served, None)
            if batcher is not None:
                batcher.stop(wait=False)
                retired.append(batcher)
            self.metrics.model_loaded(served, False)
        for served in loaded:
            self.metrics.model_loaded(served, True)
        return retired

    async def startup(self):
        if not self.repository.all():
            await asyncio.to_thread(self.load)
        if not self.repository.all():
            log.warning("no loadable model in %s yet; waiting for one to appear", self.repository.path)
        if self.freeze_gc:
            freeze_long_lived()
        if self.poll_seconds > 0:
            self._poller = asyncio.create_task(self._poll())

    async def _poll(self):
        refreeze = False  # models changed since the collector last froze what is alive
        while True:
            await asyncio.sleep(self.poll_seconds)
            self._retiring = [b for b in self._retiring if b.running]
            if refreeze and not self._retiring:
                # one poll after the change, so what it let go of (a retired version, the refresh's own
                # temporaries) is unreachable by now: frozen while reachable, a cyclic model would never
                # be freed; retired versions still answering their queues are waited for
                freeze_long_lived()
                refreeze = False
            try:
                changed = await self._refresh()
                refreeze = refreeze or (changed and self.freeze_gc)
            except Exception:  # a bad repository must not stop serving what is loaded
                log.exception("refreshing the model repository failed")

    async def _refresh(self):
        """Load and retire versions as the repository now says; True when anything changed."""
        loaded, unloaded = await asyncio.to_thread(self.repository.refresh)
        self._retiring += self._models_changed(loaded, unloaded)
        return bool(loaded or unloaded)

    async def shutdown(self):
        self._accepting = False
        for task in (self._poller, self._sweeper):
            if task is not None:
                task.cancel()
        # every batcher answers what it has queued, retired versions' too, before the loop closes
        batchers, self._batchers = list(self._batchers.values()) + self._retiring, {}
        self._retiring = []
        await asyncio.to_thread(lambda: [b.stop(wait=True) for b in batchers])
        if self.freeze_gc:
            gc.unfreeze()  # the collector sees everything again (a server embedded in a longer-lived process)

    def _batcher(self, served):
        batcher = self._batchers.get(served)
        if batcher is None:
            batcher = Batcher(served, asyncio.get_running_loop(), self.max_batch_size, self.batch_timeout_s,
                              self.max_queue_rows, self.metrics.batch_observer(served))
            self._batchers[served] = batcher
        return batcher

    # --- ASGI -------------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as e:
                    await send({"type": "lifespan.startup.failed", "message": f"{type(e).__name__}: {e}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope, receive, send):
        start = time.perf_counter()
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        req = Request(method, path, {}, headers, b"")
        try:
            body = await self._read_body(headers, receive)
            req.body = body
            result = self._dispatch(req)
            if isinstance(result, Pending):
                result = await self._predict(result)
        except ProtocolError as e:
            result = _error(e)
        except Exception as e:  # a bug: say so, log it, keep serving
            log.exception("error while serving %s %s", method, path)
            result = _error(f"Internal server error ({type(e).__name__}: {e}). This is a bug in glassnet; please "
                            "report it with the request that caused it.", 500)
        out = result.headers
        if self.cors_origins:
            self._cors(headers, out)
        raw = [(b"content-length", str(len(result.body)).encode())]
        raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in out.items())
        await send({"type": "http.response.start", "status": result.status, "headers": raw})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else result.body})
        elapsed = time.perf_counter() - start
        self.metrics.observe_request(req.model, req.version, req.endpoint, result.status,
                                     elapsed)
        if self.access_log:
            client = scope.get("client")
            self._log_access(req, result, elapsed, client[0] if client else "")

    async def _read_body(self, headers, receive):
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise ProtocolError(f"The request body is {declared} bytes; this server accepts at most "
                                f"{self.max_body_bytes} (--max-body-bytes). Send fewer rows per request.", 413)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise ProtocolError(f"The request body exceeds {self.max_body_bytes} bytes (--max-body-bytes). "
                                        "Send fewer rows per request.", 413)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _predict(self, pending):
        batcher = self._batcher(pending.served)
        try:
            fut = batcher.submit(pending.arrays)
        except QueueFull as e:
            return _error(f"The server is overloaded: {e}", 503)
        if self.request_timeout_s:
            # deadlines queue up in arrival order (one timeout for all), so one sweeper task expires them:
            # an append per request instead of a timer handle (asyncio.wait_for costs a task per request)
            self._deadlines.append((time.monotonic() + self.request_timeout_s, fut))
            if self._sweeper is None:
                self._sweeper = asyncio.create_task(self._sweep())
        try:
            outputs = await fut
        except ValueError as e:
            return _error(_refused_by_model(e))
        except _Expired:
            return Response(503, {"content-type": JSON_CONTENT, "retry-after": "1"}, protocol.error_body(
                f"The prediction did not finish within {self.request_timeout_s:g} s (--request-timeout-s); the "
                "server is busy. Retry, or send fewer rows per request."))
        return pending.finish(outputs)

    async def _sweep(self):
        """Fail the futures of requests past their deadline (checked 10 times per timeout, at most every 1 s)."""
        deadlines = self._deadlines
        period = min(1.0, self.request_timeout_s / 10)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            while deadlines and (deadlines[0][1].done() or deadlines[0][0] <= now):
                _, fut = deadlines.popleft()
                if not fut.done():
                    fut.set_exception(_Expired())

    def _cors(self, headers, out):
        origin = headers.get("origin")
        if origin and ("*" in self.cors_origins or origin in self.cors_origins):
            out["access-control-allow-origin"] = "*" if "*" in self.cors_origins else origin
            out["vary"] = "Origin"

    def _log_access(self, req, result, elapsed, client):
        line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z", "client": client,
                "method": req.method, "path": req.path, "status": result.status,
                "ms": round(elapsed * 1000, 3), "bytes_in": len(req.body), "bytes_out": len(result.body)}
        if req.model:
            line["model"], line["version"] = req.model, req.version
        if result.status >= 400:
            line["error"] = result.body[:300].decode("utf-8", "replace")
        try:
            self.log_stream.write(dumps(line).decode() + "\n")
            self.log_stream.flush()
        except (OSError, ValueError):
            pass

    # --- synchronous entry (AWS Lambda, tests) ---------------------------------------------------
    def handle(self, method, path, headers=None, body=b""):
        """Serve one request synchronously, predicting inline; returns a :class:`Response`."""
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        if isinstance(body, str):
            body = body.encode("utf-8")
        req = Request(method.upper(), path, {}, headers, body or b"")
        try:
            if len(req.body) > self.max_body_bytes:
                raise ProtocolError(f"The request body exceeds {self.max_body_bytes} bytes. Send fewer rows per "
                                    "request.", 413)
            if not self.repository.all():
                self.load()
            result = self._dispatch(req)
            if isinstance(result, Pending):
                try:
                    outputs = result.served.predict(result.arrays)
                except ValueError as e:
                    raise _refused_by_model(e) from None
                result = result.finish(outputs)
        except ProtocolError as e:
            result = _error(e)
        except Exception as e:
            log.exception("error while serving %s %s", method, path)
            result = _error(f"Internal server error ({type(e).__name__}: {e}). This is a bug in glassnet.", 500)
        if self.cors_origins:
            self._cors(headers, result.headers)
        return result

    # --- routing ----------------------------------------------------------------------------------
    def _dispatch(self, req):
        method = "GET" if req.method == "HEAD" else req.method
        if method == "OPTIONS" and self.cors_origins:
            return self._preflight(req)
        routes = self.STATIC_ROUTES.get(req.path)
        if routes is None:
            for pattern, methods in self.MODEL_ROUTES:
                m = pattern.fullmatch(req.path)
                if m:
                    routes = methods
                    req.params = m.groupdict()
                    break
            else:
                raise ProtocolError(f"No such endpoint: {req.path}. See /openapi.json (or /docs) for the API: "
                                    "/v1/models/{name}:predict (TensorFlow Serving REST) and "
                                    "/v2/models/{name}/infer (Open Inference Protocol).", 404)
        target = routes.get(method)
        if target is None:
            allowed = ", ".join(sorted(routes))
            raise _MethodNotAllowed(f"{req.path} takes {allowed}, not {req.method}.", allowed)
        handler, req.endpoint = target
        if self.api_key and handler not in self.PUBLIC:
            self._authorize(req)
        return getattr(self, "_" + handler)(req)

    def _authorize(self, req):
        given = req.headers.get("x-api-key")
        auth = req.headers.get("authorization", "")
        if given is None and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if given is None or not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise _Unauthorized("This server needs an API key: send the header 'Authorization: Bearer <key>' "
                                "(or 'X-API-Key: <key>')." if given is None else "The API key is not valid.")

    def _preflight(self, req):
        origin = req.headers.get("origin", "")
        if not ("*" in self.cors_origins or origin in self.cors_origins):
            raise ProtocolError(f"Origin {origin!r} is not allowed (--cors-origin).", 403)
        return Response(204, {"access-control-allow-methods": "GET, POST, OPTIONS",
                              "access-control-allow-headers": "authorization, content-type, x-api-key, "
                                                              "inference-header-content-length",
                              "access-control-max-age": "600"}, b"")

    def _served(self, req):
        served = self.repository.get(req.params["name"], req.params.get("version"))
        req.model, req.version = served.name, str(served.version)
        return served

    # --- TensorFlow Serving REST ----------------------------------------------------------------
    def _tf_predict(self, req):
        served = self._served(req)
        arrays, fmt = protocol.decode_tf_predict(req.body, served.signature)
        sig = served.signature
        return Pending(served, arrays, lambda outputs: Response(
            200, {"content-type": JSON_CONTENT}, protocol.encode_tf_predict(outputs, sig, fmt)))

    def _tf_explain(self, req):
        self._served(req)
        raise ProtocolError("Explanations are not available yet: glassnet's explanations (integrated gradients and "
                            "friends) are planned and not released. Use :predict for predictions.", 501)

    def _tf_status(self, req):
        name, version = req.params["name"], req.params.get("version")
        if version is not None:
            served = self._served(req)
            return _json(protocol.tf_status([served.version]))
        versions = self.repository.versions(name)
        req.model = name
        return _json(protocol.tf_status(sorted(versions, reverse=True)))

    def _tf_metadata(self, req):
        served = self._served(req)
        return _json(protocol.tf_metadata(served.name, served.version, served.signature))

    # --- Open Inference Protocol (V2) ------------------------------------------------------------
    def _v2_server(self, req):
        from .. import __version__
        return _json({"name": "glassnet", "version": __version__, "extensions": EXTENSIONS})

    def _live(self, req):
        return _json({"live": True})

    def _ready(self, req):
        ready = self._accepting and bool(self.repository.all())
        return _json({"ready": ready}, 200 if ready else 503)

    def _v2_index(self, req):
        return _json([{"name": m.name, "version": str(m.version), "state": "READY"} for m in self.repository.all()])

    def _v2_model_metadata(self, req):
        served = self._served(req)
        versions = [served.version] if req.params.get("version") else self.repository.versions(served.name)
        return _json(protocol.v2_metadata(served.name, versions, served.signature))

    def _v2_model_ready(self, req):
        served = self._served(req)
        return _json({"name": served.name, "version": str(served.version), "ready": True})

    def _v2_infer(self, req):
        served = self._served(req)
        sig = served.signature
        arrays, v2req = protocol.decode_v2_infer(req.body, req.headers, sig)

        def finish(outputs):
            body, headers = protocol.encode_v2_infer(outputs, sig, v2req, served.name, served.version)
            return Response(200, headers, body)
        return Pending(served, arrays, finish)

    # --- operations and pages ---------------------------------------------------------------------
    def _metrics(self, req):
        depths = {(s.name, s.version): b.queued_rows for s, b in list(self._batchers.items())}
        return Response(200, {"content-type": METRICS_CONTENT_TYPE}, self.metrics.render(depths))

    def _openapi(self, req):
        from .openapi import openapi_spec
        return _json(openapi_spec(self.repository.names(), bool(self.api_key)))

    def _page(self, req):
        if self._page_html is None:
            self._page_html = _static("index.html")
        return Response(200, {"content-type": HTML, "cache-control": "no-cache"},
                        self._page_html.replace(b"__API_KEY_REQUIRED__", b"true" if self.api_key else b"false"))

    def _docs(self, req):
        if self._docs_html is None:
            self._docs_html = _static("docs.html")
        return Response(200, {"content-type": HTML, "cache-control": "no-cache"}, self._docs_html)


class _Expired(Exception):
    pass


class _MethodNotAllowed(ProtocolError):
    def __init__(self, message, allowed):
        super().__init__(message, 405)
        self.headers = {"allow": allowed}


class _Unauthorized(ProtocolError):
    def __init__(self, message):
        super().__init__(message, 401)
        self.headers = {"www-authenticate": 'Bearer realm="glassnet"'}
