"""save -> load -> predict is exact for every layer type, in float32 and float64, in both formats."""
import numpy as np
import pytest

import glassnet
from glassnet import layers

ACTIVATIONS = ["relu", "sigmoid", "tanh", "softmax", "linear", "elu", "selu", "softplus", "softsign", "leaky_relu",
               "gelu", "silu", "hard_sigmoid", "exponential"]


def every_layer_model():
    norm = layers.Normalization(axis=-1)
    norm.adapt(np.random.default_rng(0).normal(3.0, 2.0, size=(50, 4, 6)))
    return glassnet.Sequential([
        glassnet.Input((4, 6), name="grid"), norm, layers.Dense(5, activation="tanh", kernel_regularizer="l2"),
        layers.Activation("elu"), layers.Dropout(0.25), layers.Reshape((10, -1)), layers.Flatten(),
        layers.Dense(7, activation="gelu", kernel_constraint="max_norm", bias_initializer="ones"),
        layers.Dense(3, activation="softmax")])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ext", ["glassnet", "keras"])
def test_every_layer_round_trips_exactly(tmp_path, dtype, ext):
    if ext == "keras":
        pytest.importorskip("h5py")
    glassnet.set_floatx(dtype)
    model = every_layer_model()
    x = np.random.default_rng(1).normal(size=(9, 4, 6)).astype(dtype)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, np.arange(9) % 3, epochs=2, verbose=0)
    path = tmp_path / f"m.{ext}"
    model.save(path)
    loaded = glassnet.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in model.layers]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert loaded.predict(x, verbose=0).dtype == np.dtype(dtype)
    # one more training step from the restored optimizer state matches the original
    y = np.arange(9) % 3
    glassnet.set_random_seed(5)  # the same dropout mask for both steps
    model.train_on_batch(x, y)
    glassnet.set_random_seed(5)
    loaded.train_on_batch(x, y)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_round_trips(tmp_path, activation):
    model = glassnet.Sequential([glassnet.Input((3,)), layers.Dense(4, activation=activation)])
    x = np.random.default_rng(2).normal(size=(5, 3)).astype("float32")
    model.save(tmp_path / "a.glassnet")
    np.testing.assert_array_equal(glassnet.load_model(tmp_path / "a.glassnet").predict(x, verbose=0),
                                  model.predict(x, verbose=0))


def test_weights_only_round_trip_and_metadata(tmp_path):
    model = every_layer_model()
    model.metadata = {"feature_names": ["a", "b"], "owner": "tests"}
    model.save(tmp_path / "m.glassnet")
    assert glassnet.load_model(tmp_path / "m.glassnet", compile=False).metadata == model.metadata
    model.save_weights(tmp_path / "m.weights.safetensors")
    fresh = every_layer_model()
    fresh.load_weights(tmp_path / "m.weights.safetensors")
    for a, b in zip(model.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)


def _zoo():
    """One model per family of layers, so every layer type goes through save -> load -> predict."""
    L = layers
    rng = np.random.default_rng(11)
    conv = glassnet.Sequential([
        glassnet.Input((12, 12, 2)), L.Rescaling(0.5, offset=0.1), L.ZeroPadding2D(1),
        L.Conv2D(4, 3, padding="same", activation="relu"), L.BatchNormalization(), L.MaxPooling2D(),
        L.DepthwiseConv2D(3, padding="same"), L.SeparableConv2D(4, 3), L.Conv2DTranspose(3, 3, strides=2),
        L.Cropping2D(1), L.UpSampling2D(2), L.AveragePooling2D(), L.GroupNormalization(groups=3),
        L.SpatialDropout2D(0.1), L.GaussianNoise(0.1), L.GlobalAveragePooling2D(), L.Dense(3)])
    seq = glassnet.Sequential([
        glassnet.Input((7,)), L.Embedding(20, 6, mask_zero=True), L.Bidirectional(L.LSTM(5, return_sequences=True)),
        L.GRU(4, return_sequences=True), L.SimpleRNN(3, return_sequences=True),
        L.TimeDistributed(L.Dense(4)), L.LayerNormalization(), L.Conv1D(3, 2, padding="causal"),
        L.MaxPooling1D(), L.UpSampling1D(2), L.ZeroPadding1D(1), L.Cropping1D(1), L.AveragePooling1D(),
        L.GlobalMaxPooling1D(), L.RepeatVector(2), L.Permute((2, 1)), L.Flatten(), L.GaussianDropout(0.1),
        L.Dense(2)])
    a, b = glassnet.Input((5, 6), name="a"), glassnet.Input((5, 6), name="b")
    att = L.MultiHeadAttention(num_heads=2, key_dim=3)(a, b)
    merged = [L.Add()([a, att]), L.Subtract()([a, b]), L.Multiply()([a, b]), L.Average()([a, b]),
              L.Maximum()([a, b]), L.Minimum()([a, b])]
    h = L.Concatenate()(merged)
    pooled = L.GlobalAveragePooling1D()(h)
    dot = L.Dot(axes=1)([L.Dense(4)(pooled), L.Dense(4)(pooled)])
    functional = glassnet.Model([a, b], [L.Dense(2, name="head")(pooled), dot])
    data = {
        "conv": (conv, rng.normal(size=(3, 12, 12, 2))),
        "sequence": (seq, rng.integers(0, 20, size=(3, 7)).astype("float64")),
        "functional": (functional, [rng.normal(size=(3, 5, 6)), rng.normal(size=(3, 5, 6))]),
    }
    return data


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ext", ["glassnet", "keras"])
@pytest.mark.parametrize("family", ["conv", "sequence", "functional"])
def test_every_layer_family_round_trips_exactly(tmp_path, dtype, ext, family):
    if ext == "keras":
        pytest.importorskip("h5py")
    glassnet.set_floatx(dtype)
    model, x = _zoo()[family]
    x = [v.astype(dtype) for v in x] if isinstance(x, list) else x.astype(dtype)
    before = model.predict(x, verbose=0)
    path = tmp_path / f"{family}.{ext}"
    model.save(path)
    loaded = glassnet.load_model(path)
    after = loaded.predict(x, verbose=0)
    for p, q in zip(before if isinstance(before, list) else [before], after if isinstance(after, list) else [after]):
        assert p.dtype == q.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(p, q)
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in model.layers]
    for w1, w2 in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(w1.value, w2.value)
