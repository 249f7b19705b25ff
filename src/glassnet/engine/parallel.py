"""Batch splitting: a training step's convolutional front runs as two half-batches on two threads.

Most of a small convnet's step outside its GEMMs is memory-bound NumPy work (im2col copies, col2im
adds, pooling, relu, bias) that runs on one core while OpenBLAS parallelises only the GEMMs, and
OpenBLAS splits the thin conv GEMMs (32 or 64 columns) poorly over its two threads. Running the
whole front of the network (its conv, pooling and activation layers) on each half of the batch in its
own thread, with BLAS on one thread per half, keeps both cores busy end to end: W3's forward and
backward pass went from 27.3 to 18.5 ms per step (benchmarks/suite.py measures the whole epoch).
NumPy's ufuncs and copies, OpenBLAS and the compiled kernels all release the GIL while they work.

How a step splits (``Sequential.forward`` with ``training=True``; ``Sequential.call`` likewise for inference;
a functional model splits the chain of calls from its one input the same way, models/splitting.py):
- the *front* is the longest run of leading layers whose forward declares ``batch_parallel`` (each
  example computed from itself alone, no state kept on the layer, weight gradients reached only through
  ``Weight.grad`` / ``Weight.add_matmul``), whose activation, if any, is ``per_example`` (every built-in
  one) and which have no activity regularizer; it must hold a trainable convolution and nearly all the
  model's work (the rest at most 1/``MAX_REST_SHARE`` of it, see models/splitting.py);
- forward: half a batch through the front here, the other half on the worker thread; the halves'
  outputs are joined and the rest of the network runs on the whole batch (so Dropout, BatchNormalization,
  losses and metrics see the batch exactly as without splitting);
- backward: the rest runs on the whole batch, its input gradient is split, and the two halves run back
  through the front at once. The worker's weight gradients go to a private array per weight
  (``Weight._twin``), added to the weight's own gradient when both halves are done.

The result equals the unsplit step up to float rounding (dW is summed as two halves: the order of the
additions differs), and is the same from run to run. It is used only when it pays: a batch of at least
``MIN_BATCH`` examples holding at least ``MIN_WORK`` multiply-adds in the front, and exactly two threads to
use (it was measured on two cores; with more, BLAS keeps its own threads on all of them). BLAS is set to
one thread for a whole epoch or call (``session``, opened by ``fit`` per epoch, ``predict``, ``evaluate`` and
the ``*_on_batch`` methods). Thread limits set by the user are respected: with ``OMP_NUM_THREADS=1``,
``OPENBLAS_NUM_THREADS=1`` or inside ``threadpoolctl``'s ``threadpool_limits(1)`` (anything that leaves BLAS
one thread), steps do not split. Knowing and setting BLAS's thread count needs threadpoolctl
(``pip install glassnet[fast]``); without it steps do not split.

Off switches: ``GLASSNET_BATCH_SPLIT=0`` in the environment, ``glassnet.engine.parallel.set_enabled(False)``,
or ``use_batch_split(False)`` as a context manager. tests/test_batch_split.py checks split steps against
unsplit ones.
"""
import contextlib
import contextvars
import os
import threading

from .backend import Switch

MIN_BATCH = 32  # below this a step is too short to pay for the hand-offs (~40 µs per step)
MIN_WORK = 1 << 24  # multiply-adds of a batch through the front (models/splitting.py): less does not pay
MAX_REST_SHARE = 8  # the layers after the front may hold at most 1/8 of the front's work

_switch = Switch("GLASSNET_BATCH_SPLIT")
_blas = None     # threadpoolctl's controllers of the loaded BLAS libraries; False when unavailable
_worker = None   # the ThreadPoolExecutor that runs the second half
_worker_id = None  # its thread's ident: ShardedWeight routes that thread's gradients to the twins
_session = None    # the ident of the thread that holds the session (see ``session``)
_lock = threading.Lock()


def enabled():
    return _switch.on


def set_enabled(flag):
    """Let training steps split over two threads (``True``, the default) or not (``False``)."""
    _switch.set(flag)


def use_batch_split(flag):
    """Within the block, training steps may split (``True``) or never do (``False``)."""
    return _switch.use(flag)


def _blas_controllers():
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
            _blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"] or False
        except Exception:  # threadpoolctl missing, or no BLAS it can control
            _blas = False
    return _blas


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def blas_threads():
    """BLAS's current thread count (the smallest over the loaded BLAS libraries), or None when unknown."""
    blas = _blas_controllers()
    if not blas:
        return None
    getters = _getters[1] if _getters[0] is blas else _thread_getters(blas)
    return getters[0]() if len(getters) == 1 else min(get() for get in getters)


_getters = (None, [])  # (the controllers, per BLAS library a function of no arguments returning its thread count)


def _thread_getters(blas):
    global _getters
    _getters = (blas, [_library_getter(c) or c.get_num_threads for c in blas])
    return _getters[1]


def _library_getter(controller):
    """OpenBLAS's own thread-count function, to call directly: threadpoolctl looks its symbol up on every call
    (~1 µs when the caches are cold, measurable on a 1-row predict, engine.gemv). None for other libraries, or
    if this threadpoolctl is not laid out as expected (its ``get_num_threads`` then serves)."""
    if type(controller).__name__ != "OpenBLASController":
        return None
    try:
        symbol = "omp_get_max_threads" if controller.threading_layer == "openmp" else "openblas_get_num_threads"
        get = controller._get_symbol(symbol)
        return get if get is not None and get() == controller.get_num_threads() else None
    except Exception:
        return None


def worthwhile(batch):
    """True when training on batches of ``batch`` examples should split: enabled, large enough, and exactly
    two threads to use — two cores available and BLAS allowed two or more threads (the user's limit says how
    many cores we may use), or two or more cores and BLAS limited to two. Splitting in two was measured
    on two cores; with more, BLAS's own threads over all of them are kept."""
    if not _switch.on or batch < MIN_BATCH:
        return False
    threads = blas_threads()
    return threads is not None and min(threads, _cores()) == 2


def status():
    """One line for ``glassnet --version``: whether convnet batches split here, and if not, why."""
    if not _switch.on:
        return "batch split off (GLASSNET_BATCH_SPLIT=0)"
    threads = blas_threads()
    if threads is None:
        try:
            import threadpoolctl  # noqa: F401
        except ImportError:
            return "batch split off (needs threadpoolctl: pip install 'glassnet[fast]')"
        return "batch split off (no BLAS whose threads threadpoolctl can set)"
    cores = _cores()
    if min(threads, cores) == 2:
        return "convnet batches split over 2 threads"
    if cores < 2:
        return "batch split off (one core)"
    if threads < 2:
        return "batch split off (BLAS limited to one thread)"
    return f"batch split off ({min(threads, cores)} threads: BLAS uses them itself)"


@contextlib.contextmanager
def session(model, batch):
    """Around an epoch of ``fit`` (or the batches of ``predict`` / ``evaluate``): when ``model`` can split its
    steps and batches of ``batch`` examples are worth it, BLAS runs on one thread per half-batch for the whole
    block (switching BLAS's thread count per step measured slower than not splitting at all: OpenBLAS re-starts
    its threads each time) and the model's steps split (``active()``). Yields whether they do. One session at
    a time in the process: another thread's meanwhile yields False."""
    global _session
    me = threading.get_ident()
    with _lock:  # one session at a time in the process (BLAS's thread count is process-wide)
        claimed = _session is None and model._splits_batches(batch) and worthwhile(batch)
        if claimed:
            _session = me
    if not claimed:
        yield False
        return
    try:
        with one_blas_thread():
            yield True
    finally:
        _session = None


def active():
    """True within a ``session`` opened by this thread."""
    return _session is not None and _session == threading.get_ident()


def worker_id():
    """The worker thread's ident (its thread is started on first use)."""
    _pool()
    return _worker_id


def _pool():
    global _worker, _worker_id
    if _worker is None:
        with _lock:
            if _worker is None:
                from concurrent.futures import ThreadPoolExecutor  # not at import: it imports logging
                pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="glassnet-batch-split")
                _worker_id = pool.submit(threading.get_ident).result()
                _worker = pool
    return _worker


@contextlib.contextmanager
def one_blas_thread():
    """BLAS on one thread for the block (each half-batch's GEMMs on its own core)."""
    blas = _blas_controllers() or []
    previous = [c.get_num_threads() for c in blas]
    for c in blas:
        c.set_num_threads(1)
    try:
        yield
    finally:
        for c, n in zip(blas, previous):
            c.set_num_threads(n)


def run_halves(fn, first, second):
    """``fn(*second)`` on the worker thread while ``fn(*first)`` runs here; returns both results. The worker
    runs in a copy of this thread's context (so ``np.errstate`` and other context variables hold there too).
    Whatever happens here — an exception in this half, Ctrl-C — this returns or raises only once the worker's
    half is done: it must not go on writing into the step's arrays afterwards. An exception from the worker's
    half is raised here."""
    future = _pool().submit(contextvars.copy_context().run, fn, *second)
    try:
        mine = fn(*first)
    except BaseException:
        _wait(future)
        raise
    _wait(future)
    return mine, future.result()


def _wait(future):
    """Wait for ``future`` to finish, through KeyboardInterrupts (re-raised once it has)."""
    from concurrent import futures
    interrupted = None
    while True:
        try:
            futures.wait([future])
            break
        except BaseException as exc:  # a Ctrl-C while waiting: the worker still holds the step's arrays
            interrupted = exc
    if interrupted is not None:
        raise interrupted


def _after_fork_in_child():
    """A forked child has no worker thread (only the forking thread survives a fork): start afresh."""
    global _worker, _worker_id, _session, _lock
    _worker = _worker_id = _session = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
