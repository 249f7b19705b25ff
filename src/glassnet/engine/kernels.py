"""The heavy kernels behind convolution and pooling, in plain NumPy (any number of spatial axes).

Layers call these functions and never index pixels themselves, so a faster kernel (a C extension,
a GPU array library) can replace one function here without touching ``layers/``.

Every array here is *channels last*: ``x`` has shape ``(N, *S, C)`` with ``r = len(S)`` spatial axes
(1 for sequences, 2 for images). Per spatial axis a layer's geometry is

    k  kernel (pool) size     s  stride     d  dilation     (before, after)  padding
    k_eff = (k − 1)·d + 1                      the span of one dilated window
    P = S + before + after                     the padded length
    O = (P − k_eff) // s + 1                   the output length

and output position ``o`` with tap ``t`` (0 <= t < k) reads padded position ``o·s + t·d``.

im2col.  ``windows(xp)`` is a strided *view* ``win[n, o, t, c] = xp[n, o·s + t·d, c]`` (no copy);
reshaping it to ``cols`` of shape ``(N·O, k·C)`` is the single copy, and a convolution is then one
GEMM ``cols @ W``. The adjoints (col2im) loop over the k taps (k_h·k_w of them, never over pixels
or samples): tap t's contribution is added into the strided slice ``tap_slices(t)`` of the padded
gradient. Pooling works tap by tap too (np.maximum / + over the strided slices, no window copy).

An ``after`` padding may be negative: the padded array is then the input with its tail cut off
(transposed convolutions need this when their output is longer than the kernels reach).

With numba installed (``engine.compiled``), the 2-D, one-group cases of col2im and max-pooling run as
compiled loops computing the same sums and maxima; the NumPy code below stays the reference. (NumPy's own
im2col copy measured faster than a compiled one, so it has none.)
"""
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import compiled


# --- geometry --------------------------------------------------------------------------------------
def same_padding(size, kernel, stride=1, dilation=1):
    """(before, after) of TensorFlow/Keras 'same': the output has ceil(size / stride) positions.

    pad_total = max((ceil(size/stride) − 1)·stride + k_eff − size, 0);  before = pad_total // 2
    (so an odd total puts the extra element *after*, unlike a symmetric torch padding).
    """
    k_eff = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + k_eff - size, 0)
    return total // 2, total - total // 2


def paddings(spatial, kernel_size, strides, dilation, padding):
    """Per-axis (before, after) for 'valid', 'same' or 'causal' (all (k_eff − 1) before, 1-D only)."""
    if padding == "valid":
        return [(0, 0)] * len(spatial)
    if padding == "same":
        return [same_padding(n, k, s, d) for n, k, s, d in zip(spatial, kernel_size, strides, dilation)]
    if padding == "causal":
        return [((k - 1) * d, 0) for k, d in zip(kernel_size, dilation)]
    raise ValueError(f"Unknown padding {padding!r}: expected 'valid', 'same' or 'causal'.")


def output_length(size, kernel, stride, dilation, before, after):
    """O = (size + before + after − k_eff) // s + 1  (None stays None; may be <= 0 if too small)."""
    if size is None:
        return None
    return (size + before + after - (kernel - 1) * dilation - 1) // stride + 1


def transpose_geometry(size, kernel, stride, dilation, padding, output_padding=None):
    """Output length Z and the (before, after) of the *forward* conv whose adjoint this transpose is.

    Keras 3 (and TF's conv2d_transpose): 'valid' gives Z = (size − 1)·s + k_eff + op with
    op = max(k_eff, s) − k_eff by default; 'same' gives Z = size·s, or (size − 1)·s + k_eff % 2 + op when
    output_padding is given. A convolution over Z positions with padding (before, after), stride s,
    dilation d has exactly ``size`` outputs; the transposed conv scatters back through it.
    ``after`` is negative when Z reaches past the last window (those positions only get the bias).
    """
    k_eff = (kernel - 1) * dilation + 1
    if padding == "valid":
        op = max(k_eff, stride) - k_eff if output_padding is None else output_padding
        left, right = k_eff - 1, k_eff - 1 + op  # lax.conv_transpose padding, as Keras 3 computes it
    else:
        pad_len = stride + k_eff - 2 if output_padding is None else k_eff + k_eff % 2 - 2 + output_padding
        left = min(pad_len // 2 + pad_len % 2, k_eff - 1)
        right = pad_len - left
    if size is None:
        return None, (k_eff - 1 - left, k_eff - 1 - right)
    z = (size - 1) * stride + 1 + left + right - k_eff + 1
    return z, (k_eff - 1 - left, k_eff - 1 - right)


# --- padding and its adjoint -----------------------------------------------------------------------
def pad(x, pads, value=0.0):
    """(N, *S, C) -> (N, *(S + before + after), C) filled with ``value``; a negative ``after`` crops."""
    if all(b == 0 and a == 0 for b, a in pads):
        return x
    spatial = x.shape[1:-1]
    out_shape = (x.shape[0],) + tuple(n + b + a for n, (b, a) in zip(spatial, pads)) + (x.shape[-1],)
    keep = [n + min(a, 0) for n, (b, a) in zip(spatial, pads)]
    out = np.full(out_shape, value, dtype=x.dtype)
    dst = (slice(None),) + tuple(slice(b, b + k) for (b, _), k in zip(pads, keep)) + (slice(None),)
    src = (slice(None),) + tuple(slice(0, k) for k in keep) + (slice(None),)
    out[dst] = x[src]
    return out


def unpad(dxp, pads, spatial):
    """The adjoint of ``pad``: the gradient of the unpadded input (zero where ``pad`` cropped)."""
    if all(b == 0 and a == 0 for b, a in pads):
        return dxp
    keep = [n + min(a, 0) for n, (b, a) in zip(spatial, pads)]
    src = (slice(None),) + tuple(slice(b, b + k) for (b, _), k in zip(pads, keep)) + (slice(None),)
    if all(k == n for k, n in zip(keep, spatial)):
        return dxp[src]
    dx = np.zeros((dxp.shape[0],) + tuple(spatial) + (dxp.shape[-1],), dxp.dtype)
    dx[(slice(None),) + tuple(slice(0, k) for k in keep) + (slice(None),)] = dxp[src]
    return dx


# --- windows (im2col) and taps ---------------------------------------------------------------------
def windows(xp, kernel_size, strides, dilation, out_size):
    """Strided view ``win[n, *o, *t, c] = xp[n, *(o·s + t·d), c]`` of shape (N, *O, *k, C); no copy."""
    r = len(kernel_size)
    for i in range(r):  # the last window must end inside xp: as_strided does not check
        last = (out_size[i] - 1) * strides[i] + (kernel_size[i] - 1) * dilation[i]
        if out_size[i] < 1 or last >= xp.shape[1 + i]:
            raise ValueError(f"windows: {out_size[i]} windows of size {kernel_size[i]} (stride {strides[i]}, "
                             f"dilation {dilation[i]}) do not fit an axis of length {xp.shape[1 + i]}.")
    st = xp.strides
    shape = (xp.shape[0], *out_size, *kernel_size, xp.shape[-1])
    view_strides = (st[0], *(st[1 + i] * strides[i] for i in range(r)),
                    *(st[1 + i] * dilation[i] for i in range(r)), st[-1])
    return as_strided(xp, shape, view_strides, writeable=False)


def tap_slices(tap, strides, dilation, out_size):
    """Index of the padded positions tap ``t`` touches: o·s + t·d for o = 0 … O−1, per axis."""
    return (slice(None),) + tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                                  for t, s, d, o in zip(tap, strides, dilation, out_size))


# --- convolution ------------------------------------------------------------------------------------
def _grouped_kernel(w, groups):
    """(*k, C/g, F) -> (g, k·C/g, F/g): filters j·F/g … (j+1)·F/g read input channels j·C/g … ."""
    *k, cg, f = w.shape
    return w.reshape(math.prod(k), cg, groups, f // groups).transpose(2, 0, 1, 3).reshape(groups, -1, f // groups)


def conv(x, w, strides, dilation, pads, groups=1):
    """Cross-correlation  y[n, o, f] = Σ_t Σ_c xp[n, o·s + t·d, c] · W[t, c, f]  (channels last, no bias).

    x (N, *S, C), W (*k, C/g, F) in Keras's layout; returns ``(y, cols)`` where ``cols`` (g, N·O, k·C/g)
    is the im2col matrix that ``conv_kernel_grad`` needs. Per group: y_j = cols_j @ W_j, one GEMM.
    """
    r = x.ndim - 2
    kernel_size = w.shape[:r]
    n, c = x.shape[0], x.shape[-1]
    xp = pad(x, pads)
    out_size = tuple(output_length(xp.shape[1 + i], kernel_size[i], strides[i], dilation[i], 0, 0) for i in range(r))
    win = windows(xp, kernel_size, strides, dilation, out_size)                 # (N, *O, *k, C) view
    win = win.reshape(win.shape[:-1] + (groups, c // groups))                   # (N, *O, *k, g, C/g) view
    cols = np.moveaxis(win, -2, 0).reshape(groups, n * math.prod(out_size), -1)  # the one copy
    y = cols @ _grouped_kernel(w, groups)                                       # (g, N·O, F/g)
    y = y[0] if groups == 1 else y.transpose(1, 0, 2)
    return y.reshape((n,) + out_size + (w.shape[-1],)), cols


def conv_kernel_grad(cols, dy, kernel_shape, groups=1):
    """dW[t, c, f] = Σ_{n,o} xp[n, o·s + t·d, c] · dy[n, o, f]:  per group dW_j = cols_jᵀ @ dy_j."""
    f = dy.shape[-1]
    dyg = dy.reshape(-1, groups, f // groups).transpose(1, 0, 2)                # (g, N·O, F/g)
    dwg = cols.transpose(0, 2, 1) @ dyg                                         # (g, k·C/g, F/g)
    *k, cg, _ = kernel_shape
    return dwg.reshape(groups, math.prod(k), cg, f // groups).transpose(1, 2, 0, 3).reshape(kernel_shape)


def conv_input_grad(dy, w, x_shape, strides, dilation, pads, groups=1):
    """dx[n, o·s + t·d, c] += Σ_f dy[n, o, f] · W[t, c, f]:  per tap t one GEMM dy @ W[t]ᵀ, added into the
    strided slice of the padded gradient that the tap read (col2im without the big dcols matrix).

    This is also the forward pass of a transposed convolution (``x_shape`` is then its output shape).
    """
    r = dy.ndim - 2
    kernel_size = w.shape[:r]
    n, out_size, c, f = dy.shape[0], dy.shape[1:-1], x_shape[-1], dy.shape[-1]
    cg, fg = c // groups, f // groups
    dyg = dy.reshape(-1, groups, fg).transpose(1, 0, 2)                        # (g, N·O, F/g)
    if groups > 1:
        dyg = np.ascontiguousarray(dyg)
    spatial = x_shape[1:-1]
    padded = (n,) + tuple(m + b + a for m, (b, a) in zip(spatial, pads)) + (groups, cg)
    # the compiled loop does not check bounds: take it only when every tap lands inside the padded gradient
    fits = all((o - 1) * s + (k_ - 1) * d < p for o, s, k_, d, p in zip(out_size, strides, kernel_size, dilation,
                                                                         padded[1:-2]))
    k = None
    if r == 2 and groups == 1 and fits and w.shape[-2] == c and compiled.enabled():
        dy = np.ascontiguousarray(dy)  # (a cropped pool gradient is a view): the kernel reads it row by row
        k = compiled.kernels_for(dy, w)
    if k is not None:  # one GEMM dcols = dy·Wᵀ (N·O, k·C), then col2im (the same adds, as one compiled loop)
        dcols = dy.reshape(-1, f) @ w.reshape(-1, f).T
        dxp = k.col2im2d(dcols, n, padded[1], padded[2], c, *kernel_size, *strides, *dilation, *out_size)
        return unpad(dxp, pads, spatial)
    dxp = np.zeros(padded, dy.dtype)
    for tap in np.ndindex(*kernel_size):
        w_tap = w[tap].reshape(cg, groups, fg).transpose(1, 2, 0)              # (g, F/g, C/g)
        part = dyg @ w_tap                                                     # (g, N·O, C/g)
        dxp[tap_slices(tap, strides, dilation, out_size)] += np.moveaxis(part, 0, 1).reshape(
            (n,) + tuple(out_size) + (groups, cg))
    return unpad(dxp.reshape(padded[:-2] + (c,)), pads, spatial)


def channel_sums(dz):
    """Σ of dz over every axis but the last (a bias gradient): one ones-vector GEMV, faster than sum()."""
    dz2 = dz.reshape(-1, dz.shape[-1])
    return np.ones(dz2.shape[0], dz.dtype) @ dz2


# --- pooling ----------------------------------------------------------------------------------------
def pool_output_size(spatial, pool_size, strides, pads):
    return tuple(output_length(m, k, s, 1, b, a) for m, k, s, (b, a) in zip(spatial, pool_size, strides, pads))


def max_pool(x, pool_size, strides, pads):
    """y[n, o, c] = max_t xp[n, o·s + t, c], padding with −inf: one np.maximum per tap, no window copy.

    Returns ``(y, xp)``: the backward pass compares the padded input ``xp`` with ``y``.
    """
    ones = (1,) * len(pool_size)
    xp = pad(x, pads, -np.inf)
    out_size = pool_output_size(x.shape[1:-1], pool_size, strides, pads)
    k = compiled.kernels_for(xp) if len(pool_size) == 2 else None
    if k is not None:
        return k.max_pool2d(xp, *pool_size, *strides, *out_size), xp
    taps = iter(np.ndindex(*pool_size))
    y = xp[tap_slices(next(taps), strides, ones, out_size)].copy()
    for tap in taps:
        np.maximum(y, xp[tap_slices(tap, strides, ones, out_size)], out=y)
    return y, xp


def max_pool_backward(dy, y, xp, x_shape, pool_size, strides, pads):
    """dx[n, o·s + t*, c] += dy[n, o, c], t* the *first* tap (row-major) where xp equals the maximum y.

    Per tap one compare with y; ``open_`` marks windows whose maximum is not yet found, so a window with
    tied maxima sends its whole gradient to the first one — the element TensorFlow's MaxPoolGrad, XLA's
    select-and-scatter (Keras on JAX) and torch's max_pool choose.
    """
    ones = (1,) * len(pool_size)
    out_size = dy.shape[1:-1]
    disjoint = all(s >= k for s, k in zip(strides, pool_size))  # windows do not overlap: write, don't add
    # windows that tile xp exactly (the common 2x2/stride-2 pool of an even size) write every element once
    tiled = all(s == k and o * s == p for s, k, o, p in zip(strides, pool_size, out_size, xp.shape[1:-1]))
    k = compiled.kernels_for(dy, y, xp, min_elements=0) if len(pool_size) == 2 and dy.shape == y.shape else None
    if k is not None:
        return unpad(k.max_pool2d_backward(dy, y, xp, *pool_size, *strides, disjoint, tiled), pads, x_shape[1:-1])
    dxp = np.empty(xp.shape, dy.dtype) if tiled else np.zeros(xp.shape, dy.dtype)
    taps = list(np.ndindex(*pool_size))

    open_ = None  # None: every window still open (before the first tap)
    for i, tap in enumerate(taps):
        index = tap_slices(tap, strides, ones, out_size)
        hit = xp[index] == y
        if open_ is None:
            open_ = ~hit
        else:
            hit &= open_
            if i + 1 < len(taps):
                open_ ^= hit
        if disjoint:
            np.multiply(hit, dy, out=dxp[index])
        else:
            dxp[index] += hit * dy
    return unpad(dxp, pads, x_shape[1:-1])


def _window_sums(xp, pool_size, strides, out_size):
    """Σ_t xp[n, o·s + t, c]: one strided add per tap, no window copy."""
    ones = (1,) * len(pool_size)
    taps = iter(np.ndindex(*pool_size))
    total = xp[tap_slices(next(taps), strides, ones, out_size)].copy()
    for tap in taps:
        total += xp[tap_slices(tap, strides, ones, out_size)]
    return total


def avg_pool(x, pool_size, strides, pads):
    """y[n, o, c] = Σ_t xp[n, o·s + t, c] / count[o], count = the window's non-padded elements (Keras).

    Returns ``(y, count)``; count is a scalar for 'valid' padding, else an array (1, *O, 1).
    """
    spatial = x.shape[1:-1]
    out_size = pool_output_size(spatial, pool_size, strides, pads)
    y = _window_sums(pad(x, pads), pool_size, strides, out_size)
    if all(b == 0 and a == 0 for b, a in pads):
        count = x.dtype.type(math.prod(pool_size))
    else:  # pool an all-ones image: each window counts the real (unpadded) elements it covers
        count = _window_sums(pad(np.ones((1,) + spatial + (1,), x.dtype), pads), pool_size, strides, out_size)
    y /= count
    return y, count


def avg_pool_backward(dy, count, x_shape, pool_size, strides, pads):
    """dx[n, o·s + t, c] += dy[n, o, c] / count[o]  for every tap t (strided adds)."""
    r = dy.ndim - 2
    g = dy / count
    spatial = x_shape[1:-1]
    padded = (x_shape[0],) + tuple(m + b + a for m, (b, a) in zip(spatial, pads)) + (x_shape[-1],)
    dxp = np.zeros(padded, g.dtype)
    for tap in np.ndindex(*pool_size):
        dxp[tap_slices(tap, strides, (1,) * r, dy.shape[1:-1])] += g
    return unpad(dxp, pads, spatial)
