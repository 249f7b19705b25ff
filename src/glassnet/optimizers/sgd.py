"""Stochastic gradient descent with momentum and Nesterov momentum (Keras 2 = Keras 3 rules)."""
import numpy as np

from ..engine.registry import register
from .base import Optimizer


@register("optimizers", "sgd")
class SGD(Optimizer):
    """v ← μ·v − lr·g;  w ← w + μ·v − lr·g (nesterov)  or  w ← w + v;  with μ = 0: w ← w − lr·g.

    Keras 2's ``SGD(lr=0.01, decay=1e-6, ...)`` is accepted: lr_t = lr / (1 + decay·iterations).
    """

    elementwise = True

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

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}
