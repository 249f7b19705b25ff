"""SparseCategoricalCrossentropy(ignore_class=...): Keras 3's values for every reduction, gradients by finite
differences, and a segmentation-style fit whose "void" pixels do not count."""
import os
import warnings

import numpy as np
import pytest

import glassnet
from glassnet import losses as L

from gradcheck import numeric_grad

RNG = np.random.default_rng(0)
P = RNG.dirichlet(np.ones(4), (3, 5))
Z = RNG.normal(size=(3, 5, 4))
Y = RNG.integers(0, 4, (3, 5))
Y[0, :2] = 255
Y[2, 4] = 255
W = RNG.uniform(0.1, 2.0, (3, 5))
REDUCTIONS = ["sum_over_batch_size", "sum", "mean_with_sample_weight", None]


@pytest.mark.parametrize("weights", [None, W], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("from_logits", [False, True], ids=["probabilities", "logits"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_value_equals_keras_3(reduction, from_logits, weights):
    os.environ.setdefault("KERAS_BACKEND", "numpy")
    keras = pytest.importorskip("keras")
    x = Z if from_logits else P
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (Keras's numpy backend divides the zeroed rows of ignored labels by 0)
        theirs = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits, ignore_class=255,
                                                            reduction=reduction)(Y, x, sample_weight=weights)
    ours = L.SparseCategoricalCrossentropy(from_logits=from_logits, ignore_class=255, reduction=reduction)(
        Y, x, sample_weight=weights)
    np.testing.assert_allclose(ours, np.asarray(theirs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weights", [None, W, W[:, 0]], ids=["unweighted", "weighted", "per_sample"])
@pytest.mark.parametrize("reduction", REDUCTIONS[:3])
def test_gradient_equals_finite_differences_and_ignored_labels_get_none(reduction, weights):
    for from_logits, x in ((False, P), (True, Z)):
        loss = L.SparseCategoricalCrossentropy(from_logits=from_logits, ignore_class=255, reduction=reduction)
        value, grad = loss.value_and_grad(Y, x, weights)
        assert value == pytest.approx(float(loss(Y, x, weights)), rel=1e-12)
        q = x.copy()  # (perturbed in place)
        np.testing.assert_allclose(grad, numeric_grad(lambda: float(loss(Y, q, weights)), q), rtol=1e-6,
                                   atol=1e-9)
        assert not grad[Y == 255].any() and grad[Y != 255].any()


def test_mean_is_over_the_labels_kept_and_all_ignored_is_zero():
    kept = Y != 255
    plain = L.sparse_categorical_crossentropy(np.where(kept, Y, 0), P)
    loss = L.SparseCategoricalCrossentropy(ignore_class=255)
    assert float(loss(Y, P)) == pytest.approx(plain[kept].mean(), rel=1e-12)
    assert float(loss(np.full((2, 3), 255), P[:2, :3])) == 0.0
    assert L.SparseCategoricalCrossentropy(ignore_class=None)(np.where(kept, Y, 0), P) == pytest.approx(plain.mean())
    with pytest.raises(ValueError, match="ignore_class must be a class id"):
        L.SparseCategoricalCrossentropy(ignore_class="void")
    config = L.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1).get_config()
    assert config["ignore_class"] == -1 and L.SparseCategoricalCrossentropy.from_config(config).get_config() == config
    assert isinstance(L.get("sparse_categorical_crossentropy"), L.SparseCategoricalCrossentropy)


def test_fit_leaves_void_pixels_out():
    """Per-pixel classes with a band of "void" (255) pixels whose inputs say the opposite class: with ignore_class
    the model learns the real rule from the other pixels; the void pixels' labels never reach the loss."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(48, 6, 6, 2)).astype("float32")
    y = (x[..., 0] > 0).astype("int64")
    y[:, :2, :] = 255
    glassnet.set_random_seed(2)
    model = glassnet.Sequential([glassnet.Input((6, 6, 2)), glassnet.layers.Conv2D(2, 1, activation="softmax")])
    model.compile(optimizer=glassnet.optimizers.Adam(0.05),
                  loss=L.SparseCategoricalCrossentropy(ignore_class=255))
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.3 * history.history["loss"][0]
    predicted = model.predict(x, verbose=0).argmax(-1)
    assert (predicted == (x[..., 0] > 0))[:, 2:, :].mean() > 0.95
