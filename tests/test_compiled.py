"""The compiled fast path (engine.compiled, numba) equals the NumPy reference it replaces.

Each kernel is run with the compiled path on and off on the same inputs: element-by-element rules
(Adam, relu's backward, max-pooling, a dense layer's bias + relu, the crossentropy gradients) must agree
bit for bit, sums whose order differs (col2im, overlapping pooling windows) and libm's exp/log (softmax,
crossentropy values) to float tolerance; then whole models train to the same weights.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import glassnet
from glassnet import layers as L
from glassnet import optimizers as O
from glassnet.activations import relu
from glassnet.engine import compiled, kernels

pytest.importorskip("numba")


def both(fn):
    """fn() with the compiled kernels on, then off."""
    with compiled.use_compiled(True):
        on = fn()
    with compiled.use_compiled(False):
        off = fn()
    return on, off


def count_kernel_calls(monkeypatch, *names):
    """Wrap the named kernels so that each call is counted; returns {name: calls}."""
    from glassnet.engine import _numba_kernels
    calls = {}
    for name in names:
        def counted(*args, _f=getattr(_numba_kernels, name), _name=name):
            calls[_name] = calls.get(_name, 0) + 1
            return _f(*args)
        monkeypatch.setattr(_numba_kernels, name, counted)
    return calls


def run_layer(layer, x, seed):
    """One forward and backward pass of ``layer`` on ``x`` with a random dy: output, dx and weight gradients."""
    for w in layer.weights:
        w.grad[...] = 0
    y, backward = layer.forward(x, training=True)
    dx = backward(np.random.default_rng(seed).normal(size=y.shape).astype(x.dtype))
    return [y, dx] + [w.grad.copy() for w in layer.weights]


def test_compiled_path_is_available_and_on_by_default():
    assert compiled.available() and compiled.enabled()
    with compiled.use_compiled(False):
        assert not compiled.enabled()
        assert compiled.kernels_for(np.ones(10_000, "float32")) is None
    k = compiled.kernels_for(np.ones(10_000, "float32"))
    assert k is not None
    assert compiled.kernels_for(np.ones(10, "float32")) is None            # too small to pay for the call
    assert compiled.kernels_for(np.ones(10_000, "float16")) is None        # no float16 kernels
    assert compiled.kernels_for(np.ones((200, 200), "float32").T) is None  # not C-contiguous
    assert compiled.kernels_for(np.ones(10_000, "float32"), np.ones(10_000, "float64")) is None


# --- Adam -----------------------------------------------------------------------------------------
class _W:  # the minimum of a Weight that flat.pack needs
    def __init__(self, value):
        self.value = self._value = value
        self.grad = np.zeros_like(value)
        self.constraint = None
        self.shape, self.dtype, self.size = value.shape, value.dtype, value.size


def _adam_run(make, n, dtype, steps=40):
    rng = np.random.default_rng(3)
    opt = make()
    opt.build([_W(rng.normal(size=n).astype(dtype))])
    for step in range(steps):
        g = rng.normal(size=n).astype(dtype)
        g[: n // 3] = 0 if step > 5 else g[: n // 3]  # dead units: their moments decay towards subnormals
        opt.groups[0].grad[...] = g
        opt.apply()
    return opt.groups[0].value.copy(), opt.slots[0]["m"].copy(), opt.slots[0]["v"].copy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [7, 5000, 100_003])  # a whole vector, and one past the blockwise CHUNK
@pytest.mark.parametrize("make", [lambda: O.Adam(0.01), lambda: O.AdamW(0.01), lambda: O.Adam(0.01, epsilon=1e-3)])
def test_fused_adam_equals_the_numpy_rule_bit_for_bit(make, n, dtype):
    on, off = both(lambda: _adam_run(make, n, dtype))
    for a, b in zip(on, off):
        np.testing.assert_array_equal(a, b)
    assert on[1].dtype == np.dtype(dtype)


def test_fused_adam_flushes_decaying_moments_as_the_numpy_path_does():
    n = 100_003  # blockwise: flush_to_zero every FLUSH_EVERY steps
    on, off = both(lambda: _adam_run(lambda: O.Adam(0.01), n, "float32", steps=900))  # 0.9^k reaches 2e-31 after ~670 steps
    m = on[1]
    assert np.count_nonzero(m[: n // 3]) == 0  # decayed moments of the dead third were flushed ...
    assert not np.any((m != 0) & (np.abs(m) < np.finfo(np.float32).tiny))  # ... and none is subnormal
    for a, b in zip(on, off):
        np.testing.assert_array_equal(a, b)


def _sgd_run(make, n, dtype, steps=40):
    rng = np.random.default_rng(3)
    opt = make()
    opt.build([_W(rng.normal(size=n).astype(dtype))])
    for _ in range(steps):
        opt.groups[0].grad[...] = rng.normal(size=n).astype(dtype)
        opt.apply()
    return opt.groups[0].value.copy(), opt.slots[0]["momentum"].copy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [7, 100_003])
@pytest.mark.parametrize("make", [lambda: O.SGD(0.01, momentum=0.9), lambda: O.SGD(0.01, momentum=0.9, nesterov=True),
                                  lambda: O.SGD(0.01, momentum=0.5, nesterov=True, decay=1e-3)])
def test_fused_sgd_momentum_equals_the_numpy_rule_bit_for_bit(make, n, dtype, monkeypatch):
    calls = count_kernel_calls(monkeypatch, "sgd_momentum_step")
    on, off = both(lambda: _sgd_run(make, n, dtype))
    for a, b in zip(on, off):
        np.testing.assert_array_equal(a, b)
    assert calls.get("sgd_momentum_step", 0) == (40 if n >= compiled.MIN_ELEMENTS else 0)  # small: NumPy


def test_rules_without_a_kernel_keep_the_numpy_path():
    class MyAdam(O.Adam):
        def update(self, w, g, slots, lr, t):
            super().update(w, g, slots, lr, t)

    w = np.ones(10, "float32")
    slots = {"m": np.zeros_like(w), "v": np.zeros_like(w)}
    assert O.Adam(amsgrad=True)._fused_update(w, w, dict(slots, v_hat=w.copy()), np.float32(0.1), 1, False) is False
    assert MyAdam()._fused_update(w, w, slots, np.float32(0.1), 1, False) is False
    assert O.Adam()._fused_update(w, w, slots, np.float32(0.1), 1, False) is True
    assert O.SGD(0.1)._fused_update(w, w, {}, np.float32(0.1), 1, False) is False  # no momentum: one ufunc
    assert O.SGD(0.1, momentum=0.9)._fused_update(w, w, {"momentum": w.copy()}, np.float32(0.1), 1, False) is True
    assert O.SGD.fused_min_size > 100 and O.Adam.fused_min_size == 0  # the tutorial's 101 values stay on NumPy


# --- relu -----------------------------------------------------------------------------------------
def test_relu_backward_kernel_equals_the_numpy_product_with_nan_and_signed_zeros():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(64, 9, 9, 8)).astype("float32")
    z.flat[::97] = 0.0
    dy = rng.normal(size=z.shape).astype("float32")
    dy.flat[::89] = np.nan
    dy.flat[1::89] = -0.0
    y, backward = relu.forward(z)
    on, off = both(lambda: backward(dy))
    np.testing.assert_array_equal(on, off)  # NaN where NaN
    assert np.array_equal(np.signbit(on), np.signbit(off))


# --- the dense layer's bias + relu, softmax, crossentropy -----------------------------------------------
def _awkward(rng, shape, dtype):
    """Normal values with NaN, ±inf, ±0 and exact zeros of z + b sprinkled in."""
    a = rng.normal(size=shape).astype(dtype)
    a.flat[::61] = np.nan
    a.flat[1::67] = np.inf
    a.flat[2::71] = -np.inf
    a.flat[3::73] = -0.0
    a.flat[4::79] = 0.0
    return a


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NaN/inf on purpose
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows,units", [(1, 4201), (40, 106), (5000, 1)])  # >= 4096 outputs: the kernels apply
def test_dense_bias_relu_kernels_equal_the_numpy_path_bit_for_bit(dtype, rows, units, monkeypatch):
    calls = count_kernel_calls(monkeypatch, "bias_relu_", "relu_grad_colsum")
    rng = np.random.default_rng(1)
    glassnet.set_random_seed(0)
    layer = L.Dense(units, activation="relu", dtype=dtype)
    # one unit: clean inputs (one NaN row would make every sum NaN); its bias gradient sums one contiguous
    # column, which NumPy adds pairwise, not row after row
    x = _awkward(rng, (rows, 30), dtype) if units > 1 else rng.normal(size=(rows, 30)).astype(dtype)
    layer.build(x.shape)
    layer.bias.value[...] = rng.normal(size=layer.units)
    if units > 3:
        layer.bias.value[:3] = [-np.inf, np.nan, 0.0]
    on, off = both(lambda: run_layer(layer, x, 2))
    for a, b in zip(on, off):  # y, dx, dW, db
        np.testing.assert_array_equal(a, b)
        assert np.array_equal(np.signbit(a), np.signbit(b))
    on, off = both(lambda: layer.call(x))  # inference: the same one-pass bias + relu
    np.testing.assert_array_equal(on, off)
    assert np.array_equal(np.signbit(on), np.signbit(off))
    assert calls == {"bias_relu_": 2, "relu_grad_colsum": 1}, calls


def test_relu_bias_gradient_kernel_sums_from_zero_as_numpy_does():
    from glassnet.engine import _numba_kernels
    dy = -np.ones((6, 3), "float32")
    y = np.ones((6, 3), "float32")
    y[:, 1] = 0  # a dead unit: dy * 0 = -0.0 in every row, and 0 + (-0.0) + ... = +0.0
    dz, db = _numba_kernels.relu_grad_colsum(dy, y)
    reference = np.add.reduce(dy * (y > 0), axis=0)
    np.testing.assert_array_equal(db, reference)
    assert np.signbit(db).tolist() == np.signbit(reference).tolist() == [True, False, True]


def test_dense_relu_backward_falls_back_for_gradients_the_kernel_cannot_take():
    rng = np.random.default_rng(2)
    glassnet.set_random_seed(0)
    layer = L.Dense(300, activation="relu")
    x = rng.normal(size=(20, 8)).astype("float32")
    layer.build(x.shape)
    layer.bias.value[...] = rng.normal(size=300)
    dy = rng.normal(size=(300, 20)).astype("float32").T  # not C-contiguous

    def run(dy):
        for w in layer.weights:
            w.grad[...] = 0
        y, backward = layer.forward(x, training=True)
        return [y, backward(dy)] + [w.grad.copy() for w in layer.weights]

    for grad in (dy, dy.astype("float64")):
        on, off = both(lambda: run(grad))
        for a, b in zip(on, off):
            np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NaN/inf on purpose
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape,compiled_rows", [((600, 3), True), ((64, 10), True), ((5, 4, 32), True),
                                                 ((16, 33), False), ((5, 1000), False)])
def test_softmax_kernel_equals_the_numpy_softmax(dtype, shape, compiled_rows, monkeypatch):
    from glassnet.activations import softmax
    calls = count_kernel_calls(monkeypatch, "softmax_rows")
    rng = np.random.default_rng(3)
    x = (rng.normal(size=shape) * 5).astype(dtype)
    x.reshape(-1, shape[-1])[1, 0] = np.nan    # a NaN row
    x.reshape(-1, shape[-1])[2, -1] = -np.inf  # exp(-inf) = 0
    x.reshape(-1, shape[-1])[3, 0] = np.inf    # inf - inf: a NaN row
    on, off = both(lambda: softmax(x))
    tol = 1e-6 if dtype == "float32" else 1e-14
    np.testing.assert_allclose(on, off, rtol=tol, atol=tol)  # libm's exp vs NumPy's: last-bit differences
    assert np.array_equal(np.isnan(on), np.isnan(off))
    # rows of <= 32 (a classifier's output) from 512 values take the kernel; wider rows NumPy's vectorized exp
    assert calls.get("softmax_rows", 0) == int(compiled_rows), calls
    with compiled.use_compiled(True):
        softmax(np.ascontiguousarray(x.reshape(-1, shape[-1])[:2]))  # below 512 values: NumPy
    assert calls.get("softmax_rows", 0) == int(compiled_rows), calls


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NaN/inf on purpose
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("label_dtype,label_shape", [("int64", (200,)), ("int32", (200, 1)), ("uint8", (200,))])
def test_sparse_crossentropy_kernel_equals_the_numpy_loss(dtype, label_dtype, label_shape, monkeypatch):
    from glassnet.losses import SparseCategoricalCrossentropy
    calls = count_kernel_calls(monkeypatch, "sparse_cce")
    rng = np.random.default_rng(4)
    p = rng.random((200, 7)).astype(dtype)
    p /= p.sum(axis=1, keepdims=True)
    p[0] = [1, 0, 0, 0, 0, 0, 0]        # q at the clip bounds: the clipped entries pass no gradient
    p[1, 2] = 1e-9
    p[2, 3] = np.nan                    # a NaN row stays NaN
    p[3] = [1e-30, 2e-30, 3e-30, 1e-30, 1e-30, 1e-30, 1e-30]  # tiny sums
    p[4, 5] = np.inf                    # inf / inf: NaN
    p[5] = 0                            # 0 / 0: NaN
    y = rng.integers(0, 7, label_shape).astype(label_dtype)
    y.flat[0], y.flat[1] = 1, 2         # the labels of the clipped probabilities
    loss = SparseCategoricalCrossentropy()
    (v_on, g_on), (v_off, g_off) = both(lambda: loss.value_and_grad(y, p))
    assert calls == {"sparse_cce": 1}
    np.testing.assert_array_equal(g_on, g_off)  # the gradient has no log: bit for bit
    assert g_on.dtype == g_off.dtype == p.dtype
    assert np.isnan(v_on) and np.isnan(v_off)
    f = p.dtype.type  # the per-row values too (the loss reduces them to one number)
    with compiled.use_compiled(True):
        k = compiled.kernels_for(p, min_elements=0)
        values_on = k.sparse_cce(y.reshape(-1).astype("int64"), p, f(0.005), f(1e-7), f(1 - 1e-7))[0]
    values_off = glassnet.losses.sparse_categorical_crossentropy(y, p)
    np.testing.assert_allclose(values_on, values_off, rtol=1e-6 if dtype == "float32" else 1e-14)
    assert np.isnan(values_on).tolist() == np.isnan(values_off).tolist() == [i in (2, 4, 5) for i in range(200)]
    good = np.ones(200, bool)
    good[[2, 4, 5]] = False
    (v_on, _), (v_off, _) = both(lambda: loss.value_and_grad(y[good], p[good]))
    assert v_on == pytest.approx(v_off, rel=1e-6 if dtype == "float32" else 1e-14)


@pytest.mark.parametrize("classes", [1, 129, 300, 1100])
def test_sparse_crossentropy_kernel_on_rows_summed_in_blocks_and_halves(classes, monkeypatch):
    from glassnet.losses import SparseCategoricalCrossentropy
    calls = count_kernel_calls(monkeypatch, "sparse_cce")
    rng = np.random.default_rng(8)
    p = (rng.random((max(2, 600 // classes), classes)) * 10.0 ** rng.uniform(-6, 0, (1, classes))).astype("float32")
    y = rng.integers(0, classes, len(p))
    (v_on, g_on), (v_off, g_off) = both(lambda: SparseCategoricalCrossentropy().value_and_grad(y, p))
    # rows of > 128 sum as NumPy's pairwise halves (the stack walk in _pairwise_sum): the gradient bit for bit
    np.testing.assert_array_equal(g_on, g_off)
    assert v_on == pytest.approx(v_off, rel=1e-6)
    assert calls == {"sparse_cce": 1}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # inf - inf, 0 * log(0) on purpose
def test_compiled_kernels_step_aside_for_strict_errstate_byte_order_and_zero_epsilon(monkeypatch):
    from glassnet.activations import softmax
    from glassnet.engine import backend
    from glassnet.losses import SparseCategoricalCrossentropy
    calls = count_kernel_calls(monkeypatch, "softmax_rows", "sparse_cce")
    rng = np.random.default_rng(9)
    z = rng.normal(size=(100, 10)).astype("float32")
    z[3, 0] = np.inf
    with compiled.use_compiled(True):
        with np.errstate(all="raise"), pytest.raises(FloatingPointError):  # inf - inf, as without numba
            softmax(z)
        on_big_endian = softmax(z[4:].astype(">f4"))  # numba cannot take it: NumPy's path
    with compiled.use_compiled(False):
        np.testing.assert_array_equal(on_big_endian, softmax(z[4:]))
    assert calls == {}, calls  # neither call reached a kernel
    p = np.zeros((100, 10), "float32")
    p[:, 0] = 1  # q = 0 for nine classes: with eps = 0, 0·log(0) = NaN in every row
    y = np.zeros(100, "int64")
    old = backend.epsilon()
    backend.set_epsilon(0.0)
    try:
        with compiled.use_compiled(True):
            value, _ = SparseCategoricalCrossentropy().value_and_grad(y, p)
    finally:
        backend.set_epsilon(old)
    assert np.isnan(value) and calls == {}, (value, calls)
    with compiled.use_compiled(True):  # and the default epsilon does take the kernel
        value, _ = SparseCategoricalCrossentropy().value_and_grad(y, p)
    assert np.isfinite(value) and calls == {"sparse_cce": 1}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN/inf on purpose
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("classes", [7, 200])
def test_categorical_crossentropy_kernel_equals_the_numpy_loss(dtype, classes, monkeypatch):
    from glassnet.losses import CategoricalCrossentropy, categorical_crossentropy
    calls = count_kernel_calls(monkeypatch, "dense_cce")
    rng = np.random.default_rng(10)
    p = rng.random((100, classes)).astype(dtype)
    p /= p.sum(axis=1, keepdims=True)
    p[0, :] = 0
    p[0, 1] = 1                           # q at the clip bounds
    p[2, 3] = np.nan                      # a NaN row
    p[4, 5] = np.inf                      # inf / inf
    t = np.eye(classes, dtype=dtype)[rng.integers(0, classes, 100)]
    t[0] = 0
    t[0, 0] = 1                           # the label's q is 0: clipped to eps
    t[6] = rng.random(classes)            # soft targets
    t[7, 2] = -0.5                        # negative and NaN targets compute as in NumPy
    t[8, 3] = np.nan
    loss = CategoricalCrossentropy()
    (v_on, g_on), (v_off, g_off) = both(lambda: loss.value_and_grad(t, p))
    assert calls == {"dense_cce": 1}
    np.testing.assert_array_equal(g_on, g_off)  # the gradient has no log: bit for bit
    assert np.isnan(v_on) and np.isnan(v_off)
    f = p.dtype.type
    with compiled.use_compiled(True):
        values_on = compiled.kernels_for(p, min_elements=0).dense_cce(t, p, f(0.01), f(1e-7), f(1 - 1e-7))[0]
    values_off = categorical_crossentropy(t, p)
    np.testing.assert_allclose(values_on, values_off, rtol=1e-6 if dtype == "float32" else 1e-14)
    assert np.array_equal(np.isnan(values_on), np.isnan(values_off))
    finite = ~np.isnan(values_off)
    assert np.array_equal(np.signbit(values_on[finite]), np.signbit(values_off[finite]))
    # integer one-hot targets are cast as the NumPy path casts them; the options the kernel lacks use NumPy
    ints = np.eye(classes, dtype="int64")[rng.integers(0, classes, 100)]
    good = p[9:]
    (v_on, g_on), (v_off, g_off) = both(lambda: loss.value_and_grad(ints[9:], good))
    np.testing.assert_array_equal(g_on, g_off)
    assert v_on == pytest.approx(v_off, rel=1e-6)
    assert calls == {"dense_cce": 3}  # (the loss both times, the direct call above)
    with compiled.use_compiled(True):
        CategoricalCrossentropy(label_smoothing=0.1).value_and_grad(ints[9:], good)
        CategoricalCrossentropy(from_logits=True).value_and_grad(ints[9:], good)
        with pytest.raises(ValueError, match="broadcast"):  # targets of another shape: NumPy's error
            loss.value_and_grad(ints[9:, :-1], good)
    assert calls == {"dense_cce": 3}, calls


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # log(0), log(-x) on purpose
def test_crossentropy_kernels_leave_odd_options_targets_and_subclasses_to_the_numpy_path(monkeypatch):
    from glassnet.engine import backend
    from glassnet.losses import CategoricalCrossentropy, SparseCategoricalCrossentropy
    calls = count_kernel_calls(monkeypatch, "sparse_cce", "dense_cce")
    rng = np.random.default_rng(11)
    p = rng.random((100, 8)).astype("float32")
    p /= p.sum(axis=1, keepdims=True)
    labels = rng.integers(0, 8, 100)
    onehot = np.eye(8, dtype="float32")[labels]

    def same(loss, y, probs):
        (v_on, g_on), (v_off, g_off) = both(lambda: loss.value_and_grad(y, probs))
        np.testing.assert_array_equal(g_on, g_off)  # (values: libm's log when the kernel runs)
        assert v_on == pytest.approx(v_off, rel=1e-6) or (np.isnan(v_on) and np.isnan(v_off)), (v_on, v_off)

    soft64 = rng.random((100, 8))  # float64 soft targets: cast to float32 first, as the NumPy path does
    same(CategoricalCrossentropy(), soft64, p)
    assert calls == {"dense_cce": 1}
    old = backend.epsilon()
    try:
        for eps in (0.0, 1.0, 1.5):  # clip bounds at or below 0: NaN losses on the NumPy path
            backend.set_epsilon(eps)
            same(CategoricalCrossentropy(), onehot, p)
            same(SparseCategoricalCrossentropy(), labels, p)
    finally:
        backend.set_epsilon(old)
    for axis in (0, 1.0, True):  # another axis, or not an int: NumPy's results, or NumPy's errors both ways
        for loss, y in ((CategoricalCrossentropy(axis=axis), onehot),
                        (SparseCategoricalCrossentropy(axis=axis), labels)):
            errors = []
            for flag in (True, False):
                with compiled.use_compiled(flag):
                    try:
                        loss.value_and_grad(y, p)
                    except (TypeError, ValueError) as e:
                        errors.append(type(e))
            assert len(errors) in (0, 2) and len(set(errors)) <= 1, (axis, errors)
            if not errors:
                same(loss, y, p)
    p3, onehot3 = p.reshape(25, 4, 8), onehot.reshape(25, 4, 8)  # rank 3
    same(CategoricalCrossentropy(), onehot3, p3)
    same(SparseCategoricalCrossentropy(), labels.reshape(25, 4), p3)
    assert calls == {"dense_cce": 1}, calls

    class Doubled(CategoricalCrossentropy):  # a subclass's own call/grad are what it trains with
        def call(self, y_true, y_pred):
            return 2 * super().call(y_true, y_pred)

        def grad(self, y_true, y_pred, dv):
            return 2 * super().grad(y_true, y_pred, dv)

    with compiled.use_compiled(True):
        value, grad = Doubled().value_and_grad(onehot, p)
        base_value, base_grad = CategoricalCrossentropy().value_and_grad(onehot, p)
    assert value == pytest.approx(float(Doubled()(onehot, p)), rel=1e-6)
    assert value == pytest.approx(2 * base_value, rel=1e-6)
    np.testing.assert_allclose(grad, 2 * base_grad, rtol=1e-6)
    assert calls == {"dense_cce": 2}, calls  # the base class's call only


def test_sparse_crossentropy_kernel_leaves_errors_and_other_cases_to_the_numpy_path(monkeypatch):
    from glassnet.losses import SparseCategoricalCrossentropy
    calls = count_kernel_calls(monkeypatch, "sparse_cce")
    rng = np.random.default_rng(5)
    p = rng.random((100, 10)).astype("float32")
    bad = rng.integers(0, 10, 100)
    bad[57] = 10
    with compiled.use_compiled(True), pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        SparseCategoricalCrossentropy().value_and_grad(bad, p)
    assert calls == {"sparse_cce": 1}  # the kernel found the bad label; the NumPy path raised the error
    y = rng.integers(0, 10, 100)
    for case in [(y.astype("float32"), p, {}), (y, np.ascontiguousarray(p.T).T, {}), (y, p, {"from_logits": True})]:
        labels, probs, options = case  # float labels, a non-contiguous y_pred, logits
        with compiled.use_compiled(True):
            on = SparseCategoricalCrossentropy(**options).value_and_grad(labels, probs)
        with compiled.use_compiled(False):
            off = SparseCategoricalCrossentropy(**options).value_and_grad(labels, probs)
        if options:  # logits go through softmax, whose kernel's exp may differ by a few ulp
            assert on[0] == pytest.approx(off[0], rel=1e-6)
            np.testing.assert_allclose(on[1], off[1], rtol=1e-5, atol=1e-9)
        else:
            assert on[0] == off[0]
            np.testing.assert_array_equal(on[1], off[1])
    assert calls == {"sparse_cce": 1}


# --- max pooling ----------------------------------------------------------------------------------
POOLS = [((2, 2), (2, 2), "valid"), ((2, 2), (2, 2), "same"), ((3, 3), (2, 2), "valid"), ((3, 2), (1, 2), "same"),
         ((2, 3), (3, 1), "valid")]


@pytest.mark.parametrize("pool,strides,padding", POOLS)
@pytest.mark.parametrize("size", [(8, 8), (11, 7)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the NaN and Inf in dy, on purpose
def test_max_pool_kernels_equal_the_numpy_reference(pool, strides, padding, size, dtype):
    rng = np.random.default_rng(1)
    x = rng.integers(-3, 4, size=(40, *size, 6)).astype(dtype)  # small integers: many tied maxima
    x[0, 0, 0, 0] = np.nan  # a window with NaN: no gradient from it, as np.maximum's NaN compares unequal
    pads = kernels.paddings(size, pool, strides, (1, 1), padding)

    def run():
        y, memo = kernels.max_pool(x, pool, strides, pads)
        dy = np.random.default_rng(2).normal(size=y.shape).astype(dtype)
        dy[1, 0, 0, 0], dy[2, 0, 0, 1], dy[3, 0, 0, 2] = np.nan, np.inf, -0.0  # NaN·0 = NaN, 0·(−x) = −0.0
        return y, kernels.max_pool_backward(dy, y, memo, x.shape, pool, strides, pads)

    assert compiled.kernels_for(x) is not None  # large enough for the compiled path
    (y_on, dx_on), (y_off, dx_off) = both(run)
    np.testing.assert_array_equal(y_on, y_off)
    overlapping = any(s < k for s, k in zip(strides, pool))
    if overlapping:  # a cell in two windows adds two gradients, in another order
        np.testing.assert_allclose(dx_on, dx_off, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(np.isnan(dx_on), np.isnan(dx_off))
    else:
        np.testing.assert_array_equal(dx_on, dx_off)
        assert np.array_equal(np.signbit(dx_on), np.signbit(dx_off))


# --- convolution: col2im -------------------------------------------------------------------------
CONVS = [dict(kernel_size=3), dict(kernel_size=(3, 2), strides=(2, 1), padding="same"),
         dict(kernel_size=2, dilation_rate=2), dict(kernel_size=3, strides=2, padding="same")]


@pytest.mark.parametrize("config", CONVS)
@pytest.mark.parametrize("channels", [1, 5])
def test_conv2d_forward_and_gradients_equal_the_numpy_reference(config, channels):
    rng = np.random.default_rng(4)
    glassnet.set_random_seed(0)
    layer = L.Conv2D(7, activation="relu", **config)
    x = rng.normal(size=(30, 12, 11, channels)).astype("float32")
    layer.build(x.shape)
    (y_on, dx_on, dw_on, db_on), (y_off, dx_off, dw_off, db_off) = both(lambda: run_layer(layer, x, 5))
    np.testing.assert_array_equal(y_on, y_off)  # the forward has no kernel: the same im2col and GEMM
    np.testing.assert_allclose(dx_on, dx_off, rtol=1e-5, atol=1e-5)  # one GEMM + col2im vs per-tap GEMMs
    np.testing.assert_allclose(dw_on, dw_off, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(db_on, db_off, rtol=1e-5, atol=1e-5)


# --- whole models ---------------------------------------------------------------------------------
def _train(build, x, y):
    glassnet.set_random_seed(7)
    model = build()
    model.compile(optimizer=O.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
    return [w.copy() for w in model.get_weights()]


def test_a_convnet_trains_to_the_same_weights_with_and_without_the_compiled_path(monkeypatch):
    calls = count_kernel_calls(monkeypatch, "adam_step", "max_pool2d", "max_pool2d_backward", "col2im2d")
    rng = np.random.default_rng(0)
    x = rng.random((160, 14, 14, 1), dtype=np.float32)
    y = rng.integers(0, 10, 160)

    def build():
        return glassnet.Sequential([glassnet.Input((14, 14, 1)), L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(2),
                                    L.Conv2D(16, 3, activation="relu"), L.MaxPooling2D(2), L.Flatten(),
                                    L.Dense(10, activation="softmax")])

    on, off = both(lambda: _train(build, x, y))
    for a, b in zip(on, off):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # the kernels did run in the compiled pass (not relu_grad: relu moves past the pools, whose outputs are
    # too small for it here; the relu test above covers it)
    assert {"adam_step", "max_pool2d", "max_pool2d_backward", "col2im2d"} <= set(calls), calls


CLASSIFIER_KERNELS = ("adam_step", "bias_relu_", "relu_grad_colsum", "softmax_rows", "sparse_cce")


def _ten_classes(rows):
    rng = np.random.default_rng(0)
    return rng.random((rows, 100), dtype=np.float32), rng.integers(0, 10, rows)


def test_an_mlp_trains_to_the_same_weights_with_and_without_the_compiled_path(monkeypatch):
    calls = count_kernel_calls(monkeypatch, *CLASSIFIER_KERNELS)
    x, y = _ten_classes(256)

    def build():  # batches of 32 x 160 hidden units: the dense layers' bias + relu take the compiled path
        return glassnet.Sequential([glassnet.Input((100,)), L.Dense(160, activation="relu"),
                                    L.Dense(160, activation="relu"), L.Dense(10, activation="softmax")])

    on, off = both(lambda: _train(build, x, y))
    for a, b in zip(on, off):
        np.testing.assert_array_equal(a, b)  # Adam, bias + relu and relu' + Σdz are bit-exact; same GEMMs
    assert calls.get("adam_step") and calls.get("bias_relu_") and calls.get("relu_grad_colsum"), calls
    # 32 x 10 outputs are below the softmax / crossentropy kernels' threshold: those stayed on NumPy
    assert not calls.get("softmax_rows") and not calls.get("sparse_cce"), calls


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy"])
def test_a_classifier_with_large_batches_trains_to_the_same_weights_with_every_kernel(loss, monkeypatch):
    calls = count_kernel_calls(monkeypatch, *CLASSIFIER_KERNELS, "dense_cce")
    x, y = _ten_classes(512)
    if loss == "categorical_crossentropy":
        y = np.eye(10, dtype="float32")[y]  # one-hot targets (Keras 2's MNIST examples)

    def build():  # batches of 128 x 10 outputs: softmax and the crossentropy take their kernels too
        return glassnet.Sequential([glassnet.Input((100,)), L.Dense(64, activation="relu"),
                                    L.Dense(10, activation="softmax")])

    def train():
        glassnet.set_random_seed(7)
        model = build()
        model.compile(optimizer=O.Adam(1e-3), loss=loss, metrics=["accuracy"])
        history = model.fit(x, y, batch_size=128, epochs=3, verbose=0, shuffle=False).history
        return history, [w.copy() for w in model.get_weights()], model.predict(x, batch_size=256, verbose=0)

    (h_on, w_on, p_on), (h_off, w_off, p_off) = both(train)
    for a, b in zip(w_on, w_off):  # libm's exp and log differ from NumPy's by a few ulp
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p_on, p_off, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_on["loss"], h_off["loss"], rtol=1e-6)
    assert h_on["accuracy"] == h_off["accuracy"]
    loss_kernel = "sparse_cce" if loss.startswith("sparse") else "dense_cce"
    assert set(calls) == set(CLASSIFIER_KERNELS) - {"sparse_cce"} | {loss_kernel}, calls


# --- switches -------------------------------------------------------------------------------------
def _python(code, **env):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_glassnet_does_not_import_numba_and_the_environment_switch_turns_the_kernels_off():
    code = ("import sys, glassnet; from glassnet.engine import compiled; before = 'numba' in sys.modules; "
            "print(before, compiled.enabled())")
    assert _python(code) == "False True"
    # nor does a 1-row predict (the small arrays of serving latency stay below every kernel's threshold) of a
    # model under 1 MiB, nor of a larger one with BLAS limited to one thread (as `glassnet serve` limits it):
    # only then would the row go through the two-core chain of engine.gemv, which is compiled. (A model small
    # enough for engine.dense_chain's compiled forward pass, at most 8,192 multiply-adds a row, does load it.)
    row = ("import sys, numpy as np, glassnet; from glassnet.layers import Dense; "
           "from glassnet.engine import compiled; "
           "m = glassnet.Sequential([glassnet.Input((784,)), Dense({}, activation='relu'), "
           "Dense(10, activation='softmax')]); m.predict(np.ones((1, 784), 'float32'), verbose=0); "
           "small = compiled.kernels_for(np.ones(100, 'float32')); "
           "print('numba' in sys.modules, small)")
    assert _python(row.format(256)) == "False None"
    assert _python(row.format(512), OPENBLAS_NUM_THREADS="1") == "False None"
    assert _python(code, GLASSNET_COMPILED="0") == "False False"


@pytest.mark.parametrize("config", [dict(kernel_size=3, strides=2), dict(kernel_size=3, strides=2, padding="same"),
                                    dict(kernel_size=(2, 3), strides=(1, 2), padding="same", output_padding=(0, 1))])
def test_conv2d_transpose_whose_forward_is_col2im_equals_the_numpy_reference(config):
    rng = np.random.default_rng(6)
    glassnet.set_random_seed(0)
    layer = L.Conv2DTranspose(5, **config)
    x = rng.normal(size=(40, 9, 8, 4)).astype("float32")  # above MIN_ELEMENTS: the compiled col2im runs
    assert x.size >= compiled.MIN_ELEMENTS
    layer.build(x.shape)
    for on, off in zip(*both(lambda: run_layer(layer, x, 7))):
        np.testing.assert_allclose(on, off, rtol=1e-5, atol=1e-5)
