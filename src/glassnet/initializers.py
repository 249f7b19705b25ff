"""Weight initializers with Keras 3 names, arguments and defaults."""
import math

import numpy as np

from .engine import backend
from .engine.registry import deserialize, register


def compute_fans(shape):
    """(fan_in, fan_out) as Keras computes them; for kernels of rank > 2 the receptive field counts."""
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    def __call__(self, shape, dtype=None):
        raise NotImplementedError

    def _rng(self):
        seed = getattr(self, "seed", None)
        return np.random.default_rng(seed) if seed is not None else backend.rng()

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _dtype(dtype):
    return backend.standardize_dtype(dtype)


@register("initializers", "zeros")
class Zeros(Initializer):
    def __call__(self, shape, dtype=None):
        return np.zeros(shape, _dtype(dtype))


@register("initializers", "ones")
class Ones(Initializer):
    def __call__(self, shape, dtype=None):
        return np.ones(shape, _dtype(dtype))


@register("initializers", "constant")
class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = value

    def __call__(self, shape, dtype=None):
        return np.full(shape, self.value, _dtype(dtype))

    def get_config(self):
        return {"value": self.value}


@register("initializers", "random_uniform", "uniform")
class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval, self.maxval, self.seed = minval, maxval, seed

    def __call__(self, shape, dtype=None):
        return self._rng().uniform(self.minval, self.maxval, shape).astype(_dtype(dtype))

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


@register("initializers", "random_normal", "normal")
class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev, self.seed = mean, stddev, seed

    def __call__(self, shape, dtype=None):
        return self._rng().normal(self.mean, self.stddev, shape).astype(_dtype(dtype))

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


def _truncated_normal(rng, mean, stddev, shape):
    """Normal samples redrawn until within two standard deviations of the mean."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return mean + stddev * out


@register("initializers", "truncated_normal")
class TruncatedNormal(RandomNormal):
    def __call__(self, shape, dtype=None):
        return _truncated_normal(self._rng(), self.mean, self.stddev, shape).astype(_dtype(dtype))


@register("initializers", "variance_scaling")
class VarianceScaling(Initializer):
    """Samples with variance ``scale / fan`` (fan by ``mode``), as Keras does."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        if scale <= 0:
            raise ValueError(f"VarianceScaling expects scale > 0, got {scale}.")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"VarianceScaling mode must be 'fan_in', 'fan_out' or 'fan_avg', got {mode!r}.")
        distribution = distribution.lower()
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError("VarianceScaling distribution must be 'truncated_normal', 'untruncated_normal' "
                             f"or 'uniform', got {distribution!r}.")
        self.scale, self.mode, self.distribution, self.seed = scale, mode, distribution, seed

    def __call__(self, shape, dtype=None):
        fan_in, fan_out = compute_fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        scale = self.scale / max(1.0, fan)
        rng = self._rng()
        if self.distribution == "truncated_normal":
            stddev = math.sqrt(scale) / 0.87962566103423978  # std of a unit normal truncated at ±2
            out = _truncated_normal(rng, 0.0, stddev, shape)
        elif self.distribution == "untruncated_normal":
            out = rng.normal(0.0, math.sqrt(scale), shape)
        else:
            limit = math.sqrt(3.0 * scale)
            out = rng.uniform(-limit, limit, shape)
        return out.astype(_dtype(dtype))

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, "seed": self.seed}


def _preset(name, scale, mode, distribution, aliases):
    def __init__(self, seed=None):
        VarianceScaling.__init__(self, scale, mode, distribution, seed)

    def get_config(self):
        return {"seed": self.seed}

    cls = type(name, (VarianceScaling,), {"__init__": __init__, "get_config": get_config,
                                            "__doc__": f"VarianceScaling(scale={scale}, mode={mode!r}, "
                                                       f"distribution={distribution!r})."})
    cls.__module__ = __name__
    return register("initializers", *aliases)(cls)


GlorotUniform = _preset("GlorotUniform", 1.0, "fan_avg", "uniform", ["glorot_uniform", "xavier_uniform"])
GlorotNormal = _preset("GlorotNormal", 1.0, "fan_avg", "truncated_normal", ["glorot_normal", "xavier_normal"])
HeUniform = _preset("HeUniform", 2.0, "fan_in", "uniform", ["he_uniform"])
HeNormal = _preset("HeNormal", 2.0, "fan_in", "truncated_normal", ["he_normal"])
LecunUniform = _preset("LecunUniform", 1.0, "fan_in", "uniform", ["lecun_uniform"])
LecunNormal = _preset("LecunNormal", 1.0, "fan_in", "truncated_normal", ["lecun_normal"])


@register("initializers", "orthogonal")
class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix from the QR decomposition of a normal sample, times ``gain``."""

    def __init__(self, gain=1.0, seed=None):
        self.gain, self.seed = gain, seed

    def __call__(self, shape, dtype=None):
        if len(shape) < 2:
            raise ValueError(f"Orthogonal needs a shape of rank >= 2, got {tuple(shape)}.")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = self._rng().standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return (self.gain * q.reshape(shape)).astype(_dtype(dtype))

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


@register("initializers", "identity")
class Identity(Initializer):
    def __init__(self, gain=1.0):
        self.gain = gain

    def __call__(self, shape, dtype=None):
        if len(shape) != 2:
            raise ValueError(f"Identity needs a 2-D shape, got {tuple(shape)}.")
        return (self.gain * np.eye(*shape)).astype(_dtype(dtype))

    def get_config(self):
        return {"gain": self.gain}


def get(identifier):
    """An initializer from a name ('glorot_uniform'), a config dict, an instance or a callable."""
    if identifier is None:
        return None
    if isinstance(identifier, (str, dict)):
        obj = deserialize("initializers", identifier, "initializer")
        return obj() if isinstance(obj, type) else obj
    if callable(identifier):
        return identifier
    raise TypeError(f"Could not interpret initializer {identifier!r}: pass a name such as "
                    "'glorot_uniform', an Initializer, or a callable(shape, dtype).")


def serialize(init):
    if isinstance(init, Initializer):
        return {"class_name": type(init).__name__, "config": init.get_config()}
    name = getattr(init, "__name__", None)
    if name is None:
        raise TypeError(f"Cannot serialize initializer {init!r}.")
    return name
