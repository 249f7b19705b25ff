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
