"""Activation functions and their derivatives, side by side.

Each activation is ``f(x)`` plus ``grad(x, y, dy) -> dx`` where ``y = f(x)``: the chain rule
``dx = dy · f'(x)`` written with whatever is cheapest (often ``y`` itself, e.g. σ' = y(1 − y)).
"""
import math

import numpy as np

from .engine import compiled
from .engine.registry import register, table

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805


class Activation:
    """``f`` and its backward ``grad(x, y, dy)``; ``forward(x) -> (y, backward)``.

    ``per_example=True`` promises that each example's output depends on that example alone and that ``fn``
    and ``grad`` keep no state (true of every built-in activation): a training step may then run the layer on
    two halves of a batch at once (engine.parallel). Your own activations split only if they say so."""

    def __init__(self, name, fn, grad, fn_inplace=None, per_example=False, **params):
        self.__name__ = name
        self.name = name
        self.fn = fn
        self.grad = grad
        self.fn_inplace = fn_inplace  # optional f(x) that overwrites x (same values as fn); see forward
        self.per_example = per_example
        self.params = params

    def __call__(self, x, **params):
        params = params or self.params
        return self.fn(x, **params) if params else self.fn(x)

    def forward(self, x, overwrite=False):
        """``(f(x), backward)``. ``overwrite=True``: the caller owns ``x`` and no longer needs it, so an
        activation with ``fn_inplace`` (relu) may write ``f(x)`` into ``x`` instead of allocating."""
        if overwrite and self.fn_inplace is not None and not self.params and isinstance(x, np.ndarray) \
                and x.flags.writeable:
            y = self.fn_inplace(x)
        else:
            y = self.fn(x, **self.params)

        params = self.params
        if not params:  # (the common case: no ** unpacking on every backward call)
            grad = self.grad
            return y, lambda dy: grad(x, y, dy)

        def backward(dy):
            return self.grad(x, y, dy, **params)

        return y, backward

    def __repr__(self):
        return f"<activation {self.name}>"


def _define(name, fn, grad, *aliases, fn_inplace=None):
    act = Activation(name, fn, grad, fn_inplace=fn_inplace, per_example=True)
    tab = table("activations")
    for n in (name,) + aliases:
        tab[n] = act
    return act


def _sigmoid(x):
    # σ(x) = 1 / (1 + e^−x) = ½(1 + tanh(x/2)): the tanh form never overflows
    y = np.tanh(x * 0.5)
    if y.size <= _SMALL:  # the same operations; on a few values NumPy's in-place ops with a Python scalar
        return (y + 1) * 0.5  # cost ~2x its allocating ones (a 1-row predict: 2.6 -> 1.8 µs)
    y += 1
    y *= 0.5
    return y


_SMALL = 256  # values up to which a new array is cheaper than an in-place op with a scalar (see _sigmoid)


def _erf(x):
    try:
        from scipy.special import erf
    except ImportError:  # exact to double precision, one Python call per element
        erf = np.frompyfunc(math.erf, 1, 1)
    return np.asarray(erf(x), dtype=x.dtype)


# --- the activations: forward, then backward ------------------------------------------------------
# relu'(x) = [x > 0] = [y > 0] (y = max(x, 0); NaN compares False either way): the backward reads y,
# so relu may overwrite x in place (Activation.forward(x, overwrite=True))
def _relu_grad(x, y, dy):
    k = compiled.kernels_for(dy, y) if dy.size >= compiled.MIN_ELEMENTS and dy.shape == y.shape else None
    return k.relu_grad(dy, y) if k is not None else dy * (y > 0)  # compiled: the same product, one pass


relu = _define("relu", lambda x: np.maximum(x, 0), _relu_grad, fn_inplace=lambda x: np.maximum(x, 0, out=x))
sigmoid = _define("sigmoid", _sigmoid,
                  lambda x, y, dy: dy * y * (1 - y))
tanh = _define("tanh", np.tanh,
               lambda x, y, dy: dy * (1 - y * y))
linear = _define("linear", lambda x: x,
                 lambda x, y, dy: dy, "None")
exponential = _define("exponential", np.exp,
                      lambda x, y, dy: dy * y)
softsign = _define("softsign", lambda x: x / (1 + np.abs(x)),
                   lambda x, y, dy: dy / np.square(1 + np.abs(x)))
# softplus(x) = log(1 + eˣ) = max(x, 0) + log1p(e^−|x|);  softplus'(x) = σ(x)
softplus = _define("softplus", lambda x: np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))),
                   lambda x, y, dy: dy * _sigmoid(x))
# silu(x) = x·σ(x);  silu'(x) = σ(x)·(1 + x·(1 − σ(x)))
silu = _define("silu", lambda x: x * _sigmoid(x),
               lambda x, y, dy: dy * (lambda s: s * (1 + x * (1 - s)))(_sigmoid(x)), "swish")
swish = silu
# hard_sigmoid (Keras 3) = relu6(x + 3) / 6 = clip(x/6 + 1/2, 0, 1).  Keras 2 used 0.2·x + 0.5.
hard_sigmoid = _define("hard_sigmoid", lambda x: np.clip(x / 6.0 + 0.5, 0, 1),
                       lambda x, y, dy: dy * ((x > -3) & (x < 3)) / 6.0)


def _elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype, copy=False)


# elu(x) = x if x > 0 else α(eˣ − 1);  elu'(x) = 1 if x > 0 else y + α
elu = _define("elu", _elu, lambda x, y, dy, alpha=1.0: dy * np.where(x > 0, 1, y + alpha))
# selu(x) = λ·elu(x, α);  selu'(x) = λ if x > 0 else y + λα
selu = _define("selu", lambda x: SELU_SCALE * _elu(x, SELU_ALPHA),
               lambda x, y, dy: dy * np.where(x > 0, SELU_SCALE, y + SELU_SCALE * SELU_ALPHA))
# leaky_relu(x) = x if x > 0 else s·x  (Keras 3 default slope 0.2)
leaky_relu = _define("leaky_relu",
                     lambda x, negative_slope=0.2: np.where(x > 0, x, negative_slope * x).astype(x.dtype, copy=False),
                     lambda x, y, dy, negative_slope=0.2: dy * np.where(x > 0, 1, negative_slope).astype(x.dtype))

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _gelu(x, approximate=False):
    if approximate:  # 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))
        return 0.5 * x * (1 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2.0)))  # x·Φ(x)


def _gelu_grad(x, y, dy, approximate=False):
    if approximate:
        u = _SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)
        t = np.tanh(u)
        du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
        return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
    cdf = 0.5 * (1 + _erf(x / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return dy * (cdf + x * pdf)  # Φ(x) + x·φ(x)


gelu = _define("gelu", _gelu, _gelu_grad)


def _softmax(x, axis=-1):
    # compiled: the same formula in one pass (libm's exp: a few ulp from NumPy's), from ROW_KERNEL_MIN
    # values in rows of <= 32 (a classifier's output); below, and in wider rows, NumPy's five calls are faster
    if type(x) is np.ndarray and x.ndim >= 2 and axis in (-1, x.ndim - 1) and 0 < x.shape[-1] <= 32 \
            and x.size >= compiled.ROW_KERNEL_MIN:
        k = compiled.kernels_for(x, min_elements=0)
        if k is not None:
            return k.softmax_rows(x.reshape(-1, x.shape[-1])).reshape(x.shape)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# softmax backward: dx = y ⊙ (dy − Σ(dy ⊙ y))
softmax = _define("softmax", _softmax,
                  lambda x, y, dy, axis=-1: y * (dy - (dy * y).sum(axis=axis, keepdims=True)))


def _log_softmax(x, axis=-1):
    s = x - x.max(axis=axis, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=axis, keepdims=True))


log_softmax = _define("log_softmax", _log_softmax,
                      lambda x, y, dy, axis=-1: dy - np.exp(y) * dy.sum(axis=axis, keepdims=True))

ALL = ("relu", "sigmoid", "tanh", "softmax", "linear", "elu", "selu", "softplus", "softsign",
       "leaky_relu", "gelu", "silu", "swish", "hard_sigmoid", "exponential", "log_softmax")


def get(identifier):
    """An Activation from a name ('relu'), None (linear), or an Activation instance."""
    if identifier is None:
        return linear
    if isinstance(identifier, Activation):
        return identifier
    if isinstance(identifier, str):
        act = table("activations").get(identifier)
        if act is None:
            raise ValueError(f"Unknown activation {identifier!r}. Known activations: {', '.join(ALL)}. "
                             "For your own function, use glassnet.activations.Activation(name, fn, grad).")
        return act
    if isinstance(identifier, dict):  # a Keras-style config
        return get(identifier.get("config", identifier.get("class_name")))
    if callable(identifier):
        raise TypeError(
            f"Activation {getattr(identifier, '__name__', identifier)!r} is a plain function, so glassnet cannot "
            "differentiate it. Wrap it with its derivative: glassnet.activations.Activation(name, fn, "
            "grad=lambda x, y, dy: dy * f_prime(x)), or use one of: " + ", ".join(ALL) + ".")
    raise TypeError(f"Could not interpret activation {identifier!r}.")


def serialize(act):
    return act.name
