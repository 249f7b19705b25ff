"""numba versions of the hottest NumPy passes (imported only through ``engine.compiled``).

Each kernel computes what the NumPy reference it replaces computes — the same float operations on the
same elements — but in one pass over memory instead of one pass per ufunc. Where several terms add into
one element (col2im, overlapping pooling windows) the order of those additions differs from NumPy's
tap-by-tap order, so results agree to rounding there and bit for bit everywhere else. The reference is named in each docstring; tests/test_compiled.py
checks every kernel against it. Compiled on first use and cached on disk (``cache=True``).

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
