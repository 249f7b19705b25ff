"""Batches that a Python object produces, for ``fit``, ``evaluate`` and ``predict``.

Two kinds, as Keras takes them:
- a ``keras.utils.Sequence`` / ``PyDataset``-style object: ``len(source)`` batches, ``source[i]`` the i-th, and
  ``source.on_epoch_end()`` (if it has one) called after every epoch; ``fit(shuffle=True)`` visits the batches in a
  new order each pass;
- a generator or any iterator: ``next(source)`` gives the next batch. It has no length, so ``fit`` needs
  ``steps_per_epoch`` (and ``evaluate``/``predict`` ``steps``); when it runs out, training stops (Keras:
  "Your input ran out of data").

A batch is ``(x, y)``, ``(x, y, sample_weight)`` or ``x`` alone (for ``predict``), x and y arrays, lists or dicts of
arrays as ``fit`` takes them; each batch is checked as ``fit`` checks arrays.
"""
import numpy as np


def kind(value):
    """``"sequence"``, ``"iterator"``, or None for anything else (arrays, lists, dicts, array-likes)."""
    if isinstance(value, (np.ndarray, list, tuple, dict, range, str, bytes)) or hasattr(value, "__array__") \
            or hasattr(value, "__array_interface__"):
        return None
    if hasattr(value, "__next__"):
        return "iterator"
    if hasattr(value, "__getitem__") and hasattr(value, "__len__"):
        return "sequence"
    return None


def refuse_targets(y, sample_weight, where):
    """Batches carry their own targets: ``y`` or ``sample_weight`` beside them is a mistake."""
    if y is not None or sample_weight is not None:
        raise ValueError(f"{where}() got x as a generator or Sequence of batches: they carry the targets (and sample "
                         "weights) themselves, as (x, y) or (x, y, sample_weight); do not pass y or sample_weight.")


def unpack(item, where):
    """``(x, y, sample_weight)`` of one batch: a tuple ``(x, y)`` or ``(x, y, w)``, or ``x`` alone (from a generator a
    list or dict is several inputs, not ``(x, y)``, as in Keras; a Sequence's lists are made tuples first)."""
    if isinstance(item, tuple):
        if len(item) in (2, 3):
            return item[0], item[1], item[2] if len(item) == 3 else None
        if len(item) == 1:
            return item[0], None, None
        raise ValueError(f"{where}(): each batch must be x, (x, y) or (x, y, sample_weight); got a tuple of "
                         f"{len(item)} items.")
    return item, None, None


def pass_position(epoch, steps, batches):
    """(first batch, data pass) of ``epoch`` when epochs take ``steps`` < ``batches`` batches each and go on through
    the data where the last stopped: an epoch that reaches a pass's end stops there, the next one starts a new pass
    (Keras 3's epoch iterator). The same for every epoch whatever came before (fit(initial_epoch=k) replays it)."""
    first = data_pass = 0
    for _ in range(epoch):
        first += min(steps, batches - first)
        if first >= batches:
            first, data_pass = 0, data_pass + 1
    return first, data_pass


class Source:
    """One Sequence or iterator and how many batches an epoch takes from it (``steps``)."""

    def __init__(self, source, steps, steps_name, where):
        self.source, self.kind, self.where = source, kind(source), where
        self.exhausted = False
        self._pending = None
        if self.kind == "sequence":
            try:
                self.length = len(source)
            except (TypeError, NotImplementedError) as e:
                raise ValueError(f"{where}(): the {type(source).__name__} of batches has no length ({e}); define "
                                 "__len__ (the number of batches), or pass a generator with steps.") from None
            if self.length < 1:
                raise ValueError(f"{where}(): the {type(source).__name__} holds no batches (its len() is 0).")
            self.steps = self.length if steps is None else min(steps, self.length)
        else:
            if steps is None:
                raise ValueError(f"{where}() got a generator (or iterator), which has no length: pass {steps_name}= "
                                 "(how many batches to take from it).")
            self.length, self.steps = None, steps

    def peek(self):
        """The first batch (the model is built from it) without using it up."""
        if self.kind == "sequence":
            return self.source[0]
        if self._pending is None:
            self._pending = self._next()
            if self._pending is None:
                raise ValueError(f"{self.where}(): the generator yielded no batch.")
        return self._pending

    def _next(self):
        try:
            return next(self.source)
        except StopIteration:
            self.exhausted = True
            return None

    def batches(self, epoch=0, shuffled_pass=None):
        """``(step, batch)`` of ``epoch``. A Sequence with fewer steps than batches goes on where the last epoch
        stopped (as fit does with arrays); ``shuffled_pass(p)`` gives pass p's order generator (None: in order)."""
        if self.kind == "iterator":
            for step in range(self.steps):
                item = self._pending if self._pending is not None else self._next()
                self._pending = None
                if item is None:  # ran out
                    return
                yield step, item
            return
        first, data_pass, n = 0, epoch, self.steps
        if self.steps < self.length:
            first, data_pass = pass_position(epoch, self.steps, self.length)
            n = min(self.steps, self.length - first)
        order = np.arange(self.length) if shuffled_pass is None else shuffled_pass(data_pass).permutation(self.length)
        for step in range(n):
            item = self.source[int(order[first + step])]
            yield step, tuple(item) if isinstance(item, list) else item  # ([x, y] from a PyDataset: (x, y), as Keras)
        if hasattr(self.source, "on_epoch_end"):
            self.source.on_epoch_end()
