"""Sequential: a stack of layers, each feeding the next; backward runs their closures in reverse."""
import numpy as np

from ..engine import dense_chain, gemv, parallel
from ..engine.layer import Layer
from ..engine.registry import deserialize, register, serialize
from ..engine.graph import KerasTensor
from ..layers.core import InputLayer
from . import splitting
from .model import Model


@register("layers")
class Sequential(Model):
    """``Sequential([Input((8,)), Dense(10, activation='relu'), Dense(1, activation='sigmoid')])``.

    forward:  x → layer₁ → layer₂ → … → y, keeping each layer's ``backward``
    backward: dy → backwardₙ → … → backward₁ → dx
    """

    input_grad_optional = True  # its backward takes input_grad=False (training skips dx)

    def __init__(self, layers=None, name=None, trainable=True, **kwargs):
        super().__init__(name=name, trainable=trainable, **kwargs)
        self._layers = []
        self._masking_value = None
        self._reset_step_caches()
        self._input_layer = None
        layers = list(layers or [])
        names = set()
        for layer in layers:  # (each add would rebuild the model and compare names: quadratic in the layers)
            self._add(layer, names)
        if self._layers and self._input_layer is not None:
            self.build(self._input_layer.input_shape)

    @property
    def layers(self):
        return list(self._layers)

    def add(self, layer):
        """Append a layer; an ``Input``/``InputLayer`` (or ``input_dim=`` on the first layer) builds the model."""
        self._add(layer, {existing.name for existing in self._layers})
        if self._input_layer is not None and self._layers and not self.built:
            self.build(self._input_layer.input_shape)

    def _add(self, layer, names):
        """Append ``layer`` (not building), ``names`` being the names of the layers so far (updated)."""
        if isinstance(layer, KerasTensor):
            if layer.node is None or not isinstance(layer.node.layer, InputLayer):
                raise TypeError("Sequential accepts an Input(...) tensor only as its first element; for graphs of "
                                "layers use the functional API: Model(inputs, outputs).")
            layer = layer.node.layer
        if isinstance(layer, InputLayer):
            if self._layers or self._input_layer is not None:
                raise ValueError(f"Sequential model '{self.name}' accepts an Input only as its first layer; it already "
                                 f"has {'an input' if self._input_layer else 'layers'}.")
            self._input_layer = layer
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add() expects a layer such as Dense(10), got {layer!r} "
                            f"({type(layer).__name__}).")
        if getattr(layer, "multiple_outputs", False):
            raise ValueError(f"Layer '{layer.name}' returns several tensors (return_state=True or merge_mode=None), "
                             "which a Sequential model cannot pass on. Use the functional API: "
                             "outputs = layer(inputs); Model(inputs, outputs).")
        if layer.name in names:
            raise ValueError(f"All layers added to a Sequential model should have unique names. Name '{layer.name}' "
                             "is already used; pass name='...' to one of them.")
        if not self._layers and self._input_layer is None and layer._input_shape_arg is not None:
            self._input_layer = InputLayer(shape=layer._input_shape_arg, batch_size=layer._batch_size_arg,
                                           dtype=layer.dtype)
        self._layers.append(layer)
        names.add(layer.name)
        self._masking_value = None
        self._reset_step_caches()
        self.built = False

    def pop(self):
        """Remove the last layer."""
        if not self._layers:
            raise TypeError(f"There are no layers in model '{self.name}' to pop.")
        layer = self._layers.pop()
        self._masking_value = None
        self._reset_step_caches()
        self.built = False
        if self._layers and self._input_layer is not None:
            self.build(self._input_layer.input_shape)
        return layer

    def build(self, input_shape=None):
        """Build every layer in order, passing each one's output shape to the next."""
        if input_shape is None:
            if self._input_layer is None:
                raise ValueError(f"Sequential model '{self.name}' has no input shape: pass build(input_shape), or start "
                                 "the model with Input(shape).")
            input_shape = self._input_layer.input_shape
        shape = tuple(input_shape)
        self.input_shape = shape
        for layer in self._layers:
            if layer.built:
                layer._check_input_shape(shape)
                shape = layer.compute_output_shape(shape)
            else:
                layer._maybe_build(shape)
                shape = layer.output_shape
        self.output_shape = shape
        self.built = True

    def _input_dtype(self):  # (Model's reads self.layers, a copy of the list: this is on the 1-row predict path)
        return self._layers[0].dtype if self._layers else self.dtype

    @property
    def inputs(self):
        if not self.built:
            raise AttributeError(f"Sequential model '{self.name}' has no defined inputs yet.")
        if self._input_layer is not None:
            return [self._input_layer.output]
        return [KerasTensor(self.input_shape, self._input_dtype(), name="input_layer")]

    @property
    def outputs(self):
        if not self.built:
            raise AttributeError(f"Sequential model '{self.name}' has no defined outputs yet.")
        return [KerasTensor(self.output_shape, self._layers[-1].dtype, name=self._layers[-1].name)]

    def forward(self, x, training=False, mask=None):
        if mask is None and not self._masking:  # the common case: no layer makes or takes masks
            fused = self._relu_moves
            if fused is None:  # cached: asked on every step; add(), pop() and each fit() reset it
                fused = self._fused_pairs()
            if training and parallel.active() and np.ndim(x) and len(x) >= parallel.MIN_BATCH:
                front = self._splits_batches(len(x))
                if front:
                    return self._forward_split(x, front, fused)
            if not fused:
                backwards = []
                for layer in self._layers:
                    x, backward = layer.forward(x, training)
                    backwards.append(backward)
                return x, self._chain(backwards)
            x, backwards = _forward_run(self._layers, 0, x, training, fused)
            return x, self._chain(backwards)
        backwards = []
        for layer in self._layers:
            x_in = x
            if mask is not None and layer.consumes_mask:
                x, backward = layer.forward(x, training, mask=mask)
            else:
                x, backward = layer.forward(x, training)
            mask = layer.compute_mask(x_in, mask)
            backwards.append(backward)
        return x, self._chain(backwards)

    def _fused_pairs(self):
        """Indices i where layers i, i+1 run as Conv(relu) + MaxPooling with the relu after the pool."""
        layers = self._layers
        self._relu_moves = frozenset(
            i for i in range(len(layers) - 1) if _relu_then_max_pool(layers[i], layers[i + 1]))
        return self._relu_moves

    def _splits_batches(self, batch=None):
        """How many leading layers a step (training or inference) runs as two half-batches on two threads
        (engine.parallel), 0 when it does not split; with ``batch``, 0 also when batches of that size hold too
        little work. Models whose layers make or take masks do not split."""
        if self._masking:
            return 0
        plan = self._split_front
        if plan is None:
            fused = self._relu_moves
            plan = self._split_front = _split_front(self._layers, self._fused_pairs() if fused is None else fused)
        front, work = plan
        if batch is not None and batch * work < parallel.MIN_WORK:
            return 0
        return front

    def _forward_split(self, x, front, fused):
        """A training step with the batch split in two for the layers ``[0, front)`` (see engine.parallel):
        each half goes through them on its own thread, the joined result through the rest."""
        layers = self._layers
        first = self._first_trainable_index()  # < front (the plan asks for a trainable layer in it)

        def run_front(part):
            return _forward_run(layers, 0, part, True, fused, stop=front)

        def run_back(backs, dy, input_grad):
            return splitting.backward_run(layers, backs, dy, input_grad, first)

        y, backward_front = splitting.forward_halves(run_front, run_back, x,
                                                     [w for layer in layers[:front] for w in layer.weights])
        y, rest = _forward_run(layers, front, y, True, fused)

        def backward(dy, input_grad=True):
            for back in reversed(rest):
                dy = back(dy)
            return backward_front(dy, input_grad)

        return y, backward

    def _call_split(self, x, front, training):
        """Inference with the batch split in two for the layers ``[0, front)``, as in ``_forward_split``."""
        layers = self._layers

        def run_front(part):
            for layer in layers[:front]:
                part = layer.call(part, training)
            return part

        y = splitting.call_halves(run_front, x)
        for layer in layers[front:]:
            y = layer.call(y, training)
        return y

    def _first_trainable_index(self):
        first = self._first_trainable
        if first is None:  # cached for the fit / train_on_batch call (Model._prepare_training resets it)
            layers = self._layers
            first = self._first_trainable = next(
                (i for i, layer in enumerate(layers) if layer.trainable_weights), len(layers))
        return first

    def _chain(self, backwards):
        def backward(dy, input_grad=True):
            """dy → backwardₙ → … → backward₁ → dx.  With ``input_grad=False`` (training, where dx is not
            needed) the layers in front of the first trainable one are skipped, and that layer is asked not
            to compute its dx when it can (``input_grad_optional``): for a first Dense or Conv2D layer this
            saves the largest GEMM of the backward pass. Returns None then."""
            if input_grad:
                for back in reversed(backwards):
                    dy = back(dy)
                return dy
            first = self._first_trainable
            return splitting.backward_run(self._layers, backwards, dy, False,
                                 self._first_trainable_index() if first is None else first)

        return backward

    def _reset_step_caches(self):
        """Forget what forward/backward cache about the layers: the index of the first layer with trainable
        weights (``_chain``), the Conv(relu) + MaxPooling blocks run relu-last, the layers a training step may
        split over two threads (``forward``) and the runs of dense layers a 1-row call splits (``call``). add()
        and pop() call this, and so does every fit / train_on_batch (Model._prepare_training): layers may be
        frozen."""
        self._first_trainable = None
        self._relu_moves = None
        self._split_front = None
        self._row_spans = None
        self._dense_forward = None
        super()._reset_step_caches()  # nested models

    def _plan_compiled_step(self):
        if type(self).forward is not Sequential.forward:  # a subclass's own forward is what it trains
            return None
        return dense_chain.plan(self)

    def _find_row_spans(self):
        """The runs of layers that a 1-row inference call sends through ``engine.gemv.chain`` (cached): Dense
        layers (Dropout between them is the identity at inference) with relu or no activation, the last of a
        run with any activation, holding at least ``gemv.MIN_BYTES`` of kernels in all. ``(start, stop)``
        pairs of layer indices."""
        from ..activations import linear, relu
        from ..layers.core import Dense, Dropout
        spans, start, nbytes = [], None, 0
        if any(type(layer) is Dense and layer.kernel is None for layer in self._layers):
            return ()  # not built yet (asked again at the next call)
        for i, layer in enumerate(self._layers + [None]):
            dense = type(layer) is Dense
            if start is not None and not dense and type(layer) is not Dropout:  # the run ends before layer i
                if nbytes >= gemv.MIN_BYTES:
                    spans.append((start, i))
                start, nbytes = None, 0
            if dense:
                if start is None:
                    start = i
                nbytes += layer.kernel.value.nbytes
                if layer.activation is not relu and layer.activation is not linear:  # ends the run, included
                    if nbytes >= gemv.MIN_BYTES:
                        spans.append((start, i + 1))
                    start, nbytes = None, 0
        self._row_spans = tuple(spans)
        return self._row_spans

    def _call_row(self, x, spans):
        """``call`` (inference, no masks) for one row: each run of dense layers in ``spans`` as one
        ``engine.gemv.chain`` — each layer's product split over two cores, no Python between the layers — the
        other layers as usual."""
        layers, i = self._layers, 0
        for start, stop in spans:
            for layer in layers[i:start]:
                x = layer.call(x, False)
            y = None
            dense = [layer for layer in layers[start:stop] if hasattr(layer, "kernel")]  # (the rest: Dropout)
            if gemv.usable(x, dense[0].kernel.value):
                y = gemv.chain(x, [(layer.kernel.value, layer.bias.value if layer.use_bias else None,
                                    layer.activation) for layer in dense])
            if y is None:  # (not this row: a dtype or activation the chain does not take, the helper busy)
                for layer in layers[start:stop]:
                    x = layer.call(x, False)
            else:
                x = y
            i = stop
        for layer in layers[i:]:
            x = layer.call(x, False)
        return x

    @property
    def _masking(self):
        """True when some layer makes masks (overrides compute_mask), so forward must carry them."""
        if getattr(self, "_masking_value", None) is None:  # cached: asked on every call; add() and pop() reset it
            self._masking_value = any(type(layer).compute_mask is not Layer.compute_mask for layer in self._layers)
        return self._masking_value

    def call(self, x, training=False, mask=None):
        if mask is None and not self._masking:
            if parallel.active() and np.ndim(x) and len(x) >= parallel.MIN_BATCH:  # predict/evaluate (engine.parallel)
                front = self._splits_batches(len(x))
                if front:
                    return self._call_split(x, front, training)
            spans = self._row_spans
            if spans is None:
                spans = self._find_row_spans()
            if spans and not training and len(x) == 1:  # one row through large dense layers: two cores (engine.gemv)
                return self._call_row(x, spans)
            chain = self._dense_forward
            if chain is None:  # (None from forward_plan too while a layer is unbuilt: asked again next call)
                chain = self._dense_forward = dense_chain.forward_plan(self._layers)
            if chain:  # a small all-Dense network: the whole pass in one compiled call (engine.dense_chain)
                y = chain(x)
                if y is not None:
                    return y
            for layer in self._layers:
                x = layer.call(x, training)
            return x
        for layer in self._layers:
            x_in = x
            if mask is not None and layer.consumes_mask:
                x = layer.call(x, training, mask=mask)
            else:
                x = layer.call(x, training)
            mask = layer.compute_mask(x_in, mask)
        return x

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._layers:
            shape = layer.compute_output_shape(shape)
        return shape

    def get_config(self):
        layers = []
        if self._input_layer is not None:
            layers.append(serialize(self._input_layer))
        layers += [serialize(layer) for layer in self._layers]
        return {"name": self.name, "trainable": self.trainable, "layers": layers}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layers = [deserialize("layers", c, "layer", custom_objects) for c in config.pop("layers", [])]
        return cls(layers, name=config.get("name"), trainable=config.get("trainable", True))


# --- relu moved past a max-pool ----------------------------------------------------------------------------
def _relu_then_max_pool(layer, following):
    """``Conv(..., activation='relu')`` directly followed by ``MaxPooling`` (the classic convnet block)."""
    from ..activations import relu
    from ..layers.pooling import _Pooling
    return (isinstance(following, _Pooling) and following.mode == "max" and getattr(layer, "activation", None) is relu
            and layer.activity_regularizer is None and layer._forward_declares("activation_deferrable"))


def _relu_after_max_pool(layer, pool, x, training):
    """maxpool(relu(z)) computed as relu(maxpool(z)): the same values, and the same gradients.

    relu is non-decreasing, so the window maximum of relu(z) is relu of the window maximum of z, and both
    orders route a window's gradient to the same element: its first maximum when that maximum is > 0; when
    it is <= 0, relu' = 0 makes the whole window's gradient 0 either way (and NaN stays NaN with no
    gradient). A NaN or Inf in dy itself spreads as the products hit·dy and dy·[y > 0] spread it, the same
    in both orders (tested). Pooling first applies relu, and its backward dy·[y > 0], to a 4x smaller array (2x2 pool):
    W3's first block skips two passes over an 11 MB activation per step. tests/test_fast_paths.py checks
    outputs and every gradient against the layer-by-layer order.
    Returns ``(y, backward of the layer without activation, backward of pool-then-relu)``.
    """
    from ..activations import linear, relu
    z, backward_layer = layer.forward(x, training, activation=linear)
    pooled, backward_pool = pool.forward(z, training)
    y, backward_relu = relu.forward(pooled)  # not in place: the pool's backward compares with `pooled`
    return y, backward_layer, lambda dy: backward_pool(backward_relu(dy))


# --- running a stretch of layers -----------------------------------------------------------------------
def _forward_run(layers, start, x, training, fused, stop=None):
    """Layers ``[start, stop)`` forward from ``x`` (no masks); returns the output and one backward per layer."""
    backwards, i, stop = [], start, len(layers) if stop is None else stop
    if not fused:
        for layer in layers[start:stop]:
            x, backward = layer.forward(x, training)
            backwards.append(backward)
        return x, backwards
    while i < stop:
        if i in fused:
            x, backward_layer, backward_pool = _relu_after_max_pool(layers[i], layers[i + 1], x, training)
            backwards += [backward_layer, backward_pool]
            i += 2
            continue
        x, backward = layers[i].forward(x, training)
        backwards.append(backward)
        i += 1
    return x, backwards


def _split_front(layers, fused):
    """``(front, work)``: a step may run the first ``front`` layers as two half-batches (engine.parallel), whose
    work per example is about ``work`` multiply-adds (splitting.plan). The front is the leading ``per_example``
    layers, ending on a whole relu-after-pool pair. ``(0, 0)`` when the model does not split."""
    front = 0
    while front < len(layers) and splitting.per_example(layers[front]):
        front += 1
    if front - 1 in fused:  # never split a Conv(relu) + MaxPooling pair run relu-last
        front -= 1
    shapes = [getattr(layer, "output_shape", None) for layer in layers]
    work = splitting.plan(list(zip(layers[:front], shapes[:front])), list(zip(layers[front:], shapes[front:])))
    return (front, work) if work else (0, 0)
