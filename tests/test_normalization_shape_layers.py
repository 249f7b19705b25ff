"""Normalisation, shape and noise layers: gradients, PyTorch and Keras references, configs, training.

(a) finite-difference gradient checks in float64 (central differences, relative error < 1e-6) for
    the input and every trainable weight; random layers are re-seeded before each forward pass so
    the mask/noise is the same function of x every time;
(b) PyTorch references (marked ``reference``, float32, 1e-5) with identical weights: BatchNorm in
    training and inference, its running statistics, LayerNorm, GroupNorm, padding, cropping and
    upsampling (Keras is channels-last, torch channels-first: the tests transpose);
    Keras itself (NumPy backend, when installed) for the forward values and the config keys;
(c) get_config/from_config round trips through JSON;
(d) a Sequential with BatchNormalization trained with fit.
"""
import json
import os

import numpy as np
import pytest
from gradcheck import numeric_grad, rel_error

import glassnet
from glassnet.engine.registry import deserialize
from glassnet.layers import Dense, Input
from glassnet.layers.normalization import BatchNormalization, GroupNormalization, LayerNormalization
from glassnet.layers.regularization import GaussianDropout, GaussianNoise, SpatialDropout1D, SpatialDropout2D
from glassnet.layers.rescaling import Rescaling
from glassnet.layers.reshaping import (Cropping1D, Cropping2D, Permute, RepeatVector, UpSampling1D, UpSampling2D,
                                       ZeroPadding1D, ZeroPadding2D)

TOL = 1e-6
H = 1e-6
TOL32 = 1e-5


# --- (a) gradient checks -------------------------------------------------------------------------------------
def check_layer_grads(layer, x, training=True, seed=None, mask=None, rng=None):
    """J = Σ y·dy: compare backward's dx and weight grads with central differences.

    The layer's non-trainable weights (moving statistics) are restored before every forward pass,
    and ``seed`` re-seeds glassnet's generator, so each pass is the same function of (x, weights).
    """
    rng = rng or np.random.default_rng(1)
    layer(x[:1])  # build
    frozen = [(w, w.numpy()) for w in layer.weights if not w.trainable]
    extra = {} if mask is None else {"mask": mask}

    def forward():
        for w, v in frozen:
            w.value[...] = v
        if seed is not None:
            glassnet.set_random_seed(seed)
        return layer.forward(x, training=training, **extra)

    y, backward = forward()
    dy = rng.normal(size=y.shape)
    for w in layer.weights:
        w.grad[...] = 0
    dx = backward(dy)
    assert dx.shape == x.shape

    def J():
        return float(np.sum(forward()[0] * dy))

    err = rel_error(dx, numeric_grad(J, x))
    assert err < TOL, f"{layer.name} dx: relative error {err:.3g}"
    for w in layer.trainable_weights:
        err = rel_error(w.grad, numeric_grad(J, w.value))
        assert err < TOL, f"{layer.name} d{w.name}: relative error {err:.3g}"


def random_weights(layer, rng):
    """Give γ, β random values (γ away from 0) so every term of the gradient shows."""
    for w in layer.trainable_weights:
        w.value[...] = rng.normal(size=w.shape) + (1.0 if w.name == "gamma" else 0.0)


NORM_CASES = [
    ("bn rank2", lambda: BatchNormalization(), (6, 3), True),
    ("bn axis=1 rank4", lambda: BatchNormalization(axis=1, momentum=0.9), (3, 2, 3, 2), True),
    ("bn no center/scale", lambda: BatchNormalization(center=False, scale=False), (4, 3, 2), True),
    ("bn scale only", lambda: BatchNormalization(center=False), (5, 2), True),
    ("bn inference", lambda: BatchNormalization(moving_mean_initializer="random_normal",
                                                moving_variance_initializer="ones"), (4, 3), False),
    ("ln last axis", lambda: LayerNormalization(), (3, 5), True),
    ("ln two axes", lambda: LayerNormalization(axis=[1, 2]), (2, 3, 4), True),
    ("ln axis 1 of rank 3, no center", lambda: LayerNormalization(axis=1, center=False), (2, 4, 3), True),
    ("gn groups 2", lambda: GroupNormalization(groups=2), (2, 3, 2, 4), True),
    ("gn axis 1 groups 3", lambda: GroupNormalization(groups=3, axis=1), (2, 6, 3), True),
    ("gn instance norm, no scale", lambda: GroupNormalization(groups=-1, scale=False), (2, 4, 3), True),
]


@pytest.mark.parametrize("what,make,shape,training", NORM_CASES, ids=[c[0] for c in NORM_CASES])
def test_normalization_gradients(float64, what, make, shape, training):
    rng = np.random.default_rng(0)
    layer = make()
    x = rng.normal(size=shape) * 2 + 0.5
    layer(x[:1])
    random_weights(layer, rng)
    check_layer_grads(layer, x, training=training, rng=rng)


def test_batchnorm_masked_gradients(float64):
    """With a mask the batch statistics use only the True steps; every step is normalised."""
    rng = np.random.default_rng(2)
    layer = BatchNormalization()
    x = rng.normal(size=(3, 4, 2))
    mask = np.array([[1, 1, 0, 1], [1, 0, 0, 0], [1, 1, 1, 1]], bool)
    layer(x[:1])
    random_weights(layer, rng)
    check_layer_grads(layer, x, mask=mask, rng=rng)
    # the statistics are those of the unmasked entries (with Keras's 1e-7 in the count)
    layer.forward(x, training=True, mask=mask)
    kept = x[mask]
    moving = layer.moving_mean.numpy()
    layer.moving_mean.value[...] = 0
    layer.forward(x, training=True, mask=mask)
    np.testing.assert_allclose(layer.moving_mean.value, 0.01 * kept.sum(0) / (len(kept) + 1e-7), rtol=1e-12)
    assert not np.allclose(moving, layer.moving_mean.value)


def test_batchnorm_renorm_gradients(float64):
    """Batch renormalisation: r and d are constants of the backward pass (Keras's stop_gradient).

    Clipping saturates them here (rmin = rmax, |d| >> dmax), so they are also constant in the
    finite differences and the whole gradient can be checked numerically.
    """
    rng = np.random.default_rng(3)
    layer = BatchNormalization(renorm=True, renorm_clipping={"rmin": 1.3, "rmax": 1.3, "dmax": 0.5})
    x = rng.normal(size=(6, 3)) + np.array([5.0, -5.0, 6.0])
    layer(x[:1])
    random_weights(layer, rng)
    check_layer_grads(layer, x, rng=rng)
    assert [w.name for w in layer.weights] == ["gamma", "beta", "moving_mean", "moving_variance", "moving_stddev",
                                               "renorm_mean", "renorm_stddev"]


SHAPE_CASES = [
    ("permute", lambda: Permute((2, 3, 1)), (2, 3, 4, 2)),
    ("repeat_vector", lambda: RepeatVector(3), (2, 4)),
    ("zero_padding1d", lambda: ZeroPadding1D((1, 2)), (2, 3, 2)),
    ("zero_padding1d cf", lambda: ZeroPadding1D(2, data_format="channels_first"), (2, 2, 3)),
    ("zero_padding2d", lambda: ZeroPadding2D(((1, 0), (2, 1))), (2, 2, 3, 2)),
    ("zero_padding2d cf", lambda: ZeroPadding2D(1, data_format="channels_first"), (1, 2, 2, 3)),
    ("cropping1d", lambda: Cropping1D((1, 2)), (2, 5, 2)),
    ("cropping2d", lambda: Cropping2D(((1, 0), (1, 2))), (2, 3, 5, 2)),
    ("cropping2d cf", lambda: Cropping2D(1, data_format="channels_first"), (1, 2, 4, 3)),
    ("upsampling1d", lambda: UpSampling1D(3), (2, 3, 2)),
    ("upsampling2d nearest", lambda: UpSampling2D((2, 3)), (1, 2, 3, 2)),
    ("upsampling2d nearest cf", lambda: UpSampling2D(2, data_format="channels_first"), (1, 2, 2, 3)),
    ("upsampling2d bilinear", lambda: UpSampling2D((3, 2), interpolation="bilinear"), (1, 3, 2, 2)),
    ("upsampling2d bilinear cf", lambda: UpSampling2D(2, "channels_first", "bilinear"), (1, 2, 3, 3)),
    ("rescaling", lambda: Rescaling(1 / 255, offset=-0.5), (2, 3)),
    ("rescaling per channel", lambda: Rescaling([0.5, -2.0, 3.0], offset=[1.0, 0.0, 2.0]), (2, 2, 3)),
]


@pytest.mark.parametrize("what,make,shape", SHAPE_CASES, ids=[c[0] for c in SHAPE_CASES])
def test_shape_layer_gradients(float64, what, make, shape):
    layer = make()
    x = np.random.default_rng(4).normal(size=shape)
    check_layer_grads(layer, x)
    assert layer(x).shape[1:] == layer.compute_output_shape((None,) + shape[1:])[1:]


NOISE_CASES = [
    ("spatial_dropout1d", lambda: SpatialDropout1D(0.5), (4, 3, 5)),
    ("spatial_dropout2d", lambda: SpatialDropout2D(0.4), (3, 2, 2, 4)),
    ("spatial_dropout2d cf", lambda: SpatialDropout2D(0.4, data_format="channels_first"), (3, 4, 2, 2)),
    ("gaussian_noise", lambda: GaussianNoise(0.3), (3, 4)),
    ("gaussian_dropout", lambda: GaussianDropout(0.3), (3, 4)),
]


@pytest.mark.parametrize("what,make,shape", NOISE_CASES, ids=[c[0] for c in NOISE_CASES])
def test_noise_layer_gradients(float64, what, make, shape):
    layer = make()
    x = np.random.default_rng(5).normal(size=shape)
    check_layer_grads(layer, x, seed=11)
    glassnet.set_random_seed(11)
    assert not np.array_equal(layer.forward(x, training=True)[0], x)  # the training pass does change x
    np.testing.assert_array_equal(layer(x), x)  # inference is the identity
    np.testing.assert_array_equal(layer(x, training=False), x)


def test_spatial_dropout_drops_whole_channels():
    x = np.ones((64, 5, 3), np.float32)
    y = SpatialDropout1D(0.5)(x, training=True)
    assert np.all((y == 0) | (y == 2))
    assert np.all(y == y[:, :1, :]), "one draw per (sample, channel), shared by every step"
    assert 0.3 < (y[:, 0] == 0).mean() < 0.7
    x = np.ones((64, 3, 4, 2, 2), np.float32)[..., 0]  # (64, 3, 4, 2) channels_first
    y = SpatialDropout2D(0.25, data_format="channels_first")(x, training=True)
    assert np.all(y == y[:, :, :1, :1]) and np.all((y == 0) | np.isclose(y, 4 / 3))


def test_gaussian_layers_statistics(float64):
    x = np.full((400, 50), 2.0)
    y = GaussianNoise(0.5)(x, training=True)
    assert abs(y.mean() - 2) < 0.01 and abs(y.std() - 0.5) < 0.01
    y = GaussianDropout(0.2)(x, training=True)
    assert abs(y.mean() - 2) < 0.01 and abs(y.std() - 2 * np.sqrt(0.2 / 0.8)) < 0.01
    seeded = GaussianNoise(0.5, seed=3)
    a, b = seeded(x, training=True), GaussianNoise(0.5, seed=3)(x, training=True)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, seeded(x, training=True))


def test_batchnorm_frozen_layer_runs_in_inference_mode():
    """As in Keras: trainable=False means inference mode, and the moving statistics stay put."""
    rng = np.random.default_rng(6)
    x = (rng.normal(size=(8, 3)) * 4 + 3).astype(np.float32)
    layer = BatchNormalization(trainable=False)
    layer(x)
    y = layer.forward(x, training=True)[0]
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-3), rtol=1e-6)
    np.testing.assert_array_equal(layer.moving_mean.value, 0)
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 4


def test_masks_pass_through():
    mask = np.ones((2, 3), bool)
    for layer in (BatchNormalization(), LayerNormalization(), GroupNormalization(2), SpatialDropout1D(0.1),
                  GaussianNoise(0.1), GaussianDropout(0.1), Rescaling(2.0)):
        assert layer.compute_mask(None, mask) is mask, type(layer).__name__
    for layer in (ZeroPadding1D(), Cropping1D(), UpSampling1D(), Permute((2, 1))):
        assert layer.compute_mask(None, mask) is None, type(layer).__name__


def test_shapes_and_errors():
    assert ZeroPadding2D(((1, 2), (3, 4))).compute_output_shape((None, 5, None, 3)) == (None, 8, None, 3)
    assert Cropping2D(((1, 2), (0, 1)), "channels_first").compute_output_shape((None, 3, 6, 4)) == (None, 3, 3, 3)
    assert UpSampling2D((2, 3)).compute_output_shape((None, 4, 5, 1)) == (None, 8, 15, 1)
    assert UpSampling1D(4).compute_output_shape((None, None, 2)) == (None, None, 2)
    assert Permute((2, 1)).compute_output_shape((None, 3, 7)) == (None, 7, 3)
    assert RepeatVector(5).compute_output_shape((None, 3)) == (None, 5, 3)
    with pytest.raises(ValueError, match="multiple of the number of groups"):
        GroupNormalization(groups=3)(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="cannot be more than the number of channels"):
        GroupNormalization()(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="at least one entry"):
        Cropping1D((2, 3))(np.zeros((1, 5, 2)))
    with pytest.raises(ValueError, match="interpolation"):
        UpSampling2D(interpolation="bicubic")
    with pytest.raises(ValueError, match="consecutive and start from 1"):
        Permute((0, 1))
    with pytest.raises(ValueError, match="rank 3"):
        UpSampling1D()(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="out of bounds"):
        BatchNormalization(axis=3)(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="synchronized"):
        BatchNormalization(synchronized=True)
    with pytest.raises(ValueError, match="invalid keys"):
        BatchNormalization(renorm=True, renorm_clipping={"rmx": 1})
    with pytest.raises(ValueError, match="between 0 and 1"):
        GaussianNoise(1.5)
    with pytest.raises(ValueError, match="padding"):
        ZeroPadding2D((1, 2, 3))
    bn = BatchNormalization()
    bn(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="one dimension less"):
        bn.forward(np.zeros((2, 3, 4)), training=True, mask=np.ones((2, 3, 4), bool))


# --- (b) PyTorch references (float32) ---------------------------------------------------------------------------
def _torch():
    return pytest.importorskip("torch")


def close(got, want, tol=TOL32, what=""):
    want = want.detach().numpy() if hasattr(want, "detach") else np.asarray(want)
    np.testing.assert_allclose(np.asarray(got), want, rtol=tol, atol=tol, err_msg=what)


def torch_grads(fn, x, params, dy):
    """Run ``fn(x, *params)`` in torch and return (y, dx, [dparams]) for the upstream gradient dy."""
    torch = _torch()
    xt = torch.tensor(x, requires_grad=True)
    pt = [torch.tensor(p, requires_grad=True) for p in params]
    y = fn(xt, *pt)
    y.backward(torch.tensor(dy))
    return y, xt.grad, [p.grad for p in pt]


def glassnet_grads(layer, x, dy, training=True):
    for w in layer.weights:
        w.grad[...] = 0
    y, backward = layer.forward(x, training=training)
    return y, backward(dy), [w.grad.copy() for w in layer.trainable_weights]


def to_cf(a):
    return np.ascontiguousarray(np.moveaxis(a, -1, 1))


def to_cl(t):
    a = t.detach().numpy() if hasattr(t, "detach") else t
    return np.moveaxis(a, 1, -1)


@pytest.mark.reference
def test_batchnorm_training_forward_backward_and_running_stats_vs_torch():
    """y, dx, dγ, dβ agree with torch; moving statistics follow Keras's rule (biased variance).

    torch's momentum is Keras's 1 − momentum, and torch's running_var averages the *unbiased*
    batch variance (÷(n − 1)), Keras's moving_variance the biased one (÷n): the expected Keras values
    are computed here from the batches, and torch's running_var is shown to differ exactly by that.
    """
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(7)
    shape = (6, 4, 3, 5)  # channels_last (batch, rows, cols, channels)
    layer = BatchNormalization(momentum=0.9)
    layer(np.zeros((1,) + shape[1:], np.float32))
    gamma, beta = rng.normal(size=5).astype(np.float32) + 1, rng.normal(size=5).astype(np.float32)
    layer.set_weights([gamma, beta, np.zeros(5, np.float32), np.ones(5, np.float32)])
    run_mean, run_var = torch.zeros(5), torch.ones(5)
    keras_mean, keras_var, torch_unbiased_var = np.zeros(5), np.ones(5), np.ones(5)
    n = 6 * 4 * 3
    for step in range(4):
        x = (rng.normal(size=shape) * (step + 1) + step).astype(np.float32)
        dy = rng.normal(size=shape).astype(np.float32)
        y, dx, (dg, db) = glassnet_grads(layer, x, dy)

        def bn(xt, g, b):
            return F.batch_norm(xt, run_mean, run_var, g, b, training=True, momentum=0.1, eps=1e-3)

        ty, tdx, (tdg, tdb) = torch_grads(bn, to_cf(x), [gamma, beta], to_cf(dy))
        close(y, to_cl(ty), what="y")
        close(dx, to_cl(tdx), what="dx")
        close(dg, tdg, tol=1e-4, what="dgamma")  # sums of 72 terms of size ~1
        close(db, tdb, tol=1e-4, what="dbeta")
        xs = x.reshape(-1, 5).astype(np.float64)
        keras_mean = 0.9 * keras_mean + 0.1 * xs.mean(0)
        keras_var = 0.9 * keras_var + 0.1 * xs.var(0)
        torch_unbiased_var = 0.9 * torch_unbiased_var + 0.1 * xs.var(0) * n / (n - 1)
        close(layer.moving_mean.value, keras_mean, what="moving_mean")
        close(layer.moving_variance.value, keras_var, what="moving_variance (Keras: biased)")
        close(run_mean, keras_mean, what="torch running_mean")
        close(run_var, torch_unbiased_var, what="torch running_var (unbiased)")
    assert not np.allclose(layer.moving_variance.value, run_var.numpy(), rtol=1e-3), "the rules differ"


@pytest.mark.reference
def test_batchnorm_inference_and_axis1_vs_torch():
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(8)
    x = rng.normal(size=(4, 3, 5, 2)).astype(np.float32)  # channels_first: axis=1 is torch's layout
    dy = rng.normal(size=x.shape).astype(np.float32)
    layer = BatchNormalization(axis=1, epsilon=1e-2)
    layer(x[:1])
    weights = [rng.normal(size=3).astype(np.float32) + 1, rng.normal(size=3).astype(np.float32),
               rng.normal(size=3).astype(np.float32), rng.uniform(0.5, 2, 3).astype(np.float32)]
    layer.set_weights(weights)
    mm, mv = torch.tensor(weights[2]), torch.tensor(weights[3])
    for training in (False, True):
        y, dx, (dg, db) = glassnet_grads(layer, x, dy, training=training)
        ty, tdx, (tdg, tdb) = torch_grads(
            lambda xt, g, b: F.batch_norm(xt, mm.clone(), mv.clone(), g, b, training=training, eps=1e-2),
            x, weights[:2], dy)
        close(y, ty, what=f"y training={training}")
        close(dx, tdx, what=f"dx training={training}")
        close(dg, tdg, tol=1e-4, what=f"dgamma training={training}")  # sums of 40 terms of size ~1
        close(db, tdb, tol=1e-4, what=f"dbeta training={training}")
    # inference used the moving statistics; the training pass then moved them by (1 − 0.99)
    np.testing.assert_allclose(layer.moving_mean.value, 0.99 * weights[2] + 0.01 * x.mean((0, 2, 3)), rtol=1e-5)


@pytest.mark.reference
@pytest.mark.parametrize("axis,shape", [(-1, (4, 6)), ([1, 2], (3, 4, 5)), (-1, (2, 3, 7))])
def test_layernorm_vs_torch(axis, shape):
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(9)
    x = (rng.normal(size=shape) * 3 + 1).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    layer = LayerNormalization(axis=axis)
    layer(x[:1])
    gamma = rng.normal(size=layer.gamma.shape).astype(np.float32) + 1
    beta = rng.normal(size=layer.beta.shape).astype(np.float32)
    layer.set_weights([gamma, beta])
    y, dx, (dg, db) = glassnet_grads(layer, x, dy)
    norm_shape = gamma.shape
    ty, tdx, (tdg, tdb) = torch_grads(lambda xt, g, b: F.layer_norm(xt, norm_shape, g, b, eps=1e-3),
                                      x, [gamma, beta], dy)
    for got, want, what in ((y, ty, "y"), (dx, tdx, "dx"), (dg, tdg, "dgamma"), (db, tdb, "dbeta")):
        close(got, want, what=what)


@pytest.mark.reference
@pytest.mark.parametrize("groups,shape", [(2, (3, 4, 5, 4)), (3, (2, 7, 6)), (-1, (2, 3, 3, 4)), (1, (4, 6))])
def test_groupnorm_vs_torch(groups, shape):
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(10)
    x = (rng.normal(size=shape) * 2 - 1).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    layer = GroupNormalization(groups=groups)
    layer(x[:1])
    channels = shape[-1]
    gamma = rng.normal(size=channels).astype(np.float32) + 1
    beta = rng.normal(size=channels).astype(np.float32)
    layer.set_weights([gamma, beta])
    y, dx, (dg, db) = glassnet_grads(layer, x, dy)
    g = channels if groups == -1 else groups
    ty, tdx, (tdg, tdb) = torch_grads(lambda xt, w, b: F.group_norm(xt, g, w, b, eps=1e-3),
                                      to_cf(x), [gamma, beta], to_cf(dy))
    for got, want, what in ((y, to_cl(ty), "y"), (dx, to_cl(tdx), "dx"), (dg, tdg, "dgamma"), (db, tdb, "dbeta")):
        close(got, want, tol=TOL32 if what in ("y", "dx") else 1e-4, what=what)


def _shape_cases(F):
    """(glassnet layer, x shape, torch function on the channels_first array)."""
    return [
        (ZeroPadding2D(((1, 2), (3, 0))), (2, 3, 4, 2), lambda t: F.pad(t, (3, 0, 1, 2))),
        (ZeroPadding1D((2, 1)), (2, 5, 3), lambda t: F.pad(t, (2, 1))),
        (Cropping2D(((1, 0), (2, 1))), (2, 4, 6, 3), lambda t: t[:, :, 1:, 2:-1]),
        (Cropping1D((1, 2)), (2, 6, 3), lambda t: t[:, :, 1:-2]),
        (UpSampling1D(3), (2, 4, 3), lambda t: F.interpolate(t, scale_factor=3, mode="nearest")),
        (UpSampling2D((2, 3)), (2, 3, 4, 2), lambda t: F.interpolate(t, scale_factor=(2, 3), mode="nearest")),
        (UpSampling2D((3, 2), interpolation="bilinear"), (2, 4, 5, 3),
         lambda t: F.interpolate(t, scale_factor=(3, 2), mode="bilinear", align_corners=False)),
        (UpSampling2D(2, data_format="channels_first", interpolation="bilinear"), (2, 3, 4, 5), None),
    ]


@pytest.mark.reference
def test_padding_cropping_upsampling_vs_torch():
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(11)
    for layer, shape, fn in _shape_cases(F):
        x = rng.normal(size=shape).astype(np.float32)
        y, backward = layer.forward(x)
        dy = rng.normal(size=y.shape).astype(np.float32)
        dx = backward(dy)
        if fn is None:  # channels_first layer: torch's own layout
            fn = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
            ty, tdx, _ = torch_grads(fn, x, [], dy)
        else:
            ty, tdx, _ = torch_grads(fn, to_cf(x), [], to_cf(dy))
            ty, tdx = to_cl(ty), to_cl(tdx)
        close(y, ty, what=f"{layer.name} y")
        close(dx, tdx, what=f"{layer.name} dx")
        assert y.shape[1:] == layer.compute_output_shape((None,) + shape[1:])[1:]


# --- Keras itself (NumPy backend), when installed ----------------------------------------------------------------
@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "numpy")
    return pytest.importorskip("keras")


def _np(keras, t):
    return keras.ops.convert_to_numpy(t)


def test_batchnorm_matches_keras_steps(keras):
    """Training steps with Keras's moving-statistics rule, renorm and a mask, then inference."""
    rng = np.random.default_rng(12)
    cases = [({}, (8, 3), None), ({"axis": 1, "momentum": 0.8}, (4, 3, 5, 2), None),
             ({"renorm": True, "renorm_clipping": {"rmax": 1.5, "rmin": 0.7, "dmax": 0.3}, "renorm_momentum": 0.9},
              (8, 3), None),
             ({"center": False}, (4, 5, 3), rng.random((4, 5)) > 0.3)]
    for kwargs, shape, mask in cases:
        kl, gl = keras.layers.BatchNormalization(**kwargs), BatchNormalization(**kwargs)
        kl.build(shape)
        gl(np.zeros((1,) + shape[1:], np.float32))
        weights = [rng.uniform(0.5, 2, w.shape).astype(np.float32) for w in kl.weights]
        kl.set_weights(weights)
        gl.set_weights(weights)
        for _ in range(3):
            x = (rng.normal(size=shape) * 3 + 1).astype(np.float32)
            extra = {} if mask is None else {"mask": mask}
            close(gl.forward(x, training=True, **extra)[0], _np(keras, kl(x, training=True, **extra)), what=str(kwargs))
        for kw, gw in zip(kl.weights, gl.weights):
            assert kw.name == gw.name
            close(gw.value, _np(keras, kw.value), what=f"{kwargs} {gw.name}")
        close(gl(x), _np(keras, kl(x, training=False)), what=f"{kwargs} inference")


def test_normalization_and_shape_layers_match_keras(keras):
    rng = np.random.default_rng(13)
    x4 = rng.normal(size=(2, 6, 4, 6)).astype(np.float32)
    x3 = rng.normal(size=(2, 6, 4)).astype(np.float32)
    cases = [
        ("LayerNormalization", {"axis": [1, 2]}, x3), ("LayerNormalization", {"axis": 1}, x4),
        ("GroupNormalization", {"groups": 3}, x4), ("GroupNormalization", {"groups": 2, "axis": 1}, x4),
        ("UpSampling2D", {"size": (3, 2), "interpolation": "bilinear"}, x4),
        ("UpSampling2D", {"size": 2, "interpolation": "bilinear", "data_format": "channels_first"}, x4),
        ("UpSampling2D", {"size": (1, 3), "data_format": "channels_first"}, x4),
        ("ZeroPadding2D", {"padding": ((0, 1), (2, 3))}, x4), ("Cropping2D", {"cropping": (2, 1)}, x4),
        ("ZeroPadding1D", {"padding": 2, "data_format": "channels_first"}, x3),
        ("Cropping1D", {"cropping": (2, 0)}, x3), ("UpSampling1D", {"size": 2}, x3),
        ("Permute", {"dims": (3, 1, 2)}, x4), ("Rescaling", {"scale": 0.5, "offset": 2.0}, x3),
    ]
    classes = {cls.__name__: cls for cls in (LayerNormalization, GroupNormalization, UpSampling2D, ZeroPadding2D,
                                             Cropping2D, ZeroPadding1D, Cropping1D, UpSampling1D, Permute, Rescaling)}
    for name, kwargs, x in cases:
        kl, gl = getattr(keras.layers, name)(**kwargs), classes[name](**kwargs)
        kl.build(x.shape)
        gl(x[:1])
        weights = [rng.normal(size=w.shape).astype(np.float32) for w in kl.weights]
        kl.set_weights(weights)
        gl.set_weights(weights)
        close(gl(x), _np(keras, kl(x)), what=f"{name} {kwargs}")


ALL_LAYERS = [
    BatchNormalization, LayerNormalization, GroupNormalization, Permute, RepeatVector, ZeroPadding1D, ZeroPadding2D,
    Cropping1D, Cropping2D, UpSampling1D, UpSampling2D, SpatialDropout1D, SpatialDropout2D, GaussianNoise,
    GaussianDropout, Rescaling,
]
REQUIRED = {"Permute": {"dims": (2, 1)}, "RepeatVector": {"n": 2}, "SpatialDropout1D": {"rate": 0.1},
            "SpatialDropout2D": {"rate": 0.1}, "GaussianNoise": {"stddev": 0.1}, "GaussianDropout": {"rate": 0.1},
            "Rescaling": {"scale": 0.5}}


def test_config_keys_match_keras(keras):
    for cls in ALL_LAYERS:
        kwargs = REQUIRED.get(cls.__name__, {})
        want = set(getattr(keras.layers, cls.__name__)(**kwargs).get_config())
        assert set(cls(**kwargs).get_config()) == want, cls.__name__


# --- (c) configs -------------------------------------------------------------------------------------------------
CONFIG_CASES = [
    BatchNormalization(axis=1, momentum=0.9, epsilon=1e-5, center=False, gamma_initializer="zeros",
                       gamma_regularizer="l2", beta_constraint="non_neg", name="bn"),
    BatchNormalization(renorm=True, renorm_clipping={"rmax": 3.0}, renorm_momentum=0.5),
    LayerNormalization(axis=[1, 2], epsilon=1e-6, scale=False,
                       beta_regularizer={"class_name": "L1", "config": {"l1": 0.1}}),
    GroupNormalization(groups=4, axis=1, gamma_constraint="max_norm"),
    Permute((3, 1, 2)), RepeatVector(4), ZeroPadding1D((1, 3), data_format="channels_first"),
    ZeroPadding2D(((1, 2), 3)),
    Cropping1D(2), Cropping2D(((0, 1), (2, 3)), data_format="channels_first"), UpSampling1D(5),
    UpSampling2D((2, 3), interpolation="bilinear"), SpatialDropout1D(0.3, seed=4),
    SpatialDropout2D(0.2, data_format="channels_first"), GaussianNoise(0.2, seed=1), GaussianDropout(0.4),
    Rescaling(1 / 127.5, offset=-1), Rescaling([1.0, 2.0, 3.0], offset=[0.0, 0.5, 1.0]),
]


@pytest.mark.parametrize("layer", CONFIG_CASES, ids=[type(c).__name__ for c in CONFIG_CASES])
def test_config_round_trip(layer):
    config = json.loads(json.dumps(layer.get_config()))
    clone = deserialize("layers", {"class_name": type(layer).__name__, "config": config}, "layer")
    assert type(clone) is type(layer)
    assert clone.get_config() == config
    assert type(layer).from_config(config).get_config() == config


def test_built_config_round_trip_keeps_weights_and_outputs():
    rng = np.random.default_rng(14)
    x = rng.normal(size=(4, 3, 8)).astype(np.float32)
    for layer in (BatchNormalization(), LayerNormalization(axis=[-2, -1]), GroupNormalization(groups=-1)):
        y = layer(x)
        layer.set_weights([rng.uniform(0.5, 2, w.shape).astype(np.float32) for w in layer.weights])
        y = layer(x)
        config = json.loads(json.dumps(layer.get_config()))
        clone = type(layer).from_config(config)
        clone(x)
        clone.set_weights(layer.get_weights())
        np.testing.assert_array_equal(clone(x), y)
    assert GroupNormalization(groups=-1).get_config()["groups"] == -1
    assert layer.get_config()["groups"] == 8  # as Keras: -1 becomes the number of channels once built


# --- (d) training --------------------------------------------------------------------------------------------------
def test_sequential_with_batchnorm_fits_and_predicts_with_moving_statistics(tmp_path):
    rng = np.random.default_rng(15)
    x = (rng.normal(size=(256, 6)) * [1, 5, 0.2, 3, 1, 10] + [0, 20, -3, 1, 5, 0]).astype(np.float32)
    y = (x[:, :1] * 0.5 - x[:, 1:2] * 0.1 + x[:, 5:6] * 0.05 > 0).astype(np.float32)
    bn = BatchNormalization(name="bn")
    model = glassnet.Sequential([Input((6,)), bn, Dense(8, activation="relu"), LayerNormalization(),
                                 GaussianNoise(0.05), Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    assert [w.name for w in bn.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert [w.name for w in model.non_trainable_weights] == ["moving_mean", "moving_variance"]
    history = model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # 8 epochs × 8 batches = 64 updates with momentum 0.99 from (0, 1): each epoch's batches partition
    # the data, so moving_mean ≈ (1 − 0.99⁶⁴)·mean(x) and moving_variance ≈ 0.99⁶⁴ + (1 − 0.99⁶⁴)·E[batch var]
    f = 1 - 0.99 ** 64
    mean = bn.moving_mean.numpy()
    np.testing.assert_allclose(mean, f * x.mean(0), atol=0.01 * x.std(0).max())
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.99 ** 64 + f * x.var(0) * 31 / 32, rtol=0.03)
    before = [w.numpy() for w in model.weights]
    p = model.predict(x, verbose=0)
    model.evaluate(x, y, verbose=0)
    for w, v in zip(model.weights, before):
        np.testing.assert_array_equal(w.value, v, err_msg=f"{w.path} changed during predict/evaluate")
    # predict normalises with the moving statistics, the training pass with the batch's own
    np.testing.assert_allclose(p, model.call(x, training=False), rtol=1e-6)
    bn_infer = bn(x[:32])
    np.testing.assert_allclose(bn_infer, (x[:32] - mean) / np.sqrt(bn.moving_variance.numpy() + 1e-3)
                               * bn.gamma.numpy() + bn.beta.numpy(), rtol=1e-4, atol=1e-4)
    train_out = model.forward(x, training=True)[0]
    assert not np.allclose(train_out, p, atol=1e-3)
    for w, v in zip(model.weights, before):  # (the training-mode pass did move the statistics)
        if w.name == "moving_mean":
            assert not np.array_equal(w.value, v)
    # the moving statistics are saved with the model
    path = tmp_path / "bn.glassnet"
    model.save(path)
    loaded = glassnet.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
