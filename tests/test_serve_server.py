"""`glassnet serve` as a real process on loopback, driven by real clients.

NVIDIA's tritonclient (Open Inference Protocol, JSON and binary tensors), `requests`/`httpx`
(TensorFlow Serving REST), curl (the banner's commands) and prometheus-client's parser (/metrics).
Every prediction is compared with the same model's in-process ``predict``. Servers are started once
per module where the tests can share them; tests that need their own flags start their own.
"""
import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serving_util import embedding_model, save_version, serve, tutorial_model, two_input_model  # noqa: E402

requests = pytest.importorskip("requests")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

RTOL = 1e-6
MAX_BODY = 20000
TIMEOUT = 20


# --- helpers --------------------------------------------------------------------------------------
def predict(model, x):
    out = model.predict(x, verbose=0)
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else np.asarray(out)


def close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float32), np.asarray(expected, dtype=np.float32),
                               rtol=RTOL, atol=1e-7)


def access_lines(text):
    """The JSON access log lines in a log text."""
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and "path" in entry and "status" in entry:
                lines.append(entry)
    return lines


def assert_clean_log(text):
    assert "Traceback" not in text, text[-4000:]
    assert "Internal server error" not in text, text[-4000:]
    bad = [e for e in access_lines(text) if e["status"] >= 500]
    assert not bad, bad


def metrics(url, **kw):
    r = requests.get(url + "/metrics", timeout=TIMEOUT, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def sample(families, family, sample_name, **labels):
    """Sum of the samples ``sample_name`` of ``family`` whose labels include ``labels`` (0 if none)."""
    fam = families.get(family)
    if fam is None:
        return 0.0
    return sum(s.value for s in fam.samples
               if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()))


def wait_until(fn, timeout=5.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def error_of(r, status):
    """Assert ``r`` is the JSON ``{"error": message}`` refusal with ``status``; return the message."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    return body["error"]


# --- shared models and servers --------------------------------------------------------------------
class Models:
    def __init__(self):
        self.pima, x = tutorial_model(seed=0)
        self.x = np.asarray(x, dtype=np.float32)
        self.pima2, _ = tutorial_model(seed=1)  # "version 2": a different model
        self.two = two_input_model(seed=0)
        rng = np.random.default_rng(0)
        self.a = rng.normal(size=(6, 3)).astype(np.float32)
        self.b = rng.normal(size=(6, 2, 2)).astype(np.float32)
        assert not np.allclose(predict(self.pima, self.x[:20]), predict(self.pima2, self.x[:20]), rtol=1e-3)


@pytest.fixture(scope="module")
def models():
    return Models()


@pytest.fixture(scope="module")
def repo(models, tmp_path_factory):
    path = tmp_path_factory.mktemp("repo")
    save_version(str(path), "pima", 1, models.pima)
    save_version(str(path), "two", 1, models.two)
    return path


@pytest.fixture(scope="module")
def main(repo, tmp_path_factory):
    """The shared server: pima and two, batching on, a small body limit, no hot reload."""
    with serve(repo, "--poll-seconds", 0, "--max-batch-size", 16, "--batch-timeout-ms", 20,
                     "--max-body-bytes", MAX_BODY, tmp_path=tmp_path_factory.mktemp("main-logs")) as server:
        yield server
        assert server.proc.poll() is None, server.log()
        assert_clean_log(server.log())  # whatever the tests sent: no traceback, no 5xx


@pytest.fixture(scope="module")
def triton(main):
    http = pytest.importorskip("tritonclient.http")
    client = http.InferenceServerClient(url=f"127.0.0.1:{main.port}", connection_timeout=TIMEOUT,
                                        network_timeout=TIMEOUT)
    yield http, client
    client.close()


# --- Open Inference Protocol with NVIDIA's tritonclient -------------------------------------------
def test_triton_health_and_metadata(triton, main):
    http, client = triton
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("pima")
    assert client.is_model_ready("pima", "1")
    assert client.is_model_ready("two")
    assert not client.is_model_ready("nope")
    assert not client.is_model_ready("pima", "2")
    server = client.get_server_metadata()
    assert server["name"] == "glassnet" and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata("pima")
    assert meta["name"] == "pima" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 1]}]
    meta = client.get_model_metadata("two", "1")
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [("a", "FP32", [-1, 3]),
                                                                                ("b", "FP32", [-1, 2, 2])]
    assert [(t["name"], t["shape"]) for t in meta["outputs"]] == [("scores", [-1, 2]), ("prob", [-1, 1])]


@pytest.mark.parametrize("binary_in,binary_out", [(False, False), (True, False), (False, True), (True, True)])
def test_triton_infer_matches_predict(triton, models, binary_in, binary_out):
    http, client = triton
    x = models.x[10:15]
    inp = http.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary_in)
    result = client.infer("pima", [inp], outputs=[http.InferRequestedOutput("output", binary_data=binary_out)],
                          request_id=f"req-{binary_in}-{binary_out}")
    response = result.get_response()
    assert response["model_name"] == "pima" and response["model_version"] == "1"
    assert response["id"] == f"req-{binary_in}-{binary_out}"
    out = result.get_output("output")
    assert out["datatype"] == "FP32" and out["shape"] == [5, 1]
    assert ("binary_data_size" in out.get("parameters", {})) == binary_out  # the wire format really was binary
    assert ("data" in out) == (not binary_out)
    y = result.as_numpy("output")
    assert y.dtype == np.float32 and y.shape == (5, 1)
    close(y, predict(models.pima, x))


def test_triton_two_inputs_two_outputs(triton, models):
    http, client = triton
    a, b = models.a, models.b
    ia = http.InferInput("a", list(a.shape), "FP32")
    ia.set_data_from_numpy(a, binary_data=False)
    ib = http.InferInput("b", list(b.shape), "FP32")
    ib.set_data_from_numpy(b, binary_data=True)
    scores, prob = predict(models.two, [a, b])
    result = client.infer("two", [ia, ib])  # all outputs
    close(result.as_numpy("scores"), scores)
    close(result.as_numpy("prob"), prob)
    # one output only, binary; and the inputs in the other order
    result = client.infer("two", [ib, ia], outputs=[http.InferRequestedOutput("prob", binary_data=True)])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["prob"]
    assert result.as_numpy("scores") is None
    close(result.as_numpy("prob"), prob)


# --- TensorFlow Serving REST with requests and httpx ----------------------------------------------
@pytest.fixture(params=["requests", "httpx"])
def client(request):
    if request.param == "requests":
        with requests.Session() as s:
            yield s
    else:
        with httpx.Client(timeout=TIMEOUT) as c:
            yield c


def test_tf_row_and_columnar_formats(client, main, models):
    x = models.x[20:24]
    want = predict(models.pima, x)
    r = client.post(main.url + "/v1/models/pima:predict", json={"instances": x.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["predictions"] and np.shape(body["predictions"]) == (4, 1)
    close(body["predictions"], want)
    # named-object rows, with the signature name spelled out
    r = client.post(main.url + "/v1/models/pima:predict",
                    json={"signature_name": "serving_default", "instances": [{"input": row} for row in x.tolist()]})
    assert r.status_code == 200, r.text
    close(r.json()["predictions"], want)
    # columnar
    r = client.post(main.url + "/v1/models/pima:predict", json={"inputs": x.tolist()})
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["outputs"]
    close(r.json()["outputs"], want)
    r = client.post(main.url + "/v1/models/pima:predict", json={"inputs": {"input": x.tolist()}})
    close(r.json()["outputs"], want)
    # versioned URL
    r = client.post(main.url + "/v1/models/pima/versions/1:predict", json={"instances": x.tolist()})
    assert r.status_code == 200, r.text
    close(r.json()["predictions"], want)


def test_tf_two_inputs(client, main, models):
    a, b = models.a[:3], models.b[:3]
    scores, prob = predict(models.two, [a, b])
    rows = [{"a": a[i].tolist(), "b": b[i].tolist()} for i in range(3)]
    r = client.post(main.url + "/v1/models/two:predict", json={"instances": rows})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 3 and all(set(p) == {"scores", "prob"} for p in preds)
    close([p["scores"] for p in preds], scores)
    close([p["prob"] for p in preds], prob)
    r = client.post(main.url + "/v1/models/two/versions/1:predict", json={"inputs": {"a": a.tolist(), "b": b.tolist()}})
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    assert set(outputs) == {"scores", "prob"}
    close(outputs["scores"], scores)
    close(outputs["prob"], prob)


def test_tf_status_and_metadata(client, main):
    want = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}
    for path in ("/v1/models/pima", "/v1/models/pima/versions/1"):
        r = client.get(main.url + path)
        assert r.status_code == 200, r.text
        assert r.json() == want
    for path in ("/v1/models/pima/metadata", "/v1/models/pima/versions/1/metadata"):
        r = client.get(main.url + path)
        assert r.status_code == 200, r.text
        meta = r.json()
        assert meta["model_spec"]["name"] == "pima" and meta["model_spec"]["version"] == "1"
        sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert sig["inputs"]["input"]["dtype"] == "DT_FLOAT"
        assert [d["size"] for d in sig["inputs"]["input"]["tensor_shape"]["dim"]] == ["-1", "8"]
        assert [d["size"] for d in sig["outputs"]["output"]["tensor_shape"]["dim"]] == ["-1", "1"]
        assert sig["method_name"] == "tensorflow/serving/predict"


# --- bad requests ---------------------------------------------------------------------------------
def _v2(name, shape, datatype, data):
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


ROW = [1.0] * 8


def _binary_body(values):
    raw = np.asarray(values, dtype=np.float32).tobytes()
    head = json.dumps({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head))}


BAD = [
    # (id, method, path, kwargs, status, substrings the error must contain)
    ("malformed-json", "POST", "/v1/models/pima:predict", {"data": b'{"instances": [[1, 2'}, 400,
     ["not valid JSON", '{"instances"']),
    ("malformed-json-v2", "POST", "/v2/models/pima/infer", {"data": b'{"inputs": [{'}, 400, ["not valid JSON"]),
    ("not-an-object", "POST", "/v1/models/pima:predict", {"json": [ROW]}, 400, ['"instances"']),
    ("both-formats", "POST", "/v1/models/pima:predict", {"json": {"instances": [ROW], "inputs": [ROW]}}, 400,
     ["exactly one"]),
    ("unknown-key", "POST", "/v1/models/pima:predict", {"json": {"instance": [ROW]}}, 400, ["instance", "instances"]),
    ("short-row", "POST", "/v1/models/pima:predict", {"json": {"instances": [[1.0] * 7]}}, 400,
     ["[1, 7]", "[-1, 8]"]),
    ("flat-row", "POST", "/v1/models/pima:predict", {"json": {"instances": ROW}}, 400, ["Wrap a single row"]),
    ("ragged", "POST", "/v1/models/pima:predict", {"json": {"instances": [ROW, ROW[:5]]}}, 400, ["ragged"]),
    ("v2-shape-data", "POST", "/v2/models/pima/infer", {"json": _v2("input", [1, 8], "FP32", ROW[:7])}, 400,
     ["7 values", "needs 8"]),
    ("v2-wrong-shape", "POST", "/v2/models/pima/infer", {"json": _v2("input", [2, 4], "FP32", ROW)}, 400,
     ["[2, 4]", "[-1, 8]"]),
    ("v2-datatype", "POST", "/v2/models/pima/infer", {"json": _v2("input", [1, 8], "FP64", ROW)}, 400,
     ['"datatype": "FP32"']),
    ("v2-unknown-datatype", "POST", "/v2/models/pima/infer", {"json": _v2("input", [1, 8], "FLOAT", ROW)}, 400,
     ["FP32", "use one of"]),
    ("v2-bytes", "POST", "/v2/models/pima/infer", {"json": _v2("input", [1, 8], "BYTES", ["x"] * 8)}, 400,
     ["FP32"]),
    ("strings", "POST", "/v1/models/pima:predict", {"json": {"instances": [["1.5"] * 8]}}, 400,
     ["non-numeric", "Send numbers"]),
    ("v2-strings", "POST", "/v2/models/pima/infer", {"json": _v2("input", [1, 8], "FP32", ["a"] * 8)}, 400,
     ["non-numeric"]),
    ("booleans", "POST", "/v1/models/pima:predict", {"json": {"instances": [[True] * 8]}}, 400, ["1 or 0"]),
    ("missing-input", "POST", "/v1/models/two:predict", {"json": {"instances": [{"a": [1.0, 2.0, 3.0]}]}}, 400,
     ["missing ['b']", "['a', 'b']"]),
    ("extra-input", "POST", "/v1/models/two:predict",
     {"json": {"instances": [{"a": [1.0, 2.0, 3.0], "b": [[1.0, 2.0], [3.0, 4.0]], "c": 1.0}]}}, 400,
     ["unknown ['c']"]),
    ("plain-rows-two-inputs", "POST", "/v1/models/two:predict", {"json": {"instances": [[1.0, 2.0, 3.0]]}}, 400,
     ["'a'", "'b'"]),
    ("v2-missing-input", "POST", "/v2/models/two/infer", {"json": _v2("a", [1, 3], "FP32", [1.0, 2.0, 3.0])}, 400,
     ["missing ['b']"]),
    ("v2-unknown-output", "POST", "/v2/models/pima/infer",
     {"json": {**_v2("input", [1, 8], "FP32", ROW), "outputs": [{"name": "nope"}]}}, 400, ["['output']"]),
    ("nan-token", "POST", "/v1/models/pima:predict", {"data": b'{"instances": [[NaN, 1, 1, 1, 1, 1, 1, 1]]}'}, 400,
     ["NaN or Infinity", "finite"]),
    ("infinity-token", "POST", "/v2/models/pima/infer",
     {"data": b'{"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", '
              b'"data": [Infinity, 1, 1, 1, 1, 1, 1, 1]}]}'}, 400, ["NaN or Infinity"]),
    ("float32-overflow", "POST", "/v1/models/pima:predict", {"json": {"instances": [[1e300] + ROW[1:]]}}, 400,
     ["NaN/Inf"]),
    ("binary-nan", "POST", "/v2/models/pima/infer",
     dict(zip(("data", "headers"), _binary_body([np.nan] + ROW[1:]))), 400, ["NaN/Inf"]),
    ("binary-bad-header", "POST", "/v2/models/pima/infer",
     {"data": b'{"inputs": []}', "headers": {"Inference-Header-Content-Length": "999"}}, 400,
     ["Inference-Header-Content-Length"]),
    ("oversize", "POST", "/v1/models/pima:predict", {"json": {"instances": [ROW] * 700}}, 413,
     ["--max-body-bytes", "fewer rows"]),
    ("oversize-chunked", "POST", "/v1/models/pima:predict", {"data": "chunked"}, 413, ["--max-body-bytes"]),
    ("unknown-model", "POST", "/v1/models/nope:predict", {"json": {"instances": [ROW]}}, 404,
     ["Unknown model 'nope'", "'pima'", "'two'"]),
    ("unknown-model-v2", "POST", "/v2/models/nope/infer", {"json": _v2("input", [1, 8], "FP32", ROW)}, 404,
     ["Unknown model 'nope'"]),
    ("unknown-model-status", "GET", "/v1/models/nope", {}, 404, ["'pima'"]),
    ("unknown-version", "POST", "/v1/models/pima/versions/7:predict", {"json": {"instances": [ROW]}}, 404,
     ["no version '7'", "['1']"]),
    ("unknown-version-v2", "GET", "/v2/models/pima/versions/7", {}, 404, ["['1']"]),
    ("bad-version", "GET", "/v1/models/pima/versions/latest", {}, 404, ["['1']"]),
    ("get-predict", "GET", "/v1/models/pima:predict", {}, 405, ["takes POST"]),
    ("put-infer", "PUT", "/v2/models/pima/infer", {"json": _v2("input", [1, 8], "FP32", ROW)}, 405, ["takes POST"]),
    ("post-live", "POST", "/v2/health/live", {}, 405, ["takes GET"]),
    ("delete-model", "DELETE", "/v1/models/pima", {}, 405, ["takes GET"]),
    ("unknown-endpoint", "GET", "/v3/models/pima", {}, 404, ["/v1/models/{name}:predict", "/v2/models/{name}/infer"]),
]


def test_bad_requests_get_helpful_4xx_and_server_keeps_serving(main, models):
    seen = []
    for case_id, method, path, kwargs, status, needles in BAD:
        kwargs = dict(kwargs)
        if kwargs.get("data") == "chunked":  # no Content-Length: the limit is enforced while reading
            kwargs["data"] = iter([b'{"instances": [' + b"[1, 1, 1, 1, 1, 1, 1, 1], " * 160] * 8)
        if "json" in kwargs and case_id.startswith("oversize"):
            assert len(json.dumps(kwargs["json"])) > MAX_BODY
        r = requests.request(method, main.url + path, timeout=TIMEOUT, **kwargs)
        message = error_of(r, status)
        for needle in needles:
            assert needle in message, (case_id, message)
        if status == 405:
            assert r.headers.get("allow"), (case_id, r.headers)
        seen.append((method, path, status))
    # still serving, correctly
    r = requests.post(main.url + "/v1/models/pima:predict", json={"instances": models.x[:2].tolist()},
                      timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    close(r.json()["predictions"], predict(models.pima, models.x[:2]))
    assert requests.get(main.url + "/v2/health/ready", timeout=TIMEOUT).status_code == 200
    # every refusal is in the access log with its status; no traceback, no 5xx
    logged = wait_until(lambda: (lambda e: e if all((m, p, s) in e for m, p, s in seen) else None)(
        {(e["method"], e["path"], e["status"]) for e in access_lines(main.stderr())}), timeout=3)
    assert logged, [x for x in seen if x not in {(e["method"], e["path"], e["status"])
                                                   for e in access_lines(main.stderr())}]
    assert_clean_log(main.log())


# --- dynamic batching -----------------------------------------------------------------------------
async def _fire(url, bodies):
    async with httpx.AsyncClient(timeout=TIMEOUT, limits=httpx.Limits(max_connections=64)) as c:
        return await asyncio.gather(*(c.post(url, json=b) for b in bodies))


def _concurrent_rows(models, n, sizes):
    """``n`` requests of distinct rows, request i has sizes[i % len(sizes)] rows."""
    reqs, start = [], 100
    for i in range(n):
        k = sizes[i % len(sizes)]
        reqs.append(models.x[start:start + k])
        start += k
    return reqs


def test_dynamic_batching_batches_and_keeps_rows_apart(main, models):
    labels = dict(model="pima", version="1")
    before = metrics(main.url)
    reqs = _concurrent_rows(models, 32, sizes=(1, 1, 2, 1, 3))
    responses = asyncio.run(_fire(main.url + "/v1/models/pima:predict", [{"instances": x.tolist()} for x in reqs]))
    for x, r in zip(reqs, responses):
        assert r.status_code == 200, r.text
        got = r.json()["predictions"]
        assert np.shape(got) == (len(x), 1)
        close(got, predict(models.pima, x))  # its own rows, not a neighbour's
    after = metrics(main.url)
    count = sample(after, "glassnet_batch_size", "glassnet_batch_size_count", **labels) - \
        sample(before, "glassnet_batch_size", "glassnet_batch_size_count", **labels)
    rows = sample(after, "glassnet_batch_size", "glassnet_batch_size_sum", **labels) - \
        sample(before, "glassnet_batch_size", "glassnet_batch_size_sum", **labels)
    assert rows == sum(len(x) for x in reqs)
    assert 0 < count < len(reqs) and rows / count > 1, (rows, count)
    le16 = sample(after, "glassnet_batch_size", "glassnet_batch_size_bucket", le="16.0", **labels) - \
        sample(before, "glassnet_batch_size", "glassnet_batch_size_bucket", le="16.0", **labels)
    assert le16 == count  # --max-batch-size 16: no batch is larger


def test_dynamic_batching_two_inputs_two_outputs(main, models):
    """Concurrent V2 requests to the two-input model: both inputs concatenated, both outputs split back."""
    rng = np.random.default_rng(1)
    reqs = [(rng.normal(size=(k, 3)).astype(np.float32), rng.normal(size=(k, 2, 2)).astype(np.float32))
            for k in [1, 2, 1, 3] * 5]
    labels = dict(model="two", version="1")
    before = metrics(main.url)
    bodies = [{"inputs": [{"name": "a", "shape": list(a.shape), "datatype": "FP32", "data": a.ravel().tolist()},
                          {"name": "b", "shape": list(b.shape), "datatype": "FP32", "data": b.tolist()}]}
              for a, b in reqs]
    responses = asyncio.run(_fire(main.url + "/v2/models/two/infer", bodies))
    for (a, b), r in zip(reqs, responses):
        assert r.status_code == 200, r.text
        outputs = {o["name"]: np.reshape(o["data"], o["shape"]) for o in r.json()["outputs"]}
        scores, prob = predict(models.two, [a, b])
        assert outputs["scores"].shape == (len(a), 2) and outputs["prob"].shape == (len(a), 1)
        close(outputs["scores"], scores)
        close(outputs["prob"], prob)
    after = metrics(main.url)
    count = sample(after, "glassnet_batch_size", "glassnet_batch_size_count", **labels) - \
        sample(before, "glassnet_batch_size", "glassnet_batch_size_count", **labels)
    assert count < len(reqs)  # some requests did share a batch


def test_max_batch_size_1_runs_one_row_at_a_time(repo, models, tmp_path):
    with serve(repo, "--poll-seconds", 0, "--max-batch-size", 1, "--no-access-log", tmp_path=tmp_path) as server:
        reqs = _concurrent_rows(models, 24, sizes=(1,))
        responses = asyncio.run(_fire(server.url + "/v1/models/pima:predict",
                                      [{"instances": x.tolist()} for x in reqs]))
        for x, r in zip(reqs, responses):
            assert r.status_code == 200, r.text
            close(r.json()["predictions"], predict(models.pima, x))
        fam = metrics(server.url)
        labels = dict(model="pima", version="1")
        count = sample(fam, "glassnet_batch_size", "glassnet_batch_size_count", **labels)
        assert count == len(reqs)
        assert sample(fam, "glassnet_batch_size", "glassnet_batch_size_sum", **labels) == len(reqs)
        assert sample(fam, "glassnet_batch_size", "glassnet_batch_size_bucket", le="1.0", **labels) == len(reqs)
        assert_clean_log(server.log())


def test_ids_the_model_refuses_get_a_400_and_their_batch_is_answered(tmp_path):
    """An Embedding model behind the batcher: a request with an id out of range, sent among good ones, gets the
    model's message as a 400 while the requests batched with it get their predictions; JSON nested too deep for
    Python's parser is a 400 too. No 5xx anywhere."""
    model = embedding_model(seed=3)
    repo = tmp_path / "repo"
    save_version(str(repo), "emb", 1, model)
    rng = np.random.default_rng(4)
    good = [rng.integers(0, 10, size=(2, 4)) for _ in range(15)]
    bodies = [{"instances": x.tolist()} for x in good]
    bodies.insert(7, {"instances": [[1, 2, 30, 4]]})
    with serve(repo, "--poll-seconds", 0, "--max-batch-size", 64, "--batch-timeout-ms", 30, "--no-access-log",
               tmp_path=tmp_path) as server:
        responses = asyncio.run(_fire(server.url + "/v1/models/emb:predict", bodies))
        message = error_of(responses.pop(7), 400)
        assert "cannot take this input" in message and "30" in message, message
        for x, r in zip(good, responses):
            assert r.status_code == 200, r.text
            close(r.json()["predictions"], predict(model, x.astype(np.int32)))
        r = requests.post(server.url + "/v1/models/emb:predict", data=b"[" * 3000 + b"]" * 3000, timeout=TIMEOUT)
        assert "not valid JSON" in error_of(r, 400)
        fam = metrics(server.url)
        assert sample(fam, "glassnet_batch_size", "glassnet_batch_size_count", model="emb", version="1") < len(bodies)
        assert_clean_log(server.log())


def test_h11_parser_serves_the_same_predictions(repo, models, tmp_path):
    """--http h11: uvicorn's pure-Python HTTP parser (the stack of a plain `pip install uvicorn`)."""
    from glassnet.serve.server import _uvicorn_impls
    assert _uvicorn_impls("h11")[1] == "h11" and _uvicorn_impls("auto")[1] == "httptools"
    with pytest.raises(ValueError, match="'auto', 'httptools' or 'h11'"):
        _uvicorn_impls("h2")
    with serve(repo, "--poll-seconds", 0, "--http", "h11", "--no-access-log", tmp_path=tmp_path) as server:
        reqs = _concurrent_rows(models, 16, sizes=(1, 3))
        responses = asyncio.run(_fire(server.url + "/v1/models/pima:predict",
                                      [{"instances": x.tolist()} for x in reqs]))
        for x, r in zip(reqs, responses):
            assert r.status_code == 200, r.text
            close(r.json()["predictions"], predict(models.pima, x))
        assert_clean_log(server.log())
    bad = subprocess.run([sys.executable, "-m", "glassnet", "serve", str(repo), "--http", "h2"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice: 'h2'" in bad.stderr


# --- metrics --------------------------------------------------------------------------------------
def test_metrics_count_requests_latency_and_queue(main, models):
    def requests_total(fam, **labels):
        return sample(fam, "glassnet_requests", "glassnet_requests_total", **labels)

    before = metrics(main.url)
    x = models.x[:2].tolist()
    for _ in range(3):
        assert requests.post(main.url + "/v1/models/pima:predict", json={"instances": x},
                             timeout=TIMEOUT).status_code == 200
    for _ in range(2):
        assert requests.post(main.url + "/v2/models/pima/infer", json=_v2("input", [2, 8], "FP32", x),
                             timeout=TIMEOUT).status_code == 200
    assert requests.post(main.url + "/v1/models/pima:predict", json={"instances": [[1.0]]},
                         timeout=TIMEOUT).status_code == 400
    assert requests.post(main.url + "/v1/models/nope:predict", json={"instances": x},
                         timeout=TIMEOUT).status_code == 404
    after = metrics(main.url)
    assert after["glassnet_requests"].type == "counter"

    def delta(**labels):
        return requests_total(after, **labels) - requests_total(before, **labels)
    assert delta(model="pima", version="1", endpoint="predict", code="200") == 3
    assert delta(model="pima", version="1", endpoint="infer", code="200") == 2
    assert delta(model="pima", version="1", endpoint="predict", code="400") == 1
    assert delta(model="", endpoint="predict", code="404") == 1
    assert delta(endpoint="metrics", code="200") >= 1  # the first scrape
    latency = after["glassnet_request_duration_seconds"]
    assert latency.type == "histogram"
    names = {s.name for s in latency.samples if s.labels.get("model") == "pima"}
    assert {"glassnet_request_duration_seconds_bucket", "glassnet_request_duration_seconds_count",
            "glassnet_request_duration_seconds_sum"} <= names
    lat_count = [sample(f, "glassnet_request_duration_seconds", "glassnet_request_duration_seconds_count",
                        model="pima", endpoint="predict") for f in (before, after)]
    assert lat_count[1] - lat_count[0] == 4
    inf = sample(after, "glassnet_request_duration_seconds", "glassnet_request_duration_seconds_bucket",
                 model="pima", endpoint="predict", le="+Inf")
    assert inf == lat_count[1]
    queue = after["glassnet_queue_depth"]
    assert queue.type == "gauge"
    depth = [s for s in queue.samples if s.labels == {"model": "pima", "version": "1"}]
    assert len(depth) == 1 and depth[0].value == 0  # idle now
    assert sample(after, "glassnet_model_loaded", "glassnet_model_loaded", model="pima", version="1") == 1


def _worker_pids_with_samples(proc):
    """PIDs of the worker processes that wrote prometheus samples (best effort, Linux /proc)."""
    try:
        children = subprocess.run(["ps", "--ppid", str(proc.pid), "-o", "pid="], capture_output=True, text=True,
                                  timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    folder = None
    for pid in children:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        if b"PROMETHEUS_MULTIPROC_DIR" in env:
            folder = env[b"PROMETHEUS_MULTIPROC_DIR"].decode()
    if folder is None or not os.path.isdir(folder):
        return None
    return {m.group(1) for f in os.listdir(folder) for m in [re.match(r"counter_(\d+)\.db$", f)] if m}


async def _burst(url, xs):
    """One request per row of ``xs``, all at once, each on its own connection (so either worker may take it)."""
    async def one(x):
        async with httpx.AsyncClient(timeout=TIMEOUT) as c:
            return await c.post(url, json={"instances": x.tolist()})
    return await asyncio.gather(*(one(xs[i:i + 1]) for i in range(len(xs))))


def test_metrics_sum_across_workers(repo, models, tmp_path):
    with serve(repo, "--poll-seconds", 0, "--workers", 2, "--no-access-log", tmp_path=tmp_path) as server:
        sent, pids = 0, None
        for burst in range(6):  # until both workers have answered some (the kernel picks who accepts)
            xs = models.x[burst * 24:(burst + 1) * 24]
            for x, r in zip(xs, asyncio.run(_burst(server.url + "/v1/models/pima:predict", xs))):
                assert r.status_code == 200, r.text
                close(r.json()["predictions"], predict(models.pima, x[None]))
            sent += len(xs)
            pids = _worker_pids_with_samples(server.proc)
            if burst >= 1 and (pids is None or len(pids) >= 2):
                break
        if pids is not None:
            assert len(pids) == 2, pids  # both workers served requests, so what follows checks a real sum
        labels = dict(model="pima", version="1", endpoint="predict", code="200")

        def total(fam):
            return sample(fam, "glassnet_requests", "glassnet_requests_total", **labels)
        assert wait_until(lambda: total(metrics(server.url, headers={"Connection": "close"})) == sent, timeout=3)
        for _ in range(6):  # whichever worker answers the scrape, it reports every worker's requests
            fam = metrics(server.url, headers={"Connection": "close"})
            assert total(fam) == sent
            assert sample(fam, "glassnet_batch_size", "glassnet_batch_size_sum", model="pima", version="1") == sent
            assert sample(fam, "glassnet_request_duration_seconds", "glassnet_request_duration_seconds_count",
                          model="pima", endpoint="predict") == sent
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(10) == 0
        assert_clean_log(server.log())


# --- hot reload and version policies --------------------------------------------------------------
def test_hot_reload_under_load(models, tmp_path):
    repo = tmp_path / "repo"
    save_version(str(repo), "pima", 1, models.pima)
    x = models.x[30:34]
    want = {1: predict(models.pima, x), 2: predict(models.pima2, x)}

    def which(pred):
        for v, w in want.items():
            if np.allclose(np.asarray(pred, dtype=np.float32), w, rtol=RTOL, atol=1e-7):
                return v
        return None

    with serve(repo, "--poll-seconds", 0.2, "--no-access-log", tmp_path=tmp_path) as server:
        stop = threading.Event()
        results = [[] for _ in range(3)]  # per thread: (status, version or None)

        def load(k):
            with requests.Session() as s:
                while not stop.is_set():
                    try:
                        r = s.post(server.url + "/v1/models/pima:predict", json={"instances": x.tolist()},
                                   timeout=TIMEOUT)
                        results[k].append((r.status_code, which(r.json()["predictions"])
                                           if r.status_code == 200 else r.text))
                    except Exception as e:  # noqa: BLE001
                        results[k].append((None, repr(e)))
        threads = [threading.Thread(target=load, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.8)
            assert wait_until(lambda: all(results), timeout=10)  # every thread has seen version 1
            save_version(str(repo), "pima", 2, models.pima2)
            deadline = time.monotonic() + 10
            seen_v2 = None
            while time.monotonic() < deadline:
                time.sleep(0.1)
                if seen_v2 is None and any(res and res[-1][1] == 2 for res in results):
                    seen_v2 = time.monotonic()
                if seen_v2 is not None and time.monotonic() - seen_v2 > 1.5:
                    break
        finally:
            stop.set()
            for t in threads:
                t.join()
        flat = [r for res in results for r in res]
        assert flat and all(status == 200 for status, _ in flat), [r for r in flat if r[0] != 200][:5]
        assert all(v in (1, 2) for _, v in flat), [r for r in flat if r[1] not in (1, 2)][:5]
        for res in results:
            versions = [v for _, v in res]
            assert versions[0] == 1 and versions[-1] == 2, versions
            first2 = versions.index(2)
            assert all(v == 2 for v in versions[first2:]), versions  # switched once, and stayed
        assert sum(v == 2 for _, v in flat) >= 10
        status = requests.get(server.url + "/v1/models/pima", timeout=TIMEOUT).json()
        assert [s["version"] for s in status["model_version_status"]] == ["2"]
        assert requests.get(server.url + "/v2/models/pima", timeout=TIMEOUT).json()["versions"] == ["2"]
        r = requests.post(server.url + "/v2/models/pima/infer", json=_v2("input", [4, 8], "FP32", x.tolist()),
                          timeout=TIMEOUT)
        assert r.json()["model_version"] == "2"
        close(np.reshape(r.json()["outputs"][0]["data"], (4, 1)), want[2])
        assert "loaded model pima version 2" in server.log()
        assert_clean_log(server.log())


def test_hot_reload_keeps_serving_while_a_new_version_is_still_being_copied(models, tmp_path):
    """A plain `cp` into ``pima/2/`` is not atomic: until the copy completes, version 1 must stay served."""
    repo = tmp_path / "repo"
    save_version(str(repo), "pima", 1, models.pima)
    staged = save_version(str(tmp_path / "staging"), "pima", 2, models.pima2)
    with open(staged, "rb") as f:
        data = f.read()
    x = models.x[35:38]
    with serve(repo, "--poll-seconds", 0.2, "--no-access-log", tmp_path=tmp_path) as server:
        def pred():
            return requests.post(server.url + "/v1/models/pima:predict", json={"instances": x.tolist()},
                                 timeout=TIMEOUT)
        close(pred().json()["predictions"], predict(models.pima, x))
        os.makedirs(repo / "pima" / "2")
        target = repo / "pima" / "2" / "model.glassnet"
        with open(target, "wb") as f:  # the first half of the copy has landed
            f.write(data[:len(data) // 2])
        deadline = time.monotonic() + 1.2  # several polls see the partial file
        while time.monotonic() < deadline:
            r = pred()
            assert r.status_code == 200, r.text
            close(r.json()["predictions"], predict(models.pima, x))
            assert requests.get(server.url + "/v2/health/ready", timeout=TIMEOUT).status_code == 200
            time.sleep(0.05)
        assert "cannot load model pima version 2" in server.log()  # it did try the partial file
        with open(target, "ab") as f:  # the copy completes
            f.write(data[len(data) // 2:])
        assert wait_until(lambda: np.allclose(pred().json()["predictions"], predict(models.pima2, x), rtol=RTOL,
                                              atol=1e-7), timeout=10), server.log()
        assert_clean_log(server.log())


def test_repository_polling_survives_folders_coming_and_going(models, tmp_path):
    """Version folders created and removed while the server polls: no failed refresh, still serving."""
    repo = tmp_path / "repo"
    save_version(str(repo), "pima", 1, models.pima)
    x = models.x[45:47]
    with serve(repo, "--poll-seconds", 0.005, "--no-access-log", tmp_path=tmp_path) as server:
        t0, i = time.monotonic(), 0
        while time.monotonic() - t0 < 1.0:
            folder = repo / "pima" / str(100 + i % 200)
            if folder.exists():
                os.rmdir(folder)
            else:
                os.mkdir(folder)
            i += 1
        r = requests.post(server.url + "/v1/models/pima:predict", json={"instances": x.tolist()}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        close(r.json()["predictions"], predict(models.pima, x))
        assert "refreshing the model repository failed" not in server.log(), server.log()[-3000:]
        assert_clean_log(server.log())


def two_versions(models, tmp_path):
    """A repository with pima versions 1 and 2 (two different models)."""
    repo = tmp_path / "repo"
    save_version(str(repo), "pima", 1, models.pima)
    save_version(str(repo), "pima", 2, models.pima2)
    return repo


def test_version_policy_all_and_unloading(models, tmp_path):
    repo = two_versions(models, tmp_path)
    x = models.x[40:43]
    with serve(repo, "--version-policy", "all", "--poll-seconds", 0.2, "--no-access-log",
               tmp_path=tmp_path) as server:
        def pred(path):
            r = requests.post(server.url + path, json={"instances": x.tolist()}, timeout=TIMEOUT)
            return r
        close(pred("/v1/models/pima/versions/1:predict").json()["predictions"], predict(models.pima, x))
        close(pred("/v1/models/pima/versions/2:predict").json()["predictions"], predict(models.pima2, x))
        close(pred("/v1/models/pima:predict").json()["predictions"], predict(models.pima2, x))  # the highest
        status = requests.get(server.url + "/v1/models/pima", timeout=TIMEOUT).json()
        assert sorted(s["version"] for s in status["model_version_status"]) == ["1", "2"]
        assert sorted(requests.get(server.url + "/v2/models/pima", timeout=TIMEOUT).json()["versions"]) == ["1", "2"]
        shutil.rmtree(repo / "pima" / "2")
        assert wait_until(lambda: pred("/v1/models/pima/versions/2:predict").status_code == 404, timeout=10), \
            server.log()
        message = error_of(pred("/v1/models/pima/versions/2:predict"), 404)
        assert "['1']" in message
        close(pred("/v1/models/pima:predict").json()["predictions"], predict(models.pima, x))
        close(pred("/v1/models/pima/versions/1:predict").json()["predictions"], predict(models.pima, x))
        status = requests.get(server.url + "/v1/models/pima", timeout=TIMEOUT).json()
        assert [s["version"] for s in status["model_version_status"]] == ["1"]
        assert "unloaded model pima version 2" in server.log()
        assert_clean_log(server.log())


def test_version_policy_specific(models, tmp_path):
    repo = two_versions(models, tmp_path)
    x = models.x[50:52]
    with serve(repo, "--version-policy", "specific:1", "--poll-seconds", 0, "--no-access-log",
               tmp_path=tmp_path) as server:
        r = requests.post(server.url + "/v1/models/pima/versions/1:predict", json={"instances": x.tolist()},
                          timeout=TIMEOUT)
        close(r.json()["predictions"], predict(models.pima, x))
        r = requests.post(server.url + "/v1/models/pima:predict", json={"instances": x.tolist()}, timeout=TIMEOUT)
        close(r.json()["predictions"], predict(models.pima, x))
        r = requests.post(server.url + "/v1/models/pima/versions/2:predict", json={"instances": x.tolist()},
                          timeout=TIMEOUT)
        message = error_of(r, 404)
        assert "version '2'" in message and "['1']" in message
        r = requests.post(server.url + "/v2/models/pima/versions/2/infer",
                          json=_v2("input", [2, 8], "FP32", x.tolist()), timeout=TIMEOUT)
        assert "['1']" in error_of(r, 404)
        assert requests.get(server.url + "/v2/models/pima/versions/2/ready", timeout=TIMEOUT).status_code == 404
        status = requests.get(server.url + "/v1/models/pima", timeout=TIMEOUT).json()
        assert [s["version"] for s in status["model_version_status"]] == ["1"]
        assert_clean_log(server.log())


# --- graceful shutdown ----------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_finishes_in_flight_requests_and_exits_0(repo, models, tmp_path, sig):
    x = models.x[60:61]
    with serve(repo, "--poll-seconds", 0, "--max-batch-size", 64, "--batch-timeout-ms", 1500,
               tmp_path=tmp_path) as server:
        result = {}

        def send():
            try:
                t0 = time.monotonic()
                r = requests.post(server.url + "/v1/models/pima:predict", json={"instances": x.tolist()},
                                  timeout=TIMEOUT)
                result["response"] = (r.status_code, r.json(), time.monotonic() - t0)
            except Exception as e:  # noqa: BLE001
                result["response"] = (None, repr(e), None)
        thread = threading.Thread(target=send)
        thread.start()
        time.sleep(0.3)

        def queued():  # the request is waiting in the batcher (the queue depth gauge says so)
            fam = metrics(server.url, headers={"Connection": "close"})
            return sample(fam, "glassnet_queue_depth", "glassnet_queue_depth", model="pima", version="1") == 1
        assert wait_until(queued, timeout=5), server.log()
        server.proc.send_signal(sig)
        time.sleep(0.3)
        assert thread.is_alive()  # still waiting in the batcher
        with pytest.raises(ConnectionRefusedError):  # no new connections once stopping
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
        thread.join(TIMEOUT)
        status, body, seconds = result["response"]
        assert status == 200, (body, server.log())
        close(body["predictions"], predict(models.pima, x))
        assert seconds > 1.0  # it did wait in the batcher through the shutdown
        try:
            code = server.proc.wait(5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"glassnet serve did not exit within 5 s of {sig.name}:\n" + server.log())
        assert code == 0, (code, server.log())
        assert_clean_log(server.log())


def test_request_timeout_answers_503_and_the_server_keeps_serving(repo, models, tmp_path):
    """A prediction still waiting after --request-timeout-s gets 503 + Retry-After; the server goes on."""
    x = models.x[:1]
    with serve(repo, "--poll-seconds", 0, "--max-batch-size", 64, "--batch-timeout-ms", 2500,
               "--request-timeout-s", 0.5, tmp_path=tmp_path) as server:
        t0 = time.monotonic()
        r = requests.post(server.url + "/v1/models/pima:predict", json={"instances": x.tolist()}, timeout=TIMEOUT)
        waited = time.monotonic() - t0
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        assert "--request-timeout-s" in r.json()["error"]
        assert 0.45 < waited < 2.0  # expired by the timeout, not by the 2.5 s batch wait
        time.sleep(2.5)  # the abandoned batch runs; its answer is dropped
        with serve(repo, "--poll-seconds", 0, tmp_path=tmp_path) as fast:  # same repository, no batch wait
            r = requests.post(fast.url + "/v1/models/pima:predict", json={"instances": x.tolist()}, timeout=TIMEOUT)
            assert r.status_code == 200
            close(r.json()["predictions"], predict(models.pima, x))
        assert server.proc.poll() is None
        log = server.log()
        assert "Traceback" not in log and "Internal server error" not in log, log[-4000:]
        assert [line["status"] for line in access_lines(log) if line["path"].endswith(":predict")] == [503]


# --- operations: API key, access log, CORS, banner ------------------------------------------------
def test_api_key_cors_and_no_access_log(repo, models, tmp_path):
    x = models.x[70:72]
    key = "s3cret-key"
    with serve(repo, "--poll-seconds", 0, "--api-key", key, "--cors-origin", "https://app.example",
                     "--no-access-log", tmp_path=tmp_path) as server:
        url = server.url + "/v1/models/pima:predict"
        body = {"instances": x.tolist()}
        message = error_of(requests.post(url, json=body, timeout=TIMEOUT), 401)
        assert "Authorization: Bearer" in message and "X-API-Key" in message
        r = requests.post(url, json=body, headers={"Authorization": "Bearer wrong"}, timeout=TIMEOUT)
        assert "not valid" in error_of(r, 401)
        assert r.headers.get("www-authenticate", "").startswith("Bearer")
        error_of(requests.post(url, json=body, headers={"X-API-Key": "wrong"}, timeout=TIMEOUT), 401)
        error_of(requests.post(server.url + "/v2/models/pima/infer", json=_v2("input", [2, 8], "FP32", x.tolist()),
                               timeout=TIMEOUT), 401)
        error_of(requests.get(server.url + "/v1/models/pima/metadata", timeout=TIMEOUT), 401)
        for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
            r = requests.post(url, json=body, headers=headers, timeout=TIMEOUT)
            assert r.status_code == 200, r.text
            close(r.json()["predictions"], predict(models.pima, x))
        for path in ("/v2/health/live", "/v2/health/ready"):  # open to probes
            assert requests.get(server.url + path, timeout=TIMEOUT).status_code == 200
        error_of(requests.get(server.url + "/metrics", timeout=TIMEOUT), 401)  # metrics need the key (docs)
        fam = metrics(server.url, headers={"Authorization": f"Bearer {key}"})
        assert sample(fam, "glassnet_requests", "glassnet_requests_total", model="pima", code="200") == 2
        # CORS on for the configured origin only, also on refusals (so a browser can read the error)
        origin = {"Origin": "https://app.example"}
        r = requests.post(url, json=body, headers={**origin, "X-API-Key": key}, timeout=TIMEOUT)
        assert r.status_code == 200 and r.headers.get("access-control-allow-origin") == "https://app.example"
        r = requests.post(url, json=body, headers=origin, timeout=TIMEOUT)
        assert r.status_code == 401 and r.headers.get("access-control-allow-origin") == "https://app.example"
        r = requests.post(url, json=body, headers={"Origin": "https://evil.example", "X-API-Key": key},
                          timeout=TIMEOUT)
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        r = requests.options(url, headers={**origin, "Access-Control-Request-Method": "POST",
                                           "Access-Control-Request-Headers": "x-api-key, content-type"},
                             timeout=TIMEOUT)
        assert r.status_code == 204, r.text  # the preflight needs no key
        assert r.headers.get("access-control-allow-origin") == "https://app.example"
        assert "POST" in r.headers.get("access-control-allow-methods", "")
        assert "x-api-key" in r.headers.get("access-control-allow-headers", "").lower()
        r = requests.options(url, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
                             timeout=TIMEOUT)
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
        # --no-access-log: nothing logged per request
        time.sleep(0.2)
        assert access_lines(server.log()) == [], server.log()[-2000:]
        assert_clean_log(server.log())


def test_json_access_log_on_stderr(main, models):
    x = models.x[80:81].tolist()
    marker = "/v1/models/pima/versions/1:predict"
    r = requests.post(main.url + marker, json={"instances": x}, headers={"X-Trace": "log-test"}, timeout=TIMEOUT)
    assert r.status_code == 200
    r = requests.post(main.url + "/v2/models/pima/versions/1/infer", json=_v2("input", [1, 7], "FP32", x[0][:7]),
                      timeout=TIMEOUT)
    assert r.status_code == 400

    def find():
        lines = access_lines(main.stderr())
        ok = [e for e in lines if e["path"] == marker and e["status"] == 200]
        bad = [e for e in lines if e["path"] == "/v2/models/pima/versions/1/infer" and e["status"] == 400]
        return (ok, bad) if ok and bad else None
    found = wait_until(find, timeout=3)
    assert found, main.stderr()[-3000:]
    ok, bad = found
    entry = ok[-1]
    assert entry["method"] == "POST" and entry["model"] == "pima" and entry["version"] == "1"
    assert isinstance(entry["ms"], (int, float)) and 0 <= entry["ms"] < 60_000
    assert bad[-1]["method"] == "POST" and bad[-1]["model"] == "pima" and "error" in bad[-1]
    assert access_lines(main.stdout()) == []  # the access log is on stderr, not mixed into stdout


def test_cors_off_by_default(main, models):
    r = requests.post(main.url + "/v1/models/pima:predict", json={"instances": models.x[:1].tolist()},
                      headers={"Origin": "https://app.example"}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert not any(h.lower().startswith("access-control-") for h in r.headers)
    r = requests.options(main.url + "/v1/models/pima:predict",
                         headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
                         timeout=TIMEOUT)
    assert r.status_code >= 400 and "access-control-allow-origin" not in r.headers


def test_web_page_docs_and_openapi_are_served(main):
    for path, kind in (("/", "text/html"), ("/docs", "text/html"), ("/openapi.json", "application/json")):
        r = requests.get(main.url + path, timeout=TIMEOUT)
        assert r.status_code == 200, (path, r.text[:500])
        assert r.headers["content-type"].startswith(kind), (path, r.headers)
        assert r.content
    assert "/v1/models/{name}:predict" in json.dumps(requests.get(main.url + "/openapi.json", timeout=TIMEOUT).json())
    assert_clean_log(main.log())


def test_banner_curl_commands_work(main, models):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    lines = [line.strip() for line in main.stdout().splitlines() if line.strip().startswith("curl ")]
    tf = [c for c in lines if ":predict" in c]
    v2 = [c for c in lines if "/infer" in c]
    assert len(tf) == 1 and len(v2) == 1, main.stdout()
    for command in (tf[0], v2[0]):
        assert f"127.0.0.1:{main.port}" in command
        argv = shlex.split(command)
        payload = json.loads(argv[argv.index("-d") + 1])
        out = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=TIMEOUT)
        assert out.returncode == 0, out.stderr
        body = json.loads(out.stdout)
        if command is tf[0]:
            x = np.asarray(payload["instances"], dtype=np.float32)
            close(body["predictions"], predict(models.pima, x))
        else:
            t = payload["inputs"][0]
            x = np.reshape(np.asarray(t["data"], dtype=np.float32), t["shape"])
            assert body["model_name"] == "pima"
            close(np.reshape(body["outputs"][0]["data"], body["outputs"][0]["shape"]), predict(models.pima, x))
