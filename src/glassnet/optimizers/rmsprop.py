"""RMSprop, Adagrad and Adadelta: the adaptive rules without a first-moment bias correction."""
import numpy as np

from ..engine.registry import register
from .base import Optimizer


@register("optimizers", "rmsprop")
class RMSprop(Optimizer):
    """a ← ρa + (1 − ρ)g²;  Δ = lr·g / √(a + ε)  (centered: √(a − ḡ² + ε));
    w ← w − Δ, or with momentum: s ← μs + Δ; w ← w − s.  (Keras 2 put ε outside the root.)"""

    elementwise = True

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="rmsprop", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name, **kwargs)
        self.rho, self.momentum, self.centered = rho, momentum, centered
        self.epsilon = 1e-7 if epsilon is None else epsilon

    def build_slots(self, value):
        slots = {"velocity": np.zeros_like(value)}
        if self.momentum:
            slots["momentum"] = np.zeros_like(value)
        if self.centered:
            slots["average_gradient"] = np.zeros_like(value)
        return slots

    def update(self, w, g, slots, lr, t):
        a = slots["velocity"]
        a *= self.rho
        a += (1 - self.rho) * g * g
        if self.centered:
            mg = slots["average_gradient"]
            mg *= self.rho
            mg += (1 - self.rho) * g
            denominator = a - mg * mg + self.epsilon
        else:
            denominator = a + self.epsilon
        increment = lr * g / np.sqrt(denominator)
        if self.momentum:
            s = slots["momentum"]
            s *= self.momentum
            s += increment
            w -= s
        else:
            w -= increment

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                "centered": self.centered}


@register("optimizers", "adagrad")
class Adagrad(Optimizer):
    """acc ← acc + g²;  w ← w − lr·g / √(acc + ε)   (acc starts at initial_accumulator_value)."""

    elementwise = True

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="adagrad", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name, **kwargs)
        self.initial_accumulator_value = initial_accumulator_value
        self.epsilon = 1e-7 if epsilon is None else epsilon

    def build_slots(self, value):
        return {"accumulator": np.full_like(value, self.initial_accumulator_value)}

    def update(self, w, g, slots, lr, t):
        acc = slots["accumulator"]
        acc += g * g
        w -= lr * g / np.sqrt(acc + self.epsilon)

    def get_config(self):
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


@register("optimizers", "adadelta")
class Adadelta(Optimizer):
    """E[g²] ← ρE[g²] + (1 − ρ)g²;  Δ = −√(E[Δ²] + ε) / √(E[g²] + ε) · g;
    E[Δ²] ← ρE[Δ²] + (1 − ρ)Δ²;  w ← w + lr·Δ."""

    elementwise = True

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, name="adadelta", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name, **kwargs)
        self.rho = rho
        self.epsilon = 1e-7 if epsilon is None else epsilon

    def build_slots(self, value):
        return {"accumulated_grad": np.zeros_like(value), "accumulated_delta": np.zeros_like(value)}

    def update(self, w, g, slots, lr, t):
        eg, ed = slots["accumulated_grad"], slots["accumulated_delta"]
        eg *= self.rho
        eg += (1 - self.rho) * g * g
        delta = -np.sqrt(ed + self.epsilon) / np.sqrt(eg + self.epsilon) * g
        ed *= self.rho
        ed += (1 - self.rho) * delta * delta
        w += lr * delta

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}
