"""The backend: float policy, random numbers, names, and the array namespace.

Everything that creates arrays or draws random numbers goes through here, so a GPU array library
can slot in later without touching the layers (Thinc's habit).
"""
import re

import numpy as np

xp = np  # the array namespace the layers use

_FLOATX = "float32"
_EPSILON = 1e-7
_FLOAT_DTYPES = ("float16", "float32", "float64")
_rng = np.random.default_rng()
_name_counts = {}


def floatx():
    """The default float dtype of new layers and of input casting ("float32", like Keras)."""
    return _FLOATX


def set_floatx(value):
    """Set the default float dtype: "float32" (default) or "float64" (for gradient checks)."""
    global _FLOATX
    value = standardize_dtype(value)
    if value not in _FLOAT_DTYPES:
        raise ValueError(
            f"Unknown floatx {value!r}. Expected one of {_FLOAT_DTYPES}, e.g. set_floatx('float64')."
        )
    _FLOATX = value


def epsilon():
    """The fuzz factor Keras uses in losses and metrics (1e-7)."""
    return _EPSILON


def set_epsilon(value):
    global _EPSILON
    _EPSILON = float(value)


def standardize_dtype(dtype):
    """Return the dtype's canonical name ('float32'), or floatx() for None."""
    if dtype is None:
        return _FLOATX
    if isinstance(dtype, dict):  # a Keras DTypePolicy config
        dtype = dtype.get("config", {}).get("name", _FLOATX)
    if hasattr(dtype, "name") and not isinstance(dtype, str):
        dtype = dtype.name
    try:
        return np.dtype(dtype).name
    except TypeError:
        raise TypeError(f"Cannot interpret {dtype!r} as a dtype. Use a name such as 'float32'.") from None


def rng():
    """The generator behind initializers, Dropout and shuffling (seeded by set_random_seed)."""
    return _rng


def seed_generator(seed):
    global _rng
    _rng = np.random.default_rng(seed)


def unique_name(prefix):
    """Keras-style unique names: dense, dense_1, dense_2 ..."""
    n = _name_counts.get(prefix, 0)
    _name_counts[prefix] = n + 1
    return prefix if n == 0 else f"{prefix}_{n}"


def snake_case(name):
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def clear_session():
    """Reset the layer-name counters (keras.backend.clear_session)."""
    _name_counts.clear()
