"""numba versions of the hottest NumPy passes (imported only through ``engine.compiled``).

Each kernel computes what the NumPy reference it replaces computes — the same float operations on the
same elements — but in one pass over memory instead of one pass per ufunc. Where several terms add into
one element (col2im, overlapping pooling windows) the order of those additions differs from NumPy's
tap-by-tap order, so results agree to rounding there; row sums follow NumPy's pairwise order
(``_row_sum``); exp and log are libm's, a few ulp from NumPy's vectorized ones (which are themselves up
to ~3 ulp from correctly rounded in float32): softmax and the crossentropy's value. Bit for bit
everywhere else. The reference is named in each docstring; tests/test_compiled.py checks every kernel
against it. Compiled on first use and cached on disk
(``cache=True``; no kernel may be recursive: numba's cache corrupts recursive functions).

Arrays are channels-last and C-contiguous (``compiled.kernels_for`` checks).
"""
import numpy as np
from numba import njit

# One thread each (see engine.compiled): numba's parallel loops measured slower beside OpenBLAS's threads.
_jit = njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")


@_jit
def adam_step(w, g, m, v, c1, c2, alpha, eps, flush, tiny):
    """``optimizers.Adam.update`` (+ ``flush_to_zero`` of m and v when ``flush``), element by element:
    m ← m + (g − m)·c1;  v ← v + (g² − v)·c2;  w ← w − α·m / (√v + ε).  c1 = 1 − β₁, c2 = 1 − β₂."""
    for i in range(w.size):
        gi = g[i]
        mi = m[i] + (gi - m[i]) * c1
        vi = v[i] + (gi * gi - v[i]) * c2
        w[i] -= alpha * mi / (np.sqrt(vi) + eps)
        if flush:
            if abs(mi) < tiny:
                mi = 0
            if abs(vi) < tiny:
                vi = 0
        m[i] = mi
        v[i] = vi


@_jit
def sgd_momentum_step(w, g, v, lr, mu, nesterov, flush, tiny):
    """``optimizers.SGD.update`` with momentum (+ ``flush_to_zero`` of v when ``flush``), element by element:
    v ← μ·v − lr·g;  w ← w + μ·v − lr·g (nesterov) or w ← w + v."""
    for i in range(w.size):
        step = lr * g[i]
        vi = v[i] * mu - step
        if nesterov:
            w[i] += mu * vi - step
        else:
            w[i] += vi
        if flush and abs(vi) < tiny:
            vi = 0
        v[i] = vi


@_jit
def relu_grad(dy, y):
    """``dy * (y > 0)`` (relu's backward) in one pass; the product keeps NaN and −0.0 as NumPy does."""
    out = np.empty_like(dy)
    a, b, o = dy.ravel(), y.ravel(), out.ravel()
    one, zero = dy.dtype.type(1), dy.dtype.type(0)
    for i in range(a.size):
        o[i] = a[i] * (one if b[i] > 0 else zero)
    return out


@_jit
def max_pool2d(xp, ph, pw, sh, sw, oh, ow):
    """``kernels.max_pool`` in 2-D: y[n, i, j, c] = max over the window's taps of xp (padded with −inf),
    NaN propagating like np.maximum (which keeps its first argument on ties)."""
    n_, _, _, c_ = xp.shape
    y = np.empty((n_, oh, ow, c_), xp.dtype)
    for n in range(n_):
        for i in range(oh):
            for j in range(ow):
                for c in range(c_):
                    y[n, i, j, c] = xp[n, i * sh, j * sw, c]
                for a in range(ph):
                    for b in range(pw):
                        if a == 0 and b == 0:
                            continue
                        r, s = i * sh + a, j * sw + b
                        for c in range(c_):
                            v, cur = xp[n, r, s, c], y[n, i, j, c]
                            if v > cur or (v != v and cur == cur):
                                y[n, i, j, c] = v
    return y


@_jit
def max_pool2d_backward(dy, y, xp, ph, pw, sh, sw, disjoint, tiled):
    """``kernels.max_pool_backward`` in 2-D: each window's gradient goes to its *first* tap (row-major)
    whose value equals the maximum (``open_[c]``: channel c's maximum not found yet); a window holding NaN
    sends none. Overlapping windows add up; disjoint ones write, and windows that tile ``xp`` exactly
    write every element once (no zero fill). Returns the gradient of the padded input."""
    n_, oh, ow, c_ = dy.shape
    dxp = np.empty(xp.shape, dy.dtype) if tiled else np.zeros(xp.shape, dy.dtype)
    one, zero = dy.dtype.type(1), dy.dtype.type(0)
    for n in range(n_):
        open_ = np.empty(c_, np.bool_)
        for i in range(oh):
            for j in range(ow):
                open_[:] = True
                y_ij, dy_ij = y[n, i, j], dy[n, i, j]
                for a in range(ph):
                    for b in range(pw):
                        x_tap, dx_tap = xp[n, i * sh + a, j * sw + b], dxp[n, i * sh + a, j * sw + b]
                        for c in range(c_):  # branch-free, so the channel loop vectorizes
                            hit = open_[c] & (x_tap[c] == y_ij[c])
                            open_[c] = open_[c] & (not hit)
                            # dy·hit, as NumPy's hit * dy: 0·NaN = NaN and 0·(−x) = −0.0 kept
                            if disjoint:
                                dx_tap[c] = dy_ij[c] * (one if hit else zero)
                            else:
                                dx_tap[c] += dy_ij[c] * (one if hit else zero)
    return dxp


@_jit
def col2im2d(dcols, n_, hp, wp, c_, kh, kw, sh, sw, dh, dw, oh, ow):
    """The adjoint of im2col (``kernels.conv_input_grad``'s strided adds, one group):
    dxp[n, i·sh + a·dh, j·sw + b·dw, c] += dcols[(n, i, j), (a, b, c)]."""
    dxp = np.zeros((n_, hp, wp, c_), dcols.dtype)
    for n in range(n_):
        for i in range(oh):
            for j in range(ow):
                row = (n * oh + i) * ow + j
                k = 0
                for a in range(kh):
                    r = i * sh + a * dh
                    for b in range(kw):
                        s = j * sw + b * dw
                        for c in range(c_):
                            dxp[n, r, s, c] += dcols[row, k]
                            k += 1
    return dxp


# --- the dense layer's epilogues, softmax and the crossentropy (one pass each) -------------------------
@_jit
def _block_sum(a, lo, n):
    """NumPy's ``pairwise_sum`` on a block of n <= 128 elements: a plain loop below 8, else eight accumulators."""
    if n < 8:
        res = a.dtype.type(-0.0)
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - n % 8:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@_jit
def _pairwise_sum(a, n):
    """Σ a[:n] in NumPy's order (``pairwise_sum`` in its loops: blocks of up to 128 elements, and above that
    the sum of two halves, the first a multiple of 8 long), so a row sum here equals ``np.add.reduce(row)`` bit
    for bit. NumPy recurses; this walks the same tree with a stack (numba cannot cache recursive functions)."""
    if n <= 128:
        return _block_sum(a, 0, n)
    todo = np.empty((128, 3), np.int64)  # (start, length, 1 = add the two sums on top of `done`)
    done = np.empty(128, a.dtype)
    top, ndone = 0, 0
    todo[0, 0], todo[0, 1], todo[0, 2] = 0, n, 0
    while top >= 0:
        lo, m, join = todo[top, 0], todo[top, 1], todo[top, 2]
        top -= 1
        if join:
            ndone -= 1
            done[ndone - 1] = done[ndone - 1] + done[ndone]
        elif m <= 128:
            done[ndone] = _block_sum(a, lo, m)
            ndone += 1
        else:
            half = m // 2
            half -= half % 8
            todo[top + 1, 0], todo[top + 1, 1], todo[top + 1, 2] = lo, m, 1  # popped last: left + right
            todo[top + 2, 0], todo[top + 2, 1], todo[top + 2, 2] = lo + half, m - half, 0
            todo[top + 3, 0], todo[top + 3, 1], todo[top + 3, 2] = lo, half, 0  # popped first
            top += 3
    return done[0]


@_jit
def _row_sum(row):
    """``np.add.reduce(row)`` of a contiguous 1-D row: the identity 0 plus the pairwise sum."""
    return row.dtype.type(0) + _pairwise_sum(row, row.size)


@_jit
def bias_relu_(z, b):
    """``z += b`` then ``np.maximum(z, 0, out=z)`` (Dense with relu), in place in one pass; as np.maximum:
    NaN stays NaN, −0.0 becomes +0.0."""
    zero = z.dtype.type(0)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            v = z[i, j] + b[j]
            z[i, j] = v if (v > zero or v != v) else zero


@_jit
def relu_grad_colsum(dy, y):
    """relu's backward and the bias gradient in one pass: ``dz = dy * (y > 0)`` and ``Σ_rows dz`` in the order
    of ``np.add.reduce(dz, axis=0)``: 0 + row after row (one column, being contiguous, sums pairwise)."""
    n, u = dy.shape
    dz = np.empty_like(dy)
    db = np.empty(u, dy.dtype)
    one, zero = dy.dtype.type(1), dy.dtype.type(0)
    for j in range(u):
        v = dy[0, j] * (one if y[0, j] > 0 else zero)
        dz[0, j] = v
        db[j] = zero + v
    for i in range(1, n):
        for j in range(u):
            v = dy[i, j] * (one if y[i, j] > 0 else zero)
            dz[i, j] = v
            db[j] += v
    if u == 1:
        db[0] = _row_sum(dz.ravel())
    return dz, db


@_jit
def softmax_rows(x):
    """``activations._softmax`` on each row: e = exp(x − max x); e / Σe. The sums are NumPy's; exp is libm's,
    a few ulp from NumPy's vectorized exp."""
    out = x.copy()
    for i in range(x.shape[0]):
        _softmax_row_(out[i])
    return out


@_jit
def _softmax_row_(e):
    """One contiguous row ← exp(row − max row) / Σ, in place (np.max: the first NaN wins; the sum NumPy's)."""
    k = e.size
    m = e[0]
    for j in range(1, k):
        v = e[j]
        if v > m or (v != v and m == m):
            m = v
    for j in range(k):
        e[j] = np.exp(e[j] - m)
    s = _row_sum(e)
    for j in range(k):
        e[j] = e[j] / s


@_jit
def sparse_cce(labels, p, dv, eps, hi):
    """``losses.categorical_crossentropy`` and ``_cce_grad`` against one-hot(labels), row by row, without
    building the one-hot matrix: q = p / Σp clipped to [ε, 1 − ε]; value = −Σ t·log q; dq = −t / q_clipped
    where the clip lets the gradient through; grad = dv·(dq − Σ dq·q) / Σp (``hi`` = 1 − ε rounded as NumPy
    rounds it). The sums are NumPy's, so the gradient equals the NumPy path's bit for bit. Of −Σ t·log q only
    the label's term is nonzero (with ε > 0 and 1 − ε > 0, which the caller checks, every clipped q is in
    (0, 1]: every log is finite) unless a q is NaN, which makes the sum NaN: one log per row (libm's, a few
    ulp from NumPy's). Returns (values, grad, the first row whose label is outside [0, k), or −1)."""
    n, k = p.shape
    values = np.empty(n, p.dtype)
    grad = np.empty_like(p)
    terms = np.empty(k, p.dtype)
    one, zero, nan = p.dtype.type(1), p.dtype.type(0), p.dtype.type(np.nan)
    for i in range(n):
        label = labels[i]
        if label < 0 or label >= k:
            return values, grad, i
        s = _row_sum(p[i])
        g = grad[i]
        seen_nan = False
        for j in range(k):  # (np.maximum / np.minimum keep NaN)
            q = p[i, j] / s
            qc = q if (q >= eps or q != q) else eps
            qc = qc if (qc <= hi or qc != qc) else hi
            seen_nan = seen_nan or qc != qc
            t = one if j == label else zero
            g[j] = -t / qc * (one if (q >= eps and q <= hi) else zero)
            terms[j] = g[j] * q
            if j == label:
                q_label = qc
        values[i] = nan if seen_nan else -np.log(q_label)
        dsum = _row_sum(terms)
        for j in range(k):
            g[j] = dv * (g[j] - dsum) / s
    return values, grad, -1


@_jit
def dense_cce(t, p, dv, eps, hi):
    """``sparse_cce`` for dense targets t (one-hot or not): value = −Σ t·log q, dq = −t / q_clipped where the
    clip lets the gradient through, grad = dv·(dq − Σ dq·q) / Σp, with NumPy's sums. A term with t = 0 is
    0·log q: ±0.0 (with ε > 0 and 1 − ε > 0, which the caller checks, every clipped q is in (0, 1], so log q
    is finite), NaN where q is NaN — set without calling log. Returns (values, grad)."""
    n, k = p.shape
    values = np.empty(n, p.dtype)
    grad = np.empty_like(p)
    terms = np.empty(k, p.dtype)
    one, zero = p.dtype.type(1), p.dtype.type(0)
    for i in range(n):
        s = _row_sum(p[i])
        g = grad[i]
        for j in range(k):  # (np.maximum / np.minimum keep NaN)
            q = p[i, j] / s
            qc = q if (q >= eps or q != q) else eps
            qc = qc if (qc <= hi or qc != qc) else hi
            tj = t[i, j]
            if tj != 0:  # (NaN too)
                terms[j] = tj * np.log(qc)
            elif qc != qc:
                terms[j] = qc
            else:
                terms[j] = zero if qc == one else -zero
            g[j] = -tj / qc * (one if (q >= eps and q <= hi) else zero)
        values[i] = -_row_sum(terms)
        for j in range(k):
            terms[j] = g[j] * (p[i, j] / s)
        dsum = _row_sum(terms)
        for j in range(k):
            g[j] = dv * (g[j] - dsum) / s
    return values, grad


# --- small dense networks, whole (engine.dense_chain) ----------------------------------------------------------
_LINEAR, _RELU, _SIGMOID, _TANH, _SOFTMAX = 0, 1, 2, 3, 4  # the activation codes of engine.dense_chain
_MSE = 0  # its loss codes (1: binary crossentropy)


@_jit
def _rows_times(a, M, out):
    """out = a·M, row by row, each sum in k order (k outer: the inner loop runs over contiguous rows of M and out,
    so it vectorizes)."""
    zero = out.dtype.type(0)
    for i in range(a.shape[0]):
        oi, ai = out[i], a[i]
        for j in range(M.shape[1]):
            oi[j] = zero
        for k in range(M.shape[0]):
            aik, mk = ai[k], M[k]
            for j in range(M.shape[1]):
                oi[j] += aik * mk[j]


@_jit
def _dense_layer(a, W, b, has_bias, act, z):
    """Dense.call into ``z``: z = f(a·W + b), row by row. Each product is summed in k order (k outer: the j
    loops run over contiguous rows of W and z) and the bias added last; f as activations computes it (relu as
    np.maximum: NaN kept, −0.0 → +0.0; sigmoid ½(1 + tanh(z/2)); softmax exp(z − max z) / Σ, NumPy's sum), with
    libm's tanh and exp."""
    _rows_times(a, W, z)
    dout = W.shape[1]
    zero, one, half = z.dtype.type(0), z.dtype.type(1), z.dtype.type(0.5)
    for i in range(a.shape[0]):
        zi = z[i]
        for j in range(dout):
            v = zi[j] + b[j] if has_bias else zi[j]
            if act == _RELU:
                v = v if (v > zero or v != v) else zero
            elif act == _SIGMOID:
                v = (np.tanh(v * half) + one) * half
            elif act == _TANH:
                v = np.tanh(v)
            zi[j] = v
        if act == _SOFTMAX:
            _softmax_row_(zi)


@_jit
def dense_chain_forward(x, kernels, biases, codes, out):
    """``Sequential.call`` of a chain of Dense layers (inference), ``out`` = the last layer's output: layer l
    has ``kernels[l]``, ``biases[l]`` (used when ``codes[l, 1]``) and activation ``codes[l, 0]``."""
    depth = len(kernels)
    a = x
    for l in range(depth):
        W = kernels[l]
        z = out if l == depth - 1 else np.empty((x.shape[0], W.shape[1]), x.dtype)
        _dense_layer(a, W, biases[l], codes[l, 1] != 0, codes[l, 0], z)
        a = z


@_jit
def dense_chain_step(x, y, value, grad, plan, work, out, loss, eps):
    """Forward, loss and backward of a chain of Dense layers in one call: ``engine.dense_chain`` documents the
    plan; the references are Dense.forward / its backward, the activations' fn / grad and the MSE and binary
    crossentropy losses with the "sum_over_batch_size" reduction. Writes the network's output to ``out`` and
    every weight's whole gradient into ``grad``; returns the batch's mean loss (summed in float64).

    The same float operations per element as the references, but each product x·W is summed in k order with
    the bias added last (BLAS blocks its sums differently), and exp/tanh/log are libm's: results agree with the
    NumPy path to rounding, not bit for bit (tests/test_dense_chain.py)."""
    n = x.shape[0]
    depth = plan.shape[0]
    one, zero = value.dtype.type(1), value.dtype.type(0)
    # forward, each layer's output kept for the backward pass (the last one's in ``out``)
    a = x
    for l in range(depth):
        din, dout, wo, bo, act, ao = plan[l, 0], plan[l, 1], plan[l, 2], plan[l, 3], plan[l, 4], plan[l, 5]
        W = value[wo:wo + din * dout].reshape((din, dout))
        z = out if l == depth - 1 else work[ao * n:(ao + dout) * n].reshape((n, dout))
        _dense_layer(a, W, value[bo:bo + dout] if bo >= 0 else value[:0], bo >= 0, act, z)
        a = z
    # the loss: its batch mean, and d loss / d output into the last layer's delta block
    last = depth - 1
    k_out, dl = plan[last, 1], plan[last, 6]
    d = work[dl * n:(dl + k_out) * n].reshape((n, k_out))
    scale = np.empty(2, value.dtype)
    scale[0] = 1.0 / n  # dv = 1/n in the dtype, as losses._batch_mean
    if loss == _MSE:
        scale[1] = 2.0 / k_out
        scale[0] = scale[0] * scale[1]  # (1/n)·(2/k) rounded in two steps, as losses._mse_fused
    lo = value.dtype.type(eps)
    hi = one - lo
    total = 0.0
    for i in range(n):
        row = 0.0
        for j in range(k_out):
            p, t = out[i, j], y[i, j]
            if loss == _MSE:  # mean squared error: (p − y)², gradient (p − y)·2/(n·k)
                diff = p - t
                row += diff * diff
                d[i, j] = diff * scale[0]
            else:  # binary crossentropy on p clipped to [ε, 1 − ε]; no gradient where the clip bites
                pc = lo if p < lo else (hi if p > hi else p)
                flows = one if (p >= lo and p <= hi) else zero
                row += -(t * np.log(pc) + (one - t) * np.log(one - pc))
                d[i, j] = scale[0] * flows * (-(t / pc) + (one - t) / (one - pc)) / k_out
        total += row / k_out
    # backward, last layer first: dz = dy ⊙ f'(z) (from y); dW = aᵀ·dz; db = Σ_rows dz; da = dz·Wᵀ
    for l in range(depth - 1, -1, -1):
        din, dout, wo, bo, act, ao = plan[l, 0], plan[l, 1], plan[l, 2], plan[l, 3], plan[l, 4], plan[l, 5]
        dl = plan[l, 6]
        yl = out if l == depth - 1 else work[ao * n:(ao + dout) * n].reshape((n, dout))
        dz = work[dl * n:(dl + dout) * n].reshape((n, dout))
        if act != _LINEAR:  # f'(z) from y: relu [y > 0], sigmoid y(1 − y), tanh 1 − y²
            for i in range(n):
                for j in range(dout):
                    t = yl[i, j]
                    if act == _RELU:
                        dz[i, j] = dz[i, j] * (one if t > zero else zero)
                    elif act == _SIGMOID:
                        dz[i, j] = dz[i, j] * t * (one - t)
                    else:
                        dz[i, j] = dz[i, j] * (one - t * t)
        if l > 0:
            pa = plan[l - 1, 5]
            a = work[pa * n:(pa + din) * n].reshape((n, din))
        else:
            a = x
        dW = grad[wo:wo + din * dout].reshape((din, dout))
        for k in range(din):
            for j in range(dout):
                dW[k, j] = zero
        for i in range(n):
            ai, dzi = a[i], dz[i]
            for k in range(din):
                aik, gk = ai[k], dW[k]
                for j in range(dout):
                    gk[j] += aik * dzi[j]
        if bo >= 0:
            for j in range(dout):
                grad[bo + j] = zero
            for i in range(n):
                for j in range(dout):
                    grad[bo + j] += dz[i, j]
        if l > 0:  # da = dz·Wᵀ, with Wᵀ laid out in the scratch block after the deltas (rows of contiguous j)
            pd = plan[l - 1, 6]
            da = work[pd * n:(pd + din) * n].reshape((n, din))
            W = value[wo:wo + din * dout].reshape((din, dout))
            wt_at = plan[0, 7] * n
            WT = work[wt_at:wt_at + din * dout].reshape((dout, din))
            for k in range(din):
                for j in range(dout):
                    WT[j, k] = W[k, j]
            _rows_times(dz, WT, da)
    return total / n
