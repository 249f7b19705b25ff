"""The compiled side of ``engine.blas_pool``: the C callback OpenBLAS's threads run, and the work it does.

OpenBLAS calls ``callback`` once per thread taking part (the calling thread included) with the job's
address as its fourth integer argument (``a`` in ``blas_level1_thread``'s legacy calling convention; on
x86-64 System V the float ``alpha`` before it travels in a vector register, so the integer arguments keep
their places whatever OpenBLAS's precision branch). Each call claims chunks of the vectors with an atomic
compare-and-swap on the job's counter until none is left, and runs the one-thread kernel of
``_numba_kernels`` on each: the same operations on the same elements, so the result does not depend on
which thread took which chunk.
"""
import numpy as np
from numba import carray, cfunc, njit, types

from . import _numba_kernels as k
from ._numba_gemv import _address, cas, load

# A job is an int64 vector: a counter of chunks taken, the chunk count and size, the vectors' length, the rule,
# its flags, a count of the threads called and of those that took a chunk, up to four vectors' addresses, and the
# address of a float64 vector of the rule's scalars — Adam: (1 − β₁, 1 − β₂, α, ε, tiny); SGD: (lr, μ, -, -, tiny).
# (Defined here, with the code that reads them, so that changing them recompiles it: numba's disk cache is
# keyed on this file.)
NEXT, CHUNKS, CHUNK_SIZE, SIZE, KIND, FLUSH, NESTEROV, CALLS, WORKED, A0, A1, A2, A3, SCALARS = range(14)
JOB_SIZE, N_SCALARS = 16, 8
ADAM, SGD_MOMENTUM = 1, 2

_jit = njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")


@_jit
def _work(job, a0, a1, a2, a3, s0, s1, s2, s3, s4):
    """Claim chunks of the job until none is left; run its rule's one-thread kernel on each."""
    chunks, chunk, n = job[CHUNKS], job[CHUNK_SIZE], job[SIZE]
    kind, flush, nesterov = job[KIND], job[FLUSH] != 0, job[NESTEROV] != 0
    worked = False
    while True:
        i = load(job, NEXT)
        if i >= chunks:
            if worked:
                _increment(job, WORKED)
            return
        if not cas(job, NEXT, i, i + 1):
            continue
        worked = True
        lo = i * chunk
        hi = min(lo + chunk, n)
        if kind == ADAM:
            k.adam_step(a0[lo:hi], a1[lo:hi], a2[lo:hi], a3[lo:hi], s0, s1, s2, s3, flush, s4)
        elif kind == SGD_MOMENTUM:
            k.sgd_momentum_step(a0[lo:hi], a1[lo:hi], a2[lo:hi], s0, s1, nesterov, flush, s4)


@_jit
def _run(job, dtype):
    n = job[SIZE]
    s = carray(_address(job[SCALARS]), N_SCALARS, np.float64)
    _work(job, carray(_address(job[A0]), n, dtype), carray(_address(job[A1]), n, dtype),
          carray(_address(job[A2]), n, dtype), carray(_address(job[A3]), n, dtype),
          dtype(s[0]), dtype(s[1]), dtype(s[2]), dtype(s[3]), dtype(s[4]))


@_jit
def _increment(job, field):
    while True:
        c = load(job, field)
        if cas(job, field, c, c + 1):
            return


@cfunc(types.void(types.int64, types.int64, types.int64, types.voidptr), cache=True, error_model="numpy")
def callback(m, n, k_, job_address):
    """What each OpenBLAS thread runs: ``n`` says the vectors' dtype (1: float64, else float32)."""
    job = carray(job_address, JOB_SIZE, np.int64)
    _increment(job, CALLS)
    if n == 1:
        _run(job, np.float64)
    else:
        _run(job, np.float32)
