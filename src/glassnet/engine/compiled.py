"""The optional compiled fast path: numba kernels for the passes NumPy runs as many ufunc calls.

NumPy is the reference engine: every layer's math is written, tested and readable there. A few
passes are memory-bound chains of small ufuncs — Adam's update (a dozen passes over every parameter),
SGD's momentum update, relu's backward, max-pooling, the col2im adds of a 2-D convolution's input
gradient, a dense layer's bias + relu (and relu' + bias gradient), a classifier's softmax and
crossentropy (sparse or dense targets). With numba installed (``pip install glassnet[fast]``) these
run as one fused loop each (``_numba_kernels``), computing the same float operations on the same
elements; tests/test_compiled.py checks each against the NumPy path, and the NumPy path keeps its
own full test suite.

Off switches: ``GLASSNET_COMPILED=0`` in the environment, or ``glassnet.engine.compiled.set_enabled(False)``
(``use_compiled(False)`` as a context manager). ``import glassnet`` never imports numba: the kernels
are loaded, and compiled or read from numba's on-disk cache, on first use.

The kernels run on one thread: beside the GEMMs between them, which keep OpenBLAS's threads
busy-waiting on the other cores, numba's parallel loops measured slower (W3, benchmarks/suite.py).
"""
import numpy as np

from .backend import Switch

MIN_ELEMENTS = 4096  # below this, NumPy's few calls cost less than the numba dispatch
ROW_KERNEL_MIN = 512  # values from which the row kernels (softmax, crossentropy) beat NumPy's many small calls

_switch = Switch("GLASSNET_COMPILED")
_kernels = None  # the loaded _numba_kernels module, False when numba is missing or broken


def _load():
    global _kernels
    if _kernels is None:
        try:
            from . import _numba_kernels
            _kernels = _numba_kernels
        except Exception:  # numba absent or not importable with this NumPy: the NumPy path serves
            _kernels = False
    return _kernels


def available():
    """True when numba is importable (``pip install glassnet[fast]``)."""
    return bool(_load())


def enabled():
    """True when the compiled kernels are in use: numba is installed and they were not switched off."""
    return _switch.on and available()


def set_enabled(flag):
    """Switch the compiled kernels on or off for this process (on is a no-op without numba)."""
    _switch.set(flag)


def use_compiled(flag):
    """Within the block, the compiled kernels are on (``True``) or off (``False``, the NumPy path)."""
    return _switch.use(flag)


def kernels_for(*arrays, min_elements=MIN_ELEMENTS):
    """The kernel module when the compiled path should run on ``arrays``: enabled, float32/float64,
    C-contiguous, and large enough to pay for the call; else None (the caller runs its NumPy code)."""
    if not _switch.on:
        return None
    first = arrays[0]
    if first.size < min_elements or first.dtype.char not in "fd" or not first.dtype.isnative:
        return None  # (before loading: small arrays never import numba)
    for a in arrays:
        if a.dtype != first.dtype or not a.flags.c_contiguous:
            return None
    if _strict_errstate():
        return None  # np.errstate(... = "raise" / "call" / "log"): NumPy's checks must run
    k = _kernels if _kernels is not None else _load()
    return k or None


def _strict_errstate():
    """True when NumPy is set to raise (or call, or log) on a floating-point error: the kernels do not check
    for those, so the NumPy path runs and ``np.errstate(all="raise")`` works as it does without numba. (Under
    the default "warn" the kernels compute the same values without NumPy's RuntimeWarnings.)"""
    for mode in np.geterr().values():
        if mode != "warn" and mode != "ignore":
            return True
    return False
