"""Which layers of a model may run as two half-batches on two threads, and running them (engine.parallel).

Shared by Sequential (a front of leading layers) and Functional (a chain of calls from its one input).
"""
import math
import numbers

import numpy as np

from ..engine import parallel
from ..engine.layer import Layer
from ..engine.weight import Weight, shard, unshard


def per_example(layer):
    """May ``layer`` run on two halves of a batch at once, in training (``forward``) and inference (``call``)?
    Its forward's class declares ``batch_parallel``, its activation (if any) is ``per_example``, it has no
    activity regularizer (the penalty is recorded on the layer), and ``call`` was not overridden apart from
    ``forward``."""
    activation = getattr(layer, "activation", None)
    return (layer._forward_declares("batch_parallel") and layer.activity_regularizer is None
            and (activation is None or getattr(activation, "per_example", False)) and _call_kept(type(layer)))


def _call_kept(cls):
    """True unless a subclass overrides ``call`` (inference) apart from ``forward``: the class that declares
    ``batch_parallel`` (the one defining ``forward``) speaks for ``call`` only if it defines ``call`` too or
    leaves it to ``Layer``."""
    def owner(name):
        return next((c for c in cls.__mro__ if name in vars(c)), None)
    return owner("call") in (Layer, owner("forward"))


def plan(front, rest):
    """``work`` of a front — a list of ``(layer, output shape)`` — that may split, else 0. It must include a layer
    with trainable weights (a convolution) and hold nearly all the model's work (``rest``: the other layers and
    output shapes): BLAS runs on one thread per half for a whole epoch, so heavy layers after the front (a second
    convolution after a BatchNormalization, say) would run on one core (measured: such a model trained 10-15%
    slower split). Unknown sizes: no estimate, no split."""
    if not any(layer.trainable_weights for layer, _ in front):
        return 0
    work = sum(estimate(layer, shape) for layer, shape in front)
    if work == math.inf or sum(estimate(layer, shape) for layer, shape in rest) * parallel.MAX_REST_SHARE > work:
        return 0
    return work


def estimate(layer, shape):
    """A rough count of a layer's multiply-adds per example, from its output shape and weights: for Dense,
    Conv1D and Conv2D (output elements) x (kernel size / output channels); for other layers with weights the
    output elements times their number (generous for most, so that e.g. a BatchNormalization followed by more
    convolutions after the front keeps a model from splitting; a rough guess for recurrent layers, whose steps
    it does not see); one per output element for layers without weights. Infinite when the shape is unknown."""
    if not isinstance(shape, tuple) or len(shape) < 2 or any(not isinstance(d, numbers.Integral) for d in shape[1:]):
        return math.inf
    out = math.prod(int(d) for d in shape[1:])
    kernel = getattr(layer, "kernel", None)
    if isinstance(kernel, Weight) and len(kernel.shape) >= 2 and _kernel_outputs_last(type(layer)):
        return out * (kernel.size // kernel.shape[-1] + 1)
    return out * (1 + sum(w.size for w in layer.weights))


def _kernel_outputs_last(cls):
    """Dense, Conv1D, Conv2D and their subclasses: kernels laid out (..., inputs, outputs)."""
    return any(c.__name__ in ("Dense", "Conv1D", "Conv2D") and c.__module__.startswith("glassnet.layers.")
               for c in cls.__mro__)


def backward_run(layers, backwards, dy, input_grad, first):
    """dy back through ``backwards`` (one per layer of the chain ``layers``, from its first). With
    ``input_grad=False`` the layers before ``first`` (the first with trainable weights) are skipped and that one
    computes no dx if it can; returns dx, or None then."""
    if input_grad:
        for back in reversed(backwards):
            dy = back(dy)
        return dy
    for back in backwards[:first:-1]:  # the layers after the first trainable one, last to first
        dy = back(dy)
    if first < len(backwards) and layers[first]._skips_input_grad():
        backwards[first](dy, input_grad=False)
    elif first < len(backwards):
        backwards[first](dy)  # its dx is computed and dropped
    return None


def forward_halves(run_front, run_back, x, weights):
    """Training: ``run_front(part) -> (y_part, state)`` on each half of ``x`` (this thread and the worker) and
    ``(joined y, backward)``; ``backward(dy, input_grad=True)`` splits ``dy`` and runs
    ``run_back(state, dy_part, input_grad) -> dx_part`` on both halves at once, the worker's gradients of
    ``weights`` going to their twins and added in afterwards; returns the joined dx (None without input_grad)."""
    half = len(x) // 2
    weights = list({id(w): w for w in weights}.values())  # each once (layers may share a weight)
    (ya, state_a), (yb, state_b) = parallel.run_halves(run_front, (x[:half],), (x[half:],))

    def backward(dy, input_grad=True):
        shard(weights, parallel.worker_id())  # the worker's weight gradients go to twins ...
        try:
            da, db = parallel.run_halves(run_back, (state_a, dy[:half], input_grad), (state_b, dy[half:], input_grad))
        finally:
            unshard(weights)  # ... added in here
        return np.concatenate([da, db]) if input_grad else None

    return np.concatenate([ya, yb]), backward


def call_halves(run_front, x):
    """Inference: ``run_front(part) -> y_part`` on each half of ``x`` at once; the joined output."""
    half = len(x) // 2
    ya, yb = parallel.run_halves(run_front, (x[:half],), (x[half:],))
    return np.concatenate([ya, yb])
