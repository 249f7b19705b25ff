"""Every performance fast path equals the reference path it short-cuts.

- optimizers: an elementwise rule run block by block (``Optimizer._update_blocks``) == the rule on whole vectors
  (plus the flush-to-zero of near-subnormal slot values every FLUSH_EVERY steps, which the blockwise path does);
- training skips the input gradient of the first trainable layer (``backward(dy, input_grad=False)``): the
  weight gradients are those of the full backward pass;
- ``Model._check_inputs`` fast path (already-correct ndarray) == the general validation path;
- ``fit`` gathers each shuffled batch of a large data set from the original arrays == training on a shuffled
  copy (which ``fit`` still makes for small data sets);
- ``relu`` written in place over a layer's own pre-activation (``Activation.forward(z, overwrite=True)``) ==
  the allocating relu, and Dense/Conv2D with it == the linear layer with relu' applied by hand;
- gradients zeroed lazily (``Weight.reset_grad``, ``FlatGroup.reset_grads/settle_grads``), bias gradients reduced
  into their storage (``Weight.add_sum``, ``Weight.add``) and dense weight
  gradients written by one GEMM into the zeroed storage (``Weight.add_matmul``) == ``fill(0)`` then ``+=``;
- ``utils.data.all_finite`` (blockwise) == ``np.isfinite(x).all()``;
- Sequential's Conv(relu) + MaxPooling run as relu(maxpool(z)) == the layer-by-layer order, bit for bit;
- mean squared error's fused value and gradient (``losses._mse_fused``) == ``Loss.value_and_grad``, bit for bit;
- binary accuracy counted directly for one sigmoid output == the per-sample means added up.

The compiled (numba) kernels have their own file: tests/test_compiled.py.
"""
import numpy as np
import pytest

import glassnet
from glassnet import layers as L
from glassnet import optimizers as O
from glassnet.optimizers import base as optimizer_base

OPTIMIZERS = [
    lambda: O.SGD(0.1),
    lambda: O.SGD(0.1, momentum=0.9),
    lambda: O.SGD(0.1, momentum=0.9, nesterov=True),
    lambda: O.Adam(0.01),
    lambda: O.Adam(0.01, amsgrad=True),
    lambda: O.AdamW(0.01),
    lambda: O.Adamax(0.01),
    lambda: O.Nadam(0.01),
    lambda: O.RMSprop(0.01),
    lambda: O.RMSprop(0.01, momentum=0.9, centered=True),
    lambda: O.Adagrad(0.01),
    lambda: O.Adadelta(1.0),
]


class _W:  # the minimum of a Weight that flat.pack needs
    def __init__(self, value):
        self.value = self._value = value
        self.grad = np.zeros_like(value)
        self.size, self.shape, self.dtype = value.size, value.shape, value.dtype
        self.constraint = None
        self.path = "w"


@pytest.mark.parametrize("make", OPTIMIZERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("compiled_kernels", [False, True])  # the NumPy blockwise path, and the fused kernels
def test_blockwise_update_equals_whole_vector_update(make, dtype, compiled_kernels, monkeypatch):
    from glassnet.engine import compiled
    monkeypatch.setattr(compiled._switch, "on", compiled_kernels)
    n = 3 * optimizer_base.CHUNK + 17  # several blocks and a ragged tail
    rng = np.random.default_rng(0)
    fast, ref = make(), make()
    assert fast._rule_is_elementwise()
    w0 = rng.standard_normal(n).astype(dtype)
    w0[::7] *= 1e-300 if dtype == "float64" else 1e-36  # tiny values: slots that underflow to subnormals
    fast.build([_W(w0.copy())])
    ref.build([_W(w0.copy())])
    flushed = []

    def reference(w, g, slots, lr, t):  # the reference: the rule on whole vectors, then flush-to-zero of the slots
        ref.update(w, g, slots, lr, t)
        if t % optimizer_base.FLUSH_EVERY:
            return
        for s in slots.values():
            subnormal = (s != 0) & (np.abs(s) < np.finfo(s.dtype).tiny * 2.0 ** 24)
            flushed.append(int(subnormal.sum()))
            s[subnormal] = 0

    ref._update_blocks = reference
    monkeypatch.setattr(optimizer_base, "FLUSH_EVERY", 2)  # flush on steps 2 and 4
    for step in range(5):
        g = rng.standard_normal(n).astype(dtype)
        g[::5] = 0 if step else g[::5]                      # zero gradients: decaying moments
        g[1::7] *= 1e-306 if dtype == "float64" else 1e-37  # tiny gradients: subnormal moments
        fast.groups[0].grad[...] = g
        ref.groups[0].grad[...] = g
        fast.apply()
        ref.apply()
        np.testing.assert_array_equal(fast.groups[0].value, ref.groups[0].value)
        for name in ref.slots[0]:
            np.testing.assert_array_equal(fast.slots[0][name], ref.slots[0][name])
    if {"m", "momentum"} & set(ref.slots[0]):  # first moments of tiny gradients are subnormal: the flush is exercised
        assert sum(flushed) > 0


def test_a_rule_not_declared_elementwise_sees_whole_vectors():
    seen = []

    class Norming(O.SGD):  # overrides update without declaring elementwise: must get the whole vector
        def update(self, w, g, slots, lr, t):
            seen.append(w.size)
            w -= lr * g / np.linalg.norm(g)

    opt = Norming(0.1)
    assert not opt._rule_is_elementwise()
    n = 2 * optimizer_base.CHUNK + 1
    opt.build([_W(np.ones(n, "float32"))])
    opt.groups[0].grad[...] = 1.0
    opt.apply()
    assert seen == [n]


def _grads(model):
    return [w.grad.copy() for w in model.trainable_weights]


def _flatten_model():
    return glassnet.Sequential([L.Input((4, 3)), L.Flatten(), L.Dense(5, activation="tanh"), L.Dense(2)])


def _conv_model():
    return glassnet.Sequential([L.Input((7, 7, 2)), L.Conv2D(3, 3, activation="relu"), L.MaxPooling2D(2),
                                L.Flatten(), L.Dense(2)])


def _nested_model():
    inner = glassnet.Sequential([L.Dense(6, activation="relu"), L.Dense(4)])
    return glassnet.Sequential([L.Input((5,)), inner, L.Dense(2)])


@pytest.mark.parametrize("make", [_flatten_model, _conv_model, _nested_model])
def test_skipping_the_first_input_gradient_keeps_every_weight_gradient(make):
    glassnet.set_random_seed(3)
    model = make()
    x = np.random.default_rng(1).standard_normal((6,) + model.input_shape[1:]).astype("float32")
    y, backward = model.forward(x, training=True)
    dy = np.random.default_rng(2).standard_normal(y.shape).astype("float32")
    for w in model.trainable_weights:
        w.grad[...] = 0
    dx = backward(dy)  # the reference: the full backward pass, input gradient included
    assert dx.shape == x.shape
    full = _grads(model)
    for w in model.trainable_weights:
        w.grad[...] = 0
    assert backward(dy, input_grad=False) is None
    for a, b in zip(_grads(model), full):
        np.testing.assert_array_equal(a, b)


def test_a_layer_overriding_forward_must_declare_input_grad_optional():
    class MyDense(L.Dense):
        def forward(self, x, training=False):
            y, back = super().forward(x, training)
            return y, lambda dy: back(dy)

    assert L.Dense(2)._skips_input_grad() and L.Conv2D(2, 3)._skips_input_grad()
    assert not MyDense(2)._skips_input_grad() and not L.Flatten()._skips_input_grad()
    model = glassnet.Sequential([L.Input((3,)), MyDense(2)])
    model.compile(optimizer="sgd", loss="mse")
    model.train_on_batch(np.ones((2, 3), "float32"), np.ones((2, 2), "float32"))  # works: dx simply unused


def test_training_step_equals_manual_full_backward_step():
    glassnet.set_random_seed(0)
    x = np.random.default_rng(0).standard_normal((8, 7, 7, 2)).astype("float32")
    y = np.random.default_rng(1).integers(0, 2, 8)
    fast, ref = _conv_model(), _conv_model()
    ref.set_weights(fast.get_weights())
    for m in (fast, ref):
        m.compile(optimizer=O.Adam(0.01), loss="sparse_categorical_crossentropy")
    fast.train_on_batch(x, y)
    ref._skips_input_grad = lambda: False  # the reference path: backward(dy) with the input gradient
    ref.train_on_batch(x, y)
    for a, b in zip(fast.get_weights(), ref.get_weights()):
        np.testing.assert_array_equal(a, b)


class _NotFast(np.ndarray):  # an ndarray subclass never takes the fast path (it requires type(x) is np.ndarray)
    def __new__(cls, x):
        return np.asarray(x).view(cls)


def test_check_inputs_fast_path_equals_general_path():
    model = glassnet.Sequential([L.Input((8,)), L.Dense(3)])
    x = np.random.default_rng(0).standard_normal((2, 8)).astype("float32")
    fast = model._check_inputs(x, "predict")
    assert fast[0] is x
    general = model._check_inputs(_NotFast(x), "predict")
    np.testing.assert_array_equal(fast[0], general[0])
    assert fast[0].dtype == general[0].dtype
    np.testing.assert_array_equal(model.predict_on_batch(x), model.predict_on_batch(_NotFast(x)))
    # what the fast path must not accept goes through the general checks, with their messages
    bad = x.copy()
    bad[1, 3] = np.nan
    for arr in (bad, _NotFast(bad)):
        with pytest.raises(ValueError, match=r"contains 1 NaN/Inf value\(s\), the first \(NaN\) at index \(1, 3\)"):
            model.predict_on_batch(arr)
    for arr in (x[:, :7], _NotFast(x[:, :7])):
        with pytest.raises(ValueError, match="expects inputs of shape"):
            model.predict(arr, verbose=0)
    with pytest.raises(ValueError, match="empty"):
        model.predict_on_batch(x[:0])
    x64 = x.astype("float64")  # other dtypes are cast by the general path
    assert model._check_inputs(x64, "predict")[0].dtype == np.float32
    np.testing.assert_allclose(model.predict(x64, verbose=0), model.predict(x, verbose=0))
    xt = np.asfortranarray(x)  # non-contiguous layouts are fine: the checks do not depend on layout
    np.testing.assert_allclose(model.predict_on_batch(xt), model.predict_on_batch(x))


@pytest.mark.parametrize("copy_bytes", [0, 1 << 30])  # gather per batch / shuffle a copy of the whole epoch
def test_fit_gathering_batches_equals_training_on_a_shuffled_copy(copy_bytes, monkeypatch):
    from glassnet.models import model as model_module
    monkeypatch.setattr(model_module, "SHUFFLE_COPY_BYTES", copy_bytes)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 4)).astype("float32")
    y = rng.standard_normal((50, 1)).astype("float32")
    glassnet.set_random_seed(5)
    fast = glassnet.Sequential([L.Input((4,)), L.Dense(3, activation="relu"), L.Dense(1)])
    ref = glassnet.Sequential([L.Input((4,)), L.Dense(3, activation="relu"), L.Dense(1)])
    ref.set_weights(fast.get_weights())
    for m in (fast, ref):
        m.compile(optimizer=O.SGD(0.05, momentum=0.9), loss="mse")
    fast.fit(x, y, batch_size=16, epochs=2, verbose=0)
    ref.training_seed = fast.training_seed
    ref._prepare_training([x])
    for epoch in range(2):  # the reference: shuffle a copy of the whole data set, then slice it in batches
        order = np.random.default_rng([ref.training_seed, epoch]).permutation(len(x))
        xs, ys = x[order], y[order]
        for start in range(0, len(x), 16):
            ref.train_on_batch(xs[start:start + 16], ys[start:start + 16])
    for a, b in zip(fast.get_weights(), ref.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_dense_gradients_equal_their_formulas():
    glassnet.set_random_seed(1)
    layer = L.Dense(7)
    x = np.random.default_rng(0).standard_normal((33, 5)).astype("float64")
    layer.dtype = "float64"
    layer._maybe_build(x.shape)
    _, backward = layer.forward(x, training=True)
    dy = np.random.default_rng(1).standard_normal((33, 7))
    backward(dy)
    np.testing.assert_allclose(layer.bias.grad, dy.sum(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.kernel.grad, x.T @ dy, rtol=1e-12, atol=1e-12)


def test_sequential_masking_flag_follows_add_and_pop():
    model = glassnet.Sequential([L.Input((4,)), L.Dense(3)])
    assert model._masking is False
    model.pop()
    model.add(L.Embedding(10, 3, mask_zero=True))
    assert model._masking is True
    model.pop()
    assert model._masking is False


def _max_pool_backward_reference(dy, x, pool, strides):
    """Loops: each window sends dy to its first (row-major) maximum; 'valid' padding."""
    dx = np.zeros_like(x)
    n, h, w, c = x.shape
    for b in range(n):
        for i in range(dy.shape[1]):
            for j in range(dy.shape[2]):
                for ch in range(c):
                    win = x[b, i * strides[0]:i * strides[0] + pool[0], j * strides[1]:j * strides[1] + pool[1], ch]
                    a, bb = np.unravel_index(np.argmax(win), win.shape)  # argmax: the first maximum
                    dx[b, i * strides[0] + a, j * strides[1] + bb, ch] += dy[b, i, j, ch]
    return dx


@pytest.mark.parametrize("size,pool,strides", [(6, (2, 2), (2, 2)),   # tiled exactly: written, no zero fill
                                               (7, (2, 2), (2, 2)),   # a remainder row and column
                                               (7, (3, 3), (2, 2)),   # overlapping windows
                                               (6, (3, 2), (3, 2))])
def test_max_pool_backward_equals_the_first_maximum_rule(size, pool, strides):
    from glassnet.engine import kernels
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, (2, size, size, 3)).astype("float64")  # many ties
    pads = [(0, 0), (0, 0)]
    y, xp = kernels.max_pool(x, pool, strides, pads)
    dy = rng.standard_normal(y.shape)
    dx = kernels.max_pool_backward(dy, y, xp, x.shape, pool, strides, pads)
    np.testing.assert_allclose(dx, _max_pool_backward_reference(dy, x, pool, strides), rtol=1e-12, atol=1e-12)


def test_tune_allocator_runs_once_and_honours_the_opt_out(monkeypatch):
    from glassnet.engine import backend
    monkeypatch.setattr(backend, "_allocator_tuned", False)
    monkeypatch.setenv("GLASSNET_TUNE_MALLOC", "0")
    backend.tune_allocator()  # opted out: nothing to do, and not asked again
    assert backend._allocator_tuned
    monkeypatch.setattr(backend, "_allocator_tuned", False)
    monkeypatch.delenv("GLASSNET_TUNE_MALLOC")
    backend.tune_allocator()  # glibc: mallopt; elsewhere: nothing. Never raises.
    backend.tune_allocator()
    assert backend._allocator_tuned


# --- relu written in place over a layer's own pre-activation ---------------------------------------------
def test_relu_in_place_equals_the_allocating_relu():
    from glassnet import activations as A
    rng = np.random.default_rng(0)
    z = rng.standard_normal((6, 7)).astype(np.float32)
    z[0, :3] = [0.0, -0.0, np.nan]
    dy = rng.standard_normal(z.shape).astype(np.float32)
    y_ref, back_ref = A.relu.forward(z.copy())
    zi = z.copy()
    y_in, back_in = A.relu.forward(zi, overwrite=True)
    assert y_in is zi  # written in place
    np.testing.assert_array_equal(y_in, y_ref)
    np.testing.assert_array_equal(back_in(dy), back_ref(dy))
    np.testing.assert_array_equal(back_in(dy), dy * (z > 0))  # the textbook relu'(x) = [x > 0]
    frozen = z.copy()
    frozen.flags.writeable = False  # not ours to overwrite: allocates
    y_ro, _ = A.relu.forward(frozen, overwrite=True)
    assert y_ro is not frozen
    np.testing.assert_array_equal(y_ro, y_ref)


@pytest.mark.parametrize("make", [lambda: L.Dense(5, activation="relu"),
                                  lambda: L.Conv2D(4, 3, activation="relu")])
def test_layers_with_in_place_relu_equal_call_and_the_reference_gradient(make):
    rng = np.random.default_rng(1)
    layer = make()
    x = rng.standard_normal((3, 6, 6, 2) if isinstance(layer, L.Conv2D) else (3, 6)).astype(np.float32)
    layer.build(x.shape)
    layer.kernel.grad = np.zeros_like(layer.kernel.value)
    layer.bias.grad = np.zeros_like(layer.bias.value)
    y, backward = layer.forward(x, training=True)
    np.testing.assert_array_equal(y, layer.call(x))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = backward(dy)
    # reference: the same layer with a linear activation, relu' applied by hand
    lin = type(layer).from_config({**layer.get_config(), "activation": "linear"})
    lin.build(x.shape)
    lin.kernel.value[...] = layer.kernel.value
    lin.bias.value[...] = layer.bias.value
    lin.kernel.grad = np.zeros_like(lin.kernel.value)
    lin.bias.grad = np.zeros_like(lin.bias.value)
    z, lin_backward = lin.forward(x, training=True)
    dx_ref = lin_backward(dy * (z > 0))
    np.testing.assert_array_equal(dx, dx_ref)
    np.testing.assert_array_equal(layer.kernel.grad, lin.kernel.grad)
    np.testing.assert_array_equal(layer.bias.grad, lin.bias.grad)


def test_sgd_nesterov_step_equals_its_formula():
    rng = np.random.default_rng(2)
    w = rng.standard_normal(50).astype(np.float32)
    g = rng.standard_normal(50).astype(np.float32)
    v = rng.standard_normal(50).astype(np.float32)
    lr, mu = np.float32(0.01), 0.9
    opt = O.SGD(0.01, momentum=mu, nesterov=True)
    w1, v1 = w.copy(), v.copy()
    opt.update(w1, g, {"momentum": v1}, lr, 1)
    v_ref = v * mu - lr * g
    w_ref = w + (mu * v_ref - lr * g)
    np.testing.assert_array_equal(v1, v_ref)
    np.testing.assert_array_equal(w1, w_ref)


# --- lazy gradient zeroing and add_matmul -------------------------------------------------------------------
def _weight(shape):
    from glassnet.engine.weight import Weight
    return Weight(np.ones(shape, "float32"), "w")


def test_add_matmul_writes_into_a_reset_gradient_and_adds_otherwise():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)).astype("float32"), rng.normal(size=(3, 4)).astype("float32")
    w = _weight((5, 4))
    w.grad[...] = 7.0
    storage = w.grad
    w.reset_grad()
    w.add_matmul(a, b)  # no read in between: the product replaces the old values
    np.testing.assert_array_equal(w.grad, a @ b)
    w.add_matmul(a, b)  # accumulates (a layer used twice in one step)
    np.testing.assert_allclose(w.grad, 2 * (a @ b), rtol=1e-6)
    assert w.grad is storage  # always in place (the flat buffer's view)
    w.reset_grad()
    np.testing.assert_array_equal(w.grad, 0)  # a read after reset sees zeros
    w.grad += a @ b
    w.add_matmul(a, b)
    np.testing.assert_allclose(w.grad, 2 * (a @ b), rtol=1e-6)
    k = _weight((3, 3, 2, 4))  # a conv kernel: the product (k*k*C, F) lands in its row-major layout
    k.reset_grad()
    cols, dz = rng.normal(size=(6, 18)).astype("float32"), rng.normal(size=(6, 4)).astype("float32")
    k.add_matmul(cols.T, dz)
    np.testing.assert_array_equal(k.grad, (cols.T @ dz).reshape(3, 3, 2, 4))


def test_add_sum_and_add_write_into_a_reset_gradient_and_add_otherwise():
    rng = np.random.default_rng(1)
    dz = rng.normal(size=(7, 4)).astype("float32")
    b = _weight((4,))
    b.grad[...] = 9.0
    storage = b.grad
    b.reset_grad()
    b.add_sum(dz)  # no read in between: the column sums replace the old values
    np.testing.assert_array_equal(b.grad, np.add.reduce(dz, axis=0))
    b.add_sum(dz)  # accumulates (a layer used twice in one step)
    np.testing.assert_array_equal(b.grad, np.add.reduce(dz, axis=0) + np.add.reduce(dz, axis=0))
    b.reset_grad()
    b.add(dz[0])
    np.testing.assert_array_equal(b.grad, dz[0])
    b.add(dz[1])
    np.testing.assert_array_equal(b.grad, dz[0] + dz[1])
    b.reset_grad()
    np.testing.assert_array_equal(b.grad, 0)  # a read after reset sees zeros
    b.add(dz[2].astype("float64"))  # another dtype is cast as += would
    np.testing.assert_array_equal(b.grad, dz[2])
    assert b.grad is storage
    from glassnet.engine.weight import Weight
    wide = Weight(np.zeros(4), "bias64")  # float64 storage, float32 dz: summed in float32, as eager's +=
    wide.reset_grad()
    wide.add_sum(dz)
    eager = np.zeros(4)
    eager += np.add.reduce(dz, axis=0)
    np.testing.assert_array_equal(wide.grad, eager)


def test_small_models_zero_dense_gradients_lazily_and_train_as_with_fill():
    """The tutorial-sized model: lazy zeroing (dW by matmul(out=), db by add.reduce(out=)) gives the weights
    of eager zeroing, step after step. (The layer path: with numba the whole step of this model runs compiled,
    engine.dense_chain, which writes every gradient whole.)"""
    from glassnet.engine import compiled, flat
    with compiled.use_compiled(False):
        _lazy_and_eager_zeroing_train_alike(flat)


def _lazy_and_eager_zeroing_train_alike(flat):

    def build():
        glassnet.set_random_seed(3)
        model = glassnet.Sequential([L.Input((8,)), L.Dense(10, activation="relu"), L.Dense(1, activation="sigmoid")])
        model.compile(optimizer=O.SGD(0.01, momentum=0.9, nesterov=True), loss="mse", metrics=["accuracy"])
        return model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8)).astype("float32")
    y = (rng.random((96, 1)) > 0.5).astype("float32")
    lazy_model = build()
    lazy_model.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False)
    assert len(lazy_model.optimizer.groups[0]._lazy_split[0]) == 4

    def eager(self):
        self.grad.fill(0)
        for w in self.weights:
            w._stale = False

    original = flat.FlatGroup.reset_grads
    flat.FlatGroup.reset_grads = eager
    try:
        eager_model = build()
        eager_model.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False)
    finally:
        flat.FlatGroup.reset_grads = original
    for a, b in zip(lazy_model.get_weights(), eager_model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_settle_grads_zeroes_only_the_gradients_nobody_touched(monkeypatch):
    from glassnet.engine import flat
    a, b = L.Dense(3), L.Dense(4)
    a.build((None, 2))
    b.build((None, 3))
    other = _weight((5,))  # a weight of no layer that declares lazy_grad_zeroing: zeroed eagerly
    ws = [a.kernel, a.bias, other, b.kernel]  # 6, 3, 5, 12 values
    (group,) = flat.pack(ws)
    group.grad[...] = 5.0
    group.reset_grads()
    assert [w._stale for w in ws] == [True, True, False, True]
    np.testing.assert_array_equal(group.grad[9:14], 0)  # the eager one is already zero
    ws[0].add_matmul(np.ones((2, 1), "float32"), np.ones((1, 3), "float32"))
    ws[1].grad += 2.0
    group.settle_grads()
    np.testing.assert_array_equal(group.grad, [1] * 6 + [2] * 3 + [0] * 5 + [0] * 12)


def test_a_layer_shared_twice_and_an_unused_weight_get_the_gradients_of_eager_zeroing(monkeypatch):
    """Functional model: one Dense applied twice (its gradient sums both uses) and a second head without a
    loss (its weights get no gradient at all); lazy zeroing must equal zeroing every gradient with fill(0)."""
    from glassnet.engine import flat

    def build():
        glassnet.set_random_seed(0)
        inp = L.Input((6,))
        shared = L.Dense(6, activation="relu")
        h = shared(shared(inp))
        model = glassnet.Model(inp, [L.Dense(2, name="out")(h), L.Dense(3, name="unused")(h)])
        model.compile(optimizer=O.SGD(0.1, momentum=0.5), loss=["mse", None])
        return model

    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    y = np.random.default_rng(1).normal(size=(16, 2)).astype("float32")
    z = np.zeros((16, 3), "float32")

    def train(model):
        model.train_on_batch(x, [y, z])
        for group in model.optimizer.groups:
            group.grad[...] = 5.0  # stale values a missing zeroing would leak into the next steps
        for _ in range(3):
            model.train_on_batch(x, [y, z])
        return model.get_weights()

    lazy_model = build()
    lazy = train(lazy_model)
    assert lazy_model.optimizer.groups[0]._lazy_split[0]  # the Dense weights were zeroed lazily

    def eager(self):
        self.grad.fill(0)
        for w in self.weights:
            w._stale = False

    monkeypatch.setattr(flat.FlatGroup, "reset_grads", eager)
    reference = train(build())
    for a, b in zip(lazy, reference):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(lazy[-2], build().get_weights()[-2])  # the unused head never moved


def test_all_finite_equals_isfinite_all():
    from glassnet.utils.data import all_finite
    rng = np.random.default_rng(0)
    for shape in [(3,), (70_000,), (300, 1000)]:
        x = rng.normal(size=shape).astype("float32")
        assert all_finite(x)
        for bad in (np.nan, np.inf, -np.inf):
            for where in (0, x.size // 2, x.size - 1):
                z = x.copy()
                z.flat[where] = bad
                assert not all_finite(z) and not np.isfinite(z).all()
    assert all_finite(np.arange(10)) and all_finite(np.ones((1000, 100), "float64")[:, ::3])
    assert not all_finite(np.full((1000, 100), np.nan)[:, ::3])


def test_the_cached_first_trainable_layer_follows_freezing_between_fits():
    """Sequential caches where backward may stop (the first layer with trainable weights) per fit call. (The
    layer path: with numba this all-Dense model's step runs compiled, engine.dense_chain.)"""
    from glassnet.engine import compiled
    with compiled.use_compiled(False):
        _first_trainable_follows_freezing()


def _first_trainable_follows_freezing():
    glassnet.set_random_seed(0)
    model = glassnet.Sequential([L.Input((4,)), L.Dense(5, activation="relu"), L.Dense(3, activation="relu"), L.Dense(1)])
    model.compile(optimizer=O.SGD(0.1), loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = np.random.default_rng(1).normal(size=(32, 1)).astype("float32")
    model.fit(x, y, epochs=1, verbose=0)
    assert model._first_trainable == 0
    model.layers[0].trainable = False
    model.compile(optimizer=O.SGD(0.1), loss="mse")
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, epochs=1, verbose=0)
    after = model.get_weights()
    assert model._first_trainable == 1
    np.testing.assert_array_equal(after[0], before[0])  # frozen
    assert not np.array_equal(after[2], before[2])      # the next layer trains (backward stops there)
    model.layers[0].trainable = True
    model.compile(optimizer=O.SGD(0.1), loss="mse")
    model.train_on_batch(x, y)
    assert model._first_trainable == 0 and not np.array_equal(model.get_weights()[0], after[0])


# --- relu moved past a max-pool (Sequential) ----------------------------------------------------------------
@pytest.mark.parametrize("pool,strides,padding", [(2, 2, "valid"), (3, 2, "same"), (2, 1, "valid")])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("compiled_kernels", [True, False])
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the NaN and Inf in dy, on purpose
def test_relu_after_max_pool_equals_the_layer_by_layer_order(pool, strides, padding, data_format, compiled_kernels):
    """Sequential runs Conv(relu) + MaxPooling as relu(maxpool(z)); outputs, input gradient and every weight
    gradient must equal running the two layers in their own order (relu inside the conv, then the pool)."""
    from glassnet.models import sequential
    glassnet.set_random_seed(3)
    shape = (9, 9, 2) if data_format == "channels_last" else (2, 9, 9)
    model = glassnet.Sequential([L.Input(shape), L.Conv2D(4, 2, activation="relu", data_format=data_format),
                                 L.MaxPooling2D(pool, strides, padding, data_format=data_format), L.Flatten(),
                                 L.Dense(3)])
    rng = np.random.default_rng(0)
    x = rng.integers(-2, 3, size=(24, *shape)).astype("float32")  # small integers: tied maxima, zero and
    x[0, 1, 1, 1] = np.nan                                               # negative windows; and a NaN
    dy = rng.normal(size=(24, 3)).astype("float32")
    dy[1, 0], dy[2, 1], dy[3, 2] = np.nan, np.inf, -0.0  # non-finite gradients spread the same way too
    conv = model.layers[0]
    assert sequential._relu_then_max_pool(conv, model.layers[1])

    def run(fused):
        for w in model.weights:
            w.grad[...] = 0
        if fused:
            y, backward = model.forward(x, training=True)
        else:
            h, backs = x, []
            for layer in model.layers:
                h, b = layer.forward(h, training=True)
                backs.append(b)
            y = h

            def backward(d):
                for b in reversed(backs):
                    d = b(d)
                return d
        dx = backward(dy)
        return [y, dx] + [w.grad.copy() for w in model.weights]

    from glassnet.engine import compiled
    with compiled.use_compiled(compiled_kernels):
        for fused, reference in zip(run(True), run(False)):
            np.testing.assert_array_equal(fused, reference)
            assert np.array_equal(np.signbit(fused), np.signbit(reference))


def test_relu_is_not_moved_when_the_conv_has_an_activity_regularizer_or_another_activation():
    from glassnet.models import sequential
    pool = L.MaxPooling2D(2)
    assert not sequential._relu_then_max_pool(L.Conv2D(2, 3, activation="relu", activity_regularizer="l2"), pool)
    assert not sequential._relu_then_max_pool(L.Conv2D(2, 3, activation="tanh"), pool)
    assert not sequential._relu_then_max_pool(L.Conv2D(2, 3, activation="relu"), L.AveragePooling2D(2))

    class MyConv(L.Conv2D):  # overrides forward without declaring activation_deferrable
        def forward(self, x, training=False):
            return super().forward(x, training)

    assert not sequential._relu_then_max_pool(MyConv(2, 3, activation="relu"), pool)
    assert sequential._relu_then_max_pool(L.Conv2D(2, 3, activation="relu"), pool)


def test_a_custom_layer_keeping_its_gradient_array_still_trains_under_lazy_zeroing(monkeypatch):
    """Lazy zeroing is opt-in per layer class (lazy_grad_zeroing): a custom layer that keeps the gradient
    array it writes into from step to step is zeroed eagerly and trains as before."""
    from glassnet.engine.layer import Layer

    class Kept(Layer):
        def build(self, shape):
            self.kernel = self.add_weight("kernel", (shape[-1], 3), "glorot_uniform")
            self._g = None

        def compute_output_shape(self, shape):
            return shape[:-1] + (3,)

        def forward(self, x, training=False):
            W = self.kernel.value
            if self._g is None or not np.shares_memory(self._g, self.kernel.grad):
                self._g = self.kernel.grad  # kept from step to step

            def backward(dy, input_grad=True):
                self._g += x.T @ dy
                return dy @ W.T
            return x @ W, backward

    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    y = np.random.default_rng(1).normal(size=(16, 3)).astype("float32")
    glassnet.set_random_seed(0)
    model = glassnet.Sequential([L.Input((4,)), L.Dense(4), Kept()])
    model.compile(optimizer=O.SGD(0.1), loss="mse")
    model.train_on_batch(x, y)
    assert model.optimizer.groups[0]._lazy_split[0] and not model.layers[1].kernel._stale
    reference = glassnet.Sequential([L.Input((4,)), L.Dense(4), L.Dense(3, use_bias=False)])
    reference.compile(optimizer=O.SGD(0.1), loss="mse")
    glassnet.set_random_seed(0)
    reference.set_weights(model.get_weights())
    for _ in range(3):
        model.train_on_batch(x, y)
        reference.train_on_batch(x, y)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_nested_sequential_forgets_its_first_trainable_layer_when_layers_are_unfrozen():
    glassnet.set_random_seed(0)
    inner = glassnet.Sequential([L.Dense(8, activation="relu"), L.Dense(8, activation="relu")])
    outer = glassnet.Sequential([L.Input((10,)), inner, L.Dense(1)])
    x = np.random.default_rng(0).normal(size=(64, 10)).astype("float32")
    y = np.random.default_rng(1).normal(size=(64, 1)).astype("float32")
    inner.layers[0].trainable = False
    outer.compile(optimizer=O.SGD(0.1), loss="mse")
    outer.fit(x, y, epochs=1, verbose=0)
    assert inner._first_trainable == 1
    inner.layers[0].trainable = True
    outer.compile(optimizer=O.SGD(0.1), loss="mse")
    before = inner.layers[0].kernel.numpy()
    outer.fit(x, y, epochs=2, verbose=0)
    assert inner._first_trainable == 0
    assert not np.array_equal(inner.layers[0].kernel.numpy(), before)  # trains again


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("shape", [(32, 1), (7, 3), (4, 5, 2), (1, 1), (5,)])
def test_mse_fused_value_and_gradient_equal_the_general_path(dtype, shape):
    from glassnet import losses
    rng = np.random.default_rng(sum(shape))
    loss = losses.MeanSquaredError()
    for scale in (1e-3, 1.0, 30.0):
        p = (rng.normal(size=shape) * scale).astype(dtype)
        y = (rng.normal(size=shape) * scale).astype(dtype)
        assert losses._mse_fused(y, p, {}) is not None
        fused = loss.value_and_grad(y, p)
        general = losses.Loss.value_and_grad(loss, y, p)  # the base class: values, batch mean, grad
        assert fused[0] == general[0]
        assert fused[1].dtype == general[1].dtype == np.dtype(dtype) and fused[1].shape == general[1].shape
        assert fused[1].tobytes() == general[1].tobytes()


def test_mse_fused_steps_aside_for_what_it_does_not_cover():
    from glassnet import losses
    p = np.ones((4, 1), np.float32)
    assert losses._mse_fused(np.ones((4, 1), np.float64), p, {}) is None       # targets of another dtype
    assert losses._mse_fused(np.ones((4,), np.float32), p, {}) is None         # another shape (aligned later)
    assert losses._mse_fused([[1.0]] * 4, p, {}) is None                       # not an array
    assert losses._mse_fused(np.ones((0, 1), np.float32), np.ones((0, 1), np.float32), {}) is None
    loss = losses.MeanSquaredError()
    w = np.array([1.0, 2.0, 0.0, 1.0], np.float32)
    value, grad = loss.value_and_grad(np.zeros((4, 1), np.float32), p, sample_weight=w)  # weighted: general path
    assert value == pytest.approx(1.0) and grad[2, 0] == 0 and grad[1, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("labels_1d", [False, True], ids=["labels_n_1", "labels_n"])
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_binary_accuracy_count_equals_the_per_sample_means(threshold, labels_1d, monkeypatch):
    """The counting fast path (labels of the output's shape, or 1-D labels against an (n, 1) output as the
    tutorial has) adds up what the general path does."""
    from glassnet import metrics
    rng = np.random.default_rng(5)
    fast, general = metrics.BinaryAccuracy(threshold=threshold), metrics.BinaryAccuracy(threshold=threshold)
    hits = 0
    for n in (32, 7, 1):
        p = rng.random((n, 1)).astype(np.float32)
        p[0, 0] = np.nan  # counts as a miss both ways
        y = (rng.random((n, 1)) > 0.5).astype(np.float32)
        if labels_1d:
            y = y[:, 0]
        aligned = []  # the general path aligns the shapes first; the fast path does not
        align = metrics._losses.squeeze_or_expand_to_same_rank
        monkeypatch.setattr(metrics._losses, "squeeze_or_expand_to_same_rank",
                            lambda *a: aligned.append(1) or align(*a))
        fast.update_state(y, p)
        assert aligned == []
        general.update_state(y.tolist(), p.tolist())  # lists: the general path
        assert aligned == [1]
        monkeypatch.undo()
        hits += int(metrics.binary_accuracy(y.reshape(n, 1), p, threshold=threshold).sum())
        assert fast.total == general.total == hits
    assert fast.count == general.count == 40
    assert fast.result() == general.result()


def test_binary_accuracy_with_an_array_threshold_takes_the_general_path():
    from glassnet import metrics
    p = np.array([[0.5], [0.9], [0.1]], np.float32)
    y = np.array([[1.0], [1.0], [0.0]], np.float32)
    m = metrics.BinaryAccuracy(threshold=np.array([0.2, 0.8]))
    m.update_state(y, p)
    reference = metrics.binary_accuracy(y.tolist(), p.tolist(), threshold=np.array([0.2, 0.8]))
    assert m.total == float(np.sum(reference)) and m.count == np.size(reference)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_sigmoid_on_few_values_equals_the_in_place_form(dtype):
    """Up to activations._SMALL values _sigmoid allocates instead of working in place (cheaper there): the same
    operations, so the same bits and dtype on either side of the threshold, NaN and ±inf included."""
    from glassnet import activations
    rng = np.random.default_rng(0)
    for n in (1, 8, activations._SMALL - 1, activations._SMALL, activations._SMALL + 1, 4096):
        x = (rng.standard_normal(n) * 12).astype(dtype)
        x[:min(n, 3)] = [np.nan, np.inf, -np.inf][:min(n, 3)]
        want = np.tanh(x * 0.5)
        want += 1
        want *= 0.5
        got = activations._sigmoid(x)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert activations.sigmoid(np.array([[0.0]], np.float32)).dtype == np.float32
