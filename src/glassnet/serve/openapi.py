"""The server's OpenAPI 3.0 description (``GET /openapi.json``), read by ``/docs`` and by schemathesis."""

ERROR = {"$ref": "#/components/schemas/Error"}


def _content(schema, kind="application/json"):
    return {kind: {"schema": schema}}


def _errors(*codes):
    text = {400: "The request is malformed; the message says what to send instead.",
            401: "An API key is required (Authorization: Bearer <key>).",
            404: "Unknown model or version.", 413: "The request body is too large (--max-body-bytes).",
            501: "Not implemented yet.", 503: "Overloaded, timed out or not ready; retry later."}
    return {str(c): {"description": text[c], "content": _content(ERROR)} for c in codes}


def _op(summary, tag, ok, codes, body=None, params=(), auth=True, ok_content=None):
    op = {"summary": summary, "tags": [tag], "parameters": list(params),
          "responses": {"200": {"description": "OK", "content": ok_content or _content(ok)}, **_errors(*codes)}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": _content(body)}
    if not auth:
        op["security"] = []
    return op


def _path_params(names, versioned):
    name = {"name": "name", "in": "path", "required": True, "description": "model name",
            "schema": {"type": "string", **({"enum": list(names)} if names else {})}}
    version = {"name": "version", "in": "path", "required": True, "description": "model version (an integer)",
               "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"}, "example": "1"}
    return [name, version] if versioned else [name]


NUMBERS = {"description": "a number or nested lists of numbers (strings for string inputs)"}
SCHEMAS = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "TFPredictRequest": {
        "type": "object", "additionalProperties": False,
        "description": 'Row format {"instances": [row, ...]} or columnar format {"inputs": tensor or '
                       '{name: tensor}}; exactly one of them.',
        "properties": {"signature_name": {"type": "string", "example": "serving_default"},
                       "instances": {"type": "array", "minItems": 1, "items": NUMBERS,
                                     "example": [[6, 148, 72, 35, 0, 33.6, 0.627, 50]]},
                       "inputs": NUMBERS}},
    "TFPredictResponse": {"type": "object", "properties": {"predictions": {"type": "array"}, "outputs": {}}},
    "TFStatus": {"type": "object", "required": ["model_version_status"], "properties": {"model_version_status": {
        "type": "array", "items": {"type": "object", "required": ["version", "state", "status"], "properties": {
            "version": {"type": "string"}, "state": {"type": "string"}, "status": {"type": "object"}}}}}},
    "TFMetadata": {"type": "object", "required": ["model_spec", "metadata"],
                   "properties": {"model_spec": {"type": "object"}, "metadata": {"type": "object"}}},
    "V2Server": {"type": "object", "required": ["name", "version", "extensions"],
                 "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                "extensions": {"type": "array", "items": {"type": "string"}}}},
    "V2Tensor": {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
        "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
                                                "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]},
        "parameters": {"type": "object", "nullable": True}, "data": {"type": "array"}}},
    "V2InferRequest": {"type": "object", "required": ["inputs"], "additionalProperties": False, "properties": {
        "id": {"type": "string", "nullable": True}, "parameters": {"type": "object", "nullable": True},
        "inputs": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/V2Tensor"}},
        "outputs": {"type": "array", "nullable": True, "items": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "parameters": {"type": "object", "nullable": True}}}}},
        "example": {"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32",
                                "data": [6, 148, 72, 35, 0, 33.6, 0.627, 50]}]}},
    "V2InferResponse": {"type": "object", "required": ["model_name", "outputs"], "properties": {
        "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
        "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}}}},
    "V2ModelMetadata": {"type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
                        "properties": {"name": {"type": "string"},
                                       "versions": {"type": "array", "items": {"type": "string"}},
                                       "platform": {"type": "string"},
                                       "inputs": {"type": "array", "items": {"type": "object"}},
                                       "outputs": {"type": "array", "items": {"type": "object"}},
                                       "parameters": {"type": "object"}}},
    "V2Ready": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"},
                                                                      "name": {"type": "string"},
                                                                      "version": {"type": "string"}}},
    "V2Live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
    "V2Index": {"type": "array", "items": {"type": "object", "required": ["name", "version", "state"],
                                           "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                                          "state": {"type": "string"}}}},
}


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def openapi_spec(model_names=(), api_key=False):
    """The OpenAPI document; ``model_names`` become the ``name`` parameter's enum."""
    from .. import __version__
    auth = (401,) if api_key else ()
    paths = {}
    for versioned in (False, True):
        params = _path_params(model_names, versioned)
        v = "/versions/{version}" if versioned else ""
        suffix = " (one version)" if versioned else " (highest version)"
        paths[f"/v1/models/{{name}}{v}:predict"] = {"post": _op(
            "Predict, TensorFlow Serving REST" + suffix, "TensorFlow Serving", _ref("TFPredictResponse"),
            (400, *auth, 404, 413, 503), _ref("TFPredictRequest"), params)}
        paths[f"/v1/models/{{name}}{v}:explain"] = {"post": _op(
            "Feature attributions (not available yet: answers 501)", "TensorFlow Serving", _ref("TFPredictResponse"),
            (400, *auth, 404, 413, 501), _ref("TFPredictRequest"), params)}
        paths[f"/v1/models/{{name}}{v}"] = {"get": _op("Model version status" + suffix, "TensorFlow Serving",
                                                      _ref("TFStatus"), (*auth, 404), params=params)}
        paths[f"/v1/models/{{name}}{v}/metadata"] = {"get": _op("Signature: input/output names, dtypes, shapes",
                                                               "TensorFlow Serving", _ref("TFMetadata"), (*auth, 404),
                                                               params=params)}
        paths[f"/v2/models/{{name}}{v}"] = {"get": _op("Model metadata" + suffix, "Open Inference Protocol",
                                                      _ref("V2ModelMetadata"), (*auth, 404), params=params)}
        paths[f"/v2/models/{{name}}{v}/ready"] = {"get": _op("Model readiness", "Open Inference Protocol",
                                                            _ref("V2Ready"), (*auth, 404), params=params)}
        paths[f"/v2/models/{{name}}{v}/infer"] = {"post": _op(
            "Inference, Open Inference Protocol (JSON; the binary tensor extension with the "
            "Inference-Header-Content-Length header)", "Open Inference Protocol", None, (400, *auth, 404, 413, 503),
            _ref("V2InferRequest"), params,
            ok_content={"application/json": {"schema": _ref("V2InferResponse")},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}})}
    paths["/v2"] = {"get": _op("Server metadata", "Open Inference Protocol", _ref("V2Server"), auth)}
    paths["/v2/health/live"] = {"get": _op("Liveness", "Health", _ref("V2Live"), (), auth=False)}
    paths["/v2/health/ready"] = {"get": _op("Readiness: 200 once a model is loaded", "Health", _ref("V2Ready"),
                                            (503,), auth=False)}
    paths["/v2/repository/index"] = {"post": _op("Served models and versions", "Open Inference Protocol",
                                                 _ref("V2Index"), auth)}
    paths["/metrics"] = {"get": _op("Prometheus metrics", "Operations", None, auth,
                                    ok_content={"text/plain": {"schema": {"type": "string"}}})}
    paths["/"] = {"get": _op("Web page: models and a prediction form", "Pages", None, (), auth=False,
                             ok_content={"text/html": {"schema": {"type": "string"}}})}
    paths["/docs"] = {"get": _op("Interactive API documentation", "Pages", None, (), auth=False,
                                 ok_content={"text/html": {"schema": {"type": "string"}}})}
    spec = {"openapi": "3.0.3",
            "info": {"title": "glassnet inference server", "version": __version__,
                     "description": "TensorFlow Serving REST and Open Inference Protocol (KServe V2) on one port. "
                                    "Errors are {\"error\": message}."},
            "paths": paths, "components": {"schemas": SCHEMAS}}
    if api_key:
        spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"},
                                                 "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
        spec["security"] = [{"bearer": []}, {"apiKey": []}]
    return spec
