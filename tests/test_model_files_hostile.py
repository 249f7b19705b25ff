"""The hostile-file list of model-files-security.md, items the other suites do not already cover."""
import io
import json
import pickle
import struct
import warnings
import zipfile

import numpy as np
import pytest

import glassnet
from glassnet.layers import Dense
from glassnet.saving import safetensors
from glassnet.saving.safetensors import SafetensorsError


@pytest.fixture
def saved(tmp_path):
    model = glassnet.Sequential([glassnet.Input((4,)), Dense(3, activation="relu"), Dense(1)])
    model.compile(loss="mse", optimizer="sgd")
    model.fit(np.ones((8, 4), np.float32), np.ones(8, np.float32), verbose=0)
    path = tmp_path / "good.glassnet"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        return model, {info.filename: zf.read(info) for info in zf.infolist()}


def write_zip(path, entries, compression=zipfile.ZIP_STORED):
    """entries: list of (ZipInfo or name, bytes); duplicates allowed on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", compression) as zf:
            for name, content in entries:
                zf.writestr(name, content)
    return path


def test_duplicate_members_are_refused(saved, tmp_path):
    _, members = saved
    entries = list(members.items()) + [("config.json", b"{}")]
    with pytest.raises(ValueError, match="duplicate members"):
        glassnet.load_model(write_zip(tmp_path / "dup.glassnet", entries))


def test_symlink_members_are_refused(saved, tmp_path):
    _, members = saved
    link = zipfile.ZipInfo("config.json")
    link.external_attr = (0o120777 << 16)
    entries = [(link, b"/etc/passwd")] + [(n, c) for n, c in members.items() if n != "config.json"]
    with pytest.raises(ValueError, match="symbolic-link"):
        glassnet.load_model(write_zip(tmp_path / "link.glassnet", entries))


def test_highly_compressed_member_is_refused_as_a_bomb(saved, tmp_path):
    _, members = saved
    config = json.loads(members["config.json"])
    config["metadata"] = {"padding": " " * 5_000_000}  # under the size cap, but expands > 200x
    entries = [("config.json", json.dumps(config).encode())] + [(n, c) for n, c in members.items()
                                                               if n != "config.json"]
    path = write_zip(tmp_path / "bomb.glassnet", entries, compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 100_000
    with pytest.raises(ValueError, match="zip bomb"):
        glassnet.load_model(path)


def test_absurdly_deep_json_is_refused(saved, tmp_path):
    _, members = saved
    config = json.loads(members["config.json"])
    deep = []
    for _ in range(500):
        deep = [deep]
    config["metadata"] = {"deep": deep}
    entries = [("config.json", json.dumps(config).encode())] + [(n, c) for n, c in members.items()
                                                               if n != "config.json"]
    with pytest.raises(ValueError, match="nested absurdly deep"):
        glassnet.load_model(write_zip(tmp_path / "deep.glassnet", entries))


class Payload:
    def __reduce__(self):
        return (print, ("PAYLOAD EXECUTED",))


def test_pickle_payloads_are_never_executed(saved, tmp_path, capsys):
    _, members = saved
    blob = pickle.dumps(Payload())
    for member in ("config.json", "model.weights.safetensors"):
        entries = [(n, blob if n == member else c) for n, c in members.items()]
        with pytest.raises(ValueError):
            glassnet.load_model(write_zip(tmp_path / f"pickle-{member}.glassnet", entries))
    weights = tmp_path / "pickle.weights.safetensors"
    weights.write_bytes(blob)
    model = glassnet.Sequential([glassnet.Input((4,)), Dense(3, activation="relu"), Dense(1)])
    with pytest.raises(ValueError):
        model.load_weights(weights)
    assert "PAYLOAD EXECUTED" not in capsys.readouterr().out


def _header(raw_header):
    return struct.pack("<Q", len(raw_header)) + raw_header


@pytest.mark.parametrize("raw,match", [
    (b'[{"a": 1}]', "does not start with"),
    (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
     b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', "duplicate key"),
    (b'{"\xff\xfe": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', "unreadable JSON"),
    (b'{"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}', "invalid shape"),
    (b'{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}', "invalid shape"),
    (b'{"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}}', "offsets lie"),
    (b'{"a": {"dtype": "O", "shape": [1], "data_offsets": [0, 4]}}', "unsupported dtype"),
])
def test_safetensors_header_attacks(raw, match):
    with pytest.raises(SafetensorsError, match=match):
        safetensors.loads(_header(raw) + b"\0" * 4)


def test_nan_weights_are_refused_with_a_reason(saved, tmp_path):
    model, members = saved
    tensors, meta = safetensors.loads(members["model.weights.safetensors"])
    key = sorted(tensors)[0]
    tensors[key][0, 0] = np.nan
    entries = [(n, safetensors.dumps(tensors) if n == "model.weights.safetensors" else c) for n, c in members.items()]
    with pytest.raises(ValueError, match="NaN or Inf.*diverged"):
        glassnet.load_model(write_zip(tmp_path / "nan.glassnet", entries))


@pytest.mark.parametrize("make", [
    lambda a: a.T,                       # transposed view
    lambda a: a[:, ::2],                 # strided view
    lambda a: np.asfortranarray(a),      # Fortran order
    lambda a: a[1],                      # a row of a bigger array (contiguous view with an offset)
])
def test_non_contiguous_arrays_round_trip_exactly(make):
    base = np.arange(48, dtype=np.float32).reshape(6, 8)
    arr = make(base)
    out, _ = safetensors.loads(safetensors.dumps({"w": arr}))
    np.testing.assert_array_equal(out["w"], arr)
    assert out["w"].shape == arr.shape


def test_zero_dimensional_and_empty_arrays_round_trip():
    tensors = {"count": np.array(7, np.int64), "empty": np.zeros((0, 3), np.float32)}
    out, _ = safetensors.loads(safetensors.dumps(tensors))
    assert out["count"].shape == () and out["count"] == 7
    assert out["empty"].shape == (0, 3)


def test_loading_never_changes_a_model_on_failure(saved, tmp_path):
    model, members = saved
    before = model.get_weights()
    tensors, _ = safetensors.loads(members["model.weights.safetensors"])
    key = sorted(tensors)[-1]
    tensors[key] = np.zeros((2,), np.float32)  # wrong shape for the last bias
    bad = tmp_path / "bad.weights.safetensors"
    bad.write_bytes(safetensors.dumps(tensors))
    with pytest.raises(ValueError, match="shape"):
        model.load_weights(bad)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
