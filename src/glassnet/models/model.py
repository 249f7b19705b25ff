"""Model: the training loop (compile, fit, evaluate, predict) on top of any forward/backward chain.

A training step, in textbook order:
    y_pred, backward = model.forward(x, training=True)      # layers chain their closures
    loss, dy = loss_fn.value_and_grad(y, y_pred, w)          # J and ∂J/∂y_pred
    grads ← 0;  backward(dy)                                 # backpropagation fills Weight.grad
    optimizer.apply()                                        # θ ← θ − α·∇J(θ) (or Adam, ...)
Logged values are Keras's: running means over the epoch's pre-update batches, weighted by batch size.
"""
import contextlib
import math
import sys

import numpy as np

from .. import callbacks as _callbacks
from . import sources as _sources
from .. import losses as _losses
from .. import metrics as _metrics
from .. import optimizers as _optimizers
from ..engine import backend, parallel
from ..engine.layer import Layer
from ..utils import data as _data
from ..utils.legacy import legacy_notice


SHUFFLE_COPY_BYTES = 16 << 20  # fit() shuffles a copy of data sets up to this size, gathers larger ones per batch


def _unique(weights):
    """Weights in order, each once (a layer shared between places owns its weights once)."""
    seen, out = set(), []
    for w in weights:
        if id(w) not in seen:
            seen.add(id(w))
            out.append(w)
    return out


class Model(Layer):
    """Base of Sequential and functional models, and of your own models: weights over layers plus the
    training API.

    ``Model(inputs, outputs)`` builds a functional model. A subclass that assigns layers as attributes
    and defines ``call(x, training=False)`` gets its backward pass from the layers it calls (they are
    recorded while ``call`` runs in training); combine tensors with layers (e.g. ``Add()``), not with
    NumPy operators, so the backward pass can follow them.
    """

    def __new__(cls, *args, **kwargs):
        if cls is Model and (args or "inputs" in kwargs or "outputs" in kwargs):
            from .functional import Functional
            return super().__new__(Functional)
        return super().__new__(cls)

    def __init__(self, name=None, trainable=True, **kwargs):
        super().__init__(name=name or backend.unique_name(backend.snake_case(type(self).__name__)),
                         trainable=trainable, **kwargs)
        self.optimizer = None
        self.loss = None
        self.compiled = False
        self.stop_training = False
        self.history = None
        self._heads = None
        self._metrics = None
        self._loss_count = None
        self.training_seed = None  # drawn on the first fit; saved with the model so resumed runs match

    # --- structure ------------------------------------------------------------------------------
    @property
    def layers(self):
        """Layers assigned as attributes (directly or in lists), in assignment order."""
        found = []
        for value in vars(self).values():
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if isinstance(item, Layer) and item is not self and all(item is not f for f in found):
                    found.append(item)
        return found

    # --- subclassed models: call() composes layers; its backward comes from the recorded calls -----
    def call(self, x, training=False):
        raise NotImplementedError(f"{type(self).__name__} must define call(self, x, training=False), or be built with "
                                  "Sequential([...]) or Model(inputs, outputs).")

    def forward(self, x, training=False):
        from ..engine import graph
        tape = []
        with graph.recording(tape):
            y = self.call(x, training=training)
        given = x

        def backward(dy):
            grads = {id(y): dy}
            for inputs, list_input, out, back in reversed(tape):
                g = grads.pop(id(out), None)
                if g is None:
                    continue
                dx = back(g)
                for arr, d in zip(inputs, dx if list_input else [dx]):
                    if d is not None:
                        grads[id(arr)] = grads[id(arr)] + d if id(arr) in grads else d
            if id(given) not in grads:
                raise ValueError(f"{type(self).__name__}.call() combines tensors outside layers, so its backward pass "
                                 "cannot be followed. Use layers for every operation (e.g. Add() instead of +).")
            return grads[id(given)]

        return y, backward

    def build(self, input_shape):
        """Subclassed models build by running call() once on zeros of ``input_shape``."""
        shape = tuple(1 if d is None else d for d in input_shape)
        out = self.call(np.zeros(shape, backend.floatx()), training=False)
        self.input_shape = (None,) + tuple(input_shape[1:])
        self.output_shape = (None,) + tuple(np.shape(out)[1:])
        self.built = True

    @property
    def weights(self):
        return _unique(w for layer in self.layers for w in layer.weights)

    @property
    def trainable_weights(self):
        if not self.trainable:
            return []
        return _unique(w for layer in self.layers for w in layer.trainable_weights)

    @property
    def non_trainable_weights(self):
        ids = {id(w) for w in self.trainable_weights}
        return [w for w in self.weights if id(w) not in ids]

    def get_weights(self):
        return [w.numpy() for w in self.weights]

    def set_weights(self, weights):
        mine = self.weights
        weights = list(weights)
        if len(weights) != len(mine):
            raise ValueError(f"Model '{self.name}' has {len(mine)} weight arrays, got a list of {len(weights)}. "
                             "Pass the list that get_weights() returns, in the same order.")
        for w, v in zip(mine, weights):
            w.assign(v)
        for layer in self.layers:
            if hasattr(layer, "adapted"):
                layer.adapted = True

    def count_params(self):
        if not self.built:
            raise ValueError(f"You tried to call `count_params` on model '{self.name}', but it isn't built. Build it "
                             "with model.build(input_shape), give it an Input, or call it on data first.")
        return int(sum(w.size for w in self.weights))

    def summary(self, line_length=None, positions=None, print_fn=None, **kwargs):
        from .summary import summary_lines
        print_fn = print_fn or print
        for line in summary_lines(self, line_length):
            print_fn(line)

    def regularization_loss(self):
        return sum(layer.regularization_loss() for layer in self.layers)

    @property
    def losses(self):
        """The weight penalties currently added to the training loss (Keras's ``model.losses``)."""
        return [w.regularizer(w.value) for w in self.weights if w.regularizer is not None]

    def _ensure_built(self, shape):
        if not self.built:
            self.build((None,) + tuple(shape[1:]))

    def _input_dtype(self):
        return self.layers[0].dtype if self.layers else self.dtype

    # --- compile --------------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, weighted_metrics=None,
                run_eagerly=False, steps_per_execution=1, jit_compile="auto", auto_scale_loss=True, **kwargs):
        """Choose the optimizer, the loss(es) and the metrics (Keras's arguments and defaults).

        For several outputs, ``loss``, ``loss_weights`` and ``metrics`` may be lists (in output order)
        or dicts keyed by output name; one loss given alone applies to every output."""
        if "lr" in kwargs or "decay" in kwargs:
            raise TypeError("compile() does not take `lr`/`decay`; pass them to the optimizer, e.g. "
                            "optimizer=SGD(learning_rate=0.01).")
        kwargs.pop("sample_weight_mode", None)  # Keras 2 argument with no effect on arrays
        if kwargs:
            raise TypeError(f"compile() got unexpected keyword argument(s) {sorted(kwargs)}.")
        self.optimizer = _optimizers.get(optimizer)
        per_output = isinstance(loss, (list, tuple, dict))
        self.loss = loss if per_output else (None if loss is None else _losses.get(loss))
        if isinstance(loss_weights, (list, tuple)) and len(loss_weights) == 1:
            loss_weights = loss_weights[0]
        self.loss_weight = 1.0 if loss_weights is None or isinstance(loss_weights, (list, tuple, dict)) \
            else float(loss_weights)
        if isinstance(metrics, (str, _metrics.Metric)) or callable(metrics) and not isinstance(metrics, (list, tuple)):
            metrics = [metrics]
        if isinstance(weighted_metrics, (str, _metrics.Metric)):
            weighted_metrics = [weighted_metrics]
        self._loss_spec, self._loss_weights_spec = loss, loss_weights
        self._metrics_spec, self._weighted_spec = metrics, weighted_metrics
        self._heads = None
        self._metrics = None
        self.compiled = True
        self._compile_args = {"optimizer": optimizer, "loss": loss, "metrics": metrics}

    def _assert_compiled(self, where):
        if not self.compiled:
            raise RuntimeError(f"You must call compile() before {where}(): e.g. "
                               "model.compile(optimizer='adam', loss='mse', metrics=['accuracy']).")
        if self.loss is None and where != "predict":
            raise ValueError(f"Model '{self.name}' was compiled without a loss, so {where}() has nothing to minimise. "
                             "Pass one to compile(), e.g. loss='mse'.")

    def _output_names(self):
        names = getattr(self, "output_names", None)
        if names:
            return list(names)
        return [self.layers[-1].name] if self.layers else ["output"]

    @staticmethod
    def _per_output(spec, names, what, default):
        """A compile argument spread over the outputs: one value for all, a list in order, or a dict by name."""
        if isinstance(spec, dict):
            unknown = [k for k in spec if k not in names]
            if unknown:
                raise ValueError(f"compile({what}=...) names {unknown}, which are not outputs of the model; its "
                                 f"outputs are {names}.")
            return [spec.get(n, default) for n in names]
        if isinstance(spec, (list, tuple)) and len(names) > 1:
            if len(spec) != len(names):
                raise ValueError(f"compile({what}=...) gives {len(spec)} entries for a model with {len(names)} outputs "
                                 f"{names}; give one per output or a dict keyed by output name.")
            return list(spec)
        return [spec] * len(names)

    def _resolve_heads(self):
        """One head per output: its name, loss, loss weight and metric specs (resolved once per compile)."""
        if self._heads is not None:
            return self._heads
        names = self._output_names()
        multi = len(names) > 1
        losses = self._per_output(self._loss_spec, names, "loss", None)
        weights = self._per_output(self._loss_weights_spec, names, "loss_weights", 1.0)
        if multi and self._metrics_spec and not isinstance(self._metrics_spec, dict) and all(
                isinstance(m, (list, tuple)) for m in self._metrics_spec):
            metric_lists = self._per_output(self._metrics_spec, names, "metrics", [])
        else:
            metric_lists = self._per_output(self._metrics_spec, names, "metrics", []) if isinstance(
                self._metrics_spec, dict) else [self._metrics_spec or []] * len(names)
        weighted = self._per_output(self._weighted_spec, names, "weighted_metrics", []) if isinstance(
            self._weighted_spec, dict) else [self._weighted_spec or []] * len(names)
        self._heads = []
        out_shapes = self.output_shape if isinstance(self.output_shape, list) else [self.output_shape]
        for name, loss, weight, mets, wmets in zip(names, losses, weights, metric_lists, weighted):
            mets = [mets] if isinstance(mets, (str, _metrics.Metric)) else list(mets or [])
            wmets = [wmets] if isinstance(wmets, (str, _metrics.Metric)) else list(wmets or [])
            self._heads.append(_Head(name, None if loss is None else _losses.get(loss),
                                     1.0 if weight is None else float(weight),
                                     [(m, False) for m in mets] + [(m, True) for m in wmets], multi))
            self._heads[-1].output_shape = out_shapes[len(self._heads) - 1] if self.built else None
        if all(h.loss is None for h in self._heads):
            raise ValueError(f"compile(loss=...) gives no loss for any output of model '{self.name}' ({names}).")
        return self._heads

    @property
    def metrics(self):
        return [m for head in (self._heads or []) for m, _ in (head.metrics or [])]

    @property
    def metrics_names(self):
        """['loss', *per-output losses (several outputs), *metric names] (Keras 2's list)."""
        heads = self._heads or []
        names = ["loss"] + [h.loss_name for h in heads if h.multi and h.loss is not None]
        return names + [h.metric_name(m) for h in heads for m, _ in (h.metrics or [])]

    def reset_metrics(self):
        self._loss_total = 0.0
        self._loss_count = 0
        for head in self._heads or []:
            head.reset()

    # --- one batch ------------------------------------------------------------------------------
    def _prepare_training(self, xs):
        """Build the model, pack trainable weights into flat buffers and build the optimizer once."""
        backend.tune_allocator()  # training reuses large temporaries every step: keep them in the heap
        self._reset_step_caches()
        self._ensure_built(xs[0].shape)
        trainable = self.trainable_weights
        if not trainable:
            raise ValueError(f"Model '{self.name}' has no trainable weights (are all layers frozen?), so there is "
                             "nothing to train.")
        opt = self.optimizer
        current = opt.weights if opt.built else []
        if [id(w) for w in current] != [id(w) for w in trainable] or not all(
                np.shares_memory(w.value, g.value) for g in opt.groups for w in g.weights[:1]):
            if opt.built:
                print(f"glassnet: the trainable weights of '{self.name}' changed since the optimizer was built; its "
                      "state (momentum, moments) restarts from zero.", file=sys.stderr)
            opt.build(trainable)
        self._regularized = [w for w in self.weights if w.regularizer is not None]
        self._activity = self._activity_layers()

    def _activity_layers(self):
        """The layers (nested models' too) whose outputs carry an activity penalty."""
        return [layer for layer in self._all_layers() if layer.activity_regularizer is not None]

    def _all_layers(self):
        out = []
        for layer in self.layers:
            out.extend(layer._all_layers() if isinstance(layer, Model) else [layer])
        return out

    def _penalties(self):
        """Weight and activity penalties of the current step (their gradients are added separately)."""
        total = 0.0
        for w in self._regularized:
            total += w.regularizer(w.value)
        for layer in self._activity:
            total += float(layer.last_activity_loss)
        return total

    @staticmethod
    def _feed(xs):
        return xs[0] if len(xs) == 1 else xs

    _compiled_step = None  # engine.dense_chain's plan for this model's training step, False: none (per fit)

    def _plan_compiled_step(self):
        """An ``engine.dense_chain.DenseChain`` when this model's whole training step can run as one compiled call
        (Sequential models of small Dense layers), else None."""
        return None

    def _reset_step_caches(self):
        """Forget per-step caches about the layers (Sequential keeps some), here and in every nested model;
        called by every fit / train_on_batch call, since layers may have been frozen or unfrozen."""
        self._compiled_step = None
        for layer in self.layers:
            if isinstance(layer, Model):
                layer._reset_step_caches()

    def _split_session(self, rows):
        """``parallel.session`` for batches of ``rows`` examples when this model could split them (the cheap
        checks first: most models never split), else a no-op context."""
        if rows >= parallel.MIN_BATCH and self._splits_batches(rows):
            return parallel.session(self, rows)
        return contextlib.nullcontext()

    def _splits_batches(self, batch=None):
        """How many leading layers ``fit``, ``predict`` and ``evaluate`` may run as two half-batches on batches of
        ``batch`` examples (engine.parallel), 0 for none; Sequential models with a convolutional front split."""
        return 0

    def _train_batch(self, xs, ys, sw):
        chain = self._compiled_step
        if chain is None:  # planned once per fit (reset with the other step caches)
            chain = self._compiled_step = self._plan_compiled_step() or False
        if chain and sw is None:  # a small dense network: forward, loss and backward in one compiled call
            result = chain.step(xs[0], ys[0], self.optimizer)
            if result is not None:
                self.optimizer.apply()
                return result
        groups = self.optimizer.groups
        for group in groups:  # grads ← 0 (lazily, and before forward: a layer may hold a grad view from there)
            group.reset_grads()
        out, backward = self.forward(self._feed(xs), training=True)
        heads = self._heads
        preds = out if len(heads) > 1 else [out]
        total, dys, parts = 0.0, [], []
        for head, y, p in zip(heads, ys, preds):
            if head.loss is None:
                dys.append(None)
                parts.append(None)
                continue
            loss, dy = head.loss.value_and_grad(y, p, sw)
            if head.weight != 1.0:
                dy = dy * head.weight
            total += head.weight * loss
            dys.append(dy)
            parts.append(loss)
        if self._regularized or self._activity:
            total += self._penalties()
        dy = dys if len(heads) > 1 else dys[0]
        if self._skips_input_grad():
            backward(dy, input_grad=False)  # training needs no gradient of the input data
        else:
            backward(dy)
        for w in self._regularized:
            if w.trainable:
                w.grad += w.regularizer.gradient(w.value)
        for group in groups:
            group.settle_grads()
        self.optimizer.apply()
        return total, preds, parts

    def _test_batch(self, xs, ys, sw):
        activity = self._activity_layers()
        if activity:  # their penalties are part of the loss, as in training: forward records them, call does not
            out = self.forward(self._feed(xs), training=False)[0]
        else:
            out = self.call(self._feed(xs), training=False)
        heads = self._heads
        preds = out if len(heads) > 1 else [out]
        total, parts = 0.0, []
        for head, y, p in zip(heads, ys, preds):
            part = None if head.loss is None else float(head.loss(y, p, sw))
            parts.append(part)
            if part is not None:
                total += head.weight * part
        if self._has_penalties():
            total += sum(w.regularizer(w.value) for w in self.weights if w.regularizer is not None)
        for layer in activity:
            total += float(layer.last_activity_loss)
        return float(total), preds, parts

    def _has_penalties(self):
        return any(w.regularizer is not None for w in self.weights)

    def _track(self, loss, ys, preds, sw, n, parts):
        self._loss_total += loss * n
        self._loss_count += n
        for head, y, p, part in zip(self._heads, ys, preds, parts):
            head.track(y, p, sw, n, part)

    def _logs(self):
        logs = {"loss": self._loss_total / self._loss_count if self._loss_count else 0.0}
        for head in self._heads:
            head.log(logs)
        return dict(sorted(logs.items()))

    # --- data -----------------------------------------------------------------------------------
    def _input_shapes(self):
        if not self.built:
            return None
        shape = self.input_shape
        return shape if isinstance(shape, list) else [shape]

    def _check_inputs(self, x, where):
        """The inputs as a list of validated arrays (one per model input), cast to the input dtype."""
        shapes = self._input_shapes()
        # Fast path (1-row predict latency): one ndarray already of the input dtype and the exact built
        # shape passes every check below but finiteness, so only that is left to do. Equal by construction
        # to the general path (tests/test_fast_paths.py); anything else takes the general path. (Small inputs
        # test finiteness inline: the call to all_finite costs ~0.4 µs, measurable at 1-row latency.)
        if (type(x) is np.ndarray and shapes is not None and len(shapes) == 1 and x.ndim and x.shape[0]
                and x.shape[1:] == shapes[0][1:] and x.dtype == self._input_dtype()
                and (np.isfinite(x).all() if x.size <= 65536 else _data.all_finite(x))):
            return [x]
        arrays = self._arrays(x) if hasattr(self, "_arrays") else [x]
        names = getattr(self, "input_names", None) or ["x"]
        out = []
        for i, arr in enumerate(arrays):
            what = "x" if len(arrays) == 1 else f"x[{names[i]!r}]"
            arr = _data.as_array(arr, what, where)
            if shapes is not None:
                _data.check_input_shape(arr, shapes[i], where, self.name)
            _data.check_finite(arr, what, where)
            dtype = self._input_dtype()
            out.append(arr if arr.dtype == dtype else arr.astype(dtype))
        for arr, name in zip(out[1:], names[1:]):
            _data.check_same_length(len(out[0]), arr, f"x[{name!r}]", where)
        return out

    def _check_targets(self, y, n, dtype, where):
        heads = self._heads
        names = [h.name for h in heads]
        if len(heads) == 1:
            targets = [y]
        elif isinstance(y, dict):
            unknown = [k for k in y if k not in names]
            if unknown:
                raise ValueError(f"{where}(): y names {unknown}, which are not outputs; the outputs are {names}.")
            targets = [y.get(name) for name in names]
        elif isinstance(y, (list, tuple)) and len(y) == len(heads):
            targets = list(y)
        else:
            raise ValueError(f"{where}(): model '{self.name}' has {len(heads)} outputs {names}; pass y as a list in that "
                             "order or a dict keyed by output name.")
        out = []
        for head, target in zip(heads, targets):
            what = "y" if len(heads) == 1 else f"y[{head.name!r}]"
            if target is None:
                if head.loss is not None:
                    raise ValueError(f"{where}(): no target given for output {head.name!r}, which has a loss.")
                out.append(None)
                continue
            target = _data.as_array(target, what, where)
            _data.check_same_length(n, target, what, where)
            _data.check_finite(target, what, where)
            if target.dtype.kind in "biuf" and not getattr(head.loss, "sparse_labels", False):
                if target.dtype != dtype:
                    target = target.astype(dtype)
                shape = head.output_shape
                if shape is not None and target.ndim == len(shape) - 1 and shape[-1] == 1:
                    target = target[..., None]  # (N,) labels for an (N, 1) output: Keras aligns them the same way
            out.append(target)
        return out

    def _check_data(self, x, y, sample_weight, where):
        """Validated (inputs, targets, sample_weight): lists of arrays, one per model input / output."""
        xs = self._check_inputs(x, where)
        self._ensure_built(xs[0].shape)
        self._resolve_heads()
        n, dtype = len(xs[0]), xs[0].dtype
        ys = self._check_targets(y, n, dtype, where)
        if sample_weight is not None:
            sample_weight = _data.as_array(sample_weight, "sample_weight", where).astype(dtype)
            _data.check_same_length(n, sample_weight, "sample_weight", where)
            _data.check_finite(sample_weight, "sample_weight", where)
            if (sample_weight < 0).any():
                raise ValueError(f"sample_weight passed to {where}() has negative values; weights must be >= 0.")
        return xs, ys, sample_weight

    @staticmethod
    def _batch_size(batch_size, where):
        if batch_size is None:
            return 32
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"{where}() expects batch_size to be a positive integer, got {batch_size!r}.")
        return int(batch_size)

    @staticmethod
    def _verbose(verbose):
        if verbose == "auto":
            return 1
        if verbose not in (0, 1, 2, True, False):
            raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}.")
        return int(verbose)

    @staticmethod
    def _take(arrays, index):
        return [None if a is None else a[index] for a in arrays]

    # --- fit ------------------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
            steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1, **kwargs):
        """Train for ``epochs`` passes over (x, y); returns the History (also ``model.history``)."""
        if "nb_epoch" in kwargs:
            legacy_notice("fit(nb_epoch=...)", "fit(epochs=...)")
            epochs = kwargs.pop("nb_epoch")
        if kwargs:
            raise TypeError(f"fit() got an unexpected keyword argument {next(iter(kwargs))!r}.")
        self._assert_compiled("fit")
        if _sources.kind(x) is not None:  # a Sequence / PyDataset or a generator of batches
            return self._fit_source(x, y, epochs, verbose, callbacks, validation_split, validation_data, shuffle,
                                    class_weight, sample_weight, initial_epoch, steps_per_epoch, validation_steps,
                                    validation_batch_size, validation_freq)
        xs, ys, sample_weight = self._check_data(x, y, sample_weight, "fit")
        if class_weight is not None:
            if sample_weight is not None:
                raise ValueError("You cannot use `class_weight` and `sample_weight` at the same time; fold the class "
                                 "weights into sample_weight.")
            if len(ys) > 1:
                raise ValueError("class_weight works for single-output models; for several outputs pass "
                                 "sample_weight instead.")
            _data.class_weight_to_sample_weight(ys[0], class_weight)  # (checked now; applied to the training rows)
        _check_epochs(epochs)
        batch_size = self._batch_size(batch_size, "fit")
        verbose = self._verbose(verbose)
        val = None
        if validation_data is not None:
            val = self._validation_source(validation_data, validation_steps)
        elif validation_split:
            if not 0 < validation_split < 1:
                raise ValueError(f"validation_split must be in (0, 1), got {validation_split}.")
            n_all = len(xs[0])
            split_at = int(math.floor(n_all * (1.0 - validation_split)))
            if split_at == 0 or split_at == n_all:
                raise ValueError(f"validation_split={validation_split} leaves an empty training or validation set "
                                 f"with {n_all} samples; use a larger dataset or another split.")
            rest = slice(split_at, None)
            val = (self._take(xs, rest), self._take(ys, rest),
                   None if sample_weight is None else sample_weight[split_at:])
            xs, ys = self._take(xs, slice(0, split_at)), self._take(ys, slice(0, split_at))
            sample_weight = None if sample_weight is None else sample_weight[:split_at]
        if class_weight is not None:  # the training rows only: validation losses are not class-weighted (Keras)
            sample_weight = _data.class_weight_to_sample_weight(ys[0], class_weight).astype(xs[0].dtype)
        _check_shuffle(shuffle)

        self._prepare_training(xs)
        n = len(xs[0])
        batches = steps = math.ceil(n / batch_size)
        if steps_per_epoch is not None:
            steps = min(steps, self._positive_int(steps_per_epoch, "steps_per_epoch", "fit"))
        validates = self._validation_epochs(validation_freq)
        if validation_batch_size is not None:
            validation_batch_size = self._batch_size(validation_batch_size, "fit")
        cb = self._begin_fit(callbacks, verbose, epochs, steps)
        logs = {}
        for epoch in range(initial_epoch, epochs):
            # Each epoch draws its shuffling and dropout masks from a generator keyed by
            # (training_seed, epoch), so fit(initial_epoch=k) after load_model replays epoch k exactly.
            rng = np.random.default_rng([self.training_seed, epoch])
            self.reset_metrics()
            if cb.on_epoch_begin:
                cb.on_epoch_begin(epoch, {})
            first, data_pass = 0, epoch
            epoch_steps = steps
            if steps < batches:  # steps_per_epoch: epochs go on through the data where the last one stopped
                first, data_pass = _sources.pass_position(epoch, steps, batches)
                epoch_steps = min(steps, batches - first)  # a pass's end ends the epoch early (as Keras's iterator)
                # each pass shuffled once, from its own generator: every epoch of the pass draws the same order
                shuffler = np.random.default_rng([self.training_seed, data_pass, 1])
            else:
                shuffler = rng
            if shuffle is True:
                order = shuffler.permutation(n)
            elif shuffle == "batch":
                order = np.concatenate([start + shuffler.permutation(min(batch_size, n - start))
                                        for start in range(0, n, batch_size)])
            else:
                order = None
            exs, eys, ews = xs, ys, sample_weight
            if order is not None and sum(a.nbytes for a in xs + ys if a is not None) <= SHUFFLE_COPY_BYTES:
                # small data: one shuffled copy per epoch, then every batch is a cheap slice (the per-step
                # overhead matters there); large data is gathered batch by batch, never copied whole
                exs, eys = self._take(xs, order), self._take(ys, order)
                ews = None if sample_weight is None else sample_weight[order]
                order = None
            with backend.using_rng(rng), self._split_session(min(batch_size, n)):  # two threads if it pays
                self._run_epoch(exs, eys, ews, order, epoch_steps, batch_size, cb, first)
            logs = self._end_epoch(epoch, cb, val if validates(epoch + 1) else None,
                                   validation_batch_size or batch_size, validation_steps)
            if self.stop_training:
                break
        if cb.on_train_end:
            cb.on_train_end(logs)
        return self.history

    def _validation_source(self, validation_data, validation_steps):
        """``fit``'s validation data: checked arrays ``(xs, ys, sample_weight)``, or a Source of batches."""
        if _sources.kind(validation_data) is not None:
            steps = None if validation_steps is None else self._positive_int(validation_steps, "validation_steps",
                                                                             "fit")
            return _sources.Source(validation_data, steps, "validation_steps", "fit (validation_data)")
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be a tuple (x_val, y_val) or (x_val, y_val, sample_weight), or "
                             "a generator / keras.utils.Sequence of such batches.")
        vx, vy, vw = (tuple(validation_data) + (None,))[:3]
        return self._check_data(vx, vy, vw, "fit (validation_data)")

    def _begin_fit(self, callbacks, verbose, epochs, steps):
        """History, the callbacks and on_train_begin, for either kind of training data."""
        self.history = _callbacks.History()
        # Keras's order: the user's callbacks, then History, then the progress bar (whose epoch line then shows what
        # the callbacks added to the logs, e.g. ReduceLROnPlateau's learning_rate)
        cbs = list(callbacks or []) + [self.history] + ([_callbacks.ProgbarLogger(verbose)] if verbose else [])
        cb = _callbacks.CallbackList(cbs, self, {"verbose": verbose, "epochs": epochs, "steps": steps})
        self.stop_training = False
        if cb.on_train_begin:
            cb.on_train_begin({})
        if self.training_seed is None:
            self.training_seed = int(backend.rng().integers(2 ** 63))
        return cb

    def _end_epoch(self, epoch, cb, val, batch_size, validation_steps):
        """The epoch's logs, with ``val_`` ones when ``val`` (arrays or a Source) is given, to on_epoch_end."""
        logs = self._logs()
        if val is not None:
            if isinstance(val, _sources.Source):
                val_logs = self._evaluate_batches(self._source_batches(val, "fit (validation_data)"), val.steps,
                                                  cb=cb)
            else:
                val_logs = self._evaluate_arrays(*val, batch_size, steps=validation_steps, cb=cb)
            logs.update({"val_" + k: v for k, v in val_logs.items()})
        logs = dict(sorted(logs.items()))
        if cb.on_epoch_end:
            cb.on_epoch_end(epoch, logs)
        return logs

    def _source_batches(self, source, where, epoch=0, shuffled_pass=None):
        """``(step, (xs, ys, sample_weight))`` of a Source's epoch, each batch checked as fit checks arrays."""
        for step, item in source.batches(epoch, shuffled_pass):
            yield step, self._check_data(*_sources.unpack(item, where), where)

    def _fit_source(self, x, y, epochs, verbose, callbacks, validation_split, validation_data, shuffle, class_weight,
                    sample_weight, initial_epoch, steps_per_epoch, validation_steps, validation_batch_size,
                    validation_freq):
        """``fit`` on a keras.utils.Sequence / PyDataset or a generator of batches (models/sources.py)."""
        _sources.refuse_targets(y, sample_weight, "fit")
        if validation_split:
            raise ValueError("validation_split needs arrays (a generator or Sequence cannot be split); pass "
                             "validation_data instead.")
        _check_epochs(epochs)
        _check_shuffle(shuffle)
        verbose = self._verbose(verbose)
        steps = None if steps_per_epoch is None else self._positive_int(steps_per_epoch, "steps_per_epoch", "fit")
        source = _sources.Source(x, steps, "steps_per_epoch", "fit")
        fx, fy, fw = _sources.unpack(source.peek(), "fit")
        self._prepare_training(self._check_data(fx, fy, fw, "fit")[0])
        val = None if validation_data is None else self._validation_source(validation_data, validation_steps)
        validates = self._validation_epochs(validation_freq)
        if validation_batch_size is not None:
            validation_batch_size = self._batch_size(validation_batch_size, "fit")
        cb = self._begin_fit(callbacks, verbose, epochs, source.steps)
        seed = self.training_seed
        shuffled = (lambda data_pass: np.random.default_rng([seed, data_pass, 1])) if shuffle is True else None
        logs = {}
        for epoch in range(initial_epoch, epochs):
            rng = np.random.default_rng([seed, epoch])  # (dropout masks, as fit on arrays draws them)
            self.reset_metrics()
            if cb.on_epoch_begin:
                cb.on_epoch_begin(epoch, {})
            seen = 0
            with backend.using_rng(rng):
                for step, (xs, ys, sw) in self._source_batches(source, "fit", epoch, shuffled):
                    seen += 1
                    if cb.on_train_batch_begin:
                        cb.on_train_batch_begin(step, {})
                    if class_weight is not None:
                        if sw is not None:
                            raise ValueError("fit(): a batch carries sample weights and class_weight is given too; "
                                             "fold the class weights into the batches' sample weights.")
                        sw = _data.class_weight_to_sample_weight(ys[0], class_weight).astype(xs[0].dtype)
                    loss, preds, parts = self._train_batch(xs, ys, sw)
                    self._track(loss, ys, preds, sw, len(xs[0]), parts)
                    if cb.on_train_batch_end:
                        cb.on_train_batch_end(step, self._logs())
                    if self.stop_training:
                        break
            if source.exhausted:
                print(f"glassnet: the generator ran out of batches in epoch {epoch + 1}; training stops (give it at "
                      f"least steps_per_epoch x epochs = {source.steps * epochs} batches, e.g. by looping over the "
                      "data forever).", file=sys.stderr)
                self.stop_training = True
                if not seen:  # nothing trained in this epoch: no epoch to report (its metrics would read 0)
                    break
            logs = self._end_epoch(epoch, cb, val if validates(epoch + 1) else None, validation_batch_size or 32,
                                   validation_steps)
            if self.stop_training:
                break
        if cb.on_train_end:
            cb.on_train_end(logs)
        return self.history

    def _validation_epochs(self, validation_freq):
        """``validation_freq`` as a test of the (1-based) epoch number: every N-th epoch, or the epochs listed."""
        if isinstance(validation_freq, (list, tuple, set, range)):
            listed = {self._positive_int(e, "each epoch in validation_freq", "fit") for e in validation_freq}
            return listed.__contains__
        every = self._positive_int(validation_freq, "validation_freq (an integer or a list of epochs)", "fit")
        return lambda epoch: epoch % every == 0

    def _run_epoch(self, xs, ys, ws, order, steps, batch_size, cb, first=0):
        """``steps`` batches of the training arrays from batch ``first`` on; batch k holds rows
        ``order[k·B:(k+1)·B]`` (gathered per batch: no shuffled copy of the whole data set), or rows k·B … when
        order is None."""
        for step in range(steps):
            sl = slice((first + step) * batch_size, (first + step + 1) * batch_size)
            if order is not None:
                sl = order[sl]
            if cb.on_train_batch_begin:
                cb.on_train_batch_begin(step, {})
            xb, yb = self._take(xs, sl), self._take(ys, sl)
            wb = None if ws is None else ws[sl]
            loss, preds, parts = self._train_batch(xb, yb, wb)
            self._track(loss, yb, preds, wb, len(xb[0]), parts)
            if cb.on_train_batch_end:
                cb.on_train_batch_end(step, self._logs())
            if self.stop_training:
                break

    # --- evaluate / predict ---------------------------------------------------------------------
    def _evaluate_arrays(self, xs, ys, sw, batch_size, bar=None, steps=None, cb=None):
        n_steps = math.ceil(len(xs[0]) / batch_size)
        if steps is not None:
            n_steps = min(n_steps, self._positive_int(steps, "steps", "evaluate"))

        def batches():
            for step in range(n_steps):
                sl = slice(step * batch_size, (step + 1) * batch_size)
                yield step, (self._take(xs, sl), self._take(ys, sl), None if sw is None else sw[sl])

        with self._split_session(min(batch_size, len(xs[0]))):  # a convnet's front on two threads
            return self._evaluate_batches(batches(), n_steps, bar, cb)

    def _evaluate_batches(self, batches, n_steps, bar=None, cb=None):
        """Loss and metrics over ``batches`` (``(step, (xs, ys, sample_weight))``): the logs."""
        self.reset_metrics()
        if cb is not None and cb.on_test_begin:
            cb.on_test_begin({})
        seen = 0
        for step, (xb, yb, wb) in batches:
            seen += 1
            if cb is not None and cb.on_test_batch_begin:
                cb.on_test_batch_begin(step, {})
            loss, preds, parts = self._test_batch(xb, yb, wb)
            self._track(loss, yb, preds, wb, len(xb[0]), parts)
            if bar is not None:
                bar.update(step + 1, self._logs(), finalize=step + 1 == n_steps)
            if cb is not None and cb.on_test_batch_end:
                cb.on_test_batch_end(step, self._logs())
        if not seen:
            raise ValueError("evaluate(): the generator yielded no batch; it must yield at least one.")
        logs = self._logs()
        if cb is not None and cb.on_test_end:
            cb.on_test_end(logs)
        return logs

    @staticmethod
    def _positive_int(value, what, where):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{where}() expects {what} to be a positive integer or None, got {value!r}.")
        return int(value)

    def _ordered(self, logs):
        """[loss, *per-output losses, *metrics] in compile order (a float when that is all there is)."""
        values = [logs[name] for name in self.metrics_names]
        return values[0] if len(values) == 1 else values

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False, **kwargs):
        """Loss and metrics on (x, y): ``[loss, *metrics]`` in compile order (a float if there are none)."""
        if kwargs:
            raise TypeError(f"evaluate() got an unexpected keyword argument {next(iter(kwargs))!r}.")
        self._assert_compiled("evaluate")
        if _sources.kind(x) is not None:  # a Sequence / PyDataset or a generator of batches
            _sources.refuse_targets(y, sample_weight, "evaluate")
            steps = None if steps is None else self._positive_int(steps, "steps", "evaluate")
            source = _sources.Source(x, steps, "steps", "evaluate")
            verbose = self._verbose(verbose)
            bar = self._bar(source.steps, verbose)
            cb = _callbacks.CallbackList(callbacks, self, {"verbose": verbose, "steps": source.steps}) \
                if callbacks else None
            logs = self._evaluate_batches(self._source_batches(source, "evaluate"), source.steps, bar, cb)
            return logs if return_dict else self._ordered(logs)
        xs, ys, sample_weight = self._check_data(x, y, sample_weight, "evaluate")
        batch_size = self._batch_size(batch_size, "evaluate")
        verbose = self._verbose(verbose)
        n_steps = math.ceil(len(xs[0]) / batch_size)
        if steps is not None:
            n_steps = min(n_steps, self._positive_int(steps, "steps", "evaluate"))
        bar = self._bar(n_steps, verbose)
        cb = _callbacks.CallbackList(callbacks, self, {"verbose": verbose, "steps": n_steps}) if callbacks else None
        logs = self._evaluate_arrays(xs, ys, sample_weight, batch_size, bar, n_steps, cb)
        return logs if return_dict else self._ordered(logs)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Outputs for x, computed in batches with dropout off (a float array, or a list for several outputs)."""
        if type(x) is not np.ndarray and _sources.kind(x) is not None:  # batches from a Sequence or a generator
            return self._predict_source(x, verbose, steps, callbacks)  # (x, or (x, y...)); (1-row latency: one test)
        xs = self._check_inputs(x, "predict")
        self._ensure_built(xs[0].shape)
        batch_size = self._batch_size(batch_size, "predict")
        verbose = self._verbose(verbose)
        if not verbose and callbacks is None and steps is None and len(xs[0]) <= batch_size:
            if len(xs[0]) < parallel.MIN_BATCH:  # (1-row latency: not even a context manager)
                return self.call(self._feed(xs), training=False)  # one batch, nothing to report: the loop, once
            with self._split_session(len(xs[0])):  # a convnet's front on two threads (engine.parallel)
                return self.call(self._feed(xs), training=False)
        n_steps = math.ceil(len(xs[0]) / batch_size)
        if steps is not None:
            n_steps = min(n_steps, self._positive_int(steps, "steps", "predict"))
        cb = _callbacks.CallbackList(callbacks, self, {"verbose": verbose, "steps": n_steps}) if callbacks else None
        batches = ((step, xs if n_steps == 1 else self._take(xs, slice(step * batch_size, (step + 1) * batch_size)))
                   for step in range(n_steps))
        with self._split_session(min(batch_size, len(xs[0]))):  # a convnet's front on two threads
            return self._predict_batches(batches, n_steps, self._bar(n_steps, verbose), cb)

    @staticmethod
    def _bar(steps, verbose):
        if not verbose:
            return None
        from ..utils.progbar import Progbar
        return Progbar(steps, verbose=verbose)

    def _predict_batches(self, batches, n_steps, bar, cb):
        """The outputs for ``batches`` (``(step, checked inputs)``), joined."""
        if cb is not None and cb.on_predict_begin:
            cb.on_predict_begin({})
        outs = []
        for step, batch in batches:
            if cb is not None and cb.on_predict_batch_begin:
                cb.on_predict_batch_begin(step, {})
            out = self.call(self._feed(batch), training=False)
            outs.append(out)
            if bar:
                bar.update(step + 1, finalize=step + 1 == n_steps)
            if cb is not None and cb.on_predict_batch_end:
                cb.on_predict_batch_end(step, {"outputs": out})
        if cb is not None and cb.on_predict_end:
            cb.on_predict_end({})
        if not outs:
            raise ValueError("predict(): the generator yielded no batch.")
        if len(outs) == 1:
            return outs[0]
        if isinstance(outs[0], list):
            return [np.concatenate([o[i] for o in outs]) for i in range(len(outs[0]))]
        return np.concatenate(outs)

    def _predict_source(self, x, verbose, steps, callbacks):
        steps = None if steps is None else self._positive_int(steps, "steps", "predict")
        source = _sources.Source(x, steps, "steps", "predict")
        verbose = self._verbose(verbose)
        cb = _callbacks.CallbackList(callbacks, self, {"verbose": verbose, "steps": source.steps}) \
            if callbacks else None

        def batches():
            for step, item in source.batches():
                xs = self._check_inputs(_sources.unpack(item, "predict")[0], "predict")
                self._ensure_built(xs[0].shape)
                yield step, xs

        return self._predict_batches(batches(), source.steps, self._bar(source.steps, verbose), cb)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False,
                       reset_metrics=True):
        """One optimizer step on one batch; returns ``[loss, *metrics]`` for this batch (Keras 2's default)."""
        self._assert_compiled("train_on_batch")
        xs, ys, sample_weight = self._check_data(x, y, sample_weight, "train_on_batch")
        if class_weight is not None:
            sample_weight = _data.class_weight_to_sample_weight(ys[0], class_weight).astype(xs[0].dtype)
        self._prepare_training(xs)
        if reset_metrics or self._loss_count is None:
            self.reset_metrics()
        with self._split_session(len(xs[0])):  # a convnet's front on two threads (engine.parallel)
            loss, preds, parts = self._train_batch(xs, ys, sample_weight)
        self._track(loss, ys, preds, sample_weight, len(xs[0]), parts)
        return self._batch_result(return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False, reset_metrics=True):
        self._assert_compiled("test_on_batch")
        xs, ys, sample_weight = self._check_data(x, y, sample_weight, "test_on_batch")
        if reset_metrics or self._loss_count is None:
            self.reset_metrics()
        with self._split_session(len(xs[0])):
            loss, preds, parts = self._test_batch(xs, ys, sample_weight)
        self._track(loss, ys, preds, sample_weight, len(xs[0]), parts)
        return self._batch_result(return_dict)

    def _batch_result(self, return_dict):
        logs = self._logs()
        return logs if return_dict else self._ordered(logs)

    def predict_on_batch(self, x):
        xs = self._check_inputs(x, "predict_on_batch")
        self._ensure_built(xs[0].shape)
        if len(xs[0]) < parallel.MIN_BATCH:  # (1-row latency: not even a context manager)
            return self.call(self._feed(xs), training=False)
        with self._split_session(len(xs[0])):  # a convnet's front on two threads (engine.parallel)
            return self.call(self._feed(xs), training=False)

    # --- Keras 2 methods that Keras 3 removed ---------------------------------------------------
    def predict_classes(self, x, batch_size=32, verbose=0):
        """Keras 2: class indices (argmax, or p > 0.5 for a single sigmoid output)."""
        legacy_notice("model.predict_classes(x)", "(model.predict(x) > 0.5).astype('int32') or "
                                                  "np.argmax(model.predict(x), axis=-1)")
        proba = self.predict(x, batch_size=batch_size, verbose=verbose)
        if proba.shape[-1] > 1:
            return proba.argmax(axis=-1)
        return (proba > 0.5).astype("int32")

    def predict_proba(self, x, batch_size=32, verbose=0):
        legacy_notice("model.predict_proba(x)", "model.predict(x)")
        return self.predict(x, batch_size=batch_size, verbose=verbose)

    def fit_generator(self, *args, **kwargs):
        raise AttributeError("fit_generator() was removed in Keras 3 and is not in glassnet: load the data into "
                             "arrays and call fit(x, y, ...).")

    # --- files ----------------------------------------------------------------------------------
    def save_weights(self, filepath, overwrite=True):
        from ..saving import native
        native.save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath, skip_mismatch=False):
        from ..saving import native
        native.load_weights(self, filepath)

    def export_onnx(self, filepath, opset=17, input_name=None, output_name=None):
        """Write the model as ONNX (dynamic batch dimension), for onnxruntime and other runtimes."""
        from ..saving.onnx_export import export_onnx
        return export_onnx(self, filepath, opset=opset, input_name=input_name, output_name=output_name)

    def export(self, filepath, format="onnx", **kwargs):
        """Keras 3's ``model.export``; glassnet exports ``format="onnx"`` (TensorFlow SavedModel needs TensorFlow)."""
        if format != "onnx":
            raise ValueError(f"glassnet exports format='onnx' only, got format={format!r}. For a SavedModel, load the "
                             "model in Keras (save it as .keras) and export it there.")
        return self.export_onnx(filepath, **kwargs)

    def save(self, filepath, overwrite=True, include_optimizer=True):
        """Save architecture, weights, compile settings (and optimizer state) to one file.

        ``.glassnet``: glassnet's own format. ``.keras``: Keras 3's format, which Keras can open.
        """
        from ..saving import save_model
        save_model(self, filepath, overwrite=overwrite, include_optimizer=include_optimizer)


def _check_epochs(epochs):
    if not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"fit() expects epochs to be a non-negative integer, got {epochs!r}.")


def _check_shuffle(shuffle):
    if shuffle not in (True, False, "batch"):
        raise ValueError(f"shuffle must be True, False or 'batch', got {shuffle!r}.")


class _Head:
    """One model output in training: its loss, loss weight, metrics and running loss."""

    def __init__(self, name, loss, weight, metric_specs, multi):
        self.name, self.loss, self.weight, self.metric_specs, self.multi = name, loss, weight, metric_specs, multi
        self.metrics = None
        self.loss_name = f"{name}_loss"
        self.output_shape = None
        self.reset()

    def reset(self):
        self.loss_total, self.count = 0.0, 0
        for m, _ in self.metrics or []:
            m.reset_state()

    def metric_name(self, metric):
        return f"{self.name}_{metric.name}" if self.multi else metric.name

    def _build(self, y_true, y_pred):
        metrics = []
        for spec, weighted in self.metric_specs:
            if isinstance(spec, str) and spec.lower() in ("accuracy", "acc"):
                m = _metrics.accuracy_for_shapes(spec, y_true, y_pred)
            else:
                m = _metrics.get(spec)
            metrics.append((m, weighted))
        names = [m.name for m, _ in metrics]
        if len(set(names)) != len(names) or "loss" in names:
            raise ValueError(f"compile(metrics=...) gives duplicate metric names {names}; name them apart, e.g. "
                             "glassnet.metrics.AUC(name='auc_pr', curve='PR').")
        self.metrics = metrics

    def track(self, y, y_pred, sw, n, loss):
        if y is None:
            return
        if self.metrics is None:
            self._build(y, y_pred)
        if loss is not None:
            self.loss_total += loss * n
            self.count += n
        for m, weighted in self.metrics:
            m.update_state(y, y_pred, sw if weighted else None)

    def log(self, logs):
        if self.multi and self.loss is not None:
            logs[self.loss_name] = self.loss_total / self.count if self.count else 0.0
        for m, _ in self.metrics or []:
            value = m.result()  # (a per-class metric's array stays an array, as in Keras's logs)
            logs[self.metric_name(m)] = float(value) if np.ndim(value) == 0 else np.asarray(value)
