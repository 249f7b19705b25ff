"""One flat buffer per dtype for all trainable weights of a model, and one for their gradients.

Packing rebinds every Weight's ``value`` and ``grad`` to views of two contiguous vectors. Then:
- zeroing all gradients is one flag per weight (``reset_grads``; see ``Weight.reset_grad``) and, for
  the ones no backward pass touched, one ``fill(0)`` of their slice (``settle_grads``);
- an optimizer step is a handful of in-place ufunc calls over the whole model;
- data-parallel training can all-reduce one buffer.
Layers keep working on their own weights unaware of this.
"""
import numpy as np

LAZY_MIN_SIZE = 1 << 16  # gradient vectors this large are zeroed lazily (see FlatGroup.reset_grads)


class FlatGroup:
    """All weights of one dtype: ``value`` and ``grad`` vectors plus each weight's slice."""

    def __init__(self, weights):
        self.weights = list(weights)
        self.dtype = self.weights[0].dtype
        sizes = [w.size for w in self.weights]
        total = int(sum(sizes))
        self.value = np.empty(total, self.dtype)
        self.grad = np.zeros(total, self.dtype)
        self.slices = []
        self._lazy = False
        offset = 0
        for w, size in zip(self.weights, sizes):
            sl = slice(offset, offset + size)
            self.value[sl] = w.value.ravel()
            w._value = self.value[sl].reshape(w.shape)
            w.grad = self.grad[sl].reshape(w.shape)
            self.slices.append(sl)
            offset += size

    def reset_grads(self):
        """Zero every gradient before a forward/backward pass: lazily (``Weight.reset_grad``), or for a small
        model with one ``fill(0)``, which costs less than a flag per weight."""
        self._lazy = self.grad.size >= LAZY_MIN_SIZE
        if self._lazy:
            for w in self.weights:
                w._stale = True
        else:
            self.grad.fill(0)

    def settle_grads(self):
        """Zero the gradients no backward pass touched since ``reset_grads``, so that ``grad`` is the whole
        gradient vector again (call before reading ``grad`` as one vector, as optimizers do)."""
        if self._lazy:
            for w in self.weights:
                if w._stale:
                    w._grad.fill(0)
                    w._stale = False


def pack(weights):
    """Group ``weights`` by dtype into FlatGroups (order kept within a group)."""
    by_dtype = {}
    for w in weights:
        by_dtype.setdefault(w.dtype, []).append(w)
    return [FlatGroup(ws) for ws in by_dtype.values()]
