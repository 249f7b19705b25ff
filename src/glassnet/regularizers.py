"""Weight penalties. Each gives the penalty and its gradient: ``penalty(w)``, ``gradient(w)``."""
import numpy as np

from .engine.registry import deserialize, register


class Regularizer:
    def __call__(self, w):
        raise NotImplementedError

    def gradient(self, w):
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@register("regularizers", "l1_l2")
class L1L2(Regularizer):
    """penalty = l1·Σ|w| + l2·Σw²;  gradient = l1·sign(w) + 2·l2·w."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, w):
        out = 0.0
        if self.l1:
            out += self.l1 * float(np.abs(w).sum())
        if self.l2:
            out += self.l2 * float(np.square(w).sum())
        return out

    def gradient(self, w):
        g = np.zeros_like(w)
        if self.l1:
            g += self.l1 * np.sign(w)
        if self.l2:
            g += (2.0 * self.l2) * w
        return g

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


@register("regularizers", "l1")
class L1(L1L2):
    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


@register("regularizers", "l2")
class L2(L1L2):
    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


l1 = L1
l2 = L2
l1_l2 = L1L2


def get(identifier):
    if identifier is None:
        return None
    if isinstance(identifier, (str, dict)):
        obj = deserialize("regularizers", identifier, "regularizer")
        return obj() if isinstance(obj, type) else obj
    if isinstance(identifier, Regularizer):
        return identifier
    raise TypeError(f"Could not interpret regularizer {identifier!r}: pass 'l1', 'l2', 'l1_l2' or a "
                    "Regularizer such as glassnet.regularizers.L2(0.01). A plain function has no gradient.")
