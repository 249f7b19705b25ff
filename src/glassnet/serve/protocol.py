"""The two wire protocols as pure functions: request bytes -> arrays, arrays -> response bytes.

Nothing here knows HTTP, threads or the event loop, so every rule is tested without a server
(tests/test_serve_protocol.py) and reused unchanged by the ASGI app, the AWS Lambda handler and the
Ray Serve deployment.

* TensorFlow Serving REST: ``{"instances": [row, ...]}`` (row format) or ``{"inputs": ...}``
  (columnar format) -> ``{"predictions": ...}`` / ``{"outputs": ...}``.
* Open Inference Protocol (KServe V2, Triton's HTTP API): ``{"inputs": [{"name", "shape",
  "datatype", "data"}]}``, plus the binary-tensor extension (a JSON header of
  ``Inference-Header-Content-Length`` bytes followed by raw little-endian tensors).

Every malformed request raises :class:`ProtocolError` carrying the HTTP status and a message that
says what to send instead; the server answers ``{"error": message}`` in both protocols.
"""
import base64
import json
import math
from dataclasses import dataclass, field

import numpy as np
import orjson

# V2 datatype <-> NumPy dtype (little-endian on the wire)
V2_DTYPES = {"BOOL": np.dtype("bool"), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
             "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"),
             "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
             "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"), "BYTES": np.dtype(object)}
_V2_NAMES = {dt: name for name, dt in V2_DTYPES.items() if name != "BYTES"}
TF_DTYPES = {"float16": "DT_HALF", "float32": "DT_FLOAT", "float64": "DT_DOUBLE", "int32": "DT_INT32",
             "int64": "DT_INT64", "string": "DT_STRING"}
JSON_CONTENT = "application/json"
_TF_KEYS = frozenset({"signature_name", "instances", "inputs"})
BINARY_HEADER = "inference-header-content-length"


class ProtocolError(ValueError):
    """A request the server refuses; ``status`` is the HTTP status (4xx), the text is sent as ``error``."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype
    shape: tuple  # -1 marks a variable dimension (always the batch axis)

    @property
    def datatype(self):
        """The V2 datatype name (``FP32`` ...)."""
        return "BYTES" if self.dtype.kind in "OUS" else _V2_NAMES[self.dtype.newbyteorder("<")]

    @property
    def tf_dtype(self):
        return TF_DTYPES.get("string" if self.dtype.kind in "OUS" else self.dtype.name, "DT_INVALID")

    def describe(self):
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Signature:
    """What a client must send and gets back: named, typed, shaped inputs and outputs."""
    inputs: tuple
    outputs: tuple
    feature_names: tuple = ()
    metadata: dict = field(default_factory=dict)

    @property
    def input_names(self):
        return [s.name for s in self.inputs]

    @property
    def output_names(self):
        return [s.name for s in self.outputs]


def signature(model):
    """The serving signature of a glassnet model (the same names a ``.glassnet`` file records)."""
    from ..saving.native import _signature
    sig = _signature(model)

    def specs(entries):
        return tuple(TensorSpec(e["name"], np.dtype(e["dtype"]),
                                tuple(-1 if d is None else int(d) for d in e["shape"])) for e in entries)

    meta = dict(getattr(model, "metadata", None) or {})
    names = meta.get("feature_names") or ()
    inputs = specs(sig["inputs"])
    flat = len(inputs) == 1 and len(inputs[0].shape) == 2
    if not (flat and isinstance(names, (list, tuple)) and len(names) == inputs[0].shape[1]
            and all(isinstance(n, str) for n in names)):
        names = ()
    return Signature(inputs, specs(sig["outputs"]), tuple(names), meta)


# --- JSON ------------------------------------------------------------------------------------------
class _NonFinite(Exception):
    pass


def _refuse_constant(token):
    raise _NonFinite(token)


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):  # 1e400
        raise _NonFinite(text)
    return value


_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def loads(body):
    """Parse a JSON request body; malformed JSON is a 400 that says where it broke."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        try:  # Python's parser accepts NaN/Infinity tokens, which are not JSON: name them if that is the problem
            json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
        except _NonFinite:
            raise ProtocolError("The request body contains NaN or Infinity, which are not valid JSON numbers and "
                                "which this model cannot take. Send finite numbers.") from None
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass
        if bytes(body[:3]).startswith(_BOMS):
            raise ProtocolError("The request body is not valid JSON: it starts with a byte-order mark. Send a JSON "
                                "object encoded as UTF-8, without one.") from None
        raise ProtocolError(f"The request body is not valid JSON ({e}). Send a JSON object in UTF-8, e.g. "
                            '{"instances": [[1.0, 2.0]]}.') from None


def dumps(obj):
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def error_body(message):
    return orjson.dumps({"error": str(message)})


# --- arrays from JSON values ----------------------------------------------------------------------
def _numeric(value, spec, what):
    """A JSON value (number or nested lists of numbers) as an array of ``spec``'s dtype."""
    if spec.dtype.kind == "f" and type(value) is list:
        arr = _few_floats(value, spec.dtype)
        if arr is not None:
            return arr
    if spec.dtype.kind in "OUS":
        return _strings(value, what)
    try:
        arr = np.array(value)
    except (ValueError, TypeError):
        if isinstance(value, list) and any(isinstance(v, dict) for v in value):
            raise ProtocolError(f"{what} mixes named (object) rows and plain rows; use one form for every "
                                "row.") from None
        raise ProtocolError(f"{what} is ragged: nested lists of different lengths. Every row must have the same "
                            f"shape, {_shape_text(spec.shape)}.") from None
    kind = arr.dtype.kind
    if kind in "USO":
        if isinstance(value, list) and _has_b64(value):
            raise ProtocolError(f"{what} uses {{\"b64\": ...}} values, which only string inputs take; input "
                                f"{spec.name!r} is {spec.dtype.name}. Send numbers.")
        if isinstance(value, list) and any(isinstance(v, dict) for v in value):
            raise ProtocolError(f"{what} mixes named (object) rows and plain rows; use one form for every row.")
        if kind == "O" and _ragged(value):
            raise ProtocolError(f"{what} is ragged: nested lists of different lengths. Every row must have the "
                                f"same shape, {_shape_text(spec.shape)}.")
        raise ProtocolError(f"{what} contains non-numeric values (strings, objects or null); input {spec.name!r} "
                            f"takes {spec.dtype.name} numbers. Send numbers, e.g. 1.5, not \"1.5\".")
    if spec.dtype.kind != "b" and (kind == "b" or _has_bool(value)):  # NumPy takes [true, 2.5] as [1.0, 2.5]
        raise ProtocolError(f"{what} contains true/false; input {spec.name!r} takes {spec.dtype.name} numbers. "
                            "Send 1 or 0.")
    return _cast(arr, spec, what)


_FEW_VALUES = 256  # up to this many values, a request's numbers are checked in Python (below)
_PLAIN_NUMBERS = frozenset({float, int})


def _few_floats(value, dtype):
    """A short list of plain numbers, or of equal-length lists of them, as a ``dtype`` array; None otherwise.

    What single-row requests send. Checking their few values in Python costs less than the general
    path's NumPy reductions, and the array is the same bit for bit: a float becomes the nearest
    ``dtype`` value either way, and ints pass only when ``dtype`` holds them exactly. Anything else
    (bools, strings, null, NaN/Inf, ragged or deeper nesting, values beyond ``dtype``'s range, long
    requests) returns None and takes the general path, which explains what is wrong."""
    first = value[0] if value else None
    if type(first) is list:
        width = len(first)
        if len(value) == 1:  # one row: the usual request
            flat = first
        elif len(value) * width > _FEW_VALUES:
            return None
        else:
            for row in value:
                if type(row) is not list or len(row) != width:
                    return None
            flat = [v for row in value for v in row]
        if width > _FEW_VALUES:
            return None
    elif len(value) <= _FEW_VALUES:
        flat = value
    else:
        return None
    types = set(map(type, flat))
    if not types <= _PLAIN_NUMBERS:
        return None
    if flat:
        try:  # NaN/Inf (or a sum past the float range)
            if float in types and not math.isfinite(sum(flat)):
                return None
        except OverflowError:  # an int beyond any float beside a float (not from orjson, which has no such ints)
            return None
        limits = _float_limits(dtype)
        peak = max(map(abs, flat))
        if peak > limits[0] or (int in types and peak > limits[1]):
            return None
    return np.array(value, dtype=dtype)


def _has_bool(value):
    if isinstance(value, list):
        if value and isinstance(value[0], list):
            return any(map(_has_bool, value))
        return bool in set(map(type, value))
    return type(value) is bool


def _ragged(value):
    return isinstance(value, list) and (len({len(v) if isinstance(v, list) else -1 for v in value}) > 1
                                        or any(_ragged(v) for v in value))


def _has_b64(value):
    return any(isinstance(v, dict) and "b64" in v or isinstance(v, list) and _has_b64(v) for v in value)


def _strings(value, what):
    def decode(v):
        if isinstance(v, dict):
            if set(v) != {"b64"} or not isinstance(v["b64"], str):
                raise ProtocolError(f"{what}: a binary value must be {{\"b64\": \"<base64 text>\"}}.")
            try:
                return base64.b64decode(v["b64"], validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise ProtocolError(f"{what}: {v['b64'][:40]!r} is not base64-encoded UTF-8 text.") from None
        if isinstance(v, list):
            return [decode(x) for x in v]
        if not isinstance(v, str):
            raise ProtocolError(f"{what} takes strings; got {type(v).__name__} {v!r}.")
        return v
    decoded = decode(value)
    if _ragged(decoded):
        raise ProtocolError(f"{what} is ragged: nested lists of different lengths. Every row must have the same "
                            "shape.")
    arr = np.array(decoded, dtype=object)
    return arr


def _cast(arr, spec, what):
    """``arr`` as ``spec.dtype``; NaN, Inf and values the dtype cannot hold are refused."""
    target = spec.dtype
    if target.kind in "iu" and arr.dtype.kind in "iuf" and arr.size:
        return _cast_int(arr, spec, what)
    if target.kind != "f" or arr.dtype.kind == "b" or _fits(arr, target):  # ints too: 70000 is inf in float16
        return arr.astype(target, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(target, copy=False)
    bad = int((~np.isfinite(out)).sum())
    if bad:
        raise ProtocolError(f"{what} contains {bad} NaN/Inf value(s) (or numbers too large for {target.name}), "
                            "which this model cannot take. Impute or drop them first.")
    return out


def _cast_int(arr, spec, what):
    """``arr`` as the integer ``spec.dtype``: whole numbers within its range only (NumPy would truncate 1.5 to 1 and
    wrap 1e30 around); as TensorFlow Serving refuses 1.5 for an int32 input."""
    target = spec.dtype
    info = np.iinfo(target)
    if arr.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(arr) & (arr == np.floor(arr))
        if not whole.all():
            bad = arr[~whole].flat[0].item()
            raise ProtocolError(f"{what} contains {bad!r}; input {spec.name!r} takes {target.name} whole numbers "
                                "(ids, counts). Send integers, e.g. 3, not 3.5.")
    low, high = arr.min().item(), arr.max().item()
    if low < info.min or high > info.max:
        raise ProtocolError(f"{what} contains {high if high > info.max else low!r}, outside the range of "
                            f"{target.name} ({info.min} to {info.max}) that input {spec.name!r} takes.")
    return arr.astype(target, copy=False)


_LIMITS = {}


def _float_limits(dtype):
    """(largest finite value, largest int held exactly) of a float dtype."""
    limits = _LIMITS.get(dtype)
    if limits is None:
        info = np.finfo(dtype)
        limits = _LIMITS[dtype] = (float(info.max), 2 ** (info.nmant + 1))
    return limits


def _fits(arr, target):
    """True when every value of the float array is finite and within ``target``'s range.

    Two reductions decide the common case (NaN makes min/max NaN and every comparison false);
    anything else goes to the exact, slower check."""
    if arr.size == 0:
        return True
    limit = _float_limits(target)[0]
    return -limit <= arr.min() and arr.max() <= limit


def _shape_text(shape):
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_shape(arr, spec, what):
    """``arr`` (batch first) against ``spec.shape`` (-1 = any); at least one row."""
    want = spec.shape
    if arr.ndim != len(want) or (arr.shape[1:] != want[1:]
                                 and any(w != -1 and w != g for w, g in zip(want[1:], arr.shape[1:]))):
        hint = ""
        if len(want) == 2 and arr.ndim == 1:
            hint = f" Wrap a single row in a list: [[...{want[1]} values...]]."
        raise ProtocolError(f"{what} has shape {_shape_text(arr.shape)}, but input {spec.name!r} takes shape "
                            f"{_shape_text(want)} (-1 = any number of rows).{hint}")
    if arr.shape[0] == 0:
        raise ProtocolError(f"{what} has no rows; send at least one.")
    return arr


# --- TensorFlow Serving REST ----------------------------------------------------------------------
def decode_tf_predict(body, sig):
    """``:predict`` body -> (arrays in the model's input order, "row" or "columnar")."""
    req = loads(body)
    if not isinstance(req, dict):
        raise ProtocolError('The request body must be a JSON object: {"instances": [...]} (row format) or '
                            '{"inputs": ...} (columnar format).')
    if not req.keys() <= _TF_KEYS:
        extra = sorted(set(req) - _TF_KEYS)
        raise ProtocolError(f"Unknown key(s) {extra} in the request. A predict request has \"instances\" (row "
                            "format) or \"inputs\" (columnar format), and optionally \"signature_name\".")
    sig_name = req.get("signature_name", "serving_default")
    if sig_name != "serving_default":
        raise ProtocolError(f"Unknown signature_name {sig_name!r}; this model has one signature, "
                            "\"serving_default\" (or leave signature_name out).")
    if ("instances" in req) == ("inputs" in req):
        raise ProtocolError('Send exactly one of "instances" (row format: a list with one entry per row) and '
                            '"inputs" (columnar format: one tensor, or an object of named tensors).')
    names = sig.input_names
    if "instances" in req:
        rows = req["instances"]
        if not isinstance(rows, list) or not rows:
            raise ProtocolError('"instances" must be a non-empty list with one entry per row, e.g. '
                                '{"instances": [[...], [...]]}.')
        if isinstance(rows[0], dict) and not (len(names) == 1 and names[0] != "b64" and rows[0].keys() == {"b64"}):
            for i, r in enumerate(rows):
                if not isinstance(r, dict):
                    raise ProtocolError('"instances" mixes named (object) rows and plain rows; use one form for '
                                        'every row.')
                _check_names(r, names, f"instances[{i}]")
            columns = {n: [r[n] for r in rows] for n in names}
        elif len(names) > 1:
            raise ProtocolError(f"This model has {len(names)} inputs {names}, so each instance must be an object "
                                f"naming them, e.g. {{{', '.join(repr(n) + ': ...' for n in names)}}}.")
        else:
            columns = {names[0]: rows}
        what = '"instances"'
        arrays = [check_shape(_numeric(columns[s.name], s, what if len(names) == 1 else f"instances[*].{s.name}"),
                              s, what) for s in sig.inputs]
        fmt = "row"
    else:
        cols = req["inputs"]
        if isinstance(cols, dict):
            _check_names(cols, names, '"inputs"')
        elif len(names) > 1:
            raise ProtocolError(f"This model has {len(names)} inputs {names}, so \"inputs\" must be an object of "
                                "named tensors.")
        else:
            cols = {names[0]: cols}
        arrays = [check_shape(_numeric(cols[s.name], s, f'"inputs".{s.name}'), s, f'"inputs".{s.name}')
                  for s in sig.inputs]
        fmt = "columnar"
    _same_rows(arrays, names)
    return arrays, fmt


def _check_names(obj, names, what):
    missing = [n for n in names if n not in obj]
    extra = sorted(k for k in obj if k not in names)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unknown {extra}")
        raise ProtocolError(f"{what} names inputs that do not match the model ({'; '.join(parts)}). "
                            f"Send exactly {names}.")


def _same_rows(arrays, names):
    n = len(arrays[0])
    for arr, name in zip(arrays[1:], names[1:]):
        if len(arr) != n:
            raise ProtocolError(f"Input {name!r} has {len(arr)} rows but {names[0]!r} has {n}; every input needs "
                                "one entry per row.")


def encode_tf_predict(outputs, sig, fmt):
    """Model outputs (list, one per output) -> response body bytes."""
    names = sig.output_names
    outputs = [np.ascontiguousarray(o) for o in outputs]  # orjson serializes C-contiguous arrays only
    if fmt == "row":
        if len(outputs) == 1:
            return dumps({"predictions": outputs[0]})
        rows = [{n: o[i] for n, o in zip(names, outputs)} for i in range(len(outputs[0]))]
        return dumps({"predictions": rows})
    if len(outputs) == 1:
        return dumps({"outputs": outputs[0]})
    return dumps({"outputs": dict(zip(names, outputs))})


def tf_status(versions):
    """``GET /v1/models/{name}[/versions/{v}]``: every listed version is AVAILABLE."""
    return {"model_version_status": [{"version": str(v), "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}} for v in versions]}


def tf_metadata(name, version, sig):
    def tensors(specs):
        return {s.name: {"dtype": s.tf_dtype, "name": s.name,
                         "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in s.shape],
                                          "unknown_rank": False}} for s in specs}
    return {"model_spec": {"name": name, "signature_name": "", "version": str(version)},
            "metadata": {"signature_def": {"signature_def": {"serving_default": {
                "inputs": tensors(sig.inputs), "outputs": tensors(sig.outputs), "method_name":
                "tensorflow/serving/predict"}}, "feature_names": list(sig.feature_names)}}}


# --- Open Inference Protocol (V2) ------------------------------------------------------------------
@dataclass
class V2Request:
    id: object = None
    binary_outputs: dict = field(default_factory=dict)  # output name -> wants binary
    requested: list = None  # output names in request order, or None for all


def decode_v2_infer(body, headers, sig):
    """``/infer`` body (JSON, or JSON header + binary tensors) -> (arrays in input order, V2Request)."""
    header_len = headers.get(BINARY_HEADER)
    if header_len is not None:
        try:
            n = int(header_len)
        except ValueError:
            n = -1
        if not 0 <= n <= len(body):
            raise ProtocolError(f"Inference-Header-Content-Length is {header_len!r}, but the body has {len(body)} "
                                "bytes; it must be the byte length of the JSON header at the start of the body.")
        head, binary = body[:n], memoryview(body)[n:]
    else:
        head, binary = body, memoryview(b"")
    req = loads(head)
    if not isinstance(req, dict):
        raise ProtocolError('The request must be a JSON object: {"inputs": [{"name": ..., "shape": [...], '
                            '"datatype": "FP32", "data": [...]}]}.')
    extra = sorted(set(req) - {"id", "parameters", "inputs", "outputs"})
    if extra:
        raise ProtocolError(f"Unknown key(s) {extra} in the inference request; it takes \"inputs\" and optionally "
                            "\"id\", \"parameters\" and \"outputs\".")
    params = req.get("parameters")
    params = {} if params is None else params  # null = absent; 0, [], "" are refused below
    if not isinstance(params, dict):
        raise ProtocolError('"parameters" must be an object.')
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, dict) for t in inputs):
        raise ProtocolError('"inputs" must be a non-empty list of tensors, each {"name", "shape", "datatype", '
                            '"data"}.')
    by_name = {}
    for t in inputs:
        name = t.get("name")
        if not isinstance(name, str):
            raise ProtocolError('Every input tensor needs a "name" (a string).')
        if name in by_name:
            raise ProtocolError(f"Input {name!r} is given twice.")
        by_name[name] = t
    _check_names(by_name, sig.input_names, '"inputs"')
    offset = 0
    decoded = {}
    for t in inputs:  # binary tensors follow the header in request order
        spec = next(s for s in sig.inputs if s.name == t["name"])
        arr, offset = _v2_tensor(t, spec, binary, offset)
        decoded[spec.name] = arr
    if offset != len(binary):
        raise ProtocolError(f"The body has {len(binary) - offset} bytes after the last binary tensor; "
                            "binary_data_size must add up to the bytes after the JSON header.")
    arrays = [decoded[n] for n in sig.input_names]
    _same_rows(arrays, sig.input_names)
    return arrays, _v2_outputs(req, params, sig)


def _v2_tensor(t, spec, binary, offset):
    what = f"Input {spec.name!r}"
    extra = sorted(set(t) - {"name", "shape", "datatype", "parameters", "data"})
    if extra:
        raise ProtocolError(f"{what} has unknown key(s) {extra}; a tensor is {{\"name\", \"shape\", \"datatype\", "
                            "\"data\"}.")
    shape = t.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise ProtocolError(f"{what} needs \"shape\": a list of non-negative integers, batch first, e.g. "
                            f"{_shape_text([1] + [d for d in spec.shape[1:]])}.")
    datatype = t.get("datatype")
    if datatype not in V2_DTYPES:
        raise ProtocolError(f"{what} has datatype {datatype!r}; use one of {sorted(V2_DTYPES)} — this model takes "
                            f"{spec.datatype}.")
    if datatype != spec.datatype:
        raise ProtocolError(f"{what} has datatype {datatype}, but the model takes {spec.datatype}. Send "
                            f"\"datatype\": \"{spec.datatype}\" (and values of that type).")
    tparams = t.get("parameters")
    tparams = {} if tparams is None else tparams
    if not isinstance(tparams, dict):
        raise ProtocolError(f"{what}: \"parameters\" must be an object.")
    count = math.prod(shape)
    size = tparams.get("binary_data_size")
    if size is not None:
        if "data" in t:
            raise ProtocolError(f"{what} has both \"data\" and parameters.binary_data_size; send one of them.")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise ProtocolError(f"{what}: binary_data_size {size!r} does not fit the {len(binary) - offset} bytes "
                                "left after the JSON header.")
        raw = binary[offset:offset + size]
        offset += size
        if datatype == "BYTES":
            arr = _unpack_bytes(raw, what)
            if arr.size != count:
                raise ProtocolError(f"{what} has {arr.size} strings but shape {_shape_text(shape)} needs {count}.")
            arr = arr.reshape(shape)
        else:
            itemsize = spec.dtype.itemsize
            if size != count * itemsize:
                raise ProtocolError(f"{what}: binary_data_size is {size} bytes, but shape {_shape_text(shape)} of "
                                    f"{datatype} takes {count * itemsize}.")
            arr = np.frombuffer(raw, dtype=spec.dtype).reshape(shape)
            if arr.dtype.kind == "f" and not _fits(arr, arr.dtype) and not np.isfinite(arr).all():
                raise ProtocolError(f"{what} contains {int((~np.isfinite(arr)).sum())} NaN/Inf value(s), which "
                                    "this model cannot take. Impute or drop them first.")
    else:
        if "data" not in t:
            raise ProtocolError(f"{what} has no \"data\" (a flat or nested list of {count} values in row-major "
                                "order) and no binary_data_size parameter.")
        arr = _numeric(t["data"], spec, what)
        if arr.size != count:
            raise ProtocolError(f"{what} has {arr.size} values in \"data\" but shape {_shape_text(shape)} needs "
                                f"{count}. Send shape and data that agree.")
        arr = arr.reshape(shape)
    return check_shape(arr, spec, what), offset


def _unpack_bytes(raw, what):
    raw = bytes(raw)
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise ProtocolError(f"{what}: a BYTES element is cut short; each is a 4-byte little-endian length "
                                "then the bytes.")
        n = int.from_bytes(raw[i:i + 4], "little")
        i += 4
        if i + n > len(raw):
            raise ProtocolError(f"{what}: a BYTES element claims {n} bytes but fewer remain.")
        try:
            out.append(raw[i:i + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError(f"{what}: BYTES elements must be UTF-8 text.") from None
        i += n
    return np.array(out, dtype=object)


def _v2_outputs(req, params, sig):
    binary_all = params.get("binary_data_output", False)
    if not isinstance(binary_all, bool):
        raise ProtocolError('parameters.binary_data_output must be true or false.')
    outs = req.get("outputs")
    result = V2Request(id=req.get("id"))
    if result.id is not None and not isinstance(result.id, str):
        raise ProtocolError('"id" must be a string.')
    if outs is None:
        result.binary_outputs = {n: binary_all for n in sig.output_names}
        return result
    if not isinstance(outs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outs):
        raise ProtocolError('"outputs" must be a list of {"name": ..., "parameters"?: {"binary_data": true}}.')
    unknown = [o["name"] for o in outs if o["name"] not in sig.output_names]
    if unknown:
        raise ProtocolError(f"Unknown output(s) {unknown}; this model's outputs are {sig.output_names}.")
    result.requested = []
    for o in outs:
        p = o.get("parameters")
        p = {} if p is None else p
        if not isinstance(p, dict) or not isinstance(p.get("binary_data", False), bool):
            raise ProtocolError(f"Output {o['name']!r}: parameters.binary_data must be true or false.")
        result.requested.append(o["name"])
        result.binary_outputs[o["name"]] = p.get("binary_data", binary_all)
    return result


def encode_v2_infer(outputs, sig, request, model_name, model_version):
    """Model outputs -> (body bytes, headers): JSON, or JSON header + binary tensors when asked."""
    by_name = dict(zip(sig.output_names, outputs))
    names = request.requested or sig.output_names
    tensors, blobs = [], []
    for name in names:
        spec = next(s for s in sig.outputs if s.name == name)
        arr = np.ascontiguousarray(by_name[name], dtype=spec.dtype)
        entry = {"name": name, "datatype": spec.datatype, "shape": list(arr.shape)}
        if request.binary_outputs.get(name):
            raw = arr.astype(spec.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = arr.ravel()
        tensors.append(entry)
    response = {"model_name": model_name, "model_version": str(model_version), "outputs": tensors}
    if request.id is not None:
        response["id"] = request.id
    head = dumps(response)
    if not blobs:
        return head, {"content-type": JSON_CONTENT}
    return head + b"".join(blobs), {"content-type": "application/octet-stream", BINARY_HEADER: str(len(head))}


def v2_metadata(name, versions, sig):
    return {"name": name, "versions": [str(v) for v in versions], "platform": "glassnet",
            "inputs": [s.describe() for s in sig.inputs], "outputs": [s.describe() for s in sig.outputs],
            "parameters": {"feature_names": list(sig.feature_names)}}
