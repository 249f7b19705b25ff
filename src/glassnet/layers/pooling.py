"""Pooling layers: max and average over sliding windows, and their global (whole-input) versions.

Keras's arguments, defaults and ``get_config`` keys. Windows of ``pool_size`` move by ``strides``
(default: ``pool_size``, so windows tile the input); 'same' padding is TensorFlow's (the odd element
after). The window work lives in ``engine/kernels.py``; in channels-last terms:

    max:      y[n, o, c] = max_t xp[n, o·s + t, c]        (padding never wins: it is −inf)
              dx[n, o·s + t*, c] += dy[n, o, c]           t* = the first maximum in row-major window order
    average:  y[n, o, c] = Σ_t xp[n, o·s + t, c] / count[o]   (count = real, unpadded elements: Keras)
              dx[n, o·s + t, c] += dy[n, o, c] / count[o]     for every tap t

Ties. MaxPooling routes a window's gradient to one element, its first maximum, as TensorFlow's
MaxPoolGrad, XLA's select-and-scatter (Keras on JAX) and torch's max_pool do. GlobalMaxPooling is a
plain reduction (``ops.max``), whose gradient in TensorFlow, JAX and ``torch.amax`` is split evenly among
tied maxima; glassnet does the same. With distinct values the two rules coincide.
"""
import numpy as np

from ..engine import kernels
from ..engine.layer import Layer
from ..engine.registry import register
from .conv import (check_input_rank, from_channels_last, spatial_of, standardize_data_format, standardize_padding,
                   standardize_tuple, to_channels_last)


class _Pooling(Layer):
    """Windowed max or average pooling over ``rank`` spatial axes. See the module docstring for the math."""

    rank = None
    mode = None  # "max" or "average"
    batch_parallel = True  # examples independent, no state kept: a step may split the batch (engine.parallel)

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.pool_size = standardize_tuple(pool_size, self.rank, "pool_size", owner)
        self.strides = standardize_tuple(self.pool_size if strides is None else strides, self.rank, "strides", owner)
        self.padding = standardize_padding(padding, owner)
        self.data_format = standardize_data_format(data_format, owner)

    def build(self, input_shape):
        self.compute_output_shape(input_shape)  # validates rank and sizes

    def compute_output_shape(self, input_shape):
        """'valid': floor((n − k)/s) + 1;  'same': ceil(n/s)."""
        check_input_rank(self, input_shape, self.rank)
        spatial = spatial_of(self, input_shape)
        out = []
        for n, k, s in zip(spatial, self.pool_size, self.strides):
            if n is None:
                out.append(None)
            else:
                out.append((n - k) // s + 1 if self.padding == "valid" else (n - 1) // s + 1)
        if any(o is not None and o <= 0 for o in out):
            raise ValueError(f"{type(self).__name__} '{self.name}' would produce an empty output: inputs of spatial "
                             f"shape {spatial} are smaller than pool_size={self.pool_size} with padding='valid'. "
                             "Use padding='same', a smaller pool_size, or larger inputs.")
        channels = input_shape[-1] if self.data_format == "channels_last" else input_shape[1]
        if self.data_format == "channels_last":
            return (input_shape[0],) + tuple(out) + (channels,)
        return (input_shape[0], channels) + tuple(out)

    def forward(self, x, training=False):
        x = to_channels_last(x, self.data_format)
        ones = (1,) * self.rank
        pool, strides, shape = self.pool_size, self.strides, x.shape
        pads = kernels.paddings(shape[1:-1], pool, strides, ones, self.padding)
        if self.mode == "max":
            y, xp = kernels.max_pool(x, pool, strides, pads)

            def backward_cl(dy):
                return kernels.max_pool_backward(dy, y, xp, shape, pool, strides, pads)
        else:
            y, count = kernels.avg_pool(x, pool, strides, pads)

            def backward_cl(dy):
                return kernels.avg_pool_backward(dy, count, shape, pool, strides, pads)

        def backward(dy):
            return from_channels_last(backward_cl(to_channels_last(dy, self.data_format)), self.data_format)

        return from_channels_last(y, self.data_format), backward

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=list(self.pool_size), padding=self.padding, strides=list(self.strides),
                      data_format=self.data_format)
        return config


_LEGACY_1D = {"pool_length": "pool_size", "stride": "strides", "border_mode": "padding"}
_LEGACY_2D = {"border_mode": "padding"}


@register("layers", "MaxPool1D")
class MaxPooling1D(_Pooling):
    """Max over windows of ``pool_size`` steps:  y[n, o, c] = max_t x[n, o·s + t, c];  dy goes to the argmax."""

    rank, mode = 1, "max"
    _LEGACY_KWARGS = _LEGACY_1D

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


@register("layers", "MaxPool2D")
class MaxPooling2D(_Pooling):
    """Max over ph×pw windows:  y[n, i, j, c] = max_{a,b} xp[n, i·sh + a, j·sw + b, c].

    backward: dx[n, i·sh + a*, j·sw + b*, c] += dy[n, i, j, c] at the window's first maximum (a*, b*).
    """

    rank, mode = 2, "max"
    _LEGACY_KWARGS = _LEGACY_2D

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


@register("layers", "AvgPool1D")
class AveragePooling1D(_Pooling):
    """Mean over windows of ``pool_size`` steps (padding excluded from the count);  dx += dy / count per tap."""

    rank, mode = 1, "average"
    _LEGACY_KWARGS = _LEGACY_1D

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


@register("layers", "AvgPool2D")
class AveragePooling2D(_Pooling):
    """Mean over ph×pw windows:  y[n, i, j, c] = Σ_{a,b} xp[n, i·sh + a, j·sw + b, c] / count[i, j].

    count[i, j] is the number of real (unpadded) elements in the window, as Keras computes 'same'.
    backward: dx[n, i·sh + a, j·sw + b, c] += dy[n, i, j, c] / count[i, j] for every (a, b).
    """

    rank, mode = 2, "average"
    _LEGACY_KWARGS = _LEGACY_2D

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


# --- global pooling ---------------------------------------------------------------------------------
class _GlobalPooling(Layer):
    """Max or mean over all spatial axes: (N, *S, C) -> (N, C), or (N, 1, …, 1, C) with keepdims."""

    rank = None

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = standardize_data_format(data_format, type(self).__name__)
        self.keepdims = bool(keepdims)

    def build(self, input_shape):
        check_input_rank(self, input_shape, self.rank)

    def _axes(self, ndim):
        return tuple(range(1, ndim - 1)) if self.data_format == "channels_last" else tuple(range(2, ndim))

    def compute_output_shape(self, input_shape):
        check_input_rank(self, input_shape, self.rank)
        channels_last = self.data_format == "channels_last"
        channels = input_shape[-1] if channels_last else input_shape[1]
        if not self.keepdims:
            return (input_shape[0], channels)
        ones = (1,) * self.rank
        return (input_shape[0],) + ones + (channels,) if channels_last else (input_shape[0], channels) + ones

    def _shaped(self, y_keep):
        return y_keep if self.keepdims else y_keep.reshape(y_keep.shape[0], -1)

    def get_config(self):
        config = super().get_config()
        config.update(data_format=self.data_format, keepdims=self.keepdims)
        return config


class _GlobalMaxPooling(_GlobalPooling):
    """y[n, c] = max_s x[n, s, c];  dx[n, s, c] = dy[n, c] · [x[n, s, c] = y[n, c]] / #ties (split evenly)."""

    def forward(self, x, training=False):
        axes = self._axes(x.ndim)
        y = x.max(axis=axes, keepdims=True)

        def backward(dy):
            winners = x == y
            share = dy.reshape(y.shape) / winners.sum(axis=axes, keepdims=True).astype(dy.dtype)
            return winners * share

        return self._shaped(y), backward


class _GlobalAveragePooling(_GlobalPooling):
    """y[n, c] = Σ_s x[n, s, c] / S;  dx[n, s, c] = dy[n, c] / S."""

    def forward(self, x, training=False):
        axes = self._axes(x.ndim)
        y = x.mean(axis=axes, keepdims=True)
        size = x.size // (y.size or 1)
        shape = x.shape

        def backward(dy):
            return np.broadcast_to(dy.reshape(y.shape) / x.dtype.type(size), shape).copy()

        return self._shaped(y), backward


@register("layers", "GlobalMaxPool1D")
class GlobalMaxPooling1D(_GlobalMaxPooling):
    """Max over the steps axis: (N, T, C) -> (N, C). Math: _GlobalMaxPooling."""

    rank = 1


@register("layers", "GlobalMaxPool2D")
class GlobalMaxPooling2D(_GlobalMaxPooling):
    """Max over height and width: (N, H, W, C) -> (N, C);  dy goes to the maxima (ties share it evenly)."""

    rank = 2


@register("layers", "GlobalAvgPool1D")
class GlobalAveragePooling1D(_GlobalAveragePooling):
    """Mean over the steps axis: (N, T, C) -> (N, C); with a mask (N, T), the mean of the unmasked steps.

    masked:   y[n, c] = Σ_t m[n, t]·x[n, t, c] / Σ_t m[n, t];   dx[n, t, c] = dy[n, c] · m[n, t] / Σ_t m[n, t]
    """

    rank = 1
    consumes_mask = True

    def forward(self, x, training=False, mask=None):
        if mask is None:
            return super().forward(x, training)
        step_axis = 1 if self.data_format == "channels_last" else 2
        m = np.expand_dims(np.asarray(mask, dtype=x.dtype), 3 - step_axis)   # (N, T, 1) or (N, 1, T)
        total = m.sum(axis=step_axis, keepdims=True)
        y = (x * m).sum(axis=step_axis, keepdims=True) / total

        def backward(dy):
            return dy.reshape(y.shape) * (m / total)

        return self._shaped(y), backward

    def call(self, x, training=False, mask=None):
        return self.forward(x, training, mask=mask)[0]


@register("layers", "GlobalAvgPool2D")
class GlobalAveragePooling2D(_GlobalAveragePooling):
    """Mean over height and width: (N, H, W, C) -> (N, C);  dx = dy / (H·W) at every position."""

    rank = 2


# Keras's other spellings of the same classes
MaxPool1D, MaxPool2D, AvgPool1D, AvgPool2D = MaxPooling1D, MaxPooling2D, AveragePooling1D, AveragePooling2D
GlobalMaxPool1D, GlobalMaxPool2D = GlobalMaxPooling1D, GlobalMaxPooling2D
GlobalAvgPool1D, GlobalAvgPool2D = GlobalAveragePooling1D, GlobalAveragePooling2D
