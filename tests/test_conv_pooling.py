"""Convolution and pooling layers: gradient checks, PyTorch cross-checks, a small convnet, configs, errors.

(a) Finite differences (float64, central, relative error < 1e-6) for the input and every weight of every
    layer across its options: strides, 'valid'/'same'/'causal', dilation, groups, channels_first,
    output_padding, depth_multiplier. Max-pooling inputs hold distinct values, so no window has a tie.
(b) Forward and backward against torch.nn.functional with the same weights (layouts transposed to
    torch's), float32 to 1e-5 and float64 to 1e-10. Keras's 'same' padding may put one more element
    after than before, so the torch side pads the input explicitly with F.pad.
    Also against Keras 3 itself (JAX backend, in a subprocess): each layer rebuilt from glassnet's config.
(c) A Conv2D-MaxPooling2D-Flatten-Dense network trains with fit(); summary shows Keras's shapes.
(d) get_config/from_config round trips; (e) the error messages.
"""
import importlib.util
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from gradcheck import numeric_grad, rel_error

import glassnet
from glassnet.engine import kernels
from glassnet.engine.registry import deserialize, serialize
from glassnet.layers import Dense, Flatten, Input
from glassnet.layers.conv import (Conv1D, Conv1DTranspose, Conv2D, Conv2DTranspose, DepthwiseConv1D, DepthwiseConv2D,
                                  SeparableConv1D, SeparableConv2D)
from glassnet.layers.pooling import (AveragePooling1D, AveragePooling2D, GlobalAveragePooling1D,
                                     GlobalAveragePooling2D, GlobalMaxPooling1D, GlobalMaxPooling2D, MaxPooling1D,
                                     MaxPooling2D)

TOL = 1e-6
H = 1e-6


# --- (a) finite differences -------------------------------------------------------------------------
def check_layer_gradients(layer, x, rng, forward_kwargs=None):
    """J = Σ y·dy (+ the activity penalty); backward(dy) must give dJ/dx and add dJ/dW into W.grad."""
    forward_kwargs = forward_kwargs or {}
    layer(x)  # build
    activity = layer.activity_regularizer is not None

    def J():
        y = layer.forward(x, **forward_kwargs)[0]
        return float(np.sum(y * dy)) + (float(layer.last_activity_loss) if activity else 0.0)

    y, backward = layer.forward(x, **forward_kwargs)
    assert tuple(y.shape[1:]) == tuple(layer.compute_output_shape(x.shape)[1:])
    assert y.dtype == np.float64
    dy = rng.normal(size=y.shape)
    for w in layer.weights:
        w.grad[...] = 0
    dx = backward(dy)
    assert dx.shape == x.shape and dx.dtype == np.float64
    analytic = {w.name: w.grad.copy() for w in layer.weights}
    err = rel_error(dx, numeric_grad(J, x))
    assert err < TOL, f"{layer.name} d/dx: relative error {err:.3g}"
    for w in layer.weights:
        err = rel_error(analytic[w.name], numeric_grad(J, w.value))
        assert err < TOL, f"{layer.name} d/d{w.name}: relative error {err:.3g}"


def random_weights(layer, rng):
    for w in layer.weights:  # non-zero biases too, so a wrong bias broadcast shows
        w.value = rng.normal(size=w.shape) * 0.5


CONV_CASES = [
    # (factory, input shape)
    (lambda: Conv1D(3, 3), (2, 7, 4)),
    (lambda: Conv1D(3, 3, strides=2, padding="same"), (2, 8, 4)),
    (lambda: Conv1D(4, 3, padding="causal", dilation_rate=2, groups=2, activation="tanh"), (2, 9, 4)),
    (lambda: Conv1D(3, 2, padding="same", data_format="channels_first"), (2, 4, 7)),
    (lambda: Conv1D(2, 4, strides=3, padding="causal", use_bias=False), (2, 10, 3)),
    (lambda: Conv2D(3, 3), (2, 5, 6, 2)),
    (lambda: Conv2D(4, (3, 2), strides=2, padding="same"), (2, 6, 7, 3)),
    (lambda: Conv2D(4, 3, padding="same", dilation_rate=2, groups=2), (2, 7, 6, 4)),
    (lambda: Conv2D(3, 3, strides=(2, 1), data_format="channels_first", activation="tanh"), (2, 2, 6, 5)),
    (lambda: Conv2D(2, 1, use_bias=False, activity_regularizer="l2"), (2, 3, 4, 3)),
    (lambda: Conv2D(3, 2, activation="softmax", data_format="channels_first", padding="same", use_bias=False),
     (2, 2, 4, 5)),  # softmax over the last (width) axis, as Keras; a per-channel bias would cancel in it
    (lambda: Conv2DTranspose(3, 3), (2, 3, 4, 2)),
    (lambda: Conv2DTranspose(3, 3, strides=2, padding="same"), (2, 3, 4, 2)),
    (lambda: Conv2DTranspose(2, 4, strides=2, padding="same"), (2, 3, 3, 2)),
    (lambda: Conv2DTranspose(3, (3, 2), strides=2, output_padding=1), (2, 3, 3, 2)),
    (lambda: Conv2DTranspose(2, 3, strides=2, padding="same", output_padding=(1, 0)), (2, 3, 3, 2)),
    (lambda: Conv2DTranspose(2, 2, strides=3), (2, 3, 2, 2)),
    (lambda: Conv2DTranspose(2, 3, padding="same", dilation_rate=2, data_format="channels_first"), (2, 2, 4, 3)),
    (lambda: Conv1DTranspose(3, 3, strides=2, padding="same", activation="tanh"), (2, 5, 2)),
    (lambda: DepthwiseConv2D(3, depth_multiplier=2), (2, 5, 5, 3)),
    (lambda: DepthwiseConv2D(3, strides=2, padding="same"), (2, 6, 5, 3)),
    (lambda: DepthwiseConv2D(3, padding="same", dilation_rate=2, data_format="channels_first"), (2, 2, 6, 5)),
    (lambda: DepthwiseConv1D(3, depth_multiplier=2, padding="same"), (2, 6, 3)),
    (lambda: SeparableConv2D(4, 3, depth_multiplier=2, padding="same"), (2, 5, 4, 3)),
    (lambda: SeparableConv2D(3, 3, strides=2, data_format="channels_first", activation="tanh"), (2, 2, 6, 5)),
    (lambda: SeparableConv1D(4, 3, depth_multiplier=2, dilation_rate=2), (2, 8, 2)),
]


@pytest.mark.parametrize("factory,shape", CONV_CASES, ids=[f"conv{i}" for i in range(len(CONV_CASES))])
def test_conv_gradients(factory, shape, float64):
    rng = np.random.default_rng(1)
    layer = factory()
    x = rng.normal(size=shape)
    layer(x)
    random_weights(layer, rng)
    check_layer_gradients(layer, x, rng)


def distinct(rng, shape):
    """Distinct values at least 0.05 apart: no pooling window holds a tie, not even after ±h."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) - np.prod(shape) / 2) * 0.05


POOL_CASES = [
    (lambda: MaxPooling2D(), (2, 4, 6, 3)),
    (lambda: MaxPooling2D(3, strides=2, padding="same"), (2, 6, 5, 2)),
    (lambda: MaxPooling2D((2, 3), strides=1), (2, 4, 5, 2)),
    (lambda: MaxPooling2D(data_format="channels_first", padding="same"), (2, 2, 5, 3)),
    (lambda: MaxPooling1D(), (2, 7, 3)),
    (lambda: MaxPooling1D(3, strides=2, padding="same"), (2, 8, 3)),
    (lambda: AveragePooling2D(), (2, 4, 6, 3)),
    (lambda: AveragePooling2D(3, strides=2, padding="same"), (2, 6, 5, 2)),
    (lambda: AveragePooling2D((2, 3), strides=(1, 2), data_format="channels_first"), (2, 2, 4, 7)),
    (lambda: AveragePooling1D(3, strides=2, padding="same"), (2, 8, 3)),
    (lambda: AveragePooling1D(2, strides=1), (2, 5, 3)),
    (lambda: GlobalMaxPooling2D(), (2, 3, 4, 3)),
    (lambda: GlobalMaxPooling2D(keepdims=True, data_format="channels_first"), (2, 3, 4, 2)),
    (lambda: GlobalMaxPooling1D(), (2, 5, 3)),
    (lambda: GlobalAveragePooling2D(), (2, 3, 4, 3)),
    (lambda: GlobalAveragePooling2D(keepdims=True), (2, 3, 4, 3)),
    (lambda: GlobalAveragePooling1D(data_format="channels_first"), (2, 3, 5)),
]


@pytest.mark.parametrize("factory,shape", POOL_CASES, ids=[f"pool{i}" for i in range(len(POOL_CASES))])
def test_pool_gradients(factory, shape, float64):
    rng = np.random.default_rng(2)
    check_layer_gradients(factory(), distinct(rng, shape), rng)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_masked_global_average_pooling_1d(data_format, float64):
    rng = np.random.default_rng(3)
    layer = GlobalAveragePooling1D(data_format=data_format)
    x = rng.normal(size=(2, 5, 3) if data_format == "channels_last" else (2, 3, 5))
    mask = np.array([[1, 1, 0, 1, 0], [1, 1, 1, 1, 1]], bool)
    y = layer.forward(x, mask=mask)[0]
    steps = x if data_format == "channels_last" else x.transpose(0, 2, 1)
    np.testing.assert_allclose(y[0], steps[0, [0, 1, 3]].mean(axis=0))
    np.testing.assert_allclose(y[1], steps[1].mean(axis=0))
    check_layer_gradients(layer, x, rng, {"mask": mask})


def test_backward_adds_into_weight_grads(float64):
    """backward(dy) accumulates (+=) into Weight.grad, so two calls give twice the gradient."""
    rng = np.random.default_rng(13)
    x = rng.normal(size=(2, 6, 6, 3))
    for layer in (Conv2D(4, 3, groups=1), Conv2DTranspose(2, 3, strides=2), DepthwiseConv2D(3), SeparableConv2D(2, 3)):
        layer(x)
        y, backward = layer.forward(x)
        dy = rng.normal(size=y.shape)
        backward(dy)
        once = [w.grad.copy() for w in layer.weights]
        backward(dy)
        for w, g in zip(layer.weights, once):
            np.testing.assert_allclose(w.grad, 2 * g, rtol=1e-12, err_msg=f"{layer.name}/{w.name}")


def test_ties_route_like_tensorflow_and_torch():
    """MaxPooling: the whole gradient goes to the first maximum of the window; GlobalMaxPooling splits it."""
    x = np.array([[[[1.0], [3.0], [3.0], [0.0]],
                   [[3.0], [2.0], [1.0], [3.0]]]])              # (1, 2, 4, 1): both 2×2 windows tie at 3
    y, backward = MaxPooling2D().forward(x)
    np.testing.assert_array_equal(y[0, :, :, 0], [[3.0, 3.0]])
    np.testing.assert_array_equal(backward(np.ones_like(y))[0, :, :, 0], [[0, 1, 1, 0], [0, 0, 0, 0]])
    y, backward = GlobalMaxPooling2D().forward(x)
    np.testing.assert_array_equal(backward(np.ones_like(y))[0, :, :, 0], [[0, 0.25, 0.25, 0], [0.25, 0, 0, 0.25]])


def test_same_padding_is_tensorflows():
    assert kernels.same_padding(5, 3, 2) == (1, 1)
    assert kernels.same_padding(6, 3, 2) == (0, 1)   # odd total: the extra element goes after
    assert kernels.same_padding(7, 3, 1, 2) == (2, 2)
    assert kernels.same_padding(4, 1, 3) == (0, 0)
    assert kernels.same_padding(10, 4, 1) == (1, 2)


def test_avg_pool_same_counts_only_real_elements():
    x = np.ones((1, 5, 5, 1), np.float32)
    y = AveragePooling2D(3, strides=2, padding="same")(x)
    np.testing.assert_array_equal(y, np.ones_like(y))      # every window averages ones, whatever it covers
    assert y.dtype == np.float32


def test_float32_stays_float32():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    for layer in (Conv2D(4, 3, padding="same"), Conv2DTranspose(2, 3, strides=2), DepthwiseConv2D(3),
                  SeparableConv2D(2, 3), MaxPooling2D(padding="same"), AveragePooling2D(padding="same"),
                  GlobalAveragePooling2D(), GlobalMaxPooling2D()):
        layer(x)
        y, backward = layer.forward(x)
        assert y.dtype == np.float32, type(layer).__name__
        assert backward(np.ones_like(y)).dtype == np.float32, type(layer).__name__
        assert all(w.grad.dtype == np.float32 for w in layer.weights)


# --- (b) PyTorch ------------------------------------------------------------------------------------
def _torch():
    return pytest.importorskip("torch")


def _nchw(a):
    return np.ascontiguousarray(np.moveaxis(a, -1, 1))


def _nhwc(a):
    return np.moveaxis(np.asarray(a), 1, -1)


def torch_pads(pads):
    """[(before, after) per spatial axis] -> F.pad's flat list, last axis first."""
    return [p for before_after in reversed(pads) for p in before_after]


def glassnet_run(layer, x, dy):
    y, backward = layer.forward(x)
    for w in layer.weights:
        w.grad[...] = 0
    dx = backward(dy)
    return y, dx, {w.name: w.grad.copy() for w in layer.weights}


def torch_run(fn, x_cl, params, dy_cl, channels_first):
    """Run fn(x_nchw, *params) in torch; return y, dx, dparams in glassnet's layout."""
    torch = _torch()
    xt = torch.tensor(x_cl if channels_first else _nchw(x_cl), requires_grad=True)
    ps = [torch.tensor(p, requires_grad=True) for p in params]
    yt = fn(xt, *ps)
    yt.backward(torch.tensor(dy_cl if channels_first else _nchw(dy_cl)))
    conv = (lambda a: a) if channels_first else _nhwc
    return conv(yt.detach().numpy()), conv(xt.grad.numpy()), [p.grad.numpy() for p in ps]


def close(got, want, tol, what):
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=what)


def keras_conv_pads(layer, spatial):
    """Keras's padding per axis, written out here from TF's rule (not taken from glassnet)."""
    pads = []
    for n, k, s, d in zip(spatial, layer.kernel_size, layer.strides, layer.dilation_rate):
        k_eff = (k - 1) * d + 1
        if layer.padding == "valid":
            pads.append((0, 0))
        elif layer.padding == "causal":
            pads.append((k_eff - 1, 0))
        else:
            total = max((-(-n // s) - 1) * s + k_eff - n, 0)
            pads.append((total // 2, total - total // 2))
    return pads


TORCH_CONV_CASES = [
    (lambda: Conv1D(5, 3), (3, 9, 4)),
    (lambda: Conv1D(4, 4, strides=2, padding="same"), (3, 9, 4)),
    (lambda: Conv1D(4, 3, padding="causal", dilation_rate=2, groups=2), (3, 9, 4)),
    (lambda: Conv1D(4, 3, padding="same", data_format="channels_first"), (3, 4, 8)),
    (lambda: Conv2D(6, 3), (3, 7, 8, 4)),
    (lambda: Conv2D(6, (3, 2), strides=2, padding="same"), (3, 8, 7, 4)),
    (lambda: Conv2D(6, 3, padding="same", dilation_rate=2, groups=2), (3, 7, 8, 4)),
    (lambda: Conv2D(4, 2, strides=(1, 3), padding="same", data_format="channels_first", groups=4), (3, 4, 6, 7)),
    (lambda: DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (3, 7, 8, 4)),
    (lambda: DepthwiseConv2D(3, strides=2), (3, 7, 8, 4)),
    (lambda: SeparableConv2D(5, 3, depth_multiplier=2, padding="same", strides=2), (3, 7, 8, 4)),
]


def torch_reference_conv(layer, weights, x_cl):
    """The torch function and its parameters computing what ``layer`` should: (fn(x_nchw, *params), params)."""
    torch = _torch()
    F = torch.nn.functional
    r = layer.rank
    conv = F.conv1d if r == 1 else F.conv2d
    pads = torch_pads(keras_conv_pads(layer, x_cl.shape[1:-1]))
    kw = dict(stride=layer.strides, dilation=layer.dilation_rate)

    def to_oihw(k):  # Keras (*k, in, out) -> torch (out, in, *k)
        return np.ascontiguousarray(np.moveaxis(np.moveaxis(k, -1, 0), -1, 1))

    bias = layer.bias is not None
    if isinstance(layer, SeparableConv2D):
        depth, point = weights[0], weights[1]
        channels = depth.shape[-2]
        dw = to_oihw(depth.reshape(depth.shape[:-2] + (1, -1)))
        pw = to_oihw(point)

        def fn(x, d, p, *b):
            h = conv(F.pad(x, pads), d, stride=layer.strides, dilation=layer.dilation_rate, groups=channels)
            return conv(h, p, b[0] if b else None)
        return fn, [dw, pw] + ([weights[2]] if bias else [])
    if isinstance(layer, DepthwiseConv2D):
        channels = weights[0].shape[-2]
        w = to_oihw(weights[0].reshape(weights[0].shape[:-2] + (1, -1)))
        groups = channels
    else:
        w, groups = to_oihw(weights[0]), layer.groups

    def fn(x, w, *b):
        return conv(F.pad(x, pads), w, b[0] if b else None, groups=groups, **kw)
    return fn, [w] + ([weights[1]] if bias else [])


def grads_to_keras(layer, torch_grads):
    """torch parameter gradients back to Keras layouts (inverse of torch_reference_conv's transposes)."""
    def from_oihw(g, shape):
        return np.moveaxis(np.moveaxis(g, 1, -1), 0, -1).reshape(shape)
    ws = layer.weights
    out = [from_oihw(torch_grads[0], ws[0].shape)]
    if isinstance(layer, SeparableConv2D):
        out.append(from_oihw(torch_grads[1], ws[1].shape))
    out += [g for g in torch_grads[len(out):]]
    return out


@pytest.mark.reference
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-10)])
@pytest.mark.parametrize("factory,shape", TORCH_CONV_CASES, ids=[f"conv{i}" for i in range(len(TORCH_CONV_CASES))])
def test_conv_matches_torch(factory, shape, dtype, tol):
    glassnet.set_floatx(dtype)
    rng = np.random.default_rng(5)
    layer = factory()
    x = rng.normal(size=shape).astype(dtype)
    layer(x)
    random_weights(layer, rng)
    dy = rng.normal(size=layer.compute_output_shape(shape)).astype(dtype)
    y, dx, grads = glassnet_run(layer, x, dy)
    channels_first = layer.data_format == "channels_first"
    x_cl = np.moveaxis(x, 1, -1) if channels_first else x
    fn, params = torch_reference_conv(layer, layer.get_weights(), np.ascontiguousarray(x_cl))
    yt, dxt, gt = torch_run(fn, x, params, dy, channels_first)
    close(y, yt, tol, "forward")
    close(dx, dxt, tol, "d/dx")
    for w, g in zip(layer.weights, grads_to_keras(layer, gt)):
        close(grads[w.name], g, tol, f"d/d{w.name}")


def keras_transpose_crops(layer, spatial):
    """Keras 3's conv-transpose output window, transcribed from keras/src/backend/common/backend_utils.py
    (_convert_conv_transpose_padding_args_from_keras_to_jax): how much of torch's full output
    ((n − 1)·s + k_eff) to cut before and after; negative = extend with zeros."""
    crops = []
    ops = layer.output_padding or (None,) * layer.rank
    for n, k, s, d, op in zip(spatial, layer.kernel_size, layer.strides, layer.dilation_rate, ops):
        k = (k - 1) * d + 1
        if layer.padding == "valid":
            op = max(k, s) - k if op is None else op
            left, right = k - 1, k - 1 + op
        else:
            pad_len = s + k - 2 if op is None else k + k % 2 - 2 + op
            left = min(pad_len // 2 + pad_len % 2, k - 1)
            right = pad_len - left
        crops.append((k - 1 - left, k - 1 - right))
    return crops


TORCH_TRANSPOSE_CASES = [
    (lambda: Conv2DTranspose(5, 3), (2, 4, 5, 3)),
    (lambda: Conv2DTranspose(5, 3, strides=2, padding="same"), (2, 4, 5, 3)),
    (lambda: Conv2DTranspose(4, 4, strides=2, padding="same"), (2, 4, 5, 3)),
    (lambda: Conv2DTranspose(4, (3, 2), strides=2, output_padding=1), (2, 4, 5, 3)),
    (lambda: Conv2DTranspose(4, 3, strides=(2, 3), padding="same", output_padding=(0, 2)), (2, 4, 5, 3)),
    (lambda: Conv2DTranspose(4, 2, strides=3), (2, 4, 5, 3)),
    (lambda: Conv2DTranspose(4, 3, padding="same", dilation_rate=2, data_format="channels_first"), (2, 3, 4, 5)),
    (lambda: Conv1DTranspose(4, 3, strides=2, padding="same"), (2, 6, 3)),
]


@pytest.mark.reference
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-10)])
@pytest.mark.parametrize("factory,shape", TORCH_TRANSPOSE_CASES,
                         ids=[f"tconv{i}" for i in range(len(TORCH_TRANSPOSE_CASES))])
def test_conv_transpose_matches_torch(factory, shape, dtype, tol):
    torch = _torch()
    F = torch.nn.functional
    glassnet.set_floatx(dtype)
    rng = np.random.default_rng(6)
    layer = factory()
    x = rng.normal(size=shape).astype(dtype)
    layer(x)
    random_weights(layer, rng)
    channels_first = layer.data_format == "channels_first"
    spatial = x.shape[2:] if channels_first else x.shape[1:-1]
    dy = rng.normal(size=layer.compute_output_shape(shape)).astype(dtype)
    y, dx, grads = glassnet_run(layer, x, dy)
    crops = keras_transpose_crops(layer, spatial)
    transpose = F.conv_transpose1d if layer.rank == 1 else F.conv_transpose2d
    kernel = layer.kernel.numpy()    # Keras (*k, filters, in) -> torch (in, filters, *k)
    w = np.ascontiguousarray(np.moveaxis(np.moveaxis(kernel, -1, 0), -1, 1))

    def fn(x, w, b):
        full = transpose(x, w, stride=layer.strides, dilation=layer.dilation_rate)
        out = F.pad(full, [-c for c in torch_pads(crops)])   # F.pad crops with negative widths
        return out + b.reshape((-1,) + (1,) * layer.rank)

    yt, dxt, (gw, gb) = torch_run(fn, x, [w, layer.bias.numpy()], dy, channels_first)
    close(y, yt, tol, "forward")
    close(dx, dxt, tol, "d/dx")
    close(grads["kernel"], np.moveaxis(np.moveaxis(gw, 1, -1), 0, -1), tol, "d/dkernel")
    close(grads["bias"], gb, tol, "d/dbias")


TORCH_POOL_CASES = [
    (lambda: MaxPooling2D(), (2, 6, 7, 3)),
    (lambda: MaxPooling2D(3, strides=2, padding="same"), (2, 7, 6, 3)),   # asymmetric in width
    (lambda: MaxPooling2D((2, 3), strides=1, data_format="channels_first"), (2, 3, 5, 6)),
    (lambda: MaxPooling1D(3, strides=2, padding="same"), (2, 8, 3)),
    (lambda: AveragePooling2D(), (2, 6, 7, 3)),
    (lambda: AveragePooling2D(3, strides=2, padding="same"), (2, 7, 7, 3)),   # symmetric: torch's own padding
    (lambda: AveragePooling2D(3, strides=2, padding="same"), (2, 6, 7, 3)),   # asymmetric: sums / counts
    (lambda: AveragePooling1D(3, strides=1, padding="same"), (2, 8, 3)),
    (lambda: AveragePooling2D((2, 3), strides=(1, 2), data_format="channels_first"), (2, 3, 5, 7)),
]


def torch_pool(layer, spatial):
    torch = _torch()
    F = torch.nn.functional
    r = layer.rank
    k, s = layer.pool_size, layer.strides
    pads = []
    for n, kk, ss in zip(spatial, k, s):
        total = max((-(-n // ss) - 1) * ss + kk - n, 0) if layer.padding == "same" else 0
        pads.append((total // 2, total - total // 2))
    flat = torch_pads(pads)
    if isinstance(layer, (MaxPooling1D, MaxPooling2D)):
        pool = F.max_pool1d if r == 1 else F.max_pool2d
        return lambda x: pool(F.pad(x, flat, value=-float("inf")), k, s)
    pool = F.avg_pool1d if r == 1 else F.avg_pool2d
    if all(b == a for b, a in pads):   # torch's own symmetric padding, excluded from the count
        return lambda x: pool(x, k, s, padding=tuple(b for b, _ in pads), count_include_pad=False)
    size = float(np.prod(k))           # asymmetric: window sums divided by the real elements in each window
    return lambda x: (pool(F.pad(x, flat), k, s) * size) / (pool(F.pad(torch.ones_like(x), flat), k, s) * size)


@pytest.mark.reference
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-10)])
@pytest.mark.parametrize("factory,shape", TORCH_POOL_CASES, ids=[f"pool{i}" for i in range(len(TORCH_POOL_CASES))])
def test_pool_matches_torch(factory, shape, dtype, tol):
    glassnet.set_floatx(dtype)
    rng = np.random.default_rng(7)
    layer = factory()
    x = distinct(rng, shape).astype(dtype)
    channels_first = layer.data_format == "channels_first"
    layer(x)
    dy = rng.normal(size=layer.compute_output_shape(shape)).astype(dtype)
    y, dx, _ = glassnet_run(layer, x, dy)
    yt, dxt, _ = torch_run(torch_pool(layer, x.shape[2:] if channels_first else x.shape[1:-1]), x, [], dy,
                           channels_first)
    close(y, yt, tol, "forward")
    close(dx, dxt, tol, "d/dx")


@pytest.mark.reference
@pytest.mark.parametrize("layer_cls", [GlobalMaxPooling2D, GlobalAveragePooling2D, GlobalMaxPooling1D,
                                       GlobalAveragePooling1D])
@pytest.mark.parametrize("ties", [False, True])
def test_global_pool_matches_torch(layer_cls, ties):
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(8)
    rank = 2 if layer_cls.__name__.endswith("2D") else 1
    shape = (2, 4, 5, 3) if rank == 2 else (2, 6, 3)
    x = np.round(rng.normal(size=shape)) if ties else rng.normal(size=shape)   # rounding makes many ties
    layer = layer_cls()
    dy = rng.normal(size=(2, 3))
    y, dx, _ = glassnet_run(layer, x, dy)
    if "Max" in layer_cls.__name__ and ties:   # a reduction: torch.amax splits a tie's gradient evenly, as
        fn = (lambda t: torch.amax(t, dim=tuple(range(2, 2 + rank))))   # tf.reduce_max and jnp.max do
    elif "Max" in layer_cls.__name__:
        adaptive = F.adaptive_max_pool2d if rank == 2 else F.adaptive_max_pool1d
        fn = (lambda t: adaptive(t, 1).flatten(1))
    else:
        adaptive = F.adaptive_avg_pool2d if rank == 2 else F.adaptive_avg_pool1d
        fn = (lambda t: adaptive(t, 1).flatten(1))
    xt = torch.tensor(_nchw(x), requires_grad=True)
    yt = fn(xt)
    yt.backward(torch.tensor(dy))
    close(y, yt.detach().numpy(), 1e-12, "forward")
    close(dx, _nhwc(xt.grad.numpy()), 1e-12, "d/dx")


@pytest.mark.reference
def test_max_pool_ties_match_torch():
    """torch's max_pool2d also sends a tied window's gradient to its first maximum (row-major)."""
    torch = _torch()
    rng = np.random.default_rng(9)
    x = np.round(rng.normal(size=(2, 6, 6, 3)) * 0.7)   # few distinct values: many tied windows
    layer = MaxPooling2D(3, strides=2, padding="valid")
    dy = rng.normal(size=layer.compute_output_shape(x.shape))
    y, dx, _ = glassnet_run(layer, x, dy)
    xt = torch.tensor(_nchw(x), requires_grad=True)
    torch.nn.functional.max_pool2d(xt, 3, 2).backward(torch.tensor(_nchw(dy)))
    close(dx, _nhwc(xt.grad.numpy()), 1e-12, "d/dx with ties")


KERAS_CASES = [
    (lambda: Conv2D(4, 3, strides=2, padding="same"), (2, 7, 6, 3)),
    (lambda: Conv1D(6, 4, strides=2, padding="causal", groups=3), (2, 9, 3)),
    (lambda: Conv2DTranspose(4, 4, strides=2, padding="same"), (2, 4, 5, 3)),
    (lambda: Conv2DTranspose(4, (3, 2), strides=2, output_padding=1), (2, 4, 5, 3)),
    (lambda: Conv2DTranspose(4, 3, strides=(2, 3), padding="same", output_padding=(0, 2)), (2, 4, 5, 3)),
    (lambda: Conv2DTranspose(4, 2, strides=3, data_format="channels_first"), (2, 3, 4, 5)),
    (lambda: DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same"), (2, 7, 6, 3)),
    (lambda: SeparableConv2D(5, 3, depth_multiplier=2, padding="same", activation="tanh"), (2, 7, 6, 3)),
    (lambda: AveragePooling2D(3, strides=2, padding="same"), (2, 6, 7, 3)),
    (lambda: GlobalMaxPooling2D(keepdims=True), (2, 4, 5, 3)),
]

KERAS_SCRIPT = """
import json, os, sys
os.environ["KERAS_BACKEND"] = "jax"
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, keras, numpy as np
keras.config.set_floatx("float64")
folder = sys.argv[1]
d = dict(np.load(os.path.join(folder, "in.npz")))
out = {}
for i, entry in enumerate(json.load(open(os.path.join(folder, "layers.json")))):
    layer = getattr(keras.layers, entry["class_name"]).from_config(entry["config"])
    x, dy = d[f"x{i}"], d[f"dy{i}"]
    layer.build(x.shape)
    layer.set_weights([d[f"w{i}_{j}"] for j in range(len(layer.weights))])
    def J(x, weights):
        y, _ = layer.stateless_call(weights, [], x)
        return jnp.sum(y * dy), y
    grad = jax.jit(jax.grad(J, argnums=(0, 1), has_aux=True))
    (dx, dws), y = grad(jnp.asarray(x), [v.value for v in layer.weights])
    out[f"y{i}"], out[f"dx{i}"] = np.asarray(y), np.asarray(dx)
    for j, g in enumerate(dws):
        out[f"g{i}_{j}"] = np.asarray(g)
ties = np.array([[[[1.0], [3.0], [3.0], [0.0]], [[3.0], [2.0], [1.0], [3.0]]]])
for name in ("MaxPooling2D", "GlobalMaxPooling2D"):
    out[f"ties_{name}"] = np.asarray(jax.grad(lambda t: jnp.sum(getattr(keras.layers, name)()(t)))(jnp.asarray(ties)))
np.savez(os.path.join(folder, "out.npz"), **out)
"""


def test_layers_match_keras_3(tmp_path):
    """Keras 3 (JAX) rebuilds each layer from glassnet's get_config(), takes its weights, and must give the
    same output and the same gradients (input and weights) in float64; ties are routed the same way."""
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("jax") is None:
        pytest.skip("keras with jax is not installed (make test installs both)")
    glassnet.set_floatx("float64")
    rng = np.random.default_rng(12)
    arrays, configs, ours = {}, [], {}
    for i, (factory, shape) in enumerate(KERAS_CASES):
        layer = factory()
        x = distinct(rng, shape) if "Pool" in type(layer).__name__ else rng.normal(size=shape)
        layer(x)
        random_weights(layer, rng)
        dy = rng.normal(size=layer.compute_output_shape(shape))
        y, dx, grads = glassnet_run(layer, x, dy)
        arrays.update({f"x{i}": x, f"dy{i}": dy}, **{f"w{i}_{j}": w.numpy() for j, w in enumerate(layer.weights)})
        ours.update({f"y{i}": y, f"dx{i}": dx}, **{f"g{i}_{j}": grads[w.name] for j, w in enumerate(layer.weights)})
        configs.append(serialize(layer))
    np.savez(tmp_path / "in.npz", **arrays)
    (tmp_path / "layers.json").write_text(json.dumps(configs))
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(KERAS_SCRIPT), str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    keras_out = np.load(tmp_path / "out.npz")
    for key, value in ours.items():
        i = int(key.lstrip("dxyg").split("_")[0])
        err = rel_error(value, keras_out[key])   # Keras on JAX keeps some float64 steps at float32 precision
        assert err < 1e-6, f"{configs[i]['class_name']} case {i}: {key} differs from Keras, relative error {err:.2g}"
    ties = np.array([[[[1.0], [3.0], [3.0], [0.0]], [[3.0], [2.0], [1.0], [3.0]]]])
    for cls in (MaxPooling2D, GlobalMaxPooling2D):
        y, backward = cls().forward(ties)
        close(backward(np.ones_like(y)), keras_out[f"ties_{cls.__name__}"], 0, f"{cls.__name__} ties")


# --- (c) a small convnet ----------------------------------------------------------------------------
def test_convnet_trains_and_summarises(capsys):
    rng = np.random.default_rng(10)
    x = rng.normal(size=(64, 10, 10, 1)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    model = glassnet.Sequential([Input((10, 10, 1)), Conv2D(8, 3, activation="relu"), MaxPooling2D(), Flatten(),
                                 Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0] - 0.05, losses
    assert model.predict(x, verbose=0).shape == (64, 3)

    mnist = glassnet.Sequential([Input((28, 28, 1)), Conv2D(32, 3, activation="relu"), MaxPooling2D(), Flatten(),
                                 Dense(10, activation="softmax")])
    conv, pool = mnist.layers[0], mnist.layers[1]
    assert conv.output_shape == (None, 26, 26, 32) and pool.output_shape == (None, 13, 13, 32)
    assert conv.count_params() == 320 and mnist.layers[3].count_params() == 13 * 13 * 32 * 10 + 10
    mnist.summary()
    out = capsys.readouterr().out
    assert "(None, 26, 26, 32)" in out and "(None, 13, 13, 32)" in out and "(None, 5408)" in out
    assert "Total params: 54,410" in out
    assert "conv2d_1 (Conv2D)" in out and "max_pooling2d_1 (MaxPooling2D)" in out   # Keras's default names


def test_output_shapes_match_keras():
    cases = [
        (Conv2D(16, 5, strides=2, padding="same"), (None, 32, 31, 3), (None, 16, 16, 16)),
        (Conv2D(8, 3, dilation_rate=2), (None, 9, 9, 3), (None, 5, 5, 8)),
        (Conv2D(8, 3, data_format="channels_first"), (None, 3, 9, 7), (None, 8, 7, 5)),
        (Conv1D(4, 5, padding="causal", strides=2), (None, None, 3), (None, None, 4)),
        (Conv1D(4, 5, strides=2), (None, 11, 3), (None, 4, 4)),
        (Conv2DTranspose(4, 3), (None, 5, 5, 2), (None, 7, 7, 4)),
        (Conv2DTranspose(4, 3, strides=2), (None, 5, 5, 2), (None, 11, 11, 4)),
        (Conv2DTranspose(4, 2, strides=3), (None, 5, 5, 2), (None, 15, 15, 4)),
        (Conv2DTranspose(4, 3, strides=2, padding="same"), (None, 5, 5, 2), (None, 10, 10, 4)),
        (Conv2DTranspose(4, 3, strides=2, padding="same", output_padding=0), (None, 5, 5, 2), (None, 9, 9, 4)),
        (Conv2DTranspose(4, 3, strides=2, output_padding=1), (None, 5, 5, 2), (None, 12, 12, 4)),
        (DepthwiseConv2D(3, depth_multiplier=3), (None, 8, 8, 5), (None, 6, 6, 15)),
        (SeparableConv2D(7, 3, padding="same"), (None, 8, 8, 5), (None, 8, 8, 7)),
        (MaxPooling2D(), (None, 7, 7, 4), (None, 3, 3, 4)),
        (MaxPooling2D(padding="same"), (None, 7, 7, 4), (None, 4, 4, 4)),
        (AveragePooling1D(3, strides=1), (None, 10, 2), (None, 8, 2)),
        (GlobalAveragePooling2D(), (None, 7, 7, 4), (None, 4)),
        (GlobalMaxPooling2D(keepdims=True, data_format="channels_first"), (None, 4, 7, 7), (None, 4, 1, 1)),
    ]
    for layer, shape, want in cases:
        assert tuple(layer.compute_output_shape(shape)) == want, (type(layer).__name__, shape)
        if None not in shape[1:]:
            assert layer(np.zeros((2,) + shape[1:], np.float32)).shape == (2,) + want[1:]


def test_weight_layouts_and_initial_values():
    x = np.zeros((1, 8, 8, 6), np.float32)
    expected = [
        (Conv2D(4, 3, groups=2), [(3, 3, 3, 4), (4,)]),
        (Conv1D(4, 3), [(3, 6, 4), (4,)]),
        (Conv2DTranspose(4, 3), [(3, 3, 4, 6), (4,)]),
        (DepthwiseConv2D(3, depth_multiplier=2), [(3, 3, 6, 2), (12,)]),
        (SeparableConv2D(5, 3, depth_multiplier=2), [(3, 3, 6, 2), (1, 1, 12, 5), (5,)]),
    ]
    for layer, shapes in expected:
        layer(x[:, 0] if layer.rank == 1 else x)
        assert [w.shape for w in layer.weights] == shapes, type(layer).__name__
        assert not layer.weights[-1].value.any()                     # bias zeros
        limit = np.sqrt(6 / sum(glassnet.initializers.compute_fans(shapes[0])))
        assert 0 < np.abs(layer.weights[0].value).max() <= limit      # glorot_uniform
    sep = SeparableConv2D(5, 3)
    sep(x)
    assert [w.name for w in sep.weights] == ["depthwise_kernel", "pointwise_kernel", "bias"]


# --- (d) configs ------------------------------------------------------------------------------------
CONFIG_CASES = [
    (Conv1D, dict(filters=4, kernel_size=3, strides=2, padding="causal", groups=2, activation="relu",
                  kernel_regularizer="l2", use_bias=False), (2, 9, 4)),
    (Conv2D, dict(filters=4, kernel_size=(3, 2), padding="same", dilation_rate=2, data_format="channels_first",
                  kernel_initializer="he_normal", bias_constraint="non_neg"), (2, 4, 7, 7)),
    (Conv1DTranspose, dict(filters=3, kernel_size=3, strides=2, padding="same"), (2, 5, 2)),
    (Conv2DTranspose, dict(filters=3, kernel_size=3, strides=2, output_padding=1, activation="tanh"), (2, 5, 5, 2)),
    (DepthwiseConv1D, dict(kernel_size=3, depth_multiplier=2), (2, 7, 3)),
    (DepthwiseConv2D, dict(kernel_size=3, depth_multiplier=2, depthwise_regularizer="l1"), (2, 6, 6, 3)),
    (SeparableConv1D, dict(filters=4, kernel_size=3, depth_multiplier=2), (2, 7, 3)),
    (SeparableConv2D, dict(filters=4, kernel_size=3, depth_multiplier=2, padding="same",
                           pointwise_initializer="zeros", activity_regularizer="l2"), (2, 6, 6, 3)),
    (MaxPooling1D, dict(pool_size=3, strides=2, padding="same"), (2, 7, 3)),
    (MaxPooling2D, dict(pool_size=(3, 2), data_format="channels_first"), (2, 3, 6, 6)),
    (AveragePooling1D, dict(pool_size=2), (2, 7, 3)),
    (AveragePooling2D, dict(pool_size=3, strides=1, padding="same"), (2, 6, 6, 3)),
    (GlobalMaxPooling1D, dict(keepdims=True), (2, 7, 3)),
    (GlobalMaxPooling2D, dict(data_format="channels_first"), (2, 3, 6, 6)),
    (GlobalAveragePooling1D, dict(), (2, 7, 3)),
    (GlobalAveragePooling2D, dict(keepdims=True), (2, 6, 6, 3)),
]


@pytest.mark.parametrize("cls,kwargs,shape", CONFIG_CASES, ids=[c[0].__name__ for c in CONFIG_CASES])
def test_config_round_trip(cls, kwargs, shape):
    rng = np.random.default_rng(11)
    layer = cls(**kwargs)
    x = rng.normal(size=shape).astype(np.float32)
    y = layer(x)
    config = layer.get_config()
    assert json.loads(json.dumps(config)) == config                    # plain JSON
    for key, value in kwargs.items():
        got = config[key]
        if key in ("kernel_size", "strides", "pool_size", "dilation_rate", "output_padding") and \
                isinstance(value, int):
            assert got == [value] * (len(shape) - 2), key
        elif isinstance(value, str) and key.endswith(("initializer", "regularizer", "constraint")):
            assert got is not None, key
        elif key != "activation":
            assert got == (list(value) if isinstance(value, tuple) else value), key
    clone = deserialize("layers", serialize(layer), "layer")
    assert type(clone) is cls and clone.get_config() == config
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(x), y)


def test_keras_defaults():
    conv = Conv2D(8, 3)
    config = conv.get_config()
    assert config["strides"] == [1, 1] and config["padding"] == "valid" and config["data_format"] == "channels_last"
    assert config["dilation_rate"] == [1, 1] and config["groups"] == 1 and config["use_bias"] is True
    assert config["kernel_initializer"]["class_name"] == "GlorotUniform"
    assert config["bias_initializer"]["class_name"] == "Zeros"
    assert MaxPooling2D().get_config()["strides"] == [2, 2] and MaxPooling1D().get_config()["pool_size"] == [2]
    assert Conv2DTranspose(4, 3).get_config()["output_padding"] is None
    assert Conv1D(2, 3, padding="SAME").padding == "same"


# --- (e) errors -------------------------------------------------------------------------------------
def test_errors_say_what_where_expected_got():
    with pytest.raises(ValueError, match=r"Conv2D 'c' expects inputs of rank 4 .*got shape \(2, 28, 28\).*channel"):
        Conv2D(4, 3, name="c")(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"needs the channel axis .* known"):
        Conv2D(4, 3).build((None, 8, 8, None))
    with pytest.raises(ValueError, match=r"groups=3, which must divide the number of input channels, got 4"):
        Conv2D(6, 3, groups=3)(np.zeros((1, 5, 5, 4), np.float32))
    with pytest.raises(ValueError, match=r"`filters` to be divisible by `groups`, got filters=5 and groups=2"):
        Conv2D(5, 3, groups=2)
    with pytest.raises(ValueError, match=r"strides > 1 together with dilation_rate > 1"):
        Conv2D(4, 3, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match=r"`padding` to be one of 'valid', 'same', got padding='causal'"):
        Conv2D(4, 3, padding="causal")
    with pytest.raises(ValueError, match=r"`kernel_size` to be a positive integer or a tuple of 2"):
        Conv2D(4, (3, 3, 3))
    with pytest.raises(ValueError, match=r"`filters` to be a positive integer, got filters=0"):
        Conv1D(0, 3)
    with pytest.raises(ValueError, match=r"output_padding.* smaller than its stride"):
        Conv2DTranspose(4, 3, strides=2, output_padding=2)
    with pytest.raises(ValueError, match=r"empty output: inputs of spatial shape \(2, 2\)"):
        Conv2D(4, 3)(np.zeros((1, 2, 2, 1), np.float32))
    with pytest.raises(ValueError, match=r"empty output"):
        MaxPooling2D(3)(np.zeros((1, 2, 2, 1), np.float32))
    with pytest.raises(ValueError, match=r"`data_format` to be 'channels_last' or 'channels_first'"):
        MaxPooling2D(data_format="NHWC")
    with pytest.raises(ValueError, match=r"GlobalAveragePooling2D .* rank 4"):
        GlobalAveragePooling2D()(np.zeros((2, 5, 3), np.float32))
    layer = Conv2D(4, 3)
    layer(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"expects inputs of shape \(1, 8, 8, 3\)|expects inputs of shape"):
        layer(np.zeros((1, 8, 8, 2), np.float32))
