"""The serving protocols without a server: the pure codecs of glassnet.serve.protocol, then the routes of
InferenceServer.handle (the synchronous entry the AWS Lambda handler uses).

Every refusal must be a ProtocolError with a 4xx status and a message that says what to send instead;
the tests assert on the key words of each message, not only on the status.
"""
import base64
import json
import os
import struct
import sys

import numpy as np
import pytest

pytest.importorskip("orjson")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serving_util import embedding_model, save_version, tutorial_model, two_input_model  # noqa: E402

from glassnet.serve import protocol as P  # noqa: E402
from glassnet.serve.protocol import ProtocolError, Signature, TensorSpec  # noqa: E402

HEADER = "inference-header-content-length"
ROW = [6, 148, 72, 35, 0, 33.6, 0.627, 50]  # the first Pima row
PIMA_NAMES = ["pregnancies", "glucose", "blood_pressure", "skin_thickness", "insulin", "bmi",
              "diabetes_pedigree", "age"]


# --- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tut():
    model, x = tutorial_model()
    return model, np.asarray(x, dtype=np.float32)


@pytest.fixture(scope="module")
def sig(tut):
    return P.signature(tut[0])


@pytest.fixture(scope="module")
def two():
    return two_input_model()


@pytest.fixture(scope="module")
def sig2(two):
    return P.signature(two)


@pytest.fixture(scope="module")
def text_sig():
    """A signature with one string input (what a TextVectorization front end declares)."""
    return Signature((TensorSpec("text", np.dtype(object), (-1,)),), (TensorSpec("y", np.dtype("float32"), (-1, 1)),))


def js(obj):
    return json.dumps(obj).encode()


def refused(fn, *args, status=400):
    """Call ``fn``; it must raise ProtocolError with ``status``. Returns the message."""
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    assert info.value.status == status, (info.value.status, str(info.value))
    return str(info.value)


def has(message, *words):
    low = message.lower()
    missing = [w for w in words if w.lower() not in low]
    assert not missing, f"message lacks {missing}: {message!r}"


def tf_refused(body, sig, *words):
    msg = refused(P.decode_tf_predict, body if isinstance(body, bytes) else js(body), sig)
    has(msg, *words)
    return msg


def v2_refused(body, sig, *words, headers=None):
    msg = refused(P.decode_v2_infer, body if isinstance(body, bytes) else js(body), headers or {}, sig)
    has(msg, *words)
    return msg


def v2_input(**kw):
    t = {"name": "input", "shape": [1, 8], "datatype": "FP32", "data": ROW}
    t.update(kw)
    return t


def binary_request(tensors, raw, extra=None):
    """A request in the binary tensor extension, built by hand as the spec says: the JSON header,
    then the raw little-endian tensors in input order; returns (body, headers)."""
    req = {"inputs": tensors}
    req.update(extra or {})
    head = js(req)
    return head + b"".join(raw), {HEADER: str(len(head))}


def split_binary(body, headers):
    """A binary-extension response -> (JSON header, {output name: raw bytes})."""
    n = int(headers[HEADER])
    head = json.loads(body[:n])
    blobs, offset = {}, n
    for out in head["outputs"]:
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            blobs[out["name"]] = body[offset:offset + size]
            offset += size
    assert offset == len(body), "binary_data_size of the outputs must add up to the bytes after the header"
    return head, blobs


def pack_bytes(strings):
    return b"".join(struct.pack("<I", len(s)) + s for s in (x.encode() if isinstance(x, str) else x for x in strings))


# --- signature and metadata --------------------------------------------------------------------------
def test_signature_of_the_tutorial_model(sig):
    assert sig.input_names == ["input"] and sig.output_names == ["output"]
    assert sig.inputs[0].shape == (-1, 8) and sig.inputs[0].datatype == "FP32"
    assert sig.inputs[0].tf_dtype == "DT_FLOAT"
    assert list(sig.feature_names) == PIMA_NAMES


def test_signature_of_the_two_input_model(sig2):
    assert sig2.input_names == ["a", "b"] and sig2.output_names == ["scores", "prob"]
    assert [s.shape for s in sig2.inputs] == [(-1, 3), (-1, 2, 2)]
    assert [s.shape for s in sig2.outputs] == [(-1, 2), (-1, 1)]
    assert sig2.feature_names == ()


def test_metadata_documents(sig, sig2):
    v2 = P.v2_metadata("pima", [2, 1], sig)
    assert v2["name"] == "pima" and v2["versions"] == ["2", "1"] and v2["platform"]
    assert v2["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8]}]
    assert v2["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 1]}]
    assert v2["parameters"]["feature_names"] == PIMA_NAMES
    tf = P.tf_metadata("two", 3, sig2)
    assert tf["model_spec"] == {"name": "two", "signature_name": "", "version": "3"}
    sd = tf["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert set(sd["inputs"]) == {"a", "b"} and set(sd["outputs"]) == {"scores", "prob"}
    assert [d["size"] for d in sd["inputs"]["b"]["tensor_shape"]["dim"]] == ["-1", "2", "2"]
    assert sd["inputs"]["a"]["dtype"] == "DT_FLOAT"
    status = P.tf_status([2, 1])
    assert status == {"model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


# --- TensorFlow Serving REST: decoding ----------------------------------------------------------------
def test_tf_row_format_single_input(sig, tut):
    x = tut[1][:3]
    arrays, fmt = P.decode_tf_predict(js({"instances": x.tolist()}), sig)
    assert fmt == "row" and len(arrays) == 1
    assert arrays[0].dtype == np.float32 and arrays[0].shape == (3, 8)
    np.testing.assert_array_equal(arrays[0], x)
    arrays, _ = P.decode_tf_predict(js({"signature_name": "serving_default", "instances": [ROW]}), sig)
    np.testing.assert_array_equal(arrays[0], np.array([ROW], np.float32))


def test_tf_row_format_named_object_rows_single_input(sig):
    arrays, fmt = P.decode_tf_predict(js({"instances": [{"input": ROW}, {"input": ROW}]}), sig)
    assert fmt == "row" and arrays[0].shape == (2, 8)


def test_tf_columnar_format_single_input(sig, tut):
    x = tut[1][:4]
    for body in ({"inputs": x.tolist()}, {"inputs": {"input": x.tolist()}}):
        arrays, fmt = P.decode_tf_predict(js(body), sig)
        assert fmt == "columnar"
        np.testing.assert_array_equal(arrays[0], x)


def test_tf_row_format_named_multi_input(sig2):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 3)).astype(np.float32), rng.normal(size=(3, 2, 2)).astype(np.float32)
    rows = [{"b": b[i].tolist(), "a": a[i].tolist()} for i in range(3)]  # key order must not matter
    arrays, fmt = P.decode_tf_predict(js({"instances": rows}), sig2)
    assert fmt == "row" and [x.shape for x in arrays] == [(3, 3), (3, 2, 2)]
    np.testing.assert_array_equal(arrays[0], a)
    np.testing.assert_array_equal(arrays[1], b)


def test_tf_columnar_named_multi_input(sig2):
    a, b = np.ones((2, 3), np.float32), np.full((2, 2, 2), 0.5, np.float32)
    arrays, fmt = P.decode_tf_predict(js({"inputs": {"a": a.tolist(), "b": b.tolist()}}), sig2)
    assert fmt == "columnar"
    np.testing.assert_array_equal(arrays[0], a)
    np.testing.assert_array_equal(arrays[1], b)


def test_tf_encode_single_output(sig, tut):
    model, x = tut
    y = model.predict(x[:3], verbose=0)
    row = json.loads(P.encode_tf_predict([y], sig, "row"))
    assert list(row) == ["predictions"]
    np.testing.assert_allclose(np.array(row["predictions"], np.float32), y, rtol=1e-6)
    col = json.loads(P.encode_tf_predict([y], sig, "columnar"))
    assert list(col) == ["outputs"]
    np.testing.assert_allclose(np.array(col["outputs"], np.float32), y, rtol=1e-6)


def test_tf_encode_multi_output(sig2, two):
    a, b = np.ones((2, 3), np.float32), np.zeros((2, 2, 2), np.float32)
    scores, prob = two.predict([a, b], verbose=0)
    row = json.loads(P.encode_tf_predict([scores, prob], sig2, "row"))
    assert len(row["predictions"]) == 2
    for i, r in enumerate(row["predictions"]):
        assert set(r) == {"scores", "prob"}
        np.testing.assert_allclose(np.array(r["scores"], np.float32), scores[i], rtol=1e-6)
        np.testing.assert_allclose(np.array(r["prob"], np.float32), prob[i], rtol=1e-6)
    col = json.loads(P.encode_tf_predict([scores, prob], sig2, "columnar"))
    assert set(col["outputs"]) == {"scores", "prob"}
    np.testing.assert_allclose(np.array(col["outputs"]["scores"], np.float32), scores, rtol=1e-6)
    np.testing.assert_allclose(np.array(col["outputs"]["prob"], np.float32), prob, rtol=1e-6)


def test_tf_string_input_plain_and_b64(text_sig):
    arrays, _ = P.decode_tf_predict(js({"instances": ["good movie", "bad"]}), text_sig)
    assert arrays[0].tolist() == ["good movie", "bad"]
    b64 = base64.b64encode("héllo".encode()).decode()
    arrays, _ = P.decode_tf_predict(js({"inputs": [{"b64": b64}, "x"]}), text_sig)
    assert arrays[0].tolist() == ["héllo", "x"]


def test_tf_b64_row_for_a_single_string_input(text_sig):
    """TF Serving's row format for a binary value of a single-input model is {"b64": "..."} per row."""
    b64 = base64.b64encode(b"hi").decode()
    arrays, _ = P.decode_tf_predict(js({"instances": [{"b64": b64}, {"b64": b64}]}), text_sig)
    assert arrays[0].tolist() == ["hi", "hi"]


# --- TensorFlow Serving REST: every refusal ----------------------------------------------------------
@pytest.mark.parametrize("body", [b'{"instances": [[1, 2', b"", b"{instances: [[1]]}", b"\xff\xfe{}",
                                  b'{"instances": [[1]]} trailing'])
def test_tf_malformed_json(sig, body):
    tf_refused(body, sig, "not valid JSON", "send a JSON object")


@pytest.mark.parametrize("body,words", [
    (b"[" * 2000 + b"]" * 2000, ["not valid JSON", "depth limit"]),  # deeper than the JSON parser goes
    (b"[" * 100000, ["not valid JSON"]),
    (b'\xef\xbb\xbf{"instances": [[1, 2, 3, 4, 5, 6, 7, 8]]}', ["byte-order mark", "UTF-8"]),
    ('{"instances": [[1, 2, 3, 4, 5, 6, 7, 8]]}'.encode("utf-16"), ["byte-order mark", "UTF-8"]),
    (b'{"instances": [[1, 2, 3, 4, 5, 6, 7, 8]], "signature_name": "\\ud800"}', ["not valid JSON"]),
], ids=["deep", "deep_unclosed", "utf8_bom", "utf16", "lone_surrogate"])
def test_bodies_pythons_json_reads_are_refused_for_what_they_are(sig, body, words):
    """Python's json accepts these where orjson does not; none holds NaN or Infinity, so none may be reported so
    (and a nesting too deep for Python's parser is a 400, not a RecursionError)."""
    for refuse in (tf_refused, v2_refused):
        msg = refuse(body, sig, *words)
        assert "NaN" not in msg, msg


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_tf_nan_and_infinity_tokens(sig, token):
    body = ('{"instances": [[%s, 148, 72, 35, 0, 33.6, 0.627, 50]]}' % token).encode()
    tf_refused(body, sig, "NaN or Infinity", "finite numbers")


def test_tf_not_an_object(sig):
    for body in (b"null", b"[[1, 2]]", b'"instances"', b"3"):
        tf_refused(body, sig, "must be a JSON object", '"instances"', '"inputs"')


def test_tf_unknown_keys(sig):
    tf_refused({"instances": [ROW], "extra": 1}, sig, "unknown key", "extra", '"instances"', '"inputs"')
    tf_refused({"instance": [ROW]}, sig, "unknown key", "instance")


def test_tf_signature_name(sig):
    tf_refused({"signature_name": "predict", "instances": [ROW]}, sig, "signature_name", "serving_default")


def test_tf_instances_and_inputs_exactly_one(sig):
    tf_refused({}, sig, "exactly one of", '"instances"', '"inputs"')
    tf_refused({"instances": [ROW], "inputs": [ROW]}, sig, "exactly one of")
    tf_refused({"signature_name": "serving_default"}, sig, "exactly one of")


@pytest.mark.parametrize("instances", [[], 5, "rows", {"input": ROW}, None])
def test_tf_instances_not_a_nonempty_list(sig, instances):
    tf_refused({"instances": instances}, sig, '"instances" must be a non-empty list', "one entry per row")


def test_tf_wrong_shapes(sig):
    m = tf_refused({"instances": [ROW[:7]]}, sig, "shape [1, 7]", "takes shape [-1, 8]")
    m = tf_refused({"instances": ROW}, sig, "shape [8]", "[-1, 8]", "wrap a single row in a list")
    tf_refused({"instances": [[ROW]]}, sig, "shape [1, 1, 8]", "[-1, 8]")
    tf_refused({"instances": [[]]}, sig, "shape [1, 0]", "[-1, 8]")
    tf_refused({"inputs": ROW}, sig, "shape [8]", "wrap a single row")
    tf_refused({"inputs": 3.0}, sig, "shape []", "[-1, 8]")
    tf_refused({"inputs": []}, sig, "[-1, 8]")
    del m


def test_tf_no_rows(sig, sig2):
    tf_refused({"inputs": {"a": [], "b": []}}, sig2, "shape [0]", "[-1, 3]")
    tf_refused({"inputs": []}, sig, "shape [0]", "[-1, 8]")


def test_tf_strings_in_numeric_tensor(sig):
    tf_refused({"instances": [["6"] + ROW[1:]]}, sig, "non-numeric", "send numbers", "float32")
    tf_refused({"instances": [[str(v) for v in ROW]]}, sig, "non-numeric", "send numbers")
    tf_refused({"instances": [[None] + ROW[1:]]}, sig, "non-numeric", "null")
    tf_refused({"inputs": [["a"] * 8]}, sig, "non-numeric", "send numbers")


def test_tf_bools_refused(sig):
    tf_refused({"instances": [[True] * 8]}, sig, "true/false", "send 1 or 0")
    tf_refused({"inputs": [[False] * 8]}, sig, "true/false", "send 1 or 0")


def test_tf_bools_mixed_with_numbers_refused(sig):
    """true/false among numbers must not be silently taken as 1.0/0.0."""
    tf_refused({"instances": [[True] + ROW[1:]]}, sig, "true/false", "send 1 or 0")
    tf_refused({"instances": [ROW, [False] + ROW[1:]]}, sig, "true/false", "send 1 or 0")


def test_tf_ragged_lists(sig, sig2):
    tf_refused({"instances": [ROW, ROW[:7]]}, sig, "ragged", "same shape", "[-1, 8]")
    tf_refused({"instances": [ROW, [ROW[:1]] + ROW[1:]]}, sig, "ragged", "same shape")
    tf_refused({"inputs": {"a": [[1, 2, 3]], "b": [[[1, 2], [3]]]}}, sig2, "ragged", "[-1, 2, 2]")


def test_tf_ragged_strings(text_sig):
    tf_refused({"instances": [["a"], ["b", "c"]]}, text_sig, "ragged")


def test_tf_b64_for_numeric(sig):
    b64 = base64.b64encode(np.array(ROW, np.float32).tobytes()).decode()
    tf_refused({"instances": [[{"b64": b64}] + ROW[1:]]}, sig, "b64", "only string inputs", "send numbers")
    tf_refused({"inputs": [[{"b64": b64}] * 8]}, sig, "b64", "send numbers")
    tf_refused({"instances": [{"b64": b64}]}, sig, "b64", "only string inputs", "send numbers")


def test_tf_bad_b64_for_strings(text_sig):
    tf_refused({"inputs": [{"b64": "!!not base64"}]}, text_sig, "not base64")
    tf_refused({"inputs": [{"b64": "aGk=", "x": 1}]}, text_sig, '{"b64": "<base64 text>"}')
    tf_refused({"inputs": [1, 2]}, text_sig, "takes strings")


def test_tf_mixed_object_and_plain_rows(sig):
    tf_refused({"instances": [{"input": ROW}, ROW]}, sig, "mixes named (object) rows and plain rows")
    tf_refused({"instances": [ROW, {"input": ROW}]}, sig, "mixes named (object) rows and plain rows")


def test_tf_missing_and_extra_named_inputs(sig2):
    a, b = [1.0, 2.0, 3.0], [[1.0, 2.0], [3.0, 4.0]]
    tf_refused({"instances": [{"a": a}]}, sig2, "missing ['b']", "send exactly ['a', 'b']")
    tf_refused({"instances": [{"a": a, "b": b, "c": 1}]}, sig2, "unknown ['c']", "send exactly ['a', 'b']")
    tf_refused({"instances": [{"a": a, "b": b}, {"a": a}]}, sig2, "instances[1]", "missing ['b']")
    tf_refused({"inputs": {"a": [a]}}, sig2, "missing ['b']", "send exactly")
    tf_refused({"inputs": {"a": [a], "b": [b], "z": [1]}}, sig2, "unknown ['z']", "send exactly")


def test_tf_multi_input_needs_names(sig2):
    tf_refused({"instances": [[1, 2, 3]]}, sig2, "2 inputs", "object naming them", "'a'", "'b'")
    tf_refused({"inputs": [[1, 2, 3]]}, sig2, "2 inputs", "object of named tensors")


def test_tf_inputs_with_different_row_counts(sig2):
    tf_refused({"inputs": {"a": [[1, 2, 3]] * 2, "b": [[[1, 2], [3, 4]]] * 3}}, sig2, "'b' has 3 rows",
               "'a' has 2", "one entry per row")


def test_tf_numbers_too_large(sig):
    tf_refused({"instances": [[1e39] + ROW[1:]]}, sig, "NaN/Inf", "too large for float32", "impute or drop")


def test_ints_too_large_for_a_float16_input():
    spec = TensorSpec("h", np.dtype("float16"), (-1, 2))
    for value in ([[70000, 1]], [[70000, 1]] * 200):  # the fast path and the general one
        with pytest.raises(ProtocolError, match="too large for float16"):
            P._numeric(value, spec, "h")
    assert P._numeric([[65504, 1]] * 200, spec, "h")[0, 0] == 65504


# --- Open Inference Protocol (V2): JSON --------------------------------------------------------------
def test_v2_flat_and_nested_data(sig, tut):
    x = tut[1][:2]
    flat = {"inputs": [v2_input(shape=[2, 8], data=x.ravel().tolist())]}
    nested = {"inputs": [v2_input(shape=[2, 8], data=x.tolist())]}
    for body in (flat, nested):
        arrays, req = P.decode_v2_infer(js(body), {}, sig)
        assert arrays[0].dtype == np.float32
        np.testing.assert_array_equal(arrays[0], x)
        assert req.requested is None and req.binary_outputs == {"output": False} and req.id is None


def test_v2_multi_input_and_requested_outputs(sig2, two):
    a = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    b = np.arange(8, dtype=np.float32).reshape(2, 2, 2) / 10
    body = {"id": "req-7", "inputs": [  # inputs in any order
        {"name": "b", "shape": [2, 2, 2], "datatype": "FP32", "data": b.ravel().tolist()},
        {"name": "a", "shape": [2, 3], "datatype": "FP32", "data": a.tolist()}],
        "outputs": [{"name": "prob"}]}
    arrays, req = P.decode_v2_infer(js(body), {}, sig2)
    np.testing.assert_array_equal(arrays[0], a)
    np.testing.assert_array_equal(arrays[1], b)
    assert req.id == "req-7" and req.requested == ["prob"]
    outputs = two.predict(arrays, verbose=0)
    raw, headers = P.encode_v2_infer(list(outputs), sig2, req, "two", 3)
    assert headers["content-type"] == "application/json" and HEADER not in headers
    resp = json.loads(raw)
    assert resp["model_name"] == "two" and resp["model_version"] == "3" and resp["id"] == "req-7"
    assert [o["name"] for o in resp["outputs"]] == ["prob"]
    out = resp["outputs"][0]
    assert out["datatype"] == "FP32" and out["shape"] == [2, 1]
    np.testing.assert_allclose(np.array(out["data"], np.float32).reshape(2, 1), outputs[1], rtol=1e-6)


def test_v2_encode_all_outputs_by_default(sig2, two):
    a, b = np.ones((1, 3), np.float32), np.ones((1, 2, 2), np.float32)
    outputs = two.predict([a, b], verbose=0)
    _, req = P.decode_v2_infer(js({"inputs": [{"name": "a", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]},
                                              {"name": "b", "shape": [1, 2, 2], "datatype": "FP32",
                                               "data": [1, 1, 1, 1]}]}), {}, sig2)
    resp = json.loads(P.encode_v2_infer(list(outputs), sig2, req, "two", 1)[0])
    assert [(o["name"], o["shape"]) for o in resp["outputs"]] == [("scores", [1, 2]), ("prob", [1, 1])]
    assert "id" not in resp
    np.testing.assert_allclose(np.array(resp["outputs"][0]["data"], np.float32), outputs[0].ravel(), rtol=1e-6)


def test_v2_bytes_json_data(text_sig):
    b64 = base64.b64encode("é".encode()).decode()
    arrays, _ = P.decode_v2_infer(js({"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES",
                                                  "data": ["a", "bc", {"b64": b64}]}]}), {}, text_sig)
    assert arrays[0].tolist() == ["a", "bc", "é"]


# --- V2: every refusal -------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [b'{"inputs": [', b"", b"{'inputs': []}", b"\x00\x01"])
def test_v2_malformed_json(sig, body):
    v2_refused(body, sig, "not valid JSON", "send a JSON object")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_v2_nan_and_infinity_tokens(sig, token):
    body = ('{"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", '
            '"data": [%s, 148, 72, 35, 0, 33.6, 0.627, 50]}]}' % token).encode()
    v2_refused(body, sig, "NaN or Infinity", "finite numbers")


def test_v2_not_an_object(sig):
    v2_refused(b"[]", sig, "must be a JSON object", '"inputs"', '"datatype"')


def test_v2_unknown_keys(sig):
    v2_refused({"inputs": [v2_input()], "instances": [ROW]}, sig, "unknown key", "instances", '"inputs"', '"id"')
    v2_refused({"inputs": [v2_input(value=1)]}, sig, "unknown key", "value", '"name"', '"shape"', '"data"')


@pytest.mark.parametrize("inputs", [None, [], {"name": "input"}, [1, 2], "input"])
def test_v2_inputs_not_a_list_of_tensors(sig, inputs):
    body = {"inputs": inputs} if inputs is not None else {"id": "x"}
    v2_refused(body, sig, '"inputs" must be a non-empty list', '"name"', '"shape"', '"datatype"', '"data"')


def test_v2_tensor_name(sig):
    v2_refused({"inputs": [{"shape": [1, 8], "datatype": "FP32", "data": ROW}]}, sig, '"name"', "string")
    v2_refused({"inputs": [v2_input(name=3)]}, sig, '"name"', "string")
    v2_refused({"inputs": [v2_input(), v2_input()]}, sig, "'input'", "given twice")


def test_v2_missing_and_extra_named_inputs(sig, sig2):
    a = {"name": "a", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
    b = {"name": "b", "shape": [1, 2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}
    v2_refused({"inputs": [a]}, sig2, "missing ['b']", "send exactly ['a', 'b']")
    v2_refused({"inputs": [a, b, dict(b, name="c")]}, sig2, "unknown ['c']", "send exactly ['a', 'b']")
    v2_refused({"inputs": [v2_input(name="x")]}, sig, "missing ['input']", "unknown ['x']", "send exactly ['input']")


@pytest.mark.parametrize("shape", ["1,8", [-1, 8], [1.0, 8], [True, 8], None, [1, "8"]])
def test_v2_bad_shape_values(sig, shape):
    t = v2_input(shape=shape) if shape is not None else {k: v for k, v in v2_input().items() if k != "shape"}
    v2_refused({"inputs": [t]}, sig, '"shape"', "non-negative integers", "batch first", "[1, 8]")


def test_v2_wrong_shapes(sig):
    v2_refused({"inputs": [v2_input(shape=[2, 4])]}, sig, "shape [2, 4]", "takes shape [-1, 8]")
    v2_refused({"inputs": [v2_input(shape=[8])]}, sig, "shape [8]", "[-1, 8]", "wrap a single row")
    v2_refused({"inputs": [v2_input(shape=[1, 1, 8])]}, sig, "shape [1, 1, 8]", "[-1, 8]")
    v2_refused({"inputs": [v2_input(shape=[0, 8], data=[])]}, sig, "no rows", "at least one")


def test_v2_shape_and_data_count_mismatch(sig):
    v2_refused({"inputs": [v2_input(data=ROW[:7])]}, sig, "7 values", "shape [1, 8] needs 8", "agree")
    v2_refused({"inputs": [v2_input(shape=[2, 8])]}, sig, "8 values", "shape [2, 8] needs 16")
    v2_refused({"inputs": [v2_input(data=5.0)]}, sig, "1 values", "needs 8")


def test_v2_wrong_datatypes(sig):
    v2_refused({"inputs": [v2_input(datatype="INT32")]}, sig, "datatype INT32", "model takes FP32",
               '"datatype": "FP32"')
    v2_refused({"inputs": [v2_input(datatype="FP64")]}, sig, "FP64", "takes FP32")
    v2_refused({"inputs": [v2_input(datatype="BYTES", data=[str(v) for v in ROW])]}, sig, "BYTES", "takes FP32")
    msg = v2_refused({"inputs": [v2_input(datatype="float32")]}, sig, "'float32'", "use one of", "FP32")
    has(msg, "BOOL", "INT64", "BYTES")
    v2_refused({"inputs": [{"name": "input", "shape": [1, 8], "data": ROW}]}, sig, "datatype None", "FP32")


def test_v2_no_data(sig):
    v2_refused({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32"}]}, sig, 'no "data"',
               "8 values", "row-major", "binary_data_size")


def test_v2_strings_in_numeric_tensor(sig):
    v2_refused({"inputs": [v2_input(data=[str(v) for v in ROW])]}, sig, "non-numeric", "send numbers")
    v2_refused({"inputs": [v2_input(data=[None] * 8)]}, sig, "non-numeric", "null")
    v2_refused({"inputs": [v2_input(data={"values": ROW})]}, sig, "non-numeric")


def test_v2_bools(sig):
    v2_refused({"inputs": [v2_input(data=[True] * 8)]}, sig, "true/false", "send 1 or 0")


def test_v2_bools_mixed_with_numbers(sig):
    v2_refused({"inputs": [v2_input(data=[False] + ROW[1:])]}, sig, "true/false", "send 1 or 0")


def test_v2_ragged_lists(sig):
    v2_refused({"inputs": [v2_input(shape=[2, 8], data=[ROW, ROW[:7]])]}, sig, "ragged", "same shape")


def test_v2_b64_for_numeric(sig):
    v2_refused({"inputs": [v2_input(data=[{"b64": "AAAA"}] + ROW[1:])]}, sig, "b64", "only string inputs",
               "send numbers")


def test_v2_nan_too_large(sig):
    v2_refused({"inputs": [v2_input(data=[-1e39] + ROW[1:])]}, sig, "NaN/Inf", "too large", "impute or drop")


def test_v2_bytes_refusals(text_sig):
    def t(data, shape):
        return {"inputs": [{"name": "text", "shape": shape, "datatype": "BYTES", "data": data}]}
    v2_refused(t([1, 2], [2]), text_sig, "takes strings", "int")
    v2_refused(t([{"b64": "%%%"}], [1]), text_sig, "not base64")
    v2_refused(t(["a", "b"], [3]), text_sig, "2 values", "needs 3")


def test_v2_parameters_and_id_and_outputs(sig):
    v2_refused({"inputs": [v2_input()], "parameters": [1]}, sig, '"parameters" must be an object')
    v2_refused({"inputs": [v2_input(parameters=3)]}, sig, '"parameters" must be an object')
    v2_refused({"inputs": [v2_input()], "id": 5}, sig, '"id" must be a string')
    v2_refused({"inputs": [v2_input()], "parameters": {"binary_data_output": "yes"}}, sig,
               "binary_data_output must be true or false")
    v2_refused({"inputs": [v2_input()], "outputs": {"name": "output"}}, sig, '"outputs" must be a list', '"name"')
    v2_refused({"inputs": [v2_input()], "outputs": [{"nam": "output"}]}, sig, '"outputs" must be a list')
    v2_refused({"inputs": [v2_input()], "outputs": [{"name": "output", "parameters": {"binary_data": 1}}]}, sig,
               "binary_data must be true or false")


@pytest.mark.parametrize("bad", [0, False, "", [], "x", 1.5])
def test_v2_parameters_of_the_wrong_type_even_when_falsy(sig, bad):
    v2_refused({"inputs": [v2_input()], "parameters": bad}, sig, '"parameters" must be an object')
    v2_refused({"inputs": [v2_input(parameters=bad)]}, sig, "'input'", '"parameters" must be an object')
    v2_refused({"inputs": [v2_input()], "outputs": [{"name": "output", "parameters": bad}]}, sig,
               "'output'", "parameters.binary_data must be true or false")


def test_v2_null_optional_fields_mean_absent(sig):
    """null for the optional id/parameters/outputs is taken as leaving them out (the OpenAPI marks them nullable)."""
    arrays, req = P.decode_v2_infer(js({"id": None, "parameters": None, "outputs": None,
                                        "inputs": [v2_input(parameters=None)]}), {}, sig)
    assert arrays[0].shape == (1, 8) and req.id is None and req.requested is None
    _, req = P.decode_v2_infer(js({"inputs": [v2_input()], "outputs": [{"name": "output", "parameters": None}]}),
                               {}, sig)
    assert req.requested == ["output"] and req.binary_outputs == {"output": False}


def test_v2_unknown_outputs(sig, sig2):
    v2_refused({"inputs": [v2_input()], "outputs": [{"name": "probability"}]}, sig, "unknown output",
               "'probability'", "outputs are ['output']")
    a = {"name": "a", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
    b = {"name": "b", "shape": [1, 2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}
    v2_refused({"inputs": [a, b], "outputs": [{"name": "prob"}, {"name": "hidden"}]}, sig2, "unknown output",
               "'hidden'", "['scores', 'prob']")


def test_v2_inputs_with_different_row_counts(sig2):
    a = {"name": "a", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3] * 2}
    b = {"name": "b", "shape": [1, 2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}
    v2_refused({"inputs": [a, b]}, sig2, "'b' has 1 rows", "'a' has 2", "one entry per row")


# --- V2: the binary tensor extension -----------------------------------------------------------------
def fp32_tensor(name, arr):
    return {"name": name, "shape": list(arr.shape), "datatype": "FP32",
            "parameters": {"binary_data_size": arr.nbytes}}


def test_v2_binary_input_and_binary_output(sig, tut):
    model, x = tut
    x = np.ascontiguousarray(x[:5], dtype="<f4")
    body, headers = binary_request([fp32_tensor("input", x)], [x.tobytes()],
                                   {"outputs": [{"name": "output", "parameters": {"binary_data": True}}]})
    assert body[int(headers[HEADER]):] == x.tobytes()
    arrays, req = P.decode_v2_infer(body, headers, sig)
    np.testing.assert_array_equal(arrays[0], x)
    assert req.binary_outputs == {"output": True}
    y = model.predict(arrays[0], verbose=0)
    raw, out_headers = P.encode_v2_infer([y], sig, req, "pima", 1)
    assert out_headers["content-type"] == "application/octet-stream"
    head, blobs = split_binary(raw, out_headers)
    out = head["outputs"][0]
    assert out["name"] == "output" and out["datatype"] == "FP32" and out["shape"] == [5, 1] and "data" not in out
    assert out["parameters"]["binary_data_size"] == 5 * 4
    got = np.frombuffer(blobs["output"], dtype="<f4").reshape(5, 1)
    np.testing.assert_allclose(got, y, rtol=1e-6)


def test_v2_binary_data_output_request_parameter(sig2, two):
    a = np.linspace(-1, 1, 6, dtype="<f4").reshape(2, 3)
    b = np.linspace(0, 1, 8, dtype="<f4").reshape(2, 2, 2)
    # a as JSON, b binary; both outputs binary through the request-level parameter
    body, headers = binary_request([{"name": "a", "shape": [2, 3], "datatype": "FP32", "data": a.tolist()},
                                    fp32_tensor("b", b)], [b.tobytes()],
                                   {"parameters": {"binary_data_output": True}})
    arrays, req = P.decode_v2_infer(body, headers, sig2)
    np.testing.assert_array_equal(arrays[0], a)
    np.testing.assert_array_equal(arrays[1], b)
    outputs = list(two.predict(arrays, verbose=0))
    raw, out_headers = P.encode_v2_infer(outputs, sig2, req, "two", 1)
    head, blobs = split_binary(raw, out_headers)
    assert [o["name"] for o in head["outputs"]] == ["scores", "prob"]
    np.testing.assert_allclose(np.frombuffer(blobs["scores"], "<f4").reshape(2, 2), outputs[0], rtol=1e-6)
    np.testing.assert_allclose(np.frombuffer(blobs["prob"], "<f4").reshape(2, 1), outputs[1], rtol=1e-6)


def test_v2_binary_two_inputs_in_request_order(sig2):
    a = np.arange(3, dtype="<f4").reshape(1, 3)
    b = np.arange(4, dtype="<f4").reshape(1, 2, 2) + 10
    body, headers = binary_request([fp32_tensor("b", b), fp32_tensor("a", a)], [b.tobytes(), a.tobytes()])
    arrays, _ = P.decode_v2_infer(body, headers, sig2)
    np.testing.assert_array_equal(arrays[0], a)
    np.testing.assert_array_equal(arrays[1], b)


def test_v2_mixed_binary_and_json_outputs(sig2, two):
    a, b = np.ones((1, 3), "<f4"), np.ones((1, 2, 2), "<f4")
    body, headers = binary_request([fp32_tensor("a", a), fp32_tensor("b", b)], [a.tobytes(), b.tobytes()],
                                   {"outputs": [{"name": "prob", "parameters": {"binary_data": True}},
                                                {"name": "scores"}]})
    arrays, req = P.decode_v2_infer(body, headers, sig2)
    outputs = list(two.predict(arrays, verbose=0))
    raw, out_headers = P.encode_v2_infer(outputs, sig2, req, "two", 1)
    head, blobs = split_binary(raw, out_headers)
    assert [o["name"] for o in head["outputs"]] == ["prob", "scores"]
    assert set(blobs) == {"prob"} and "data" in head["outputs"][1]
    np.testing.assert_allclose(np.frombuffer(blobs["prob"], "<f4"), outputs[1].ravel(), rtol=1e-6)
    np.testing.assert_allclose(head["outputs"][1]["data"], outputs[0].ravel(), rtol=1e-6)


@pytest.mark.parametrize("where", [(0, 0, np.nan), (1, 3, np.inf), (2, 7, -np.inf)])
def test_v2_binary_nan_inf_refused(sig, tut, where):
    x = np.array(tut[1][:3], dtype="<f4")
    x[where[0], where[1]] = where[2]
    body, headers = binary_request([fp32_tensor("input", x)], [x.tobytes()])
    v2_refused(body, sig, "1 NaN/Inf", "impute or drop", headers=headers)


def test_v2_bad_binary_sizes(sig):
    x = np.ones((2, 8), "<f4")
    raw = x.tobytes()

    def req(size, data=raw, extra=b"", header=None):
        t = dict(fp32_tensor("input", x), parameters={"binary_data_size": size})
        body, headers = binary_request([t], [data + extra])
        if header is not None:
            headers = {HEADER: header}
        return body, headers

    body, h = req(60, raw[:60])
    v2_refused(body, sig, "binary_data_size is 60 bytes", "[2, 8]", "takes 64", headers=h)
    body, h = req(128, np.ones((2, 8), "<f8").tobytes())  # float64 bytes declared as FP32
    v2_refused(body, sig, "binary_data_size is 128", "takes 64", headers=h)
    body, h = req(1000)
    v2_refused(body, sig, "binary_data_size 1000", "does not fit the 64 bytes", headers=h)
    for bad in (-1, "64", True, 6.4e1):
        body, h = req(bad)
        v2_refused(body, sig, "binary_data_size", "does not fit", headers=h)
    body, h = req(64, extra=b"\0" * 4)
    v2_refused(body, sig, "4 bytes after the last binary tensor", "add up", headers=h)
    for header in ("100000", "-3", "abc", ""):
        body, h = req(64, header=header)
        v2_refused(body, sig, "Inference-Header-Content-Length", "byte length of the JSON header", headers=h)
    body, h = req(64, header="10")  # the JSON header cut short
    v2_refused(body, sig, "not valid JSON", headers=h)
    t = dict(fp32_tensor("input", x), data=x.tolist())
    body, h = binary_request([t], [raw])
    v2_refused(body, sig, 'both "data" and parameters.binary_data_size', "one of them", headers=h)


def test_v2_binary_header_only(sig):
    """With the header present but no binary tensors, the JSON header is the whole body."""
    body = js({"inputs": [v2_input()]})
    arrays, _ = P.decode_v2_infer(body, {HEADER: str(len(body))}, sig)
    np.testing.assert_array_equal(arrays[0], np.array([ROW], np.float32))


# --- BYTES unpacking ---------------------------------------------------------------------------------
def test_v2_binary_bytes_unpacked(text_sig):
    strings = ["héllo", "", "wörld 🙂"]
    raw = pack_bytes(strings)
    body, headers = binary_request([{"name": "text", "shape": [3], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(raw)}}], [raw])
    arrays, _ = P.decode_v2_infer(body, headers, text_sig)
    assert arrays[0].dtype == object and arrays[0].tolist() == strings


@pytest.mark.parametrize("raw,shape,words", [
    (pack_bytes(["ab"]) + b"\x01\x00", [2], ["cut short", "4-byte little-endian length"]),
    (struct.pack("<I", 10) + b"abc", [1], ["claims 10 bytes", "fewer remain"]),
    (struct.pack("<I", 2) + b"\xff\xfe", [1], ["UTF-8"]),
    (pack_bytes(["a", "b"]), [3], ["2 strings", "shape [3] needs 3"]),
])
def test_v2_binary_bytes_refusals(text_sig, raw, shape, words):
    body, headers = binary_request([{"name": "text", "shape": shape, "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(raw)}}], [raw])
    v2_refused(body, text_sig, *words, headers=headers)


# --- InferenceServer.handle: the routes ---------------------------------------------------------------
@pytest.fixture(scope="module")
def repo(tmp_path_factory, tut, two):
    path = tmp_path_factory.mktemp("repo")
    save_version(str(path), "pima", 1, tut[0])
    save_version(str(path), "pima", 2, tut[0])
    save_version(str(path), "two", 1, two)
    return path


def make_server(repo, **kw):
    from glassnet.serve import InferenceServer, ModelRepository
    kw.setdefault("access_log", False)
    server = InferenceServer(ModelRepository(str(repo), version_policy="all"), **kw)
    server.load()
    return server


@pytest.fixture(scope="module")
def server(repo):
    return make_server(repo)


def body_of(resp):
    return json.loads(resp.body)


def assert_error(resp, status, *words):
    assert resp.status == status, (resp.status, resp.body)
    assert resp.headers["content-type"].startswith("application/json")
    err = body_of(resp)
    assert set(err) == {"error"} and isinstance(err["error"], str)
    has(err["error"], *words)
    return err["error"]


def test_handle_predictions_equal_model_predict(server, tut):
    model, x = tut
    xs = x[:7]
    expected = model.predict(xs, verbose=0)
    for path in ("/v1/models/pima:predict", "/v1/models/pima/versions/1:predict"):
        r = server.handle("POST", path, {"Content-Type": "application/json"}, js({"instances": xs.tolist()}))
        assert r.status == 200, r.body
        got = np.array(body_of(r)["predictions"], np.float32)
        assert got.shape == (7, 1)
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    r = server.handle("POST", "/v1/models/pima:predict", {}, js({"inputs": {"input": xs.tolist()}}))
    np.testing.assert_allclose(np.array(body_of(r)["outputs"], np.float32), expected, rtol=1e-6)
    r = server.handle("POST", "/v2/models/pima/infer", {}, js({"inputs": [
        {"name": "input", "shape": [7, 8], "datatype": "FP32", "data": xs.ravel().tolist()}]}))
    assert r.status == 200, r.body
    resp = body_of(r)
    assert resp["model_name"] == "pima" and resp["model_version"] == "2"
    out = resp["outputs"][0]
    assert out["shape"] == [7, 1] and out["datatype"] == "FP32"
    np.testing.assert_allclose(np.array(out["data"], np.float32).reshape(7, 1), expected, rtol=1e-6)


def test_handle_binary_infer(server, tut):
    model, x = tut
    xs = np.ascontiguousarray(x[:4], "<f4")
    body, headers = binary_request([fp32_tensor("input", xs)], [xs.tobytes()],
                                   {"outputs": [{"name": "output", "parameters": {"binary_data": True}}]})
    headers = {"Inference-Header-Content-Length": headers[HEADER]}  # header names are case-insensitive
    r = server.handle("POST", "/v2/models/pima/versions/1/infer", headers, body)
    assert r.status == 200, r.body
    head, blobs = split_binary(r.body, r.headers)
    assert head["model_version"] == "1"
    np.testing.assert_allclose(np.frombuffer(blobs["output"], "<f4").reshape(4, 1), model.predict(xs, verbose=0),
                               rtol=1e-6)


def test_handle_two_input_model(server, two):
    a, b = np.full((2, 3), 0.25, np.float32), np.full((2, 2, 2), -0.5, np.float32)
    scores, prob = two.predict([a, b], verbose=0)
    r = server.handle("POST", "/v1/models/two:predict", {},
                      js({"instances": [{"a": a[i].tolist(), "b": b[i].tolist()} for i in range(2)]}))
    assert r.status == 200, r.body
    preds = body_of(r)["predictions"]
    np.testing.assert_allclose(np.array([p["scores"] for p in preds], np.float32), scores, rtol=1e-6)
    np.testing.assert_allclose(np.array([p["prob"] for p in preds], np.float32), prob, rtol=1e-6)


def test_handle_status_and_metadata(server):
    r = server.handle("GET", "/v1/models/pima")
    assert r.status == 200 and [v["version"] for v in body_of(r)["model_version_status"]] == ["2", "1"]
    r = server.handle("GET", "/v1/models/pima/versions/1")
    assert r.status == 200 and [v["version"] for v in body_of(r)["model_version_status"]] == ["1"]
    r = server.handle("GET", "/v1/models/two/metadata")
    assert r.status == 200 and body_of(r)["model_spec"]["name"] == "two"
    r = server.handle("GET", "/v2/models/pima")
    assert r.status == 200 and sorted(body_of(r)["versions"]) == ["1", "2"]
    assert body_of(r)["parameters"]["feature_names"] == PIMA_NAMES
    r = server.handle("GET", "/v2/models/pima/versions/1/ready")
    assert r.status == 200 and body_of(r)["ready"] is True
    for path in ("/v2/health/live", "/v2/health/ready", "/v2"):
        assert server.handle("GET", path).status == 200
    assert body_of(server.handle("GET", "/v2"))["extensions"]
    index = body_of(server.handle("POST", "/v2/repository/index"))
    assert sorted((m["name"], m["version"]) for m in index) == [("pima", "1"), ("pima", "2"), ("two", "1")]


def test_handle_protocol_errors_are_400(server):
    r = server.handle("POST", "/v1/models/pima:predict", {}, b'{"instances": [[NaN]]}')
    assert_error(r, 400, "NaN or Infinity")
    r = server.handle("POST", "/v2/models/pima/infer", {}, js({"inputs": [v2_input(datatype="INT64")]}))
    assert_error(r, 400, "datatype INT64", "FP32")


@pytest.mark.parametrize("method,path,words", [
    ("POST", "/v1/models/nope:predict", ["unknown model 'nope'", "'pima'", "'two'"]),
    ("GET", "/v1/models/nope", ["unknown model 'nope'"]),
    ("GET", "/v1/models/nope/metadata", ["unknown model"]),
    ("GET", "/v2/models/nope", ["unknown model"]),
    ("GET", "/v2/models/nope/ready", ["unknown model"]),
    ("POST", "/v2/models/nope/infer", ["unknown model"]),
    ("POST", "/v1/models/pima/versions/9:predict", ["no version '9'", "'1'", "'2'"]),
    ("GET", "/v1/models/pima/versions/9", ["no version '9'"]),
    ("GET", "/v1/models/pima/versions/x/metadata", ["no version 'x'"]),
    ("GET", "/v2/models/pima/versions/3", ["no version '3'"]),
    ("POST", "/v2/models/pima/versions/0/infer", ["no version '0'"]),
    ("GET", "/v1/models/pima/versions/0_1", ["no version '0_1'"]),  # int() would read these as 1: not versions
    ("GET", "/v1/models/pima/versions/ 1", ["no version ' 1'"]),
    ("POST", "/v1/models/pima/versions/\u0661:predict", ["no version"]),  # an Arabic-Indic digit one
    ("GET", "/nope", ["no such endpoint", "/openapi.json"]),
    ("GET", "/v1/models", ["no such endpoint"]),
    ("POST", "/v2/models/pima/predict", ["no such endpoint"]),
    ("GET", "/v3/models/pima", ["no such endpoint"]),
])
def test_handle_404(server, method, path, words):
    body = js({"instances": [ROW]}) if method == "POST" else b""
    assert_error(server.handle(method, path, {}, body), 404, *words)


def test_handle_ids_the_model_refuses_are_a_400_with_its_message(tmp_path):
    """The signature declares the Input's int32 (so 1.5 is refused as an id before the model); an id out of the
    Embedding's range passes the protocol's checks and the model's own ValueError becomes a 400, not a 500."""
    model = embedding_model()
    save_version(str(tmp_path), "emb", 1, model)
    server = make_server(tmp_path)
    ids = np.array([[1, 2, 3, 9], [0, 0, 5, 7]], np.int32)
    r = server.handle("POST", "/v1/models/emb:predict", {}, js({"instances": ids.tolist()}))
    assert r.status == 200, r.body
    np.testing.assert_allclose(body_of(r)["predictions"], model.predict(ids, verbose=0), rtol=1e-6)
    meta = body_of(server.handle("GET", "/v2/models/emb", {}, b""))
    assert meta["inputs"][0]["datatype"] == "INT32" and meta["outputs"][0]["datatype"] == "FP32"
    assert_error(server.handle("POST", "/v1/models/emb:predict", {}, js({"instances": [[1, 2, 100, 3]]})), 400,
                 "cannot take this input", "100", "input_dim")
    assert_error(server.handle("POST", "/v2/models/emb/infer", {}, js(
        {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "INT32", "data": [1, -1, 2, 3]}]})), 400,
        "cannot take this input", "-1")
    assert_error(server.handle("POST", "/v1/models/emb:predict", {}, js({"instances": [[1, 2, 1.5, 3]]})), 400,
                 "1.5", "int32 whole numbers")
    assert_error(server.handle("POST", "/v1/models/emb:predict", {}, js({"instances": [[1, 2, 1e30, 3]]})), 400,
                 "outside the range of int32")
    assert_error(server.handle("POST", "/v1/models/emb:predict", {}, js({"instances": [[1, 2, 2 ** 40, 3]]})), 400,
                 str(2 ** 40), "outside the range of int32")
    assert server.handle("POST", "/v1/models/emb:predict", {}, js({"instances": ids.tolist()})).status == 200


@pytest.mark.parametrize("method,path,allowed", [
    ("GET", "/v1/models/pima:predict", "POST"),
    ("PUT", "/v2/models/pima/infer", "POST"),
    ("POST", "/v1/models/pima", "GET"),
    ("DELETE", "/v1/models/pima/metadata", "GET"),
    ("POST", "/v2/health/live", "GET"),
    ("POST", "/", "GET"),
    ("GET", "/v2/repository/index", "POST"),
    ("OPTIONS", "/v1/models/pima:predict", "POST"),  # CORS is off: no preflight either
])
def test_handle_405_with_allow_header(server, method, path, allowed):
    r = server.handle(method, path, {}, b"")
    assert_error(r, 405, allowed, method)
    assert r.headers["allow"] == allowed


def test_handle_head_is_get(server):
    r = server.handle("HEAD", "/v2/health/live")
    assert r.status == 200


def test_handle_api_key(repo, tut):
    server = make_server(repo, api_key="s3cret")
    body = js({"instances": [ROW]})
    r = server.handle("POST", "/v1/models/pima:predict", {}, body)
    assert_error(r, 401, "API key", "Authorization: Bearer", "X-API-Key")
    assert "bearer" in r.headers["www-authenticate"].lower()
    for headers in ({"Authorization": "Bearer wrong"}, {"X-API-Key": "s3cret "}, {"Authorization": "s3cret"},
                    {"Authorization": "Basic czNjcmV0"}):
        assert server.handle("POST", "/v1/models/pima:predict", headers, body).status == 401, headers
    assert_error(server.handle("POST", "/v1/models/pima:predict", {"X-API-Key": "nope"}, body), 401, "not valid")
    expected = tut[0].predict(np.array([ROW], np.float32), verbose=0)
    for headers in ({"Authorization": "Bearer s3cret"}, {"authorization": "bearer s3cret"}, {"X-API-Key": "s3cret"},
                    {"x-api-key": "s3cret"}):
        r = server.handle("POST", "/v1/models/pima:predict", headers, body)
        assert r.status == 200, (headers, r.body)
        np.testing.assert_allclose(np.array(body_of(r)["predictions"], np.float32), expected, rtol=1e-6)
    for method, path in (("GET", "/v2/models/pima"), ("GET", "/v1/models/pima/metadata"), ("GET", "/metrics"),
                         ("POST", "/v2/repository/index"), ("GET", "/v2"), ("GET", "/v2/models/pima/ready")):
        assert server.handle(method, path).status == 401, path
        assert server.handle(method, path, {"X-API-Key": "s3cret"}).status == 200, path
    for path in ("/v2/health/live", "/v2/health/ready", "/", "/docs", "/openapi.json"):  # stay open
        assert server.handle("GET", path).status == 200, path
    page = server.handle("GET", "/").body
    assert b"const KEY_REQUIRED = true;" in page
    spec = body_of(server.handle("GET", "/openapi.json"))
    assert "securitySchemes" in spec["components"]


def test_handle_413_oversize_body(repo):
    server = make_server(repo, max_body_bytes=1000)
    small = js({"instances": [ROW]})
    assert server.handle("POST", "/v1/models/pima:predict", {}, small).status == 200
    big = js({"instances": [ROW] * 40})
    assert len(big) > 1000
    assert_error(server.handle("POST", "/v1/models/pima:predict", {}, big), 413, "exceeds 1000 bytes",
                 "fewer rows")
    assert_error(server.handle("POST", "/v2/models/pima/infer", {}, b" " * 1001), 413, "1000 bytes")


def test_handle_501_explain(server):
    for path in ("/v1/models/pima:explain", "/v1/models/pima/versions/1:explain"):
        assert_error(server.handle("POST", path, {}, js({"instances": [ROW]})), 501, "not available",
                     ":predict")
    assert_error(server.handle("POST", "/v1/models/nope:explain", {}, js({"instances": [ROW]})), 404,
                 "unknown model")


def test_handle_cors_off_by_default(server):
    for method, path, body in (("GET", "/v2/health/live", b""), ("POST", "/v1/models/pima:predict",
                                                                   js({"instances": [ROW]})),
                               ("GET", "/nope", b"")):
        r = server.handle(method, path, {"Origin": "https://example.com"}, body)
        assert not any(k.lower().startswith("access-control-") for k in r.headers), r.headers


def test_handle_cors_on(repo):
    server = make_server(repo, cors_origins=["https://app.example"])
    r = server.handle("POST", "/v1/models/pima:predict", {"Origin": "https://app.example"}, js({"instances": [ROW]}))
    assert r.status == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    r = server.handle("GET", "/v2/models/nope", {"Origin": "https://app.example"})
    assert r.status == 404 and r.headers["access-control-allow-origin"] == "https://app.example"
    r = server.handle("GET", "/v2/health/live", {"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    pre = server.handle("OPTIONS", "/v2/models/pima/infer", {"Origin": "https://app.example",
                                                             "Access-Control-Request-Method": "POST"})
    assert pre.status == 204
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert "inference-header-content-length" in pre.headers["access-control-allow-headers"].lower()
    assert pre.headers["access-control-allow-origin"] == "https://app.example"
    bad = server.handle("OPTIONS", "/v2/models/pima/infer", {"Origin": "https://evil.example"})
    assert_error(bad, 403, "https://evil.example", "not allowed")
    anyone = make_server(repo, cors_origins=["*"])
    r = anyone.handle("GET", "/v2/health/live", {"Origin": "https://x.example"})
    assert r.headers["access-control-allow-origin"] == "*"


def test_handle_non_contiguous_outputs(tmp_path):
    """A model whose output is a transposed view (Permute last) is answered, not a 500."""
    import glassnet as g
    inp = g.layers.Input((2, 3), name="x")
    model = g.models.Model(inp, g.layers.Permute((2, 1), name="swapped")(inp))
    x = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    save_version(str(tmp_path), "perm", 1, model)
    server = make_server(tmp_path)
    for body, key in ((js({"instances": x.tolist()}), "predictions"), (js({"inputs": x.tolist()}), "outputs")):
        r = server.handle("POST", "/v1/models/perm:predict", {}, body)
        assert r.status == 200, r.body
        np.testing.assert_array_equal(np.array(body_of(r)[key], np.float32), x.transpose(0, 2, 1))
    r = server.handle("POST", "/v2/models/perm/infer", {}, js({"inputs": [
        {"name": "x", "shape": [2, 2, 3], "datatype": "FP32", "data": x.ravel().tolist()}]}))
    assert r.status == 200, r.body
    np.testing.assert_array_equal(np.array(body_of(r)["outputs"][0]["data"], np.float32),
                                  x.transpose(0, 2, 1).ravel())


def test_handle_pages_and_openapi(server):
    r = server.handle("GET", "/")
    assert r.status == 200 and r.headers["content-type"].startswith("text/html")
    assert b"const KEY_REQUIRED = false;" in r.body and b"__API_KEY_REQUIRED__" not in r.body
    r = server.handle("GET", "/docs")
    assert r.status == 200 and r.headers["content-type"].startswith("text/html")
    spec = body_of(server.handle("GET", "/openapi.json"))
    assert spec["openapi"].startswith("3.")
    assert "/v1/models/{name}:predict" in spec["paths"] and "/v2/models/{name}/versions/{version}/infer" in spec["paths"]
    enum = spec["paths"]["/v1/models/{name}:predict"]["post"]["parameters"][0]["schema"]["enum"]
    assert enum == ["pima", "two"]
    r = server.handle("GET", "/metrics")
    assert r.status == 200 and r.headers["content-type"].startswith("text/plain")


# --- the short-request fast path ------------------------------------------------------------------
def _fast_and_general(value, dtype, monkeypatch):
    """_numeric's result (array or refusal message) with the fast path, then with it turned off."""
    spec = TensorSpec("x", np.dtype(dtype), (-1, 8))
    out = []
    for few in (P._FEW_VALUES, -1):
        monkeypatch.setattr(P, "_FEW_VALUES", few)
        try:
            out.append(P._numeric(value, spec, "x"))
        except ProtocolError as e:
            out.append(str(e))
    return out


def _edge_values(rng):
    f32max = float(np.finfo(np.float32).max)
    yield [[0.1, -2.5, 3, 4, 5.5, 6e-40, 1e-46, 7]]                        # subnormal and underflowing floats
    yield [[f32max, -f32max, 3.4028235677973366e38, 1, 2, 3, 4, 5]]      # at float32's limit (rounds to max)
    yield [[3.4028235677973367e38, 0, 0, 0, 0, 0, 0, 0]]                   # rounds to inf in float32: refused
    yield [[16777216, 16777217, 1, 2, 3, 4, 5, 6]]                         # ints past 2**24 (general path)
    yield [[16777217, 0.5, 1, 2, 3, 4, 5, 6]]                              # the same int beside a float
    yield [[2 ** 62 + 1, 1, 2, 3, 4, 5, 6, 7]]
    yield [[-(2 ** 63), 1, 2, 3, 4, 5, 6, 7]]
    yield [[1e300, 1, 2, 3, 4, 5, 6, 7]]
    yield [[65504.0, 65520.0, -65519.9, 1, 2, 3, 4, 5]]                    # float16's limit and rounding
    yield [[1.0, float("nan"), 2, 3, 4, 5, 6, 7]]                        # NaN/Inf do not come from orjson, but
    yield [[float("nan"), float("inf"), 2, 3, 4, 5, 6, 7]]               # the contract holds for them too
    yield [[1.0, float("-inf"), 2, 3, 4, 5, 6, 7]]
    yield [[1e308, 1e308, 2, 3, 4, 5, 6, 7]]                              # finite values whose sum overflows
    yield [[10 ** 400, 1.5, 2, 3, 4, 5, 6, 7]]                             # an int no float holds, beside a float
    yield [[True, 1, 2, 3, 4, 5, 6, 7]]
    yield [["1", 1, 2, 3, 4, 5, 6, 7]]
    yield [[None, 1, 2, 3, 4, 5, 6, 7]]
    yield [[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3]]                            # ragged
    yield [[[1, 2, 3, 4, 5, 6, 7, 8]]]                                     # one level too deep
    yield [[1, 2, 3, 4, 5, 6, 7, 8], 5]
    yield [[]]
    yield []
    yield [1.5, 2, 3]
    yield [{"b64": "AAAA"}]
    for _ in range(40):
        n = int(rng.integers(1, 5))
        scale = 10.0 ** rng.integers(-45, 40, size=(n, 8)) if rng.random() < 0.3 else 10.0 ** rng.integers(-3, 4)
        row = rng.normal(size=(n, 8)) * scale
        rows = row.tolist()
        if rng.random() < 0.5:
            rows[0][int(rng.integers(8))] = int(rng.integers(-2 ** 40, 2 ** 40)) >> int(rng.integers(0, 40))
        yield rows


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_short_requests_take_a_fast_path_equal_to_the_general_one(dtype, monkeypatch):
    """Up to _FEW_VALUES numbers are checked in Python; the array (dtype, shape, every bit) and every
    refusal must be exactly what the general NumPy path gives."""
    rng = np.random.default_rng(3)
    fast_hits = 0
    for value in _edge_values(rng):
        fast, general = _fast_and_general(value, dtype, monkeypatch)
        if isinstance(general, str):
            assert fast == general, value
            continue
        assert isinstance(fast, np.ndarray), (value, fast)
        assert fast.dtype == general.dtype == np.dtype(dtype) and fast.shape == general.shape, value
        assert fast.tobytes() == general.tobytes(), value
        monkeypatch.setattr(P, "_FEW_VALUES", 256)
        fast_hits += P._few_floats(value, np.dtype(dtype)) is not None
    assert fast_hits >= 15  # the random rows did take the fast path


def test_fast_path_declines_what_it_cannot_decide():
    f32 = np.dtype("float32")
    assert P._few_floats([[1.0, 2]], f32).dtype == f32
    assert P._few_floats([[True, 2.0]], f32) is None                    # bools: refused by the general path
    assert P._few_floats([[16777217, 2]], f32) is None                  # an int float32 cannot hold exactly
    assert P._few_floats([[16777216, 2]], f32) is not None
    assert P._few_floats([[3.5e38, 2]], f32) is None                    # beyond float32's range
    assert P._few_floats([[1.0, float("nan")]], f32) is None            # NaN anywhere
    assert P._few_floats([[1.0, float("inf")]], np.dtype("float64")) is None
    assert P._few_floats([[1.0] * 8] * 33, f32) is None                 # 264 values: the general path
    assert P._few_floats([[1.0] * 8] * 32, f32) is not None
    assert P._few_floats([1.0] * 257, f32) is None
    assert P._few_floats([[1.0] * 257], f32) is None                    # one long row
    assert P._few_floats([[1.0] * 256], f32).shape == (1, 256)


def test_check_shape_of_a_scalar_against_a_vector_input():
    spec = TensorSpec("v", np.dtype("float32"), (-1,))
    with pytest.raises(ProtocolError, match=r"shape \[\], but input 'v' takes shape \[-1\]"):
        P.check_shape(np.array(1.0, dtype=np.float32), spec, "v")
    assert P.check_shape(np.zeros(3, np.float32), spec, "v").shape == (3,)
    spec = TensorSpec("m", np.dtype("float32"), (-1, -1, 2))
    assert P.check_shape(np.zeros((1, 5, 2), np.float32), spec, "m").shape == (1, 5, 2)
    with pytest.raises(ProtocolError, match=r"shape \[1, 5, 3\]"):
        P.check_shape(np.zeros((1, 5, 3), np.float32), spec, "m")
