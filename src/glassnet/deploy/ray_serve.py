"""A glassnet model as a Ray Serve deployment: scale serving past one machine on a Ray cluster.

    from ray import serve
    from glassnet.deploy.ray_serve import deployment
    serve.run(deployment("pima.glassnet"))                       # autoscaling 1-4 replicas
    serve.run(deployment("pima.glassnet", num_replicas=2))       # or a fixed number

    curl -X POST localhost:8000/v1/models/pima:predict -d '{"instances": [[...]]}'
    curl -X POST localhost:8000/v2/models/pima/infer -d '{"inputs": [...]}'

Each replica answers the same TensorFlow Serving REST and Open Inference Protocol (V2) requests as
``glassnet serve``, decoded and encoded by the same pure codecs (:mod:`glassnet.serve.protocol`);
concurrent requests are batched by Ray Serve's own ``@serve.batch`` into one ``predict`` call.
A model file's bytes travel with the deployment, so replicas on other nodes need no shared disk.
Ray is an optional dependency: ``pip install 'glassnet[ray]'`` (``ray[serve]``).
"""
import os
import re
import tempfile

import numpy as np

from ..serve import protocol
from ..serve.protocol import ProtocolError

DEFAULT_AUTOSCALING = {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8}


def _serve():
    try:
        from ray import serve
    except ImportError:
        raise ImportError("Ray Serve is not installed: pip install 'glassnet[ray]' (or 'ray[serve]').") from None
    return serve


def _load(source, name):
    from ..serve.repository import ModelRepository
    if isinstance(source, tuple):  # (file name, bytes): write it where this replica can read it
        filename, data = source
        folder = tempfile.mkdtemp(prefix="glassnet-ray-")
        path = os.path.join(folder, filename)
        with open(path, "wb") as f:
            f.write(data)
    else:
        path = source
    repo = ModelRepository(path, name=name)
    repo.refresh()
    names = repo.names()
    if len(names) != 1:
        raise ValueError(f"A Ray Serve deployment serves one model; {path} holds {names}. Deploy one per model.")
    return repo.get(names[0])


class GlassnetModel:
    """The replica: one model version, both protocols, health and metadata routes."""

    def __init__(self, source, name=None, max_batch_size=32, batch_wait_timeout_s=0.005):
        self.served = _load(source, name)
        self.name, self.sig = self.served.name, self.served.signature
        self.predict_batch.set_max_batch_size(int(max_batch_size))
        self.predict_batch.set_batch_wait_timeout_s(float(batch_wait_timeout_s))
        try:
            ctx = _serve().get_replica_context()
            rid = getattr(ctx, "replica_id", None)
            self.replica = getattr(rid, "unique_id", None) or str(getattr(ctx, "replica_tag", rid))
        except Exception:
            self.replica = str(os.getpid())
        v1 = re.escape(self.name)
        self.routes = [
            (re.compile(rf"/v1/models/{v1}(?:/versions/\d+)?:predict"), "POST", self._tf_predict),
            (re.compile(rf"/v2/models/{v1}(?:/versions/\d+)?/infer"), "POST", self._v2_infer),
            (re.compile(r"/v2/health/(?:live|ready)"), "GET", self._health),
            (re.compile(rf"/v2/models/{v1}(?:/versions/\d+)?/ready"), "GET", self._health),
            (re.compile(rf"/v2/models/{v1}(?:/versions/\d+)?"), "GET", self._v2_metadata),
            (re.compile(rf"/v1/models/{v1}(?:/versions/\d+)?"), "GET", self._tf_status),
        ]

    async def predict_batch(self, batch):
        """Ray Serve collects concurrent requests (each a list of input arrays) into ``batch``."""
        sizes = [len(arrays[0]) for arrays in batch]
        joined = [np.concatenate([arrays[i] for arrays in batch]) for i in range(len(batch[0]))]
        outputs = [np.asarray(o) for o in self.served.predict(joined)]
        bounds = np.cumsum([0] + sizes)
        return [[o[a:b] for o in outputs] for a, b in zip(bounds[:-1], bounds[1:])]

    async def __call__(self, request):
        from starlette.responses import Response
        path = request.url.path
        method = "GET" if request.method == "HEAD" else request.method
        headers = {"x-glassnet-replica": self.replica}
        try:
            for pattern, verb, fn in self.routes:
                if pattern.fullmatch(path):
                    if method != verb:
                        raise ProtocolError(f"{path} takes {verb}, not {request.method}.", 405)
                    body = await request.body()
                    out, extra = await fn(body, {k.lower(): v for k, v in request.headers.items()})
                    return Response(out, status_code=200, headers={**headers, **extra})
            raise ProtocolError(f"No such endpoint: {path}. This deployment serves model {self.name!r}: "
                                f"/v1/models/{self.name}:predict and /v2/models/{self.name}/infer.", 404)
        except ProtocolError as e:
            return Response(protocol.error_body(e), status_code=e.status,
                            headers={**headers, "content-type": protocol.JSON_CONTENT})

    async def _tf_predict(self, body, headers):
        arrays, fmt = protocol.decode_tf_predict(body, self.sig)
        outputs = await self.predict_batch(arrays)
        return protocol.encode_tf_predict(outputs, self.sig, fmt), {"content-type": protocol.JSON_CONTENT}

    async def _v2_infer(self, body, headers):
        arrays, req = protocol.decode_v2_infer(body, headers, self.sig)
        outputs = await self.predict_batch(arrays)
        return protocol.encode_v2_infer(outputs, self.sig, req, self.name, self.served.version)

    async def _health(self, body, headers):
        return protocol.dumps({"live": True, "ready": True}), {"content-type": protocol.JSON_CONTENT}

    async def _v2_metadata(self, body, headers):
        meta = protocol.v2_metadata(self.name, [self.served.version], self.sig)
        return protocol.dumps(meta), {"content-type": protocol.JSON_CONTENT}

    async def _tf_status(self, body, headers):
        return protocol.dumps(protocol.tf_status([self.served.version])), {"content-type": protocol.JSON_CONTENT}


def deployment(model, *, name=None, num_replicas=None, autoscaling_config=None, max_batch_size=32,
               batch_wait_timeout_s=0.005, ray_actor_options=None, max_ongoing_requests=None):
    """A Ray Serve application serving ``model`` (a .glassnet/.keras file or a one-model repository).

    ``num_replicas`` fixes the replica count; otherwise ``autoscaling_config`` (default
    :data:`DEFAULT_AUTOSCALING`) lets Ray Serve add replicas under load. ``max_batch_size`` and
    ``batch_wait_timeout_s`` configure ``@serve.batch``. Pass the result to ``serve.run``.
    """
    serve = _serve()
    model = os.fspath(model)
    if os.path.isfile(model):
        with open(model, "rb") as f:
            source = (os.path.basename(model), f.read())
        from ._package import model_name
        name = name or model_name(model)
    else:
        source = os.path.abspath(model)
    options = {"name": f"glassnet-{name or os.path.basename(os.path.normpath(model))}"}
    if num_replicas is not None:
        options["num_replicas"] = num_replicas
    else:
        options["autoscaling_config"] = autoscaling_config or dict(DEFAULT_AUTOSCALING)
    if ray_actor_options is not None:
        options["ray_actor_options"] = ray_actor_options
    if max_ongoing_requests is not None:
        options["max_ongoing_requests"] = max_ongoing_requests
    cls = type("GlassnetModel", (GlassnetModel,), {
        "predict_batch": serve.batch(max_batch_size=max(1, int(max_batch_size)),
                                     batch_wait_timeout_s=float(batch_wait_timeout_s))(GlassnetModel.predict_batch)})
    return serve.deployment(**options)(cls).bind(source, name, max_batch_size, batch_wait_timeout_s)
