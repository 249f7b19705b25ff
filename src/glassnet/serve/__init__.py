"""``glassnet serve``: a production inference server speaking TensorFlow Serving REST and the Open
Inference Protocol (KServe V2) on one port, with dynamic batching, hot reload and Prometheus metrics.

Needs the serving extra: ``pip install 'glassnet[serve]'``.

* :mod:`.protocol`   request/response codecs, pure functions
* :mod:`.repository` which models and versions are served; hot reload
* :mod:`.batching`   dynamic batching on one inference thread per model version
* :mod:`.app`        the ASGI app (route table), also callable synchronously
* :mod:`.server`     running it on uvicorn, one or several worker processes
"""


def __getattr__(name):  # light import: nothing loads until used
    if name == "InferenceServer":
        from .app import InferenceServer
        return InferenceServer
    if name == "ModelRepository":
        from .repository import ModelRepository
        return ModelRepository
    if name == "run":
        from .server import run
        return run
    raise AttributeError(f"module 'glassnet.serve' has no attribute {name!r}")


__all__ = ["InferenceServer", "ModelRepository", "run"]
