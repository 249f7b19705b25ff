"""Utilities: seeding, one-hot encoding, legacy notices."""
import random as _random

import numpy as np

from ..engine import backend as _backend
from .legacy import set_legacy_notices


def set_random_seed(seed):
    """Seed every source of randomness glassnet uses (initializers, Dropout, shuffling, numpy, random)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"set_random_seed expects an integer seed, got {seed!r}.")
    _random.seed(int(seed))
    np.random.seed(int(seed) % 2 ** 32)
    _backend.seed_generator(int(seed))


def to_categorical(x, num_classes=None):
    """One-hot encode integer labels: shape (n,) -> (n, num_classes), float64 (as Keras 3)."""
    x = np.asarray(x)
    if x.dtype.kind == "f":
        if not np.all(x == np.round(x)):
            raise ValueError("to_categorical expects integer class labels, got non-integer values.")
    if x.ndim > 1 and x.shape[-1] == 1:
        x = x[..., 0]
    x = x.astype(np.int64)
    if x.size and x.min() < 0:
        raise ValueError(f"to_categorical expects labels >= 0, got {x.min()}.")
    if num_classes is None:
        num_classes = int(x.max()) + 1 if x.size else 0
    elif x.size and x.max() >= num_classes:
        raise ValueError(f"to_categorical got label {x.max()} but num_classes={num_classes}.")
    return np.eye(num_classes, dtype=np.float64)[x]


def normalize(x, axis=-1, order=2):
    """x divided by its L-``order`` norm along ``axis``."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, ord=order, axis=axis, keepdims=True)
    return x / np.where(norm == 0, 1, norm)


class PyDataset:
    """Base class of a dataset of batches (``keras.utils.PyDataset``; ``Sequence`` is its Keras 2 name): define
    ``__len__`` (the number of batches) and ``__getitem__(i)`` (batch i: ``(x, y)``, ``(x, y, sample_weight)`` or,
    for predict, ``x``); ``on_epoch_end()`` is called after every epoch of ``fit``. Pass an instance as ``x`` to
    ``fit``, ``evaluate`` or ``predict`` (models/sources.py). ``workers``, ``use_multiprocessing`` and
    ``max_queue_size`` are accepted for Keras code and do nothing: glassnet loads each batch in the training thread,
    in order, so results do not depend on them."""

    def __init__(self, workers=1, use_multiprocessing=False, max_queue_size=10):
        self.workers, self.use_multiprocessing, self.max_queue_size = workers, use_multiprocessing, max_queue_size

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __len__ (the number of batches).")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__(index), returning batch `index`.")

    @property
    def num_batches(self):
        return len(self)

    def on_epoch_begin(self):
        pass

    def on_epoch_end(self):
        pass


Sequence = PyDataset

__all__ = ["set_random_seed", "to_categorical", "normalize", "set_legacy_notices", "PyDataset", "Sequence"]
