"""Prometheus metrics of the server (``GET /metrics``), with prometheus-client.

With ``--workers N`` every worker process writes its samples to ``PROMETHEUS_MULTIPROC_DIR`` (set by
``glassnet serve`` before the workers start) and ``/metrics`` adds them up across processes.
"""
import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048,
                   4.096, 8.192)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
# what generate_latest() writes; prometheus-client >= 0.22 names 1.0.0 as CONTENT_TYPE_LATEST, which is only
# right when the scraper asked for it (Accept header), so say 0.0.4 like its own choose_encoder does by default
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        reg = self.registry
        self.requests = Counter("glassnet_requests", "HTTP requests by model, version, endpoint and status code",
                                ("model", "version", "endpoint", "code"), registry=reg)
        self.latency = Histogram("glassnet_request_duration_seconds", "Request latency (receipt to response)",
                                 ("model", "endpoint"), buckets=LATENCY_BUCKETS, registry=reg)
        self.batch_size = Histogram("glassnet_batch_size", "Rows per model invocation (after dynamic batching)",
                                    ("model", "version"), buckets=BATCH_BUCKETS, registry=reg)
        self.inference = Histogram("glassnet_inference_duration_seconds", "Time in predict per batch",
                                   ("model", "version"), buckets=LATENCY_BUCKETS, registry=reg)
        gauge_mode = {"multiprocess_mode": "livesum"} if self.multiprocess else {}
        self.queue_depth = Gauge("glassnet_queue_depth", "Rows waiting for a batch, per model version",
                                 ("model", "version"), registry=reg, **gauge_mode)
        self.loaded = Gauge("glassnet_model_loaded", "1 for each model version being served",
                            ("model", "version"), registry=reg, **({"multiprocess_mode": "max"}
                                                                   if self.multiprocess else {}))
        self._request_children = {}
        self._latency_children = {}

    def observe_request(self, model, version, endpoint, code, seconds):
        key = (model, version, endpoint, code)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(model, version, endpoint, str(code))
        child.inc()
        lkey = (model, endpoint)
        hist = self._latency_children.get(lkey)
        if hist is None:
            hist = self._latency_children[lkey] = self.latency.labels(model, endpoint)
        hist.observe(seconds)

    def batch_observer(self, served):
        sizes = self.batch_size.labels(served.name, str(served.version))
        times = self.inference.labels(served.name, str(served.version))
        depth = self.queue_depth.labels(served.name, str(served.version))

        def observe(rows, seconds, queued):
            sizes.observe(rows)
            times.observe(seconds)
            depth.set(queued)  # after every batch, so each worker's share stays current with --workers N
        return observe

    def render(self, queue_depths):
        for (name, version), rows in queue_depths.items():
            self.queue_depth.labels(name, str(version)).set(rows)
        if self.multiprocess:
            from prometheus_client import multiprocess
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def model_loaded(self, served, loaded=True):
        self.loaded.labels(served.name, str(served.version)).set(1 if loaded else 0)
