"""engine.blas_pool: large optimizer updates on OpenBLAS's own threads equal the one-thread kernels bit for bit."""
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest

import glassnet
from glassnet.engine import blas_pool, compiled, parallel
from glassnet.layers import Dense

from fork_util import run_in_fork

pytestmark = pytest.mark.skipif(
    not (compiled.available() and blas_pool._LINUX_X86_64 and parallel._cores() >= 2
         and (parallel.blas_threads() or 0) >= 2 and blas_pool._unusable() is None),
    reason=f"needs numba, Linux on x86-64, two cores and NumPy's OpenBLAS 0.3.x with two threads "
           f"({blas_pool._unusable() if compiled.available() else 'no numba'})")

N = blas_pool.MIN_ELEMENTS + 12_345  # not a whole number of chunks


def threads_for(n, chunk=blas_pool.CHUNK):
    """The threads a job of n elements runs on here: BLAS's (2 on a 2-core machine), at most one per chunk."""
    return min(blas_pool._threads(), -(-n // chunk))


@pytest.fixture
def submits(monkeypatch):
    """Count the jobs handed to OpenBLAS, and the threads that ran each."""
    assert blas_pool._setup(), blas_pool._why  # (its check on a small job runs before the spy)
    seen = []
    submit = blas_pool._submit

    def spy(*args):
        job = submit(*args)
        seen.append(int(job[blas_pool._pool[2].CALLS]))
        return job
    monkeypatch.setattr(blas_pool, "_submit", spy)
    return seen


def vectors(n, dtype, count, seed=0):
    rng = np.random.default_rng(seed)
    out = [rng.standard_normal(n).astype(dtype) for _ in range(count)]
    out[-1] = np.abs(out[-1])  # Adam's v (and the last one in general) nonnegative
    return out


def tiny_moments(v, dtype):
    """Put some moments just above the flush threshold and some below, so flushing changes some of them."""
    tiny = np.finfo(dtype).tiny * 2.0 ** 24
    v[::7] = tiny * 0.5
    v[3::11] = tiny * 3.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("flush", [False, True])
def test_adam_equals_the_one_thread_kernel(dtype, flush, submits):
    k = compiled._load()
    w, g, m, v = vectors(N, dtype, 4)
    tiny_moments(m, dtype)
    tiny_moments(v, dtype)
    ref = [a.copy() for a in (w, g, m, v)]
    f = np.dtype(dtype).type
    for step in range(3):
        g[:] = np.random.default_rng(step).standard_normal(N)
        ref[1][:] = g
        args = (f(0.1), f(0.001), f(0.01 / (step + 1)), f(1e-7), flush, f(np.finfo(dtype).tiny * 2.0 ** 24))
        assert blas_pool.adam_step(w, g, m, v, *args) is True
        k.adam_step(*ref, *args)
    for got, want in zip((w, g, m, v), ref):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(w, vectors(N, dtype, 4)[0])  # the weights moved
    assert submits == [threads_for(N)] * 3  # every thread was called for each job


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_equals_the_one_thread_kernel(dtype, nesterov, submits):
    k = compiled._load()
    w, g, v = vectors(N, dtype, 3)
    tiny_moments(v, dtype)
    ref = [a.copy() for a in (w, g, v)]
    f = np.dtype(dtype).type
    for step in range(2):
        args = (f(0.01), f(0.9), nesterov, step == 1, f(np.finfo(dtype).tiny * 2.0 ** 24))
        assert blas_pool.sgd_momentum_step(w, g, v, *args) is True
        k.sgd_momentum_step(*ref, *args)
    for got, want in zip((w, g, v), ref):
        np.testing.assert_array_equal(got, want)
    assert submits == [threads_for(N)] * 2


def test_each_chunk_is_taken_once():
    """A job of many small chunks: the counter ends at the chunk count and every element got exactly one step
    (SGD without momentum's effect on v: v ← 0·v − lr·g = −g with lr = 1, so w = w0 − g once, not twice)."""
    w, g, v = vectors(100_003, np.float32, 3)
    w0 = w.copy()
    one = np.float32(1)
    assert blas_pool._setup()
    k = blas_pool._pool[2]
    job = blas_pool._submit(blas_pool._pool, "SGD_MOMENTUM", (w, g, v, v), (one, np.float32(0), 0, 0, np.float32(0)),
                            False, False, 2, 1000)
    assert job[k.NEXT] == 101 and job[k.CALLS] == 2
    np.testing.assert_array_equal(w, w0 - g)
    np.testing.assert_array_equal(v, -g)


def test_small_vectors_stay_on_one_thread(submits):
    w, g, m, v = vectors(blas_pool.MIN_ELEMENTS - 1, np.float32, 4)
    f = np.float32
    assert blas_pool.adam_step(w, g, m, v, f(0.1), f(0.001), f(0.01), f(1e-7), False, f(0)) is False
    assert submits == []


def test_respects_blas_thread_limits_and_switches(submits):
    from threadpoolctl import threadpool_limits
    w, g, m, v = vectors(N, np.float32, 4)
    f = np.float32
    args = (f(0.1), f(0.001), f(0.01), f(1e-7), False, f(0))
    with threadpool_limits(1, user_api="blas"):
        assert blas_pool.adam_step(w, g, m, v, *args) is False
        assert "BLAS limited to one thread" in blas_pool.status()
    with blas_pool.use_blas_pool(False):
        assert blas_pool.adam_step(w, g, m, v, *args) is False
        assert "GLASSNET_BLAS_POOL=0" in blas_pool.status()
    with compiled.use_compiled(False):
        assert blas_pool.adam_step(w, g, m, v, *args) is False
    with np.errstate(over="raise"):  # NumPy's checks must run: the NumPy path
        assert blas_pool.adam_step(w, g, m, v, *args) is False
    assert submits == []
    assert blas_pool.adam_step(w, g, m, v, *args) is True and submits == [threads_for(N)]
    assert blas_pool.status() == f"large optimizer updates on up to {blas_pool._threads()} BLAS threads"


def test_environment_switch_and_version_line():
    code = "from glassnet.engine import blas_pool; print(blas_pool.status())"
    env = {**os.environ, "GLASSNET_BLAS_POOL": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "optimizer updates on one core (GLASSNET_BLAS_POOL=0)", out.stderr
    out = subprocess.run([sys.executable, "-m", "glassnet", "--version"], capture_output=True, text=True,
                         timeout=120)
    assert re.search(r"; large optimizer updates on up to \d+ BLAS threads\)$", out.stdout.strip()), \
        out.stdout + out.stderr


def test_picks_numpys_openblas_beside_scipys():
    """SciPy's wheel brings a second OpenBLAS; the jobs must go to the one NumPy's matmul uses."""
    pytest.importorskip("scipy.linalg")
    from threadpoolctl import ThreadpoolController
    blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    chosen = blas_pool._numpy_openblas(blas)
    assert chosen is not None
    numpy_dir = os.path.dirname(np.__file__)
    assert chosen.filepath.startswith(numpy_dir), (chosen.filepath, [c.filepath for c in blas])


def test_the_threads_share_the_chunks():
    """After a GEMM (OpenBLAS's worker spinning, as in training) a job of many chunks is shared: more than one
    thread took chunks (a worker that always came too late would leave all of them to the caller)."""
    assert blas_pool._setup()
    k = blas_pool._pool[2]
    w, g, m, v = vectors(200_000, np.float32, 4)
    a = np.ones((256, 256), np.float32)
    f = np.float32
    for attempt in range(10):  # (a busy machine may keep the worker off its core for one job)
        a @ a
        job = blas_pool._submit(blas_pool._pool, "ADAM", (w, g, m, v), (f(0.1), f(0.001), f(0.01), f(1e-7), f(0)),
                                False, False, 2, 500)
        assert job[k.NEXT] == 400 and job[k.CALLS] == 2
        if job[k.WORKED] == 2:
            break
    assert job[k.WORKED] == 2


def test_read_only_vectors_stay_on_one_thread(submits):
    """The kernel writes through raw addresses: a read-only vector (a memory map opened "r") must not go there."""
    w, g, m, v = vectors(N, np.float32, 4)
    f = np.float32
    args = (f(0.1), f(0.001), f(0.01), f(1e-7), False, f(0))
    for frozen in (w, m, v):
        frozen.setflags(write=False)
        assert blas_pool.adam_step(w, g, m, v, *args) is False
        frozen.setflags(write=True)
    g.setflags(write=False)  # read only by the rule
    assert blas_pool.adam_step(w, g, m, v, *args) is True
    assert submits == [threads_for(N)]


def test_no_job_before_the_check_has_passed(monkeypatch):
    """A caller arriving while the first-use check runs waits for it (the check runs once), and gets the
    one-thread kernel if it fails."""
    monkeypatch.setattr(blas_pool, "_pool", None)
    monkeypatch.setattr(blas_pool, "_why", None)
    started, release = threading.Event(), threading.Event()
    checks = []

    def slow_failing_check(pool):
        checks.append(pool)
        started.set()
        release.wait(30)
        return False
    monkeypatch.setattr(blas_pool, "_smoke_test", slow_failing_check)
    submitted = []
    monkeypatch.setattr(blas_pool, "_submit", lambda *a: submitted.append(a))
    first = threading.Thread(target=blas_pool._setup)
    first.start()
    assert started.wait(30)
    w, g, m, v = vectors(N, np.float32, 4)
    f = np.float32
    results = []
    second = threading.Thread(
        target=lambda: results.append(blas_pool.adam_step(w, g, m, v, f(0.1), f(0.001), f(0.01), f(1e-7), False, f(0))))
    second.start()
    second.join(0.3)
    assert second.is_alive()  # waiting for the check
    release.set()
    first.join(30)
    second.join(30)
    assert results == [False] and submitted == [] and blas_pool._pool is False and len(checks) == 1
    assert "check failed" in blas_pool._why


def test_the_first_use_check_catches_a_kernel_that_differs(monkeypatch):
    """A compiled callback whose copy of a kernel is not the current one (numba's cache is keyed on one file) is
    caught on any rule, dtype or flag: here the one-thread SGD kernel changes for float64 without Nesterov only."""
    kernels = compiled._load()
    real = kernels.sgd_momentum_step

    class Changed:
        def __getattr__(self, name):
            return getattr(kernels, name)

        @staticmethod
        def sgd_momentum_step(w, g, v, lr, mu, nesterov, flush, tiny):
            real(w, g, v, lr, mu, nesterov, flush, tiny)
            if w.dtype == np.float64 and not nesterov:
                w += v * 1e-9
    monkeypatch.setattr(compiled, "_load", lambda: Changed())
    monkeypatch.setattr(blas_pool, "_pool", None)
    monkeypatch.setattr(blas_pool, "_why", None)
    assert blas_pool._setup() is False and "check failed" in blas_pool._why


def _adam_in_child():
    w, g, m, v = vectors(N, np.float32, 4)
    f = np.float32
    return blas_pool.adam_step(w, g, m, v, f(0.1), f(0.001), f(0.01), f(1e-7), False, f(0)), w


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_while_another_thread_runs_the_check(monkeypatch):
    """The setup lock held by another thread at fork time (its first-use check running) does not block the child."""
    monkeypatch.setattr(blas_pool, "_pool", None)
    assert blas_pool._setup_lock.acquire(timeout=30)  # as a thread inside _setup would hold it
    try:
        assert run_in_fork(_adam_in_child)[0] is True
    finally:
        blas_pool._setup_lock.release()


def mlp(seed=3):
    glassnet.set_random_seed(seed)
    model = glassnet.Sequential([glassnet.Input((600,)), Dense(700, activation="relu"), Dense(10, activation="softmax")])
    assert model.count_params() >= blas_pool.MIN_ELEMENTS  # 428k parameters
    return model


@pytest.mark.parametrize("optimizer", ["adam", "sgd_momentum"])
def test_fit_equals_fit_without_the_pool(optimizer, submits):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 600)).astype(np.float32)
    y = rng.integers(0, 10, 512)
    weights = []
    for on in (True, False):
        model = mlp()
        opt = glassnet.optimizers.Adam(1e-3) if optimizer == "adam" else \
            glassnet.optimizers.SGD(0.01, momentum=0.9, nesterov=True)
        model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
        with blas_pool.use_blas_pool(on):
            model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
        weights.append(model.get_weights())
    assert submits == [threads_for(mlp().count_params())] * 16  # 8 steps an epoch, 2 epochs; none with the pool off
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child():
    """OpenBLAS starts its threads anew in a forked child; a job there runs and gives the parent's result."""
    ran, w = _adam_in_child()
    assert ran is True
    ran_child, w_child = run_in_fork(_adam_in_child)
    assert ran_child is True
    np.testing.assert_array_equal(w_child, w)
