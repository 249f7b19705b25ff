"""A small dense network's whole training step as one compiled call (the optional numba fast path).

A Sequential model of Dense layers — the tutorial's 8-10-1 network and its kin — spends most of a training step
in Python: per layer a forward closure, a backward closure, activation closures, gradient bookkeeping, each a
few NumPy calls on arrays of a few hundred numbers. When numba is installed (``pip install glassnet[fast]``)
and the network is small, ``Model._train_batch`` instead hands the batch to ``_numba_kernels.dense_chain_step``,
which runs forward, loss and backward in one call and writes every gradient into the model's flat gradient
vector (``engine.flat``); the optimizer, metrics, callbacks and everything after them run as usual.

It applies only where it computes what the layers compute: every layer a trainable Dense (linear, relu, sigmoid
or tanh; with or without bias) without regularizers (after Normalization layers in front, which run as usual),
all weights in the optimizer's one flat group of the input's dtype (float32/float64), the loss plain mean squared error or binary crossentropy (probabilities, no
label smoothing) with the default reduction and no sample weights, NumPy's error state not set to raise, and
the batch at most ``MAX_ROWS`` rows costing at most ``MAX_WORK`` (``cost_per_row``: multiply-adds, and more for
each sigmoid or tanh; beyond them the layers' BLAS and vectorized ufunc calls are faster), no optimizer or layer
changed since the plan was made (once per ``fit`` / ``train_on_batch`` call). Anything
else takes the layer-by-layer path, which stays the reference: tests/test_dense_chain.py trains the same
networks both ways and compares losses, metrics, weights and gradients (equal to float rounding: the kernel sums
each x·W in plain k order, BLAS in blocks). Off with ``GLASSNET_COMPILED=0`` like every compiled kernel.

The plan (one row per layer): fan-in, units, offsets of the kernel and bias in the flat vectors (−1: no
bias), activation code, and, in units of the batch's rows, where the layer's output and its delta live in the
scratch vector; row 0's last column is where the scratch for a transposed kernel starts (also per row).
"""
import numpy as np

from .. import activations as _activations
from . import backend, compiled

MAX_WORK = 1 << 16  # the cost (below) of a training batch up to which the compiled step is used, and
MAX_ROWS = 128      # its rows: the kernel's plain loops beat the layers' BLAS calls up to ~300 rows of the
#                     tutorial's 8-10-1 (batch 32: 0.3x the layer path's time, 256: 0.6-0.9x, 512: 1.2x) and up to
#                     ~300k multiply-adds on wider layers (8-64-64-1 at batch 64: 0.74x)
INFERENCE_MAX_WORK = 1 << 13  # the cost of an inference call, and its rows, up to which the compiled forward wins:
INFERENCE_MAX_ROWS = 16       # inference has no backward closures to save, and the plain loops lose to BLAS sooner
#                               (8-10-1: 1 row 14.7 -> 9.0 µs, 32 rows even, 64 rows 1.2-1.3x slower)
MAX_FAN_IN = 512  # the kernels sum each product in plain order: its rounding grows with the fan-in (BLAS blocks)
TRANSCENDENTAL = 16  # the cost of one sigmoid, tanh or softmax output in multiply-adds: libm's tanh and exp, one
#                      value at a time, against NumPy's vectorized ones (8->256 sigmoid at batch 32: 1.8x slower
#                      compiled when counted as multiply-adds alone)
_ACTIVATIONS = ((_activations.linear, 0), (_activations.relu, 1), (_activations.sigmoid, 2), (_activations.tanh, 3))
_INFERENCE_ACTIVATIONS = _ACTIVATIONS + ((_activations.softmax, 4),)  # (the training step has no softmax backward)
_MSE, _BCE = 0, 1


class DenseChain:
    """The plan and scratch memory of one model's compiled training step (see the module docstring)."""

    __slots__ = ("prefix", "layers", "shape", "weights", "group", "value", "grad", "plan", "work", "loss_code",
                 "dtype", "fan_in", "units", "per_row", "rows_per_batch", "transpose_size")

    def __init__(self, prefix, layers, group, loss_code):
        self.prefix = tuple(prefix)  # Normalization layers in front: run as they are (no weights to train)
        self.layers = tuple(layers)
        self.shape = _shape(layers)
        index = {id(w): s for w, s in zip(group.weights, group.slices)}
        rows, plan = 0, []
        for layer in layers:
            bias = index[id(layer.bias)].start if layer.use_bias else -1
            act = _code(layer, _ACTIVATIONS)
            fan_in, units = layer.kernel.shape
            plan.append([fan_in, units, index[id(layer.kernel)].start, bias, act, rows, rows + units, 0])
            rows += 2 * units  # the layer's output (unused for the last: the caller's array), then its delta
        self.plan = np.array(plan, np.int64)
        self.plan[0, 7] = rows
        self.rows_per_batch = rows
        self.transpose_size = max(int(r[0] * r[1]) for r in plan)
        self.per_row = cost_per_row(layers)
        self.weights = [w for layer in layers for w in ((layer.kernel, layer.bias) if layer.use_bias else
                                                        (layer.kernel,))]
        self.group, self.value, self.grad = group, group.value, group.grad
        self.loss_code = loss_code
        self.dtype = group.dtype
        self.fan_in, self.units = int(plan[0][0]), int(plan[-1][1])
        self.work = np.empty(0, self.dtype)

    def step(self, x, y, optimizer):
        """``(loss, [output], [loss])`` for one batch, as ``Model._train_batch`` returns, with every gradient
        written; None when this batch (or the moment) is not one the compiled step takes."""
        groups = optimizer.groups
        if len(groups) != 1 or groups[0] is not self.group or _shape(self.layers) != self.shape:
            return None  # a new optimizer (or a rebuilt one), or a layer changed since the plan: the layer path
        dtype = self.dtype
        if (type(x) is not np.ndarray or type(y) is not np.ndarray or x.dtype != dtype or y.dtype != dtype
                or x.ndim != 2 or x.shape[1] != self.fan_in or y.shape != (x.shape[0], self.units)):
            return None
        n = x.shape[0]
        if (not n or n > MAX_ROWS or n * self.per_row > MAX_WORK or not compiled._switch.on
                or compiled._strict_errstate()):
            return None
        if self.prefix:  # (last: a batch turned down after it would run the prefix twice)
            x = _through(self.prefix, x, dtype)
            if x is None:
                return None
        x, y = _usable(x), _usable(y)
        if self.group.value is not self.value or self.group.grad is not self.grad:
            return None  # the group's buffers were replaced: not the planned ones
        need = n * self.rows_per_batch + self.transpose_size
        if self.work.size < need:
            self.work = np.empty(need, dtype)
        out = np.empty((n, self.units), dtype)  # a new array each step, as the layers give: metrics may keep it
        kernels = compiled._kernels if compiled._kernels else compiled._load()
        loss = kernels.dense_chain_step(x, y, self.value, self.grad, self.plan, self.work, out, self.loss_code,
                                        backend.epsilon())
        for w in self.weights:
            w._stale = False  # every gradient was written whole (engine.weight's lazy zeroing has nothing to do)
        return loss, [out], [loss]


def plan(model):
    """A DenseChain for ``model`` (a built, compiled Sequential about to train) when its training step can run
    compiled, else None."""
    from ..layers.core import Dense
    from ..losses import BinaryCrossentropy, MeanSquaredError
    layers = model._layers
    prefix = _prefix(layers)
    layers = layers[len(prefix):]
    heads = model._heads
    if (not layers or len(heads) != 1 or heads[0].weight != 1.0 or model._masking
            or model._regularized or model._activity):
        return None
    loss = heads[0].loss
    if type(loss) is MeanSquaredError and loss.reduction == "sum_over_batch_size":
        code = _MSE
    elif (type(loss) is BinaryCrossentropy and loss.reduction == "sum_over_batch_size"
          and loss.options == {"from_logits": False, "label_smoothing": 0.0, "axis": -1}):
        code = _BCE
    else:
        return None
    groups = model.optimizer.groups
    if len(groups) != 1 or groups[0].dtype.char not in "fd" or not groups[0].dtype.isnative:
        return None
    group = groups[0]
    weights = []
    for layer in layers:
        if (type(layer) is not Dense or not layer.trainable or layer.kernel_regularizer is not None
                or layer.bias_regularizer is not None or layer.activity_regularizer is not None):
            return None
        weights += [layer.kernel, layer.bias] if layer.use_bias else [layer.kernel]
    if len(weights) != len(group.weights) or {id(w) for w in weights} != {id(w) for w in group.weights}:
        return None
    if any(not w.trainable or w.dtype != group.dtype for w in weights):
        return None
    if not _fits(layers, _ACTIVATIONS, MAX_WORK) or not _prefix_fits(prefix, group.dtype):
        return None
    if not compiled.enabled():  # (last: it imports numba)
        return None
    return DenseChain(prefix, layers, group, code)


def cost_per_row(layers):
    """What one example costs the kernels, in multiply-adds: Σ fan-in·units, and TRANSCENDENTAL per output of a
    sigmoid, tanh or softmax."""
    cost = 0
    for layer in layers:
        cost += layer.kernel.size
        if layer.activation is not _activations.relu and layer.activation is not _activations.linear:
            cost += TRANSCENDENTAL * layer.units
    return int(cost)


def _shape(layers):
    """What a plan assumed of each layer: its kernel and bias weights, activation and use_bias (a tuple to compare
    on every call: a callback or the user may swap an activation, e.g. softmax for logits)."""
    return tuple((layer.kernel, layer.bias, layer.activation, layer.use_bias) for layer in layers)


# --- inference: predict / evaluate ----------------------------------------------------------------------------
class DenseForward:
    """The layers and codes of a small dense network's compiled forward pass (``Sequential.call``)."""

    __slots__ = ("prefix", "layers", "shape", "codes", "fan_in", "units", "per_row", "empty")

    def __init__(self, prefix, layers):
        self.prefix = tuple(prefix)
        self.layers = tuple(layers)
        self._plan()
        self.empty = {}  # dtype -> a 0-length bias stand-in for layers without one

    def _plan(self):
        """(Re)read the layers: False when they no longer fit the kernel (an activation swapped for another)."""
        layers = self.layers
        if not _fits(layers, _INFERENCE_ACTIVATIONS, INFERENCE_MAX_WORK):
            self.shape = None
            return False
        self.shape = _shape(layers)
        self.codes = np.array([[_code(layer, _INFERENCE_ACTIVATIONS), int(layer.use_bias)] for layer in layers],
                              np.int64)
        self.fan_in, self.units = layers[0].kernel.shape[0], layers[-1].units
        self.per_row = cost_per_row(layers)
        return True

    def __call__(self, x):
        """``f(x)`` of the whole chain, or None when ``x`` (or the moment) is not one the kernel takes."""
        if not compiled._switch.on or compiled._kernels is False or self.shape is None:
            return None  # (off, numba missing, or layers the kernel cannot take: one check per call)
        if (type(x) is not np.ndarray or x.ndim != 2 or x.shape[1] != self.fan_in or not x.shape[0]
                or x.shape[0] > INFERENCE_MAX_ROWS or x.shape[0] * self.per_row > INFERENCE_MAX_WORK):
            return None
        dtype = x.dtype
        if dtype.char not in "fd" or not dtype.isnative:
            return None
        if _shape(self.layers) != self.shape and not self._plan():
            return None  # (an activation or use_bias changed: planned again above, or no longer one for us)
        kernels, biases = [], []
        for layer in self.layers:
            W = layer.kernel.value
            b = layer.bias.value if layer.use_bias else self._empty(dtype)
            if W.dtype != dtype or b.dtype != dtype or not _kernel_ready(W) or not _kernel_ready(b):
                return None  # (another dtype, or a read-only or unaligned weight: another type to numba)
            kernels.append(W)
            biases.append(b)
        if compiled._strict_errstate():
            return None
        k = compiled._kernels if compiled._kernels is not None else compiled._load()
        if not k:
            return None  # numba is not installed (or broken): remembered by compiled, checked first next time
        if self.prefix:  # (last: a call turned down after it would run the prefix twice)
            x = _through(self.prefix, x, dtype)
            if x is None:
                return None
        x = _usable(x)
        out = np.empty((x.shape[0], self.units), dtype)
        k.dense_chain_forward(x, tuple(kernels), tuple(biases), self.codes, out)
        return out

    def _empty(self, dtype):
        e = self.empty.get(dtype)
        if e is None:
            e = self.empty[dtype] = np.empty(0, dtype)
        return e


def forward_plan(layers):
    """A DenseForward for these (Sequential) layers when a call through them can run as one compiled pass:
    every layer a Dense with a linear, relu, sigmoid, tanh or softmax activation, a fan-in of at most MAX_FAN_IN,
    the chain small (``cost_per_row`` ≤ INFERENCE_MAX_WORK: a row fits); False when it cannot; None while a layer
    is not built yet. (It does not import numba: the first call does, when it has a batch for the kernel.)"""
    from ..layers.core import Dense
    prefix = _prefix(layers)
    layers = layers[len(prefix):]
    if not layers or any(type(layer) is not Dense for layer in layers):
        return False
    if any(layer.kernel is None for layer in layers):
        return None
    if not _fits(layers, _INFERENCE_ACTIVATIONS, INFERENCE_MAX_WORK) or not _prefix_fits(prefix,
                                                                                         layers[0].kernel.dtype):
        return False
    return DenseForward(prefix, layers)


def _prefix(layers):
    """The Normalization layers at the front of ``layers`` (the tutorial's model standardizes its raw features
    so): they have no trainable weights and their training forward is their call, so a step runs them as they are
    and hands their output to the kernel."""
    from ..layers.preprocessing import Normalization
    n = 0
    while (n < len(layers) and type(layers[n]) is Normalization and not layers[n].trainable_weights
           and layers[n].activity_regularizer is None):
        n += 1
    return layers[:n]


def _through(prefix, x, dtype):
    """``x`` (checked: 2-D, of the kernel's dtype and width) through the prefix layers; None if the result were not
    of that dtype and shape any more (the plan checked the layers' dtypes; Normalization keeps the shape)."""
    shape = x.shape
    for layer in prefix:
        x = layer.call(x)
    return x if type(x) is np.ndarray and x.dtype == dtype and x.shape == shape else None


def _prefix_fits(prefix, dtype):
    """True when the prefix layers compute in ``dtype`` (their statistics are of it), so their output is."""
    return all(getattr(p, "mean", None) is not None and p.mean.dtype == dtype and p.variance.dtype == dtype
               for p in prefix)


def _fits(layers, activations, max_work):
    """True when these Dense layers suit the kernels: known activations, 2-D kernels of a fan-in of at most
    MAX_FAN_IN (the kernels sum each product in plain order: beyond it the rounding grows past BLAS's), cost."""
    for layer in layers:
        if (_code(layer, activations) is None or layer.kernel is None
                or layer.kernel.value.ndim != 2 or layer.kernel.shape[0] > MAX_FAN_IN
                or (layer.use_bias and layer.bias is None)):
            return False
    return cost_per_row(layers) <= max_work


def _usable(x):
    """``x`` itself when numba's kernels take it as compiled (C-contiguous, writeable, aligned), else a copy: a
    read-only input (np.frombuffer, a memory map) is another type to numba, which would compile the kernel again
    on the first such call (~0.6 s), and the results must not depend on the layout. (Small by construction.)"""
    return x if _kernel_ready(x) else x.copy()


def _code(layer, activations):
    """The kernels' code for the layer's activation in ``activations`` (None: not one of them)."""
    return next((code for fn, code in activations if layer.activation is fn), None)


def _kernel_ready(a):
    f = a.flags
    return f.c_contiguous and f.writeable and f.aligned
