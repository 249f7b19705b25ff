"""Bad input fails early with a built-in exception type and a message that names the problem.

DESIGN.md ("Errors"): a message says what was wrong, where, what was expected, what was got, and
how to fix it. Hostile or corrupt files are refused without importing or executing anything.
"""
import io
import json
import os
import struct
import sys
import zipfile

import numpy as np
import pytest

from glassnet import Input, Sequential, load_model
from glassnet.layers import Dense, Dropout, Normalization
from glassnet.losses import Loss, MeanSquaredError
from glassnet.optimizers import SGD, Adam
from glassnet.saving import safetensors


# --- helpers -----------------------------------------------------------------------------------------
def make_model(compile=True):
    model = Sequential([Input((8,)), Dense(10, activation="relu"), Dense(1, activation="sigmoid")])
    if compile:
        model.compile(loss="mse", optimizer=SGD(learning_rate=0.01), metrics=["accuracy"])
    return model


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (rng.random(64) > 0.5).astype(np.float32)
    return x, y


def assert_unchanged(model, before):
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def zip_bytes(members, compression=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buf.getvalue()


def safetensors_bytes(header, data=b""):
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.fixture
def saved(tmp_path, data):
    """A trained model saved to disk, and the members of its archive."""
    x, y = data
    model = make_model()
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "good.glassnet"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    return path, members


# --- the shape and type of x and y ----------------------------------------------------------------------
@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
def test_wrong_number_of_columns_names_shapes_and_hints_columns(data, method):
    x, y = data
    model = make_model()
    before = model.get_weights()
    args = (x[:, :7],) if method == "predict" else (x[:, :7], y)
    with pytest.raises(ValueError) as err:
        getattr(model, method)(*args, verbose=0)
    msg = str(err.value)
    assert "(None, 8)" in msg and "(64, 7)" in msg
    assert "columns" in msg
    assert "sequential" in msg
    assert_unchanged(model, before)


def test_wrong_columns_on_a_model_built_by_input_dim(data):
    x, y = data
    model = Sequential([Dense(10, input_dim=8, activation="relu"), Dense(1)])
    model.compile(loss="mse", optimizer="sgd")
    with pytest.raises(ValueError, match=r"Check the columns of x"):
        model.fit(x[:, :7], y, verbose=0)


def test_one_dimensional_x(data):
    x, y = data
    model = make_model()
    with pytest.raises(ValueError) as err:
        model.fit(x[:, 0], y, verbose=0)
    msg = str(err.value)
    assert "1-D" in msg and "reshape" in msg
    with pytest.raises(ValueError, match="reshape"):
        model.predict(x[0], verbose=0)


def test_string_data(data):
    x, y = data
    model = make_model()
    with pytest.raises(TypeError, match="non-numeric") as err:
        model.fit(x.astype(str), y, verbose=0)
    assert "`x`" in str(err.value) and "astype" in str(err.value)
    with pytest.raises(TypeError, match="non-numeric") as err:
        model.fit(x, np.where(y > 0, "yes", "no"), verbose=0)
    assert "`y`" in str(err.value)
    with pytest.raises(TypeError, match="non-numeric"):
        model.predict([["1.0"] * 8], verbose=0)


def test_object_and_ragged_data(data):
    x, y = data
    model = make_model()
    ragged = [[1.0] * 8, [1.0] * 7]
    with pytest.raises(ValueError, match="same length"):
        model.predict(ragged, verbose=0)
    with pytest.raises(ValueError, match="same length"):
        model.fit(ragged, [0, 1], verbose=0)
    objects = np.array([[1.0] * 7 + [None]] * 4, dtype=object)
    with pytest.raises(TypeError, match="non-numeric"):
        model.fit(objects, y[:4], verbose=0)
    with pytest.raises(ValueError, match="None"):
        model.fit(None, y, verbose=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_in_x(data, bad):
    x, y = data
    x = x.copy()
    x[5, 3] = bad
    model = make_model()
    before = model.get_weights()
    for call in (lambda: model.fit(x, y, verbose=0), lambda: model.evaluate(x, y, verbose=0),
                 lambda: model.predict(x, verbose=0)):
        with pytest.raises(ValueError) as err:
            call()
        msg = str(err.value)
        assert "`x`" in msg and "NaN/Inf" in msg and "(5, 3)" in msg
    assert_unchanged(model, before)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_in_y(data, bad):
    x, y = data
    y = y.copy()
    y[-1] = bad                       # in the rows validation_split would take, checked all the same
    model = make_model()
    before = model.get_weights()
    with pytest.raises(ValueError) as err:
        model.fit(x, y, validation_split=0.25, verbose=0)
    assert "`y`" in str(err.value) and "NaN/Inf" in str(err.value) and "(63,)" in str(err.value)
    with pytest.raises(ValueError, match="NaN/Inf"):
        model.evaluate(x, y, verbose=0)
    assert_unchanged(model, before)


def test_x_y_length_mismatch(data):
    x, y = data
    model = make_model()
    with pytest.raises(ValueError) as err:
        model.fit(x, y[:-1], verbose=0)
    msg = str(err.value)
    assert "64" in msg and "63" in msg and "same number of rows" in msg
    with pytest.raises(ValueError, match="63"):
        model.evaluate(x, y[:-1], verbose=0)
    with pytest.raises(ValueError, match="sample_weight"):
        model.fit(x, y, sample_weight=np.ones(10), verbose=0)
    with pytest.raises(ValueError, match="63"):
        model.fit(x, y, validation_data=(x, y[:-1]), verbose=0)


def test_empty_x(data):
    _, y = data
    model = make_model()
    with pytest.raises(ValueError, match="empty"):
        model.fit(np.zeros((0, 8), np.float32), np.zeros(0, np.float32), verbose=0)
    with pytest.raises(ValueError, match="empty"):
        model.predict(np.zeros((0, 8), np.float32), verbose=0)


def test_negative_sample_weight(data):
    x, y = data
    model = make_model()
    w = np.ones(len(x))
    w[3] = -1
    with pytest.raises(ValueError, match="negative"):
        model.fit(x, y, sample_weight=w, verbose=0)
    with pytest.raises(ValueError, match="negative"):
        model.evaluate(x, y, sample_weight=w, verbose=0)


# --- unknown names ----------------------------------------------------------------------------------
def test_unknown_loss_lists_known_names():
    model = make_model(compile=False)
    with pytest.raises(ValueError) as err:
        model.compile(loss="mean_squared_eror", optimizer="sgd")
    msg = str(err.value)
    assert "'mean_squared_eror'" in msg and "mse" in msg and "binary_crossentropy" in msg


def test_unknown_optimizer_lists_known_names():
    model = make_model(compile=False)
    with pytest.raises(ValueError) as err:
        model.compile(loss="mse", optimizer="adamm")
    msg = str(err.value)
    assert "'adamm'" in msg and "adam" in msg.replace("'adamm'", "") and "sgd" in msg and "rmsprop" in msg


def test_unknown_activation_lists_known_names():
    with pytest.raises(ValueError) as err:
        Dense(3, activation="relux")
    msg = str(err.value)
    assert "'relux'" in msg and "relu," in msg and "sigmoid" in msg and "softmax" in msg


def test_unknown_metric_lists_known_names(data):
    x, y = data
    model = make_model(compile=False)
    with pytest.raises(ValueError) as err:
        model.compile(loss="mse", optimizer="sgd", metrics=["acuracy"])
        model.fit(x, y, verbose=0)
    msg = str(err.value)
    assert "'acuracy'" in msg and "accuracy" in msg.replace("'acuracy'", "") and "precision" in msg


def test_unknown_initializer_lists_known_names():
    with pytest.raises(ValueError) as err:
        Dense(3, kernel_initializer="glorot")
    msg = str(err.value)
    assert "'glorot'" in msg and "glorot_uniform" in msg and "zeros" in msg


# --- compile ---------------------------------------------------------------------------------------
def test_fit_and_evaluate_before_compile(data):
    x, y = data
    model = make_model(compile=False)
    for call in (lambda: model.fit(x, y, verbose=0), lambda: model.evaluate(x, y, verbose=0),
                 lambda: model.train_on_batch(x, y)):
        with pytest.raises((RuntimeError, ValueError), match=r"compile\(\)"):
            call()
    assert model.predict(x, verbose=0).shape == (64, 1)     # predicting needs no compile


def test_compile_without_loss_then_fit(data):
    x, y = data
    model = make_model(compile=False)
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="loss") as err:
        model.fit(x, y, verbose=0)
    assert "loss='mse'" in str(err.value) or "compile" in str(err.value)


def test_plain_function_as_loss_explains_the_gradient():
    def my_loss(y_true, y_pred):
        return ((y_true - y_pred) ** 2).mean(axis=-1)

    model = make_model(compile=False)
    with pytest.raises(TypeError) as err:
        model.compile(loss=my_loss, optimizer="sgd")
    msg = str(err.value)
    assert "my_loss" in msg and "differentiate" in msg and "grad()" in msg and "Loss" in msg


def test_plain_function_as_activation_explains_the_gradient():
    with pytest.raises(TypeError) as err:
        Dense(3, activation=lambda x: x * 2)
    msg = str(err.value)
    assert "differentiate" in msg and "grad" in msg and "Activation" in msg


def test_loss_reduction_auto_is_rejected():
    with pytest.raises(ValueError) as err:
        Loss(reduction="auto")
    msg = str(err.value)
    assert "`reduction`" in msg and "auto" in msg and "sum_over_batch_size" in msg
    with pytest.raises(ValueError, match="reduction"):
        MeanSquaredError(reduction="auto")
    with pytest.raises(ValueError, match="reduction"):
        MeanSquaredError(reduction="average")


@pytest.mark.parametrize("kwargs", [dict(clipnorm=1.0, clipvalue=0.5), dict(clipnorm=1.0, global_clipnorm=1.0),
                                    dict(clipvalue=1.0, global_clipnorm=1.0)])
def test_optimizer_with_two_clip_options(kwargs):
    for cls in (SGD, Adam):
        with pytest.raises(ValueError) as err:
            cls(**kwargs)
        assert "Only one of" in str(err.value) and "clipnorm" in str(err.value)


def test_optimizer_unknown_argument():
    with pytest.raises(ValueError, match="not recognized"):
        SGD(learning_rate=0.1, nesterow=True)
    with pytest.raises(ValueError, match="momentum"):
        SGD(momentum=1.5)


# --- layers ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("units", [0, -3, 2.5, "10", None])
def test_dense_units_must_be_a_positive_integer(units):
    with pytest.raises((ValueError, TypeError)) as err:
        Dense(units=units)
    assert "units" in str(err.value) and "positive integer" in str(err.value)


def test_dense_unknown_keyword():
    with pytest.raises(ValueError) as err:
        Dense(10, kernel_initialiser="zeros")
    assert str(err.value) == "Unrecognized keyword arguments passed to Dense: {'kernel_initialiser': 'zeros'}"


@pytest.mark.parametrize("rate", [1.5, -0.1])
def test_dropout_rate_out_of_range(rate):
    with pytest.raises(ValueError) as err:
        Dropout(rate=rate)
    assert "rate" in str(err.value) and str(rate) in str(err.value)


def test_input_only_first():
    model = Sequential([Dense(3, input_dim=4)])
    with pytest.raises(ValueError, match="first layer"):
        model.add(Input((4,)))
    with pytest.raises(TypeError, match="layer"):
        model.add("dense")


def test_normalization_used_before_adapt(data):
    x, y = data
    model = Sequential([Input((8,)), Normalization(), Dense(1)])
    model.compile(loss="mse", optimizer="sgd")
    for call in (lambda: model.predict(x, verbose=0), lambda: model.fit(x, y, verbose=0)):
        with pytest.raises(ValueError) as err:
            call()
        assert "adapt" in str(err.value) and "normalization" in str(err.value)


def test_set_weights_wrong_count_and_shape():
    model = make_model()
    weights = model.get_weights()
    with pytest.raises(ValueError) as err:
        model.set_weights(weights[:3])
    assert "4" in str(err.value) and "3" in str(err.value) and "get_weights()" in str(err.value)
    bad = list(weights)
    bad[0] = np.zeros((7, 10), np.float32)
    with pytest.raises(ValueError) as err:
        model.set_weights(bad)
    msg = str(err.value)
    assert "(8, 10)" in msg and "(7, 10)" in msg and "dense/kernel" in msg
    assert_unchanged(model, weights)          # nothing was half-assigned
    with pytest.raises(ValueError, match="weights"):
        model.layers[0].set_weights(weights)


# --- fit arguments ---------------------------------------------------------------------------------
@pytest.mark.parametrize("split", [1.5, 1.0, -0.2])
def test_validation_split_out_of_range(data, split):
    x, y = data
    model = make_model()
    with pytest.raises(ValueError) as err:
        model.fit(x, y, validation_split=split, verbose=0)
    assert "validation_split" in str(err.value) and str(split) in str(err.value)


def test_validation_split_leaving_an_empty_part(data):
    x, y = data
    model = make_model()
    with pytest.raises(ValueError, match="empty"):           # floor(1 * 0.5) = 0 training rows
        model.fit(x[:1], y[:1], validation_split=0.5, verbose=0)
    with pytest.raises(ValueError, match="empty"):           # floor(10 * (1 - 1e-17)) = 10: no validation rows
        model.fit(x[:10], y[:10], validation_split=1e-17, verbose=0)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, "32"])
def test_batch_size_must_be_positive_integer(data, batch_size):
    x, y = data
    model = make_model()
    for call in (lambda: model.fit(x, y, batch_size=batch_size, verbose=0),
                 lambda: model.evaluate(x, y, batch_size=batch_size, verbose=0),
                 lambda: model.predict(x, batch_size=batch_size, verbose=0)):
        with pytest.raises(ValueError) as err:
            call()
        assert "batch_size" in str(err.value) and "positive integer" in str(err.value)


def test_class_weight_missing_a_class_weighs_it_1(data):
    """As Keras 3 (Keras 2 refused): a class the dict does not name weighs 1.0, so {1: 3.0} equals {0: 1.0, 1: 3.0}."""
    from glassnet.utils.data import class_weight_to_sample_weight
    x, y = data
    np.testing.assert_array_equal(class_weight_to_sample_weight(y, {1: 3.0}),
                                  class_weight_to_sample_weight(y, {0: 1.0, 1: 3.0}))
    np.testing.assert_array_equal(class_weight_to_sample_weight(np.eye(3)[[0, 2, 1, 2]], {2: 0.5}), [1, 0.5, 1, 0.5])
    weights = []
    for class_weight in ({1: 3.0}, {0: 1.0, 1: 3.0}):
        from glassnet import set_random_seed
        set_random_seed(0)
        model = make_model()
        model.fit(x, y, class_weight=class_weight, epochs=2, shuffle=False, verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_class_weight_and_sample_weight_together(data):
    x, y = data
    model = make_model()
    with pytest.raises(ValueError) as err:
        model.fit(x, y, class_weight={0: 1.0, 1: 2.0}, sample_weight=np.ones(len(x)), verbose=0)
    assert "class_weight" in str(err.value) and "sample_weight" in str(err.value)


def test_unknown_fit_argument_and_bad_verbose(data):
    x, y = data
    model = make_model()
    with pytest.raises(TypeError, match="validation_splt"):
        model.fit(x, y, validation_splt=0.2)
    with pytest.raises(ValueError, match="verbose"):
        model.fit(x, y, verbose=3)
    with pytest.raises(ValueError, match="shuffle"):
        model.fit(x, y, shuffle="yes", verbose=0)
    with pytest.raises(ValueError, match="validation_data"):
        model.fit(x, y, validation_data=x, verbose=0)


# --- saving: wrong names ---------------------------------------------------------------------------
def test_save_and_save_weights_check_the_extension(tmp_path):
    model = make_model()
    with pytest.raises(ValueError, match=r"\.glassnet"):
        model.save(tmp_path / "m.h5")
    with pytest.raises(ValueError, match=r"\.weights\.safetensors"):
        model.save_weights(tmp_path / "w.h5")
    assert list(tmp_path.iterdir()) == []


# --- hostile and corrupt model files -------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0, 10, 0.5, -1])
def test_load_model_truncated_file(saved, tmp_path, keep):
    path, _ = saved
    raw = path.read_bytes()
    n = keep if isinstance(keep, int) and keep >= 0 else (int(len(raw) * keep) if keep > 0 else len(raw) + keep)
    bad = tmp_path / "truncated.glassnet"
    bad.write_bytes(raw[:n])
    with pytest.raises(ValueError) as err:
        load_model(bad)
    assert "truncated.glassnet" in str(err.value)


def test_load_model_not_a_zip(tmp_path):
    bad = tmp_path / "text.glassnet"
    bad.write_bytes(b"this is not a model\n" * 50)
    with pytest.raises(ValueError, match="not a glassnet model file"):
        load_model(bad)
    st = tmp_path / "weights.glassnet"
    st.write_bytes(safetensors.dumps({"a": np.zeros(3, np.float32)}))
    with pytest.raises(ValueError, match="not a glassnet model file"):
        load_model(st)


def test_load_model_corrupt_member_data(saved, tmp_path):
    """A flipped byte inside a stored member (CRC mismatch) is a ValueError too, not zipfile.BadZipFile."""
    path, _ = saved
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("model.weights.safetensors")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + info.file_size - 3] ^= 0xFF       # inside the tensor bytes
    bad = tmp_path / "crc.glassnet"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError):
        load_model(bad)


@pytest.mark.parametrize("evil_name", ["../evil", "../../evil.py", "/tmp/glassnet_evil_abs", "assets/../../evil"])
def test_load_model_extra_member_with_path_traversal_name(saved, tmp_path, evil_name, monkeypatch):
    _, members = saved
    work = tmp_path / "deep" / "deeper"
    work.mkdir(parents=True)
    bad = work / "evil.glassnet"
    bad.write_bytes(zip_bytes({**members, evil_name: b"import os; os.system('echo pwned')"}))
    with zipfile.ZipFile(bad) as zf:
        assert evil_name in zf.namelist()          # the hostile name really is in the archive
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    monkeypatch.chdir(work)
    with pytest.raises(ValueError) as err:
        load_model(bad)
    assert "unsafe member names" in str(err.value) and evil_name in str(err.value)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert not os.path.exists("/tmp/glassnet_evil_abs")


def test_load_model_missing_member_and_bad_json(saved, tmp_path):
    _, members = saved
    cases = {
        "no_weights": {"config.json": members["config.json"]},
        "no_config": {"model.weights.safetensors": members["model.weights.safetensors"]},
        "bad_json": {**members, "config.json": b"{not json"},
        "deep_json": {**members, "config.json": b"[" * 200000},
        "not_glassnet": {**members, "config.json": json.dumps({"format": "keras"}).encode()},
        "json_list": {**members, "config.json": b"[1, 2, 3]"},
    }
    for name, content in cases.items():
        bad = tmp_path / f"{name}.glassnet"
        bad.write_bytes(zip_bytes(content))
        with pytest.raises(ValueError) as err:
            load_model(bad)
        assert f"{name}.glassnet" in str(err.value), name


def _broken_configs(config):
    return {
        "no_model": {k: v for k, v in config.items() if k != "model"},
        "model_is_a_string": {**config, "model": "Sequential"},
        "model_config_is_a_number": {**config, "model": {"class_name": "Sequential", "config": 5}},
        "compile_is_a_string": {**config, "compile": "sgd"},
        "optimizer_is_a_bare_name": {**config, "compile": {**config["compile"], "optimizer": "SGD"}},
    }


@pytest.mark.parametrize("case", list(_broken_configs({"model": {}, "compile": {}})))
def test_load_model_malformed_config_is_a_value_error_naming_the_file(saved, tmp_path, case):
    """format=glassnet but a missing or mistyped entry: ValueError naming the file, not KeyError/TypeError."""
    _, members = saved
    broken = _broken_configs(json.loads(members["config.json"]))[case]
    bad = tmp_path / f"{case}.glassnet"
    bad.write_bytes(zip_bytes({**members, "config.json": json.dumps(broken).encode()}))
    with pytest.raises(ValueError) as err:
        load_model(bad)
    assert f"{case}.glassnet" in str(err.value)


def test_load_model_absurd_architecture_is_refused_before_allocating(saved, tmp_path):
    """A 1 KB config must not make the loader allocate (or try to) terabytes of weights."""
    _, members = saved
    config = json.loads(members["config.json"])
    config["model"]["config"]["layers"][1]["config"]["units"] = 10 ** 15    # 64 PB: beyond any address space
    bad = tmp_path / "huge.glassnet"
    bad.write_bytes(zip_bytes({**members, "config.json": json.dumps(config).encode()}))
    with pytest.raises(ValueError) as err:
        load_model(bad)
    assert "huge.glassnet" in str(err.value)


def test_load_model_oversized_member_is_refused_before_reading(saved, tmp_path):
    _, members = saved
    bomb = b" " * (16 * 1024 * 1024 + 1)          # compresses to a few KB, declares 16 MiB + 1
    bad = tmp_path / "bomb.glassnet"
    bad.write_bytes(zip_bytes({**members, "config.json": bomb}, compression=zipfile.ZIP_DEFLATED))
    assert bad.stat().st_size < 1024 * 1024
    with pytest.raises(ValueError, match="limit"):
        load_model(bad)


def test_unknown_layer_class_is_refused_without_importing_anything(saved, tmp_path, monkeypatch):
    _, members = saved
    marker = tmp_path / "executed.txt"
    (tmp_path / "glassnet_evil_probe.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n"
                                                     "class Payload:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = json.loads(members["config.json"])
    layer = {"module": "glassnet_evil_probe", "class_name": "Payload", "config": {"name": "payload"},
             "registered_name": "glassnet_evil_probe>Payload"}
    config["model"]["config"]["layers"].append(layer)
    variants = {
        "layer": config,
        "top": {**config, "model": {"module": "glassnet_evil_probe", "class_name": "Payload", "config": {}}},
        "dotted": {**config, "model": {"class_name": "glassnet_evil_probe.Payload", "config": {}}},
        "builtin": {**config, "model": {"module": "builtins", "class_name": "eval", "config": "1"}},
        "lambda": {**config, "model": {"class_name": "Sequential", "config": {"layers": [
            {"class_name": "Lambda", "config": {"function": {"class_name": "__lambda__",
                                                             "config": {"code": "YQ=="}}}}]}}},
    }
    for name, cfg in variants.items():
        bad = tmp_path / f"{name}.glassnet"
        bad.write_bytes(zip_bytes({**members, "config.json": json.dumps(cfg).encode()}))
        with pytest.raises(ValueError) as err:
            load_model(bad)
        msg = str(err.value)
        if name == "builtin":  # its config is not even an object: refused before any name lookup
            assert "config.json is malformed" in msg, msg
        else:
            assert "Unknown layer" in msg and "Dense" in msg, (name, msg)
    assert "glassnet_evil_probe" not in sys.modules
    assert not marker.exists()


def test_load_model_architecture_and_weights_disagree(saved, tmp_path):
    _, members = saved
    config = json.loads(members["config.json"])
    config["model"]["config"]["layers"][1]["config"]["units"] = 9       # Dense(10) -> Dense(9)
    bad = tmp_path / "mismatch.glassnet"
    bad.write_bytes(zip_bytes({**members, "config.json": json.dumps(config).encode()}))
    with pytest.raises(ValueError) as err:
        load_model(bad)
    msg = str(err.value)
    assert "shape" in msg and "(8, 10)" in msg and "(8, 9)" in msg
    # a bigger architecture than the weights is refused before its weights are even allocated
    config["model"]["config"]["layers"][1]["config"]["units"] = 11
    bad.write_bytes(zip_bytes({**members, "config.json": json.dumps(config).encode()}))
    with pytest.raises(ValueError, match="the config and the weights disagree"):
        load_model(bad)


# --- hostile and corrupt weight files --------------------------------------------------------------
def _weights_file(tmp_path, raw, name="w.weights.safetensors"):
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def test_load_weights_truncated(tmp_path):
    model = make_model()
    model.save_weights(tmp_path / "good.weights.safetensors")
    raw = (tmp_path / "good.weights.safetensors").read_bytes()
    for n in (0, 5, 8, 20, len(raw) - 4):
        with pytest.raises(ValueError) as err:
            make_model().load_weights(_weights_file(tmp_path, raw[:n]))
        assert "w.weights.safetensors" in str(err.value)


def test_load_weights_huge_header_length(tmp_path):
    before = make_model()
    weights = before.get_weights()
    for n in (2 ** 63, 2 ** 40, 17 * 1024 * 1024):
        path = _weights_file(tmp_path, struct.pack("<Q", n) + b"{}" + b"\0" * 64)
        with pytest.raises(ValueError) as err:
            before.load_weights(path)
        assert "header" in str(err.value) and str(n) in str(err.value)
    assert_unchanged(before, weights)


def test_load_weights_header_is_not_json_or_not_an_object(tmp_path):
    model = make_model()
    for header in (b"\xff\xfe garbage", b"[1, 2]", b'{"a": 1}', b'{"a": {"dtype": "F32"}}'):
        path = _weights_file(tmp_path, struct.pack("<Q", len(header)) + header)
        with pytest.raises(ValueError):
            model.load_weights(path)


K = "dense/kernel"


@pytest.mark.parametrize("entry, data, fragment", [
    ({"dtype": "F32", "shape": [8, 10], "data_offsets": [0, 320]}, b"\0" * 100, K),        # past the end
    ({"dtype": "F32", "shape": [8, 10], "data_offsets": [0, 100]}, b"\0" * 320, K),        # size != shape
    ({"dtype": "F32", "shape": [8, 10], "data_offsets": [-4, 316]}, b"\0" * 320, K),       # negative start
    ({"dtype": "F32", "shape": [8, 10], "data_offsets": [320, 0]}, b"\0" * 320, K),        # end before start
    ({"dtype": "F32", "shape": [8, 10], "data_offsets": [0, 320]}, b"\0" * 400, "trailing"),
    ({"dtype": "F32", "shape": [-8, -10], "data_offsets": [0, 320]}, b"\0" * 320, K),      # negative dims
    ({"dtype": "F32", "shape": [8.0, 10], "data_offsets": [0, 320]}, b"\0" * 320, K),      # float dims
    ({"dtype": "PICKLE", "shape": [8, 10], "data_offsets": [0, 320]}, b"\0" * 320, K),     # unknown dtype
    ({"dtype": "F32", "shape": [8, 10], "data_offsets": [0, 320], "code": "x"}, b"\0" * 320, K),  # extra key
    ({"dtype": "F32", "shape": [2 ** 40, 2 ** 40], "data_offsets": [0, 320]}, b"\0" * 320, K),  # absurd size
])
def test_load_weights_offsets_that_lie_and_malformed_entries(tmp_path, entry, data, fragment):
    path = _weights_file(tmp_path, safetensors_bytes({"0000:dense/kernel": entry}, data))
    with pytest.raises(ValueError) as err:
        make_model().load_weights(path)
    assert fragment in str(err.value)


def test_load_weights_overlapping_tensors(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
              "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}
    path = _weights_file(tmp_path, safetensors_bytes(header, b"\0" * 24))
    with pytest.raises(ValueError, match="overlapping"):
        make_model().load_weights(path)


def test_load_weights_shape_dtype_and_count_mismatch(tmp_path):
    model = make_model()
    good = model.get_weights()
    names = [f"{i:04d}:{w.path}" for i, w in enumerate(model.weights)]

    def write(arrays, name):
        return _weights_file(tmp_path, safetensors.dumps(dict(zip(names, arrays))), name)

    wrong_shape = [np.zeros((8, 11), np.float32)] + good[1:]
    with pytest.raises(ValueError) as err:
        model.load_weights(write(wrong_shape, "shape.weights.safetensors"))
    assert "(8, 11)" in str(err.value) and "(8, 10)" in str(err.value)

    wrong_dtype = [good[0].astype(np.float64)] + good[1:]
    with pytest.raises(ValueError) as err:
        model.load_weights(write(wrong_dtype, "dtype.weights.safetensors"))
    assert "float64" in str(err.value) and "float32" in str(err.value)

    int_weights = [np.zeros((8, 10), np.int32)] + good[1:]
    with pytest.raises(ValueError, match="int32"):
        model.load_weights(write(int_weights, "int.weights.safetensors"))

    with pytest.raises(ValueError) as err:
        model.load_weights(write(good[:3], "count.weights.safetensors"))
    assert "3" in str(err.value) and "4" in str(err.value)
    assert_unchanged(model, good)             # no failed load assigned anything


def test_load_weights_from_a_corrupt_glassnet_file(tmp_path):
    """load_weights('x.glassnet') on a non-zip or truncated archive raises ValueError, like load_model."""
    model = make_model()
    model.save(tmp_path / "good.glassnet")
    raw = (tmp_path / "good.glassnet").read_bytes()
    for name, content in (("junk.glassnet", b"junk" * 100), ("cut.glassnet", raw[: len(raw) // 2])):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError):
            make_model().load_weights(path)


def test_load_weights_into_an_unbuilt_model(tmp_path):
    make_model().save_weights(tmp_path / "w.weights.safetensors")
    model = Sequential([Dense(10), Dense(1)])
    with pytest.raises(ValueError, match="[Bb]uild"):
        model.load_weights(tmp_path / "w.weights.safetensors")
