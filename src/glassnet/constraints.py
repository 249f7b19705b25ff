"""Constraints projected onto weights after each optimizer step (Keras 3 formulas)."""
import numpy as np

from .engine import backend
from .engine.registry import deserialize, register


class Constraint:
    def __call__(self, w):
        return w

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _norms(w, axis):
    return np.sqrt(np.sum(np.square(w), axis=axis, keepdims=True))


@register("constraints", "max_norm")
class MaxNorm(Constraint):
    """w ← w · clip(‖w‖, 0, max_value) / (ε + ‖w‖), norms along ``axis``."""

    def __init__(self, max_value=2, axis=0):
        self.max_value, self.axis = max_value, axis

    def __call__(self, w):
        norms = _norms(w, self.axis)
        return w * (np.clip(norms, 0, self.max_value) / (backend.epsilon() + norms))

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


@register("constraints", "non_neg")
class NonNeg(Constraint):
    """w ← w · (w ≥ 0)."""

    def __call__(self, w):
        return w * (w >= 0)


@register("constraints", "unit_norm")
class UnitNorm(Constraint):
    """w ← w / (ε + ‖w‖)."""

    def __init__(self, axis=0):
        self.axis = axis

    def __call__(self, w):
        return w / (backend.epsilon() + _norms(w, self.axis))

    def get_config(self):
        return {"axis": self.axis}


@register("constraints", "min_max_norm")
class MinMaxNorm(Constraint):
    """w ← w · (rate·clip(‖w‖, min, max) + (1−rate)·‖w‖) / (ε + ‖w‖)."""

    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        self.min_value, self.max_value, self.rate, self.axis = min_value, max_value, rate, axis

    def __call__(self, w):
        norms = _norms(w, self.axis)
        desired = self.rate * np.clip(norms, self.min_value, self.max_value) + (1 - self.rate) * norms
        return w * (desired / (backend.epsilon() + norms))

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate, "axis": self.axis}


def get(identifier):
    if identifier is None:
        return None
    if isinstance(identifier, (str, dict)):
        obj = deserialize("constraints", identifier, "constraint")
        return obj() if isinstance(obj, type) else obj
    if callable(identifier):
        return identifier
    raise TypeError(f"Could not interpret constraint {identifier!r}: pass 'max_norm', 'non_neg', "
                    "'unit_norm', 'min_max_norm' or a callable(w) -> w.")
