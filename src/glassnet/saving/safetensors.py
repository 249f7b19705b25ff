"""The safetensors layout, read and written with NumPy alone (no pickle, no code in the file).

Layout: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}},
then the raw little-endian tensor bytes. Every header field is checked before any data is used.
Non-contiguous arrays (views, transposes) are copied to C order first, so they are never corrupted.
"""
import json
import math
import struct

import numpy as np

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U8": "u1", "BOOL": "?"}
_CODES = {np.dtype(v).str.lstrip("<|="): k for k, v in DTYPES.items()}
MAX_HEADER = 16 * 1024 * 1024
MAX_DIMS = 64  # NumPy's limit on an array's dimensions


class SafetensorsError(ValueError):
    pass


def _code(dtype):
    key = np.dtype(dtype).newbyteorder("<").str.lstrip("<|=")
    if key not in _CODES:
        raise TypeError(f"Cannot store dtype {np.dtype(dtype)} in safetensors; use a float or int dtype.")
    return _CODES[key]


def dumps(tensors, metadata=None):
    """Bytes of a safetensors file holding ``tensors`` ({name: array}) and string ``metadata``."""
    header, chunks, offset = {}, [], 0
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        if not arr.flags.c_contiguous:  # np.ascontiguousarray would also turn 0-d arrays into 1-d
            arr = arr.copy(order="C")
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _code(arr.dtype), "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(chunks)


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"duplicate key {dup!r}")
    return dict(pairs)


def loads(buf, what="safetensors data"):
    """({name: array}, metadata) from bytes, refusing anything malformed with a clear error."""
    buf = memoryview(buf)
    if len(buf) < 8:
        raise SafetensorsError(f"{what} is truncated: {len(buf)} bytes, not even the 8-byte header length.")
    (n,) = struct.unpack("<Q", buf[:8])
    if n > MAX_HEADER or n > len(buf) - 8:
        raise SafetensorsError(f"{what} declares a {n}-byte header, but the limit is {MAX_HEADER} and the file has "
                               f"{len(buf) - 8} bytes after the length field: the file is corrupt or hostile.")
    raw = bytes(buf[8:8 + n])
    if not raw.startswith(b"{"):
        raise SafetensorsError(f"{what}'s header does not start with '{{': not a safetensors file (or a corrupt one).")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise SafetensorsError(f"{what} has an unreadable JSON header ({e}).") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{what}'s header must be a JSON object.")
    metadata = header.pop("__metadata__", None) or {}
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise SafetensorsError(f"{what}: __metadata__ must be an object of strings, got {str(metadata)[:100]}.")
    data = buf[8 + n:]
    spans, out = [], {}
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{what}: tensor {name!r} has a malformed entry {info!r}.")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPES:
            raise SafetensorsError(f"{what}: tensor {name!r} has unsupported dtype {dtype!r}.")
        if not (isinstance(shape, list) and len(shape) <= MAX_DIMS
                and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2 ** 63 for d in shape)):
            raise SafetensorsError(f"{what}: tensor {name!r} has an invalid shape {str(shape)[:100]} (at most "
                                   f"{MAX_DIMS} dimensions of 0 to 2**63 - 1 each).")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise SafetensorsError(f"{what}: tensor {name!r} has invalid data_offsets {offsets!r}.")
        start, end = offsets
        need = math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize
        if not 0 <= start <= end <= len(data) or end - start != need:
            raise SafetensorsError(f"{what}: tensor {name!r} claims bytes [{start}, {end}) for shape {shape} ({need} "
                                   f"bytes) in a {len(data)}-byte data section: offsets lie.")
        spans.append((start, end, name))
        try:
            out[name] = np.frombuffer(data[start:end], dtype=DTYPES[dtype]).reshape(shape).copy()
        except ValueError as e:  # an empty shape NumPy cannot represent, e.g. [0, 2**62, 8]
            raise SafetensorsError(f"{what}: tensor {name!r} has a shape NumPy cannot hold, {shape} ({e}).") from None
    position = 0
    for start, end, name in sorted(spans):
        if start != position:
            raise SafetensorsError(f"{what}: tensor {name!r} starts at byte {start}, expected {position} (overlapping "
                                   "or gapped data).")
        position = end
    if position != len(data):
        raise SafetensorsError(f"{what}: {len(data) - position} trailing bytes after the last tensor.")
    return out, metadata
