"""MultiHeadAttention and TimeDistributed: finite differences, autograd and real-Keras cross-checks."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from gradcheck import numeric_grad, rel_error

import glassnet
from glassnet import Input, Model
from glassnet.layers import Dense
from glassnet.layers.attention import MultiHeadAttention
from glassnet.layers.wrappers import TimeDistributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assert_grad(analytic, numeric):
    """Relative error < 1e-6, or both ~0 (e.g. the key bias, which softmax cancels exactly)."""
    if max(np.max(np.abs(analytic)), np.max(np.abs(numeric))) < 1e-6:
        assert np.max(np.abs(analytic - numeric)) < 1e-8
    else:
        assert rel_error(analytic, numeric) < 1e-6


def make_mha(q_dim=5, v_dim=5, **kwargs):
    layer = MultiHeadAttention(num_heads=2, key_dim=3, **kwargs)
    layer._maybe_build([(None, 4, q_dim), (None, 6, v_dim), (None, 6, v_dim)])
    return layer


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("kwargs", [{}, {"value_dim": 4, "output_shape": 7}, {"use_bias": False}])
def test_mha_gradients(float64, with_mask, kwargs):
    rng = np.random.default_rng(0)
    layer = make_mha(**kwargs)
    q, v, k = rng.normal(size=(2, 4, 5)), rng.normal(size=(2, 6, 5)), rng.normal(size=(2, 6, 5))
    inputs = [q, v, k]
    if with_mask:
        mask = np.ones((2, 4, 6), bool)
        mask[0, :, 4:] = False  # padding in the first sequence
        mask[1, 2:, 5] = False
        inputs.append(mask)
    y, backward = layer.forward(inputs)
    dy = rng.normal(size=y.shape)
    for w in layer.weights:
        w.grad[...] = 0
    grads = backward(dy)

    def objective():
        return float((layer.forward(inputs)[0] * dy).sum())

    for x, g in zip((q, v, k), grads[:3]):
        assert rel_error(g, numeric_grad(objective, x)) < 1e-6
    for w in layer.weights:
        assert_grad(w.grad, numeric_grad(objective, w.value))
    if layer.bk is not None:  # adding the same b_K to every key shifts all scores of a query equally
        np.testing.assert_allclose(layer.bk.grad, 0, atol=1e-12)
    if with_mask:  # masked keys get no attention and so no gradient
        np.testing.assert_array_equal(grads[1][0, 4:], 0)
        np.testing.assert_allclose(layer.last_attention_scores[0, :, :, 4:], 0, atol=1e-300)


@pytest.mark.reference
def test_mha_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    glassnet.set_floatx("float64")
    rng = np.random.default_rng(1)
    layer = make_mha()
    x = rng.normal(size=(3, 4, 5))
    mem = rng.normal(size=(3, 6, 5))
    y, backward = layer.forward([x, mem, mem])
    dy = rng.normal(size=y.shape)
    for w in layer.weights:
        w.grad[...] = 0
    dq, dv, dk = backward(dy)
    T = {w.name: torch.tensor(w.value, requires_grad=True) for w in layer.weights}
    tx, tm = torch.tensor(x, requires_grad=True), torch.tensor(mem, requires_grad=True)
    Q = torch.einsum("ntd,dhk->nthk", tx, T["query/kernel"]) + T["query/bias"]
    K = torch.einsum("ntd,dhk->nthk", tm, T["key/kernel"]) + T["key/bias"]
    V = torch.einsum("ntd,dhk->nthk", tm, T["value/kernel"]) + T["value/bias"]
    A = torch.softmax(torch.einsum("nthk,nshk->nhts", Q, K) / np.sqrt(3), dim=-1)
    out = torch.einsum("nthv,hvo->nto", torch.einsum("nhts,nshv->nthv", A, V), T["attention_output/kernel"])
    out = out + T["attention_output/bias"]
    (out * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(y, out.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(dq, tx.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(dv + dk, tm.grad.numpy(), atol=1e-10)
    for w in layer.weights:
        np.testing.assert_allclose(w.grad, T[w.name].grad.numpy(), atol=1e-10)


def test_mha_matches_real_keras(tmp_path):
    import importlib.util
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("jax") is None:
        pytest.skip("keras with jax is not installed (make test installs both)")
    rng = np.random.default_rng(2)
    layer = make_mha()
    x = rng.normal(size=(2, 4, 5)).astype("float32")
    mem = rng.normal(size=(2, 6, 5)).astype("float32")
    mask = np.ones((2, 4, 6), bool)
    mask[1, :, 3:] = False
    np.savez(tmp_path / "w.npz", x=x, mem=mem, mask=mask, *layer.get_weights())
    script = textwrap.dedent(f"""
        import os
        os.environ["KERAS_BACKEND"] = "jax"
        import numpy as np, keras
        d = np.load({str(tmp_path / "w.npz")!r})
        mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3)
        mha(d["x"], d["mem"])
        mha.set_weights([d[f"arr_{{i}}"] for i in range(8)])
        np.save({str(tmp_path / "out.npy")!r}, np.asarray(mha(d["x"], d["mem"], attention_mask=d["mask"])))
    """)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)
    expected = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(layer.call([x, mem, mem, mask]), expected, atol=2e-5)


def test_self_attention_in_a_functional_model_sums_the_three_gradients(float64):
    x_in = Input((4, 5))
    y = MultiHeadAttention(num_heads=2, key_dim=3)(x_in, x_in)
    model = Model(x_in, y)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 4, 5))
    dy = rng.normal(size=(2, 4, 5))
    _, backward = model.forward(x)
    dx = backward(dy)
    assert rel_error(dx, numeric_grad(lambda: float((model.call(x) * dy).sum()), x)) < 1e-6
    assert model.output_shape == (None, 4, 5)
    assert model.count_params() == 3 * (5 * 2 * 3 + 2 * 3) + (2 * 3 * 5 + 5)


def test_mha_errors():
    x = Input((4, 5))
    with pytest.raises(ValueError, match="needs a value"):
        MultiHeadAttention(2, 3)(x)
    with pytest.raises(ValueError, match="attention_mask"):
        MultiHeadAttention(2, 3)(x, x, use_causal_mask=True)


def test_time_distributed_dense(float64):
    layer = TimeDistributed(Dense(3, activation="tanh"))
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 5, 4))
    layer._maybe_build((None, 5, 4))
    assert layer.compute_output_shape((None, 5, 4)) == (None, 5, 3)
    assert layer.count_params() == 4 * 3 + 3
    y, backward = layer.forward(x)
    np.testing.assert_allclose(y, np.tanh(x @ layer.layer.kernel.value + layer.layer.bias.value))
    dy = rng.normal(size=y.shape)
    for w in layer.weights:
        w.grad[...] = 0
    dx = backward(dy)

    def objective():
        return float((layer.forward(x)[0] * dy).sum())

    assert rel_error(dx, numeric_grad(objective, x)) < 1e-6
    for w in layer.weights:
        assert rel_error(w.grad, numeric_grad(objective, w.value)) < 1e-6
    model = glassnet.Sequential([Input((5, 4)), layer])
    assert len(model.trainable_weights) == 2
