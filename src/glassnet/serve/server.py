"""``glassnet serve``: run the :class:`InferenceServer` on uvicorn (uvloop + httptools when installed).

One process by default; ``workers=N`` starts N uvicorn worker processes on the same port, each with
its own models and batching threads, and ``/metrics`` sums their samples (prometheus-client's
multiprocess mode). SIGTERM or Ctrl-C stops accepting connections, lets in-flight requests finish
(up to ``graceful_timeout_s``), drains the batch queues, then exits.
"""
import json
import logging
import os
import shutil
import sys
import tempfile

CONFIG_ENV = "GLASSNET_SERVE_CONFIG_FILE"  # path of the workers' options (a 0600 file: it may hold the API key)
SERVER_KEYS = ("max_batch_size", "batch_timeout_ms", "request_timeout_s", "max_body_bytes", "api_key",
               "cors_origins", "poll_seconds", "access_log", "freeze_gc")


THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def limit_blas_threads(threads=None):
    """Cap BLAS threads in this process: ``threads``, else the user's OMP_NUM_THREADS & co., else 1.

    A server already runs an inference thread beside the event loop (and maybe several workers);
    letting OpenBLAS start one busy-waiting thread per core on top of that for every small matrix
    product cuts throughput many times over (measured: 371 -> 5,675 req/s for the 784-512-512-10
    MLP with batching, benchmarks/serve_bench.py)."""
    if threads is None:
        if any(os.environ.get(k) for k in THREAD_ENV):
            return None  # the user's setting stands (BLAS read it at start-up)
        threads = 1
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=int(threads), user_api="blas")


def build_server(path, model_name=None, version_policy="latest", threads=None, **options):
    limit_blas_threads(threads)
    from .app import InferenceServer
    from .repository import ModelRepository
    repository = ModelRepository(path, name=model_name, version_policy=version_policy)
    return InferenceServer(repository, **{k: v for k, v in options.items() if k in SERVER_KEYS})


def worker_app():
    """The app of one worker process (uvicorn factory); options come from the file the parent wrote."""
    with open(os.environ[CONFIG_ENV], encoding="utf-8") as f:
        config = json.load(f)
    return build_server(config.pop("path"), **config)


def _uvicorn_impls(http="auto"):
    try:
        import uvloop  # noqa: F401
        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    if http not in ("auto", "httptools", "h11"):
        raise ValueError(f"http must be 'auto', 'httptools' or 'h11', got {http!r}.")
    if http == "auto":
        try:
            import httptools  # noqa: F401
            http = "httptools"
        except ImportError:
            http = "h11"
    return loop, http


def configure_logging(level="info"):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("glassnet.serve")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def _exit_cleanly_on_signals():
    """After a graceful stop, uvicorn (>= 0.29) re-raises the SIGTERM/SIGINT it caught, once its own handlers
    are gone: with the default handlers the process then dies of SIGTERM (status -15) or prints a
    KeyboardInterrupt traceback. Exit with status 0 instead, as the --workers supervisor does."""
    import signal

    def exit_0(signum, frame):
        raise SystemExit(0)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, exit_0)


def run(path, host="127.0.0.1", port=8501, workers=1, log_level="info", graceful_timeout_s=30.0, on_ready=None,
        http="auto", **options):
    """Serve until SIGTERM/SIGINT. ``options``: model_name, version_policy and InferenceServer's keywords.
    ``http``: uvicorn's HTTP parser, "httptools" (C; "auto" picks it when installed) or "h11" (pure Python)."""
    try:
        import uvicorn
    except ImportError:
        raise SystemExit("glassnet serve needs the serving extra: pip install 'glassnet[serve]'") from None
    configure_logging(log_level)
    loop, http = _uvicorn_impls(http)
    common = dict(host=host, port=port, loop=loop, http=http, lifespan="on", access_log=False,
                  log_level="warning" if log_level == "info" else log_level,
                  timeout_graceful_shutdown=graceful_timeout_s, server_header=False)
    if workers <= 1:
        server = build_server(path, **options)
        served = server.load()
        if on_ready is not None:
            on_ready(server, served)
        _exit_cleanly_on_signals()
        uvicorn.Server(uvicorn.Config(server, **common)).run()
        return 0
    served = build_server(path, **options).load()  # fail fast on a bad path, before starting workers
    if on_ready is not None:
        on_ready(None, served)
    metrics_dir = tempfile.mkdtemp(prefix="glassnet-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # the options go to the workers in a file only this user can read, not in the environment, which
    # other local users can read from /proc/<pid>/environ
    config_path = os.path.join(metrics_dir, "serve-config.json")
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"path": os.path.abspath(path), **options}, f)
    os.environ[CONFIG_ENV] = config_path
    try:
        uvicorn.run("glassnet.serve.server:worker_app", factory=True, workers=workers, **common)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
