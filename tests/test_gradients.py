"""Finite-difference gradient checks (float64, central differences, relative error < 1e-6).

Every differentiable piece of glassnet is checked the way Chainer and scikit-learn's MLP tests check
hand-written backprop: perturb each input / weight entry by ±h, difference the scalar objective, and
compare with what ``backward`` (or ``value_and_grad``) returns. Points are chosen away from kinks
(relu at 0, hard_sigmoid at ±3, hinge margins, Huber's δ, clip boundaries), so the derivative exists
and the difference quotient converges to it.

A few value tests pin forward results to independent formulas and to published Keras numbers.
"""
import math

import numpy as np
import pytest
from gradcheck import numeric_grad, rel_error

import glassnet
from glassnet import activations, losses, regularizers
from glassnet.layers import Activation, Dense, Dropout, Flatten, Input, Normalization, Reshape
from glassnet.optimizers import SGD

TOL = 1e-6
H = 1e-6  # central-difference step


# --- helpers ----------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _float64():
    """Every test here runs in float64 with a fixed seed; float32 (Keras's default) is restored after."""
    glassnet.set_floatx("float64")
    glassnet.set_random_seed(0)
    yield
    glassnet.set_floatx("float32")


def assert_grad(analytic, f, x, what=""):
    numeric = numeric_grad(f, x)
    err = rel_error(analytic, numeric)
    assert err < TOL, f"{what}: relative error {err:.3g}\nanalytic:\n{analytic}\nnumeric:\n{numeric}"


def zero_grads(weights):
    for w in weights:
        w.grad[...] = 0


def check_forward_backward(forward, x, weights, rng, what=""):
    """Check ``forward() -> (y, backward)`` for J = Σ y·dy with a random upstream gradient dy.

    ``forward`` reads ``x`` and the weights' values, which numeric_grad perturbs in place.
    """
    y, backward = forward()
    dy = rng.normal(size=y.shape)
    zero_grads(weights)
    dx = backward(dy)
    analytic = {id(w): w.grad.copy() for w in weights}

    def J():
        return float(np.sum(forward()[0] * dy))

    assert dx.shape == x.shape
    assert dx.dtype == np.float64
    assert_grad(dx, J, x, f"{what} d/dx")
    for w in weights:
        assert_grad(analytic[id(w)], J, w.value, f"{what} d/d{w.name}")


def signed_uniform(rng, lo, hi, size):
    """Values with lo <= |v| <= hi and random signs: away from kinks at 0."""
    return rng.uniform(lo, hi, size) * rng.choice([-1.0, 1.0], size)


KINKS = {"relu": (0.0,), "leaky_relu": (0.0,), "elu": (0.0,), "selu": (0.0,), "hard_sigmoid": (-3.0, 3.0)}


def activation_input(name, rng, shape=(4, 5)):
    """|x| in [0.2, 2]; for hard_sigmoid, half of the entries in its flat parts |x| in [3.3, 5]."""
    x = signed_uniform(rng, 0.2, 2.0, shape)
    if name == "hard_sigmoid":
        x = np.where(rng.random(shape) < 0.5, x, signed_uniform(rng, 3.3, 5.0, shape))
    return x


def away_from_kinks(z, name, margin=1e-3):
    return all(np.min(np.abs(z - k)) > margin for k in KINKS.get(name, ()))


# --- activations ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", activations.ALL)
def test_activation_gradient(name):
    rng = np.random.default_rng(1)
    act = activations.get(name)
    x = activation_input(name, rng, (4, 6))
    assert away_from_kinks(x, name, 0.1)
    y, backward = act.forward(x)
    assert y.shape == x.shape and y.dtype == np.float64
    dy = rng.normal(size=y.shape)
    dx = backward(dy)
    assert dx.shape == x.shape and dx.dtype == np.float64
    assert_grad(dx, lambda: float(np.sum(act.forward(x)[0] * dy)), x, name)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_gradient_on_rank3_and_large_logits(name):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 4)) * 3 + 500.0  # max-subtraction keeps exp finite
    act = activations.get(name)
    y, backward = act.forward(x)
    assert np.all(np.isfinite(y))
    dy = rng.normal(size=y.shape)
    assert_grad(backward(dy), lambda: float(np.sum(act.forward(x)[0] * dy)), x, name)


def test_activation_with_parameters_gradient():
    """The Activation class with keyword parameters: leaky_relu's slope, gelu's tanh approximation."""
    rng = np.random.default_rng(3)
    x = signed_uniform(rng, 0.2, 2.5, (3, 4))
    leaky = activations.Activation("leaky_relu_01", activations.leaky_relu.fn, activations.leaky_relu.grad,
                                   negative_slope=0.1)
    gelu_tanh = activations.Activation("gelu_tanh", activations.gelu.fn, activations.gelu.grad, approximate=True)
    for act in (leaky, gelu_tanh):
        dy = rng.normal(size=x.shape)
        assert_grad(act.forward(x)[1](dy), lambda: float(np.sum(act.forward(x)[0] * dy)), x, act.name)
    np.testing.assert_allclose(leaky.forward(x)[0], np.where(x > 0, x, 0.1 * x), rtol=0, atol=0)


def test_gelu_without_scipy_matches(monkeypatch):
    """The math.erf fallback (no scipy) gives the same values and gradient."""
    import sys
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 4))
    y_scipy, back_scipy = activations.gelu.forward(x)
    dy = rng.normal(size=x.shape)
    dx_scipy = back_scipy(dy)
    monkeypatch.setitem(sys.modules, "scipy.special", None)  # import raises ImportError
    y, back = activations.gelu.forward(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, y_scipy, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(back(dy), dx_scipy, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("name", activations.ALL)
def test_activation_keeps_float32(name):
    """Outside the float64 checks, forward and backward keep float32 (Keras's floatx) unchanged."""
    x = np.linspace(-4, 4, 12, dtype=np.float32).reshape(3, 4)
    y, backward = activations.get(name).forward(x)
    assert y.dtype == np.float32
    assert backward(np.ones_like(y)).dtype == np.float32


def test_activation_values_match_formulas():
    x = np.array([-5.0, -3.5, -1.0, -0.25, 0.5, 2.0, 3.5, 40.0])
    a = activations
    np.testing.assert_allclose(a.relu(x), np.maximum(x, 0))
    np.testing.assert_allclose(a.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-14)
    np.testing.assert_allclose(a.tanh(x), np.tanh(x))
    np.testing.assert_allclose(a.linear(x), x)
    np.testing.assert_allclose(a.exponential(x), np.exp(x))
    np.testing.assert_allclose(a.elu(x), np.where(x > 0, x, np.exp(x) - 1), rtol=1e-14)
    alpha, scale = 1.6732632423543772, 1.0507009873554805  # Klambauer et al. / Keras
    np.testing.assert_allclose(a.selu(x), scale * np.where(x > 0, x, alpha * (np.exp(x) - 1)), rtol=1e-14)
    np.testing.assert_allclose(a.softplus(x), [math.log1p(math.exp(v)) for v in x], rtol=1e-14)
    np.testing.assert_allclose(a.softsign(x), x / (1 + np.abs(x)))
    np.testing.assert_allclose(a.leaky_relu(x), np.where(x > 0, x, 0.2 * x))  # Keras 3 default slope 0.2
    np.testing.assert_allclose(a.gelu(x), [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x], rtol=1e-14)
    np.testing.assert_allclose(a.silu(x), x / (1 + np.exp(-x)), rtol=1e-14)
    assert activations.get("swish") is activations.get("silu")
    np.testing.assert_allclose(a.hard_sigmoid(x), np.minimum(np.maximum(x + 3, 0), 6) / 6)  # relu6(x + 3) / 6
    z = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, 1000.0]])
    e = np.exp(z[0] - 3)
    np.testing.assert_allclose(a.softmax(z), [e / e.sum(), [1 / 3] * 3], rtol=1e-14)
    np.testing.assert_allclose(a.log_softmax(z), np.log([e / e.sum(), [1 / 3] * 3]), rtol=1e-14)
    assert np.isfinite(a.softplus(np.array([1000.0, -1000.0]))).all()


# --- losses: inputs away from kinks and clip boundaries ---------------------------------------------
N, K = 4, 3
SAMPLE_WEIGHT = np.array([1.0, 0.0, 3.0, 0.5])


def one_hot(labels, k=K):
    return np.eye(k)[labels]


def loss_case(name, rng, shape=(N, K)):
    """(y_true, y_pred) for the loss called ``name``, with y_pred where the loss is differentiable."""
    labels = rng.integers(0, shape[-1], shape[:-1])
    if name in ("mse", "log_cosh", "cosine_similarity"):
        return rng.normal(size=shape), rng.normal(size=shape)
    if name in ("mae", "mape"):  # |p − y| > 0.1; y away from 0 for mape
        y = signed_uniform(rng, 0.5, 2.0, shape)
        return y, y + signed_uniform(rng, 0.1, 1.0, shape)
    if name in ("msle", "poisson"):
        return rng.uniform(0.0, 3.0, shape), rng.uniform(0.2, 3.0, shape)
    if name == "huber":  # |p − y| on both sides of δ = 1
        y = rng.normal(size=shape)
        d = rng.choice([-1.0, 1.0], shape) * np.where(rng.random(shape) < 0.5, rng.uniform(0.1, 0.8, shape),
                                                      rng.uniform(1.2, 3.0, shape))
        return y, y + d
    if name in ("binary_crossentropy", "binary_focal_crossentropy"):
        return rng.integers(0, 2, shape).astype(np.float64), rng.uniform(0.05, 0.95, shape)
    if name == "categorical_focal_crossentropy":
        return one_hot(labels, shape[-1]), rng.uniform(0.1, 1.0, shape)
    if name == "categorical_crossentropy":
        return one_hot(labels, shape[-1]), rng.uniform(0.1, 1.0, shape)
    if name == "sparse_categorical_crossentropy":
        return labels, rng.uniform(0.1, 1.0, shape)
    if name == "kl_divergence":
        return rng.uniform(0.05, 1.0, shape), rng.uniform(0.05, 0.95, shape)
    if name in ("hinge", "squared_hinge"):  # margin 1 − y·p = ±[0.2, 1]: active and inactive terms
        y = rng.choice([-1.0, 1.0], shape)
        return y, y * (1.0 - signed_uniform(rng, 0.2, 1.0, shape))
    if name == "categorical_hinge":
        return categorical_hinge_case(rng, labels, shape)
    if name in ("dice", "tversky"):  # soft masks: one value for the whole batch (axis=None)
        return (rng.random(shape) > 0.5).astype(np.float64), rng.uniform(0.05, 0.95, shape)
    raise KeyError(name)


def categorical_hinge_case(rng, labels, shape):
    """p with a unique max of (1 − y)·p and neg − pos + 1 = ±[0.2, 1] per row (active and inactive)."""
    y = one_hot(labels, shape[-1])
    while True:
        p = rng.normal(size=shape)
        masked = np.sort((1 - y) * p, axis=-1)
        if np.min(masked[..., -1] - masked[..., -2]) > 0.05:
            break
    neg = np.max((1 - y) * p, axis=-1)
    target = signed_uniform(rng, 0.2, 1.0, shape[:-1])  # neg − pos + 1
    pos = neg + 1.0 - target
    p = np.where(y == 1, pos[..., None], p)
    return y, p


def check_loss(loss, y_true, y_pred, sample_weight=None, what=""):
    """value_and_grad's gradient against central differences of ``loss(...)`` (the __call__ path)."""
    y_pred = np.array(y_pred, dtype=np.float64)
    value, grad = loss.value_and_grad(y_true, y_pred, sample_weight)
    assert isinstance(value, float)
    assert grad.shape == y_pred.shape and grad.dtype == np.float64
    assert value == pytest.approx(float(loss(y_true, y_pred, sample_weight)), rel=1e-12, abs=1e-15)
    assert_grad(grad, lambda: float(loss(y_true, y_pred, sample_weight)), y_pred, what or loss.name)


REDUCTIONS = [("sum_over_batch_size", None), ("sum", None), ("sum", SAMPLE_WEIGHT),
              ("sum_over_batch_size", SAMPLE_WEIGHT), ("mean_with_sample_weight", SAMPLE_WEIGHT),
              ("mean_with_sample_weight", None)]


@pytest.mark.parametrize("reduction,sample_weight", REDUCTIONS,
                         ids=[f"{r}-{'w' if w is not None else 'now'}" for r, w in REDUCTIONS])
@pytest.mark.parametrize("name", losses.NAMES)
def test_loss_gradient(name, reduction, sample_weight):
    rng = np.random.default_rng(100 + losses.NAMES.index(name))
    y_true, y_pred = loss_case(name, rng)
    loss = type(losses.get(name))(reduction=reduction)
    check_loss(loss, y_true, y_pred, sample_weight, f"{name} {reduction}")


@pytest.mark.parametrize("name", losses.NAMES)
def test_loss_gradient_rank3_with_sample_weight(name):
    """(batch, time, classes) predictions; a per-sample weight broadcasts over the time axis."""
    rng = np.random.default_rng(5)
    y_true, y_pred = loss_case(name, rng, shape=(2, 3, 4))
    check_loss(losses.get(name), y_true, y_pred, np.array([0.5, 2.0]), name)
    check_loss(losses.get(name), y_true, y_pred, rng.uniform(0.1, 2.0, (2, 3)), name + " per-step weights")


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("from_logits", [False, True])
def test_binary_crossentropy_options_gradient(from_logits, label_smoothing):
    rng = np.random.default_rng(6)
    y_true = rng.integers(0, 2, (N, K)).astype(np.float64)
    y_pred = rng.normal(0, 2, (N, K)) if from_logits else rng.uniform(0.05, 0.95, (N, K))
    loss = losses.BinaryCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)
    check_loss(loss, y_true, y_pred)
    check_loss(loss, y_true, y_pred, SAMPLE_WEIGHT, "bce weighted")


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("from_logits", [False, True])
def test_categorical_crossentropy_options_gradient(from_logits, label_smoothing):
    rng = np.random.default_rng(7)
    y_true = one_hot(rng.integers(0, K, N))
    y_pred = rng.normal(0, 2, (N, K)) if from_logits else rng.uniform(0.1, 1.0, (N, K))
    loss = losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)
    check_loss(loss, y_true, y_pred)
    check_loss(loss, y_true, y_pred, SAMPLE_WEIGHT, "cce weighted")
    soft = rng.dirichlet(np.ones(K), N)  # soft targets too
    check_loss(loss, soft, y_pred, None, "cce soft targets")


@pytest.mark.parametrize("label_shape", ["(N,)", "(N,1)"])
@pytest.mark.parametrize("from_logits", [False, True])
def test_sparse_categorical_crossentropy_gradient(from_logits, label_shape):
    rng = np.random.default_rng(8)
    labels = rng.integers(0, K, N)
    if label_shape == "(N,1)":
        labels = labels[:, None]
    y_pred = rng.normal(0, 2, (N, K)) if from_logits else rng.uniform(0.1, 1.0, (N, K))
    loss = losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    check_loss(loss, labels, y_pred)
    check_loss(loss, labels.astype(np.float64), y_pred, SAMPLE_WEIGHT, "scce float labels, weighted")
    dense = losses.CategoricalCrossentropy(from_logits=from_logits)
    assert loss(labels, y_pred) == pytest.approx(dense(one_hot(labels.reshape(-1)), y_pred), rel=1e-12)


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.5])
def test_huber_delta_gradient(delta):
    rng = np.random.default_rng(9)
    y = rng.normal(size=(N, K))
    d = rng.choice([-1.0, 1.0], (N, K)) * np.where(rng.random((N, K)) < 0.5, rng.uniform(0.05, 0.8 * delta, (N, K)),
                                                   rng.uniform(1.2 * delta, 3 * delta, (N, K)))
    check_loss(losses.Huber(delta=delta), y, y + d)
    check_loss(losses.Huber(delta), y, y + d, SAMPLE_WEIGHT, "huber positional delta, weighted")


def test_hinge_gradient_with_zero_one_labels():
    rng = np.random.default_rng(10)
    y01 = rng.integers(0, 2, (N, K)).astype(np.float64)
    y = 2 * y01 - 1
    p = y * (1.0 - signed_uniform(rng, 0.2, 1.0, (N, K)))
    for name in ("hinge", "squared_hinge"):
        check_loss(losses.get(name), y01, p, None, name + " 0/1 labels")
        assert losses.get(name)(y01, p) == pytest.approx(losses.get(name)(y, p), rel=1e-14)


@pytest.mark.parametrize("name", ["mse", "mae", "huber", "log_cosh", "binary_crossentropy", "hinge", "poisson"])
@pytest.mark.parametrize("sample_weight", [None, "(N,)", "(N,1)"])
def test_loss_gradient_labels_rank1_predictions_column(name, sample_weight):
    """y_true of shape (N,) against y_pred of shape (N, 1) (and the reverse), as Keras aligns them."""
    rng = np.random.default_rng(11)
    y_true, y_pred = loss_case(name, rng, shape=(N, 1))
    w = None if sample_weight is None else SAMPLE_WEIGHT if sample_weight == "(N,)" else SAMPLE_WEIGHT[:, None]
    loss = losses.get(name)
    check_loss(loss, y_true[:, 0], y_pred, w, name + " y (N,) vs p (N,1)")
    check_loss(loss, y_true, y_pred[:, 0], w, name + " y (N,1) vs p (N,)")
    assert loss(y_true[:, 0], y_pred, w) == pytest.approx(loss(y_true, y_pred, w), rel=1e-14)
    for logits in (True,) if name == "binary_crossentropy" else ():
        z = rng.normal(0, 2, (N, 1))
        check_loss(losses.BinaryCrossentropy(from_logits=logits), y_true[:, 0], z, w, "bce logits (N,) vs (N,1)")


def test_reduction_none_refuses_value_and_grad():
    with pytest.raises(ValueError, match="sum_over_batch_size"):
        losses.MeanSquaredError(reduction="none").value_and_grad(np.zeros((2, 1)), np.ones((2, 1)))


def test_mean_with_sample_weight_all_zero_weights_gives_zero_not_nan():
    """Keras divides with divide_no_nan: Σw = 0 gives loss 0 and gradient 0."""
    loss = losses.MeanSquaredError(reduction="mean_with_sample_weight")
    value, grad = loss.value_and_grad(np.zeros((3, 2)), np.ones((3, 2)), np.zeros(3))
    assert value == 0.0 and float(loss(np.zeros((3, 2)), np.ones((3, 2)), np.zeros(3))) == 0.0
    np.testing.assert_array_equal(grad, np.zeros((3, 2)))


def test_crossentropy_resolver_gradient():
    rng = np.random.default_rng(12)
    labels = rng.integers(0, K, N)
    check_loss(losses.get("crossentropy"), labels, rng.uniform(0.1, 1.0, (N, K)), None, "ce -> sparse")
    check_loss(losses.get("crossentropy"), one_hot(labels), rng.uniform(0.1, 1.0, (N, K)), None, "ce -> categorical")
    check_loss(losses.get("crossentropy"), labels[:, None] % 2, rng.uniform(0.1, 0.9, (N, 1)), None, "ce -> binary")


# --- losses: values against hand computation and Keras facts ----------------------------------------
def test_bce_saturated_prediction_is_minus_log_epsilon():
    """Keras 3: p clipped to [1e-7, 1 − 1e-7], so y=1, p=0 gives −ln(1e-7) = 16.118095."""
    value = losses.BinaryCrossentropy()(np.array([[1.0]]), np.array([[0.0]]))
    assert value == pytest.approx(16.118095, abs=1e-5)
    assert value == pytest.approx(-math.log(1e-7), rel=1e-9)
    assert losses.BinaryCrossentropy()(np.array([[0.0]]), np.array([[1.0]])) == pytest.approx(-math.log(1e-7), rel=1e-6)


def test_bce_values_by_hand():
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    p = np.array([[0.9, 0.2], [0.3, 0.6]])
    per_sample = [-(math.log(0.9) + math.log(0.8)) / 2, -(math.log(0.7) + math.log(0.6)) / 2]
    assert losses.BinaryCrossentropy()(y, p) == pytest.approx(np.mean(per_sample), rel=1e-12)
    z = np.log(p / (1 - p))  # the same probabilities as logits
    assert losses.BinaryCrossentropy(from_logits=True)(y, z) == pytest.approx(np.mean(per_sample), rel=1e-12)
    ys = y * 0.8 + 0.1  # label_smoothing=0.2: y·(1 − ls) + ls/2
    smoothed = np.mean(-(ys * np.log(p) + (1 - ys) * np.log(1 - p)))
    assert losses.BinaryCrossentropy(label_smoothing=0.2)(y, p) == pytest.approx(smoothed, rel=1e-12)


def test_categorical_crossentropy_normalises_probabilities():
    """[2, 1, 1] is read as [0.5, 0.25, 0.25]: −ln 0.5 = 0.6931."""
    value = losses.CategoricalCrossentropy()(np.array([[1.0, 0.0, 0.0]]), np.array([[2.0, 1.0, 1.0]]))
    assert value == pytest.approx(0.6931, abs=1e-4)
    assert value == pytest.approx(math.log(2), rel=1e-12)


def test_categorical_crossentropy_values_by_hand():
    y = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    z = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    expected = -np.mean(np.sum(y * logp, -1))
    assert losses.CategoricalCrossentropy(from_logits=True)(y, z) == pytest.approx(expected, rel=1e-12)
    assert losses.CategoricalCrossentropy()(y, np.exp(logp)) == pytest.approx(expected, rel=1e-12)
    ys = y * 0.7 + 0.1  # label_smoothing=0.3 over 3 classes: y·0.7 + 0.3/3
    assert losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.3)(y, z) == pytest.approx(
        -np.mean(np.sum(ys * logp, -1)), rel=1e-12)
    assert losses.SparseCategoricalCrossentropy(from_logits=True)(np.array([1, 0]), z) == pytest.approx(
        expected, rel=1e-12)


def test_sum_over_batch_size_divides_by_number_of_samples_not_weights():
    y = np.array([[0.0], [0.0], [0.0], [0.0]])
    p = np.array([[1.0], [2.0], [3.0], [4.0]])
    w = np.array([1.0, 0.0, 3.0, 1.0])
    weighted_sum = 1 * 1 + 0 * 4 + 3 * 9 + 1 * 16  # 44
    assert losses.MeanSquaredError()(y, p, w) == pytest.approx(weighted_sum / 4)
    assert losses.MeanSquaredError(reduction="sum")(y, p, w) == pytest.approx(weighted_sum)
    assert losses.MeanSquaredError(reduction="mean_with_sample_weight")(y, p, w) == pytest.approx(weighted_sum / 5)
    np.testing.assert_allclose(losses.MeanSquaredError(reduction="none")(y, p, w), [1, 0, 27, 16])
    value, grad = losses.MeanSquaredError().value_and_grad(y, p, w)
    assert value == pytest.approx(11.0)
    np.testing.assert_allclose(grad, (2 * w[:, None] * p) / 4)


def test_regression_losses_by_hand():
    y = np.array([[1.0, 2.0], [-1.0, 0.5]])
    p = np.array([[1.5, 0.0], [0.0, 0.5]])
    d = p - y
    assert losses.get("mse")(y, p) == pytest.approx(np.mean(d ** 2))
    assert losses.get("mae")(y, p) == pytest.approx(np.mean(np.abs(d)))
    assert losses.get("mape")(y, p) == pytest.approx(100 * np.mean(np.abs(d) / np.abs(y)))
    yp, pp = np.abs(y), np.abs(p) + 0.1
    assert losses.get("msle")(yp, pp) == pytest.approx(np.mean((np.log(pp + 1) - np.log(yp + 1)) ** 2))
    assert losses.get("log_cosh")(y, p) == pytest.approx(np.mean(np.log(np.cosh(d))), rel=1e-12)
    huber = np.where(np.abs(d) <= 1, 0.5 * d ** 2, np.abs(d) - 0.5)
    assert losses.get("huber")(y, p) == pytest.approx(np.mean(huber))
    assert losses.get("poisson")(yp, pp) == pytest.approx(np.mean(pp - yp * np.log(pp + 1e-7)))
    cos = np.sum(y * p, -1) / (np.linalg.norm(y, axis=-1) * np.linalg.norm(p, axis=-1))
    assert losses.get("cosine_similarity")(y, p) == pytest.approx(-np.mean(cos))
    q, r = np.array([[0.2, 0.8]]), np.array([[0.5, 0.5]])
    assert losses.get("kl_divergence")(q, r) == pytest.approx(np.sum(q * np.log(q / r)))


def test_hinge_losses_by_hand():
    y = np.array([[1.0, 0.0]])  # 0/1 labels become +1/−1
    p = np.array([[0.3, 0.4]])
    t = np.array([[1.0, -1.0]])
    assert losses.get("hinge")(y, p) == pytest.approx(np.mean(np.maximum(1 - t * p, 0)))  # (0.7 + 1.4)/2
    assert losses.get("squared_hinge")(y, p) == pytest.approx(np.mean(np.maximum(1 - t * p, 0) ** 2))
    yc, pc = np.array([[0.0, 1.0, 0.0]]), np.array([[0.5, 0.2, 0.9]])
    assert losses.get("categorical_hinge")(yc, pc) == pytest.approx(max(0.9 - 0.2 + 1, 0))


# --- layers -----------------------------------------------------------------------------------------
def dense_case(activation, use_bias, rng, x_shape=(4, 5), units=3, **kwargs):
    """A Dense layer with random kernel/bias whose pre-activations stay away from the activation's kinks."""
    layer = Dense(units, activation=activation, use_bias=use_bias, **kwargs)
    layer._maybe_build((None,) + x_shape[1:])
    while True:
        x = rng.normal(size=x_shape)
        kernel = rng.normal(0, 0.8, (x_shape[-1], units))
        bias = rng.normal(0, 0.5, units)
        z = x @ kernel + (bias if use_bias else 0)
        if away_from_kinks(z, activation, 1e-3):
            break
    layer.set_weights([kernel, bias] if use_bias else [kernel])
    return layer, x


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("activation", activations.ALL)
def test_dense_gradient(activation, use_bias):
    rng = np.random.default_rng(13)
    layer, x = dense_case(activation, use_bias, rng)
    assert len(layer.weights) == (2 if use_bias else 1)
    assert all(w.dtype == np.float64 for w in layer.weights)
    check_forward_backward(lambda: layer.forward(x, training=True), x, layer.trainable_weights, rng,
                           f"Dense({activation}, use_bias={use_bias})")


def test_dense_forward_matches_formula_and_call():
    rng = np.random.default_rng(14)
    layer, x = dense_case("tanh", True, rng)
    expected = np.tanh(x @ layer.kernel.value + layer.bias.value)
    np.testing.assert_allclose(layer.forward(x)[0], expected, rtol=1e-14)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-14)


@pytest.mark.parametrize("activation", ["linear", "relu", "softmax"])
def test_dense_gradient_rank3_input(activation):
    rng = np.random.default_rng(15)
    layer, x = dense_case(activation, True, rng, x_shape=(2, 3, 5), units=4)
    y = layer.forward(x)[0]
    assert y.shape == (2, 3, 4)
    check_forward_backward(lambda: layer.forward(x), x, layer.trainable_weights, rng, f"Dense rank-3 {activation}")


@pytest.mark.parametrize("regularizer", [regularizers.L2(0.05), regularizers.L1L2(l1=0.02, l2=0.03),
                                         regularizers.L1(0.04)], ids=["l2", "l1_l2", "l1"])
@pytest.mark.parametrize("activation", ["linear", "tanh", "sigmoid"])
def test_dense_activity_regularizer_gradient(activation, regularizer):
    """J = Σ y·dy + activity(y): backward adds activity'(y) to dy before the activation's backward."""
    rng = np.random.default_rng(16)
    layer, x = dense_case(activation, True, rng, activity_regularizer=regularizer)
    y, backward = layer.forward(x, training=True)
    assert np.min(np.abs(y)) > 1e-3  # L1's kink at y = 0
    assert layer.last_activity_loss == pytest.approx(regularizer(y) / len(y), rel=1e-14)  # per example (Keras)
    dy = rng.normal(size=y.shape)
    zero_grads(layer.weights)
    dx = backward(dy)
    grads = [w.grad.copy() for w in layer.weights]

    def J():
        out = layer.forward(x, training=True)[0]
        return float(np.sum(out * dy)) + float(layer.last_activity_loss)

    assert_grad(dx, J, x, "activity d/dx")
    for w, g in zip(layer.weights, grads):
        assert_grad(g, J, w.value, f"activity d/d{w.name}")


def test_dense_weight_regularizers_gradient_through_the_model():
    """One SGD(lr=1) step of train_on_batch moves each weight by −∂J/∂w, where
    J = mse + Σ kernel/bias penalties + activity penalty; and train_on_batch reports J."""
    rng = np.random.default_rng(17)
    model = glassnet.Sequential([
        Input((5,)),
        Dense(4, activation="tanh", kernel_regularizer=regularizers.L1L2(l1=0.01, l2=0.02),
              bias_regularizer=regularizers.L1(0.03), activity_regularizer=regularizers.L2(0.01)),
        Dense(2, kernel_regularizer="l2", bias_regularizer=regularizers.L2(0.05)),
    ])
    model.set_weights([rng.normal(0, 0.7, w.shape) for w in model.weights])  # biases away from L1's kink at 0
    x, y = rng.normal(size=(6, 5)), rng.normal(size=(6, 2))
    mse = losses.MeanSquaredError()

    def J():
        y_pred = model.forward(x, training=True)[0]
        penalties = sum(w.regularizer(w.value) for w in model.weights if w.regularizer is not None)
        activity = sum(float(layer.last_activity_loss) for layer in model.layers
                       if layer.activity_regularizer is not None)
        return float(mse(y, y_pred)) + penalties + activity

    J0 = J()
    numeric = [numeric_grad(J, w.value) for w in model.trainable_weights]
    before = [w.numpy() for w in model.trainable_weights]
    model.compile(optimizer=SGD(learning_rate=1.0), loss="mse")
    reported = model.train_on_batch(x, y)
    assert reported == pytest.approx(J0, rel=1e-12)
    for w, b, n in zip(model.trainable_weights, before, numeric):
        err = rel_error(b - w.numpy(), n)
        assert err < TOL, f"{w.path}: relative error {err:.3g}"


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_evaluate_and_val_loss_include_the_activity_penalty(nested):
    """The loss that evaluate(), test_on_batch() and fit's val_loss report is the training objective: the data loss
    plus the weight penalties plus the activity penalty of this batch's outputs (Keras adds model.losses to the
    compiled loss in both). Computed by hand here; fit with lr=0 reports the same value as loss and val_loss."""
    rng = np.random.default_rng(23)
    hidden = Dense(4, activation="tanh", kernel_regularizer="l2", activity_regularizer=regularizers.L1(0.05))
    head = Dense(2)
    layers = [glassnet.Sequential([Input((5,)), hidden]), head] if nested else [hidden, head]
    model = glassnet.Sequential([Input((5,))] + layers)
    model.set_weights([rng.normal(0, 0.7, w.shape) for w in model.weights])
    x, y = rng.normal(size=(6, 5)), rng.normal(size=(6, 2))
    W1, b1, W2, b2 = model.get_weights()
    h = np.tanh(x @ W1 + b1)
    # the activity penalty is divided by the batch size, as Keras 3 does (the loss does not grow with the batch)
    expected = np.mean((h @ W2 + b2 - y) ** 2) + 0.01 * np.sum(W1 ** 2) + 0.05 * np.sum(np.abs(h)) / len(x)
    model.compile(optimizer=SGD(learning_rate=0.0), loss="mse")
    assert model.evaluate(x, y, batch_size=6, verbose=0) == pytest.approx(expected, rel=1e-12)
    assert model.test_on_batch(x, y) == pytest.approx(expected, rel=1e-12)
    history = model.fit(x, y, batch_size=6, epochs=1, verbose=0, validation_data=(x, y)).history
    assert history["loss"][0] == pytest.approx(expected, rel=1e-12)
    assert history["val_loss"][0] == pytest.approx(expected, rel=1e-12)
    # batches of 3: each batch's penalty per its own 3 examples, the epoch a mean over the batches
    halves = [np.mean((h[s] @ W2 + b2 - y[s]) ** 2) + 0.01 * np.sum(W1 ** 2) + 0.05 * np.sum(np.abs(h[s])) / 3
              for s in (slice(0, 3), slice(3, 6))]
    assert model.evaluate(x, y, batch_size=3, verbose=0) == pytest.approx(np.mean(halves), rel=1e-12)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "softmax", "elu", "hard_sigmoid", "log_softmax"])
def test_activation_layer_gradient(activation):
    rng = np.random.default_rng(18)
    x = activation_input(activation, rng, (3, 4, 5))
    layer = Activation(activation)
    np.testing.assert_allclose(layer(x), activations.get(activation)(x), rtol=0, atol=0)
    check_forward_backward(lambda: layer.forward(x, training=True), x, [], rng, f"Activation({activation})")


@pytest.mark.parametrize("noise_shape", [None, (None, 1)], ids=["full", "noise_shape"])
@pytest.mark.parametrize("rate", [0.25, 0.6])
def test_dropout_training_gradient_with_mask_held_fixed(rate, noise_shape):
    """Re-seeding glassnet before each forward draws the same mask, so J(x) = Σ dy·dropout(x) is smooth."""
    rng = np.random.default_rng(19)
    x = signed_uniform(rng, 0.2, 2.0, (6, 5))
    layer = Dropout(rate, noise_shape=noise_shape)

    def forward():
        glassnet.set_random_seed(123)
        return layer.forward(x, training=True)

    y = forward()[0]
    ratio = y / x
    scale = 1 / (1 - rate)
    assert np.all(np.isclose(ratio, 0) | np.isclose(ratio, scale, rtol=1e-14))
    assert 0 < np.mean(np.isclose(ratio, 0)) < 1
    if noise_shape is not None:  # one draw per row, broadcast over the features
        np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1], ratio.shape), rtol=1e-14)
    check_forward_backward(forward, x, [], rng, f"Dropout({rate})")


def test_dropout_seeded_backward_uses_the_sampled_mask():
    """Dropout(seed=...) draws a new mask per call; each call's backward uses that call's mask."""
    rng = np.random.default_rng(20)
    x = signed_uniform(rng, 0.2, 2.0, (8, 5))
    layer = Dropout(0.5, seed=7)
    rate_scale = 2.0
    masks = []
    for _ in range(2):
        y, backward = layer.forward(x, training=True)
        mask = y / x
        assert set(np.unique(mask)) <= {0.0, rate_scale}
        dy = rng.normal(size=x.shape)
        np.testing.assert_array_equal(backward(dy), dy * mask)
        masks.append(mask)
    assert not np.array_equal(masks[0], masks[1])
    a, b = Dropout(0.5, seed=7), Dropout(0.5, seed=7)  # the same seed, the same sequence of masks
    np.testing.assert_array_equal(a.forward(x, True)[0], b.forward(x, True)[0])
    y, backward = layer.forward(x, training=False)  # inference: identity both ways
    assert y is x or np.array_equal(y, x)
    dy = rng.normal(size=x.shape)
    np.testing.assert_array_equal(backward(dy), dy)


def test_dropout_rate_zero_is_identity_in_training():
    x = np.random.default_rng(21).normal(size=(3, 4))
    y, backward = Dropout(0.0).forward(x, training=True)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(backward(x * 2), x * 2)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_flatten_gradient(data_format):
    rng = np.random.default_rng(22)
    x = rng.normal(size=(3, 2, 4, 5))
    layer = Flatten(data_format=data_format)
    y = layer.forward(x)[0]
    expected = x.transpose(0, 2, 3, 1) if data_format == "channels_first" else x
    np.testing.assert_array_equal(y, expected.reshape(3, -1))
    assert layer.compute_output_shape((None, 2, 4, 5)) == (None, 40)
    check_forward_backward(lambda: layer.forward(x), x, [], rng, f"Flatten({data_format})")


@pytest.mark.parametrize("target_shape,expected", [((2, -1), (3, 2, 12)), ((-1, 4), (3, 6, 4)),
                                                   ((4, 6), (3, 4, 6)), ((24,), (3, 24))])
def test_reshape_gradient(target_shape, expected):
    rng = np.random.default_rng(23)
    x = rng.normal(size=(3, 4, 6))
    layer = Reshape(target_shape)
    y = layer.forward(x)[0]
    assert y.shape == expected
    assert layer.compute_output_shape((None, 4, 6)) == (None,) + expected[1:]
    np.testing.assert_array_equal(y, x.reshape(expected))
    check_forward_backward(lambda: layer.forward(x), x, [], rng, f"Reshape({target_shape})")


@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("axis,shape", [(-1, (6, 4)), (-1, (5, 3, 4)), (None, (6, 4)), ((1, 2), (5, 3, 4))],
                         ids=["last-rank2", "last-rank3", "none", "axes12"])
def test_normalization_gradient_after_adapt(axis, shape, invert):
    rng = np.random.default_rng(24)
    data = rng.normal(2.0, 3.0, size=(20,) + shape[1:])
    layer = Normalization(axis=axis, invert=invert)
    layer.adapt(data)
    reduce = tuple(range(data.ndim)) if axis is None else tuple(
        a for a in range(data.ndim) if a not in {b % data.ndim for b in ((axis,) if isinstance(axis, int) else axis)})
    mean, std = data.mean(axis=reduce, keepdims=True), data.std(axis=reduce, keepdims=True)
    x = rng.normal(size=shape)
    y = layer.forward(x)[0]
    np.testing.assert_allclose(y, mean + x * std if invert else (x - mean) / std, rtol=1e-12)
    np.testing.assert_allclose(layer(x), y, rtol=1e-14)
    # the statistics are non-trainable (Keras does not train them): only dx is checked
    assert layer.trainable_weights == []
    check_forward_backward(lambda: layer.forward(x), x, [], rng, f"Normalization(axis={axis}, invert={invert})")


def test_normalization_given_mean_and_variance_and_round_trip():
    rng = np.random.default_rng(25)
    x = rng.normal(size=(4, 3))
    norm = Normalization(mean=[1.0, 2.0, 3.0], variance=[4.0, 1.0, 0.25])
    inv = Normalization(mean=[1.0, 2.0, 3.0], variance=[4.0, 1.0, 0.25], invert=True)
    np.testing.assert_allclose(norm(x), (x - [1, 2, 3]) / [2, 1, 0.5], rtol=1e-14)
    np.testing.assert_allclose(inv(norm(x)), x, rtol=1e-12, atol=1e-14)
    check_forward_backward(lambda: norm.forward(x), x, [], rng, "Normalization(mean, variance)")


# --- a whole model ----------------------------------------------------------------------------------
def check_model(model, loss, x, y, training=True, reseed=None, what="model"):
    """∂loss/∂w for every trainable weight and ∂loss/∂x through model.forward + value_and_grad + backward."""

    def forward():
        if reseed is not None:
            glassnet.set_random_seed(reseed)
        return model.forward(x, training=training)

    y_pred, backward = forward()
    value, dy = loss.value_and_grad(y, y_pred)
    zero_grads(model.weights)
    dx = backward(dy)
    grads = {id(w): w.grad.copy() for w in model.trainable_weights}

    def J():
        return float(loss(y, forward()[0]))

    assert value == pytest.approx(J(), rel=1e-12)
    assert dx.shape == x.shape
    assert_grad(dx, J, x, f"{what} d/dx")
    for w in model.trainable_weights:
        assert_grad(grads[id(w)], J, w.value, f"{what} d/d{w.path}")
    for w in model.non_trainable_weights:  # Normalization's statistics receive no gradient
        assert not np.any(w.grad)


def test_sequential_model_gradient():
    """Normalization → Dense relu → Dropout(0) → Dense sigmoid, binary crossentropy."""
    rng = np.random.default_rng(26)
    x = rng.normal(3.0, 2.0, size=(8, 4))
    y = rng.integers(0, 2, (8, 1)).astype(np.float64)
    norm = Normalization()
    norm.adapt(rng.normal(3.0, 2.0, size=(50, 4)))
    model = glassnet.Sequential([Input((4,)), norm, Dense(6, activation="relu"), Dropout(0.0),
                                 Dense(1, activation="sigmoid")])
    hidden = model.layers[1]
    for _ in range(100):  # relu pre-activations away from 0
        hidden.set_weights([rng.normal(0, 0.8, (4, 6)), rng.normal(0, 0.5, 6)])
        z = norm.call(x) @ hidden.kernel.value + hidden.bias.value
        if away_from_kinks(z, "relu", 1e-3):
            break
    assert away_from_kinks(z, "relu", 1e-3)
    assert np.any(z < 0) and np.any(z > 0)
    model.layers[3].set_weights([rng.normal(0, 0.8, (6, 1)), rng.normal(0, 0.5, 1)])
    assert len(model.trainable_weights) == 4
    check_model(model, losses.BinaryCrossentropy(), x, y, what="Sequential bce")
    check_model(model, losses.get("mse"), x, y, what="Sequential mse")
    np.testing.assert_allclose(model.forward(x, training=True)[0], model.predict(x, verbose=0), rtol=1e-14)


def test_sequential_model_gradient_with_dropout_reshape_softmax():
    """Dropout(0.3) held fixed by re-seeding, Reshape and Flatten, softmax + sparse crossentropy."""
    rng = np.random.default_rng(27)
    x = rng.normal(size=(5, 6))
    labels = rng.integers(0, 3, 5)
    model = glassnet.Sequential([Input((6,)), Reshape((2, 3)), Dense(4, activation="tanh"), Flatten(),
                                 Dropout(0.3), Dense(3, activation="softmax")])
    model.set_weights([rng.normal(0, 0.7, w.shape) for w in model.weights])
    check_model(model, losses.SparseCategoricalCrossentropy(), x, labels, reseed=5, what="Sequential scce")
    check_model(model, losses.CategoricalCrossentropy(label_smoothing=0.1), x, one_hot(labels), reseed=5,
                what="Sequential cce")


@pytest.mark.parametrize("case", ["int_labels", "column_labels", "float_labels", "from_logits", "axis_1"])
def test_sparse_crossentropy_one_conversion_equals_the_general_path(case):
    """SparseCategoricalCrossentropy.value_and_grad turns labels into one-hot targets once (dense_form); the
    general path (Loss.value_and_grad) converts them for the value and again for the gradient. Same numbers."""
    from glassnet import losses
    rng = np.random.default_rng(3)
    p = rng.random((16, 5), dtype=np.float32) + 0.05
    p /= p.sum(-1, keepdims=True)
    y = rng.integers(0, 5, 16)
    kwargs = {}
    if case == "column_labels":
        y = y.reshape(-1, 1)
    elif case == "float_labels":
        y = y.astype("float32")
    elif case == "from_logits":
        p = rng.normal(size=(16, 5)).astype("float32")
        kwargs["from_logits"] = True
    elif case == "axis_1":  # classes on axis 1 of (batch, classes, steps)
        p = rng.random((4, 5, 3), dtype=np.float32) + 0.05
        p /= p.sum(1, keepdims=True)
        y = rng.integers(0, 5, (4, 3))
        kwargs["axis"] = 1
    loss = losses.SparseCategoricalCrossentropy(**kwargs)
    fast = loss.value_and_grad(y, p)
    general = losses.Loss.value_and_grad(loss, y, p)
    assert fast[0] == general[0]
    np.testing.assert_array_equal(fast[1], general[1])
    assert fast[1].dtype == general[1].dtype == p.dtype and fast[1].shape == p.shape


def test_sparse_crossentropy_still_rejects_bad_labels():
    from glassnet import losses
    p = np.full((3, 4), 0.25, np.float32)
    loss = losses.SparseCategoricalCrossentropy()
    with pytest.raises(ValueError, match="expects integer class labels"):
        loss.value_and_grad(np.array([0.5, 1.0, 2.0], np.float32), p)
    with pytest.raises(ValueError, match=r"labels in \[0, 4\] but the model outputs 4 classes"):
        loss.value_and_grad(np.array([0, 4, 1]), p)
