"""Weight: a value, its gradient, and the rules (regularizer, constraint) that apply to it."""
import threading

import numpy as np


class Weight:
    """A trainable (or not) array owned by a layer.

    ``value`` and ``grad`` may be views into one flat buffer per model (see ``engine.flat``), so
    they are always updated in place: ``w.value = x`` copies ``x`` into the existing storage.
    """

    __slots__ = ("name", "_value", "_grad", "_stale", "trainable", "regularizer", "constraint", "layer", "_twin")

    def __init__(self, value, name, trainable=True, regularizer=None, constraint=None, layer=None):
        self.name = name
        self._value = value
        self._grad = np.zeros_like(value)
        self._stale = False  # True after reset_grad(): the stored gradient is old and reads as zeros
        self.trainable = trainable
        self.regularizer = regularizer
        self.constraint = constraint
        self.layer = layer
        self._twin = None  # the worker thread's gradient while a batch-split step runs (ShardedWeight)

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

    def add_sum(self, a):
        """``grad += a`` summed over its first axis — a bias gradient (db = Σ_rows dz); after a lazy
        reset the sum is written straight into the storage (one reduction, no fill, no temporary)."""
        g = self._grad
        if self._stale:
            self._stale = False
            np.add.reduce(a, axis=0, out=g, dtype=a.dtype)  # summed in a's dtype, as the += below
        else:
            g += np.add.reduce(a, axis=0)

    def add(self, a):
        """``grad += a``; after a lazy reset, a copy into the storage instead of a fill and an addition."""
        if self._stale:
            self._stale = False
            np.copyto(self._grad, a)
        else:
            self._grad += a

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


class ShardedWeight(Weight):
    """A Weight while a batch-split training step runs (``engine.parallel``): the same value for every
    thread, but the gradient the worker thread reads and writes is its own (``_twin``, a plain Weight),
    added to this one's when both halves are done (``shard`` / ``unshard``). Weights become this class
    for the backward pass only (``__class__`` is switched), so a plain Weight pays nothing for it."""

    __slots__ = ()
    worker = None  # the worker thread's ident (set by engine.parallel)

    @property
    def grad(self):
        if threading.get_ident() == ShardedWeight.worker:
            return self._twin.grad
        return Weight.grad.fget(self)

    @grad.setter
    def grad(self, array):
        if threading.get_ident() == ShardedWeight.worker:
            self._twin.grad = array
        else:
            Weight.grad.fset(self, array)

    def add_matmul(self, a, b):
        if threading.get_ident() == ShardedWeight.worker:
            return self._twin.add_matmul(a, b)
        return Weight.add_matmul(self, a, b)

    def add_sum(self, a):
        if threading.get_ident() == ShardedWeight.worker:
            return self._twin.add_sum(a)
        return Weight.add_sum(self, a)

    def add(self, a):
        if threading.get_ident() == ShardedWeight.worker:
            return self._twin.add(a)
        return Weight.add(self, a)


def shard(weights, worker):
    """Give each weight a second gradient for the thread ``worker`` (zero, lazily) until ``unshard``."""
    ShardedWeight.worker = worker
    for w in weights:
        twin = w._twin
        if twin is None or twin._grad.shape != w._grad.shape or twin._grad.dtype != w._grad.dtype:
            twin = w._twin = Weight(np.zeros_like(w._grad), w.name)
        twin._stale = True
        w.__class__ = ShardedWeight


def unshard(weights):
    """Back to plain Weights, each gradient plus what the worker thread added to its twin."""
    for w in weights:
        w.__class__ = Weight
        twin = w._twin
        if not twin._stale:
            w.grad += twin._grad
            twin._stale = True  # added once, even if ``weights`` lists a (tied) weight twice
