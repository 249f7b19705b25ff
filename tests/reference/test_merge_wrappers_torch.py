"""Merge layers and TimeDistributed against PyTorch autograd (float32, 1e-5)."""
import numpy as np
import pytest

from glassnet.layers import Add, Average, Concatenate, Dense, Dot, Maximum, Minimum, Multiply, Subtract
from glassnet.layers.wrappers import TimeDistributed

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.reference

CASES = {
    "add": (Add, lambda t: t[0] + t[1] + t[2], 3),
    "subtract": (Subtract, lambda t: t[0] - t[1], 2),
    "multiply": (Multiply, lambda t: t[0] * t[1] * t[2], 3),
    "average": (Average, lambda t: (t[0] + t[1] + t[2]) / 3, 3),
    "maximum": (Maximum, lambda t: torch.maximum(torch.maximum(t[0], t[1]), t[2]), 3),
    "minimum": (Minimum, lambda t: torch.minimum(torch.minimum(t[0], t[1]), t[2]), 3),
    "concatenate": (lambda: Concatenate(axis=-1), lambda t: torch.cat(t, dim=-1), 2),
    "concatenate_axis1": (lambda: Concatenate(axis=1), lambda t: torch.cat(t, dim=1), 2),
    "dot": (lambda: Dot(axes=-1), lambda t: (t[0] * t[1]).sum(-1, keepdim=True), 2),
    "dot_normalized": (lambda: Dot(axes=-1, normalize=True),
                       lambda t: torch.nn.functional.cosine_similarity(t[0], t[1], dim=-1, eps=1e-6)[:, None], 2),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_merge_matches_torch(name):
    make, reference, n = CASES[name]
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(4, 6)).astype("float32") for _ in range(n)]
    y, backward = make().forward(xs)
    dy = rng.normal(size=y.shape).astype("float32")
    grads = backward(dy)
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    out = reference(ts)
    (out * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(y, out.detach().numpy(), atol=1e-5)
    for g, t in zip(grads, ts):
        np.testing.assert_allclose(g, t.grad.numpy(), atol=1e-5)


def test_time_distributed_dense_matches_torch_linear():
    rng = np.random.default_rng(1)
    layer = TimeDistributed(Dense(3, activation="tanh"))
    layer._maybe_build((None, 5, 4))
    x = rng.normal(size=(2, 5, 4)).astype("float32")
    y, backward = layer.forward(x)
    dy = rng.normal(size=y.shape).astype("float32")
    for w in layer.weights:
        w.grad[...] = 0
    dx = backward(dy)
    linear = torch.nn.Linear(4, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(layer.layer.kernel.value.T))
        linear.bias.copy_(torch.tensor(layer.layer.bias.value))
    tx = torch.tensor(x, requires_grad=True)
    out = torch.tanh(linear(tx))
    (out * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(y, out.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(dx, tx.grad.numpy(), atol=1e-5)
    np.testing.assert_allclose(layer.layer.kernel.grad, linear.weight.grad.numpy().T, atol=1e-5)
    np.testing.assert_allclose(layer.layer.bias.grad, linear.bias.grad.numpy(), atol=1e-5)
