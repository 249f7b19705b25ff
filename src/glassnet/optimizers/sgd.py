"""Stochastic gradient descent with momentum and Nesterov momentum (Keras 2 = Keras 3 rules)."""
import numpy as np

from ..engine import blas_pool, compiled
from ..engine.registry import register
from .base import Optimizer, flush_threshold


@register("optimizers", "sgd")
class SGD(Optimizer):
    """v ← μ·v − lr·g;  w ← w + μ·v − lr·g (nesterov)  or  w ← w + v;  with μ = 0: w ← w − lr·g.

    Keras 2's ``SGD(lr=0.01, decay=1e-6, ...)`` is accepted: lr_t = lr / (1 + decay·iterations).
    """

    elementwise = True
    fused = True
    fused_min_size = compiled.MIN_ELEMENTS  # below: NumPy's four calls cost less than the dispatch (tutorial: 101)

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, name="SGD", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name, **kwargs)
        if not 0 <= momentum <= 1:
            raise ValueError(f"`momentum` must be a float between [0, 1], got {momentum}.")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def build_slots(self, value):
        return {"momentum": np.zeros_like(value)} if self.momentum else {}

    def update(self, w, g, slots, lr, t):
        if not self.momentum:
            w -= lr * g
            return
        v = slots["momentum"]
        v *= self.momentum
        step = lr * g
        v -= step                        # v = μv − lr·g
        if self.nesterov:
            w += self.momentum * v - step    # w = w + μv − lr·g
        else:
            w += v                       # w = w + v

    def _fused_update(self, w, g, slots, lr, t, flush):
        if not self.momentum or type(self).update is not SGD.update:
            return False
        k = compiled.kernels_for(w, g, slots["momentum"], min_elements=0)
        if k is None:
            return False
        f = w.dtype.type
        args = (w, g, slots["momentum"], lr, f(self.momentum), self.nesterov, flush, f(flush_threshold(w.dtype)))
        if not blas_pool.sgd_momentum_step(*args):  # large vectors: on BLAS's threads (engine/blas_pool.py)
            k.sgd_momentum_step(*args)
        return True

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}
