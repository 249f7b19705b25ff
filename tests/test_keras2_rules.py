"""The tutorial under Keras 2's exact rules, applied by hand, against glassnet's fit (issue 2 acceptance)."""
import numpy as np
import pytest

import glassnet
from glassnet.layers import Dense
from glassnet.optimizers import SGD


def keras2_by_hand(x, y, weights, epochs, lr=0.01, decay=1e-6, momentum=0.9, batch_size=32):
    """Forward relu/sigmoid, MSE, backprop and Nesterov SGD with lr/(1 + decay·iterations), in float64."""
    W1, b1, W2, b2 = [w.astype(np.float64) for w in weights]
    params = [W1, b1, W2, b2]
    velocity = [np.zeros_like(p) for p in params]
    y = y.reshape(-1, 1).astype(np.float64)
    it = 0
    epoch_losses = []
    for _ in range(epochs):
        total, count = 0.0, 0
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size].astype(np.float64), y[start:start + batch_size]
            n = len(xb)
            z1 = xb @ W1 + b1
            a1 = np.maximum(z1, 0)
            z2 = a1 @ W2 + b2
            p = 1 / (1 + np.exp(-z2))
            total += np.mean((p - yb) ** 2) * n
            count += n
            dp = 2 * (p - yb) / n
            dz2 = dp * p * (1 - p)
            dW2, db2 = a1.T @ dz2, dz2.sum(0)
            dz1 = (dz2 @ W2.T) * (z1 > 0)
            dW1, db1 = xb.T @ dz1, dz1.sum(0)
            lr_t = lr / (1 + decay * it)
            for param, v, g in zip(params, velocity, (dW1, db1, dW2, db2)):
                v[...] = momentum * v - lr_t * g
                param += momentum * v - lr_t * g
            it += 1
        epoch_losses.append(total / count)
    return params, epoch_losses


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-6), ("float32", 1e-5)])
def test_five_epochs_equal_keras2_rules(pima_standardized, dtype, tol):
    glassnet.set_floatx(dtype)
    (x, y), _ = pima_standardized
    model = glassnet.Sequential()
    model.add(Dense(10, input_dim=8, activation="relu"))
    model.add(Dense(1, activation="sigmoid"))
    model.compile(loss="mse", optimizer=SGD(lr=0.01, decay=1e-6, momentum=0.9, nesterov=True), metrics=["accuracy"])
    initial = model.get_weights()
    history = model.fit(x, y, epochs=5, batch_size=32, shuffle=False, verbose=0)
    expected, losses = keras2_by_hand(x, y, initial, epochs=5)
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want, atol=tol, rtol=0)
    np.testing.assert_allclose(history.history["loss"], losses, atol=tol, rtol=0)
    assert model.optimizer.iterations == 5 * 20
    # the decayed rate of the next step: lr / (1 + decay · iterations)
    assert model.optimizer._lr_at(model.optimizer.iterations) == pytest.approx(0.01 / (1 + 1e-6 * 100))
    assert model.optimizer.lr == 0.01  # Keras 2's K.get_value(opt.lr): the base rate


def test_decay_uses_iterations_before_the_step():
    """With a huge decay the pre-increment rule and the post-increment rule differ visibly."""
    w = glassnet.engine.weight.Weight(np.zeros(1), "w")
    opt = SGD(lr=1.0, decay=0.5)
    opt.build([w])
    steps = []
    for _ in range(3):
        w.grad[...] = 1.0
        before = w.value.copy()
        opt.apply()
        steps.append(float((before - w.value)[0]))
    assert steps == pytest.approx([1.0, 1 / 1.5, 1 / 2.0])


@pytest.mark.parametrize("schedule_decay,exponent", [(None, 1.0), (0.004, 0.004)])
def test_nadam_schedule_keras3_and_keras2(schedule_decay, exponent):
    """Keras 3: μₜ = β₁(1 − ½·0.96ᵗ); Keras 2's schedule_decay=s: μₜ = β₁(1 − ½·0.96^(s·t))."""
    w = glassnet.engine.weight.Weight(np.array([1.0, -2.0]), "w")
    kwargs = {} if schedule_decay is None else {"schedule_decay": schedule_decay}
    opt = glassnet.optimizers.Nadam(learning_rate=0.1, **kwargs)
    g = np.array([0.5, -3.0])
    opt.apply_gradients([(g, w)])
    b1, b2, eps = 0.9, 0.999, 1e-7
    u1 = b1 * (1 - 0.5 * 0.96 ** (exponent * 1))
    u2 = b1 * (1 - 0.5 * 0.96 ** (exponent * 2))
    m, v = (1 - b1) * g, (1 - b2) * g * g
    m_hat = u2 * m / (1 - u1 * u2) + (1 - u1) * g / (1 - u1)
    v_hat = v / (1 - b2)
    np.testing.assert_allclose(w.value, np.array([1.0, -2.0]) - 0.1 * m_hat / (np.sqrt(v_hat) + eps), rtol=1e-12)
