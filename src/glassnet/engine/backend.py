"""The backend: float policy, random numbers, names, and the array namespace.

Everything that creates arrays or draws random numbers goes through here, so a GPU array library
can slot in later without touching the layers (Thinc's habit).
"""
import contextlib
import os
import re
import sys

import numpy as np

xp = np  # the array namespace the layers use

_FLOATX = "float32"
_EPSILON = 1e-7
_FLOAT_DTYPES = ("float16", "float32", "float64")
_rng = None  # created on first use: importing numpy.random costs ~10 ms of `import glassnet`
_name_counts = {}
_weight_budget = None  # [bytes left, source] while a model file is being loaded


class Switch:
    """A process-wide on/off setting that starts from an environment variable (``"0"`` turns it off): the off
    switches of the optional fast paths (engine.compiled, engine.parallel). ``on`` is read on hot paths."""

    __slots__ = ("on",)

    def __init__(self, env):
        self.on = os.environ.get(env, "1") != "0"

    def set(self, flag):
        self.on = bool(flag)

    @contextlib.contextmanager
    def use(self, flag):
        """Within the block, the setting is ``flag``; then what it was."""
        previous, self.on = self.on, bool(flag)
        try:
            yield
        finally:
            self.on = previous


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
    global _rng
    if _rng is None:
        _rng = np.random.default_rng()
    return _rng


def seed_generator(seed):
    global _rng
    _rng = np.random.default_rng(seed)


@contextlib.contextmanager
def using_rng(generator):
    """Within the block, initializers, Dropout and shuffling draw from ``generator``."""
    global _rng
    previous, _rng = _rng, generator
    try:
        yield generator
    finally:
        _rng = previous


def unique_name(prefix):
    """Keras-style unique names: dense, dense_1, dense_2 ..."""
    n = _name_counts.get(prefix, 0)
    _name_counts[prefix] = n + 1
    return prefix if n == 0 else f"{prefix}_{n}"


def snake_case(name):
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()  # Conv2D -> conv2d, as Keras names it


def clear_session():
    """Reset the layer-name counters (keras.backend.clear_session)."""
    _name_counts.clear()


@contextlib.contextmanager
def weight_budget(nbytes, source):
    """While loading ``source``, refuse to allocate more weight bytes than the file holds.

    A model file's architecture must match its weights exactly, so a config that asks for more is
    hostile or corrupt: it is rejected before the memory is allocated.
    """
    global _weight_budget
    previous, _weight_budget = _weight_budget, [int(nbytes), source]
    try:
        yield
    finally:
        _weight_budget = previous


def reserve_weight(shape, dtype, what):
    """Account for a new weight against the active budget (see ``weight_budget``)."""
    if _weight_budget is None:
        return
    need = int(np.prod([int(d) for d in shape], dtype=object)) * np.dtype(dtype).itemsize
    if need > _weight_budget[0]:
        raise ValueError(f"{_weight_budget[1]}: the architecture asks for weight {what} of shape {tuple(shape)} "
                         f"({need} bytes) but the file holds only {_weight_budget[0]} more bytes of weights: the "
                         "config and the weights disagree (corrupt or hostile file).")
    _weight_budget[0] -= need


_allocator_tuned = False


def tune_allocator():
    """Let glibc's malloc keep freed NumPy buffers for reuse while training (Linux/glibc, once per process).

    A training step allocates and frees the same large temporaries (im2col matrices, activations,
    gradients: 1-20 MB each) every step. With glibc's defaults such buffers are often returned to the OS
    (mmap/munmap, heap trimming) and page-faulted back in on the next step, which cost ~40% of a small
    convnet's epoch (W3: 5.4 s -> 3.3 s). This sets mallopt(M_MMAP_THRESHOLD, 64 MiB) and
    mallopt(M_TRIM_THRESHOLD, 256 MiB): up to 256 MiB of freed memory stays in the process instead.
    Skipped when the user set MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ or GLASSNET_TUNE_MALLOC=0.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return
    _allocator_tuned = True
    if (not sys.platform.startswith("linux") or os.environ.get("GLASSNET_TUNE_MALLOC") == "0"
            or "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ):
        return
    try:
        import ctypes
        import platform
        if platform.libc_ver()[0] != "glibc":
            return
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 << 20)   # M_MMAP_THRESHOLD: larger blocks only are mmapped
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: free heap kept before returning memory to the OS
    except (OSError, AttributeError):
        pass
