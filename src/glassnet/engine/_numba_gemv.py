"""numba side of ``engine.gemv``: one row through a chain of dense layers, each layer's product split over two
threads by rows of the kernel.

The math, for one layer ``y = f(x·W + b)`` (x one row, W the kernel as stored, (inputs, units) in C
order, f relu or the identity): main sums rows [0, s) of W weighted by x (``partial``), the helper rows
[s, inputs) into a second buffer, and ``finish`` adds the two, the bias, and applies f. Each thread reads
one contiguous block of the kernel — which therefore stays in that core's L2 cache from call to call (a
split by columns would give each core every other kilobyte of each row, which maps onto half of the
cache's sets). Whichever thread computes the second block, the sums are the same: results do not depend
on timing.

The hand-over between the calling thread ("main") and the helper thread goes through a small int64
``state`` array both read and write with atomic loads, stores and compare-and-swap (LLVM's, emitted by
the intrinsics below; sequentially consistent, so engine.gemv's sleep/wake check cannot miss). For job
``seq`` (a chain of ``n`` layers):

- main writes the job table (addresses and sizes of every layer's x, W, b, out and second buffer), sets
  each layer's ``CLAIM`` to ``4·seq`` (``4·seq + 3`` for a layer too small to split, which main computes
  whole; ``4·seq + 2`` past the last layer) and publishes ``SEQ = seq``; then, layer by layer: its block;
  the second block too if it can claim it first (``CLAIM`` from ``4·seq`` to ``4·seq + 2``: the helper is
  asleep or late), else it waits for the helper's ``DONE = seq``; ``finish``; ``MINE = seq``;
- the helper, spinning on ``SEQ`` in ``helper_loop`` (never holding the GIL), claims layer by layer
  (``4·seq + 1``), waits for the layer before to be finished (``MINE``: its input), computes the second
  block and stores ``DONE = seq``; it skips layers main computes whole and stops at the first layer main
  claimed first. A claim can only succeed while main is inside the job, so the helper reads the job
  table only then.

Main never returns before every claimed block is written, so the arrays the job points at stay alive
(main holds them) and are not written after the call. Waits spin on a ``pause`` instruction and call
``sched_yield`` every ``YIELD_EVERY`` checks: if both threads share one core, the one holding it lets the
other run. Fields sit on separate cache lines. Imported only through engine.gemv.
"""
import platform

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._numba_kernels import softmax_rows

_jit = njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")

LINE = 8  # int64s per 64-byte cache line: each field of ``state`` on its own line
MAX_LAYERS = 16
SEQ, STOP, SLEEPING, HELPED = (LINE * i for i in range(4))  # HELPED: the blocks the helper computed, last job


@_jit
def CLAIM(layer):
    return LINE * (4 + layer)


@_jit
def MINE(layer):
    return LINE * (4 + MAX_LAYERS + layer)


@_jit
def DONE(layer):
    return LINE * (4 + 2 * MAX_LAYERS + layer)


TABLE = LINE * (4 + 3 * MAX_LAYERS)  # the job table: LINE fields per layer
J_X, J_W, J_PART, J_ROWS, J_COLS, J_SPLIT, J_FLAGS = range(7)
STATE_SIZE = TABLE + LINE * MAX_LAYERS
F64, RELU, BIAS, SOFTMAX, SIGMOID = 1, 2, 4, 8, 16  # FLAGS bits: float64 (else float32), the activation
# (relu, softmax or sigmoid: the last two on the chain's last layer only; none: the identity), a bias
YIELD_EVERY = 64  # spin checks between two sched_yield calls in a wait


def _element_pointer(context, builder, signature, args):
    ary = context.make_array(signature.args[0])(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, signature.args[0], ary, [args[1]])


@intrinsic
def load(typingctx, state, i):
    """``state[i]``, an atomic (sequentially consistent) load."""
    sig = types.int64(state, i)

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_element_pointer(context, builder, signature, args), "seq_cst", 8)
    return sig, codegen


@intrinsic
def store(typingctx, state, i, value):
    """``state[i] = value``, an atomic (sequentially consistent) store."""
    sig = types.void(state, i, value)

    def codegen(context, builder, signature, args):
        builder.store_atomic(args[2], _element_pointer(context, builder, signature, args), "seq_cst", 8)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def cas(typingctx, state, i, old, new):
    """Atomically: if ``state[i] == old``, set it to ``new`` and return True; else False."""
    sig = types.boolean(state, i, old, new)

    def codegen(context, builder, signature, args):
        pair = builder.cmpxchg(_element_pointer(context, builder, signature, args), args[2], args[3],
                               "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)
    return sig, codegen


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


@intrinsic
def pause(typingctx):
    """The CPU's spin-wait hint (x86 ``pause``: yields the core's pipeline to the other thread, saves power)."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def sched_yield(typingctx):
    """libc's ``sched_yield()``: let another thread waiting for this core run (resolved by name when loaded)."""
    sig = types.int32()

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        return builder.call(fn, [])
    return sig, codegen


@intrinsic
def _address(typingctx, address):
    """The int64 ``address`` as a pointer (for ``carray``, which is given the dtype)."""
    sig = types.voidptr(types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))
    return sig, codegen


@_jit
def partial(x, W, r0, r1, acc):
    """``acc = x[r0:r1] @ W[r0:r1]``: rows of W added eight at a time,
    ``acc += ((x₀W₀ + x₁W₁) + (x₂W₂ + x₃W₃)) + ((x₄W₄ + x₅W₅) + (x₆W₆ + x₇W₇))``, then the rest one by one."""
    m = W.shape[1]
    for j in range(m):
        acc[j] = 0
    r8 = r1 - (r1 - r0) % 8
    for i in range(r0, r8, 8):
        x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        x4, x5, x6, x7 = x[i + 4], x[i + 5], x[i + 6], x[i + 7]
        w0, w1, w2, w3 = W[i], W[i + 1], W[i + 2], W[i + 3]
        w4, w5, w6, w7 = W[i + 4], W[i + 5], W[i + 6], W[i + 7]
        for j in range(m):
            acc[j] += ((x0 * w0[j] + x1 * w1[j]) + (x2 * w2[j] + x3 * w3[j])) + \
                      ((x4 * w4[j] + x5 * w5[j]) + (x6 * w6[j] + x7 * w7[j]))
    for i in range(r8, r1):
        xi = x[i]
        wi = W[i]
        for j in range(m):
            acc[j] += xi * wi[j]


@_jit
def finish(out, part, b, flags, split):
    """``out = f((out + part) + b)``: the two blocks' sums (``split``; else ``out`` holds every row's), the bias
    (flags & BIAS), relu (flags & RELU: as ``np.maximum(z, 0)``, NaN stays NaN and −0.0 becomes +0.0)."""
    zero = out.dtype.type(0)
    for j in range(out.shape[0]):
        v = out[j]
        if split:
            v += part[j]
        if flags & BIAS:
            v += b[j]
        if flags & RELU:
            v = v if (v > zero or v != v) else zero
        out[j] = v


@_jit
def _spin(state, i, value, checks):
    """Wait until ``state[i] == value`` (True), checking ``checks`` times at most (False; checks < 0: no limit)."""
    k = 0
    while load(state, i) != value:
        if k == checks:
            return False
        k += 1
        pause()
        if k % YIELD_EVERY == 0:
            sched_yield()
    return True


@_jit
def _second_block(state, row, dtype):
    """The helper's block of the layer in job-table row ``row``: ``part = x[s:] @ W[s:]``."""
    n, m = load(state, row + J_ROWS), load(state, row + J_COLS)
    x = carray(_address(load(state, row + J_X)), (n,), dtype)
    W = carray(_address(load(state, row + J_W)), (n, m), dtype)
    part = carray(_address(load(state, row + J_PART)), (m,), dtype)
    partial(x, W, load(state, row + J_SPLIT), n, part)


@_jit
def helper_loop(state, last, spins):
    """The helper thread's loop: wait for a job newer than ``last`` (checking ``spins`` times), compute its
    blocks of the job's layers, repeat. Returns the last job seen once ``spins`` checks passed with no new job, or
    −1 when ``STOP`` is set."""
    while True:
        seq = last
        k = 0
        while k < spins:
            seq = load(state, SEQ)
            if seq != last or load(state, STOP) != 0:
                break
            k += 1
            pause()
            if k % YIELD_EVERY == 0:
                sched_yield()
        if load(state, STOP) != 0:
            return -1
        if seq == last:
            return last
        last = seq
        for layer in range(MAX_LAYERS):
            if not cas(state, CLAIM(layer), 4 * seq, 4 * seq + 1):
                if load(state, CLAIM(layer)) == 4 * seq + 3:
                    continue  # too narrow to split: main computes it whole
                break  # main took it (and takes the rest), or the chain ended, or job `seq` is over
            # claimed: main is inside job `seq` until our block is done, so its table holds
            row = TABLE + LINE * layer
            if layer > 0:
                _spin(state, MINE(layer - 1), seq, -1)  # our input, finished by main (which never waits on us for it)
            if load(state, row + J_FLAGS) & F64:
                _second_block(state, row, np.float64)
            else:
                _second_block(state, row, np.float32)
            store(state, DONE(layer), seq)


@_jit
def run(state, seq, x, Ws, bs, flags, splits):
    """Main: publish job ``seq`` — the chain ``Ws`` (kernels), ``bs`` (biases; ignored without the BIAS
    flag), ``flags`` and ``splits`` (the first row of the second block; the row count: not split) per
    layer — compute it with the helper, and return the last layer's output, shape (1, units)."""
    n = len(Ws)
    outs = []
    parts = []
    h = x
    for layer in range(n):  # the job table: every address the helper will read, before SEQ publishes it
        W = Ws[layer]
        out = np.empty(W.shape[1], W.dtype)
        part = np.empty(W.shape[1], W.dtype)
        outs.append(out)
        parts.append(part)
        row = TABLE + LINE * layer
        store(state, row + J_X, h.ctypes.data)
        store(state, row + J_W, W.ctypes.data)
        store(state, row + J_PART, part.ctypes.data)
        store(state, row + J_ROWS, W.shape[0])
        store(state, row + J_COLS, W.shape[1])
        store(state, row + J_SPLIT, splits[layer])
        store(state, row + J_FLAGS, flags[layer])
        store(state, CLAIM(layer), 4 * seq if splits[layer] < W.shape[0] else 4 * seq + 3)  # +3: main's, whole
        h = out
    if n < MAX_LAYERS:
        store(state, CLAIM(n), 4 * seq + 2)  # the end of the chain
    store(state, SEQ, seq)
    h = x
    helped = 0
    for layer in range(n):
        W, out, part, split = Ws[layer], outs[layer], parts[layer], splits[layer]
        partial(h, W, 0, split, out)
        if split < W.shape[0]:
            if cas(state, CLAIM(layer), 4 * seq, 4 * seq + 2):
                partial(h, W, split, W.shape[0], part)
            else:
                _spin(state, DONE(layer), seq, -1)
                helped += 1
        finish(out, part, bs[layer], flags[layer], split < W.shape[0])
        store(state, MINE(layer), seq)
        h = out
    store(state, HELPED, helped)
    y = h.reshape(1, h.shape[0])
    last = flags[n - 1]
    if last & SOFTMAX:
        return softmax_rows(y)  # (activations.softmax's formula; libm's exp)
    if last & SIGMOID:  # activations.sigmoid: ½(1 + tanh(z/2)) (libm's tanh)
        half = y.dtype.type(0.5)
        for j in range(h.shape[0]):
            h[j] = (np.tanh(h[j] * half) + 1) * half
    return y


@_jit
def spin_calibration(state, checks):
    """``checks`` idle checks as the waits make them (engine.gemv times this to turn microseconds into checks)."""
    return _spin(state, STOP, -7, checks)


@_jit
def get(state, i):
    """``state[i]`` read atomically (for engine.gemv's Python side)."""
    return load(state, i)


@_jit
def put(state, i, value):
    """``state[i] = value`` written atomically (for engine.gemv's Python side)."""
    store(state, i, value)
