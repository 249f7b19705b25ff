"""glassnet against PyTorch: Dense + activations, losses and optimizer steps with identical weights.

Everything runs in float64 and must agree to 1e-6 (one float32 Dense case to 1e-5). A Dense kernel
(in, out) is torch.nn.Linear's weight transposed. Only cases where Keras 3's formula and torch's
coincide are compared (e.g. epsilons made tiny where the two put them in different places).
"""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import glassnet  # noqa: E402
from glassnet import activations, losses  # noqa: E402
from glassnet.layers import Dense, Input  # noqa: E402
from glassnet.optimizers import SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, Nadam, RMSprop  # noqa: E402

pytestmark = pytest.mark.reference

TOL = 1e-6
TOL32 = 1e-5
EPS = 1e-7  # keras.backend.epsilon()


@pytest.fixture
def f64():
    """float64 layers for the test; Keras's float32 default is restored after."""
    glassnet.set_floatx("float64")
    yield
    glassnet.set_floatx("float32")


def close(got, want, tol=TOL, what=""):
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    np.testing.assert_allclose(np.asarray(got), want, rtol=tol, atol=tol, err_msg=what)


# --- Dense with every activation torch has ---------------------------------------------------------------
GELU_TANH = activations.Activation("gelu_tanh", activations.gelu.fn, activations.gelu.grad, approximate=True)

ACTIVATIONS = {  # glassnet activation -> the torch function
    "linear": ("linear", lambda z: z),
    "relu": ("relu", F.relu),
    "sigmoid": ("sigmoid", torch.sigmoid),
    "tanh": ("tanh", torch.tanh),
    "softmax": ("softmax", lambda z: F.softmax(z, dim=-1)),
    "log_softmax": ("log_softmax", lambda z: F.log_softmax(z, dim=-1)),
    "elu": ("elu", F.elu),
    "selu": ("selu", F.selu),
    "softplus": ("softplus", F.softplus),
    "softsign": ("softsign", F.softsign),
    "leaky_relu": ("leaky_relu", lambda z: F.leaky_relu(z, negative_slope=0.2)),
    "gelu": ("gelu", F.gelu),
    "gelu_tanh": (GELU_TANH, lambda z: F.gelu(z, approximate="tanh")),
    "silu": ("silu", F.silu),
    "swish": ("swish", F.silu),
    "hard_sigmoid": ("hard_sigmoid", F.hardsigmoid),
    "exponential": ("exponential", torch.exp),
}


def dense_pair(activation, in_dim, units, use_bias, rng, dtype):
    """A built glassnet Dense and a torch Linear holding the same random weights."""
    layer = Dense(units, activation=ACTIVATIONS[activation][0], use_bias=use_bias)
    layer(np.zeros((1, in_dim), dtype=dtype))  # builds the layer
    kernel = rng.normal(0, 1.0, (in_dim, units)).astype(dtype)
    bias = rng.normal(0, 0.5, units).astype(dtype)
    layer.set_weights([kernel, bias] if use_bias else [kernel])
    assert layer.kernel.dtype == dtype
    lin = torch.nn.Linear(in_dim, units, bias=use_bias, dtype=getattr(torch, np.dtype(dtype).name))
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(kernel.T.copy()))
        if use_bias:
            lin.bias.copy_(torch.from_numpy(bias))
    return layer, lin


def compare_dense(activation, x, dy, layer, lin, tol):
    for w in layer.weights:
        w.grad[...] = 0
    y, backward = layer.forward(x, training=True)
    dx = backward(dy)
    assert y.dtype == x.dtype and dx.dtype == x.dtype

    xt = torch.tensor(x, requires_grad=True)
    yt = ACTIVATIONS[activation][1](lin(xt))
    (yt * torch.from_numpy(dy)).sum().backward()

    close(y, yt, tol, f"{activation}: forward")
    close(layer.call(x), yt, tol, f"{activation}: call")
    close(dx, xt.grad, tol, f"{activation}: input gradient")
    close(layer.kernel.grad, lin.weight.grad.T, tol, f"{activation}: kernel gradient")
    if layer.use_bias:
        close(layer.bias.grad, lin.bias.grad, tol, f"{activation}: bias gradient")


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_dense_activation_forward_backward(f64, activation, use_bias):
    rng = np.random.default_rng(list(ACTIVATIONS).index(activation))
    layer, lin = dense_pair(activation, 5, 4, use_bias, rng, np.float64)
    x = rng.normal(0, 2.0, (10, 5))  # pre-activations spread wide: hard_sigmoid's flat parts too
    dy = rng.normal(size=(10, 4))
    z = x @ layer.kernel.value + (layer.bias.value if use_bias else 0.0)
    assert np.all(np.abs(z) > 1e-6) and np.all(np.abs(np.abs(z) - 3) > 1e-6)  # off the kinks at 0 and ±3
    assert (np.abs(z) < 3).any() and (np.abs(z) > 3).any() and (z < 0).any() and (z > 0).any()
    compare_dense(activation, x, dy, layer, lin, TOL)


@pytest.mark.parametrize("activation", ["tanh", "softmax", "gelu", "relu"])
def test_dense_rank3_input(f64, activation):
    rng = np.random.default_rng(5)
    layer, lin = dense_pair(activation, 5, 3, True, rng, np.float64)
    x = rng.normal(size=(2, 6, 5))
    dy = rng.normal(size=(2, 6, 3))
    compare_dense(activation, x, dy, layer, lin, TOL)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "softmax", "gelu", "selu", "hard_sigmoid"])
def test_dense_float32(activation):
    glassnet.set_floatx("float32")
    rng = np.random.default_rng(6)
    layer, lin = dense_pair(activation, 5, 4, True, rng, np.float32)
    x = rng.normal(0, 1.2, (7, 5)).astype(np.float32)
    dy = rng.normal(size=(7, 4)).astype(np.float32)
    compare_dense(activation, x, dy, layer, lin, TOL32)


# --- losses ------------------------------------------------------------------------------------------------
def compare_loss(loss, torch_loss, y_true, y_pred, tol=TOL, sample_weight=None):
    """Value (``__call__`` and ``value_and_grad``) and d loss / d y_pred against torch autograd."""
    value, grad = loss.value_and_grad(y_true, y_pred, sample_weight)
    direct = loss(y_true, y_pred, sample_weight)
    p = torch.tensor(y_pred, requires_grad=True)
    t = torch.from_numpy(np.asarray(y_true))
    out = torch_loss(t, p)
    out.backward()
    close(value, out, tol, "value_and_grad value")
    close(direct, out, tol, "__call__ value")
    close(grad, p.grad, tol, "gradient")
    assert grad.shape == y_pred.shape


def probs(rng, shape):
    e = np.exp(rng.normal(size=shape))
    return e / e.sum(axis=-1, keepdims=True)


def away_from(v, kinks, margin=1e-2):
    """Move values off the kinks of a piecewise loss (where both sides pick different subgradients)."""
    for k in kinks:
        v = np.where(np.abs(v - k) < margin, k + 2 * margin, v)
    return v


def test_mse(f64):
    rng = np.random.default_rng(1)
    compare_loss(losses.MeanSquaredError(), lambda t, p: F.mse_loss(p, t),
                 rng.normal(size=(8, 3)), rng.normal(size=(8, 3)))


def test_mae(f64):
    rng = np.random.default_rng(2)
    compare_loss(losses.MeanAbsoluteError(), lambda t, p: F.l1_loss(p, t),
                 rng.normal(size=(8, 3)), rng.normal(size=(8, 3)))


def test_mse_single_output_with_rank1_targets(f64):
    """y of shape (N,) against predictions (N, 1): Keras aligns the ranks."""
    rng = np.random.default_rng(3)
    y, p = rng.normal(size=8), rng.normal(size=(8, 1))
    compare_loss(losses.MeanSquaredError(), lambda t, pt: F.mse_loss(pt[:, 0], t), y, p)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean_with_sample_weight"])
def test_mse_with_sample_weight_and_reductions(f64, reduction):
    rng = np.random.default_rng(4)
    y, p = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    w = np.array([1.0, 0.0, 3.0, 1.0, 0.5, 2.0])
    wt = torch.from_numpy(w)

    def torch_loss(t, pt):
        weighted = (wt * ((pt - t) ** 2).mean(dim=-1)).sum()
        divisor = {"sum_over_batch_size": len(w), "sum": 1.0, "mean_with_sample_weight": wt.sum()}[reduction]
        return weighted / divisor

    compare_loss(losses.MeanSquaredError(reduction=reduction), torch_loss, y, p, sample_weight=w)


def test_binary_crossentropy_probabilities_with_keras_clip(f64):
    """Keras clips p to [ε, 1 − ε] (ε = 1e-7) before the logs; the gradient stops outside that range."""
    rng = np.random.default_rng(5)
    p = rng.uniform(0.01, 0.99, size=(8, 3))
    p[0, 0], p[1, 1], p[2, 2], p[3, 0], p[4, 1] = 0.0, 1.0, 1e-9, 1 - 1e-9, 2e-7
    y = rng.integers(0, 2, size=(8, 3)).astype(np.float64)
    y[5] = [0.3, 0.5, 0.9]  # soft labels

    def torch_loss(t, pt):
        return F.binary_cross_entropy(torch.clamp(pt, EPS, 1 - EPS), t)

    compare_loss(losses.BinaryCrossentropy(), torch_loss, y, p)


def test_binary_crossentropy_saturated_is_minus_log_epsilon(f64):
    value = losses.BinaryCrossentropy()(np.array([[1.0]]), np.array([[0.0]]))
    assert value == pytest.approx(-math.log(EPS), rel=1e-6)
    expected = F.binary_cross_entropy(torch.clamp(torch.tensor([[0.0]], dtype=torch.float64), EPS, 1 - EPS),
                                      torch.tensor([[1.0]], dtype=torch.float64))
    close(value, expected)


def test_binary_crossentropy_from_logits(f64):
    rng = np.random.default_rng(6)
    z = rng.normal(0, 3, size=(8, 3))
    z[0] = [40.0, -40.0, 0.0]  # large logits stay finite and exact
    y = rng.integers(0, 2, size=(8, 3)).astype(np.float64)
    y[1] = [0.2, 0.5, 0.8]
    compare_loss(losses.BinaryCrossentropy(from_logits=True), lambda t, p: F.binary_cross_entropy_with_logits(p, t),
                 y, z)


def test_binary_crossentropy_from_logits_label_smoothing(f64):
    rng = np.random.default_rng(7)
    z, y = rng.normal(0, 2, size=(8, 2)), rng.integers(0, 2, size=(8, 2)).astype(np.float64)
    ls = 0.2
    compare_loss(losses.BinaryCrossentropy(from_logits=True, label_smoothing=ls),
                 lambda t, p: F.binary_cross_entropy_with_logits(p, t * (1 - ls) + 0.5 * ls), y, z)


def test_categorical_crossentropy_from_logits_vs_cross_entropy_with_probability_targets(f64):
    rng = np.random.default_rng(8)
    z = rng.normal(0, 2, size=(8, 5))
    z[0] = [50.0, -50.0, 0.0, 10.0, -3.0]
    y = probs(rng, (8, 5))
    y[1] = np.eye(5)[3]
    compare_loss(losses.CategoricalCrossentropy(from_logits=True), lambda t, p: F.cross_entropy(p, t), y, z)


def test_categorical_crossentropy_from_logits_label_smoothing(f64):
    """Keras y·(1 − ls) + ls/C is torch's label_smoothing for probability targets."""
    rng = np.random.default_rng(9)
    z, y = rng.normal(0, 2, size=(8, 4)), np.eye(4)[rng.integers(0, 4, size=8)]
    compare_loss(losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
                 lambda t, p: F.cross_entropy(p, t, label_smoothing=0.1), y, z)


def test_categorical_crossentropy_probabilities(f64):
    """q = p / Σp, clipped to [ε, 1 − ε]; −Σ y·log q (unnormalised p is renormalised)."""
    rng = np.random.default_rng(10)
    p = probs(rng, (8, 4)) * rng.uniform(0.5, 2.0, size=(8, 1))
    p[0] = [2.0, 1.0, 1.0, 0.0]
    y = np.eye(4)[rng.integers(0, 4, size=8)]
    y[0] = [0.0, 0.0, 0.0, 1.0]  # the class with probability 0: clipped to ε
    y[2] = [0.1, 0.2, 0.3, 0.4]

    def torch_loss(t, pt):
        q = torch.clamp(pt / pt.sum(dim=-1, keepdim=True), EPS, 1 - EPS)
        return -(t * torch.log(q)).sum(dim=-1).mean()

    compare_loss(losses.CategoricalCrossentropy(), torch_loss, y, p)


@pytest.mark.parametrize("label_shape", ["(N,)", "(N,1)"])
def test_sparse_categorical_crossentropy_from_logits_vs_cross_entropy(f64, label_shape):
    rng = np.random.default_rng(11)
    z = rng.normal(0, 2, size=(8, 5))
    labels = rng.integers(0, 5, size=8)
    y = labels if label_shape == "(N,)" else labels[:, None]
    compare_loss(losses.SparseCategoricalCrossentropy(from_logits=True),
                 lambda t, p: F.cross_entropy(p, t.reshape(-1).long()), y, z)


def test_sparse_categorical_crossentropy_probabilities(f64):
    rng = np.random.default_rng(12)
    p = probs(rng, (8, 4))
    labels = rng.integers(0, 4, size=8)

    def torch_loss(t, pt):
        q = torch.clamp(pt / pt.sum(dim=-1, keepdim=True), EPS, 1 - EPS)
        return F.nll_loss(torch.log(q), t.long())

    compare_loss(losses.SparseCategoricalCrossentropy(), torch_loss, labels, p)


@pytest.mark.parametrize("delta", [1.0, 0.5, 2.0])
def test_huber_vs_torch_huber_loss(f64, delta):
    rng = np.random.default_rng(13)
    y = rng.normal(size=(8, 3))
    diff = away_from(rng.normal(0, 2 * delta, size=(8, 3)), [-delta, delta])
    loss = losses.Huber() if delta == 1.0 else losses.Huber(delta=delta)
    compare_loss(loss, lambda t, p: F.huber_loss(p, t, delta=delta), y, y + diff)


def test_kl_divergence_vs_kl_div(f64):
    """Σ y·log(y/p) per sample, mean over samples = torch kl_div(log p, y, 'batchmean') (no clipping active)."""
    rng = np.random.default_rng(14)
    y, p = probs(rng, (8, 4)), probs(rng, (8, 4))
    compare_loss(losses.KLDivergence(), lambda t, pt: F.kl_div(torch.log(pt), t, reduction="batchmean"), y, p)


def test_poisson_vs_poisson_nll_loss(f64):
    """Keras p − y·log(p + ε) is torch's poisson_nll_loss(log_input=False, full=False) with eps = ε."""
    rng = np.random.default_rng(15)
    p = rng.uniform(0.05, 4.0, size=(8, 3))
    y = rng.poisson(2.0, size=(8, 3)).astype(np.float64)
    compare_loss(losses.Poisson(),
                 lambda t, pt: F.poisson_nll_loss(pt, t, log_input=False, full=False, eps=EPS, reduction="mean"), y, p)


def test_cosine_similarity_vs_torch(f64):
    rng = np.random.default_rng(16)
    y, p = rng.normal(size=(8, 4)), rng.normal(size=(8, 4))
    compare_loss(losses.CosineSimilarity(), lambda t, pt: -F.cosine_similarity(pt, t, dim=-1).mean(), y, p)


@pytest.mark.parametrize("labels", ["pm1", "01"])
def test_hinge(f64, labels):
    rng = np.random.default_rng(17)
    y01 = rng.integers(0, 2, size=(8, 3)).astype(np.float64)
    ypm = 2 * y01 - 1
    p = rng.normal(0, 1.5, size=(8, 3))
    p = ypm * away_from(ypm * p, [1.0])  # margins away from the kink y·p = 1
    y = ypm if labels == "pm1" else y01
    compare_loss(losses.Hinge(), lambda t, pt: torch.clamp(1 - torch.from_numpy(ypm) * pt, min=0).mean(), y, p)


@pytest.mark.parametrize("labels", ["pm1", "01"])
def test_squared_hinge(f64, labels):
    rng = np.random.default_rng(18)
    y01 = rng.integers(0, 2, size=(8, 3)).astype(np.float64)
    ypm = 2 * y01 - 1
    p = rng.normal(0, 1.5, size=(8, 3))
    y = ypm if labels == "pm1" else y01
    compare_loss(losses.SquaredHinge(),
                 lambda t, pt: (torch.clamp(1 - torch.from_numpy(ypm) * pt, min=0) ** 2).mean(), y, p)


def test_categorical_hinge(f64):
    """max(max((1 − y)·p) − Σ y·p + 1, 0) per sample."""
    rng = np.random.default_rng(19)
    y = np.eye(4)[rng.integers(0, 4, size=8)]
    p = rng.normal(0, 1.0, size=(8, 4))

    def torch_loss(t, pt):
        pos = (t * pt).sum(dim=-1)
        neg = ((1 - t) * pt).amax(dim=-1)
        return torch.clamp(neg - pos + 1, min=0).mean()

    value_margin = np.max((1 - y) * p, axis=-1) - np.sum(y * p, axis=-1) + 1
    assert np.all(np.abs(value_margin) > 1e-3)
    compare_loss(losses.CategoricalHinge(), torch_loss, y, p)


def test_log_cosh(f64):
    rng = np.random.default_rng(20)
    y, p = rng.normal(size=(8, 3)), rng.normal(0, 3, size=(8, 3))
    compare_loss(losses.LogCosh(), lambda t, pt: torch.log(torch.cosh(pt - t)).mean(), y, p)


def test_mean_absolute_percentage_error(f64):
    rng = np.random.default_rng(21)
    y, p = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    y[0, 0] = 0.0  # |y| floored at ε
    compare_loss(losses.MeanAbsolutePercentageError(),
                 lambda t, pt: 100 * (torch.abs(t - pt) / torch.clamp(torch.abs(t), min=EPS)).mean(), y, p)


def test_mean_squared_logarithmic_error(f64):
    rng = np.random.default_rng(22)
    y, p = rng.uniform(0, 3, size=(8, 3)), rng.uniform(0.01, 3, size=(8, 3))
    y[0, 0] = 0.0
    compare_loss(losses.MeanSquaredLogarithmicError(),
                 lambda t, pt: ((torch.log1p(torch.clamp(pt, min=EPS)) - torch.log1p(torch.clamp(t, min=EPS))) ** 2)
                 .mean(), y, p)


def test_categorical_crossentropy_from_logits_float32():
    rng = np.random.default_rng(23)
    z = rng.normal(0, 2, size=(8, 5)).astype(np.float32)
    y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, size=8)]
    compare_loss(losses.CategoricalCrossentropy(from_logits=True), lambda t, p: F.cross_entropy(p, t), y, z, TOL32)


# --- optimizers: a 2-layer MLP trained with train_on_batch, step by step -------------------------------------
STEPS = 12


def mlp_pair(optimizer):
    """A glassnet Sequential (compiled with loss='mse') and the same torch MLP with the same weights."""
    model = glassnet.Sequential([Input((4,)), Dense(8, activation="tanh"), Dense(3)])
    model.compile(optimizer=optimizer, loss="mse")
    net = torch.nn.Sequential(torch.nn.Linear(4, 8, dtype=torch.float64), torch.nn.Tanh(),
                              torch.nn.Linear(8, 3, dtype=torch.float64))
    k1, b1, k2, b2 = model.get_weights()
    assert k1.dtype == np.float64
    with torch.no_grad():
        for param, value in zip(net.parameters(), (k1.T, b1, k2.T, b2)):
            param.copy_(torch.from_numpy(value.copy()))
    return model, net


def torch_weights(net):
    w1, b1, w2, b2 = [p.detach().numpy() for p in net.parameters()]
    return [w1.T, b1, w2.T, b2]


def train_both(optimizer, make_torch_optimizer, steps=STEPS, scheduler=None):
    model, net = mlp_pair(optimizer)
    initial = model.get_weights()
    topt = make_torch_optimizer(net.parameters())
    sched = scheduler(topt) if scheduler else None
    rng = np.random.default_rng(42)
    for step in range(1, steps + 1):
        x = rng.normal(size=(16, 4))
        y = rng.normal(size=(16, 3))
        loss = model.train_on_batch(x, y)

        topt.zero_grad()
        tloss = F.mse_loss(net(torch.from_numpy(x)), torch.from_numpy(y))
        tloss.backward()
        topt.step()
        if sched is not None:
            sched.step()

        close(loss, tloss, TOL, f"step {step}: loss (pre-update)")
        for i, (got, want) in enumerate(zip(model.get_weights(), torch_weights(net))):
            close(got, want, TOL, f"step {step}: weight {i}")
    assert model.optimizer.iterations == steps
    for got, start in zip(model.get_weights(), initial):  # the weights really moved
        assert np.abs(got - start).max() > 1e-3


OPTIMIZER_PAIRS = {
    "sgd": (lambda: SGD(learning_rate=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    "sgd_momentum": (lambda: SGD(learning_rate=0.1, momentum=0.9),
                     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
    "sgd_nesterov": (lambda: SGD(learning_rate=0.1, momentum=0.9, nesterov=True),
                     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True)),
    "adam": (lambda: Adam(learning_rate=0.01, epsilon=1e-12),
             lambda ps: torch.optim.Adam(ps, lr=0.01, eps=1e-12)),
    "adam_amsgrad": (lambda: Adam(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-12, amsgrad=True),
                     lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-12, amsgrad=True)),
    "adamw": (lambda: AdamW(learning_rate=0.01, weight_decay=0.1, epsilon=1e-12),
              lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1, eps=1e-12)),
    "rmsprop": (lambda: RMSprop(learning_rate=0.01, rho=0.9, epsilon=1e-12),
                lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-12)),
    "rmsprop_momentum": (lambda: RMSprop(learning_rate=0.01, rho=0.8, momentum=0.9, epsilon=1e-12),
                         lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.8, momentum=0.9, eps=1e-12)),
    "rmsprop_centered": (lambda: RMSprop(learning_rate=0.01, rho=0.9, centered=True, epsilon=1e-12),
                         lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, centered=True, eps=1e-12)),
    "adagrad": (lambda: Adagrad(learning_rate=0.1, initial_accumulator_value=0.1, epsilon=1e-12),
                lambda ps: torch.optim.Adagrad(ps, lr=0.1, initial_accumulator_value=0.1, eps=1e-12)),
    "adamax": (lambda: Adamax(learning_rate=0.01, epsilon=1e-12),
               lambda ps: torch.optim.Adamax(ps, lr=0.01, eps=1e-12)),
    "adadelta": (lambda: Adadelta(learning_rate=1.0, rho=0.9, epsilon=1e-6),
                 lambda ps: torch.optim.Adadelta(ps, lr=1.0, rho=0.9, eps=1e-6)),
    # Keras 3 Nadam: μ_t = β1·(1 − ½·0.96^t), which is torch's NAdam with momentum_decay=1
    # (torch's default 4e-3 is Keras 2's schedule_decay).
    "nadam": (lambda: Nadam(learning_rate=0.01, epsilon=1e-12),
              lambda ps: torch.optim.NAdam(ps, lr=0.01, eps=1e-12, momentum_decay=1.0)),
}


@pytest.mark.parametrize("case", list(OPTIMIZER_PAIRS))
def test_mlp_training_steps_match_torch(f64, case):
    make_glassnet, make_torch = OPTIMIZER_PAIRS[case]
    train_both(make_glassnet(), make_torch)


def test_keras2_decay_matches_torch_lambda_lr(f64):
    """Plain SGD(lr, decay): lr/(1 + decay·it) with it = 0 on the first step = torch LambdaLR stepped after."""
    train_both(SGD(lr=0.1, decay=0.5), lambda ps: torch.optim.SGD(ps, lr=0.1),
               scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0 / (1.0 + 0.5 * it)))
