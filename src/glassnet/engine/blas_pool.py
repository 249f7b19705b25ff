"""Large optimizer updates on OpenBLAS's own threads (``glassnet[fast]``; Linux x86-64, NumPy's OpenBLAS).

A fused optimizer step (Adam, SGD with momentum: ``engine.compiled``) over a medium network's parameters is
bound by memory: Adam reads four vectors and writes three, ~395 µs for the 668k parameters of a
784-512-512-10 MLP on one core here. A second core halves that, but not through a thread of our own: right
after the step's GEMMs OpenBLAS's worker threads busy-wait on the other cores for ~0.1 s, so a thread of ours
shares a core with one of them and runs at half speed (Adam split with a Python thread pool: 446 µs, the
half on the contended core 395 µs; with numba's parallel loops W2's epoch went 1.27 → 1.33 s). So the work is
handed to those very threads: OpenBLAS exports ``blas_level1_thread``, with which its level-1 routines
(``srot``...) spread a loop over its thread pool, calling a C function on each thread — the calling thread
included. ``_numba_pool.callback`` is that function: each call claims chunks of ``CHUNK`` elements with an
atomic counter and runs the one-thread kernel on each. A worker that is spinning — as in training, where the
update follows the step's GEMMs — takes its first chunk at once. One that is asleep (BLAS idle for ~0.1 s)
is woken by OpenBLAS, and the call returns only once it has run, even if the caller has taken every chunk
meanwhile: such a call costs a wake-up more than the one-thread kernel. Measured here (Adam after a W2 step's
GEMMs, medians of 200): 668k parameters 394–397 → 262–270 µs, 524k 316–327 → 229–237, 393k 244–255 → 194–201,
262k 166–169 → 152–155.

The result is the one-thread kernel's bit for bit (elementwise rules: each element is computed by the same
operations whichever thread takes its chunk, and OpenBLAS gives its threads the caller's floating-point
control word, flush-to-zero and rounding included — checked here with flush-to-zero set); tests/test_blas_pool.py
checks it, and that the threads shared the chunks.

Used when every one of these holds, else the one-thread kernel runs:
- the vectors have at least ``MIN_ELEMENTS`` elements, the compiled kernels would run on them
  (``compiled.kernels_for``: numba installed, not switched off, no strict ``np.errstate``), and the vectors
  the rule writes are writeable;
- Linux on x86-64 (the calling convention above), NumPy's BLAS is OpenBLAS 0.3.x with its own pthreads pool
  (not an OpenMP build) and exports ``blas_level1_thread``, which small first jobs of every rule, dtype and flag
  (checked against the one-thread kernels) show working;
- two cores or more, and BLAS allowed two threads or more: ``OMP_NUM_THREADS=1``, ``OPENBLAS_NUM_THREADS=1``,
  ``threadpoolctl.threadpool_limits(1)`` — and a convnet's split epoch (``engine.parallel``), which sets
  BLAS to one thread — keep the update on one core. It uses as many threads as BLAS is allowed, at most one
  per chunk (every thread given a job is waited for, whether or not a chunk is left for it).

Off: ``GLASSNET_BLAS_POOL=0`` in the environment, ``set_enabled(False)`` or ``use_blas_pool(False)``.
"""
import ctypes
import os
import platform
import re
import sys
import threading

import numpy as np

from . import compiled, parallel
from .backend import Switch

MIN_ELEMENTS = 3 << 17  # 393k: from here the hand-over clearly pays (-20%); at 262k it saved 8%, at 131k nothing
CHUNK = 1 << 15  # elements claimed at a time (4 vectors × 128 KB of float32 stay in a core's L2 cache)
MODE = 2  # blas_level1_thread's mode: a real (not complex) job, without BLAS_PTHREAD (the legacy calling form)


_LINUX_X86_64 = sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64")
_switch = Switch("GLASSNET_BLAS_POOL")
_pool = None  # (blas_level1_thread, the callback's address, the job layout module) once checked; False: unusable
_why = None  # why not, when _pool is False
_setup_lock = threading.Lock()
_cores = None


def enabled():
    """True unless switched off (``GLASSNET_BLAS_POOL=0``, ``set_enabled(False)``)."""
    return _switch.on


def set_enabled(flag):
    """Hand large optimizer updates to OpenBLAS's threads (``True``, where possible) or not (``False``)."""
    _switch.set(flag)


def use_blas_pool(flag):
    """Within the block, large optimizer updates go to OpenBLAS's threads (``True``) or not (``False``)."""
    return _switch.use(flag)


def status():
    """One line for ``glassnet --version``: whether large optimizer updates use BLAS's threads, and if not, why."""
    if not _switch.on:
        return "optimizer updates on one core (GLASSNET_BLAS_POOL=0)"
    if not compiled.available():
        return "optimizer updates on one core (needs numba: pip install 'glassnet[fast]')"
    if not compiled._switch.on:
        return "optimizer updates on one core (compiled kernels off)"
    if parallel.blas_threads() is None:
        return "optimizer updates on one core (needs threadpoolctl and a BLAS it knows)"
    threads = _threads()
    if threads < 2:
        return "optimizer updates on one core (one core, or BLAS limited to one thread)"
    if not _setup():
        return f"optimizer updates on one core ({_why})"
    return f"large optimizer updates on up to {threads} BLAS threads"


def adam_step(w, g, m, v, c1, c2, alpha, eps, flush, tiny):
    """``_numba_kernels.adam_step`` on OpenBLAS's threads; True if it ran there, False if the caller must run
    it (the arguments are those of the kernel, scalars already of the vectors' dtype)."""
    return _run("ADAM", (w, g, m, v), (c1, c2, alpha, eps, tiny), flush, False)


def sgd_momentum_step(w, g, v, lr, mu, nesterov, flush, tiny):
    """``_numba_kernels.sgd_momentum_step`` on OpenBLAS's threads; True if it ran there (see ``adam_step``)."""
    return _run("SGD_MOMENTUM", (w, g, v, v), (lr, mu, 0.0, 0.0, tiny), flush, nesterov)


def _threads():
    global _cores
    if _cores is None:
        _cores = parallel._cores()
    threads = parallel.blas_threads()
    return 0 if threads is None else min(threads, _cores)


def _run(kind, arrays, scalars, flush, nesterov, chunk=CHUNK):
    if not _switch.on or arrays[0].size < MIN_ELEMENTS or _pool is False:
        return False
    threads = _threads()  # (first: a BLAS limited to one thread may have no worker thread to give a job)
    if threads < 2 or compiled.kernels_for(*arrays, min_elements=0) is None or not _setup():
        return False
    if not (arrays[0].flags.writeable and all(a.flags.writeable for a in arrays[2:])):
        return False  # (the kernel writes through raw addresses: a read-only memory map would crash)
    _submit(_pool, kind, arrays, scalars, flush, nesterov, threads, chunk)
    return True


def _submit(pool, kind, arrays, scalars, flush, nesterov, threads, chunk):
    """Run one job on up to ``threads`` of OpenBLAS's threads (the caller's among them, at most one per chunk);
    returns the job vector (``_numba_pool``'s layout)."""
    level1, callback, k = pool
    job = np.zeros(k.JOB_SIZE, np.int64)
    s = np.zeros(k.N_SCALARS, np.float64)
    s[:len(scalars)] = scalars  # float32 scalars widen exactly; the callback narrows them back
    n = arrays[0].size
    chunks = -(-n // chunk)
    threads = min(threads, chunks)
    job[k.CHUNKS], job[k.CHUNK_SIZE], job[k.SIZE], job[k.KIND] = chunks, chunk, n, getattr(k, kind)
    job[k.FLUSH], job[k.NESTEROV] = bool(flush), bool(nesterov)
    job[k.A0:k.A0 + 4] = [a.__array_interface__["data"][0] for a in arrays]
    job[k.SCALARS] = s.__array_interface__["data"][0]
    address = job.__array_interface__["data"][0]
    # blas_level1_thread(mode, m, n, k, alpha, a, lda, b, ldb, c, ldc, function, threads): m = one unit per
    # thread; n tells the callback the dtype; a (= b = c) is the job; lda = ldb = 0, so every thread gets it as is.
    level1(MODE, threads, 1 if arrays[0].dtype == np.float64 else 0, 0, s.__array_interface__["data"][0], address, 0,
           address, 0, address, 0, callback, threads)
    return job


def _setup():
    """Find OpenBLAS's ``blas_level1_thread`` and check it on small jobs, once per process (the pool is published
    only once checked: a concurrent caller meanwhile waits for the check)."""
    global _pool, _why
    if _pool is not None:
        return bool(_pool)
    with _setup_lock:
        if _pool is not None:
            return bool(_pool)
        why = _unusable()
        pool = None
        if why is None:
            controller = _numpy_openblas(parallel._blas_controllers())
            try:
                from . import _numba_pool as k
                level1 = ctypes.CDLL(controller.filepath).blas_level1_thread
                level1.restype = ctypes.c_int
                level1.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                   ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                                   ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int]
                pool = (level1, k.callback.address, k)
                if not _smoke_test(pool):
                    pool, why = None, "BLAS thread pool check failed"
            except Exception as e:  # numba cannot build the callback, or the library lacks the symbol
                pool, why = None, f"BLAS thread pool unusable: {type(e).__name__}: {e}"
        _why = why
        _pool = pool or False
    return bool(_pool)


def _unusable():
    """Why OpenBLAS's pool cannot take jobs here (None if it can)."""
    if not _LINUX_X86_64:
        return "Linux on x86-64 only"
    if not compiled.available():
        return "needs numba"
    blas = parallel._blas_controllers()
    if not blas:
        return "needs threadpoolctl and a BLAS it knows"
    openblas = _numpy_openblas(blas)
    if openblas is None:
        return "NumPy's BLAS is not OpenBLAS"
    if getattr(openblas, "threading_layer", None) != "pthreads":
        return "OpenBLAS not built with its own threads (pthreads)"
    version = re.match(r"(\d+)\.(\d+)\.(\d+)", openblas.version or "")
    if not version or not ((0, 3, 10) <= tuple(map(int, version.groups())) < (0, 4, 0)):
        return f"OpenBLAS {openblas.version} not known to take jobs (0.3.10 or later 0.3.x)"
    return None


def _numpy_openblas(blas):
    """The threadpoolctl controller of the OpenBLAS that NumPy's matmul calls: the one shipped inside NumPy's
    wheel (``numpy.libs``; SciPy's, also loaded once SciPy is imported, is another copy), else the one in the
    library directory NumPy's build configuration names (a NumPy built against the system's OpenBLAS). None
    otherwise (then the feature is off)."""
    numpy_dir = os.path.dirname(os.path.abspath(np.__file__))
    openblas = [c for c in blas if c.internal_api == "openblas"]
    inside = [c for c in openblas
              if os.path.abspath(c.filepath).startswith((numpy_dir + os.sep, numpy_dir + ".libs" + os.sep))]
    if len(inside) == 1:
        return inside[0]
    lib_dir = _numpy_blas_lib_dir()  # a NumPy linked against a system OpenBLAS says where it is
    if not lib_dir:
        return None
    roots = {os.path.abspath(lib_dir) + os.sep, os.path.realpath(lib_dir) + os.sep}
    linked = [c for c in openblas if any(os.path.abspath(c.filepath).startswith(r)
                                         or os.path.realpath(c.filepath).startswith(r) for r in roots)]
    return linked[0] if len(linked) == 1 else None


def _numpy_blas_lib_dir():
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return blas.get("lib directory") if blas.get("found") else None
    except Exception:  # an older NumPy, or one that does not say
        return None


def _smoke_test(pool):
    """Small jobs (11 chunks) of every rule, dtype and flag on two threads equal the one-thread kernels' results
    bit for bit, and both threads were called. A wrong calling form shows here, and so does a stale compiled
    callback: numba's disk cache for ``_numba_pool`` is keyed on that file alone, so after an edit of
    ``_numba_kernels`` (an editable install, a branch switch) its cached copy of a kernel may be an old one —
    every branch of every kernel is run once, on values some of which the flush zeroes."""
    k = pool[2]
    kernels = compiled._load()
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        tiny = dtype(np.finfo(dtype).tiny * 2.0 ** 24)
        for kind, count, flags in (("ADAM", 4, [(flush, False) for flush in (False, True)]),
                                   ("SGD_MOMENTUM", 3, [(flush, nesterov) for flush in (False, True)
                                                        for nesterov in (False, True)])):
            for flush, nesterov in flags:
                arrays = [rng.standard_normal(2800).astype(dtype) for _ in range(count)]
                arrays[-1] = np.abs(arrays[-1])
                arrays[-1][::5] = tiny * 0.25  # with no gradient there: below the flush threshold after the step
                arrays[1][::5] = 0
                expect = [a.copy() for a in arrays]
                if kind == "ADAM":
                    scalars = [dtype(a) for a in (0.1, 0.001, 0.01, 1e-7)] + [tiny]
                    kernels.adam_step(*expect, *scalars[:4], flush, tiny)
                else:
                    scalars = [dtype(0.01), dtype(0.9), dtype(0), dtype(0), tiny]
                    kernels.sgd_momentum_step(*expect, scalars[0], scalars[1], nesterov, flush, tiny)
                job = _submit(pool, kind, tuple(arrays) + (arrays[-1],) * (4 - count), scalars, flush, nesterov, 2,
                              256)
                if not (job[k.CALLS] == 2 and job[k.NEXT] == 11 and all(map(np.array_equal, arrays, expect))):
                    return False
    return True


def _after_fork_in_child():
    """A child forked while another thread held the setup lock (during the first-use check) must not wait for
    it forever; its CPU affinity may differ, too. (OpenBLAS starts its own threads anew in the child.)"""
    global _setup_lock, _cores
    _setup_lock = threading.Lock()
    _cores = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
