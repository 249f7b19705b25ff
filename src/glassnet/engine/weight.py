"""Weight: a value, its gradient, and the rules (regularizer, constraint) that apply to it."""
import numpy as np


class Weight:
    """A trainable (or not) array owned by a layer.

    ``value`` and ``grad`` may be views into one flat buffer per model (see ``engine.flat``), so
    they are always updated in place: ``w.value = x`` copies ``x`` into the existing storage.
    """

    __slots__ = ("name", "_value", "grad", "trainable", "regularizer", "constraint", "layer")

    def __init__(self, value, name, trainable=True, regularizer=None, constraint=None, layer=None):
        self.name = name
        self._value = value
        self.grad = np.zeros_like(value)
        self.trainable = trainable
        self.regularizer = regularizer
        self.constraint = constraint
        self.layer = layer

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, new):
        self.assign(new)

    def assign(self, new):
        new = np.asarray(new)
        if new.shape != self._value.shape:
            raise ValueError(
                f"Weight '{self.path}' has shape {self._value.shape}, got a value of shape {new.shape}. "
                "Pass an array of the weight's shape."
            )
        self._value[...] = new

    def numpy(self):
        return self._value.copy()

    @property
    def shape(self):
        return self._value.shape

    @property
    def dtype(self):
        return self._value.dtype

    @property
    def size(self):
        return self._value.size

    @property
    def path(self):
        return f"{self.layer.name}/{self.name}" if self.layer is not None else self.name

    def __repr__(self):
        return f"<Weight {self.path} shape={self.shape} dtype={self.dtype.name} trainable={self.trainable}>"
