"""Dice and Tversky: Keras 3's values (axes, reductions, sample weights), gradients by finite differences."""
import os

import numpy as np
import pytest

import glassnet
from glassnet import losses as L

from gradcheck import numeric_grad

RNG = np.random.default_rng(3)
Y = (RNG.random((3, 4, 4, 1)) > 0.5).astype(np.float64)  # three 4×4 masks
P = RNG.uniform(0.02, 0.98, (3, 4, 4, 1))
W = np.array([0.5, 2.0, 1.0])
CASES = [
    (L.Dice, dict()),
    (L.Dice, dict(axis=(1, 2, 3))),
    (L.Dice, dict(axis=-1)),
    (L.Tversky, dict()),
    (L.Tversky, dict(alpha=0.7, beta=0.3)),
    (L.Tversky, dict(alpha=0.2, beta=0.9, axis=(1, 2, 3))),
]
IDS = ["dice", "dice_per_mask", "dice_last_axis", "tversky", "tversky_0.7_0.3", "tversky_per_mask"]
REDUCTIONS = [("sum_over_batch_size", None), ("sum_over_batch_size", W), ("sum", W), ("mean_with_sample_weight", W),
              (None, None)]


def keras_losses():
    os.environ.setdefault("KERAS_BACKEND", "numpy")
    return pytest.importorskip("keras").losses


def test_keras_documented_values():
    y = [[[[1.0], [1.0]], [[0.0], [0.0]]], [[[1.0], [1.0]], [[0.0], [0.0]]]]
    p = [[[[0.0], [1.0]], [[0.0], [1.0]]], [[[0.4], [0.0]], [[0.0], [0.9]]]]
    np.testing.assert_allclose(L.Dice(axis=(1, 2, 3), reduction=None)(y, p), [0.5, 0.75757575], rtol=1e-6)
    assert float(L.Dice()(y, p)) == pytest.approx(0.6164384, rel=1e-6)
    assert float(L.Tversky()(y, p)) == pytest.approx(float(L.Dice()(y, p)), rel=1e-6)  # α = β = ½: Dice (but 2ε)


@pytest.mark.parametrize("reduction,weights", REDUCTIONS, ids=[f"{r}-{'w' if w is not None else 'now'}"
                                                                 for r, w in REDUCTIONS])
@pytest.mark.parametrize("cls,kwargs", CASES, ids=IDS)
def test_value_equals_keras_3(cls, kwargs, reduction, weights):
    if kwargs.get("axis") == -1 and weights is not None:
        pytest.skip("Keras 3 cannot broadcast (3,) weights over (3, 4, 4) values; glassnet weighs each sample's")
    theirs = getattr(keras_losses(), cls.__name__)(reduction=reduction, **kwargs)(Y, P, sample_weight=weights)
    ours = cls(reduction=reduction, **kwargs)(Y, P, sample_weight=weights)
    assert np.shape(ours) == np.shape(theirs)
    np.testing.assert_allclose(ours, np.asarray(theirs), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reduction,weights", REDUCTIONS[:4], ids=["mean", "mean-w", "sum-w", "mwsw-w"])
@pytest.mark.parametrize("cls,kwargs", CASES, ids=IDS)
def test_gradient_equals_finite_differences(cls, kwargs, reduction, weights):
    loss = cls(reduction=reduction, **kwargs)
    value, grad = loss.value_and_grad(Y, P, weights)
    assert grad.shape == P.shape
    assert value == pytest.approx(float(loss(Y, P, weights)), rel=1e-12)
    q = P.copy()  # (perturbed in place)
    np.testing.assert_allclose(grad, numeric_grad(lambda: float(loss(Y, q, weights)), q), rtol=1e-6, atol=1e-9)


def test_trains_a_mask_model_and_round_trips():
    """A per-pixel sigmoid model compiled with "dice" (and Tversky) lowers its loss; configs round-trip;
    the names resolve as in Keras."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(64, 8, 8, 2)).astype("float32")
    masks = (x[..., :1] + 0.5 * x[..., 1:] > 0).astype("float32")
    for loss in ("dice", L.Tversky(alpha=0.3, beta=0.7)):
        glassnet.set_random_seed(1)
        model = glassnet.Sequential([glassnet.Input((8, 8, 2)),
                                     glassnet.layers.Conv2D(1, 1, activation="sigmoid")])
        model.compile(optimizer=glassnet.optimizers.Adam(0.05), loss=loss)
        history = model.fit(x, masks, epochs=20, batch_size=16, verbose=0)
        assert history.history["loss"][-1] < 0.5 * history.history["loss"][0], history.history["loss"]
    assert isinstance(L.get("dice"), L.Dice) and isinstance(L.get("tversky"), L.Tversky)
    config = L.Tversky(alpha=0.3, beta=0.7, axis=(1, 2)).get_config()
    assert config["alpha"] == 0.3 and config["beta"] == 0.7 and tuple(config["axis"]) == (1, 2)
    assert L.Tversky.from_config(config).get_config() == config
    assert L.Dice.from_config(L.Dice(axis=(1, 2, 3)).get_config()).options["axis"] == (1, 2, 3)


def test_keras_argument_order_axis_checks_and_not_a_metric():
    assert (L.Dice("sum", "my_dice").reduction, L.Dice("sum", "my_dice").name) == ("sum", "my_dice")  # Keras's order
    t = L.Tversky(0.3, 0.7, "sum", "t", (1, 2))
    assert (t.options["alpha"], t.options["beta"], t.reduction, t.name, t.options["axis"]) == (0.3, 0.7, "sum", "t",
                                                                                               (1, 2))
    assert L.MeanSquaredError("sum").reduction == "sum" and L.Huber(2.0, "sum", "h").name == "h"
    with pytest.raises(TypeError, match="at most 3 positional arguments"):
        L.MeanSquaredError("sum", "n", None, 1)
    for axis in (4, -5, (1, 7)):
        with pytest.raises(ValueError, match="does not fit predictions of shape"):
            L.Dice(axis=axis)(Y, P)
    with pytest.raises(ValueError, match="need arrays"):
        L.dice(np.float64(1.0), np.float64(0.5))
    from glassnet import metrics as M
    for name in ("dice", "tversky"):  # one value per batch: not a metric (Keras refuses the names too)
        with pytest.raises(ValueError, match="cannot be a metric"):
            M.get(name)


def test_numpy_numbers_in_configs_save(tmp_path):
    """Options given as NumPy numbers (Keras turns them into Python numbers) survive both file formats."""
    from glassnet import metrics as M
    rng = np.random.default_rng(0)
    x = rng.random((16, 4)).astype("float32")
    y = (x[:, :1] > 0.5).astype("float32")
    model = glassnet.Sequential([glassnet.Input((4,)), glassnet.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss=L.Tversky(alpha=np.float32(0.3), axis=np.int64(-1)),
                  metrics=[M.BinaryIoU(threshold=np.float32(0.4))])
    model.fit(x, y, epochs=1, verbose=0)
    for ext in ("glassnet", "keras"):
        model.save(tmp_path / f"m.{ext}")
        again = glassnet.models.load_model(tmp_path / f"m.{ext}")
        assert again.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
