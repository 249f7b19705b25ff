"""The Layer base class: weights, building, and ``forward(x) -> (y, backward)``.

A layer's math lives in ``forward``: it computes the output and returns a closure ``backward(dy)``
that adds the weight gradients into ``Weight.grad`` and returns ``dx``, the gradient of the input.
The closure captures exactly what backward needs; there is no global tape.
"""
import functools

import numpy as np

from . import backend, graph
from .registry import register
from .weight import Weight
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .. import constraints as _constraints
from ..utils.legacy import legacy_notice


_FORWARD_FLAGS = {}  # (layer class, flag) -> the flag as its forward's class declares it (Layer._forward_declares)


class Layer:
    """Base of all layers. Subclasses implement ``build``, ``forward`` and ``compute_output_shape``.

    ``forward(x, training=False) -> (y, backward)``;  ``call(x, training=False) -> y`` is the
    inference path (defaults to ``forward`` without keeping the closure).
    """

    _LEGACY_KWARGS = {}  # Keras 2 argument -> Keras 3 argument, per layer class
    activity_regularizer = None
    supports_masking = False  # passes an incoming mask through unchanged (see compute_mask)
    consumes_mask = False     # forward/call accept mask= (e.g. RNNs skip masked time steps)
    input_grad_optional = False  # backward(dy, input_grad=False) may skip dx and return None (Dense, Conv)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "_LEGACY_KWARGS" in cls.__dict__ and "__init__" in cls.__dict__:
            init = cls.__init__

            @functools.wraps(init)
            def __init__(self, *args, **kw):
                init(self, *args, **type(self)._translate_legacy(kw))

            cls.__init__ = __init__

    def __init__(self, name=None, trainable=True, dtype=None, input_shape=None, input_dim=None,
                 batch_size=None, batch_input_shape=None, **kwargs):
        if kwargs:
            raise ValueError(f"Unrecognized keyword arguments passed to {type(self).__name__}: {kwargs}")
        if batch_input_shape is not None:
            batch_size, input_shape = batch_input_shape[0], tuple(batch_input_shape[1:])
        if input_dim is not None:
            input_shape = (int(input_dim),)
        self._input_shape_arg = tuple(input_shape) if input_shape is not None else None
        self._batch_size_arg = batch_size
        self.name = name or backend.unique_name(backend.snake_case(type(self).__name__))
        self.trainable = trainable
        self.dtype = backend.standardize_dtype(dtype)
        self.built = False
        self._weights = []
        self.input_shape = None
        self.output_shape = None
        self._inbound_nodes = []  # one per symbolic call (functional models)

    # --- weights --------------------------------------------------------------------------------
    def add_weight(self, name, shape, initializer="glorot_uniform", regularizer=None, constraint=None,
                   trainable=True, dtype=None):
        dtype = backend.standardize_dtype(dtype or self.dtype)
        backend.reserve_weight(shape, dtype, f"'{self.name}/{name}'")
        init = _initializers.get(initializer)
        value = np.asarray(init(tuple(shape), dtype=dtype), dtype=dtype)
        w = Weight(value, name, trainable=trainable, regularizer=_regularizers.get(regularizer),
                   constraint=_constraints.get(constraint), layer=self)
        self._weights.append(w)
        return w

    @property
    def weights(self):
        return list(self._weights)

    @property
    def trainable_weights(self):
        return [w for w in self._weights if w.trainable] if self.trainable else []

    @property
    def non_trainable_weights(self):
        if not self.trainable:
            return list(self._weights)
        return [w for w in self._weights if not w.trainable]

    def get_weights(self):
        return [w.numpy() for w in self.weights]

    def set_weights(self, weights):
        weights, mine = list(weights), self.weights
        if len(weights) != len(mine):
            raise ValueError(f"Layer '{self.name}' has {len(mine)} weights ({[w.name for w in mine]}), got a list of "
                             f"{len(weights)}.")
        for w, v in zip(mine, weights):
            w.assign(v)

    def count_params(self):
        if not self.built:
            raise ValueError(f"Layer '{self.name}' is not built yet, so it has no weights to count. "
                             "Call it on data or build it with an input shape first.")
        return int(sum(w.size for w in self.weights))

    # --- building -------------------------------------------------------------------------------
    def build(self, input_shape):
        """Create the weights for inputs of ``input_shape`` (batch dimension included, may be None)."""
        self.built = True

    def _maybe_build(self, input_shape):
        if not self.built:
            input_shape = tuple(input_shape)
            self.build(input_shape)
            self.built = True
            self.input_shape = input_shape
            self.output_shape = self.compute_output_shape(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    # --- computing ------------------------------------------------------------------------------
    def forward(self, x, training=False):
        """Return ``(y, backward)`` where ``backward(dy)`` accumulates weight grads and returns dx."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward().")

    def call(self, x, training=False):
        return self.forward(x, training)[0]

    def __call__(self, x, training=False):
        """Call on arrays (builds the layer on first use), or on KerasTensors (records a graph node)."""
        if graph.is_symbolic(x):
            return graph.call_symbolic(self, x)
        given = x
        if isinstance(x, (list, tuple)):
            x = [np.asarray(v) for v in x]
            self._maybe_build([v.shape for v in x])
        else:
            x = np.asarray(x)
            if x.dtype.kind in "fiub" and x.dtype != self.dtype and self.dtype.startswith("float"):
                x = x.astype(self.dtype)
            if self.built:
                self._check_input_shape(x.shape)
            self._maybe_build(x.shape)
        if graph._tape is not None:  # inside a subclassed Model's forward: keep the backward
            y, backward = self.forward(x, training)
            graph.record(list(given) if isinstance(given, (list, tuple)) else [given],
                         isinstance(given, (list, tuple)), y, backward)
            return y
        return self.call(x, training=training)

    def _skips_input_grad(self):
        """True when this layer's ``backward`` accepts ``input_grad=False``: ``input_grad_optional`` as
        declared by the class that defines the ``forward`` in use (a subclass that overrides ``forward``
        must declare it again)."""
        return self._forward_declares("input_grad_optional")

    def _forward_declares(self, flag):
        """A class flag about ``forward``'s signature, read from the class that defines the ``forward`` in use
        (so a subclass overriding ``forward`` does not inherit a promise its own forward may not keep)."""
        cls = type(self)
        found = _FORWARD_FLAGS.get((cls, flag))
        if found is None:  # once per class and flag: asked on every training step
            owner = next((c for c in cls.__mro__ if "forward" in vars(c)), None)
            found = _FORWARD_FLAGS[(cls, flag)] = bool(owner is not None and vars(owner).get(flag, False))
        return found

    def _check_input_shape(self, shape):
        expected = self.input_shape
        if expected is None:
            return
        if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected[1:], shape[1:])):
            want = ", ".join("None" if e is None else str(e) for e in expected)
            raise ValueError(f"{type(self).__name__} '{self.name}' expects inputs of shape ({want}), got shape "
                             f"{tuple(shape)}. Check the shape of the data you pass in.")

    def _activity_gradient(self, y):
        """Record the activity penalty of the output ``y`` (added to the loss by the model) and return its
        gradient ∂penalty/∂y for the backward pass, or None when the layer has no activity regularizer. The
        penalty is the regularizer's value divided by the batch size (Keras 3 and tf.keras do the same), so the
        loss does not grow with the batch."""
        activity = self.activity_regularizer
        if activity is None:
            return None
        scale = 1.0 / y.shape[0] if y.ndim and y.shape[0] else 1.0
        self.last_activity_loss = activity(y) * scale
        return activity.gradient(y) * scale

    def compute_mask(self, x, mask=None):
        """The mask of this layer's output: None, the incoming mask (``supports_masking``), or a new one.

        Masks are boolean arrays over the batch and time axes, True where a step holds real data."""
        return mask if self.supports_masking else None

    def regularization_loss(self):
        """Σ of this layer's weight penalties (added to the training loss)."""
        return sum(w.regularizer(w.value) for w in self.weights if w.regularizer is not None)

    # --- configuration --------------------------------------------------------------------------
    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype}
        if self._input_shape_arg is not None:
            config["batch_input_shape"] = [self._batch_size_arg, *self._input_shape_arg]
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"

    @classmethod
    def _translate_legacy(cls, kwargs):
        """Rename Keras 2 arguments (e.g. ``init`` -> ``kernel_initializer``) with a notice."""
        for old, new in cls._LEGACY_KWARGS.items():
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{cls.__name__} got both {old!r} (Keras 2) and {new!r}; pass only {new!r}.")
                legacy_notice(f"{cls.__name__}({old}=...)", f"{cls.__name__}({new}=...)")
                kwargs[new] = kwargs.pop(old)
        return kwargs


register("layers")(Layer)
