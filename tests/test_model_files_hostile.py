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
    # 65 dimensions (NumPy holds 64), and 50,000 of them: refused before multiplying them out (that took seconds)
    (b'{"a": {"dtype": "F32", "shape": [' + b"1, " * 64 + b'1], "data_offsets": [0, 4]}}', "at most 64 dimensions"),
    (b'{"a": {"dtype": "F32", "shape": [' + b"4611686018427387904, " * 50000 + b'0], "data_offsets": [0, 0]}}',
     "at most 64 dimensions"),
    (b'{"a": {"dtype": "F32", "shape": [0, 9223372036854775808], "data_offsets": [0, 0]}}', "invalid shape"),
    (b'{"a": {"dtype": "F32", "shape": [0, 4611686018427387904, 4611686018427387904], "data_offsets": [0, 0]}}',
     "NumPy cannot hold"),
    (b'{"__metadata__": ["x"], "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', "object of strings"),
    (b'{"__metadata__": {"iterations": 5}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
     "object of strings"),
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


def _rezip(members, tmp_path, name, **changed):
    entries = [(n, changed.get(n.replace(".", "_"), c)) for n, c in members.items()]
    return write_zip(tmp_path / name, entries)


def test_members_compressed_other_than_stored_or_deflated_are_refused(saved, tmp_path):
    """bzip2 and lzma members decompress without a cap on the output: a few KB claiming 1,000 bytes grew to GBs."""
    _, members = saved
    with zipfile.ZipFile(tmp_path / "bz.glassnet", "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content, compress_type=zipfile.ZIP_BZIP2 if name.endswith(".safetensors")
                        else zipfile.ZIP_STORED)
    with pytest.raises(ValueError, match="compression method 12.*stored or deflated"):
        glassnet.load_model(tmp_path / "bz.glassnet")
    with zipfile.ZipFile(tmp_path / "deflated.glassnet", "w", zipfile.ZIP_DEFLATED) as zf:  # deflate still loads
        for name, content in members.items():
            zf.writestr(name, content)
    assert glassnet.load_model(tmp_path / "deflated.glassnet").count_params() == saved[0].count_params()


@pytest.mark.parametrize("meta,match", [
    ({"iterations": "-1"}, "iterations must be a whole number >= 0"),
    ({"iterations": "1.5"}, "malformed"),
    ({"iterations": "3", "u_product": "nan"}, "u_product in"),
    ({"iterations": "3", "u_product": "inf"}, "u_product in"),
    ({"iterations": "3", "u_product": "0"}, "u_product in"),
])
def test_optimizer_metadata_is_checked(saved, tmp_path, meta, match):
    """A negative step count made Adam's bias correction divide by zero: every weight NaN after one fit."""
    _, members = saved
    slots, _ = safetensors.loads(members["optimizer.safetensors"])
    path = _rezip(members, tmp_path, "meta.glassnet", optimizer_safetensors=safetensors.dumps(slots, meta))
    with pytest.raises(ValueError, match=match):
        glassnet.load_model(path)
    assert glassnet.load_model(path, compile=False).count_params() == saved[0].count_params()


def test_nan_optimizer_state_is_refused(saved, tmp_path):
    _, members = saved
    slots, meta = safetensors.loads(members["optimizer.safetensors"])
    if not slots:  # plain SGD keeps no slots: add momentum state by saving an Adam-compiled copy
        model = saved[0]
        model.compile(loss="mse", optimizer="adam")
        model.fit(np.ones((8, 4), np.float32), np.ones(8, np.float32), verbose=0)
        model.save(tmp_path / "adam.glassnet")
        with zipfile.ZipFile(tmp_path / "adam.glassnet") as zf:
            members = {i.filename: zf.read(i) for i in zf.infolist()}
        slots, meta = safetensors.loads(members["optimizer.safetensors"])
    key = sorted(slots)[0]
    slots[key].flat[0] = np.nan
    path = _rezip(members, tmp_path, "nanslot.glassnet", optimizer_safetensors=safetensors.dumps(slots, meta))
    with pytest.raises(ValueError, match="optimizer state .*NaN or Inf"):
        glassnet.load_model(path)


@pytest.mark.parametrize("training", [[1], 5, "seed"])
def test_training_section_must_be_an_object(saved, tmp_path, training):
    _, members = saved
    config = json.loads(members["config.json"])
    config["training"] = training
    path = _rezip(members, tmp_path, "training.glassnet", config_json=json.dumps(config).encode())
    with pytest.raises(ValueError, match="'training' must be an object"):
        glassnet.load_model(path)


def test_more_than_ten_thousand_weights_load_in_order():
    """Keys are '<index>:<path>' with 4-digit indices (as save writes them); sorted as text, 10000 came right after
    1000 and 9,005 weights of a 10,005-weight model landed in the wrong layers without an error. (Checked on the
    keys alone: a 10,005-layer model takes a minute to build.)"""
    from glassnet.saving import native
    n = 10005
    tensors = {f"{i:04d}:layer_{i}/kernel": np.full((1,), i, np.float32) for i in reversed(range(n))}
    ordered = native._in_order(tensors, "test")
    assert [key for key, _ in ordered] == [f"{i:04d}:layer_{i}/kernel" for i in range(n)]
    assert [float(arr[0]) for _, arr in ordered] == list(range(n))


@pytest.mark.parametrize("keys,match", [
    (["0:a", "0:b"], "distinct index"), (["0:a", "x:b"], "distinct index"), (["0:a", "2:b"], "not 0 to 1"),
])
def test_weight_keys_must_be_distinct_indices(keys, match, tmp_path):
    model = glassnet.Sequential([glassnet.Input((2,)), Dense(2)])
    tensors = dict(zip(keys, [w.value for w in model.weights]))
    (tmp_path / "k.weights.safetensors").write_bytes(safetensors.dumps(tensors))
    with pytest.raises(ValueError, match=match):
        model.load_weights(tmp_path / "k.weights.safetensors")


def test_an_unadapted_normalization_stays_unadapted_through_a_glassnet_file(tmp_path):
    """Before, loading set every Normalization adapted: a layer never adapted then standardised with mean 0 and
    variance 1 instead of asking for adapt(). Adapted ones, and ones given statistics, still load adapted."""
    from glassnet.layers import Normalization
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    for make, adapted in [(lambda: Normalization(), False), (lambda: Normalization(mean=1.0, variance=4.0), True)]:
        model = glassnet.Sequential([glassnet.Input((4,)), make(), Dense(2)])
        model.save(tmp_path / "n.glassnet")
        back = glassnet.load_model(tmp_path / "n.glassnet")
        if adapted:
            np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
        else:
            with pytest.raises(ValueError, match="no statistics yet"):
                back.predict(x, verbose=0)
    norm = Normalization()
    model = glassnet.Sequential([glassnet.Input((4,)), norm, Dense(2)])
    norm.adapt(x)
    model.save(tmp_path / "a.glassnet")
    np.testing.assert_allclose(glassnet.load_model(tmp_path / "a.glassnet").predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-6)


def _within(seconds):
    """A guard against hangs (not a speed target): SIGALRM fails the test if the block runs past ``seconds``."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def guard():
        def fail(*_):
            raise AssertionError(f"still running after {seconds} s: quadratic (or worse) in the number of layers")
        previous = signal.signal(signal.SIGALRM, fail)
        signal.alarm(seconds)
        try:
            yield
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    return guard()


def test_ten_thousand_layers_build_save_and_load_in_order(tmp_path):
    """A 10,005-layer Sequential took 70 s to build (each add rebuilt the model and compared every name), so a
    small hostile config could keep a loader busy for minutes; its 10,005 weights now also load in order."""
    n = 10005
    with _within(60):
        model = glassnet.Sequential([glassnet.Input((2,))] + [Dense(2, use_bias=False) for _ in range(n)])
        for i, w in enumerate(model.weights):
            w.assign(np.full((2, 2), i, np.float32))
        model.save(tmp_path / "deep.glassnet")
        back = glassnet.load_model(tmp_path / "deep.glassnet")
    np.testing.assert_array_equal([w.value[0, 0] for w in back.weights], np.arange(n, dtype=np.float32))


def test_a_functional_config_listed_backwards_rebuilds_in_one_pass(saved, tmp_path):
    """Functional.from_config went over the whole list once per layer it could place: 20,000 layers listed
    outputs-first (a small .glassnet config) meant 200 million checks."""
    x = inputs = glassnet.Input((3,))
    for k in range(20000):
        x = glassnet.layers.Activation("relu", name=f"act{k}")(x)
    model = glassnet.Model(inputs, x)
    config = model.get_config()
    config["layers"] = config["layers"][::-1]
    with _within(60):
        back = type(model).from_config(config)
    data = np.array([[1.0, -2.0, 3.0]], np.float32)
    np.testing.assert_array_equal(back.predict(data, verbose=0), model.predict(data, verbose=0))
