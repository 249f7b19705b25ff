"""Noise layers that regularise training: SpatialDropout1D/2D, GaussianNoise, GaussianDropout.

Each acts only when ``training=True`` (fit); at inference (predict, evaluate) it is the identity.
The random draws come from ``backend.rng()`` (seeded by ``glassnet.set_random_seed``, and per epoch by
``fit``), or from the layer's own generator when it is given a ``seed``.
"""
import math

import numpy as np

from ..engine import backend
from ..engine.layer import Layer
from ..engine.registry import register
from .core import Dropout


class _SpatialDropout(Dropout):
    """Dropout of whole channels: one Bernoulli draw per (sample, channel), shared by every step/pixel.

    training: y = x ⊙ m / (1 − rate), m ~ Bernoulli(1 − rate) of shape (batch, 1, …, 1, channels)
              broadcast over the spatial axes;  backward: dx = dy ⊙ m / (1 − rate)
    inference: y = x.  (The forward pass is Dropout's with that ``noise_shape``.)
    """

    supports_masking = True
    _rank = None

    def __init__(self, rate, data_format=None, seed=None, **kwargs):
        data_format = "channels_last" if data_format is None else str(data_format).lower()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"{type(self).__name__} expects data_format 'channels_last' or 'channels_first', got "
                             f"{data_format!r}.")
        spatial = (1,) * (self._rank - 2)
        noise_shape = (None,) + spatial + (None,) if data_format == "channels_last" else (None, None) + spatial
        super().__init__(rate, noise_shape=noise_shape, seed=seed, **kwargs)
        self.data_format = data_format

    def build(self, input_shape):
        if len(input_shape) != self._rank:
            want = "(batch, steps, channels)" if self._rank == 3 else "(batch, rows, cols, channels)"
            raise ValueError(f"{type(self).__name__} '{self.name}' expects inputs of rank {self._rank}, e.g. {want}; "
                             f"got shape {tuple(input_shape)}.")

    def get_config(self):  # Keras's keys: rate, seed, name, dtype (no noise_shape)
        return {"rate": self.rate, "seed": self.seed, "name": self.name, "dtype": self.dtype}


@register("layers")
class SpatialDropout1D(_SpatialDropout):
    """Drop whole feature maps of (batch, steps, channels) inputs; see ``_SpatialDropout`` for the math."""

    _rank = 3

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(rate, seed=seed, **kwargs)


@register("layers")
class SpatialDropout2D(_SpatialDropout):
    """Drop whole channels of images ((batch, rows, cols, channels), or channels_first); see ``_SpatialDropout``."""

    _rank = 4

    def __init__(self, rate, data_format=None, seed=None, **kwargs):
        super().__init__(rate, data_format=data_format, seed=seed, **kwargs)

    def get_config(self):
        config = super().get_config()
        config["data_format"] = self.data_format
        return config


class _Noise(Layer):
    """A layer that draws noise of the input's shape in training and is the identity at inference."""

    supports_masking = True

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self._rng = np.random.default_rng(seed) if seed is not None else None

    def _normal(self, x):
        """ε ~ N(0, 1) of x's shape and dtype."""
        return (self._rng or backend.rng()).standard_normal(x.shape).astype(x.dtype)

    def call(self, x, training=False):
        return self.forward(x, training)[0] if training else x


@register("layers")
class GaussianNoise(_Noise):
    """Additive zero-centred Gaussian noise.

    training:  y = x + σ·ε,  ε ~ N(0, 1);  backward: dx = dy.      inference: y = x.
    """

    def __init__(self, stddev, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not 0 <= stddev <= 1:
            raise ValueError(f"Invalid value received for argument `stddev`. Expected a float value between 0 and 1. "
                             f"Received: stddev={stddev}")
        self.stddev = float(stddev)

    def forward(self, x, training=False):
        if not training or self.stddev == 0:
            return x, lambda dy: dy
        return x + self._normal(x) * x.dtype.type(self.stddev), lambda dy: dy

    def get_config(self):
        config = super().get_config()
        config.update(stddev=self.stddev, seed=self.seed)
        return config


@register("layers")
class GaussianDropout(_Noise):
    """Multiplicative 1-centred Gaussian noise (the Gaussian counterpart of dropout at the same ``rate``).

    training:  y = x ⊙ g,  g = 1 + √(rate/(1 − rate))·ε,  ε ~ N(0, 1);  backward: dx = dy ⊙ g.
    inference: y = x.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"Invalid value received for argument `rate`. Expected a float value in [0, 1) (rate=1 "
                             f"would give infinite noise). Received: rate={rate}")
        self.rate = float(rate)

    def forward(self, x, training=False):
        if not training or self.rate == 0:
            return x, lambda dy: dy
        g = 1 + self._normal(x) * x.dtype.type(math.sqrt(self.rate / (1.0 - self.rate)))
        return x * g, lambda dy: dy * g

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config
