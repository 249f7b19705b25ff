"""The compiled training step of small dense networks (engine.dense_chain) equals the layer-by-layer path.

The layer path (compiled kernels off) is the reference: the same networks train both ways to the same losses,
metrics and weights (to float rounding: the kernel sums x·W in plain order, BLAS in blocks), one step's
gradients agree with the layers' and with finite differences, and every case the kernel does not cover runs
the layer path instead.
"""
import numpy as np
import pytest

import glassnet
from glassnet import layers as L
from glassnet import optimizers as O
from glassnet.engine import backend, compiled, dense_chain

pytest.importorskip("numba")

TOL = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-11, atol=1e-13)}


def count_calls(monkeypatch, kernel):
    """The batch sizes ``_numba_kernels.<kernel>`` is called with, from now on."""
    from glassnet.engine import _numba_kernels
    calls = []
    real = getattr(_numba_kernels, kernel)

    def counted(*args):
        calls.append(args[0].shape[0])
        return real(*args)

    monkeypatch.setattr(_numba_kernels, kernel, counted)
    return calls


def count_chain_calls(monkeypatch):
    return count_calls(monkeypatch, "dense_chain_step")


def count_forward_calls(monkeypatch):
    return count_calls(monkeypatch, "dense_chain_forward")


def data(rows=70, features=8, outputs=1, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(dtype)
    y = (rng.random((rows, outputs)) > 0.5).astype(dtype)
    return x, y


def model(units=(10, 1), activations=("relu", "sigmoid"), features=8, dtype="float32", use_bias=True, seed=1,
          loss="mse", optimizer=None, metrics=("accuracy",), **dense_kwargs):
    glassnet.set_random_seed(seed)
    m = glassnet.Sequential([glassnet.Input((features,), dtype=dtype)] + [
        L.Dense(u, activation=a, use_bias=use_bias, dtype=dtype, **dense_kwargs) for u, a in zip(units, activations)])
    m.compile(loss=loss, optimizer=optimizer or O.SGD(learning_rate=0.05, momentum=0.9, nesterov=True),
              metrics=list(metrics))
    return m


def fit_both(build, x, y, **fit_kwargs):
    """(history, weights, planned) with the compiled kernels on, then off; the same seed for both."""
    out = []
    for on in (True, False):
        with compiled.use_compiled(on):
            m = build()
            h = m.fit(x, y, verbose=0, **fit_kwargs)
            out.append((h.history, [w.numpy() for w in m.weights], m._compiled_step))
    return out


def assert_same_training(on, off, dtype):
    (h1, w1, _), (h0, w0, _) = on, off
    assert h1.keys() == h0.keys()
    for key in h0:
        np.testing.assert_allclose(h1[key], h0[key], **TOL[dtype], err_msg=key)
    for a, b in zip(w1, w0):
        np.testing.assert_allclose(a, b, **TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", ["mse", "binary_crossentropy"])
@pytest.mark.parametrize("units,activations,use_bias", [
    ((10, 1), ("relu", "sigmoid"), True),  # the tutorial's network
    ((12, 8, 1), ("relu", "relu", "sigmoid"), True),
    ((6, 5, 3), ("tanh", "linear", "sigmoid"), False),
    ((7, 2), ("sigmoid", "sigmoid"), True),
    ((3,), ("sigmoid",), True),  # one layer
])
def test_training_matches_the_layer_path(monkeypatch, dtype, loss, units, activations, use_bias):
    x, y = data(outputs=units[-1], dtype=dtype)
    calls = count_chain_calls(monkeypatch)
    on, off = fit_both(lambda: model(units, activations, dtype=dtype, use_bias=use_bias, loss=loss), x, y,
                       epochs=4, batch_size=16)
    assert isinstance(on[2], dense_chain.DenseChain) and off[2] is False
    assert calls == [16, 16, 16, 16, 6] * 4  # every batch, the short last one too
    assert_same_training(on, off, dtype)


@pytest.mark.parametrize("optimizer", [lambda: O.Adam(1e-2), lambda: O.RMSprop(1e-2), lambda: O.SGD(0.1),
                                       lambda: O.SGD(lr=0.1, decay=1e-3, momentum=0.5)])
def test_optimizers_and_constraints_run_after_the_compiled_step(monkeypatch, optimizer):
    x, y = data(rows=64)
    calls = count_chain_calls(monkeypatch)
    on, off = fit_both(lambda: model(optimizer=optimizer(), kernel_constraint="max_norm"), x, y, epochs=3,
                       batch_size=32, validation_split=0.25)
    assert len(calls) == 6
    assert_same_training(on, off, "float32")


def one_step_gradient(m, x, y, on):
    m.optimizer.build(m.trainable_weights) if not m.optimizer.built else None
    with compiled.use_compiled(on):
        m._prepare_training([x])
        chain = m._compiled_step = m._plan_compiled_step() or False
        assert bool(chain) == on
        group = m.optimizer.groups[0]
        saved = group.value.copy()
        applied = []
        m.optimizer.apply = lambda: applied.append(group.grad.copy())  # keep the gradient, skip the update
        loss, preds, _ = m._train_batch([x], [y], None)
        del m.optimizer.apply
        group.value[...] = saved
        return loss, preds[0].copy(), applied[0]


@pytest.mark.parametrize("loss", ["mse", "binary_crossentropy"])
def test_one_step_gradient_equals_layers_and_finite_differences(loss):
    x, y = data(rows=9, outputs=2, dtype="float64", seed=3)
    m = model(units=(5, 4, 2), activations=("tanh", "relu", "sigmoid"), dtype="float64", loss=loss)
    m.fit(x, y, epochs=1, batch_size=9, verbose=0)  # builds everything
    loss_on, out_on, g_on = one_step_gradient(m, x, y, True)
    loss_off, out_off, g_off = one_step_gradient(m, x, y, False)
    np.testing.assert_allclose(loss_on, loss_off, rtol=1e-13)
    np.testing.assert_allclose(out_on, out_off, rtol=1e-13)
    np.testing.assert_allclose(g_on, g_off, rtol=1e-11, atol=1e-15)
    group = m.optimizer.groups[0]
    lossfn = m._heads[0].loss
    rng = np.random.default_rng(0)
    for i in rng.choice(group.value.size, 12, replace=False):
        old = group.value[i]
        vals = []
        for h in (1e-6, -1e-6):
            group.value[i] = old + h
            vals.append(float(lossfn(y, m.predict(x, verbose=0))))
        group.value[i] = old
        np.testing.assert_allclose(g_on[i], (vals[0] - vals[1]) / 2e-6, rtol=1e-5, atol=1e-9)


def test_saturated_sigmoid_and_binary_crossentropy_clip_like_the_layers(monkeypatch):
    """Outputs of exactly 0 and 1 (float32): the clip at ε / 1 − ε, where no gradient flows."""
    x, y = data(rows=48)
    x *= 40
    calls = count_chain_calls(monkeypatch)
    on, off = fit_both(lambda: model(units=(10, 1), loss="binary_crossentropy",
                                     kernel_initializer=glassnet.initializers.RandomNormal(stddev=3.0)),
                       x, y, epochs=3, batch_size=16)
    assert calls
    assert_same_training(on, off, "float32")
    with compiled.use_compiled(True):
        m = model(units=(10, 1), loss="binary_crossentropy",
                  kernel_initializer=glassnet.initializers.RandomNormal(stddev=3.0))
        p = m.predict(x, verbose=0)
        assert ((p == 1) | (p == 0)).any()  # the case is really exercised
        old = backend.epsilon()
        try:  # ε is read on every step, as the loss reads it
            backend.set_epsilon(1e-3)
            on2 = m.fit(x, y, epochs=1, batch_size=48, verbose=0).history["loss"]
        finally:
            backend.set_epsilon(old)
    with compiled.use_compiled(False):
        m = model(units=(10, 1), loss="binary_crossentropy",
                  kernel_initializer=glassnet.initializers.RandomNormal(stddev=3.0))
        try:
            backend.set_epsilon(1e-3)
            off2 = m.fit(x, y, epochs=1, batch_size=48, verbose=0).history["loss"]
        finally:
            backend.set_epsilon(old)
    np.testing.assert_allclose(on2, off2, rtol=1e-5)


def test_nan_weights_give_nan_losses_like_the_layers():
    x, y = data(rows=32)
    results = []
    for on in (True, False):
        with compiled.use_compiled(on):
            m = model()
            m.fit(x, y, epochs=1, batch_size=32, verbose=0)
            m.layers[0].kernel.value[0, 0] = np.nan
            results.append(m.train_on_batch(x, y))
            assert bool(m._compiled_step) == on
    assert np.isnan(results[0][0]) and np.isnan(results[1][0])


def test_each_step_gives_metrics_a_new_output_array():
    """A metric may keep y_pred (a custom AUC collecting them): the compiled step must not reuse its array."""
    kept = []

    class Keep(glassnet.metrics.Metric):
        def update_state(self, y_true, y_pred, sample_weight=None):
            kept.append(y_pred)

        def result(self):
            return 0.0

    x, y = data(rows=64)
    with compiled.use_compiled(True):
        m = model(metrics=[Keep(name="keep")])
        m.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
        assert m._compiled_step
        final = m.predict(x[48:], verbose=0)
    assert len(kept) == 4 and len({id(a) for a in kept}) == 4
    assert not any(np.shares_memory(a, b) for i, a in enumerate(kept) for b in kept[i + 1:])
    assert not np.allclose(kept[3], final)  # the output of its own step, before that step's update...
    np.testing.assert_allclose(kept[3], m.predict(x[48:], verbose=0), rtol=0.5)  # ...and of the same network


@pytest.mark.parametrize("case", ["sample_weight", "class_weight", "regularizer", "activity", "dropout", "mae",
                                  "smoothing", "logits", "loss_weights", "frozen", "subclass", "too_big",
                                  "errstate", "int_labels_mse"])
def test_every_other_case_takes_the_layer_path(monkeypatch, case):
    x, y = data(rows=40)
    build = model
    fit_kwargs = {}
    if case == "sample_weight":
        fit_kwargs["sample_weight"] = np.linspace(0.5, 1.5, 40)
    elif case == "class_weight":
        fit_kwargs["class_weight"] = {0: 1.0, 1: 3.0}
    elif case == "regularizer":
        build = lambda: model(kernel_regularizer="l2")  # noqa: E731
    elif case == "activity":
        build = lambda: model(activity_regularizer="l1")  # noqa: E731
    elif case == "dropout":
        def build():
            glassnet.set_random_seed(1)
            m = glassnet.Sequential([glassnet.Input((8,)), L.Dense(10, activation="relu"), L.Dropout(0.0),
                                     L.Dense(1, activation="sigmoid")])
            m.compile(loss="mse", optimizer="sgd", metrics=["accuracy"])
            return m
    elif case == "mae":
        build = lambda: model(loss="mae")  # noqa: E731
    elif case == "smoothing":
        build = lambda: model(loss=glassnet.losses.BinaryCrossentropy(label_smoothing=0.1))  # noqa: E731
    elif case == "logits":
        build = lambda: model(activations=("relu", "linear"),  # noqa: E731
                              loss=glassnet.losses.BinaryCrossentropy(from_logits=True))
    elif case == "loss_weights":
        def build():
            m = model()
            m.compile(loss="mse", optimizer="sgd", loss_weights=[2.0])
            return m
    elif case == "frozen":
        def build():
            m = model(units=(10, 4, 1), activations=("relu", "relu", "sigmoid"))
            m.layers[1].trainable = False
            m.compile(loss="mse", optimizer="sgd")
            return m
    elif case == "subclass":
        class Mine(glassnet.Sequential):
            def forward(self, x, training=False, mask=None):
                return super().forward(x, training, mask)

        def build():
            glassnet.set_random_seed(1)
            m = Mine([glassnet.Input((8,)), L.Dense(10, activation="relu"), L.Dense(1, activation="sigmoid")])
            m.compile(loss="mse", optimizer="sgd")
            return m
    elif case == "too_big":
        build = lambda: model(units=(500, 20, 1), activations=("relu", "relu", "sigmoid"))  # noqa: E731
        # (14,036 per row: even the last batch's 8 rows cost more than MAX_WORK)
    elif case == "int_labels_mse":
        y = y.astype("int64")  # cast to the model's dtype by fit, then the compiled step runs: checked below
    calls = count_chain_calls(monkeypatch)
    if case == "errstate":
        with np.errstate(over="raise"):
            on, off = fit_both(build, x, y, epochs=2, batch_size=16, **fit_kwargs)
    else:
        on, off = fit_both(build, x, y, epochs=2, batch_size=16, **fit_kwargs)
    if case == "int_labels_mse":
        assert calls and on[2]
    else:
        assert calls == []
        if case in ("sample_weight", "class_weight", "errstate", "too_big"):
            assert on[2]  # planned, but these batches are not the compiled step's
        else:
            assert not on[2]
    assert_same_training(on, off, "float32")


def test_errstate_raise_still_raises_on_overflow():
    x, y = data(rows=16)
    m = model()
    m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    m.layers[0].kernel.value[...] = 3e38
    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        m.train_on_batch(x * 10, y)


def test_train_on_batch_and_a_rebuilt_optimizer(monkeypatch):
    x, y = data(rows=32)
    calls = count_chain_calls(monkeypatch)
    m = model()
    m.train_on_batch(x, y)
    assert calls == [32]
    m.compile(loss="binary_crossentropy", optimizer="adam")  # new optimizer, new flat buffers
    ref = model(loss="binary_crossentropy", optimizer=O.Adam())
    ref.set_weights(m.get_weights())
    m.train_on_batch(x, y)
    assert calls == [32, 32]
    with compiled.use_compiled(False):
        ref.train_on_batch(x, y)
    for a, b in zip(m.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


# --- inference: Sequential.call through the compiled forward pass ----------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("units,activations,use_bias", [
    ((10, 1), ("relu", "sigmoid"), True),
    ((16, 3), ("tanh", "softmax"), True),
    ((5, 7, 4), ("linear", "relu", "softmax"), False),
    ((64, 64, 1), ("relu", "relu", "sigmoid"), True),
])
def test_predict_and_evaluate_match_the_layer_path(monkeypatch, dtype, units, activations, use_bias):
    x, y = data(rows=40, outputs=units[-1], dtype=dtype, seed=5)
    x[3] = 0.0  # relu at exactly 0
    m = model(units, activations, dtype=dtype, use_bias=use_bias)
    calls = count_forward_calls(monkeypatch)
    results = []
    for on in (True, False):
        with compiled.use_compiled(on):
            one = m.predict(x[:1], verbose=0)
            many = m.predict(x, batch_size=8, verbose=0)
            logs = m.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
        results.append((one, many, logs))
    per_row = 8 * units[0] + sum(a * b for a, b in zip(units[:-1], units[1:]))
    expected = [1] + [8] * 5 if 8 * per_row <= dense_chain.INFERENCE_MAX_WORK else [1]
    assert calls == expected + (expected[1:] if len(expected) > 1 else [])
    (one1, many1, logs1), (one0, many0, logs0) = results
    np.testing.assert_allclose(one1, one0, **TOL[dtype])
    np.testing.assert_allclose(many1, many0, **TOL[dtype])
    for key in logs0:
        np.testing.assert_allclose(logs1[key], logs0[key], **TOL[dtype])


def test_predict_follows_weight_changes_training_and_layer_edits(monkeypatch):
    x, y = data(rows=32)
    calls = count_forward_calls(monkeypatch)
    m = model()
    before = m.predict(x[:1], verbose=0)
    m.set_weights([w * 2 for w in m.get_weights()])
    after_set = m.predict(x[:1], verbose=0)
    m.fit(x, y, epochs=2, batch_size=8, verbose=0)  # the weights move into the optimizer's flat buffers
    after_fit = m.predict(x[:1], verbose=0)
    m.add(L.Dense(2, activation="softmax"))
    after_add = m.predict(x[:1], verbose=0)
    assert len(calls) == 4
    with compiled.use_compiled(False):
        assert after_add.shape == (1, 2)
        np.testing.assert_allclose(after_add, m.predict(x[:1], verbose=0), rtol=2e-5, atol=2e-6)
        m.pop()
        np.testing.assert_allclose(after_fit, m.predict(x[:1], verbose=0), rtol=2e-5, atol=2e-6)
    assert not np.allclose(before, after_set) and not np.allclose(after_set, after_fit)


def test_a_model_without_an_input_shape_plans_once_built(monkeypatch):
    calls = count_forward_calls(monkeypatch)
    glassnet.set_random_seed(1)
    m = glassnet.Sequential([L.Dense(4, activation="relu"), L.Dense(1)])
    x = np.ones((1, 3), "float32")
    out = m.predict(x, verbose=0)
    assert calls == [1] and out.shape == (1, 1)


@pytest.mark.parametrize("case", ["dropout", "other_activation", "wide", "errstate"])
def test_other_models_and_moments_predict_through_the_layers(monkeypatch, case):
    calls = count_forward_calls(monkeypatch)
    x, _ = data(rows=4)
    if case == "dropout":
        glassnet.set_random_seed(1)
        m = glassnet.Sequential([glassnet.Input((8,)), L.Dense(4, activation="relu"), L.Dropout(0.5), L.Dense(1)])
    elif case == "other_activation":
        m = model(activations=("elu", "sigmoid"))
    elif case == "wide":
        m = model(units=(2048, 1))  # 18k multiply-adds per row: BLAS
    else:
        m = model()
    if case == "errstate":
        with np.errstate(all="raise"):
            on = m.predict(x, verbose=0)
    else:
        on = m.predict(x, verbose=0)
    with compiled.use_compiled(False):
        off = m.predict(x, verbose=0)
    assert calls == []
    np.testing.assert_array_equal(on, off)


# --- changes during a fit, and the limits (found by review) -------------------------------------------------------
class _AtEpochEnd(glassnet.callbacks.Callback):
    def __init__(self, action):
        super().__init__()
        self.action = action

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.action(self.model)


def _switch_to_sgd(m):
    m.optimizer = O.SGD(0.1)
    m.optimizer.build(m.trainable_weights)


def _to_tanh(m):
    m.layers[0].activation = glassnet.activations.tanh


@pytest.mark.parametrize("action", [lambda m: m.optimizer.build(m.trainable_weights), _switch_to_sgd, _to_tanh],
                         ids=["optimizer_rebuilt", "optimizer_replaced", "activation_swapped"])
def test_changes_made_by_a_callback_mid_fit_are_followed(action):
    x, y = data(rows=96)
    on, off = fit_both(lambda: model(optimizer=O.Adam(0.01)), x, y, epochs=4, batch_size=16, shuffle=False,
                       callbacks=[_AtEpochEnd(action)])
    assert_same_training(on, off, "float32")
    assert len(set(np.round(on[0]["loss"], 6))) == 4  # still training after the change


def test_predict_follows_an_activation_swap_and_a_later_switch_on(monkeypatch):
    x, _ = data(rows=4)
    m = model(units=(10, 3), activations=("relu", "softmax"))
    calls = count_forward_calls(monkeypatch)
    with compiled.use_compiled(False):
        m.predict(x, verbose=0)  # planned while off: not remembered as "no plan"
    m.predict(x, verbose=0)
    assert calls == [4]
    m.layers[-1].activation = glassnet.activations.linear  # the usual way to get logits
    logits = m.predict(x, verbose=0)
    with compiled.use_compiled(False):
        np.testing.assert_allclose(logits, m.predict(x, verbose=0), rtol=2e-5, atol=2e-6)
    assert (logits < 0).any()


@pytest.mark.parametrize("units,activations,batch", [
    ((256, 1), ("sigmoid", "sigmoid"), 32),  # 256 tanh per row: NumPy's vectorized tanh is faster
    ((10, 1), ("relu", "sigmoid"), 256),     # more rows than MAX_ROWS
])
def test_batches_beyond_the_limits_take_the_layer_path(monkeypatch, units, activations, batch):
    x, y = data(rows=batch)
    calls = count_chain_calls(monkeypatch)
    on, off = fit_both(lambda: model(units, activations), x, y, epochs=1, batch_size=batch)
    assert calls == [] and on[2]
    assert_same_training(on, off, "float32")


def test_results_do_not_depend_on_the_memory_layout(monkeypatch):
    x, y = data(rows=32)
    calls = count_forward_calls(monkeypatch)
    m = model()
    np.testing.assert_array_equal(m.predict_on_batch(np.asfortranarray(x[:16])), m.predict_on_batch(x[:16]))
    np.testing.assert_array_equal(m.predict(x[:, ::-1][:, ::-1][::2], verbose=0), m.predict(x[::2].copy(), verbose=0))
    assert len(calls) == 4
    chain_calls = count_chain_calls(monkeypatch)
    a, b = model(), model()
    a.fit(np.asfortranarray(x), np.asfortranarray(np.hstack([y, y]))[:, :1], epochs=2, batch_size=8, shuffle=False,
          verbose=0)
    b.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    assert len(chain_calls) == 16
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)


# --- second review: read-only arrays, numba missing, limits ---------------------------------------------------------
def test_read_only_weights_take_the_layer_path(monkeypatch):
    x, _ = data(rows=2)
    m = model()
    expected = m.predict(x, verbose=0)
    calls = count_forward_calls(monkeypatch)
    kernel = m.layers[0].kernel
    frozen = kernel.value.copy()
    frozen.setflags(write=False)
    kernel._value = frozen  # as a kernel_initializer returning np.load(..., mmap_mode="r") leaves it
    np.testing.assert_array_equal(m.predict(x, verbose=0), expected)
    assert calls == []


def test_read_only_and_unaligned_inputs_reuse_the_compiled_kernels():
    """np.frombuffer (a V2 binary request) gives read-only arrays: another type to numba, which would compile the
    kernels again on the first such request. They are copied instead, as are unaligned ones."""
    from glassnet.engine import _numba_kernels
    x, y = data(rows=16)
    m = model()
    m.predict(x, verbose=0)
    m.train_on_batch(x, y)
    forward_types = len(_numba_kernels.dense_chain_forward.signatures)
    step_types = len(_numba_kernels.dense_chain_step.signatures)
    ro = np.frombuffer(x.tobytes(), "float32").reshape(x.shape)
    raw = np.zeros(x.nbytes + 1, np.uint8)[1:]
    unaligned = np.ndarray(x.shape, "float32", raw.data)
    unaligned[...] = x
    assert not ro.flags.writeable and not unaligned.flags.aligned
    for arr in (ro, unaligned):
        np.testing.assert_array_equal(m.predict(arr, verbose=0), m.predict(x, verbose=0))
    ro_y = np.frombuffer(y.tobytes(), "float32").reshape(y.shape)
    m.train_on_batch(ro, ro_y)
    assert len(_numba_kernels.dense_chain_forward.signatures) == forward_types
    assert len(_numba_kernels.dense_chain_step.signatures) == step_types


def test_without_numba_predict_plans_once_and_takes_the_layer_path(monkeypatch):
    x, _ = data(rows=1)
    m = model()
    expected = m.predict(x, verbose=0)
    monkeypatch.setattr(compiled, "_kernels", False)  # as _load() leaves it when numba is not installed
    m._reset_step_caches()
    planned = []
    real = dense_chain.forward_plan
    monkeypatch.setattr(dense_chain, "forward_plan", lambda layers: planned.append(1) or real(layers))
    for _ in range(3):
        with compiled.use_compiled(False):
            ref = m.predict(x, verbose=0)
        np.testing.assert_allclose(m.predict(x, verbose=0), ref)
    assert planned == [1]
    np.testing.assert_allclose(ref, expected, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("rows,units,expected_calls", [(16, (10, 1), 1), (17, (10, 1), 0), (1, (600, 1), 0)])
def test_inference_limits_rows_and_fan_in(monkeypatch, rows, units, expected_calls):
    features = 8 if units[0] != 600 else 4
    x, _ = data(rows=rows, features=features)
    if units[0] == 600:  # a fan-in above MAX_FAN_IN: the plain-order sums would round worse than BLAS
        glassnet.set_random_seed(1)
        m = glassnet.Sequential([glassnet.Input((features,)), L.Dense(600), L.Dense(1)])
    else:
        m = model(units)
    calls = count_forward_calls(monkeypatch)
    m.predict(x, batch_size=rows, verbose=0)
    assert len(calls) == expected_calls


def test_predict_plans_again_after_an_activation_swap(monkeypatch):
    x, _ = data(rows=2)
    m = model(units=(10, 3), activations=("relu", "softmax"))
    m.predict(x, verbose=0)
    calls = count_forward_calls(monkeypatch)
    m.layers[-1].activation = glassnet.activations.linear
    m.predict(x, verbose=0)
    m.predict(x, verbose=0)
    assert calls == [2, 2]  # the kernel runs again, with the new activation's code


# --- the tutorial's model: Normalization in front ----------------------------------------------------------------
def tutorial_like(invert=False, loss="mse"):
    glassnet.set_random_seed(1)
    x, _ = data(rows=64, seed=9)
    norm = L.Normalization(invert=invert)
    norm.adapt(x * 3 + 5)
    m = glassnet.Sequential([glassnet.Input((8,)), norm, L.Dense(10, activation="relu"),
                             L.Dense(1, activation="sigmoid")])
    m.compile(loss=loss, optimizer=O.SGD(0.05, momentum=0.9, nesterov=True), metrics=["accuracy"])
    return m


@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("loss", ["mse", "binary_crossentropy"])
def test_normalization_in_front_runs_as_is_before_the_compiled_step(monkeypatch, invert, loss):
    x, y = data(rows=70)
    x = x * 3 + 5  # raw features, standardized by the model
    calls = count_chain_calls(monkeypatch)
    on, off = fit_both(lambda: tutorial_like(invert, loss), x, y, epochs=3, batch_size=16,
                       validation_split=0.2)
    assert isinstance(on[2], dense_chain.DenseChain) and len(calls) == 12
    assert_same_training(on, off, "float32")
    forward_calls = count_forward_calls(monkeypatch)
    m = tutorial_like(invert, loss)
    p1 = m.predict(x[:3], verbose=0)
    with compiled.use_compiled(False):
        p0 = m.predict(x[:3], verbose=0)
    assert forward_calls == [3]
    np.testing.assert_allclose(p1, p0, rtol=2e-5, atol=2e-6)


def test_an_unadapted_normalization_still_says_so():
    x, y = data(rows=16)
    m = glassnet.Sequential([glassnet.Input((8,)), L.Normalization(), L.Dense(1, activation="sigmoid")])
    m.compile(loss="mse", optimizer="sgd")
    for on in (True, False):
        with compiled.use_compiled(on):
            with pytest.raises(ValueError, match="no statistics yet"):
                m.fit(x, y, epochs=1, verbose=0)
            with pytest.raises(ValueError, match="no statistics yet"):
                m.predict(x[:1], verbose=0)


@pytest.mark.parametrize("case", ["too_much_work", "float64_normalization", "errstate_call"])
def test_a_turned_down_batch_runs_the_normalization_once(monkeypatch, case):
    """The prefix runs after every other check: a batch the kernel turns down must not run it twice."""
    x, y = data(rows=32)
    runs = []
    real_call, real_forward = L.Normalization.call, L.Normalization.forward
    glassnet.set_random_seed(1)
    norm = L.Normalization(dtype="float64") if case == "float64_normalization" else L.Normalization()
    norm.adapt(x)
    units = (64, 64, 1) if case == "too_much_work" else (10, 1)
    m = glassnet.Sequential([glassnet.Input((8,)), norm] + [L.Dense(u, activation="relu") for u in units[:-1]]
                            + [L.Dense(units[-1], activation="sigmoid")])
    m.compile(loss="mse", optimizer="sgd")
    monkeypatch.setattr(L.Normalization, "call", lambda self, *a, **k: runs.append("call") or real_call(self, *a, **k))
    monkeypatch.setattr(L.Normalization, "forward",
                        lambda self, *a, **k: runs.append("forward") or real_forward(self, *a, **k))
    events = []
    if case == "errstate_call":
        with np.errstate(all="call", call=lambda kind, flag: events.append(kind)):
            m.train_on_batch(x, y)
            m.predict(x[:16], verbose=0)
    else:
        m.train_on_batch(x, y)
        m.predict(x[:16], verbose=0)
    assert runs == ["forward", "call"]  # once each: the layer path's training forward, then its call
