"""The AWS Lambda handler with real API Gateway v1/v2 and Function URL event shapes; the zip package."""
import base64
import glob
import json
import os
import shutil
import subprocess
import zipfile

import numpy as np
import pytest

from deploy_helpers import tutorial_model
from glassnet.deploy import aws_lambda
from glassnet.deploy.lambda_handler import LambdaApp


def rest_v1(method, path, body=None, headers=None, b64=False):
    """API Gateway REST API proxy integration, payload format 1.0 (as AWS sends it)."""
    headers = headers or {"Content-Type": "application/json"}
    return {
        "resource": "/{proxy+}", "path": path, "httpMethod": method, "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()}, "queryStringParameters": None,
        "multiValueQueryStringParameters": None, "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {"resourceId": "abc123", "resourcePath": "/{proxy+}", "httpMethod": method,
                           "extendedRequestId": "c2Vf7Ej0IAMFvaQ=", "requestTime": "29/Nov/2026:05:00:00 +0000",
                           "path": "/prod" + path, "accountId": "123456789012", "protocol": "HTTP/1.1",
                           "stage": "prod", "domainPrefix": "abc", "requestTimeEpoch": 1795928400000,
                           "requestId": "8d5a4b8e-0000-4000-8000-000000000000",
                           "identity": {"sourceIp": "192.0.2.1", "userAgent": "curl/8.5.0"},
                           "domainName": "abc.execute-api.eu-west-1.amazonaws.com", "apiId": "abc"},
        "body": (base64.b64encode(body).decode() if b64 else body.decode()) if body is not None else None,
        "isBase64Encoded": b64,
    }


def http_v2(method, path, body=None, headers=None, b64=False, stage="$default", function_url=False):
    """API Gateway HTTP API (payload format 2.0) or, with function_url, a Lambda Function URL event."""
    headers = {k.lower(): v for k, v in (headers or {"content-type": "application/json"}).items()}
    raw = path if stage == "$default" else f"/{stage}{path}"
    ctx = {"accountId": "123456789012" if not function_url else "anonymous", "apiId": "abc",
           "domainName": "abc.lambda-url.eu-west-1.on.aws" if function_url else
           "abc.execute-api.eu-west-1.amazonaws.com", "domainPrefix": "abc",
           "http": {"method": method, "path": raw, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1",
                    "userAgent": "curl/8.5.0"},
           "requestId": "id", "routeKey": "$default", "stage": stage, "time": "29/Nov/2026:05:00:00 +0000",
           "timeEpoch": 1795928400000}
    ev = {"version": "2.0", "routeKey": "$default", "rawPath": raw, "rawQueryString": "", "headers": headers,
          "requestContext": ctx, "isBase64Encoded": b64}
    if body is not None:
        ev["body"] = base64.b64encode(body).decode() if b64 else body.decode()
    return ev


EVENTS = {"rest-v1": rest_v1, "http-v2": http_v2, "http-v2-stage": lambda *a, **k: http_v2(*a, stage="prod", **k),
          "function-url": lambda *a, **k: http_v2(*a, function_url=True, **k)}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lambda")
    model, x = tutorial_model(str(tmp / "pima.glassnet"))
    return LambdaApp(str(tmp / "pima.glassnet")), model, x, tmp


def _json(result):
    assert result["isBase64Encoded"] is False
    return json.loads(result["body"])


@pytest.mark.parametrize("shape", sorted(EVENTS))
def test_predictions_through_every_event_shape(served, shape):
    app, model, x, _ = served
    make = EVENTS[shape]
    expected = model.predict(x, verbose=0)
    body = json.dumps({"instances": x.tolist()}).encode()
    r = app(make("POST", "/v1/models/pima:predict", body), None)
    assert r["statusCode"] == 200 and r["headers"]["content-type"] == "application/json"
    np.testing.assert_allclose(_json(r)["predictions"], expected, rtol=1e-6)
    # a base64-encoded request body (API Gateway does this for binary media types)
    r = app(make("POST", "/v1/models/pima:predict", body, b64=True), None)
    np.testing.assert_allclose(_json(r)["predictions"], expected, rtol=1e-6)
    v2 = json.dumps({"id": "r1", "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                             "data": x.ravel().tolist()}]}).encode()
    r = app(make("POST", "/v2/models/pima/infer", v2), None)
    out = _json(r)
    assert r["statusCode"] == 200 and out["id"] == "r1" and out["model_name"] == "pima"
    np.testing.assert_allclose(np.array(out["outputs"][0]["data"]).reshape(expected.shape), expected, rtol=1e-6)
    assert app(make("GET", "/v2/health/ready"), None)["statusCode"] == 200
    assert app(make("GET", "/v2/health/live"), None)["statusCode"] == 200
    assert _json(app(make("GET", "/v2/models/pima"), None))["name"] == "pima"


@pytest.mark.parametrize("shape", sorted(EVENTS))
def test_bad_input_is_4xx_with_a_message(served, shape):
    app, model, x, _ = served
    make = EVENTS[shape]
    cases = [
        (make("POST", "/v1/models/pima:predict", b"{not json"), 400, "not valid JSON"),
        (make("POST", "/v1/models/pima:predict", json.dumps({"instances": [[1.0, 2.0]]}).encode()), 400, "shape"),
        (make("POST", "/v1/models/pima:predict", json.dumps({"rows": []}).encode()), 400, "Unknown key"),
        (make("POST", "/v2/models/pima/infer", json.dumps({"inputs": [{"name": "input", "shape": [1, 8],
                                                                       "datatype": "INT8", "data": [0] * 8}]}).encode()),
         400, "datatype"),
        (make("POST", "/v1/models/nope:predict", json.dumps({"instances": x[:1].tolist()}).encode()), 404, "nope"),
        (make("GET", "/v1/models/pima:predict"), 405, "POST"),
        (make("GET", "/no/such/route"), 404, "No such endpoint"),
    ]
    for event, status, text in cases:
        r = app(event, None)
        assert r["statusCode"] == status, (event.get("rawPath") or event.get("path"), r)
        assert text in _json(r)["error"]


def test_binary_v2_response_is_base64(served):
    app, model, x, _ = served
    head = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    body = head + x.astype("<f4").tobytes()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
    r = app(http_v2("POST", "/v2/models/pima/infer", body, headers=headers, b64=True), None)
    assert r["statusCode"] == 200 and r["isBase64Encoded"] is True
    raw = base64.b64decode(r["body"])
    n = int(r["headers"]["inference-header-content-length"])
    meta = json.loads(raw[:n])
    out = np.frombuffer(raw[n:], dtype="<f4").reshape(meta["outputs"][0]["shape"])
    np.testing.assert_allclose(out, model.predict(x, verbose=0), rtol=1e-6)


def test_direct_invocation_and_non_http_events(served):
    app, model, x, _ = served
    out = app({"instances": x[:3].tolist()}, None)
    np.testing.assert_allclose(out["predictions"], model.predict(x[:3], verbose=0), rtol=1e-6)
    out = app({"instances": [[1, 2]]}, None)
    assert out["statusCode"] == 400 and "shape" in out["error"]
    assert app({"Records": [{"eventSource": "aws:sqs"}]}, None)["statusCode"] == 400


def test_api_key(served, monkeypatch):
    _, model, x, tmp = served
    monkeypatch.setenv("GLASSNET_API_KEY", "s3cret")
    app = LambdaApp(str(tmp / "pima.glassnet"))
    body = json.dumps({"instances": x[:1].tolist()}).encode()
    assert app(http_v2("POST", "/v1/models/pima:predict", body), None)["statusCode"] == 401
    assert app(http_v2("GET", "/v2/health/ready"), None)["statusCode"] == 200
    ok = app(http_v2("POST", "/v1/models/pima:predict", body,
                     headers={"content-type": "application/json", "authorization": "Bearer s3cret"}), None)
    assert ok["statusCode"] == 200


def _python312():
    """A Python 3.12 interpreter (Lambda's python3.12 runtime) to run the unzipped package with, if any."""
    cands = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12"))) + \
        [p for p in [shutil.which("python3.12")] if p]
    for py in cands:
        if subprocess.run([py, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"],
                          capture_output=True).returncode == 0:
            return py
    return None


@pytest.mark.skipif(os.environ.get("GLASSNET_OFFLINE") == "1", reason="needs PyPI (GLASSNET_OFFLINE=1)")
def test_zip_package_is_built_under_the_limit_and_runs(served, tmp_path):
    _, model, x, tmp = served
    info = aws_lambda.generate(tmp / "pima.glassnet", tmp_path / "out", python_version="3.12")
    zpath = info["zip"]
    with zipfile.ZipFile(zpath) as zf:
        names = set(zf.namelist())
        unzipped = sum(i.file_size for i in zf.infolist())
    assert unzipped == info["unzipped_bytes"] < aws_lambda.UNZIPPED_LIMIT
    assert "glassnet/deploy/lambda_handler.py" in names and "models/pima/1/model.glassnet" in names
    assert any(n.startswith("numpy/") for n in names) and any(n.startswith("orjson/") for n in names)
    assert any(".cpython-312-x86_64-linux-gnu.so" in n for n in names), "wheels built for the Lambda runtime"
    assert not [n for n in names if n.split("/")[0] in ("uvicorn", "uvloop", "httptools", "pytest", "torch")]
    assert set(info["installed"]) == {"numpy", "orjson", "prometheus-client"}
    print(f"\nLambda zip: {info['zipped_bytes'] / 1e6:.1f} MB zipped, {unzipped / 1e6:.1f} MB unzipped")
    container = (tmp_path / "out" / "container" / "Dockerfile").read_text()
    assert "FROM public.ecr.aws/lambda/python:3.12" in container and aws_lambda.HANDLER in container
    py = _python312()
    if py is None:
        pytest.skip("no python3.12 here to run the unzipped package")
    root = tmp_path / "unzipped"
    with zipfile.ZipFile(zpath) as zf:
        zf.extractall(root)
    event = http_v2("POST", "/v1/models/pima:predict", json.dumps({"instances": x.tolist()}).encode())
    code = ("import json, sys; from glassnet.deploy.lambda_handler import handler; "
            "print(json.dumps(handler(json.loads(sys.argv[1]), None)))")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(root), "LAMBDA_TASK_ROOT": str(root)}
    res = subprocess.run([py, "-s", "-c", code, json.dumps(event)], capture_output=True, text=True, env=env,
                         cwd=str(root))
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["statusCode"] == 200
    np.testing.assert_allclose(json.loads(r["body"])["predictions"], model.predict(x, verbose=0), rtol=1e-6)


def test_no_zip_output_is_consistent(served, tmp_path, capsys):
    """--no-zip: no pip run, so the container's pins must fit the runtime, and nothing refers to a zip."""
    _, _, _, tmp = served
    out = tmp_path / "out"
    out.mkdir()
    (out / "glassnet-lambda.zip").write_bytes(b"stale zip from an earlier run")
    from glassnet.deploy.cli import main
    assert main(["deploy", "lambda", str(tmp / "pima.glassnet"), "--out", str(out), "--python", "3.10",
                 "--no-zip"]) == 0
    printed = capsys.readouterr().out
    assert "no zip" in printed and "MB zipped" not in printed
    assert not (out / "glassnet-lambda.zip").exists()
    info = json.loads((out / "build-info.json").read_text())
    assert "zip" not in info and "zipped_bytes" not in info
    lines = [ln for ln in (out / "container" / "requirements.txt").read_text().splitlines()
             if ln and not ln.startswith("#")]
    assert {ln.split("=")[0].split(">")[0] for ln in lines} == {"numpy", "orjson", "prometheus-client"}
    import importlib.metadata as metadata
    numpy_line = next(ln for ln in lines if ln.startswith("numpy"))
    numpy_requires = metadata.metadata("numpy").get("Requires-Python") or ""
    if not aws_lambda._requires_python_ok(numpy_requires, "3.10"):
        assert "==" not in numpy_line, f"numpy {metadata.version('numpy')} needs Python {numpy_requires}"
    for ln in [ln for ln in lines if "==" in ln]:  # every pin left has a wheel for python3.10 on Lambda's glibc
        assert aws_lambda.pin_fits_runtime(ln, "3.10", "x86_64") is None, ln
    readme = (out / "README.md").read_text()
    assert "glassnet-lambda.zip" not in readme and "zipped" not in readme and "--zip-file" not in readme
    assert "--package-type Image" in readme and "python3.10" in readme
    # the same model with the python3.12 runtime keeps the pins (they were tested here)
    aws_lambda.generate(tmp / "pima.glassnet", tmp_path / "out312", python_version="3.12", build_zip=False,
                        check_model=False)
    reqs312 = (tmp_path / "out312" / "container" / "requirements.txt").read_text()
    assert f"numpy=={metadata.version('numpy')}" in reqs312


@pytest.mark.parametrize("spec,version,ok", [(">=3.11", "3.10", False), (">=3.11", "3.12", True),
                                             (">=3.9,<3.12", "3.12", False), ("!=3.10.*", "3.10", False),
                                             ("~=3.10", "3.13", True), ("", "3.10", True)])
def test_requires_python_check(spec, version, ok):
    assert aws_lambda._requires_python_ok(spec, version) is ok


def test_container_context_is_world_readable_under_a_strict_umask(served, tmp_path):
    _, _, _, tmp = served
    old = os.umask(0o077)
    try:
        aws_lambda.generate(tmp / "pima.glassnet", tmp_path / "out", build_zip=False, check_model=False)
    finally:
        os.umask(old)
    container = tmp_path / "out" / "container"
    for folder in [container / "models", container / "models" / "pima", container / "models" / "pima" / "1",
                   container / "wheels"]:
        assert os.stat(folder).st_mode & 0o777 == 0o755, folder
    for f in [container / "models" / "pima" / "1" / "model.glassnet", *(container / "wheels").iterdir(),
              container / "requirements.txt", container / "Dockerfile"]:
        assert os.stat(f).st_mode & 0o777 == 0o644, f


def test_the_limit_is_awss_250_mb_everywhere():
    assert aws_lambda.UNZIPPED_LIMIT == 262_144_000 and aws_lambda.UNZIPPED_LIMIT / aws_lambda.MiB == 250


@pytest.mark.skipif(os.environ.get("GLASSNET_OFFLINE") == "1", reason="needs PyPI (GLASSNET_OFFLINE=1)")
def test_cli_and_readme_state_the_same_limit(served, tmp_path, capsys):
    _, _, _, tmp = served
    from glassnet.deploy.cli import main
    out = tmp_path / "lambda out"
    assert main(["deploy", "lambda", str(tmp / "pima.glassnet"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Lambda's limit: 250 MiB" in printed and "262" not in printed
    readme = (out / "README.md").read_text()
    assert "Lambda's limit: 250 MiB" in readme and "262" not in readme
    info = json.loads((out / "build-info.json").read_text())
    assert f"{info['unzipped_bytes'] / aws_lambda.MiB:.1f} MiB unzipped" in printed
    assert f"{info['unzipped_bytes'] / aws_lambda.MiB:.1f} MiB unzipped" in readme
