"""Normalisation layers: BatchNormalization, LayerNormalization, GroupNormalization.

All three standardise slices of the input and then scale and shift them per feature:

    x̂ = (x − μ) / √(σ² + ε),   y = γ ⊙ x̂ + β

They differ only in which axes μ and σ² (biased, ÷n) are taken over: every axis but the feature
axis (BatchNormalization, over the batch), the feature axes of one sample (LayerNormalization), or
the channels of one group within one sample (GroupNormalization). ``_standardize`` below holds the
forward and backward math of x̂ once, for all three.
"""
import math

import numpy as np

from .. import constraints as _constraints
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from ..engine import backend
from ..engine.layer import Layer
from ..engine.registry import register
from .core import _ser


def _standardize(x, axes, epsilon, weights=None):
    """x̂ = (x − μ)/√(σ² + ε), with μ and σ² taken over ``axes``; returns (x̂, μ, σ², backward).

    forward:  n = Σ w,  μ = Σ w·x / n,  σ² = Σ w·(x − μ)² / n,  r = 1/√(σ² + ε),  x̂ = (x − μ)·r
              (w = 1 everywhere, so n is the number of reduced entries; a mask gives w ∈ {0, 1}, and
              then n = Σ w + 1e-7 as in Keras)
    backward: g = ∂J/∂x̂ (every entry, masked or not, was normalised with the same μ and r)
              ∂J/∂σ² = −½ r³ Σ g·(x − μ)
              ∂J/∂μ  = −r Σ g          (its path through σ² is ∝ Σ w·(x − μ) = 0, and is left out)
              dx     = r·g + (2 ∂J/∂σ²·(x − μ) + ∂J/∂μ)·w / n
    Unmasked this is the familiar  dx = r·(g − mean(g) − x̂·mean(g·x̂)).
    μ, σ² and the sums keep their reduced axes (keepdims), so they broadcast against x.
    (With a mask, Σ w·(x − μ) = μ·1e-7 rather than 0: a relative error of ~1e-7, below what matters.)
    """
    if weights is None:
        w, n = 1, math.prod(x.shape[a] for a in axes)
    else:
        w = weights
        n = w.sum(axis=axes, keepdims=True) + x.dtype.type(backend.epsilon())
    mean = (w * x).sum(axis=axes, keepdims=True) / n
    xc = x - mean
    var = (w * np.square(xc)).sum(axis=axes, keepdims=True) / n
    r = 1.0 / np.sqrt(var + x.dtype.type(epsilon))
    x_hat = xc * r

    def backward(g):
        d_var = -0.5 * r ** 3 * (g * xc).sum(axis=axes, keepdims=True)
        d_mean = -r * g.sum(axis=axes, keepdims=True)
        return r * g + (2.0 * d_var * xc + d_mean) * w / n

    return x_hat, mean, var, backward


def _positive_axis(layer, axis, rank):
    if not -rank <= axis < rank:
        raise ValueError(f"{type(layer).__name__} '{layer.name}' got axis={axis}, which is out of bounds for inputs "
                         f"of rank {rank}. Use an axis in [-{rank}, {rank - 1}], e.g. -1 for the last one.")
    return axis % rank


def _need_known(layer, input_shape, axes):
    for a in axes:
        if input_shape[a] is None:
            raise ValueError(f"{type(layer).__name__} '{layer.name}' needs axis {a} of its input to be known, got "
                             f"shape {tuple(input_shape)}. Give the model an input shape, e.g. Input((32, 8)).")


class _ScaleShift(Layer):
    """The γ (scale) and β (center) weights shared by the three layers, with Keras's arguments."""

    supports_masking = True

    def __init__(self, center=True, scale=True, beta_initializer="zeros", gamma_initializer="ones",
                 beta_regularizer=None, gamma_regularizer=None, beta_constraint=None, gamma_constraint=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = _initializers.get(beta_initializer)
        self.gamma_initializer = _initializers.get(gamma_initializer)
        self.beta_regularizer = _regularizers.get(beta_regularizer)
        self.gamma_regularizer = _regularizers.get(gamma_regularizer)
        self.beta_constraint = _constraints.get(beta_constraint)
        self.gamma_constraint = _constraints.get(gamma_constraint)
        self.gamma = self.beta = None

    def _add_gamma_beta(self, shape):
        if self.scale:
            self.gamma = self.add_weight("gamma", shape, self.gamma_initializer, self.gamma_regularizer,
                                         self.gamma_constraint)
        if self.center:
            self.beta = self.add_weight("beta", shape, self.beta_initializer, self.beta_regularizer,
                                        self.beta_constraint)

    def _scale_shift(self, x_hat, param_shape, reduce_axes):
        """y = γ ⊙ x̂ + β;  returns (y, backward) with backward(dy) -> ∂J/∂x̂ = dy ⊙ γ, adding
        ∂J/∂γ = Σ dy ⊙ x̂ and ∂J/∂β = Σ dy (summed over ``reduce_axes``) into the weight grads."""
        gamma = self.gamma.value.reshape(param_shape) if self.scale else None
        y = x_hat * gamma if self.scale else x_hat
        if self.center:
            y = y + self.beta.value.reshape(param_shape)

        def backward(dy):
            if self.scale:
                self.gamma.grad += (dy * x_hat).sum(axis=reduce_axes).reshape(self.gamma.shape)
            if self.center:
                self.beta.grad += dy.sum(axis=reduce_axes).reshape(self.beta.shape)
            return dy * gamma if self.scale else dy

        return y, backward

    def get_config(self):
        config = super().get_config()
        config.update(
            center=self.center, scale=self.scale,
            beta_initializer=_initializers.serialize(self.beta_initializer),
            gamma_initializer=_initializers.serialize(self.gamma_initializer),
            beta_regularizer=_ser(self.beta_regularizer, _regularizers),
            gamma_regularizer=_ser(self.gamma_regularizer, _regularizers),
            beta_constraint=_ser(self.beta_constraint, _constraints),
            gamma_constraint=_ser(self.gamma_constraint, _constraints))
        return config


@register("layers")
class BatchNormalization(_ScaleShift):
    """Normalise each feature (``axis``) with statistics over every other axis.

    training (``training=True`` and ``layer.trainable``), with the batch's μ_B and biased σ²_B:
        y = γ ⊙ (x − μ_B)/√(σ²_B + ε) + β
        moving_mean     ← momentum·moving_mean     + (1 − momentum)·μ_B
        moving_variance ← momentum·moving_variance + (1 − momentum)·σ²_B     (biased σ², as Keras 3)
        backward: through x̂ and the batch statistics (see ``_standardize``);  ∂γ += Σ dy⊙x̂,  ∂β += Σ dy
    inference (``training=False``, or a frozen layer, as in Keras):
        y = γ ⊙ (x − moving_mean)/√(moving_variance + ε) + β;   dx = dy ⊙ γ/√(moving_variance + ε)
    A mask (True = real data, shape = the input's without its last axis) restricts μ_B and σ²_B to the
    unmasked entries; all entries are normalised.

    ``renorm=True`` is batch renormalisation (Ioffe 2017), as Keras computes it: with the batch
    σ_B = √(σ²_B + ε) and the renorm moving statistics μ_R, σ_R (σ_R floored at √ε),
        r = clip(σ_B/σ_R, rmin, rmax),  d = clip((μ_B − μ_R)/σ_R, −dmax, dmax)   (constants for backward)
        y = γ ⊙ (x̂·r + d) + β;   ∂γ += Σ dy⊙(x̂·r + d),  ∂x̂ = dy⊙γ·r
        μ_R, σ_R ← renorm_momentum averages of μ_B, σ_B;  moving_mean, moving_stddev ← momentum
        averages of μ_B, σ_B;  moving_variance = max(moving_stddev² − ε, 0)
    """

    consumes_mask = True

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 beta_regularizer=None, gamma_regularizer=None, beta_constraint=None, gamma_constraint=None,
                 renorm=False, renorm_clipping=None, renorm_momentum=0.99, synchronized=False, **kwargs):
        super().__init__(center=center, scale=scale, beta_initializer=beta_initializer,
                         gamma_initializer=gamma_initializer, beta_regularizer=beta_regularizer,
                         gamma_regularizer=gamma_regularizer, beta_constraint=beta_constraint,
                         gamma_constraint=gamma_constraint, **kwargs)
        if isinstance(axis, (list, tuple)) or isinstance(axis, bool):
            raise TypeError(f"BatchNormalization expects `axis` to be one integer (the features axis), got "
                            f"{axis!r}. For several axes use LayerNormalization.")
        self.axis = int(axis)
        if synchronized:
            raise ValueError("Argument synchronized=True is only supported with the TensorFlow backend; glassnet "
                             "runs on one process. Use synchronized=False.")
        self.synchronized = False
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.moving_mean_initializer = _initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = _initializers.get(moving_variance_initializer)
        self.renorm = bool(renorm)
        if self.renorm:
            renorm_clipping = dict(renorm_clipping or {})
            unknown = set(renorm_clipping) - {"rmax", "rmin", "dmax"}
            if unknown:
                raise ValueError(f"Received invalid keys for `renorm_clipping` argument: {renorm_clipping}. "
                                 "Supported values: ['rmax', 'rmin', 'dmax'].")
            rmax, rmin, dmax = (renorm_clipping.get(k) for k in ("rmax", "rmin", "dmax"))
            if rmax is not None and rmin is not None and rmax < rmin:
                raise ValueError(f"rmax should be greater than rmin in the `renorm_clipping` argument. Received: "
                                 f"rmax={rmax}, rmin={rmin}.")
            if dmax is not None and dmax < 0:
                raise ValueError(f"dmax should be non-negative in the `renorm_clipping` argument. Received: "
                                 f"dmax={dmax}.")
        self.renorm_clipping = renorm_clipping
        self.renorm_momentum = float(renorm_momentum)
        self.moving_mean = self.moving_variance = None

    def build(self, input_shape):
        rank = len(input_shape)
        axis = _positive_axis(self, self.axis, rank)
        if axis == 0:
            raise ValueError(f"BatchNormalization '{self.name}' cannot use the batch axis as its features axis "
                             f"(axis={self.axis}). Use the channels axis, e.g. -1 (or 1 for channels_first).")
        _need_known(self, input_shape, [axis])
        shape = (input_shape[axis],)
        self._param_shape = tuple(input_shape[a] if a == axis else 1 for a in range(rank))
        self._reduce_axes = tuple(a for a in range(rank) if a != axis)
        self._add_gamma_beta(shape)
        self.moving_mean = self.add_weight("moving_mean", shape, self.moving_mean_initializer, trainable=False)
        self.moving_variance = self.add_weight("moving_variance", shape, self.moving_variance_initializer,
                                               trainable=False)
        if self.renorm:
            variance_init = self.moving_variance_initializer

            def stddev_init(shape, dtype=None):
                return np.sqrt(variance_init(shape, dtype=dtype))

            self.moving_stddev = self.add_weight("moving_stddev", shape, stddev_init, trainable=False)
            self.renorm_mean = self.add_weight("renorm_mean", shape, self.moving_mean_initializer, trainable=False)
            self.renorm_stddev = self.add_weight("renorm_stddev", shape, stddev_init, trainable=False)

    def compute_output_shape(self, input_shape):
        _positive_axis(self, self.axis, len(input_shape))
        return tuple(input_shape)

    def _mask_weights(self, x, mask):
        mask = np.asarray(mask)
        if mask.ndim != x.ndim - 1:
            raise ValueError(f"BatchNormalization '{self.name}': the mask should have one dimension less than the "
                             f"inputs. Received: mask.shape={mask.shape}, inputs.shape={x.shape}")
        return np.broadcast_to(mask[..., None], x.shape).astype(x.dtype)

    def forward(self, x, training=False, mask=None):
        axes, shape = self._reduce_axes, self._param_shape
        if not (training and self.trainable):
            # inference: a fixed affine map per feature
            mean = self.moving_mean.value.reshape(shape)
            r = 1.0 / np.sqrt(self.moving_variance.value.reshape(shape) + x.dtype.type(self.epsilon))
            y, scale_shift_back = self._scale_shift((x - mean) * r, shape, axes)
            return y, lambda dy: scale_shift_back(dy) * r

        weights = None if mask is None else self._mask_weights(x, mask)
        x_hat, mean, var, standardize_back = _standardize(x, axes, self.epsilon, weights)
        mean, var = mean.reshape(-1), var.reshape(-1)
        if self.renorm:
            return self._renorm_forward(x_hat, mean, var, standardize_back)
        m = self.momentum
        self.moving_mean.value[...] = self.moving_mean.value * m + mean * (1.0 - m)
        self.moving_variance.value[...] = self.moving_variance.value * m + var * (1.0 - m)
        y, scale_shift_back = self._scale_shift(x_hat, shape, axes)
        return y, lambda dy: standardize_back(scale_shift_back(dy))

    def _renorm_forward(self, x_hat, mean, var, standardize_back):
        axes, shape = self._reduce_axes, self._param_shape
        eps = self.epsilon
        stddev = np.sqrt(var + eps)
        renorm_stddev = np.maximum(self.renorm_stddev.value, np.sqrt(eps))
        r = stddev / renorm_stddev
        d = (mean - self.renorm_mean.value) / renorm_stddev
        clip = self.renorm_clipping
        if clip.get("rmin") is not None:
            r = np.maximum(r, clip["rmin"])
        if clip.get("rmax") is not None:
            r = np.minimum(r, clip["rmax"])
        if clip.get("dmax") is not None:
            d = np.clip(d, -clip["dmax"], clip["dmax"])
        # statistics updates (r and d above used the renorm statistics from before this batch)
        rm, m = self.renorm_momentum, self.momentum
        self.renorm_mean.value[...] = self.renorm_mean.value * rm + mean * (1.0 - rm)
        self.renorm_stddev.value[...] = self.renorm_stddev.value * rm + stddev * (1.0 - rm)
        self.moving_mean.value[...] = self.moving_mean.value * m + mean * (1.0 - m)
        self.moving_stddev.value[...] = self.moving_stddev.value * m + stddev * (1.0 - m)
        self.moving_variance.value[...] = np.maximum(np.square(self.moving_stddev.value) - eps, 0.0)

        r, d = r.reshape(shape).astype(x_hat.dtype), d.reshape(shape).astype(x_hat.dtype)
        y, scale_shift_back = self._scale_shift(x_hat * r + d, shape, axes)  # γ ⊙ (x̂·r + d) + β
        return y, lambda dy: standardize_back(scale_shift_back(dy) * r)

    def call(self, x, training=False, mask=None):
        return self.forward(x, training, mask)[0]

    def get_config(self):
        config = super().get_config()
        config.update(
            axis=self.axis, momentum=self.momentum, epsilon=self.epsilon,
            moving_mean_initializer=_initializers.serialize(self.moving_mean_initializer),
            moving_variance_initializer=_initializers.serialize(self.moving_variance_initializer),
            synchronized=self.synchronized, renorm=self.renorm, renorm_clipping=self.renorm_clipping,
            renorm_momentum=self.renorm_momentum)
        return config


@register("layers")
class LayerNormalization(_ScaleShift):
    """Normalise each sample over the ``axis`` axes (the features), then scale and shift per feature.

    forward:  μ, σ² over ``axis`` of one sample;  y = γ ⊙ (x − μ)/√(σ² + ε) + β  (γ, β of shape x.shape[axis])
    backward: ∂γ += Σ dy⊙x̂,  ∂β += Σ dy  (over the other axes);  dx from ∂x̂ = dy⊙γ (see ``_standardize``)
    The same in training and inference. ``rms_scaling=True`` (deprecated in Keras) is not supported.
    """

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, **kwargs):
        if kwargs.pop("rms_scaling", False):
            raise ValueError("LayerNormalization(rms_scaling=True) is deprecated in Keras (it scales by the "
                             "variance, not the root mean square) and glassnet does not support it.")
        super().__init__(center=center, scale=scale, beta_initializer=beta_initializer,
                         gamma_initializer=gamma_initializer, beta_regularizer=beta_regularizer,
                         gamma_regularizer=gamma_regularizer, beta_constraint=beta_constraint,
                         gamma_constraint=gamma_constraint, **kwargs)
        if isinstance(axis, (list, tuple)):
            self.axis = [int(a) for a in axis]
        elif isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
            self.axis = int(axis)
        else:
            raise TypeError(f"Expected an int or a list/tuple of ints for the argument 'axis', but received: "
                            f"{axis!r}")
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        rank = len(input_shape)
        axes = self.axis if isinstance(self.axis, list) else [self.axis]
        norm_axes = sorted({_positive_axis(self, a, rank) for a in axes})
        _need_known(self, input_shape, norm_axes)
        self.axis = sorted(axes)  # as Keras: a sorted list once built
        self._norm_axes = tuple(norm_axes)
        self._reduce_axes = tuple(a for a in range(rank) if a not in norm_axes)
        self._param_shape = tuple(input_shape[a] if a in norm_axes else 1 for a in range(rank))
        self._add_gamma_beta(tuple(input_shape[a] for a in norm_axes))

    def compute_output_shape(self, input_shape):
        for a in self.axis if isinstance(self.axis, list) else [self.axis]:
            _positive_axis(self, a, len(input_shape))
        return tuple(input_shape)

    def forward(self, x, training=False):
        x_hat, _, _, standardize_back = _standardize(x, self._norm_axes, self.epsilon)
        y, scale_shift_back = self._scale_shift(x_hat, self._param_shape, self._reduce_axes)
        return y, lambda dy: standardize_back(scale_shift_back(dy))

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis, epsilon=self.epsilon, rms_scaling=False)
        return config


@register("layers")
class GroupNormalization(_ScaleShift):
    """Split the channels (``axis``) into ``groups`` and normalise each group of each sample.

    forward:  view x as (…, G, C/G, …) at the channels axis; μ, σ² over one sample's group (its C/G
              channels and every other non-batch axis);  y = γ ⊙ (x − μ)/√(σ² + ε) + β, γ, β per channel
    backward: ∂γ += Σ dy⊙x̂,  ∂β += Σ dy;  dx from ∂x̂ = dy⊙γ through the group statistics (``_standardize``)
    ``groups=-1`` is one channel per group (instance normalisation); ``groups=1`` is layer normalisation
    over all non-batch axes. Channels split into contiguous groups, as in Keras and torch.
    """

    def __init__(self, groups=32, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, **kwargs):
        if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or (groups <= 0 and groups != -1):
            raise ValueError("Received an invalid value for argument `groups`, expected a positive integer (or `-1` "
                             f"for instance normalization). Received: groups={groups}")
        super().__init__(center=center, scale=scale, beta_initializer=beta_initializer,
                         gamma_initializer=gamma_initializer, beta_regularizer=beta_regularizer,
                         gamma_regularizer=gamma_regularizer, beta_constraint=beta_constraint,
                         gamma_constraint=gamma_constraint, **kwargs)
        self.groups = int(groups)
        self.axis = int(axis)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        rank = len(input_shape)
        axis = _positive_axis(self, self.axis, rank)
        if axis == 0:
            raise ValueError(f"GroupNormalization '{self.name}' cannot group the batch axis (axis={self.axis}). "
                             "Use the channels axis, e.g. -1.")
        _need_known(self, input_shape, [axis])
        dim = input_shape[axis]
        if self.groups == -1:
            self.groups = dim  # as Keras: the config then records the number of channels
        if dim < self.groups:
            raise ValueError(f"Number of groups ({self.groups}) cannot be more than the number of channels ({dim}).")
        if dim % self.groups:
            raise ValueError(f"GroupNormalization '{self.name}': the number of channels ({dim}) must be a multiple of "
                             f"the number of groups ({self.groups}). Pick groups among the divisors of {dim}.")
        self._axis = axis
        # in the grouped view (…, G, C/G, …) the group axis sits at `axis`; reduce over all others but the batch
        self._group_reduce_axes = tuple(a for a in range(1, rank + 1) if a != axis)
        self._reduce_axes = tuple(a for a in range(rank) if a != axis)
        self._param_shape = tuple(dim if a == axis else 1 for a in range(rank))
        self._add_gamma_beta((dim,))

    def compute_output_shape(self, input_shape):
        _positive_axis(self, self.axis, len(input_shape))
        return tuple(input_shape)

    def forward(self, x, training=False):
        a, g = self._axis, self.groups
        grouped = x.reshape(x.shape[:a] + (g, x.shape[a] // g) + x.shape[a + 1:])
        x_hat, _, _, standardize_back = _standardize(grouped, self._group_reduce_axes, self.epsilon)
        y, scale_shift_back = self._scale_shift(x_hat.reshape(x.shape), self._param_shape, self._reduce_axes)
        return y, lambda dy: standardize_back(scale_shift_back(dy).reshape(grouped.shape)).reshape(x.shape)

    def get_config(self):
        config = super().get_config()
        config.update(groups=self.groups, axis=self.axis, epsilon=self.epsilon)
        return config
