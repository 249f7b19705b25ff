"""BinaryFocalCrossentropy and CategoricalFocalCrossentropy: Keras 3's values, gradients by finite differences."""
import os

import numpy as np
import pytest

import glassnet
from glassnet import losses as L

from gradcheck import numeric_grad

RNG = np.random.default_rng(0)
YB = (RNG.random((6, 3)) > 0.5).astype(float)
PB, ZB = RNG.uniform(0.02, 0.98, (6, 3)), RNG.normal(size=(6, 3)) * 2
YC = np.eye(4)[RNG.integers(0, 4, 6)]
PC, ZC = RNG.dirichlet(np.ones(4), 6), RNG.normal(size=(6, 4))
CASES = [
    (L.BinaryFocalCrossentropy, YB, PB, ZB, dict()),
    (L.BinaryFocalCrossentropy, YB, PB, ZB, dict(apply_class_balancing=True, alpha=0.3, gamma=1.5)),
    (L.BinaryFocalCrossentropy, YB, PB, ZB, dict(gamma=0.0)),
    (L.BinaryFocalCrossentropy, YB, PB, ZB, dict(label_smoothing=0.1)),
    (L.CategoricalFocalCrossentropy, YC, PC, ZC, dict()),
    (L.CategoricalFocalCrossentropy, YC, PC, ZC, dict(alpha=0.5, gamma=3.0)),
    (L.CategoricalFocalCrossentropy, YC, PC, ZC, dict(gamma=0.0)),
    (L.CategoricalFocalCrossentropy, YC, PC, ZC, dict(label_smoothing=0.1)),
]
IDS = ["bfce", "bfce_balanced", "bfce_gamma0", "bfce_smoothing", "cfce", "cfce_alpha_gamma", "cfce_gamma0",
       "cfce_smoothing"]


@pytest.mark.parametrize("from_logits", [False, True], ids=["probabilities", "logits"])
@pytest.mark.parametrize("cls,y,p,z,kwargs", CASES, ids=IDS)
def test_gradient_equals_finite_differences(cls, y, p, z, kwargs, from_logits):
    loss = cls(from_logits=from_logits, **kwargs)
    x = z if from_logits else p
    value, grad = loss.value_and_grad(y, x)
    assert value == pytest.approx(float(loss(y, x)), rel=1e-12)
    q = x.copy()  # (perturbed in place)
    numeric = numeric_grad(lambda: float(loss(y, q)), q)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("from_logits", [False, True], ids=["probabilities", "logits"])
@pytest.mark.parametrize("cls,y,p,z,kwargs", CASES, ids=IDS)
def test_value_equals_keras_3(cls, y, p, z, kwargs, from_logits):
    os.environ.setdefault("KERAS_BACKEND", "numpy")
    keras = pytest.importorskip("keras")
    x = z if from_logits else p
    theirs = float(getattr(keras.losses, cls.__name__)(from_logits=from_logits, **kwargs)(y, x))
    assert float(cls(from_logits=from_logits, **kwargs)(y, x)) == pytest.approx(theirs, rel=1e-5, abs=1e-6)


def test_focusing_down_weights_easy_examples_and_trains():
    """γ = 0 without balancing is plain binary crossentropy; γ > 0 shrinks the loss of well-classified examples
    far more than of badly classified ones; a model compiled with the loss by name learns."""
    y = np.array([[1.0], [1.0]])
    p = np.array([[0.95], [0.3]])  # one easy, one hard example
    plain = L.binary_crossentropy(y, p)
    assert L.binary_focal_crossentropy(y, p, gamma=0.0) == pytest.approx(plain)
    focal = L.binary_focal_crossentropy(y, p, gamma=2.0)
    assert focal[0] / plain[0] < 0.01 and focal[1] / plain[1] > 0.4
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 4)).astype("float32")
    labels = (x[:, :1] + x[:, 1:2] > 0).astype("float32")
    glassnet.set_random_seed(1)
    model = glassnet.Sequential([glassnet.Input((4,)), glassnet.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=glassnet.optimizers.Adam(0.05), loss="binary_focal_crossentropy", metrics=["accuracy"])
    history = model.fit(x, labels, epochs=30, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.9
    config = L.CategoricalFocalCrossentropy(alpha=0.4, gamma=1.0).get_config()
    assert L.CategoricalFocalCrossentropy.from_config(config).get_config() == config
