"""Hostile or unusual Keras `.keras` files: refused with a clear ValueError (never a TypeError, AttributeError,
KeyError, RecursionError or a hang) or, where Keras itself reads them, read as Keras reads them."""
import io
import json
import os
import signal
import sys

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "numpy")  # before keras is imported: no JAX/TF needed
h5py = pytest.importorskip("h5py")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from archive_util import members, write_zip  # noqa: E402
from archive_util import rewrite_h5 as edit_h5  # noqa: E402

import glassnet  # noqa: E402
from glassnet.layers import Activation, Dense, Input, Normalization  # noqa: E402
from glassnet.saving import keras_format  # noqa: E402

# Keras 3.15 on NumPy 2 warns about __array__(copy=...) on every variable read; it is noise here.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def edit_config(src, dst, edit):
    parts = members(src)
    config = json.loads(parts["config.json"])
    edit(config)
    parts["config.json"] = json.dumps(config)
    return write_zip(dst, parts)


def x_in(shape=(5, 4), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.fixture
def sequential_file(tmp_path):
    model = glassnet.Sequential([Input((4,)), Dense(5, activation="tanh"), Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.train_on_batch(x_in(), np.ones((5, 1), np.float32))
    path = tmp_path / "seq.keras"
    model.save(path)
    return model, path


@pytest.fixture
def functional_file(tmp_path):
    inp = Input((4,), name="in0")
    model = glassnet.Model(inp, Dense(2, name="out")(Dense(3, activation="relu", name="hidden")(inp)))
    path = tmp_path / "func.keras"
    model.save(path)
    return model, path


def keras_tensor(name, node=0):
    return {"class_name": "__keras_tensor__", "config": {"keras_history": [name, node, 0]}}


# --- 1. compile_config / build_config of the wrong shape ----------------------------------------------------
@pytest.mark.parametrize("bad", [[1, 2], "adam", 3])
def test_optimizer_config_that_is_not_an_object_is_refused(tmp_path, sequential_file, bad):
    _, path = sequential_file
    bad_path = edit_config(path, tmp_path / "bad.keras",
                           lambda c: c["compile_config"]["optimizer"].update(config=bad))
    with pytest.raises(ValueError, match=r"compile settings: the config of optimizer Adam must be an object.*"
                                         r"compile=False"):
        glassnet.load_model(bad_path)
    assert glassnet.load_model(bad_path, compile=False).built


@pytest.mark.parametrize("keep_input_layer", [False, True])
@pytest.mark.parametrize("bad", [[1], "shape", 7])
def test_build_config_that_is_not_an_object_is_refused(tmp_path, sequential_file, keep_input_layer, bad):
    _, path = sequential_file

    def edit(c):
        c["config"].pop("build_input_shape")
        if not keep_input_layer:
            c["config"]["layers"] = c["config"]["layers"][1:]
        c["build_config"] = bad
    with pytest.raises(ValueError, match=r"config.json is malformed: 'build_config' must be an object or null"):
        glassnet.load_model(edit_config(path, tmp_path / "bad.keras", edit))


# --- 2. a layer nothing reads: Keras builds the model from its inputs and outputs, and so does glassnet ----
@pytest.mark.parametrize("extra", [
    {"class_name": "Activation", "config": {"name": "extra", "activation": "relu"},
     "inbound_nodes": [{"args": [keras_tensor("in0")], "kwargs": {}}]},
    {"class_name": "Dense", "config": {"name": "extra", "units": 1000},  # no weights in the file for it
     "inbound_nodes": [{"args": [keras_tensor("hidden")], "kwargs": {}}]},
])
def test_layer_nothing_reads_is_left_out_as_keras_does(tmp_path, functional_file, extra):
    model, path = functional_file
    bad = edit_config(path, tmp_path / "extra.keras", lambda c: c["config"]["layers"].append(extra))
    loaded = glassnet.load_model(bad)
    assert [la.name for la in loaded.layers] == [la.name for la in model.layers]
    np.testing.assert_array_equal(loaded.predict(x_in(), verbose=0), model.predict(x_in(), verbose=0))


def test_layer_nothing_reads_in_a_keras_file_loads_as_in_keras(tmp_path):
    keras = pytest.importorskip("keras")
    inp = keras.Input((4,), name="in0")
    kmodel = keras.Model(inp, keras.layers.Dense(2, name="d")(inp))
    path = tmp_path / "k.keras"
    kmodel.save(path)

    def edit(c):
        extra = json.loads(json.dumps(c["config"]["layers"][1]))
        extra.update(name="extra", class_name="Activation")
        extra["config"] = {"name": "extra", "activation": "relu", "trainable": True,
                           "dtype": c["config"]["layers"][1]["config"]["dtype"]}
        c["config"]["layers"].append(extra)
    bad = edit_config(path, tmp_path / "extra.keras", edit)
    theirs = keras.saving.load_model(bad)
    ours = glassnet.load_model(bad)
    assert [la.name for la in ours.layers] == [la.name for la in theirs.layers] == ["in0", "d"]
    np.testing.assert_allclose(ours.predict(x_in(), verbose=0), theirs.predict(x_in(), verbose=0), rtol=1e-6)


# --- 3. deep functional models -------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", ["keras", "glassnet"])
def test_deep_functional_model_round_trips(tmp_path, ext):
    inp = Input((3,))
    h = inp
    for _ in range(1200):
        h = Activation("tanh")(h)
    model = glassnet.Model(inp, Dense(2)(h))
    path = tmp_path / f"deep.{ext}"
    model.save(path)
    loaded = glassnet.load_model(path)
    assert len(loaded.layers) == 1202
    np.testing.assert_array_equal(loaded.predict(x_in((4, 3)), verbose=0), model.predict(x_in((4, 3)), verbose=0))


# --- 4. reading a functional config takes time linear in its layers ------------------------------------------
def chain_file(path, n, reverse=False):
    """A Functional of ``n`` chained Activation layers, written by hand (listed in reverse order on request)."""
    layers = [{"class_name": "Activation", "config": {"name": f"a{i}", "activation": "relu"},
               "inbound_nodes": [{"args": [keras_tensor(f"a{i - 1}" if i else "in0")], "kwargs": {}}]}
              for i in range(n)]
    layers = [{"class_name": "InputLayer", "config": {"name": "in0", "batch_shape": [None, 3]}, "inbound_nodes": []}
              ] + (layers[::-1] if reverse else layers)
    config = {"class_name": "Functional", "config": {"name": "chain", "layers": layers,
                                                     "input_layers": [["in0", 0, 0]],
                                                     "output_layers": [[f"a{n - 1}", 0, 0]]}}
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_group("layers")
        f.create_group("vars")
    return write_zip(path, {"metadata.json": json.dumps({"keras_version": "3.15.1"}),
                            "config.json": json.dumps(config), "model.weights.h5": buf.getvalue()})


def test_functional_config_lookups_grow_linearly(tmp_path, monkeypatch):
    """Every read of config.json's objects is counted: a name list rebuilt per input makes n² of them."""
    reads = [0]

    class Counting(dict):
        def get(self, *args):
            reads[0] += 1
            return super().get(*args)

        def __getitem__(self, key):
            reads[0] += 1
            return super().__getitem__(key)

    class Json:
        JSONDecodeError = json.JSONDecodeError
        dumps = staticmethod(json.dumps)

        @staticmethod
        def loads(text):
            return json.loads(text, object_hook=Counting)

    monkeypatch.setattr(keras_format, "json", Json)
    n = 2000
    model = glassnet.load_model(chain_file(tmp_path / "chain.keras", n))
    assert len(model.layers) == n + 1
    assert reads[0] < 50 * n, f"{reads[0]} reads of config objects for {n} layers: quadratic"


class _TookTooLong(Exception):
    pass


def test_functional_config_in_any_order_loads_in_linear_time(tmp_path):
    """10,000 layers listed outputs-first: one pass per layer over all the others would take minutes."""
    path = chain_file(tmp_path / "reversed.keras", 10_000, reverse=True)

    def alarm(signum, frame):
        raise _TookTooLong()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(30)  # linear takes about a second; quadratic about 100 s
    try:
        model = glassnet.load_model(path)
    except _TookTooLong:
        pytest.fail("loading 10,000 layers listed in reverse order took over 30 s: quadratic")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert len(model.layers) == 10_001
    np.testing.assert_array_equal(model.predict(x_in((2, 3)), verbose=0), np.maximum(x_in((2, 3)), 0))


# --- 5. NaN / Inf weights are refused, as in .glassnet files -------------------------------------------------
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_weights_are_refused_with_a_reason(tmp_path, sequential_file, value):
    _, path = sequential_file

    def edit(f):
        data = f["layers/dense/vars/0"][()]
        data[1, 2] = value
        f["layers/dense/vars/0"][...] = data
    with pytest.raises(ValueError, match=r"layers/dense/vars/0 \(weight 'dense/kernel' of layer 'dense'\) contains "
                                         r"NaN or Inf.*diverged"):
        glassnet.load_model(edit_h5(path, tmp_path / "nan.keras", edit), compile=False)


def test_nan_optimizer_state_is_refused_with_a_reason(tmp_path, sequential_file):
    _, path = sequential_file

    def edit(f):
        data = f["optimizer/vars/2"][()]
        data[...] = np.nan
        f["optimizer/vars/2"][...] = data
    bad = edit_h5(path, tmp_path / "nan.keras", edit)
    with pytest.raises(ValueError, match=r"optimizer state optimizer/vars/2 .*NaN or Inf.*compile=False"):
        glassnet.load_model(bad)
    assert glassnet.load_model(bad, compile=False).built


# --- 6. Normalization: unadapted stays unadapted ---------------------------------------------------------------
def test_unadapted_normalization_stays_unadapted(tmp_path):
    model = glassnet.Sequential([Input((4,)), Normalization(), Dense(2)])
    with pytest.raises(ValueError, match="has no statistics yet"):
        model.predict(x_in(), verbose=0)
    path = tmp_path / "norm.keras"
    model.save(path)
    loaded = glassnet.load_model(path)
    with pytest.raises(ValueError, match="has no statistics yet"):
        loaded.predict(x_in(), verbose=0)
    loaded.layers[0].adapt(x_in((20, 4), seed=3))
    model.layers[0].adapt(x_in((20, 4), seed=3))
    np.testing.assert_allclose(loaded.predict(x_in(), verbose=0), model.predict(x_in(), verbose=0), rtol=1e-6)
    # an adapted layer still comes back adapted
    adapted = tmp_path / "adapted.keras"
    model.save(adapted)
    np.testing.assert_allclose(glassnet.load_model(adapted).predict(x_in(), verbose=0),
                               model.predict(x_in(), verbose=0), rtol=1e-6)


def test_unadapted_normalization_file_still_opens_in_keras_and_keras_files_load_as_keras_reads_them(tmp_path):
    keras = pytest.importorskip("keras")
    model = glassnet.Sequential([Input((4,)), Normalization(), Dense(2)])
    path = tmp_path / "norm.keras"
    model.save(path)
    assert glassnet.load_model(path).layers[0].adapted is False
    theirs = keras.saving.load_model(path)  # Keras ignores glassnet's mark; its layer holds zeros and ones
    np.testing.assert_allclose(theirs.predict(x_in(), verbose=0), x_in() @ model.layers[1].kernel.numpy(),
                               rtol=1e-5, atol=1e-6)
    # Keras keeps no mark: a layer in a file Keras wrote normalizes with what it holds, as in Keras
    kmodel = keras.Sequential([keras.Input((4,)), keras.layers.Normalization(), keras.layers.Dense(2)])
    kpath = tmp_path / "keras.keras"
    kmodel.save(kpath)
    ours = glassnet.load_model(kpath)
    np.testing.assert_allclose(ours.predict(x_in(), verbose=0), kmodel.predict(x_in(), verbose=0), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("value", [np.int8(7), np.float64(0.0), np.array([0, 0], np.int8), np.bytes_(b"no")])
def test_hostile_adapted_mark_is_refused(tmp_path, value):
    model = glassnet.Sequential([Input((4,)), Normalization(), Dense(2)])
    path = tmp_path / "norm.keras"
    model.save(path)

    def edit(f):
        f["layers/normalization/vars"].attrs["glassnet_adapted"] = value
    with pytest.raises(ValueError, match=r"layers/normalization/vars attribute 'glassnet_adapted' must be 0 or 1"):
        glassnet.load_model(edit_h5(path, tmp_path / "bad.keras", edit))
