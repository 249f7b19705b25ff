"""One row through large dense layers on two cores (the compiled fast path of a 1-row ``predict``).

A one-row predict of a medium network is a chain of matrix-vector products bound by how fast the weights
come from memory: the 784-512-512-10 MLP reads 2.7 MB of float32 weights per row, more than one core's
L2 cache holds here (2 MB), so a one-thread product (OpenBLAS runs a matrix-vector product on one thread)
streams them from L3 on every call: ~105 µs for the three layers. Give each core a fixed block of rows of
every kernel and each block stays in its core's L2 from call to call: ~30 µs for the same products, the
whole predict 120 -> 40 µs (benchmarks/suite.py, W4; PyTorch with MKL on both cores: 50 µs).

``chain(x, layers)`` runs a row through consecutive dense layers — ``Sequential`` sends each run of Dense
layers (Dropout between them is the identity at inference) there on a 1-row call, ``Dense.call`` sends a
single large layer (functional models) — with no Python between the layers. The math is in
``_numba_gemv``: ``partial`` (one block's ``x·W``) and ``finish`` (``f(part₁ + part₂ + b)``, f relu or the
identity; a last layer's softmax or sigmoid follows, as activations computes them; any other activation
is applied after, by the layer's own function). A helper thread ("glassnet-gemv", started on first use)
computes the second block of each layer. Between calls it spins (≈ ``SPIN_US`` µs: a pause instruction
per check, a sched_yield every few dozen, no GIL held) so that back-to-back predicts find it awake — like
OpenMP's and OpenBLAS's worker threads, on a smaller budget — then sleeps on an Event. A call that finds
it asleep computes both blocks itself (each block is claimed atomically by whichever thread gets to it
first) and wakes it for the next call: a call never waits for a sleeping thread.

Results equal the NumPy path to float rounding (the sums run in another order: blocks of rows, eight rows
at a time; softmax's and sigmoid's exp and tanh are libm's) and do not depend on which thread computed a
block (tests/test_gemv.py).

Used when: numba is installed and the compiled kernels are on (engine.compiled: off under a strict
``np.errstate``), this switch is on, the process runs Linux on x86-64, the row and the kernels are float32
or float64 alike and C-contiguous, a kernel holds at least ``MIN_BYTES`` (a chain: its kernels in
all), and two threads may be used (the rule of engine.parallel: two cores or more, and BLAS not limited to
one thread by ``OMP_NUM_THREADS=1``, ``OPENBLAS_NUM_THREADS=1`` or threadpoolctl — ``glassnet serve``
limits BLAS to one thread, so a server does not use it). One call at a time uses the helper; a concurrent
one (another thread's predict) takes the NumPy path. Off switches: ``GLASSNET_ROW_SPLIT=0`` in the
environment, ``glassnet.engine.gemv.set_enabled(False)``, or ``use_row_split(False)``.
"""
import atexit
import os
import platform
import sys
import threading
import time

import numpy as np

from . import compiled, parallel
from .backend import Switch

MIN_BYTES = 1 << 20  # kernel bytes (a chain's in all) from which two cores pay (measured here: 0.5 MiB no gain;
#                      1 MiB 42 -> 36 µs a predict; the 784-512-512-10 MLP's 2.6 MiB 120 -> 40 µs)
MIN_SPLIT_VALUES = 1 << 14  # a layer of a chain with a smaller kernel is computed whole by the calling thread
SPIN_US = 200.0       # how long the helper stays awake after a job, in microseconds
MAIN_SHARE = 0.4      # the calling thread's share of each kernel's rows (it also runs the Python between calls)

_switch = Switch("GLASSNET_ROW_SPLIT")
_LINUX_X86_64 = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")  # (measured there)
_lock = threading.Lock()  # held by the call that uses the helper (non-blocking: others take the NumPy path)
_k = None                 # the _numba_gemv module; False when unavailable
_state = None             # the int64 array shared with the helper (see _numba_gemv)
_seq = 0
_thread = None
_wake = None


def enabled():
    return _switch.on


def set_enabled(flag):
    """Let 1-row products through large dense layers use two cores (``True``, the default) or not."""
    _switch.set(flag)


def use_row_split(flag):
    """Within the block, 1-row dense products may use two cores (``True``) or never do (``False``)."""
    return _switch.use(flag)


def _load():
    global _k
    if _k is None:
        _k = False
        if _LINUX_X86_64 and compiled.available():
            try:
                import numba
                if not numba.config.DISABLE_JIT:  # (NUMBA_DISABLE_JIT=1: the intrinsics cannot run as Python)
                    from . import _numba_gemv as k
                    _smoke_test(k)
                    _k = k
            except Exception:  # numba without the LLVM features the hand-over needs: the NumPy path serves
                _k = False
    return _k


def _smoke_test(k):
    """One tiny job on a private state (no helper reads it), against NumPy: compiles or loads the kernels here,
    and proves they run on this machine."""
    state = np.zeros(k.STATE_SIZE, np.int64)
    W = np.arange(24, dtype=np.float32).reshape(3, 8) / 8
    x = np.array([1, -2, 3], np.float32)
    y = k.run(state, 1, x, (W,), (np.ones(8, np.float32),), (k.RELU | k.BIAS,), (1,))
    assert np.allclose(y, np.maximum(x @ W + 1, 0)) and k.get(state, k.CLAIM(0)) == 4 + 2
    k.put(state, k.STOP, 1)
    assert k.helper_loop(state, 0, 1) == -1 and not k.spin_calibration(state, 1)  # (1 check: never -7)


def status():
    """One line for ``glassnet --version``: whether 1-row dense products use two cores here, and if not, why."""
    if not _switch.on:
        return "row split off (GLASSNET_ROW_SPLIT=0)"
    if not _LINUX_X86_64:
        return "row split off (Linux on x86-64 only)"
    if not compiled.available():
        return "row split off (needs numba: pip install 'glassnet[fast]')"
    if not compiled._switch.on:
        return "row split off (compiled kernels off)"
    threads = parallel.blas_threads()
    if threads is None:
        return "row split off (needs threadpoolctl and a BLAS it knows, to read the thread limit)"
    if not _many_cores():
        return "row split off (one core)"
    if threads < 2:
        return "row split off (BLAS limited to one thread)"
    return "1-row dense products on 2 cores" if _load() else "row split off (numba lacks what it needs here)"


def usable(x, W):
    """True when one row ``x`` through a chain starting with kernel ``W`` should use two cores: see the
    module's docstring. (``chain`` checks each layer of the chain.)"""
    if not _switch.on or not compiled._switch.on or type(x) is not np.ndarray or x.shape != (1, W.shape[0]) \
            or x.dtype != W.dtype:
        return False
    if W.dtype.char not in "fd" or not x.flags.c_contiguous:
        return False
    threads = parallel.blas_threads()  # the user's thread limit (OMP_NUM_THREADS=1, threadpool_limits(1)...)
    if threads is None or threads < 2 or not _many_cores() or compiled._strict_errstate():
        return False
    if _resume_at and time.perf_counter() < _resume_at:
        return False  # backing off: the helper did not get a core (see _missed)
    return bool(_k if _k is not None else _load())  # (numba is imported only here, past every other check)


MISSES = 4            # calls in a row in which an awake helper took no block before backing off
BACKOFF_S = (0.01, 1.0)  # the first back-off, and the longest (each one after a failed retry doubles)
_misses = 0
_resume_at = 0.0
_backoff = BACKOFF_S[0]


def _missed():
    """The helper was awake, yet this call computed every block itself: the helper is not getting a core (another
    busy thread or process holds the other one — OpenBLAS's threads spin for a while after each GEMM — or the
    scheduler put it on this call's core, where its spinning only slows the call). After ``MISSES`` such calls
    in a row, 1-row calls take the NumPy path for a while, then try again; the pause doubles each time the
    retry misses too, and starts again from the first once the helper takes part."""
    global _misses, _resume_at, _backoff
    _misses += 1
    if _misses >= MISSES:
        _misses = 0
        _resume_at = time.perf_counter() + _backoff
        _backoff = min(_backoff * 2, BACKOFF_S[1])


def chain(x, layers):
    """One row ``x`` (shape (1, inputs)) through the chain ``layers`` — ``(W, b, activation)`` per dense layer,
    b None without a bias — each layer's product split over two cores; returns the last layer's output, shape
    (1, units). Activations: relu or none for every layer, anything for the last (relu, softmax and sigmoid
    are computed in the chain, any other by ``activation(z)`` after it). None when this path cannot take them
    (another thread's call is using the helper; a kernel not C-contiguous or not of x's dtype; an activation
    other than relu or none before the last layer): the caller computes them as usual."""
    acts = _acts or _load_activations()
    k, dt, last = _k, x.dtype, len(layers) - 1
    if last >= k.MAX_LAYERS:
        return None
    Ws, bs, flags, splits = [], [], [], []
    f64 = k.F64 if dt.char == "d" else 0
    after = None
    halves = False  # some layer has a second block for the helper
    inputs = x.shape[1]
    for W, b, activation in layers:
        # (the kernels read through raw addresses, unchecked: every shape must fit the next)
        if W.dtype != dt or W.ndim != 2 or W.shape[0] != inputs:
            return None
        f = W.flags
        if not (f.c_contiguous and f.writeable):  # (read-only arrays are another type to numba: the NumPy path)
            return None
        rows, inputs = W.shape
        if b is None:
            bs.append(_empty(dt))
            flag = f64
        elif b.dtype != dt or b.shape != (inputs,) or not (b.flags.c_contiguous and b.flags.writeable):
            return None
        else:
            bs.append(b)
            flag = f64 | k.BIAS
        act = acts.get(activation)
        if act is None or act > k.RELU:  # softmax, sigmoid (computed in the chain) or another: the last layer only
            if len(Ws) != last:
                return None
            if act is None:
                act, after = 0, activation  # applied after the chain
        Ws.append(W)
        flags.append(flag | act)
        # main's rows (a multiple of 8); a small kernel stays whole on main
        split = rows if W.size < MIN_SPLIT_VALUES or rows < 16 else int(rows * MAIN_SHARE + 4) // 8 * 8
        splits.append(split)
        halves = halves or split < rows
    if not _lock.acquire(blocking=False):
        return None
    try:
        if _thread is None and not _start():
            return None
        global _seq, _misses, _backoff
        _seq += 1
        row = x.reshape(-1) if x.flags.writeable else x.reshape(-1).copy()  # (one type for every layer's input)
        y = k.run(_state, _seq, row, tuple(Ws), tuple(bs), tuple(flags), tuple(splits))
        # (plain reads of the state: on x86 run's last atomic store fenced them)
        if _state[k.HELPED] or not halves:
            _misses, _backoff = 0, BACKOFF_S[0]
        elif _state[k.SLEEPING]:  # it slept through this job (main did all of it): wake it for the next
            _wake.set()
        else:
            _missed()
    finally:
        _lock.release()
    return y if after is None else after(y)


_acts = None


def _load_activations():
    """activation -> its flag in the chain (0: none)."""
    global _acts
    from .. import activations as a
    _acts = {a.linear: 0, a.relu: _k.RELU, a.softmax: _k.SOFTMAX, a.sigmoid: _k.SIGMOID}
    return _acts


_cores = None


def _many_cores():
    """Two cores or more to run on (read once, at the first 1-row call through large layers: the CPU affinity of
    the thread making it — ``os.sched_getaffinity`` is a system call, too slow to make on every call)."""
    global _cores
    if _cores is None:
        _cores = parallel._cores()
    return _cores >= 2


def _empty(dt, _cache={}):
    """A 0-element stand-in for a missing bias (never read: its flag is off)."""
    e = _cache.get(dt)
    if e is None:
        e = _cache[dt] = np.zeros(0, dt)
    return e


def _start():
    """Start the helper thread (first use, or after a fork: a child has no threads but the forking one)."""
    global _state, _thread, _wake
    k = _k
    _state = np.zeros(k.STATE_SIZE, np.int64)
    _wake = threading.Event()  # (the kernels were compiled or loaded by _smoke_test, here, not in the thread)
    thread = threading.Thread(target=_helper, args=(k, _state, _wake, _spin_checks(k)), name="glassnet-gemv",
                              daemon=True)
    try:
        thread.start()
    except RuntimeError:  # can't start new thread: this call takes the NumPy path, the next one tries again
        return False
    _thread = thread
    if not _exit_hook:
        _exit_hook.append(atexit.register(stop))
    return True


_exit_hook = []


def _spin_checks(k):
    """How many idle checks make SPIN_US microseconds on this CPU (a pause instruction takes ~10 to ~150
    cycles depending on the CPU; the wait also yields the core every few dozen checks)."""
    probe = np.zeros(k.STATE_SIZE, np.int64)
    k.spin_calibration(probe, 1000)  # (warm-up)
    n, t0 = 20000, time.perf_counter()
    k.spin_calibration(probe, n)
    return max(int(SPIN_US * n / max((time.perf_counter() - t0) * 1e6, 1e-3)), 1000)


def _helper(k, state, wake, spins):
    last = k.get(state, k.SEQ)
    while True:
        last = k.helper_loop(state, last, spins)
        if last < 0:
            return  # stopped
        wake.clear()
        k.put(state, k.SLEEPING, 1)
        if k.get(state, k.SEQ) == last and not k.get(state, k.STOP):  # no job posted since: sleep
            wake.wait()
        k.put(state, k.SLEEPING, 0)


def stop():
    """Stop the helper thread (it is a daemon: this is for tests and for a clean shutdown)."""
    global _thread
    with _lock:
        if _thread is not None and _thread.is_alive():
            _k.put(_state, _k.STOP, 1)
            _wake.set()
            _thread.join()
        _thread = None


def _after_fork_in_child():
    global _thread, _lock
    _thread = None  # the helper did not survive the fork; the next call starts one
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
