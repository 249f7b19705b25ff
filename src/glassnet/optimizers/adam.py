"""The Adam family: Adam (and AMSGrad), AdamW, Adamax, Nadam, with Keras 3's formulas."""
import math

import numpy as np

from ..engine import blas_pool, compiled
from ..engine.registry import register
from ..utils.legacy import legacy_notice
from .base import Optimizer, flush_threshold


@register("optimizers", "adam")
class Adam(Optimizer):
    """m ← m + (g − m)(1 − β₁);  v ← v + (g² − v)(1 − β₂);  α = lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ);
    w ← w − α·m / (√v + ε)   (ε outside the root: Keras's "epsilon hat"; amsgrad uses max(v̂, v))."""

    elementwise = True
    fused = True

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="adam", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name, **kwargs)
        if epsilon is None:  # Keras 2.2.4's default meant K.epsilon()
            epsilon = 1e-7
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = beta_1, beta_2, epsilon, amsgrad

    def build_slots(self, value):
        slots = {"m": np.zeros_like(value), "v": np.zeros_like(value)}
        if self.amsgrad:
            slots["v_hat"] = np.zeros_like(value)
        return slots

    def update(self, w, g, slots, lr, t):
        m, v = slots["m"], slots["v"]
        m += (g - m) * (1 - self.beta_1)
        v += (g * g - v) * (1 - self.beta_2)
        alpha = lr * math.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t)
        if self.amsgrad:
            np.maximum(slots["v_hat"], v, out=slots["v_hat"])
            v = slots["v_hat"]
        w -= alpha * m / (np.sqrt(v) + self.epsilon)

    def _fused_update(self, w, g, slots, lr, t, flush):
        if self.amsgrad or type(self).update is not Adam.update:
            return False
        k = compiled.kernels_for(w, g, slots["m"], slots["v"], min_elements=0)
        if k is None:
            return False
        f = w.dtype.type  # every scalar as the rule's NumPy code rounds it (NEP 50: Python floats are weak)
        alpha = lr * math.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t)
        args = (w, g, slots["m"], slots["v"], f(1 - self.beta_1), f(1 - self.beta_2), f(alpha), f(self.epsilon),
                flush, f(flush_threshold(w.dtype)))
        if not blas_pool.adam_step(*args):  # large vectors: on BLAS's threads (engine/blas_pool.py)
            k.adam_step(*args)
        return True

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "amsgrad": self.amsgrad}


@register("optimizers", "adamw")
class AdamW(Adam):
    """Adam with decoupled weight decay: w ← w − w·wd·lr before the Adam step (wd = 0.004 by default)."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, clipnorm=None, clipvalue=None, global_clipnorm=None, name="adamw", **kwargs):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay, clipnorm, clipvalue,
                         global_clipnorm, name, **kwargs)
        if weight_decay is None:
            raise ValueError("AdamW needs a weight_decay value (e.g. 0.004); for none, use Adam.")


@register("optimizers", "adamax")
class Adamax(Optimizer):
    """m ← m + (g − m)(1 − β₁);  u ← max(β₂·u, |g|);  w ← w − lr·m / ((1 − β₁ᵗ)(u + ε))."""

    elementwise = True

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, name="adamax", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, 1e-7 if epsilon is None else epsilon

    def build_slots(self, value):
        return {"m": np.zeros_like(value), "u": np.zeros_like(value)}

    def update(self, w, g, slots, lr, t):
        m, u = slots["m"], slots["u"]
        m += (g - m) * (1 - self.beta_1)
        np.maximum(self.beta_2 * u, np.abs(g), out=u)
        w -= lr * m / ((1 - self.beta_1 ** t) * (u + self.epsilon))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


@register("optimizers", "nadam")
class Nadam(Optimizer):
    """Adam with Nesterov momentum and Keras 3's momentum schedule μₜ = β₁(1 − ½·0.96ᵗ):
    m̂ = μₜ₊₁·m / (1 − Πμ·μₜ₊₁) + (1 − μₜ)·g / (1 − Πμ);  v̂ = v / (1 − β₂ᵗ);  w ← w − lr·m̂ / (√v̂ + ε).
    Keras 2's ``schedule_decay=s`` (default 0.004 there) gives its schedule μₜ = β₁(1 − ½·0.96^(s·t))."""

    elementwise = True

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, name="nadam", **kwargs):
        schedule_decay = kwargs.pop("schedule_decay", None)  # Keras 2 only
        if schedule_decay is not None:
            legacy_notice("Nadam(schedule_decay=...)", "Nadam() (Keras 3's schedule is 0.96^t)")
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name, **kwargs)
        self.schedule_decay = schedule_decay
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, 1e-7 if epsilon is None else epsilon
        self.u_product = 1.0

    def build_slots(self, value):
        return {"m": np.zeros_like(value), "v": np.zeros_like(value)}

    def _begin_step(self):
        t = self.iterations + 1
        s = 1.0 if self.schedule_decay is None else self.schedule_decay
        self._u_t = self.beta_1 * (1.0 - 0.5 * 0.96 ** (s * t))
        self._u_t1 = self.beta_1 * (1.0 - 0.5 * 0.96 ** (s * (t + 1)))
        self._u_product_t = self.u_product * self._u_t

    def _end_step(self):
        self.u_product = self._u_product_t

    def update(self, w, g, slots, lr, t):
        m, v = slots["m"], slots["v"]
        u_t, u_t1, u_prod = self._u_t, self._u_t1, self._u_product_t
        m += (g - m) * (1 - self.beta_1)
        v += (g * g - v) * (1 - self.beta_2)
        m_hat = u_t1 * m / (1 - u_prod * u_t1) + (1 - u_t) * g / (1 - u_prod)
        v_hat = v / (1 - self.beta_2 ** t)
        w -= lr * m_hat / (np.sqrt(v_hat) + self.epsilon)

    def variables_count(self):
        return super().variables_count() + 1

    def get_config(self):
        config = {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}
        if self.schedule_decay is not None:  # Keras 2's schedule (kept through get_config/from_config and files)
            config["schedule_decay"] = self.schedule_decay
        return config
