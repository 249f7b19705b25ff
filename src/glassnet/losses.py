"""Losses with Keras 3 names, formulas and reductions, each with its gradient beside it.

Each loss is a pair: ``values(y_true, y_pred) -> per-sample loss`` (the mean over the last axis,
as Keras computes it) and ``grad(y_true, y_pred, dv) -> d loss / d y_pred`` given ``dv``, the
gradient of the reduced loss with respect to each per-sample value.
Reduction ``sum_over_batch_size`` (Keras 3's default) is ``Σ w·l / N`` with N the number of values.
"""
import math

import numpy as np

from .activations import _log_softmax, _sigmoid, _softmax
from .engine import backend, compiled
from .engine.registry import register, table

REDUCTIONS = ("sum_over_batch_size", "sum", "none", None, "mean", "mean_with_sample_weight")


def squeeze_or_expand_to_same_rank(x1, x2):
    """Keras's rule: when ranks differ by one and the longer has last dim 1, align the two."""
    r1, r2 = x1.ndim, x2.ndim
    if r1 == r2 + 1 and x1.shape[-1] == 1:
        if r2 == 1:
            x2 = x2[:, None]
        else:
            x1 = x1[..., 0]
    elif r2 == r1 + 1 and x2.shape[-1] == 1:
        if r1 == 1:
            x1 = x1[:, None]
        else:
            x2 = x2[..., 0]
    return x1, x2


def _clip(p, lo, hi):
    """Clipped value and the 0/1 mask through which a gradient flows (as jnp.clip's). (maximum + minimum is
    np.clip's result, without its Python wrapper: this runs on every training step of a classifier.)"""
    return np.minimum(np.maximum(p, lo), hi), (p >= lo) & (p <= hi)


def _k(y_pred, axis=-1):
    return y_pred.shape[axis] if y_pred.ndim else 1


def mean_last(a):
    """Mean over the last axis (a view when that axis has length 1: the common single-output case)."""
    k = a.shape[-1]
    return a[..., 0] if k == 1 else a.sum(axis=-1) * (1.0 / k)


# --- per-sample values and their gradients --------------------------------------------------------
def mean_squared_error(y_true, y_pred):
    """mean((p − y)²)"""
    return mean_last(np.square(y_pred - y_true))


def _mse_grad(y_true, y_pred, dv):
    return dv[..., None] * (2.0 / _k(y_pred)) * (y_pred - y_true)


def _mse_fused(y_true, y_pred, options):
    """MSE's batch mean and gradient in one go (the difference p − y once, no dv array): 4 NumPy calls
    instead of 8, the same numbers bit for bit — the gradient's factor (1/n)·(2/k) is rounded to the
    dtype in the same two steps as ``_batch_mean``'s dv times ``_mse_grad``'s 2/k. None: general path."""
    if (type(y_true) is not np.ndarray or y_true.shape != y_pred.shape or y_true.dtype != y_pred.dtype
            or not y_pred.ndim or not y_pred.size):
        return None
    d = y_pred - y_true
    values = mean_last(np.square(d))
    n = values.size
    f = y_pred.dtype.type
    return _mean(values), d * f(f(1.0 / n) * f(2.0 / d.shape[-1]))


def mean_absolute_error(y_true, y_pred):
    """mean(|p − y|)"""
    return np.mean(np.abs(y_pred - y_true), axis=-1)


def _mae_grad(y_true, y_pred, dv):
    return dv[..., None] * np.sign(y_pred - y_true) / _k(y_pred)


def mean_absolute_percentage_error(y_true, y_pred):
    """100 · mean(|y − p| / max(|y|, ε))"""
    return 100.0 * np.mean(np.abs(y_true - y_pred) / np.maximum(np.abs(y_true), backend.epsilon()), axis=-1)


def _mape_grad(y_true, y_pred, dv):
    return dv[..., None] * (100.0 / _k(y_pred)) * np.sign(y_pred - y_true) / np.maximum(np.abs(y_true),
                                                                                        backend.epsilon())


def mean_squared_logarithmic_error(y_true, y_pred):
    """mean((log(max(p, ε) + 1) − log(max(y, ε) + 1))²)"""
    eps = backend.epsilon()
    return np.mean(np.square(np.log1p(np.maximum(y_pred, eps)) - np.log1p(np.maximum(y_true, eps))), axis=-1)


def _msle_grad(y_true, y_pred, dv):
    eps = backend.epsilon()
    pm = np.maximum(y_pred, eps)
    d = np.log1p(pm) - np.log1p(np.maximum(y_true, eps))
    return dv[..., None] * (2.0 / _k(y_pred)) * d / (pm + 1) * (y_pred >= eps)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """mean(−y·log p − (1 − y)·log(1 − p)), p clipped to [ε, 1 − ε]; with logits via log σ."""
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:  # −y·logσ(z) − (1−y)·logσ(−z) = max(z, 0) − z·y + log(1 + e^−|z|)
        z = y_pred
        return np.mean(np.maximum(z, 0) - z * y_true + np.log1p(np.exp(-np.abs(z))), axis=axis)
    eps = backend.epsilon()
    p = np.clip(y_pred, eps, 1 - eps)
    return np.mean(-(y_true * np.log(p) + (1 - y_true) * np.log(1 - p)), axis=axis)


def _bce_grad(y_true, y_pred, dv, from_logits=False, label_smoothing=0.0, axis=-1):
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    k = _k(y_pred, axis)
    if from_logits:
        return np.expand_dims(dv, axis) * (_sigmoid(y_pred) - y_true) / k
    eps = backend.epsilon()
    p, flows = _clip(y_pred, eps, 1 - eps)
    return np.expand_dims(dv, axis) * flows * (-(y_true / p) + (1 - y_true) / (1 - p)) / k


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """−Σ y·log q with q = p / Σp clipped to [ε, 1 − ε]; with logits q = softmax(z)."""
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / y_pred.shape[axis]
    if from_logits:
        return -np.sum(y_true * _log_softmax(y_pred, axis), axis=axis)
    eps = backend.epsilon()  # (add.reduce, maximum/minimum: np.sum and np.clip without their Python wrappers)
    q = np.minimum(np.maximum(y_pred / np.add.reduce(y_pred, axis=axis, keepdims=True), eps), 1 - eps)
    return -np.add.reduce(y_true * np.log(q), axis=axis)


def _cce_grad(y_true, y_pred, dv, from_logits=False, label_smoothing=0.0, axis=-1):
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / y_pred.shape[axis]
    dv = np.expand_dims(dv, axis)
    if from_logits:  # d/dz = softmax(z)·Σy − y
        return dv * (_softmax(y_pred, axis) * np.sum(y_true, axis=axis, keepdims=True) - y_true)
    eps = backend.epsilon()
    s = np.add.reduce(y_pred, axis=axis, keepdims=True)
    q = y_pred / s
    qc, flows = _clip(q, eps, 1 - eps)
    dq = -y_true / qc * flows
    return dv * (dq - np.add.reduce(dq * q, axis=axis, keepdims=True)) / s  # through q = p / Σp


def _focal_power(base, gamma):
    """(base^γ, d(base^γ)/d(base)), the derivative 0 where γ = 0 (no focusing) rather than 0·base^−1."""
    if gamma == 0:
        return np.ones_like(base), np.zeros_like(base)
    with np.errstate(divide="ignore", invalid="ignore"):
        return base ** gamma, gamma * base ** (gamma - 1)


def binary_focal_crossentropy(y_true, y_pred, apply_class_balancing=False, alpha=0.25, gamma=2.0, from_logits=False,
                              label_smoothing=0.0, axis=-1):
    """mean of w·(1 − pₜ)^γ·bce(y, p), pₜ = y·p + (1 − y)(1 − p) (p = σ(z) from logits), bce with p clipped to
    [ε, 1 − ε], w = α·y + (1 − α)(1 − y) with apply_class_balancing (else 1): Keras 3's formula, which
    down-weights the examples the model already gets right."""
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    p = _sigmoid(y_pred) if from_logits else y_pred
    eps = backend.epsilon()
    pc = np.clip(p, eps, 1 - eps)
    bce = -(y_true * np.log(pc) + (1 - y_true) * np.log(1 - pc))
    focal = _focal_power(1 - (y_true * p + (1 - y_true) * (1 - p)), gamma)[0] * bce
    if apply_class_balancing:
        focal = (y_true * alpha + (1 - y_true) * (1 - alpha)) * focal
    return np.mean(focal, axis=axis)


def _binary_focal_grad(y_true, y_pred, dv, apply_class_balancing=False, alpha=0.25, gamma=2.0, from_logits=False,
                       label_smoothing=0.0, axis=-1):
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    p = _sigmoid(y_pred) if from_logits else y_pred
    eps = backend.epsilon()
    pc, flows = _clip(p, eps, 1 - eps)
    bce = -(y_true * np.log(pc) + (1 - y_true) * np.log(1 - pc))
    factor, dfactor = _focal_power(1 - (y_true * p + (1 - y_true) * (1 - p)), gamma)
    # d/dp of factor·bce, with d(1 − pₜ)/dp = 1 − 2y and dbce/dp = −y/p + (1 − y)/(1 − p) inside the clip
    d = dfactor * (1 - 2 * y_true) * bce + factor * flows * (-(y_true / pc) + (1 - y_true) / (1 - pc))
    if apply_class_balancing:
        d = (y_true * alpha + (1 - y_true) * (1 - alpha)) * d
    if from_logits:
        d = d * p * (1 - p)
    return np.expand_dims(dv, axis) * d / _k(y_pred, axis)


def categorical_focal_crossentropy(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0,
                                   axis=-1):
    """−Σ α·(1 − q)^γ·y·log q, q = p / Σp clipped to [ε, 1 − ε] (p = softmax(z) from logits): Keras 3's formula."""
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / y_pred.shape[-1]
    p = _softmax(y_pred, axis) if from_logits else y_pred
    eps = backend.epsilon()
    q = np.clip(p / np.sum(p, axis=axis, keepdims=True), eps, 1 - eps)
    return -np.sum(alpha * _focal_power(1 - q, gamma)[0] * y_true * np.log(q), axis=axis)


def _categorical_focal_grad(y_true, y_pred, dv, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0,
                            axis=-1):
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / y_pred.shape[-1]
    p = _softmax(y_pred, axis) if from_logits else y_pred
    eps = backend.epsilon()
    s = np.sum(p, axis=axis, keepdims=True)
    q = p / s
    qc, flows = _clip(q, eps, 1 - eps)
    factor, dfactor = _focal_power(1 - qc, gamma)
    # d/dq of −α(1 − q)^γ·y·log q inside the clip, then through q = p / Σp (and p = softmax(z))
    dq = -alpha * y_true * (factor / qc - dfactor * np.log(qc)) * flows
    dp = (dq - np.sum(dq * q, axis=axis, keepdims=True)) / s
    if from_logits:
        dp = p * (dp - np.sum(dp * p, axis=axis, keepdims=True))
    return np.expand_dims(dv, axis) * dp


def _overlap_axes(y_pred, axis):
    """``axis`` as a tuple of non-negative axes (None: all of them, one value for the whole batch)."""
    if y_pred.ndim == 0:
        raise ValueError("Dice and Tversky need arrays (a batch of masks or scores), got a single number.")
    if axis is None:
        return tuple(range(y_pred.ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or not -y_pred.ndim <= a < y_pred.ndim:
            raise ValueError(f"axis {axis!r} does not fit predictions of shape {y_pred.shape}: give axes between "
                             f"{-y_pred.ndim} and {y_pred.ndim - 1}, e.g. axis=(1, 2, 3) for one value per mask.")
    return tuple(int(a) % y_pred.ndim for a in axes)


def _overlap_sums(y_true, y_pred, axis):
    axes = _overlap_axes(y_pred, axis)
    return axes, (lambda a: np.sum(a, axis=axes, keepdims=True))


def dice(y_true, y_pred, axis=None):
    """1 − 2·Σ y·p / (Σ y + Σ p + ε), the sums over ``axis`` (None: the whole batch, one value): Keras 3's Dice,
    for segmentation masks and other overlaps."""
    axes, total = _overlap_sums(y_true, y_pred, axis)
    value = 1 - 2.0 * total(y_true * y_pred) / (total(y_true) + total(y_pred) + backend.epsilon())
    return np.squeeze(value, axis=axes)


def _dice_grad(y_true, y_pred, dv, axis=None):
    axes, total = _overlap_sums(y_true, y_pred, axis)
    inter, denom = total(y_true * y_pred), total(y_true) + total(y_pred) + backend.epsilon()
    # d/dp of 1 − 2I/S, with dI/dp = y and dS/dp = 1
    return np.expand_dims(dv, axes) * (2.0 * inter / (denom * denom) - 2.0 * y_true / denom)


def tversky(y_true, y_pred, alpha=0.5, beta=0.5, axis=None):
    """1 − I / (I + α·Σ(1 − p)·y + β·Σ p·(1 − y) + ε), I = Σ y·p, the sums over ``axis`` (None: the whole batch):
    Keras 3's Tversky (α and β weigh its two kinds of error as Keras names them: α the "false positives" term
    (1 − p)·y, β the "false negatives" term p·(1 − y)); α = β = 0.5 is Dice."""
    axes, total = _overlap_sums(y_true, y_pred, axis)
    inter = total(y_true * y_pred)
    value = 1 - inter / (inter + total((1 - y_pred) * y_true) * alpha + total(y_pred * (1 - y_true)) * beta
                         + backend.epsilon())
    return np.squeeze(value, axis=axes)


def _tversky_grad(y_true, y_pred, dv, alpha=0.5, beta=0.5, axis=None):
    axes, total = _overlap_sums(y_true, y_pred, axis)
    inter = total(y_true * y_pred)
    denom = inter + total((1 - y_pred) * y_true) * alpha + total(y_pred * (1 - y_true)) * beta + backend.epsilon()
    d_denom = y_true - alpha * y_true + beta * (1 - y_true)  # dD/dp element by element
    # d/dp of 1 − I/D = −(y·D − I·dD/dp) / D²
    return np.expand_dims(dv, axes) * ((inter * d_denom - y_true * denom) / (denom * denom))


def _one_hot_labels(y_true, y_pred, axis=-1):
    labels = np.asarray(y_true)
    if labels.ndim == y_pred.ndim and labels.shape[-1] == 1:
        labels = labels[..., 0]
    n_classes = y_pred.shape[axis]
    if labels.dtype.kind == "f":
        if not np.all(labels == np.round(labels)):
            raise ValueError("sparse_categorical_crossentropy expects integer class labels in y, got "
                             "non-integer values. For one-hot targets use categorical_crossentropy.")
    ints = labels.astype(np.int64)
    if ints.size and (ints.min() < 0 or ints.max() >= n_classes):
        raise ValueError(f"sparse_categorical_crossentropy got labels in [{ints.min()}, {ints.max()}] but the model "
                         f"outputs {n_classes} classes, so labels must lie in [0, {n_classes - 1}].")
    return np.moveaxis(np.eye(n_classes, dtype=y_pred.dtype)[ints], -1, axis)


def _crossentropy_kernels(y_pred, options):
    """The compiled kernels (engine.compiled) when a crossentropy on the probabilities ``y_pred`` can run as
    one pass per row, else None: numba absent or off, logits, a y_pred that is not 2-D or too small, an axis
    other than the last (an int: NumPy raises for 1.0 or True), or a clip [ε, 1 − ε] that does not keep every
    q > 0 (ε <= 0, ε >= 1 or NaN: NaN losses on the NumPy path; the kernels assume each log q finite)."""
    axis = options.get("axis", -1)
    if options.get("from_logits") or y_pred.ndim != 2 or type(axis) is not int or axis not in (-1, 1):
        return None
    k = compiled.kernels_for(y_pred, min_elements=compiled.ROW_KERNEL_MIN)
    f, eps = y_pred.dtype.type, backend.epsilon()
    return k if k is not None and f(eps) > 0 and f(1 - eps) > 0 else None


def _sparse_cce_compiled(y_true, y_pred, options):
    """The batch-mean value and gradient of sparse categorical crossentropy in one compiled pass over the
    probabilities (``_numba_kernels.sparse_cce``: no one-hot matrix, the NumPy path's sums), or None where
    that path does not apply (``_crossentropy_kernels``; float labels). The gradient equals the NumPy path's
    bit for bit; the value may differ by a few ulp (libm's log)."""
    if type(y_true) is not np.ndarray or y_true.dtype.kind not in "iu":
        return None
    labels = y_true[:, 0] if y_true.ndim == 2 and y_true.shape[1] == 1 else y_true
    k = _crossentropy_kernels(y_pred, options)
    if k is None or labels.shape != y_pred.shape[:1]:
        return None
    f, eps = y_pred.dtype.type, backend.epsilon()
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    values, grad, bad = k.sparse_cce(labels, y_pred, f(1.0 / labels.size), f(eps), f(1 - eps))
    if bad >= 0:
        return None  # a label out of range: the NumPy path raises its error
    return _mean(values), grad


def _cce_compiled(y_true, y_pred, options):
    """The batch-mean value and gradient of categorical crossentropy on probabilities in one compiled pass
    (``_numba_kernels.dense_cce``: the NumPy path's sums, so the gradient is bit for bit; the value to a few
    ulp of libm's log), or None where that path does not apply (``_crossentropy_kernels``; also label
    smoothing, and targets of another shape)."""
    if (options.get("label_smoothing") or type(y_true) is not np.ndarray or y_true.shape != y_pred.shape
            or y_true.dtype.kind not in "biuf"):
        return None
    k = _crossentropy_kernels(y_pred, options)
    if k is None:
        return None
    f, eps = y_pred.dtype.type, backend.epsilon()
    targets = np.ascontiguousarray(y_true, dtype=y_pred.dtype)  # (the general path casts them the same way)
    values, grad = k.dense_cce(targets, y_pred, f(1.0 / len(y_pred)), f(eps), f(1 - eps))
    return _mean(values), grad


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, axis=-1):
    """categorical_crossentropy against one-hot(y) for integer labels y."""
    return categorical_crossentropy(_one_hot_labels(y_true, y_pred, axis), y_pred, from_logits, axis=axis)


def _scce_grad(y_true, y_pred, dv, from_logits=False, axis=-1):
    return _cce_grad(_one_hot_labels(y_true, y_pred, axis), y_pred, dv, from_logits, axis=axis)


def _hinge_labels(y_true):
    """Keras converts 0/1 labels to −1/+1 for the hinge losses."""
    if np.all((y_true == 0) | (y_true == 1)):
        return 2.0 * y_true - 1.0
    return y_true


def hinge(y_true, y_pred):
    """mean(max(1 − y·p, 0)), y in {−1, +1} (0/1 labels converted)"""
    return np.mean(np.maximum(1.0 - _hinge_labels(y_true) * y_pred, 0.0), axis=-1)


def _hinge_grad(y_true, y_pred, dv):
    y = _hinge_labels(y_true)
    return dv[..., None] * -y * (1.0 - y * y_pred > 0) / _k(y_pred)


def squared_hinge(y_true, y_pred):
    """mean(max(1 − y·p, 0)²)"""
    return np.mean(np.square(np.maximum(1.0 - _hinge_labels(y_true) * y_pred, 0.0)), axis=-1)


def _squared_hinge_grad(y_true, y_pred, dv):
    y = _hinge_labels(y_true)
    return dv[..., None] * -2.0 * y * np.maximum(1.0 - y * y_pred, 0.0) / _k(y_pred)


def categorical_hinge(y_true, y_pred):
    """max(max((1 − y)·p) − Σ y·p + 1, 0)"""
    pos = np.sum(y_true * y_pred, axis=-1)
    neg = np.max((1.0 - y_true) * y_pred, axis=-1)
    return np.maximum(neg - pos + 1.0, 0.0)


def _categorical_hinge_grad(y_true, y_pred, dv):
    masked = (1.0 - y_true) * y_pred
    active = (categorical_hinge(y_true, y_pred) > 0)[..., None]
    top = np.zeros_like(y_pred)
    np.put_along_axis(top, np.argmax(masked, axis=-1)[..., None], 1.0, axis=-1)
    return dv[..., None] * active * ((1.0 - y_true) * top - y_true)


def huber(y_true, y_pred, delta=1.0):
    """mean(½x² if |x| ≤ δ else δ|x| − ½δ²), x = p − y"""
    x = y_pred - y_true
    a = np.abs(x)
    return np.mean(np.where(a <= delta, 0.5 * x * x, delta * a - 0.5 * delta * delta), axis=-1)


def _huber_grad(y_true, y_pred, dv, delta=1.0):
    x = y_pred - y_true
    return dv[..., None] * np.where(np.abs(x) <= delta, x, delta * np.sign(x)) / _k(y_pred)


def log_cosh(y_true, y_pred):
    """mean(log cosh(p − y)), computed as x + softplus(−2x) − log 2"""
    x = y_pred - y_true
    return np.mean(x + np.maximum(-2 * x, 0) + np.log1p(np.exp(-np.abs(2 * x))) - math.log(2.0), axis=-1)


def _log_cosh_grad(y_true, y_pred, dv):
    return dv[..., None] * np.tanh(y_pred - y_true) / _k(y_pred)


def kl_divergence(y_true, y_pred):
    """Σ y·log(y / p), y and p clipped to [ε, 1]"""
    eps = backend.epsilon()
    y = np.clip(y_true, eps, 1)
    p = np.clip(y_pred, eps, 1)
    return np.sum(y * np.log(y / p), axis=-1)


def _kl_grad(y_true, y_pred, dv):
    eps = backend.epsilon()
    p, flows = _clip(y_pred, eps, 1)
    return dv[..., None] * -np.clip(y_true, eps, 1) / p * flows


def poisson(y_true, y_pred):
    """mean(p − y·log(p + ε))"""
    return np.mean(y_pred - y_true * np.log(y_pred + backend.epsilon()), axis=-1)


def _poisson_grad(y_true, y_pred, dv):
    return dv[..., None] * (1.0 - y_true / (y_pred + backend.epsilon())) / _k(y_pred)


def _l2_normalize(x, axis):
    norm = np.sqrt(np.maximum(np.sum(x * x, axis=axis, keepdims=True), 1e-12))
    return x / norm, norm


def cosine_similarity(y_true, y_pred, axis=-1):
    """−Σ ŷ·p̂ with ŷ, p̂ the L2-normalised vectors (Keras returns the negative similarity)"""
    return -np.sum(_l2_normalize(y_true, axis)[0] * _l2_normalize(y_pred, axis)[0], axis=axis)


def _cosine_grad(y_true, y_pred, dv, axis=-1):
    yn = _l2_normalize(y_true, axis)[0]
    pn, norm = _l2_normalize(y_pred, axis)
    cos = np.sum(yn * pn, axis=axis, keepdims=True)
    flows = np.sum(y_pred * y_pred, axis=axis, keepdims=True) > 1e-12
    return np.expand_dims(dv, axis) * -(yn - pn * np.where(flows, cos, 0)) / norm


# --- Loss classes -----------------------------------------------------------------------------------
def _batch_mean(values, dtype):
    """The mean of the per-sample ``values`` (a float) and its gradient dv = 1/n for each value, in ``dtype``:
    the "sum_over_batch_size" reduction of a training step. (add.reduce is ndarray.sum, and empty + fill is
    np.full, without their Python wrappers: the same numbers, ~1 µs less per step.)"""
    dv = np.empty(values.shape, dtype)
    dv.fill(1.0 / values.size)
    return _mean(values), dv


def _mean(values):
    """The mean of the per-sample ``values`` as a float (add.reduce: ndarray.sum minus its wrapper)."""
    return float(np.add.reduce(values, axis=None)) / values.size


class Loss:
    """Base: ``call`` gives per-sample values, ``grad`` their backward; ``__call__`` reduces."""

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        if reduction == "auto":
            raise ValueError(f"Invalid value for argument `reduction`. Expected one of {REDUCTIONS}. Received: "
                             "reduction=auto (a Keras 2 value; use 'sum_over_batch_size', its Keras 3 equivalent).")
        if reduction not in REDUCTIONS:
            raise ValueError(f"Invalid value for argument `reduction`. Expected one of {REDUCTIONS}. "
                             f"Received: reduction={reduction!r}")
        self.name = name or backend.snake_case(type(self).__name__)
        self.reduction = reduction
        self.dtype = dtype

    def call(self, y_true, y_pred):
        raise NotImplementedError

    def grad(self, y_true, y_pred, dv):
        raise NotImplementedError(f"{type(self).__name__} has no grad(); glassnet needs it to train.")

    def _prepare(self, y_true, y_pred):
        y_pred = np.asarray(y_pred)
        if y_pred.dtype.kind != "f":
            y_pred = y_pred.astype(backend.floatx())
        y_true = np.asarray(y_true)
        if not getattr(self, "sparse_labels", False):
            if y_true.dtype != y_pred.dtype:
                y_true = y_true.astype(y_pred.dtype)
            y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
        return y_true, y_pred

    def _weights(self, sample_weight, values):
        if sample_weight is None:
            return None
        w = np.asarray(sample_weight, dtype=values.dtype)
        if values.ndim == 0:  # one value for the whole batch (Dice, Tversky with axis=None): as Keras, each weight
            return w          # weighs a copy of it, and the mean divides by the number of weights
        while w.ndim < values.ndim:
            w = w[..., None]
        while w.ndim > values.ndim and w.shape[-1] == 1:
            w = w[..., 0]
        return np.broadcast_to(w, values.shape)

    def _divisor(self, values, w):
        if self.reduction == "mean_with_sample_weight" and w is not None:
            return float(w.sum())
        return float(values.size)

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = self._prepare(y_true, y_pred)
        values = self.call(y_true, y_pred)
        w = self._weights(sample_weight, values)
        if w is not None:
            values = values * w
        if self.reduction in (None, "none"):
            return values
        total = values.sum()
        if self.reduction == "sum":
            return total
        divisor = self._divisor(values, w)
        return total / divisor if divisor else total * 0

    def value_and_grad(self, y_true, y_pred, sample_weight=None):
        """The reduced loss (a float) and its gradient with respect to ``y_pred`` (same shape)."""
        shape = np.shape(y_pred)
        if (sample_weight is None and self.reduction == "sum_over_batch_size" and type(y_true) is np.ndarray
                and type(y_pred) is np.ndarray and y_true.shape == shape and y_true.dtype == y_pred.dtype):
            values = self.call(y_true, y_pred)  # the common training case: nothing to align or weigh
            loss, dv = _batch_mean(values, y_pred.dtype)
            return loss, self.grad(y_true, y_pred, dv)
        y_true, y_pred = self._prepare(y_true, y_pred)
        values = self.call(y_true, y_pred)
        w = self._weights(sample_weight, values)
        weighted = values if w is None else values * w
        if self.reduction in (None, "none"):
            raise ValueError(f"Loss '{self.name}' has reduction={self.reduction!r}, which gives one value per "
                             "sample; training needs a scalar. Use reduction='sum_over_batch_size'.")
        total = float(weighted.sum())
        divisor = 1.0 if self.reduction == "sum" else self._divisor(weighted, w)
        if not divisor:
            divisor = 1.0
        dv = np.full(values.shape, 1.0 / divisor, dtype=y_pred.dtype) if w is None else w / divisor
        if dv.shape != values.shape:  # weights of a whole-batch value: d(Σ wᵢ·v)/dv = Σ wᵢ
            dv = np.asarray(dv.sum(), dtype=dv.dtype)
        return total / divisor, self.grad(y_true, y_pred, dv).reshape(shape).astype(y_pred.dtype, copy=False)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class LossFunctionWrapper(Loss):
    """A Loss from a ``values`` function and its ``grad`` function, with keyword options."""

    def __init__(self, fn, grad_fn, name=None, reduction="sum_over_batch_size", dtype=None, **options):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.fn, self.grad_fn, self.options = fn, grad_fn, options

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self.options)

    def grad(self, y_true, y_pred, dv):
        return self.grad_fn(y_true, y_pred, dv, **self.options)

    dense_form = None  # (to_targets, fn, grad_fn) of a loss on labels computed on dense targets (sparse CE)
    fast_form = None  # f(y_true, y_pred, options) -> (loss, grad) or None: a fused path (compiled kernels, or
    #                   NumPy in fewer passes) giving the general path's numbers

    def value_and_grad(self, y_true, y_pred, sample_weight=None):
        fast_form, dense = self.fast_form, self.dense_form
        if ((fast_form is not None or dense is not None)  # (most losses have neither: nothing else to check)
                and sample_weight is None and self.reduction == "sum_over_batch_size"
                and type(y_pred) is np.ndarray and y_pred.dtype.kind == "f"  # the training step: no weights, the mean,
                and type(self).call is LossFunctionWrapper.call  # and the class's own fn and grad_fn (a
                and type(self).grad is LossFunctionWrapper.grad):  # subclass overriding them is used as such)
            if fast_form is not None:
                fast = fast_form(y_true, y_pred, self.options)
                if fast is not None:
                    return fast
            if dense is not None:
                # the labels become targets (checked, one-hot) once, not once for the value and again for the
                # gradient: the same functions on the same arrays as the general path, so the same numbers
                to_targets, fn, grad_fn = dense
                targets = to_targets(y_true, y_pred, self.options.get("axis", -1))
                loss, dv = _batch_mean(fn(targets, y_pred, **self.options), y_pred.dtype)
                return loss, grad_fn(targets, y_pred, dv, **self.options)
        return super().value_and_grad(y_true, y_pred, sample_weight)

    def get_config(self):
        return {**super().get_config(), **self.options}


def _loss_class(class_name, fn, grad_fn, default_name, aliases=(), sparse=False, dense_form=None, fast_form=None,
                positional=None, per_sample=True, **defaults):
    """A LossFunctionWrapper class for ``fn``: its options ``defaults`` as keyword arguments, positional arguments
    in Keras 3's order (``positional``; by default the options, then reduction, name, dtype), registered by name.
    ``per_sample=False``: the loss gives one value for a whole batch, so it cannot be a metric."""
    params = list(defaults)
    order = list(positional or params + ["reduction", "name", "dtype"])
    accepted = params + ["reduction", "name", "dtype"]

    def __init__(self, *args, **kwargs):
        if len(args) > len(order):
            raise TypeError(f"{class_name} takes at most {len(order)} positional arguments ({', '.join(order)}); "
                            f"got {len(args)}.")
        for key, value in zip(order, args):
            if key in kwargs:
                raise TypeError(f"{class_name} got multiple values for argument {key!r}.")
            kwargs[key] = value
        unknown = set(kwargs) - set(accepted)
        if unknown:
            raise TypeError(f"{class_name} got unexpected arguments {sorted(unknown)}; it accepts {accepted}.")
        reduction = kwargs.pop("reduction", "sum_over_batch_size")
        name, dtype = kwargs.pop("name", default_name), kwargs.pop("dtype", None)
        LossFunctionWrapper.__init__(self, fn, grad_fn, name=name, reduction=reduction, dtype=dtype,
                                     **{**defaults, **kwargs})

    cls = type(class_name, (LossFunctionWrapper,), {"__init__": __init__, "__doc__": fn.__doc__,
                                                    "sparse_labels": sparse, "dense_form": dense_form,
                                                    "fast_form": fast_form and staticmethod(fast_form),
                                                    "per_sample": per_sample, "__module__": __name__})
    register("losses")(cls)
    tab = table("loss_functions")
    for alias in (fn.__name__,) + tuple(aliases):
        tab[alias] = cls
    tab[fn] = cls
    return cls


MeanSquaredError = _loss_class("MeanSquaredError", mean_squared_error, _mse_grad, "mean_squared_error",
                               ("mse", "MSE"), fast_form=_mse_fused)
MeanAbsoluteError = _loss_class("MeanAbsoluteError", mean_absolute_error, _mae_grad, "mean_absolute_error",
                                ("mae", "MAE"))
MeanAbsolutePercentageError = _loss_class("MeanAbsolutePercentageError", mean_absolute_percentage_error,
                                          _mape_grad, "mean_absolute_percentage_error", ("mape", "MAPE"))
MeanSquaredLogarithmicError = _loss_class("MeanSquaredLogarithmicError", mean_squared_logarithmic_error,
                                          _msle_grad, "mean_squared_logarithmic_error", ("msle", "MSLE"))
BinaryCrossentropy = _loss_class("BinaryCrossentropy", binary_crossentropy, _bce_grad, "binary_crossentropy",
                                 from_logits=False, label_smoothing=0.0, axis=-1)
CategoricalCrossentropy = _loss_class("CategoricalCrossentropy", categorical_crossentropy, _cce_grad,
                                      "categorical_crossentropy", fast_form=_cce_compiled, from_logits=False,
                                      label_smoothing=0.0, axis=-1)
_SparseCategoricalCrossentropy = _loss_class("SparseCategoricalCrossentropy", sparse_categorical_crossentropy,
                                             _scce_grad, "sparse_categorical_crossentropy", sparse=True,
                                             dense_form=(_one_hot_labels, categorical_crossentropy, _cce_grad),
                                             fast_form=_sparse_cce_compiled, from_logits=False, axis=-1)


@register("losses")
class SparseCategoricalCrossentropy(_SparseCategoricalCrossentropy):
    """−log p[y] for integer labels y (softmax of logits with ``from_logits``). ``ignore_class`` (e.g. a "void"
    label 255 in segmentation maps) leaves its labels out as Keras 3 does: their values are 0, and the mean is
    over the other labels only (with "sum_over_batch_size"; "sum" and "mean_with_sample_weight" just drop them)."""

    def __init__(self, from_logits=False, ignore_class=None, reduction="sum_over_batch_size", axis=-1,
                 name="sparse_categorical_crossentropy", dtype=None):
        if ignore_class is not None and (isinstance(ignore_class, bool)
                                         or not isinstance(ignore_class, (int, np.integer))):
            raise ValueError(f"ignore_class must be a class id (a whole number) or None, got {ignore_class!r}.")
        super().__init__(from_logits=from_logits, axis=axis, reduction=reduction, name=name, dtype=dtype)
        self.ignore_class = None if ignore_class is None else int(ignore_class)

    def _without_ignored(self, y_true, y_pred, sample_weight):
        """(labels with the ignored ones set to 0, sample weights with Keras 3's mask folded in)."""
        labels, y_pred = np.asarray(y_true), np.asarray(y_pred)
        axis = self.options["axis"]
        if labels.ndim == y_pred.ndim and labels.shape[axis] == 1:
            labels = np.squeeze(labels, axis=axis)
        valid = labels != self.ignore_class
        dtype = y_pred.dtype if y_pred.dtype.kind == "f" else np.dtype(backend.floatx())
        if self.reduction in ("sum_over_batch_size", "mean"):  # the valid labels' mean: each weighs total / valid
            count = int(valid.sum())
            mask = np.where(valid, valid.size / count if count else 0.0, 0.0).astype(dtype)
        else:
            mask = valid.astype(dtype)
        if sample_weight is not None:  # one weight per sample, or per label, aligned as every loss aligns them
            mask = self._weights(sample_weight, mask) * mask
        return np.where(valid, labels, 0), mask

    def __call__(self, y_true, y_pred, sample_weight=None):
        if self.ignore_class is not None:
            y_true, sample_weight = self._without_ignored(y_true, y_pred, sample_weight)
        return super().__call__(y_true, y_pred, sample_weight)

    def value_and_grad(self, y_true, y_pred, sample_weight=None):
        if self.ignore_class is not None:
            y_true, sample_weight = self._without_ignored(y_true, y_pred, sample_weight)
        return super().value_and_grad(y_true, y_pred, sample_weight)

    def get_config(self):
        return {**super().get_config(), "ignore_class": self.ignore_class}


for _alias in ("sparse_categorical_crossentropy", sparse_categorical_crossentropy):
    table("loss_functions")[_alias] = SparseCategoricalCrossentropy
BinaryFocalCrossentropy = _loss_class("BinaryFocalCrossentropy", binary_focal_crossentropy, _binary_focal_grad,
                                      "binary_focal_crossentropy", apply_class_balancing=False, alpha=0.25, gamma=2.0,
                                      from_logits=False, label_smoothing=0.0, axis=-1)
CategoricalFocalCrossentropy = _loss_class("CategoricalFocalCrossentropy", categorical_focal_crossentropy,
                                           _categorical_focal_grad, "categorical_focal_crossentropy", alpha=0.25,
                                           gamma=2.0, from_logits=False, label_smoothing=0.0, axis=-1)
Hinge = _loss_class("Hinge", hinge, _hinge_grad, "hinge")
SquaredHinge = _loss_class("SquaredHinge", squared_hinge, _squared_hinge_grad, "squared_hinge")
CategoricalHinge = _loss_class("CategoricalHinge", categorical_hinge, _categorical_hinge_grad, "categorical_hinge")
Huber = _loss_class("Huber", huber, _huber_grad, "huber_loss", ("huber_loss",), delta=1.0)
LogCosh = _loss_class("LogCosh", log_cosh, _log_cosh_grad, "log_cosh", ("logcosh",))
KLDivergence = _loss_class("KLDivergence", kl_divergence, _kl_grad, "kl_divergence",
                           ("kld", "KLD", "kullback_leibler_divergence"))
Poisson = _loss_class("Poisson", poisson, _poisson_grad, "poisson")
CosineSimilarity = _loss_class("CosineSimilarity", cosine_similarity, _cosine_grad, "cosine_similarity", axis=-1)
Dice = _loss_class("Dice", dice, _dice_grad, "dice", positional=("reduction", "name", "axis", "dtype"),
                   per_sample=False, axis=None)
Tversky = _loss_class("Tversky", tversky, _tversky_grad, "tversky",
                      positional=("alpha", "beta", "reduction", "name", "axis", "dtype"), per_sample=False, alpha=0.5,
                      beta=0.5, axis=None)

mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error
mape = MAPE = mean_absolute_percentage_error
msle = MSLE = mean_squared_logarithmic_error
kld = KLD = kullback_leibler_divergence = kl_divergence
logcosh = log_cosh

NAMES = ("mse", "mae", "mape", "msle", "binary_crossentropy", "categorical_crossentropy",
         "sparse_categorical_crossentropy", "hinge", "squared_hinge", "categorical_hinge", "huber", "log_cosh",
         "kl_divergence", "poisson", "cosine_similarity", "binary_focal_crossentropy",
         "categorical_focal_crossentropy", "dice", "tversky")


def get(identifier):
    """A Loss instance from a name ('mse'), a loss function, a config dict, or a Loss instance."""
    if isinstance(identifier, Loss):
        return identifier
    tab = table("loss_functions")
    if isinstance(identifier, str):
        if identifier in ("crossentropy", "ce"):
            return _ResolveCrossentropy()
        cls = tab.get(identifier) or table("losses").get(identifier)
        if cls is None:
            raise ValueError(f"Unknown loss {identifier!r}. Known losses: {', '.join(NAMES)} (and their Keras class "
                             "names, e.g. 'MeanSquaredError').")
        return cls()
    if isinstance(identifier, dict):
        cls = table("losses").get(identifier.get("class_name"))
        if cls is None:
            raise ValueError(f"Unknown loss class {identifier.get('class_name')!r} in config.")
        return cls.from_config(dict(identifier.get("config") or {}))
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if callable(identifier):
        try:
            cls = tab.get(identifier)
        except TypeError:
            cls = None
        if cls is not None:
            return cls()
        raise TypeError(f"Loss {getattr(identifier, '__name__', identifier)!r} is a plain function, so glassnet "
                        "cannot differentiate it. Subclass glassnet.losses.Loss and implement call() and grad(), "
                        "or use one of: " + ", ".join(NAMES) + ".")
    raise TypeError(f"Could not interpret loss {identifier!r}.")


class _ResolveCrossentropy(Loss):
    """'crossentropy' / 'ce': binary, sparse or categorical by the shapes of the first batch (Keras 3)."""

    def __init__(self):
        super().__init__(name="crossentropy")
        self._resolved = None

    def _resolve(self, y_true, y_pred):
        if self._resolved is None:
            y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
            if y_pred.shape[-1] == 1:
                self._resolved = BinaryCrossentropy()
            elif y_true.ndim < y_pred.ndim or (y_true.shape[-1] == 1 and y_pred.shape[-1] > 1):
                self._resolved = SparseCategoricalCrossentropy()
            else:
                self._resolved = CategoricalCrossentropy()
        return self._resolved

    def __call__(self, y_true, y_pred, sample_weight=None):
        return self._resolve(y_true, y_pred)(y_true, y_pred, sample_weight)

    def value_and_grad(self, y_true, y_pred, sample_weight=None):
        return self._resolve(y_true, y_pred).value_and_grad(y_true, y_pred, sample_weight)
