"""Preprocessing layers that live inside the model, so a saved model takes raw features."""
import numpy as np

from ..engine import backend
from ..engine.layer import Layer
from ..engine.registry import register


@register("layers")
class Normalization(Layer):
    """Standardise features:  y = (x − μ) / max(σ, ε), with μ, σ² from ``adapt(data)`` (ddof=0).

    backward: dx = dy / max(σ, ε).  ``invert=True`` maps standardised values back: y = μ + x·max(σ, ε).
    μ and σ² are non-trainable weights, so they are saved with the model.
    """

    def __init__(self, axis=-1, mean=None, variance=None, invert=False, **kwargs):
        super().__init__(**kwargs)
        if axis is None:
            axis = ()
        self.axis = (axis,) if isinstance(axis, int) else tuple(axis)
        if (mean is None) != (variance is None):
            raise ValueError("Normalization needs both `mean` and `variance`, or neither (then call adapt()).")
        self._init_mean, self._init_variance = mean, variance
        self.invert = bool(invert)
        self.adapted = mean is not None
        self.mean = self.variance = self.count = None

    def _kept_axes(self, rank):
        kept = tuple(sorted(a % rank for a in self.axis))
        if any(a == 0 for a in kept):
            raise ValueError(f"Normalization '{self.name}' cannot keep the batch axis (axis={self.axis}).")
        return kept

    def build(self, input_shape):
        rank = len(input_shape)
        kept = self._kept_axes(rank)
        for a in kept:
            if input_shape[a] is None:
                raise ValueError(f"Normalization '{self.name}' needs axis {a} of its input to be known, got "
                                 f"shape {tuple(input_shape)}.")
        self._broadcast = tuple(input_shape[a] if a in kept else 1 for a in range(rank))
        self._broadcast = (1,) + self._broadcast[1:]
        shape = tuple(input_shape[a] for a in kept)
        self.mean = self.add_weight("mean", shape, "zeros", trainable=False)
        self.variance = self.add_weight("variance", shape, "ones", trainable=False)
        self.count = self.add_weight("count", (), "zeros", trainable=False, dtype="int64")
        if self._init_mean is not None:
            self.mean.assign(np.broadcast_to(np.asarray(self._init_mean, self.dtype), shape))
            self.variance.assign(np.broadcast_to(np.asarray(self._init_variance, self.dtype), shape))

    def adapt(self, data, batch_size=None, steps=None):
        """Compute the mean and (population) variance of ``data`` over every axis but ``axis``."""
        data = np.asarray(data)
        if data.dtype.kind not in "fiub":
            raise TypeError(f"Normalization.adapt expects numeric data, got dtype {data.dtype}.")
        if data.ndim < 2 or data.shape[0] == 0:
            raise ValueError(f"Normalization.adapt expects a batch of samples (rank >= 2, at least one row), "
                             f"got shape {data.shape}.")
        data = data.astype(np.float64)
        if not np.isfinite(data).all():
            raise ValueError("Normalization.adapt got NaN or Inf values; clean or impute the data first.")
        if not self.built:
            self._maybe_build((None,) + data.shape[1:])
        kept = self._kept_axes(data.ndim)
        reduce = tuple(a for a in range(data.ndim) if a not in kept)
        self.mean.assign(data.mean(axis=reduce))
        self.variance.assign(data.var(axis=reduce))
        self.count.assign(np.asarray(int(np.prod([data.shape[a] for a in reduce]))))
        self.adapted = True

    def _stats(self):
        if not self.adapted:
            raise ValueError(f"Normalization '{self.name}' has no statistics yet: call "
                             f"layer.adapt(x_train) before training or predicting, or pass mean= and variance=.")
        mean = self.mean.value.reshape(self._broadcast)
        std = np.maximum(np.sqrt(self.variance.value), backend.epsilon()).reshape(self._broadcast)
        return mean, std

    def forward(self, x, training=False):
        mean, std = self._stats()
        if self.invert:
            return mean + x * std, lambda dy: dy * std
        return (x - mean) / std, lambda dy: dy / std

    def call(self, x, training=False):
        mean, std = self._stats()
        return mean + x * std if self.invert else (x - mean) / std

    def set_weights(self, weights):
        super().set_weights(weights)
        self.adapted = True

    def get_config(self):
        config = super().get_config()
        config.update(axis=list(self.axis), invert=self.invert,
                      mean=None if self._init_mean is None else np.asarray(self._init_mean).tolist(),
                      variance=None if self._init_variance is None else np.asarray(self._init_variance).tolist())
        return config
