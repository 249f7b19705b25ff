"""Weight: a value, its gradient, and the rules (regularizer, constraint) that apply to it."""
import numpy as np


class Weight:
    """A trainable (or not) array owned by a layer.

    ``value`` and ``grad`` may be views into one flat buffer per model (see ``engine.flat``), so
    they are always updated in place: ``w.value = x`` copies ``x`` into the existing storage.
    """

    __slots__ = ("name", "_value", "_grad", "_stale", "trainable", "regularizer", "constraint", "layer")

    def __init__(self, value, name, trainable=True, regularizer=None, constraint=None, layer=None):
        self.name = name
        self._value = value
        self._grad = np.zeros_like(value)
        self._stale = False  # True after reset_grad(): the stored gradient is old and reads as zeros
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

    # --- the gradient ----------------------------------------------------------------------------
    @property
    def grad(self):
        """dJ/dW accumulated since the last ``reset_grad()`` (backward passes add into it in place).

        Read it afresh in each step: after ``reset_grad()`` the storage holds the previous step's values until
        this property (or ``add_matmul``) zero-fills it. Training resets lazily only the weights of layers
        that declare ``lazy_grad_zeroing`` (Dense, Conv); every other weight is zeroed eagerly, so a custom
        layer that keeps a reference to its gradient array keeps working."""
        if self._stale:
            self._grad.fill(0)
            self._stale = False
        return self._grad

    @grad.setter
    def grad(self, array):  # rebinds the storage (engine.flat packs it into one vector); `+=` lands here too
        self._grad = array
        self._stale = False

    def reset_grad(self):
        """Zero the gradient, lazily: the first ``grad`` read zero-fills it, and an ``add_matmul`` before any
        read writes its product in place of the zeros (one GEMM, no temporary, no extra pass)."""
        self._stale = True

    def add_matmul(self, a, b):
        """``grad += a @ b`` — the shape of every dense weight gradient (dW = xᵀ·dz); ``a @ b`` may have the
        weight's shape or any shape of the same size in row-major order (a conv kernel as (k·C, F))."""
        g, shape = self._grad, (a.shape[0], b.shape[1])
        if self._stale:
            self._stale = False
            if g.shape != shape:
                g = g.view()
                g.shape = shape  # a view, never a copy (raises if that were impossible)
            np.matmul(a, b, out=g)
        else:
            product = a @ b
            g += product if g.shape == shape else product.reshape(g.shape)

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
