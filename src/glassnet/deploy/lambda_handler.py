"""The AWS Lambda entry point: ``glassnet.deploy.lambda_handler.handler``.

API Gateway REST APIs (payload format 1.0: ``httpMethod``, ``path``), HTTP APIs and Lambda
Function URLs (format 2.0: ``requestContext.http.method``, ``rawPath``) and ALB targets become a
call to :meth:`glassnet.serve.app.InferenceServer.handle`, which serves every route of both protocols
(``POST /v1/models/{name}:predict``, ``POST /v2/models/{name}/infer``, metadata, health) and predicts
inline; its response becomes the Lambda proxy result (base64 for binary bodies, e.g. V2 binary
tensors). A direct invocation whose event is a predict body (``{"instances": ...}`` or
``{"inputs": [...]}``) is answered with the response JSON itself.

The model repository is loaded once per execution environment, at import (Lambda's init phase):
``$GLASSNET_MODEL_PATH``, else ``models/`` beside the package (``$LAMBDA_TASK_ROOT/models``).
``$GLASSNET_API_KEY`` turns on the API key for the prediction endpoints.
"""
import base64
import json
import os

from ..serve.app import InferenceServer
from ..serve.protocol import error_body
from ..serve.repository import ModelRepository

TEXT_TYPES = ("application/json", "text/", "application/openmetrics-text")


def default_model_path():
    if os.environ.get("GLASSNET_MODEL_PATH"):
        return os.environ["GLASSNET_MODEL_PATH"]
    root = os.environ.get("LAMBDA_TASK_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    return os.path.join(root, "models")


def _request(event):
    """(method, path, headers, body) of an API Gateway v1/v2, Function URL or ALB event; None if not HTTP."""
    if not isinstance(event, dict):
        return None
    ctx = event.get("requestContext") or {}
    http = ctx.get("http") if isinstance(ctx, dict) else None
    if isinstance(http, dict) and "method" in http:  # payload format 2.0: HTTP API, Function URL
        method = http["method"]
        path = event.get("rawPath") or http.get("path") or "/"
        stage = ctx.get("stage")
        if stage and stage != "$default" and (path == f"/{stage}" or path.startswith(f"/{stage}/")):
            path = path[len(stage) + 1:] or "/"  # a named HTTP API stage is part of rawPath
        headers = dict(event.get("headers") or {})
    elif "httpMethod" in event:  # payload format 1.0: REST API (path is without the stage), ALB
        method, path = event["httpMethod"], event.get("path") or "/"
        headers = {}
        for k, v in (event.get("multiValueHeaders") or {}).items():
            headers[k] = ",".join(v or [])
        headers.update(event.get("headers") or {})
    else:
        return None
    body = event.get("body")
    if body is None:
        body = b""
    elif event.get("isBase64Encoded"):
        body = base64.b64decode(body)
    else:
        body = body.encode("utf-8")
    return method, path, {str(k).lower(): str(v) for k, v in headers.items()}, body


def _result(response):
    headers = dict(response.headers)
    ctype = headers.get("content-type", "")
    binary = not ctype.startswith(TEXT_TYPES)
    if binary:
        body = base64.b64encode(response.body).decode("ascii")
    else:
        body = response.body.decode("utf-8")
    return {"statusCode": response.status, "headers": headers, "body": body, "isBase64Encoded": binary}


class LambdaApp:
    """An :class:`InferenceServer` over a model repository, called with Lambda events."""

    def __init__(self, model_path=None, *, api_key=None, version_policy="latest", name=None):
        self.repository = ModelRepository(model_path or default_model_path(), name=name,
                                          version_policy=version_policy)
        # no batching thread pool waits in Lambda: handle() predicts inline; access lines go to CloudWatch
        self.server = InferenceServer(self.repository, api_key=api_key or os.environ.get("GLASSNET_API_KEY"),
                                      poll_seconds=0)
        self.server.load()

    def __call__(self, event, context=None):
        req = _request(event)
        if req is None:
            return self._direct(event)
        method, path, headers, body = req
        return _result(self.server.handle(method, path, headers, body))

    def _direct(self, event):
        """``aws lambda invoke`` with a predict body: route it to the (only) model; answer the JSON."""
        names = self.repository.names()
        if not isinstance(event, dict) or not ({"instances", "inputs"} & set(event)) or len(names) != 1:
            return {"statusCode": 400, "error": json.loads(error_body(
                "This function takes API Gateway (REST or HTTP API), Function URL or ALB events, or, invoked "
                "directly, a predict body such as {\"instances\": [[...]]} (TensorFlow Serving) or {\"inputs\": "
                "[{\"name\", \"shape\", \"datatype\", \"data\"}]} (V2)" + (
                    "" if len(names) == 1 else f"; direct invocation needs a single model, not {names}") + "."))["error"]}
        v2 = isinstance(event.get("inputs"), list) and all(isinstance(t, dict) and "datatype" in t
                                                            for t in event["inputs"])
        path = f"/v2/models/{names[0]}/infer" if v2 else f"/v1/models/{names[0]}:predict"
        response = self.server.handle("POST", path, {"content-type": "application/json"},
                                      json.dumps(event).encode())
        out = json.loads(response.body)
        if response.status != 200:
            return {"statusCode": response.status, **out}
        return out


_app = None
_init_error = None
if os.path.isdir(default_model_path()) or os.path.isfile(default_model_path()):
    try:  # cold start: load the models during Lambda's init phase
        _app = LambdaApp()
    except Exception as e:  # reported on every invocation rather than as an opaque init failure
        _init_error = f"{type(e).__name__}: {e}"


def handler(event, context=None):
    """The Lambda handler (``glassnet.deploy.lambda_handler.handler``)."""
    global _app
    if _app is None:
        if _init_error is not None:
            return {"statusCode": 500, "headers": {"content-type": "application/json"}, "isBase64Encoded": False,
                    "body": error_body(f"The model repository could not be loaded: {_init_error}").decode()}
        _app = LambdaApp()
    return _app(event, context)
