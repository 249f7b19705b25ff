"""Keras 3 `.keras` interchange, checked against the real Keras: files glassnet writes load in Keras with the
same predictions, compile settings and optimizer state; files Keras writes load in glassnet; hostile files
are refused with a clear message and nothing in them runs."""
import base64
import io
import json
import marshal
import os
import struct
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

os.environ["KERAS_BACKEND"] = "numpy"  # before keras is imported: no JAX/TF needed
h5py = pytest.importorskip("h5py")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from archive_util import members, rewrite_h5, write_zip  # noqa: E402
keras = pytest.importorskip("keras")

import glassnet  # noqa: E402
from glassnet import optimizers as gopt  # noqa: E402
from glassnet.layers import Activation, Dense, Dropout, Flatten, Input, Normalization, Reshape  # noqa: E402

# Keras 3.15 on NumPy 2 warns about __array__(copy=...) on every variable read; it is noise here.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
ACTIVATIONS = ["relu", "sigmoid", "tanh", "softmax", "linear", "elu", "selu", "softplus", "softsign", "leaky_relu",
               "gelu", "silu", "hard_sigmoid", "exponential"]
# glassnet slot name -> the suffix of Keras's optimizer variable name for the same state
KERAS_SLOT_SUFFIX = {"m": "momentum", "v": "velocity", "v_hat": "velocity_hat", "momentum": "momentum",
                     "velocity": "velocity", "average_gradient": "average_gradient", "accumulator": "accumulator",
                     "accumulated_grad": "accumulated_grad", "accumulated_delta": "accumulated_delta_var",
                     "u": "norm"}


def rng(seed=0):
    return np.random.default_rng(seed)


def h5_layout(data):
    out = {}

    def visit(name, obj):
        out[name] = (obj.shape, obj.dtype.name) if isinstance(obj, h5py.Dataset) else dict(obj.attrs)

    with h5py.File(io.BytesIO(data), "r") as f:
        f.visititems(visit)
    return out


def keras_weights(model):
    return [np.asarray(v.numpy()) for v in model.weights]


def keras_state(opt):
    return {v.path.split("/")[-1]: np.asarray(v.numpy()) for v in opt.variables}


# --- a small MLP trained by hand on the Keras side (the numpy backend has no fit) ------------------------
def mlp_grads(k1, b1, k2, b2, x, y):
    """Gradients of mean((tanh(x·k1 + b1)·k2 + b2 − y)²) for Keras's [kernel, bias, kernel_1, bias_1]."""
    h = np.tanh(x @ k1 + b1)
    dp = 2 * (h @ k2 + b2 - y) / y.size
    dh = dp @ k2.T * (1 - h * h)
    return [(x.T @ dh).astype(np.float32), dh.sum(0).astype(np.float32), (h.T @ dp).astype(np.float32),
            dp.sum(0).astype(np.float32)]


def keras_step(model, x, y):
    params = [np.asarray(v.numpy()) for v in model.trainable_variables]
    model.optimizer.apply_gradients(zip(mlp_grads(*params, x, y), model.trainable_variables))


def batch(seed=0, n=16):
    r = rng(seed)
    return r.normal(size=(n, 4)).astype(np.float32), r.normal(size=(n, 1)).astype(np.float32)


def glassnet_mlp():
    return glassnet.Sequential([Input((4,)), Dense(5, activation="tanh"), Dense(1)])


# --- (a) glassnet -> .keras -> Keras -----------------------------------------------------------------------
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_every_layer_and_activation_predicts_the_same_in_keras(tmp_path, act):
    x = rng(1).normal(size=(8, 3, 4)).astype(np.float32)
    norm = Normalization()
    norm.adapt(x * 3 + 1)
    model = glassnet.Sequential([
        Input((3, 4)), norm, Flatten(), Dense(12, activation=act), Reshape((3, 4)), Activation(act), Flatten(),
        Dropout(0.25, noise_shape=(None, 12), seed=3),
        Dense(3, activation=act, kernel_initializer=glassnet.initializers.HeNormal(seed=1),
              kernel_regularizer=glassnet.regularizers.L1L2(0.01, 0.02), bias_constraint="max_norm",
              activity_regularizer="l2"),
        Normalization(mean=[0.5, 1.0, 2.0], variance=[1.0, 4.0, 9.0]), Normalization(invert=True)])
    model.layers[-1].adapt(rng(2).normal(size=(10, 3)))
    path = tmp_path / "m.keras"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        assert [i.filename for i in zf.infolist()] == ["metadata.json", "config.json", "model.weights.h5"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    loaded = keras.saving.load_model(path)
    assert [type(la).__name__ for la in loaded.layers] == [type(la).__name__ for la in model.layers]
    assert [la.name for la in loaded.layers] == [la.name for la in model.layers]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    dense = loaded.layers[7].get_config()
    assert dense["kernel_initializer"]["class_name"] == "HeNormal"
    assert dense["kernel_initializer"]["config"]["seed"] == 1
    assert dense["kernel_regularizer"]["config"] == {"l1": 0.01, "l2": 0.02}
    assert dense["bias_constraint"]["class_name"] == "MaxNorm"
    assert loaded.layers[7].activity_regularizer.get_config() == {"l2": 0.01}


def test_layout_matches_what_keras_itself_writes(tmp_path):
    x = rng(1).normal(size=(20, 3, 4)).astype(np.float32)
    norm = Normalization()
    norm.adapt(x)
    # h5 groups are named after the layer's class (dense, dense_1 ...), not after the layer's name
    model = glassnet.Sequential([Input((3, 4)), norm, Flatten(), Dense(6, activation="relu", name="hidden"),
                                 Dropout(0.5), Dense(6), Reshape((2, 3)), Flatten(), Activation("tanh"),
                                 Dense(1, name="out")])
    model.compile(optimizer=gopt.SGD(0.01, momentum=0.9, nesterov=True), loss="mse", metrics=["accuracy"])
    model.train_on_batch(x, rng(2).normal(size=(20, 1)).astype(np.float32))
    ours = tmp_path / "ours.keras"
    model.save(ours)
    theirs = tmp_path / "theirs.keras"
    keras.saving.load_model(ours).save(theirs)
    a, b = members(ours), members(theirs)
    layout = h5_layout(a["model.weights.h5"])
    assert layout == h5_layout(b["model.weights.h5"])
    assert layout["layers/dense_2/vars"] == {"name": "out"} and layout["layers/dense_2/vars/0"] == ((6, 1), "float32")
    assert layout["optimizer/vars/0"] == ((), "int32") and layout["optimizer/vars/1"] == ((), "float32")
    ca, cb = json.loads(a["config.json"]), json.loads(b["config.json"])
    assert ca.keys() == cb.keys() and ca["build_config"] == cb["build_config"]
    assert ca["compile_config"].keys() == cb["compile_config"].keys()
    assert ca["compile_config"]["optimizer"]["config"].keys() == cb["compile_config"]["optimizer"]["config"].keys()
    for la, lb in zip(ca["config"]["layers"], cb["config"]["layers"]):
        assert (la["module"], la["class_name"]) == (lb["module"], lb["class_name"])
        assert set(la["config"]) == set(lb["config"]), la["class_name"]
        assert la.get("build_config") == lb.get("build_config")
    assert json.loads(a["metadata.json"]).keys() == {"keras_version", "date_saved"}


def test_float64_model(tmp_path, float64):
    x = rng(3).normal(size=(6, 5))
    norm = Normalization()
    norm.adapt(x)
    model = glassnet.Sequential([Input((5,)), norm, Dense(7, activation="tanh"), Dense(2, activation="softmax")])
    path = tmp_path / "m64.keras"
    model.save(path)
    config = json.loads(members(path)["config.json"])
    assert config["config"]["layers"][2]["config"]["dtype"]["config"]["name"] == "float64"
    loaded = keras.saving.load_model(path)
    for theirs, ours in zip(keras_weights(loaded)[:2] + keras_weights(loaded)[3:], [w.value for w in model.weights
                                                                                    if w.name != "count"]):
        assert theirs.dtype == np.float64
        np.testing.assert_array_equal(theirs, ours)
    # Keras's numpy backend returns float32 outputs even for float64 layers, hence the float32 tolerance
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    back = glassnet.load_model(path)
    assert [w.dtype for w in back.weights] == [w.dtype for w in model.weights]
    np.testing.assert_array_equal(back.predict(x, verbose=0), model.predict(x, verbose=0))


OPTIMIZERS = {
    "sgd_nesterov": lambda: gopt.SGD(0.05, momentum=0.9, nesterov=True),
    "sgd_keras2_decay": lambda: gopt.SGD(learning_rate=0.05, decay=0.01),
    "adam": lambda: gopt.Adam(0.01),
    "adam_amsgrad": lambda: gopt.Adam(0.01, amsgrad=True),
    "adam_schedule": lambda: gopt.Adam(gopt.schedules.ExponentialDecay(0.02, decay_steps=2, decay_rate=0.5)),
    "adamw": lambda: gopt.AdamW(0.01, weight_decay=0.1),
    "rmsprop_centered": lambda: gopt.RMSprop(0.01, momentum=0.5, centered=True),
    "rmsprop": lambda: gopt.RMSprop(0.01),
    "adagrad": lambda: gopt.Adagrad(0.1),
    "adadelta": lambda: gopt.Adadelta(1.0),
    "adamax": lambda: gopt.Adamax(0.01),
    "nadam": lambda: gopt.Nadam(0.01),
    "cosine": lambda: gopt.SGD(gopt.schedules.CosineDecay(0.1, 10, warmup_target=0.2, warmup_steps=2)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_compile_settings_and_optimizer_state_continue_in_keras(tmp_path, name):
    model = glassnet_mlp()
    model.compile(optimizer=OPTIMIZERS[name](), loss="mse", metrics=["mae"])
    for step in range(3):
        model.train_on_batch(*batch(step))
    path = tmp_path / "m.keras"
    model.save(path)
    comp = json.loads(members(path)["config.json"])["compile_config"]
    assert comp["loss"] == "mse" and comp["metrics"] == ["mae"]
    assert comp["optimizer"]["class_name"] == type(model.optimizer).__name__
    loaded = keras.saving.load_model(path)
    opt = loaded.optimizer
    assert type(opt).__name__ == type(model.optimizer).__name__
    assert int(opt.iterations) == 3
    theirs = opt.get_config()
    for key, value in model.optimizer.get_config().items():
        if key == "learning_rate" and isinstance(value, dict):
            assert theirs[key]["class_name"] == value["class_name"]
            assert theirs[key]["config"] == pytest.approx(value["config"])
        elif key == "decay":  # Keras 2's decay becomes Keras 3's InverseTimeDecay(lr, 1, decay)
            assert theirs["learning_rate"]["class_name"] == "InverseTimeDecay"
            assert theirs["learning_rate"]["config"]["decay_rate"] == value
        elif key not in ("name", "learning_rate") or not isinstance(theirs["learning_rate"], dict):
            assert theirs[key] == pytest.approx(value), key
    # each slot lands in the Keras variable of the same name (e.g. ..._dense_kernel_momentum)
    state = keras_state(opt)
    g = model.optimizer
    for group, slots in zip(g.groups, g.slots):
        for w, sl in zip(group.weights, group.slices):
            for slot, arr in slots.items():
                key = f"{w.layer.name}_{w.name}_{KERAS_SLOT_SUFFIX[slot]}"
                match = [k for k in state if k.endswith("_" + key) or k == key]
                assert len(match) == 1, (key, sorted(state))
                np.testing.assert_array_equal(state[match[0]], arr[sl].reshape(w.shape))
    if isinstance(g, gopt.Nadam):
        assert float(opt._u_product.numpy()) == pytest.approx(g.u_product, rel=1e-6)
    x, y = batch(7)
    keras_step(loaded, x, y)
    model.train_on_batch(x, y)
    for theirs, ours in zip(keras_weights(loaded), model.get_weights()):
        np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)


# --- (b) Keras -> .keras -> glassnet -----------------------------------------------------------------------
KERAS_OPTIMIZERS = {
    "sgd_nesterov": lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: keras.optimizers.Adam(0.01),
    "adam_amsgrad_schedule": lambda: keras.optimizers.Adam(
        keras.optimizers.schedules.InverseTimeDecay(0.02, decay_steps=1, decay_rate=0.5), amsgrad=True),
    "adamw": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
    "rmsprop_centered": lambda: keras.optimizers.RMSprop(0.01, momentum=0.5, centered=True),
    "adagrad": lambda: keras.optimizers.Adagrad(0.1),
    "adadelta": lambda: keras.optimizers.Adadelta(1.0),
    "adamax": lambda: keras.optimizers.Adamax(0.01),
    "nadam": lambda: keras.optimizers.Nadam(0.01),
    "piecewise": lambda: keras.optimizers.SGD(keras.optimizers.schedules.PiecewiseConstantDecay([2], [0.1, 0.01])),
}


@pytest.mark.parametrize("name", sorted(KERAS_OPTIMIZERS))
def test_keras_trained_model_continues_in_glassnet(tmp_path, name):
    kmodel = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="tanh", name="hidden"),
                               keras.layers.Dense(1, name="out")])
    kmodel.compile(optimizer=KERAS_OPTIMIZERS[name](), loss="mse", metrics=["mae"])
    for step in range(3):
        keras_step(kmodel, *batch(step))
    path = tmp_path / "k.keras"
    kmodel.save(path)
    model = glassnet.load_model(path)
    x, y = batch(7)
    np.testing.assert_allclose(model.predict(x, verbose=0), kmodel.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    assert model.compiled and type(model.optimizer).__name__ == type(kmodel.optimizer).__name__
    assert model._compile_args["loss"] == "mse" and model._compile_args["metrics"] == ["mae"]
    assert model.optimizer.iterations == 3
    assert model.optimizer.built  # the state was restored, not restarted
    keras_step(kmodel, x, y)
    model.train_on_batch(x, y)
    for theirs, ours in zip(keras_weights(kmodel), model.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_keras_layers_and_settings_translate(tmp_path):
    L = keras.layers
    x = rng(4).normal(size=(32, 2, 3)).astype(np.float32)
    norm = L.Normalization(axis=-1)
    norm.adapt(x)
    kmodel = keras.Sequential([
        keras.Input((2, 3)), norm, L.Flatten(), L.Dense(8, activation="selu", kernel_regularizer="l2",
                                                        kernel_constraint=keras.constraints.UnitNorm()),
        L.Dropout(0.5, seed=2), L.Reshape((4, 2)), L.Activation("softsign"), L.Flatten(),
        L.Dense(3, activation="softmax", use_bias=False), L.Normalization(mean=1.0, variance=4.0, invert=True)])
    kmodel.compile(optimizer=keras.optimizers.RMSprop(0.002, clipnorm=1.0),
                   loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
                   metrics=["accuracy", keras.metrics.AUC(name="auc")])
    path = tmp_path / "k.keras"
    kmodel.save(path)
    model = glassnet.load_model(path)
    assert [type(la).__name__ for la in model.layers] == [type(la).__name__ for la in kmodel.layers]
    np.testing.assert_allclose(model.predict(x, verbose=0), kmodel.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    assert model.layers[2].kernel_constraint.__class__.__name__ == "UnitNorm"
    assert model.layers[7].bias is None and model.layers[3].seed == 2
    assert model.optimizer.clipnorm == 1.0 and model.optimizer.get_config()["learning_rate"] == pytest.approx(0.002)
    assert model.loss.get_config()["label_smoothing"] == 0.1
    assert [m if isinstance(m, str) else m.name for m in model._compile_args["metrics"]] == ["accuracy", "auc"]
    assert not model.optimizer.built and model.optimizer.iterations == 0  # never trained: Keras saved no slots
    again = tmp_path / "again.keras"
    model.save(again)  # and back to Keras once more
    np.testing.assert_allclose(keras.saving.load_model(again).predict(x, verbose=0), kmodel.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)


def test_compile_false_skips_settings(tmp_path):
    kmodel = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    kmodel.compile(optimizer=keras.optimizers.Lion(), loss="mse")
    path = tmp_path / "lion.keras"
    kmodel.save(path)
    with pytest.raises(ValueError, match=r"optimizer 'Lion' is not supported.*compile=False"):
        glassnet.load_model(path)
    model = glassnet.load_model(path, compile=False)
    assert not model.compiled
    np.testing.assert_allclose(model.get_weights()[0], keras_weights(kmodel)[0])


JAX_TRAINER = textwrap.dedent("""
    import os, sys
    os.environ["KERAS_BACKEND"] = "jax"
    import numpy as np, keras
    out = sys.argv[1]
    keras.utils.set_random_seed(0)
    r = np.random.default_rng(0)
    x = r.normal(size=(64, 4)).astype("float32") * 3 + 1
    y = (x.sum(1, keepdims=True) > 4).astype("float32")
    result = {}
    for name, opt in [("sgd", keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True)),
                      ("adam", keras.optimizers.Adam(0.01))]:
        norm = keras.layers.Normalization()
        norm.adapt(x)
        m = keras.Sequential([keras.Input((4,)), norm, keras.layers.Dense(6, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
        m.compile(optimizer=opt, loss="binary_crossentropy", metrics=["accuracy"])
        m.fit(x, y, epochs=2, batch_size=16, verbose=0)
        m.save(os.path.join(out, name + ".keras"))
        result[name + "_pred"] = m.predict(x, verbose=0)
        m.train_on_batch(x[:16], y[:16])
        for i, w in enumerate(m.get_weights()):
            result[f"{name}_w{i}"] = w
    np.savez(os.path.join(out, "after.npz"), x=x, y=y, **result)
""")


def test_keras_fit_with_jax_then_glassnet_continues(tmp_path):
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-c", JAX_TRAINER, str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    after = np.load(tmp_path / "after.npz")
    x, y = after["x"], after["y"]
    for name in ("sgd", "adam"):
        model = glassnet.load_model(tmp_path / f"{name}.keras")
        np.testing.assert_allclose(model.predict(x, verbose=0), after[name + "_pred"], rtol=1e-5, atol=1e-6)
        assert model.optimizer.iterations == 8 and model.optimizer.built
        model.train_on_batch(x[:16], y[:16])
        for i, ours in enumerate(model.get_weights()):
            np.testing.assert_allclose(ours, after[f"{name}_w{i}"], rtol=1e-5, atol=1e-5)


# --- (c) unsupported and hostile files ---------------------------------------------------------------------
@pytest.fixture
def good_file(tmp_path):
    model = glassnet_mlp()
    model.compile(optimizer="adam", loss="mse")
    model.train_on_batch(*batch())
    path = tmp_path / "good.keras"
    model.save(path)
    return path


def test_unsupported_layer_names_itself_and_the_supported_list(tmp_path):
    kmodel = keras.Sequential([keras.Input((4, 4, 4, 1)), keras.layers.Conv3D(2, 3), keras.layers.Flatten(),
                               keras.layers.Dense(1)])
    path = tmp_path / "conv3d.keras"
    kmodel.save(path)
    with pytest.raises(ValueError, match=r"'Conv3D'.*Supported layers: InputLayer, Dense, Activation, Dropout, "
                                         r"Flatten, Reshape, Normalization, Conv1D, Conv2D, .*LSTM, GRU, "
                                         r"Add, .*Dot, MultiHeadAttention, Bidirectional, TimeDistributed "
                                         r"\(in a Sequential or Functional model\)"):
        glassnet.load_model(path)


def test_keras_lambda_file_is_refused(tmp_path):
    kmodel = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda t: t * 2.0)])
    path = tmp_path / "lambda.keras"
    kmodel.save(path)
    with pytest.raises(ValueError, match="Lambda layer 'lambda'.*never runs code"):
        glassnet.load_model(path)


def test_lambda_payload_never_executes(tmp_path, good_file):
    sentinel = tmp_path / "pwned"
    scope = {}
    exec(f"payload = lambda x: open({str(sentinel)!r}, 'w').write('pwned') or x", scope)
    code = base64.b64encode(marshal.dumps(scope["payload"].__code__)).decode()
    parts = members(good_file)
    config = json.loads(parts["config.json"])
    config["config"]["layers"].insert(1, {"module": "keras.layers", "class_name": "Lambda", "config": {
        "name": "evil", "function": {"class_name": "__lambda__", "config": {"code": code, "defaults": None,
                                                                            "closure": None}}}})
    parts["config.json"] = json.dumps(config)
    path = tmp_path / "evil.keras"
    write_zip(path, parts)
    with pytest.raises(ValueError, match="Lambda layer 'evil'"):
        glassnet.load_model(path)
    with pytest.raises(ValueError, match="Lambda layer 'evil'"):
        glassnet.load_model(path, compile=False)
    assert not sentinel.exists()


@pytest.mark.parametrize("member", ["../escape.txt", "/abs.txt", "assets/../../x"])
def test_path_traversal_member_is_refused(tmp_path, good_file, member):
    parts = members(good_file)
    parts[member] = b"x"
    path = tmp_path / "trav.keras"
    write_zip(path, parts)
    with pytest.raises(ValueError, match="unsafe member names"):
        glassnet.load_model(path)


def test_unexpected_member_is_refused(tmp_path, good_file):
    parts = members(good_file)
    parts["assets/vocab.txt"] = b"a\nb\n"
    path = tmp_path / "assets.keras"
    write_zip(path, parts)
    with pytest.raises(ValueError, match="unexpected members"):
        glassnet.load_model(path)


def test_oversized_declared_member_is_refused_before_reading(tmp_path, good_file):
    data = bytearray(good_file.read_bytes())
    end = data.rindex(b"PK\x05\x06")  # end of central directory -> where the directory starts
    entry = struct.unpack("<I", data[end + 16:end + 20])[0]
    while True:  # find config.json's central-directory entry and make it claim ~4 GB
        assert data[entry:entry + 4] == b"PK\x01\x02"
        name_len, extra_len, comment_len = struct.unpack("<HHH", data[entry + 28:entry + 34])
        if data[entry + 46:entry + 46 + name_len] == b"config.json":
            break
        entry += 46 + name_len + extra_len + comment_len
    data[entry + 24:entry + 28] = struct.pack("<I", 0xFFFFFFF0)
    path = tmp_path / "bomb.keras"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="config.json declares 4294967280 bytes, above the"):
        glassnet.load_model(path)


def test_truncated_file_is_refused(tmp_path, good_file):
    data = good_file.read_bytes()
    path = tmp_path / "cut.keras"
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="not a Keras `.keras` file.*truncated"):
        glassnet.load_model(path)


def test_dataset_shape_disagreeing_with_architecture(tmp_path, good_file):
    def edit(f):
        del f["layers/dense/vars/0"]
        f["layers/dense/vars/0"] = np.zeros((4, 6), np.float32)
    path = tmp_path / "shape.keras"
    rewrite_h5(good_file, path, edit)
    with pytest.raises(ValueError, match=r"layers/dense/vars/0.*shape \(4, 6\).*needs shape \(4, 5\).*disagree"):
        glassnet.load_model(path)


def test_optimizer_state_disagreeing_with_model(tmp_path, good_file):
    def edit(f):
        del f["optimizer/vars/3"]
        f["optimizer/vars/3"] = np.zeros((2, 2), np.float32)
    path = tmp_path / "opt.keras"
    rewrite_h5(good_file, path, edit)
    with pytest.raises(ValueError, match=r"optimizer/vars/3 has shape \(2, 2\)"):
        glassnet.load_model(path)
    assert glassnet.load_model(path, compile=False).built


def test_external_storage_and_links_are_refused(tmp_path, good_file):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(20, np.float32).tobytes())

    def external(f):
        del f["layers/dense/vars/0"]
        f.create_dataset("layers/dense/vars/0", shape=(4, 5), dtype=np.float32, external=[(str(secret), 0, 80)])
    path = tmp_path / "ext.keras"
    rewrite_h5(good_file, path, external)
    with pytest.raises(ValueError, match="outside the file"):
        glassnet.load_model(path)

    def link(f):
        del f["layers/dense/vars/1"]
        f["layers/dense/vars/1"] = h5py.ExternalLink(str(secret), "/x")
    rewrite_h5(good_file, path, link)
    with pytest.raises(ValueError, match="ExternalLink: links to other files"):
        glassnet.load_model(path)


def test_tiny_config_cannot_allocate_huge_weights(tmp_path, good_file):
    parts = members(good_file)
    config = json.loads(parts["config.json"])
    config["config"]["layers"][1]["config"]["units"] = 10 ** 9
    parts["config.json"] = json.dumps(config)
    path = tmp_path / "huge.keras"
    write_zip(path, parts)
    with pytest.raises(ValueError, match="the config and the weights disagree"):
        glassnet.load_model(path)


def test_unknown_config_key_is_named(tmp_path, good_file):
    parts = members(good_file)
    config = json.loads(parts["config.json"])
    config["config"]["layers"][1]["config"]["lora_rank"] = 4
    parts["config.json"] = json.dumps(config)
    path = tmp_path / "lora.keras"
    write_zip(path, parts)
    with pytest.raises(ValueError, match=r"Dense 'dense'.*LoRA"):
        glassnet.load_model(path)


@pytest.mark.parametrize("text, message", [
    (b"{not json", "config.json is not valid JSON"),
    (b"\xff\xfe{}", "config.json is not valid JSON"),
    ("[" * 100 + "]" * 100, "nests deeper than 64 levels"),
    (json.dumps({"class_name": "Functional", "config": {"layers": []}}), "'layers' must be a non-empty list"),
    (json.dumps({"class_name": "Model", "config": {"layers": []}}), "glassnet reads Sequential and Functional"),
    (json.dumps({"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {
        "name": "d", "units": 2, "dtype": "mixed_float16"}}], "build_input_shape": [None, 4]}}), "no mixed precision"),
])
def test_malformed_config_is_refused(tmp_path, good_file, text, message):
    parts = members(good_file)
    parts["config.json"] = text
    path = tmp_path / "bad.keras"
    write_zip(path, parts)
    with pytest.raises(ValueError, match=message):
        glassnet.load_model(path)


def test_writer_refuses_what_keras_cannot_express(tmp_path):
    custom = glassnet.activations.Activation("cube", lambda x: x ** 3, lambda x, y, dy: dy * 3 * x * x)
    model = glassnet.Sequential([Input((2,)), Dense(2, activation=custom)])
    with pytest.raises(ValueError, match="activation 'cube', which Keras does not have"):
        model.save(tmp_path / "cube.keras")
    assert not (tmp_path / "cube.keras").exists()


def test_missing_h5py_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"pip install 'glassnet\[keras\]'"):
        glassnet_mlp().save(tmp_path / "m.keras")


# --- (d) glassnet -> .keras -> glassnet ---------------------------------------------------------------------
def test_glassnet_round_trip_is_exact(tmp_path):
    x = rng(5).normal(size=(32, 3, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng(6).integers(0, 3, 32)]
    norm = Normalization()
    norm.adapt(x)
    model = glassnet.Sequential([Input((3, 4)), norm, Flatten(), Dense(10, activation="relu"), Dropout(0.2),
                                 Dense(8, kernel_regularizer="l2"), Reshape((2, 4)), Activation("gelu"), Flatten(),
                                 Dense(3, activation="softmax")])
    model.compile(optimizer=gopt.Adam(0.01, amsgrad=True), loss=glassnet.losses.CategoricalCrossentropy(
        label_smoothing=0.05), metrics=["accuracy", glassnet.metrics.AUC(name="auc")])
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "rt.keras"
    model.save(path)
    back = glassnet.load_model(path)
    for a, b in zip(model.weights, back.weights):
        assert a.path == b.path and a.dtype == b.dtype
        np.testing.assert_array_equal(a.value, b.value)
    assert [la.get_config() for la in back.layers] == [la.get_config() for la in model.layers]
    assert back.optimizer.get_config() == model.optimizer.get_config()
    assert back.loss.get_config() == model.loss.get_config()
    assert back.optimizer.iterations == model.optimizer.iterations == 8
    for a, b in zip(model.optimizer.slots, back.optimizer.slots):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(back.predict(x, verbose=0), model.predict(x, verbose=0))
    glassnet.set_random_seed(9)
    model.train_on_batch(x, y)
    glassnet.set_random_seed(9)
    back.train_on_batch(x, y)
    for a, b in zip(model.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert back.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)


def test_round_trip_without_optimizer_and_without_input_layer(tmp_path):
    model = glassnet.Sequential([Dense(3, input_dim=4, activation="sigmoid"), Dense(1)])
    model.compile(optimizer=gopt.SGD(0.1, momentum=0.5), loss="mse")
    model.train_on_batch(*batch())
    path = tmp_path / "noopt.keras"
    model.save(path, include_optimizer=False)
    with zipfile.ZipFile(path) as zf, h5py.File(io.BytesIO(zf.read("model.weights.h5"))) as f:
        assert "optimizer" not in f
    back = glassnet.load_model(path)
    assert back.compiled and not back.optimizer.built and back.optimizer.iterations == 0
    assert back.optimizer.get_config() == model.optimizer.get_config()
    x = batch(1)[0]
    np.testing.assert_array_equal(back.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_allclose(keras.saving.load_model(path).predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)


# --- the layers beyond the MLP set: every case is built from the same arguments in glassnet and in Keras ----------
def randomize(variables, seed=0):
    """Small random values for every float variable (positive for variances), given (path, shape, dtype)."""
    r = rng(seed)
    return [r.uniform(0.5, 1.5, size=shape).astype(dtype) if "variance" in path else
            r.uniform(-0.5, 0.5, size=shape).astype(dtype) if np.dtype(dtype).kind == "f" else None
            for path, shape, dtype in variables]


LAYER_CASES = {
    "mnist_convnet": ((12, 12, 1), lambda L: [L.Conv2D(4, 3, activation="relu"), L.MaxPooling2D(2), L.Flatten(),
                                              L.Dropout(0.5), L.Dense(10, activation="softmax")]),
    "batchnorm": ((4, 3), lambda L: [L.BatchNormalization(), L.BatchNormalization(axis=1, center=False,
                                                                                  momentum=0.9, epsilon=0.01)]),
    "layer_group_norm": ((4, 6), lambda L: [L.LayerNormalization(), L.GroupNormalization(groups=2),
                                            L.LayerNormalization(axis=[1, 2], scale=False)]),
    "pooling_1d": ((8, 3), lambda L: [L.MaxPooling1D(2), L.AveragePooling1D(2, strides=1, padding="same"),
                                      L.GlobalMaxPooling1D()]),
    "pooling_2d": ((6, 6, 2), lambda L: [L.AveragePooling2D(2), L.MaxPooling2D(2, strides=1, padding="same"),
                                         L.GlobalAveragePooling2D()]),
    "global_pools": ((6, 6, 2), lambda L: [L.GlobalMaxPooling2D(keepdims=True), L.Reshape((2, 1)),
                                           L.GlobalAveragePooling1D()]),
    "reshaping_1d": ((4, 3), lambda L: [L.Permute((2, 1)), L.ZeroPadding1D(1), L.Cropping1D((1, 2)),
                                        L.UpSampling1D(2), L.Flatten(), L.RepeatVector(2)]),
    "reshaping_2d": ((4, 4, 2), lambda L: [L.ZeroPadding2D(1), L.Cropping2D(((1, 0), (0, 1))), L.UpSampling2D(2)]),
    "noise_rescaling": ((4, 3), lambda L: [L.SpatialDropout1D(0.3), L.GaussianNoise(0.1), L.GaussianDropout(0.2),
                                           L.Rescaling(2.0, offset=1.0), L.Reshape((2, 2, 3)),
                                           L.SpatialDropout2D(0.2)]),
    "embedding_rnns": ((6,), lambda L: [L.Embedding(10, 4, mask_zero=True), L.LSTM(5, return_sequences=True),
                                        L.GRU(3, return_sequences=True),
                                        L.GRU(3, return_sequences=True, reset_after=False), L.SimpleRNN(2)]),
    "bidirectional": ((5, 3), lambda L: [L.Bidirectional(L.LSTM(4, return_sequences=True)),
                                         L.Bidirectional(L.GRU(3), merge_mode="sum")]),
    "time_distributed": ((5, 3), lambda L: [L.TimeDistributed(L.Dense(2, activation="tanh")),
                                            L.Bidirectional(L.SimpleRNN(2, return_sequences=True),
                                                            merge_mode="ave")]),
    "conv_1d": ((10, 2), lambda L: [L.Conv1D(3, 2, activation="relu"), L.Conv1DTranspose(2, 3, strides=2),
                                    L.DepthwiseConv1D(2, depth_multiplier=2),
                                    L.SeparableConv1D(3, 2, padding="same")]),
    "conv_2d": ((5, 5, 2), lambda L: [L.Conv2DTranspose(2, 3, strides=2), L.DepthwiseConv2D(2),
                                      L.SeparableConv2D(3, 2, use_bias=False), L.Conv2D(2, 2, dilation_rate=2)]),
}


def case_input(name, shape, seed=0):
    if name == "embedding_rnns":
        x = rng(seed).integers(0, 10, size=(4,) + shape)
        x[:, -2:] = 0  # padding, masked by Embedding(mask_zero=True)
        return x
    return rng(seed).normal(size=(4,) + shape).astype(np.float32)


def dataset_layout(data):
    return {k: v for k, v in h5_layout(data).items() if isinstance(v, tuple)}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_new_layers_glassnet_to_keras(tmp_path, case):
    shape, build = LAYER_CASES[case]
    model = glassnet.Sequential([Input(shape)] + build(glassnet.layers))
    weights = randomize([(w.path, w.shape, w.dtype) for w in model.weights])
    model.set_weights([v if v is not None else w.value for v, w in zip(weights, model.weights)])
    path = tmp_path / "ours.keras"
    model.save(path)
    kmodel = keras.saving.load_model(path)
    assert [type(la).__name__ for la in kmodel.layers] == [type(la).__name__ for la in model.layers]
    x = case_input(case, shape)
    np.testing.assert_allclose(kmodel.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    theirs = tmp_path / "theirs.keras"
    kmodel.save(theirs)  # the h5 datasets sit where Keras itself puts them (RNN cells, wrapper sub-groups)
    assert dataset_layout(members(path)["model.weights.h5"]) == dataset_layout(members(theirs)["model.weights.h5"])


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_new_layers_keras_to_glassnet(tmp_path, case):
    shape, build = LAYER_CASES[case]
    kmodel = keras.Sequential([keras.Input(shape)] + build(keras.layers))
    weights = randomize([(v.path, v.shape, v.dtype) for v in kmodel.weights], seed=1)
    kmodel.set_weights([v if v is not None else np.asarray(w.numpy()) for v, w in zip(weights, kmodel.weights)])
    path = tmp_path / "k.keras"
    kmodel.save(path)
    model = glassnet.load_model(path)
    assert [type(la).__name__ for la in model.layers] == [type(la).__name__ for la in kmodel.layers]
    x = case_input(case, shape, seed=2)
    np.testing.assert_allclose(model.predict(x, verbose=0), kmodel.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    again = tmp_path / "again.keras"
    model.save(again)
    np.testing.assert_allclose(keras.saving.load_model(again).predict(x, verbose=0), kmodel.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_keras_batchnorm_moving_stats_load(tmp_path):
    L = keras.layers
    kmodel = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(3, 3), L.BatchNormalization(), L.MaxPooling2D(),
                               L.Flatten(), L.Dense(2)])
    bn = kmodel.layers[1]
    bn.moving_mean.assign(np.array([0.3, -0.2, 0.1], np.float32))
    bn.moving_variance.assign(np.array([2.0, 0.5, 1.5], np.float32))
    path = tmp_path / "bn.keras"
    kmodel.save(path)
    model = glassnet.load_model(path)
    np.testing.assert_allclose(model.layers[1].moving_variance.value, [2.0, 0.5, 1.5])
    np.testing.assert_allclose(model.layers[1].moving_mean.value, [0.3, -0.2, 0.1], rtol=1e-6)
    x = rng(3).normal(size=(5, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), kmodel.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_nested_wrapper_config_is_checked(tmp_path):
    kmodel = keras.Sequential([keras.Input((5, 3)), keras.layers.TimeDistributed(keras.layers.Dense(2))])
    path = tmp_path / "td.keras"
    kmodel.save(path)
    parts = members(path)
    config = json.loads(parts["config.json"])
    config["config"]["layers"][1]["config"]["layer"]["class_name"] = "Conv3D"
    parts["config.json"] = json.dumps(config).encode()
    bad = tmp_path / "bad.keras"
    write_zip(bad, parts)
    with pytest.raises(ValueError, match="'Conv3D'.*not supported"):
        glassnet.load_model(bad)


# --- functional models: multiple inputs and outputs, merge layers, a shared layer ----------------------------------
def functional(L, Input_, Model):
    a, b = Input_((4,), name="a"), Input_((4,), name="b")
    shared = L.Dense(4, activation="tanh", name="shared")
    ha, hb = shared(a), shared(b)  # one layer, two calls (nodes 0 and 1)
    merged = [L.Add()([ha, hb]), L.Subtract()([ha, hb]), L.Multiply()([ha, hb]), L.Average()([ha, hb]),
              L.Maximum()([ha, hb]), L.Minimum()([ha, hb])]
    cat = L.Concatenate(name="cat")(merged)
    out1 = L.Dense(2, name="out1")(cat)
    out2 = L.Dot(axes=1, normalize=True)([L.Dense(3)(cat), L.Dense(3)(hb)])
    seq = L.Reshape((6, 4))(cat)
    out3 = L.GlobalAveragePooling1D()(L.LSTM(3, return_sequences=True)(L.BatchNormalization()(seq)))
    return Model([a, b], [out1, out2, out3])


def functional_input(seed=0):
    r = rng(seed)
    return [r.normal(size=(5, 4)).astype(np.float32), r.normal(size=(5, 4)).astype(np.float32)]


def test_functional_glassnet_to_keras(tmp_path):
    model = functional(glassnet.layers, Input, glassnet.Model)
    weights = randomize([(w.path, w.shape, w.dtype) for w in model.weights])
    model.set_weights(weights)
    path = tmp_path / "f.keras"
    model.save(path)
    kmodel = keras.saving.load_model(path)
    x = functional_input()
    for theirs, ours in zip(kmodel.predict(x, verbose=0), model.predict(x, verbose=0)):
        np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)
    theirs = tmp_path / "theirs.keras"
    kmodel.save(theirs)
    assert dataset_layout(members(path)["model.weights.h5"]) == dataset_layout(members(theirs)["model.weights.h5"])


def test_functional_keras_to_glassnet(tmp_path):
    kmodel = functional(keras.layers, keras.Input, keras.Model)
    weights = randomize([(v.path, v.shape, v.dtype) for v in kmodel.weights], seed=1)
    kmodel.set_weights(weights)
    path = tmp_path / "k.keras"
    kmodel.save(path)
    model = glassnet.load_model(path)
    assert type(model).__name__ == "Functional"
    x = functional_input(2)
    expected = kmodel.predict(x, verbose=0)
    for ours, theirs in zip(model.predict(x, verbose=0), expected):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    again = tmp_path / "again.keras"
    model.save(again)
    for back, theirs in zip(keras.saving.load_model(again).predict(x, verbose=0), expected):
        np.testing.assert_allclose(back, theirs, rtol=1e-5, atol=1e-5)


def test_single_input_functional_keras_to_glassnet(tmp_path):
    L = keras.layers
    inp = keras.Input((6, 6, 1))
    h = L.Conv2D(2, 3, padding="same")(inp)
    out = L.Dense(1)(L.Flatten()(L.Add()([h, L.Conv2D(2, 1)(inp)])))
    kmodel = keras.Model(inp, out)
    path = tmp_path / "single.keras"
    kmodel.save(path)
    model = glassnet.load_model(path)
    x = rng(5).normal(size=(3, 6, 6, 1)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), kmodel.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_functional_with_unsupported_layer_is_refused(tmp_path):
    L = keras.layers
    a, b = keras.Input((4, 4, 4, 1)), keras.Input((2,))
    kmodel = keras.Model([a, b], L.Concatenate()([L.Flatten()(L.Conv3D(1, 3)(a)), b]))
    path = tmp_path / "conv3d.keras"
    kmodel.save(path)
    with pytest.raises(ValueError, match="'Conv3D'.*Supported layers: InputLayer, Dense"):
        glassnet.load_model(path)


def attention_model(L, Input_, Model):
    q, v, k = Input_((3, 4)), Input_((5, 6)), Input_((5, 2))
    cross = L.MultiHeadAttention(2, 3, value_dim=2, output_shape=5)(q, v, k)  # query, value, key
    self_att = L.MultiHeadAttention(1, 2, use_bias=False)(cross, cross)
    out = L.TimeDistributed(L.Dense(2))(L.LayerNormalization()(L.Add()([cross, self_att])))
    return Model([q, v, k], out)


def attention_input(seed=0):
    r = rng(seed)
    return [r.normal(size=(2, 3, 4)).astype(np.float32), r.normal(size=(2, 5, 6)).astype(np.float32),
            r.normal(size=(2, 5, 2)).astype(np.float32)]


def test_multi_head_attention_glassnet_to_keras(tmp_path):
    model = attention_model(glassnet.layers, Input, glassnet.Model)
    model.set_weights(randomize([(w.path, w.shape, w.dtype) for w in model.weights]))
    path = tmp_path / "mha.keras"
    model.save(path)
    kmodel = keras.saving.load_model(path)
    x = attention_input()
    np.testing.assert_allclose(kmodel.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    theirs = tmp_path / "theirs.keras"
    kmodel.save(theirs)
    assert dataset_layout(members(path)["model.weights.h5"]) == dataset_layout(members(theirs)["model.weights.h5"])


def test_multi_head_attention_keras_to_glassnet(tmp_path):
    kmodel = attention_model(keras.layers, keras.Input, keras.Model)
    kmodel.set_weights(randomize([(v.path, v.shape, v.dtype) for v in kmodel.weights], seed=1))
    path = tmp_path / "k.keras"
    kmodel.save(path)
    model = glassnet.load_model(path)
    x = attention_input(2)
    expected = kmodel.predict(x, verbose=0)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    again = tmp_path / "again.keras"
    model.save(again)
    np.testing.assert_allclose(keras.saving.load_model(again).predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)


def test_attention_call_glassnet_cannot_express_is_refused(tmp_path):
    q = keras.Input((3, 4))
    kmodel = keras.Model(q, keras.layers.MultiHeadAttention(1, 2)(q, q, use_causal_mask=True))
    path = tmp_path / "causal.keras"
    kmodel.save(path)
    with pytest.raises(ValueError, match="MultiHeadAttention calls other than"):
        glassnet.load_model(path)


def test_functional_optimizer_state_follows_keras_layer_order(tmp_path):
    a, b = Input((4,)), Input((3,))
    hb = Dense(3, name="zz")(b)  # glassnet meets zz first; Keras orders its layers (and optimizer slots) aa, zz, ...
    ha = Dense(3, name="aa")(a)
    model = glassnet.Model([a, b], Dense(1)(glassnet.layers.Concatenate()([hb, Dense(2)(ha)])))
    model.compile(optimizer=gopt.Adam(0.01), loss="mse")
    r = rng(7)
    x, y = [r.normal(size=(8, 4)).astype(np.float32), r.normal(size=(8, 3)).astype(np.float32)], r.normal(size=(8, 1))
    model.train_on_batch(x, y.astype(np.float32))
    path = tmp_path / "opt.keras"
    model.save(path)
    kmodel = keras.saving.load_model(path)
    np.testing.assert_allclose(kmodel.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    state = keras_state(kmodel.optimizer)
    opt = model.optimizer
    for w in model.trainable_weights:
        g, sl = {id(v): (g, sl) for g, grp in enumerate(opt.groups) for v, sl in zip(grp.weights, grp.slices)}[id(w)]
        key = w.path.replace("/", "_")
        np.testing.assert_allclose(state[f"{key}_momentum"], opt.slots[g]["m"][sl].reshape(w.shape), rtol=1e-6)
        np.testing.assert_allclose(state[f"{key}_velocity"], opt.slots[g]["v"][sl].reshape(w.shape), rtol=1e-6)
    back = glassnet.load_model(path)
    model.train_on_batch(x, y.astype(np.float32))
    back.train_on_batch(x, y.astype(np.float32))
    for ours, theirs in zip(back.get_weights(), model.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["layers"][1]["inbound_nodes"][0]["args"][0]["config"].update(keras_history=["nowhere", 0, 0]),
     "an input comes from an unknown layer"),
    (lambda c: c["layers"][1]["inbound_nodes"][0]["args"][0]["config"].update(keras_history=["second", 0, 0]),
     "could not be rebuilt"),  # a cycle: first <- second <- first
    (lambda c: c["layers"][1]["inbound_nodes"][0]["kwargs"].update(scale={"class_name": "__lambda__"}),
     "never runs code"),
    (lambda c: c.update(output_layers=[["ghost", 0, 0]]), "unknown layer 'ghost'"),
])
def test_hostile_functional_config_is_refused(tmp_path, edit, message):
    inp = keras.Input((3,))
    kmodel = keras.Model(inp, keras.layers.Dense(2, name="second")(keras.layers.Dense(4, name="first")(inp)))
    path = tmp_path / "f.keras"
    kmodel.save(path)
    parts = members(path)
    config = json.loads(parts["config.json"])
    edit(config["config"])
    parts["config.json"] = json.dumps(config).encode()
    bad = tmp_path / "bad.keras"
    write_zip(bad, parts)
    with pytest.raises(ValueError, match=message):
        glassnet.load_model(bad)
