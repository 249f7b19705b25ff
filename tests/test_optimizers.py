"""Every optimizer, step by step, against a hand-written reference loop (float64, 1e-12).

The reference rules below are written independently from glassnet's code, one formula per line, from
Keras 3's ``keras/src/optimizers/*.py`` and /work/shared/reference/keras-semantics.md §2.1-2.2:
``it`` is ``optimizer.iterations`` *before* the step (0 on the first step) and ``t = it + 1``.
Order of one Keras 3 step: clip gradients -> weight decay ``w -= w·wd·lr`` -> update rule ->
constraints -> ``iterations += 1``. Learning-rate schedules are evaluated at ``it``.
"""
import math

import numpy as np
import pytest

import glassnet
from glassnet import optimizers
from glassnet.constraints import MaxNorm, NonNeg
from glassnet.engine.weight import Weight
from glassnet.optimizers import SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, Nadam, RMSprop, schedules

TOL = 1e-12
STEPS = 12
SHAPES = [(3, 4), (5,)]
ALL_CLASSES = [SGD, Adam, AdamW, Adamax, Nadam, RMSprop, Adagrad, Adadelta]


# --- the problem: initial weights and a sequence of different gradients -----------------------------
def make_problem(seed=0, steps=STEPS, shapes=SHAPES, scale=1.0):
    """Random float64 weights and per-step gradients; a few steps are much smaller/larger than the rest."""
    rng = np.random.default_rng(seed)
    inits = [rng.normal(size=s) for s in shapes]
    grads = []
    for step in range(steps):
        factor = scale * {3: 1e-3, 6: 10.0, 9: 0.0}.get(step, 1.0)
        gs = [factor * rng.normal(size=s) for s in shapes]
        if step == 9:  # one step with a zero gradient except for a single entry
            gs[1][2] = 0.7
        grads.append(gs)
    return inits, grads


def run_glassnet(opt, inits, grads, use_apply_gradients=False, constraints=None):
    """Step ``opt`` through ``grads``; return the weights after every step (copies)."""
    constraints = constraints or [None] * len(inits)
    weights = [Weight(v.copy(), f"w{i}", constraint=c) for i, (v, c) in enumerate(zip(inits, constraints))]
    if not use_apply_gradients:
        opt.build(weights)
    history = []
    for gs in grads:
        if use_apply_gradients:
            opt.apply_gradients([(g.copy(), w) for g, w in zip(gs, weights)])
        else:
            for w, g in zip(weights, gs):
                w.grad[...] = g
            opt.apply()
        history.append([w.numpy() for w in weights])
    return history


def assert_same_history(got, want, tol=TOL):
    assert len(got) == len(want)
    for step, (got_ws, want_ws) in enumerate(zip(got, want), start=1):
        assert len(got_ws) == len(want_ws)
        for i, (g, r) in enumerate(zip(got_ws, want_ws)):
            assert g.dtype == r.dtype
            np.testing.assert_allclose(g, r, rtol=tol, atol=tol, err_msg=f"step {step}, weight {i}")


# --- the reference: a plain loop around one update rule -----------------------------------------------
def reference_run(inits, grads, rule, slots, lr=0.001, lr_at=None, weight_decay=None, clip=None, constraints=None):
    """Keras 3's step order, written out. ``rule(w, g, state, lr, t) -> new w`` for one weight."""
    ws = [w.copy() for w in inits]
    states = [{name: make(w) for name, make in slots.items()} for w in ws]
    constraints = constraints or [None] * len(ws)
    history = []
    for it, gs in enumerate(grads):  # it = iterations before the step
        t = it + 1
        lr_t = lr_at(it) if lr_at is not None else lr
        gs = [g.copy() for g in gs]
        if clip is not None:
            gs = clip(gs)
        for i in range(len(ws)):
            if weight_decay:
                ws[i] = ws[i] - ws[i] * weight_decay * lr_t
            ws[i] = rule(ws[i], gs[i], states[i], lr_t, t)
            if constraints[i] is not None:
                ws[i] = constraints[i](ws[i])
        history.append([w.copy() for w in ws])
    return history


def zeros(w):
    return np.zeros_like(w)


def sgd_rule(momentum=0.0, nesterov=False):
    def rule(w, g, s, lr, t):
        if momentum == 0:
            return w - lr * g
        s["v"] = momentum * s["v"] - lr * g
        if nesterov:
            return w + momentum * s["v"] - lr * g
        return w + s["v"]
    return rule, ({"v": zeros} if momentum else {})


def adam_rule(beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False):
    def rule(w, g, s, lr, t):
        s["m"] = beta_1 * s["m"] + (1 - beta_1) * g
        s["v"] = beta_2 * s["v"] + (1 - beta_2) * g * g
        alpha = lr * math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        v = s["v"]
        if amsgrad:
            s["v_hat"] = np.maximum(s["v_hat"], s["v"])
            v = s["v_hat"]
        return w - alpha * s["m"] / (np.sqrt(v) + epsilon)
    return rule, {"m": zeros, "v": zeros, "v_hat": zeros}


def adamax_rule(beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    def rule(w, g, s, lr, t):
        s["m"] = beta_1 * s["m"] + (1 - beta_1) * g
        s["u"] = np.maximum(beta_2 * s["u"], np.abs(g))
        return w - lr * s["m"] / ((1 - beta_1 ** t) * (s["u"] + epsilon))
    return rule, {"m": zeros, "u": zeros}


def nadam_rule(beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Keras 3 nadam.py: u_t = β1·(1 − ½·0.96^t) (0.96 to the power of the step itself)."""
    def mu(step):
        return beta_1 * (1.0 - 0.5 * 0.96 ** step)

    def rule(w, g, s, lr, t):
        u_t, u_t1 = mu(t), mu(t + 1)
        u_product_t = 1.0
        for i in range(1, t + 1):
            u_product_t *= mu(i)
        u_product_t1 = u_product_t * u_t1
        s["m"] = beta_1 * s["m"] + (1 - beta_1) * g
        s["v"] = beta_2 * s["v"] + (1 - beta_2) * g * g
        m_hat = u_t1 * s["m"] / (1 - u_product_t1) + (1 - u_t) * g / (1 - u_product_t)
        v_hat = s["v"] / (1 - beta_2 ** t)
        return w - lr * m_hat / (np.sqrt(v_hat) + epsilon)
    return rule, {"m": zeros, "v": zeros}


def rmsprop_rule(rho=0.9, momentum=0.0, epsilon=1e-7, centered=False):
    def rule(w, g, s, lr, t):
        s["a"] = rho * s["a"] + (1 - rho) * g * g
        if centered:
            s["mg"] = rho * s["mg"] + (1 - rho) * g
            increment = lr * g / np.sqrt(s["a"] - s["mg"] ** 2 + epsilon)
        else:
            increment = lr * g / np.sqrt(s["a"] + epsilon)
        if momentum > 0:
            s["mom"] = momentum * s["mom"] + increment
            return w - s["mom"]
        return w - increment
    return rule, {"a": zeros, "mg": zeros, "mom": zeros}


def adagrad_rule(initial_accumulator_value=0.1, epsilon=1e-7):
    def rule(w, g, s, lr, t):
        s["acc"] = s["acc"] + g * g
        return w - lr * g / np.sqrt(s["acc"] + epsilon)
    return rule, {"acc": lambda w: np.full_like(w, initial_accumulator_value)}


def adadelta_rule(rho=0.95, epsilon=1e-7):
    def rule(w, g, s, lr, t):
        s["eg"] = rho * s["eg"] + (1 - rho) * g * g
        delta = -np.sqrt(s["ed"] + epsilon) / np.sqrt(s["eg"] + epsilon) * g
        s["ed"] = rho * s["ed"] + (1 - rho) * delta * delta
        return w + lr * delta
    return rule, {"eg": zeros, "ed": zeros}


def keras2_decay(lr, decay):
    return lambda it: lr / (1 + decay * it)


# id -> (glassnet optimizer factory, reference rule+slots, reference keyword arguments)
CASES = {
    "sgd_default": (lambda: SGD(), sgd_rule(), dict(lr=0.01)),
    "sgd": (lambda: SGD(learning_rate=0.1), sgd_rule(), dict(lr=0.1)),
    "sgd_momentum": (lambda: SGD(learning_rate=0.05, momentum=0.9), sgd_rule(0.9), dict(lr=0.05)),
    "sgd_nesterov": (lambda: SGD(learning_rate=0.05, momentum=0.9, nesterov=True), sgd_rule(0.9, True),
                     dict(lr=0.05)),
    "sgd_keras2_decay": (lambda: SGD(lr=0.1, decay=0.5), sgd_rule(), dict(lr_at=keras2_decay(0.1, 0.5))),
    "sgd_keras2_decay_nesterov": (lambda: SGD(lr=0.1, decay=0.5, momentum=0.9, nesterov=True), sgd_rule(0.9, True),
                                  dict(lr_at=keras2_decay(0.1, 0.5))),
    "sgd_keras2_decay_momentum": (lambda: SGD(lr=0.1, decay=0.5, momentum=0.8), sgd_rule(0.8),
                                  dict(lr_at=keras2_decay(0.1, 0.5))),
    "adam_default": (lambda: Adam(), adam_rule(), dict(lr=0.001)),
    "adam": (lambda: Adam(learning_rate=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-6), adam_rule(0.8, 0.99, 1e-6),
             dict(lr=0.02)),
    "adam_amsgrad": (lambda: Adam(learning_rate=0.02, amsgrad=True), adam_rule(amsgrad=True), dict(lr=0.02)),
    "adam_keras2_decay": (lambda: Adam(lr=0.02, decay=0.5), adam_rule(), dict(lr_at=keras2_decay(0.02, 0.5))),
    "adamw_default": (lambda: AdamW(), adam_rule(), dict(lr=0.001, weight_decay=0.004)),
    "adamw": (lambda: AdamW(learning_rate=0.05, weight_decay=0.1), adam_rule(), dict(lr=0.05, weight_decay=0.1)),
    "adamw_amsgrad": (lambda: AdamW(learning_rate=0.05, weight_decay=0.1, amsgrad=True), adam_rule(amsgrad=True),
                      dict(lr=0.05, weight_decay=0.1)),
    "adamax_default": (lambda: Adamax(), adamax_rule(), dict(lr=0.001)),
    "adamax": (lambda: Adamax(learning_rate=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-6),
               adamax_rule(0.8, 0.99, 1e-6), dict(lr=0.02)),
    "nadam_default": (lambda: Nadam(), nadam_rule(), dict(lr=0.001)),
    "nadam": (lambda: Nadam(learning_rate=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-6), nadam_rule(0.8, 0.99, 1e-6),
              dict(lr=0.02)),
    "rmsprop_default": (lambda: RMSprop(), rmsprop_rule(), dict(lr=0.001)),
    "rmsprop": (lambda: RMSprop(learning_rate=0.01, rho=0.8, epsilon=1e-6), rmsprop_rule(0.8, epsilon=1e-6),
                dict(lr=0.01)),
    "rmsprop_momentum": (lambda: RMSprop(learning_rate=0.01, momentum=0.9), rmsprop_rule(momentum=0.9),
                         dict(lr=0.01)),
    "rmsprop_centered": (lambda: RMSprop(learning_rate=0.01, centered=True), rmsprop_rule(centered=True),
                         dict(lr=0.01)),
    "rmsprop_centered_momentum": (lambda: RMSprop(learning_rate=0.01, momentum=0.5, centered=True),
                                  rmsprop_rule(momentum=0.5, centered=True), dict(lr=0.01)),
    "adagrad_default": (lambda: Adagrad(), adagrad_rule(), dict(lr=0.001)),
    "adagrad": (lambda: Adagrad(learning_rate=0.1, initial_accumulator_value=0.5, epsilon=1e-6),
                adagrad_rule(0.5, 1e-6), dict(lr=0.1)),
    "adadelta_default": (lambda: Adadelta(), adadelta_rule(), dict(lr=0.001)),
    "adadelta": (lambda: Adadelta(learning_rate=1.0, rho=0.9, epsilon=1e-6), adadelta_rule(0.9, 1e-6),
                 dict(lr=1.0)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_matches_reference_every_step(case):
    make_opt, (rule, slots), ref_kwargs = CASES[case]
    inits, grads = make_problem(seed=1)
    opt = make_opt()
    got = run_glassnet(opt, inits, grads)
    want = reference_run(inits, grads, rule, slots, **ref_kwargs)
    assert_same_history(got, want)
    assert opt.iterations == STEPS


@pytest.mark.parametrize("case", ["sgd_nesterov", "adam_amsgrad", "nadam", "rmsprop_centered", "adadelta"])
def test_apply_gradients_equals_build_and_apply(case):
    """``apply_gradients([(g, w), ...])`` (Keras API) steps exactly like ``build`` + ``apply``."""
    make_opt, (rule, slots), ref_kwargs = CASES[case]
    inits, grads = make_problem(seed=2)
    got = run_glassnet(make_opt(), inits, grads, use_apply_gradients=True)
    assert_same_history(got, run_glassnet(make_opt(), inits, grads))
    assert_same_history(got, reference_run(inits, grads, rule, slots, **ref_kwargs))


def test_keras3_defaults():
    """Keras 3's constructor defaults (§2.1, §2.2)."""
    assert (SGD().learning_rate, SGD().momentum, SGD().nesterov) == (0.01, 0.0, False)
    adam = Adam()
    assert (adam.learning_rate, adam.beta_1, adam.beta_2, adam.epsilon, adam.amsgrad) == (0.001, 0.9, 0.999, 1e-7,
                                                                                            False)
    rms = RMSprop()
    assert (rms.learning_rate, rms.rho, rms.momentum, rms.epsilon, rms.centered) == (0.001, 0.9, 0.0, 1e-7, False)
    ada = Adagrad()
    assert (ada.learning_rate, ada.initial_accumulator_value, ada.epsilon) == (0.001, 0.1, 1e-7)
    delta = Adadelta()
    assert (delta.learning_rate, delta.rho, delta.epsilon) == (0.001, 0.95, 1e-7)
    for cls in (Adamax, Nadam):
        opt = cls()
        assert (opt.learning_rate, opt.beta_1, opt.beta_2, opt.epsilon) == (0.001, 0.9, 0.999, 1e-7)
    assert AdamW().weight_decay == 0.004
    for cls in ALL_CLASSES:
        assert cls().iterations == 0


def test_keras2_decay_reads_iterations_before_the_step():
    """lr_t = lr / (1 + decay·it) with it = 0 on the first step (the post-increment variant differs)."""
    w = Weight(np.array([1.0, -2.0]), "w")
    opt = SGD(lr=0.1, decay=0.5)
    opt.build([w])
    expected = np.array([1.0, -2.0])
    for it in range(STEPS):
        assert opt._lr_at(opt.iterations) == pytest.approx(0.1 / (1 + 0.5 * it), rel=1e-15)
        assert opt.learning_rate == opt.lr == 0.1  # the base rate, as Keras 2's K.get_value(opt.lr) reads it
        g = np.array([1.0, 0.5]) * (it + 1)
        w.grad[...] = g
        opt.apply()
        expected = expected - 0.1 / (1 + 0.5 * it) * g
        np.testing.assert_allclose(w.value, expected, rtol=TOL, atol=TOL)
    assert opt.iterations == STEPS


# --- gradient clipping ----------------------------------------------------------------------------------
def clip_by_norm_each(c):
    """Keras 3 clipnorm: per tensor g·c / max(‖g‖, c)."""
    return lambda gs: [g * c / max(math.sqrt(float(np.sum(g * g))), c) for g in gs]


def clip_by_value(c):
    return lambda gs: [np.clip(g, -c, c) for g in gs]


def clip_by_global_norm(c):
    """Keras 3 global_clipnorm: all tensors scaled by c / max(‖(g1, g2, ...)‖, c)."""
    def clip(gs):
        norm = math.sqrt(sum(float(np.sum(g * g)) for g in gs))
        return [g * c / max(norm, c) for g in gs]
    return clip


def test_clipnorm_is_per_tensor():
    """One step by hand: the gradient with norm 5 is scaled to norm 1, the one with norm 0.5 is left alone."""
    w1 = Weight(np.array([1.0, 1.0]), "w1")
    w2 = Weight(np.array([1.0, 1.0]), "w2")
    SGD(learning_rate=1.0, clipnorm=1.0).apply_gradients([(np.array([3.0, 4.0]), w1), (np.array([0.3, 0.4]), w2)])
    np.testing.assert_allclose(w1.value, [1.0 - 0.6, 1.0 - 0.8], rtol=TOL, atol=TOL)
    np.testing.assert_allclose(w2.value, [1.0 - 0.3, 1.0 - 0.4], rtol=TOL, atol=TOL)


def test_global_clipnorm_by_hand():
    """Global norm √(25 + 100) over both tensors; both are scaled by the same factor."""
    w1 = Weight(np.array([1.0, 1.0]), "w1")
    w2 = Weight(np.array([1.0, 1.0]), "w2")
    SGD(learning_rate=1.0, global_clipnorm=1.0).apply_gradients([(np.array([3.0, 4.0]), w1),
                                                                  (np.array([6.0, 8.0]), w2)])
    scale = 1.0 / math.sqrt(125.0)
    np.testing.assert_allclose(w1.value, [1.0 - 3 * scale, 1.0 - 4 * scale], rtol=TOL, atol=TOL)
    np.testing.assert_allclose(w2.value, [1.0 - 6 * scale, 1.0 - 8 * scale], rtol=TOL, atol=TOL)


def test_clipvalue_by_hand():
    w = Weight(np.array([0.0, 0.0, 0.0, 0.0]), "w")
    SGD(learning_rate=1.0, clipvalue=0.5).apply_gradients([(np.array([-2.0, -0.25, 0.4, 7.0]), w)])
    np.testing.assert_allclose(w.value, [0.5, 0.25, -0.4, -0.5], rtol=TOL, atol=TOL)


@pytest.mark.parametrize("clip_name,clip_value,make_ref_clip", [
    ("clipnorm", 2.5, clip_by_norm_each),
    ("clipvalue", 0.8, clip_by_value),
    ("global_clipnorm", 4.0, clip_by_global_norm),
])
@pytest.mark.parametrize("case", ["sgd_nesterov", "adam", "rmsprop_momentum", "adagrad"])
def test_clipping_every_step(case, clip_name, clip_value, make_ref_clip):
    """Clipping happens before the rule; gradients of scale 1.5 are clipped on some steps only."""
    make_opt, (rule, slots), ref_kwargs = CASES[case]
    config = make_opt().get_config()
    config[clip_name] = clip_value
    opt = type(make_opt()).from_config(config)
    assert getattr(opt, clip_name) == clip_value
    inits, grads = make_problem(seed=3, scale=1.5)
    ref_clip = make_ref_clip(clip_value)
    n_clipped = sum(any(not np.array_equal(a, b) for a, b in zip(ref_clip(gs), gs)) for gs in grads)
    assert 0 < n_clipped < len(grads)
    got = run_glassnet(opt, inits, grads)
    assert_same_history(got, reference_run(inits, grads, rule, slots, clip=ref_clip, **ref_kwargs))


def test_global_clipnorm_with_weights_of_two_dtypes():
    """The global norm covers every gradient of the step, whatever the dtype of its weight (Keras 3
    ``clip_by_global_norm`` over the whole list): one scale for all, computed before any clipping."""
    w64 = Weight(np.array([1.0, 1.0]), "w64")
    w32 = Weight(np.array([1.0, 1.0], dtype=np.float32), "w32")
    SGD(learning_rate=1.0, global_clipnorm=1.0).apply_gradients(
        [(np.array([3.0, 4.0]), w64), (np.array([6.0, 8.0], dtype=np.float32), w32)])
    scale = 1.0 / math.sqrt(125.0)
    np.testing.assert_allclose(w64.value, [1.0 - 3 * scale, 1.0 - 4 * scale], rtol=TOL, atol=TOL)
    np.testing.assert_allclose(w32.value, [1.0 - 6 * scale, 1.0 - 8 * scale], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(clipnorm=1.0, clipvalue=1.0), dict(clipnorm=1.0, global_clipnorm=1.0),
                                    dict(clipvalue=1.0, global_clipnorm=1.0),
                                    dict(clipnorm=1.0, clipvalue=1.0, global_clipnorm=1.0)])
@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_only_one_clip_option(cls, kwargs):
    with pytest.raises(ValueError, match="Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set"):
        cls(**kwargs)


# --- weight decay and constraints ----------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["sgd", "sgd_momentum", "adam", "rmsprop_centered", "adamax", "adadelta"])
def test_weight_decay_before_the_update(case):
    """``weight_decay=wd``: w ← w − w·wd·lr, then the rule (Keras 3 ``_apply_weight_decay``)."""
    make_opt, (rule, slots), ref_kwargs = CASES[case]
    opt = make_opt()
    config = opt.get_config()
    config["weight_decay"] = 0.2
    opt = type(opt).from_config(config)
    inits, grads = make_problem(seed=4)
    got = run_glassnet(opt, inits, grads)
    assert_same_history(got, reference_run(inits, grads, rule, slots, weight_decay=0.2, **ref_kwargs))


def test_weight_decay_uses_the_scheduled_learning_rate_of_the_step():
    schedule = schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    inits, grads = make_problem(seed=5)
    got = run_glassnet(SGD(learning_rate=schedule, momentum=0.9, weight_decay=0.3), inits, grads)
    rule, slots = sgd_rule(0.9)
    want = reference_run(inits, grads, rule, slots, lr_at=lambda it: 0.1 * 0.5 ** (it / 2), weight_decay=0.3)
    assert_same_history(got, want)


def test_exclude_from_weight_decay():
    inits, grads = make_problem(seed=6)
    opt = SGD(learning_rate=0.1, weight_decay=0.5)
    weights = [Weight(v.copy(), name) for v, name in zip(inits, ("kernel", "bias"))]
    opt.exclude_from_weight_decay(var_names=["bias"])
    opt.build(weights)
    expected = [v.copy() for v in inits]
    for gs in grads:
        for w, g in zip(weights, gs):
            w.grad[...] = g
        opt.apply()
        expected = [expected[0] - expected[0] * 0.5 * 0.1 - 0.1 * gs[0], expected[1] - 0.1 * gs[1]]
        for w, e in zip(weights, expected):
            np.testing.assert_allclose(w.value, e, rtol=TOL, atol=TOL)


def test_constraint_is_applied_after_the_step():
    """NonNeg after the update: a weight that starts negative is updated first, then projected."""
    w = Weight(np.array([-1.0, 0.5, 2.0]), "w", constraint=NonNeg())
    SGD(learning_rate=1.0).apply_gradients([(np.array([0.0, 1.0, -1.0]), w)])
    # after the step [-1, -0.5, 3] -> NonNeg -> [0, 0, 3]  (projecting first would give [0, -0.5, 3])
    np.testing.assert_array_equal(w.value, [0.0, 0.0, 3.0])


def test_constraint_after_weight_decay_and_update():
    kernel = np.array([[3.0, 0.1], [4.0, 0.2]])
    w = Weight(kernel.copy(), "w", constraint=MaxNorm(max_value=2.0, axis=0))
    g = np.array([[1.0, -1.0], [0.5, 2.0]])
    SGD(learning_rate=0.1, weight_decay=0.5).apply_gradients([(g, w)])
    stepped = kernel - kernel * 0.5 * 0.1 - 0.1 * g
    norms = np.sqrt(np.sum(stepped ** 2, axis=0, keepdims=True))
    expected = stepped * np.clip(norms, 0, 2.0) / (1e-7 + norms)
    np.testing.assert_allclose(w.value, expected, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("case", ["sgd_nesterov", "adam", "rmsprop"])
def test_nonneg_constraint_every_step(case):
    make_opt, (rule, slots), ref_kwargs = CASES[case]
    inits, grads = make_problem(seed=7)
    inits = [np.abs(v) * 0.05 for v in inits]  # small positive weights, so the projection bites often
    nonneg = [lambda v: v * (v >= 0)] * len(inits)
    got = run_glassnet(make_opt(), inits, grads, constraints=[NonNeg(), NonNeg()])
    want = reference_run(inits, grads, rule, slots, constraints=nonneg, **ref_kwargs)
    assert any((w == 0).any() for w in want[-1])
    assert_same_history(got, want)


# --- learning-rate schedules ------------------------------------------------------------------------------
SCHEDULE_STEPS = [0, 1, 2, 3, 4, 5, 7, 8, 10, 11, 14, 15, 100]


@pytest.mark.parametrize("schedule,formula", [
    (schedules.ExponentialDecay(0.1, decay_steps=3, decay_rate=0.5),
     lambda s: 0.1 * 0.5 ** (s / 3)),
    (schedules.ExponentialDecay(0.1, decay_steps=3, decay_rate=0.5, staircase=True),
     lambda s: 0.1 * 0.5 ** math.floor(s / 3)),
    (schedules.InverseTimeDecay(0.1, decay_steps=1, decay_rate=0.5),
     lambda s: 0.1 / (1 + 0.5 * s)),
    (schedules.InverseTimeDecay(0.1, decay_steps=4, decay_rate=0.5),
     lambda s: 0.1 / (1 + 0.5 * s / 4)),
    (schedules.InverseTimeDecay(0.1, decay_steps=4, decay_rate=0.5, staircase=True),
     lambda s: 0.1 / (1 + 0.5 * math.floor(s / 4))),
    (schedules.PiecewiseConstantDecay(boundaries=[3, 7], values=[1.0, 0.5, 0.1]),
     lambda s: 1.0 if s <= 3 else (0.5 if s <= 7 else 0.1)),
    (schedules.CosineDecay(0.1, decay_steps=10),
     lambda s: 0.1 * 0.5 * (1 + math.cos(math.pi * min(s, 10) / 10))),
    (schedules.CosineDecay(0.1, decay_steps=10, alpha=0.2),
     lambda s: 0.1 * ((1 - 0.2) * 0.5 * (1 + math.cos(math.pi * min(s, 10) / 10)) + 0.2)),
    (schedules.CosineDecay(0.0, decay_steps=10, warmup_target=0.2, warmup_steps=4),
     lambda s: 0.2 * s / 4 if s < 4 else 0.2 * 0.5 * (1 + math.cos(math.pi * min(s - 4, 10) / 10))),
    (schedules.CosineDecay(0.05, decay_steps=6, alpha=0.1, warmup_target=0.3, warmup_steps=5),
     lambda s: 0.05 + (0.3 - 0.05) * s / 5 if s < 5
     else 0.3 * ((1 - 0.1) * 0.5 * (1 + math.cos(math.pi * min(s - 5, 6) / 6)) + 0.1)),
], ids=["exponential", "exponential_staircase", "inverse_time", "inverse_time_steps", "inverse_time_staircase",
        "piecewise", "cosine", "cosine_alpha", "cosine_warmup", "cosine_warmup_alpha"])
def test_schedule_formula(schedule, formula):
    for step in SCHEDULE_STEPS:
        assert float(schedule(step)) == pytest.approx(formula(step), rel=1e-12, abs=1e-15), f"step {step}"


def test_piecewise_constant_boundaries_are_inclusive():
    schedule = schedules.PiecewiseConstantDecay(boundaries=[3, 7], values=[1.0, 0.5, 0.1])
    assert [schedule(s) for s in (0, 3, 4, 7, 8, 50)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]


@pytest.mark.parametrize("make_schedule,formula,case", [
    (lambda: schedules.ExponentialDecay(0.1, 3, 0.5, staircase=True), lambda it: 0.1 * 0.5 ** (it // 3),
     "sgd_nesterov"),
    (lambda: schedules.PiecewiseConstantDecay([2, 6], [0.05, 0.02, 0.01]),
     lambda it: 0.05 if it <= 2 else (0.02 if it <= 6 else 0.01), "adam"),
    (lambda: schedules.CosineDecay(0.0, decay_steps=6, warmup_target=0.03, warmup_steps=4),
     lambda it: 0.03 * it / 4 if it < 4 else 0.03 * 0.5 * (1 + math.cos(math.pi * min(it - 4, 6) / 6)), "adam"),
    (lambda: schedules.InverseTimeDecay(0.02, 2, 0.7), lambda it: 0.02 / (1 + 0.7 * it / 2), "rmsprop_momentum"),
])
def test_schedule_drives_the_optimizer_at_iterations_before_the_step(make_schedule, formula, case):
    make_opt, (rule, slots), _ = CASES[case]
    config = make_opt().get_config()
    config["learning_rate"] = make_schedule()
    opt = type(make_opt()).from_config(config)
    inits, grads = make_problem(seed=8)
    weights = [Weight(v.copy(), f"w{i}") for i, v in enumerate(inits)]
    opt.build(weights)
    got = []
    for it, gs in enumerate(grads):
        assert opt.learning_rate == pytest.approx(formula(it), rel=1e-12, abs=1e-15)  # the rate of the next step
        for w, g in zip(weights, gs):
            w.grad[...] = g
        opt.apply()
        got.append([w.numpy() for w in weights])
    assert_same_history(got, reference_run(inits, grads, rule, slots, lr_at=formula))


def test_inverse_time_decay_equals_keras2_decay():
    """Keras 2 ``SGD(lr, decay)`` is Keras 3 ``InverseTimeDecay(lr, decay_steps=1, decay_rate=decay)``."""
    inits, grads = make_problem(seed=9)
    keras2 = SGD(lr=0.1, decay=0.5, momentum=0.9, nesterov=True)
    keras3 = SGD(learning_rate=schedules.InverseTimeDecay(0.1, 1, 0.5), momentum=0.9, nesterov=True)
    assert_same_history(run_glassnet(keras3, inits, grads), run_glassnet(keras2, inits, grads), tol=1e-15)
    rule, slots = sgd_rule(0.9, True)
    assert_same_history(run_glassnet(SGD(lr=0.1, decay=0.5, momentum=0.9, nesterov=True), inits, grads),
                        reference_run(inits, grads, rule, slots, lr_at=keras2_decay(0.1, 0.5)))
    for it in range(20):
        assert schedules.InverseTimeDecay(0.1, 1, 0.5)(it) == pytest.approx(0.1 / (1 + 0.5 * it), rel=1e-15)


def test_zero_argument_callable_learning_rate():
    """Keras 3: ``learning_rate`` may be "a callable that takes no arguments and returns the actual value"."""
    current = {"lr": 0.1}
    inits, grads = make_problem(seed=10, steps=4)
    opt = SGD(learning_rate=lambda: current["lr"])
    weights = [Weight(v.copy(), f"w{i}") for i, v in enumerate(inits)]
    opt.build(weights)
    expected = [v.copy() for v in inits]
    for step, gs in enumerate(grads):
        current["lr"] = 0.1 / (step + 1)
        for w, g in zip(weights, gs):
            w.grad[...] = g
        opt.apply()
        expected = [e - current["lr"] * g for e, g in zip(expected, gs)]
        for w, e in zip(weights, expected):
            np.testing.assert_allclose(w.value, e, rtol=TOL, atol=TOL)


# --- learning_rate assignment ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["sgd_momentum", "adam", "rmsprop_centered", "adagrad"])
def test_learning_rate_assignment_takes_effect_on_the_next_step(case):
    make_opt, (rule, slots), ref_kwargs = CASES[case]
    inits, grads = make_problem(seed=11)
    opt = make_opt()
    weights = [Weight(v.copy(), f"w{i}") for i, v in enumerate(inits)]
    opt.build(weights)
    got = []
    for it, gs in enumerate(grads):
        if it == 5:
            opt.learning_rate = 0.003
            assert opt.learning_rate == pytest.approx(0.003, rel=1e-15)
        for w, g in zip(weights, gs):
            w.grad[...] = g
        opt.apply()
        got.append([w.numpy() for w in weights])
    lr0 = ref_kwargs["lr"]
    want = reference_run(inits, grads, rule, slots, lr_at=lambda it: lr0 if it < 5 else 0.003)
    assert_same_history(got, want)


def test_learning_rate_assignment_with_keras2_decay_keeps_decaying():
    """Assigning sets the base rate (Keras 2's ``K.set_value(opt.lr, ...)``); the decay keeps applying to it, and
    ``learning_rate`` reads the base rate back (Keras 2's ``K.get_value(opt.lr)``)."""
    opt = SGD(lr=0.1, decay=0.5)
    w = Weight(np.array([1.0]), "w")
    opt.build([w])
    expected = 1.0
    for it in range(3):
        w.grad[...] = 1.0
        opt.apply()
        expected -= 0.1 / (1 + 0.5 * it)
    assert opt.learning_rate == 0.1
    opt.learning_rate = 0.2
    assert opt.learning_rate == opt.lr == 0.2
    w.grad[...] = 1.0
    opt.apply()
    expected -= 0.2 / (1 + 0.5 * 3)
    np.testing.assert_allclose(w.value, [expected], rtol=TOL, atol=TOL)


@pytest.mark.parametrize("kind", ["scheduler_identity", "scheduler_halving", "plateau_halving"])
def test_learning_rate_callbacks_with_keras2_decay_apply_the_decay_once(kind):
    """Callbacks read the rate, change it and assign it: with Keras 2's decay they must see the base rate (Keras 2's
    K.get_value(opt.lr)), or each epoch would fold the decay into the base once more. Checked against plain SGD
    with lr_t = base_epoch / (1 + decay·it), it counted across epochs, written out here."""
    x = np.linspace(-1, 1, 24, dtype=np.float64).reshape(12, 2)
    y = (x @ np.array([[0.5], [-1.0]]) + 0.25).astype(np.float64)
    model = glassnet.Sequential([glassnet.Input((2,), dtype="float64"), glassnet.layers.Dense(1, dtype="float64")])
    W0, b0 = np.array([[0.1], [0.2]]), np.array([0.0])
    model.set_weights([W0, b0])
    model.compile(optimizer=SGD(lr=0.1, decay=0.5), loss="mse")
    callback = {"scheduler_identity": lambda: glassnet.callbacks.LearningRateScheduler(lambda epoch, lr: lr),
                "scheduler_halving": lambda: glassnet.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5),
                "plateau_halving": lambda: glassnet.callbacks.ReduceLROnPlateau(
                    monitor="loss", factor=0.5, patience=0, min_delta=1e9)}[kind]()
    history = model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0, callbacks=[callback])
    W, b, it, base = W0.copy(), b0.copy(), 0, 0.1
    rates = []
    for epoch in range(3):
        if kind == "scheduler_halving":
            base *= 0.5  # on_epoch_begin
        for start in range(0, 12, 4):
            xb, yb = x[start:start + 4], y[start:start + 4]
            dz = 2 * (xb @ W + b - yb) / len(xb)
            lr = base / (1 + 0.5 * it)
            W, b, it = W - lr * (xb.T @ dz), b - lr * dz.sum(0), it + 1
        rates.append(base)
        if kind == "plateau_halving" and epoch > 0:
            base *= 0.5  # on_epoch_end: after the first epoch (an improvement on inf) no loss improves by min_delta
    np.testing.assert_allclose(model.get_weights()[0], W, rtol=1e-12)
    np.testing.assert_allclose(model.get_weights()[1], b, rtol=1e-12)
    assert model.optimizer.iterations == 9 and model.optimizer.learning_rate == pytest.approx(base, rel=1e-15)
    if kind.startswith("scheduler"):
        assert history.history["learning_rate"] == pytest.approx(rates, rel=1e-15)


# --- API: unknown arguments, get(), configs --------------------------------------------------------------
@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_unknown_argument_raises(cls):
    with pytest.raises(ValueError, match=r"Argument\(s\) not recognized"):
        cls(learning_rate=0.01, not_an_argument=3)


@pytest.mark.parametrize("name,cls", [("sgd", SGD), ("adam", Adam), ("adamw", AdamW), ("adamax", Adamax),
                                      ("nadam", Nadam), ("rmsprop", RMSprop), ("adagrad", Adagrad),
                                      ("adadelta", Adadelta), ("Adam", Adam), ("SGD", SGD), ("RMSprop", RMSprop),
                                      ("ADAM", Adam)])
def test_get_by_name(name, cls):
    opt = optimizers.get(name)
    assert type(opt) is cls
    assert opt.iterations == 0
    fresh = cls()
    assert opt.get_config() == fresh.get_config()


def test_get_sgd_string_has_keras_default_learning_rate():
    assert optimizers.get("sgd").learning_rate == 0.01
    assert optimizers.get("adam").learning_rate == 0.001


def test_get_instance_and_config():
    opt = Adam(learning_rate=0.02)
    assert optimizers.get(opt) is opt
    rebuilt = optimizers.get(optimizers.serialize(opt))
    assert type(rebuilt) is Adam and rebuilt is not opt
    assert rebuilt.get_config() == opt.get_config()
    assert type(optimizers.deserialize({"class_name": "RMSprop", "config": {"learning_rate": 0.1}})) is RMSprop


def test_get_unknown_name():
    with pytest.raises(ValueError, match="adamm"):
        optimizers.get("adamm")
    with pytest.raises((TypeError, ValueError)):
        optimizers.get(42)


ROUND_TRIP = [
    lambda: SGD(learning_rate=0.05, momentum=0.9, nesterov=True, clipnorm=2.0, name="my_sgd"),
    lambda: SGD(lr=0.1, decay=0.5, momentum=0.8),
    lambda: Adam(learning_rate=schedules.ExponentialDecay(0.01, 3, 0.5, staircase=True), beta_1=0.8, beta_2=0.99,
                 epsilon=1e-6, amsgrad=True, global_clipnorm=1.5),
    lambda: AdamW(learning_rate=0.02, weight_decay=0.1, clipvalue=0.5),
    lambda: Adamax(learning_rate=schedules.CosineDecay(0.0, 6, warmup_target=0.03, warmup_steps=4), beta_2=0.99),
    lambda: Nadam(learning_rate=0.02, beta_1=0.85, weight_decay=0.01),
    lambda: Nadam(lr=0.02, schedule_decay=0.004),  # Keras 2's momentum schedule, kept by the config
    lambda: RMSprop(learning_rate=schedules.PiecewiseConstantDecay([2, 6], [0.05, 0.02, 0.01]), rho=0.8,
                    momentum=0.5, centered=True, epsilon=1e-6),
    lambda: Adagrad(learning_rate=schedules.InverseTimeDecay(0.1, 2, 0.7), initial_accumulator_value=0.3),
    lambda: Adadelta(learning_rate=1.0, rho=0.9, epsilon=1e-6, clipnorm=1.0),
]


@pytest.mark.parametrize("make_opt", ROUND_TRIP, ids=["sgd", "sgd_keras2", "adam", "adamw", "adamax", "nadam",
                                                      "nadam_keras2", "rmsprop", "adagrad", "adadelta"])
def test_get_config_from_config_round_trip(make_opt):
    opt = make_opt()
    config = opt.get_config()
    for key in ("name", "learning_rate", "weight_decay", "clipnorm", "global_clipnorm", "clipvalue"):
        assert key in config
    clone = type(opt).from_config(config)
    assert clone.get_config() == config
    via_registry = optimizers.deserialize(optimizers.serialize(opt))
    assert type(via_registry) is type(opt) and via_registry.get_config() == config
    inits, grads = make_problem(seed=12)
    assert_same_history(run_glassnet(clone, inits, grads), run_glassnet(make_opt(), inits, grads), tol=0)


@pytest.mark.parametrize("cls,specific", [
    (SGD, {"momentum": 0.9, "nesterov": True}),
    (Adam, {"beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-6, "amsgrad": True}),
    (AdamW, {"beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-6, "amsgrad": False}),
    (Adamax, {"beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-6}),
    (Nadam, {"beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-6}),
    (RMSprop, {"rho": 0.8, "momentum": 0.5, "epsilon": 1e-6, "centered": True}),
    (Adagrad, {"initial_accumulator_value": 0.3, "epsilon": 1e-6}),
    (Adadelta, {"rho": 0.9, "epsilon": 1e-6}),
])
def test_config_has_keras_keys(cls, specific):
    opt = cls(learning_rate=0.02, **specific)
    config = opt.get_config()
    assert config["learning_rate"] == 0.02
    for key, value in specific.items():
        assert config[key] == value


def test_from_config_accepts_a_keras3_saved_config():
    """The optimizer config written by Keras 3 (``model.keras``), schedule included."""
    config = {"name": "adam", "learning_rate": {"module": "keras.optimizers.schedules",
                                                "class_name": "ExponentialDecay",
                                                "config": {"initial_learning_rate": 0.01, "decay_steps": 3,
                                                           "decay_rate": 0.5, "staircase": False,
                                                           "name": "ExponentialDecay"},
                                                "registered_name": None},
              "weight_decay": None, "clipnorm": None, "global_clipnorm": None, "clipvalue": None, "use_ema": False,
              "ema_momentum": 0.99, "ema_overwrite_frequency": None, "loss_scale_factor": None,
              "gradient_accumulation_steps": None, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07,
              "amsgrad": False}
    opt = Adam.from_config(config)
    inits, grads = make_problem(seed=13)
    rule, slots = adam_rule()
    want = reference_run(inits, grads, rule, slots, lr_at=lambda it: 0.01 * 0.5 ** (it / 3))
    assert_same_history(run_glassnet(opt, inits, grads), want)


@pytest.mark.parametrize("case", ["sgd_nesterov", "adam_amsgrad", "nadam", "rmsprop_centered", "adadelta"])
def test_apply_gradients_on_some_weights_moves_only_those(case):
    """Keras: apply_gradients with gradients for some of the optimizer's weights updates only those (and
    their slots); each one steps exactly as with an optimizer built on it alone."""
    make_opt, _, _ = CASES[case]
    inits, grads = make_problem(seed=3, shapes=[(3, 4), (5,), (2, 2)])
    weights = [Weight(v.copy(), f"w{i}") for i, v in enumerate(inits)]
    opt = make_opt()
    opt.build(weights)
    alone = [Weight(inits[1].copy(), "w1")]
    opt_alone = make_opt()
    opt_alone.build(alone)
    first = [w.numpy() for w in weights]
    slots_before = [{k: v.copy() for k, v in s.items()} for s in opt.slots]
    for i in (0, 2):
        weights[i].grad[...] = 1.0  # left over from an earlier step: must not be applied again
    for gs in grads:
        opt.apply_gradients([(gs[1].copy(), weights[1])])
        opt_alone.apply_gradients([(gs[1].copy(), alone[0])])
        np.testing.assert_array_equal(weights[1].numpy(), alone[0].numpy())
    for i in (0, 2):
        np.testing.assert_array_equal(weights[i].numpy(), first[i])  # never moved
    sl0 = opt.groups[0].slices[0]
    for name, before in slots_before[0].items():  # and neither did their slots
        np.testing.assert_array_equal(opt.slots[0][name][sl0], before[sl0])
    assert opt.iterations == STEPS
    assert not np.array_equal(weights[1].numpy(), first[1])


def test_apply_gradients_skips_none_and_refuses_unknown_weights():
    a, b = Weight(np.ones(3), "a"), Weight(np.ones(2), "b")
    opt = SGD(0.5)
    opt.build([a, b])
    opt.apply_gradients([(np.ones(3), a), (None, b)])  # a None gradient: that weight is left alone
    np.testing.assert_array_equal(a.numpy(), 0.5)
    np.testing.assert_array_equal(b.numpy(), 1.0)
    assert opt.iterations == 1
    opt.apply_gradients([(None, a), (None, b)])  # nothing to do: no step
    assert opt.iterations == 1
    with pytest.raises(ValueError, match="not built with"):
        opt.apply_gradients([(np.ones(4), Weight(np.ones(4), "stranger"))])


def test_apply_gradients_on_some_weights_clips_their_norm_only():
    a, b = Weight(np.zeros(2), "a"), Weight(np.zeros(2), "b")
    opt = SGD(1.0, global_clipnorm=1.0)
    opt.build([a, b])
    b.grad[...] = 100.0  # a stale gradient of the weight not given: must not enter the norm
    opt.apply_gradients([(np.array([3.0, 4.0]), a)])
    np.testing.assert_allclose(a.numpy(), [-0.6, -0.8])
    np.testing.assert_array_equal(b.numpy(), 0.0)
