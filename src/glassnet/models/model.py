"""Model: the training loop (compile, fit, evaluate, predict) on top of any forward/backward chain.

A training step, in textbook order:
    y_pred, backward = model.forward(x, training=True)      # layers chain their closures
    loss, dy = loss_fn.value_and_grad(y, y_pred, w)          # J and ∂J/∂y_pred
    grads ← 0;  backward(dy)                                 # backpropagation fills Weight.grad
    optimizer.apply()                                        # θ ← θ − α·∇J(θ) (or Adam, ...)
Logged values are Keras's: running means over the epoch's pre-update batches, weighted by batch size.
"""
import math
import sys

import numpy as np

from .. import callbacks as _callbacks
from .. import losses as _losses
from .. import metrics as _metrics
from .. import optimizers as _optimizers
from ..engine import backend
from ..engine.layer import Layer
from ..utils import data as _data
from ..utils.legacy import legacy_notice


def _unique(weights):
    """Weights in order, each once (a layer shared between places owns its weights once)."""
    seen, out = set(), []
    for w in weights:
        if id(w) not in seen:
            seen.add(id(w))
            out.append(w)
    return out


class Model(Layer):
    """Base of Sequential (and of functional models): weights over layers plus the training API."""

    def __init__(self, name=None, trainable=True, **kwargs):
        super().__init__(name=name or backend.unique_name(backend.snake_case(type(self).__name__)),
                         trainable=trainable, **kwargs)
        self.optimizer = None
        self.loss = None
        self.compiled = False
        self.stop_training = False
        self.history = None
        self._metric_specs = []
        self._metrics = None
        self.training_seed = None  # drawn on the first fit; saved with the model so resumed runs match

    # --- structure ------------------------------------------------------------------------------
    @property
    def layers(self):
        raise NotImplementedError

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
        """Choose the optimizer, the loss and the metrics (Keras's arguments and defaults)."""
        if "lr" in kwargs or "decay" in kwargs:
            raise TypeError("compile() does not take `lr`/`decay`; pass them to the optimizer, e.g. "
                            "optimizer=SGD(learning_rate=0.01).")
        kwargs.pop("sample_weight_mode", None)  # Keras 2 argument with no effect on arrays
        if kwargs:
            raise TypeError(f"compile() got unexpected keyword argument(s) {sorted(kwargs)}.")
        self.optimizer = _optimizers.get(optimizer)
        self.loss = None if loss is None else _losses.get(loss)
        self.loss_weight = 1.0 if loss_weights is None else float(
            loss_weights[0] if isinstance(loss_weights, (list, tuple)) else loss_weights)
        if isinstance(metrics, (str, _metrics.Metric)) or callable(metrics) and not isinstance(metrics, (list, tuple)):
            metrics = [metrics]
        if isinstance(weighted_metrics, (str, _metrics.Metric)):
            weighted_metrics = [weighted_metrics]
        self._metric_specs = [(m, False) for m in (metrics or [])] + [(m, True) for m in (weighted_metrics or [])]
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

    def _build_metrics(self, y_true, y_pred):
        metrics = []
        for spec, weighted in self._metric_specs:
            if isinstance(spec, str) and spec.lower() in ("accuracy", "acc"):
                m = _metrics.accuracy_for_shapes(spec, y_true, y_pred)
            else:
                m = _metrics.get(spec)
            metrics.append((m, weighted))
        names = [m.name for m, _ in metrics]
        if len(set(names)) != len(names) or "loss" in names:
            raise ValueError(f"compile(metrics=...) gives duplicate metric names {names}; name them apart, e.g. "
                             "glassnet.metrics.AUC(name='auc_pr', curve='PR').")
        self._metrics = metrics

    @property
    def metrics(self):
        return [m for m, _ in (self._metrics or [])]

    @property
    def metrics_names(self):
        """['loss', *metric names] (Keras 2's list; Keras 3 returns ['loss', 'compile_metrics'])."""
        return ["loss"] + [m.name for m in self.metrics]

    def reset_metrics(self):
        self._loss_total = 0.0
        self._loss_count = 0
        for m in self.metrics:
            m.reset_state()

    # --- one batch ------------------------------------------------------------------------------
    def _prepare_training(self, x):
        """Build the model, pack trainable weights into flat buffers and build the optimizer once."""
        self._ensure_built(x.shape)
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
        self._activity = [layer for layer in self._all_layers() if layer.activity_regularizer is not None]

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

    def _train_batch(self, x, y, sw):
        y_pred, backward = self.forward(x, training=True)
        loss, dy = self.loss.value_and_grad(y, y_pred, sw)
        if self.loss_weight != 1.0:
            loss, dy = loss * self.loss_weight, dy * self.loss_weight
        if self._regularized or self._activity:
            loss += self._penalties()
        for group in self.optimizer.groups:
            group.grad.fill(0)
        backward(dy)
        for w in self._regularized:
            if w.trainable:
                w.grad += w.regularizer.gradient(w.value)
        self.optimizer.apply()
        return loss, y_pred

    def _test_batch(self, x, y, sw):
        y_pred = self.call(x, training=False)
        loss = self.loss(y, y_pred, sw) * self.loss_weight
        if self._has_penalties():
            loss += sum(w.regularizer(w.value) for w in self.weights if w.regularizer is not None)
        return float(loss), y_pred

    def _has_penalties(self):
        return any(w.regularizer is not None for w in self.weights)

    def _track(self, loss, y, y_pred, sw, n):
        if self._metrics is None:
            self._build_metrics(y, y_pred)
            self.reset_metrics()
        self._loss_total += loss * n
        self._loss_count += n
        for m, weighted in self._metrics:
            m.update_state(y, y_pred, sw if weighted else None)

    def _logs(self):
        logs = {"loss": self._loss_total / self._loss_count if self._loss_count else 0.0}
        for m in self.metrics:
            logs[m.name] = float(m.result())
        return dict(sorted(logs.items()))

    # --- data -----------------------------------------------------------------------------------
    def _check_x(self, x, where):
        x = _data.as_array(x, "x", where)
        if self.built:
            _data.check_input_shape(x, self.input_shape, where, self.name)
        _data.check_finite(x, "x", where)
        dtype = self._input_dtype()
        return x if x.dtype == dtype else x.astype(dtype)

    def _check_xy(self, x, y, sample_weight, where):
        x = self._check_x(x, where)
        y = _data.as_array(y, "y", where)
        _data.check_same_length(len(x), y, "y", where)
        _data.check_finite(y, "y", where)
        if y.dtype.kind in "biuf" and not getattr(self.loss, "sparse_labels", False) and y.dtype != x.dtype:
            y = y.astype(x.dtype)
        if sample_weight is not None:
            sample_weight = _data.as_array(sample_weight, "sample_weight", where).astype(x.dtype)
            _data.check_same_length(len(x), sample_weight, "sample_weight", where)
            _data.check_finite(sample_weight, "sample_weight", where)
            if (sample_weight < 0).any():
                raise ValueError(f"sample_weight passed to {where}() has negative values; weights must be >= 0.")
        return x, y, sample_weight

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
        x, y, sample_weight = self._check_xy(x, y, sample_weight, "fit")
        if class_weight is not None:
            if sample_weight is not None:
                raise ValueError("You cannot use `class_weight` and `sample_weight` at the same time; fold the class "
                                 "weights into sample_weight.")
            sample_weight = _data.class_weight_to_sample_weight(y, class_weight).astype(x.dtype)
        if not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"fit() expects epochs to be a non-negative integer, got {epochs!r}.")
        batch_size = self._batch_size(batch_size, "fit")
        verbose = self._verbose(verbose)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be a tuple (x_val, y_val) or (x_val, y_val, sample_weight).")
            vx, vy, vw = (tuple(validation_data) + (None,))[:3]
            val = self._check_xy(vx, vy, vw, "fit (validation_data)")
        elif validation_split:
            if not 0 < validation_split < 1:
                raise ValueError(f"validation_split must be in (0, 1), got {validation_split}.")
            split_at = int(math.floor(len(x) * (1.0 - validation_split)))
            if split_at == 0 or split_at == len(x):
                raise ValueError(f"validation_split={validation_split} leaves an empty training or validation set "
                                 f"with {len(x)} samples; use a larger dataset or another split.")
            val = (x[split_at:], y[split_at:], None if sample_weight is None else sample_weight[split_at:])
            x, y = x[:split_at], y[:split_at]
            sample_weight = None if sample_weight is None else sample_weight[:split_at]
        if shuffle not in (True, False, "batch"):
            raise ValueError(f"shuffle must be True, False or 'batch', got {shuffle!r}.")

        self._prepare_training(x)
        n = len(x)
        steps = math.ceil(n / batch_size)
        if steps_per_epoch is not None:
            steps = min(steps, self._positive_int(steps_per_epoch, "steps_per_epoch", "fit"))
        validation_freq = self._positive_int(validation_freq, "validation_freq", "fit")
        if validation_batch_size is not None:
            validation_batch_size = self._batch_size(validation_batch_size, "fit")
        self.history = _callbacks.History()
        cbs = ([_callbacks.ProgbarLogger(verbose)] if verbose else []) + list(callbacks or []) + [self.history]
        params = {"verbose": verbose, "epochs": epochs, "steps": steps}
        cb = _callbacks.CallbackList(cbs, self, params)
        self.stop_training = False
        if cb.on_train_begin:
            cb.on_train_begin()
        if self.training_seed is None:
            self.training_seed = int(backend.rng().integers(2 ** 63))
        for epoch in range(initial_epoch, epochs):
            # Each epoch draws its shuffling and dropout masks from a generator keyed by
            # (training_seed, epoch), so fit(initial_epoch=k) after load_model replays epoch k exactly.
            rng = np.random.default_rng([self.training_seed, epoch])
            self.reset_metrics()
            if cb.on_epoch_begin:
                cb.on_epoch_begin(epoch, {})
            if shuffle is True:
                order = rng.permutation(n)
            elif shuffle == "batch":
                order = np.concatenate([start + rng.permutation(min(batch_size, n - start))
                                        for start in range(0, n, batch_size)])
            else:
                order = None
            xs, ys = (x, y) if order is None else (x[order], y[order])
            ws = None if sample_weight is None else (sample_weight if order is None else sample_weight[order])
            with backend.using_rng(rng):
                self._run_epoch(xs, ys, ws, steps, batch_size, cb)
            logs = self._logs()
            if val is not None and (epoch + 1) % validation_freq == 0:
                val_logs = self._evaluate_arrays(*val, validation_batch_size or batch_size, steps=validation_steps,
                                                 cb=cb)
                logs.update({"val_" + k: v for k, v in val_logs.items()})
            logs = dict(sorted(logs.items()))
            if cb.on_epoch_end:
                cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        if cb.on_train_end:
            cb.on_train_end()
        return self.history

    def _run_epoch(self, xs, ys, ws, steps, batch_size, cb):
        """One pass over the (already shuffled) training arrays, batch by batch."""
        for step in range(steps):
            sl = slice(step * batch_size, (step + 1) * batch_size)
            if cb.on_train_batch_begin:
                cb.on_train_batch_begin(step, {})
            xb, yb = xs[sl], ys[sl]
            wb = None if ws is None else ws[sl]
            loss, y_pred = self._train_batch(xb, yb, wb)
            self._track(loss, yb, y_pred, wb, len(xb))
            if cb.on_train_batch_end:
                cb.on_train_batch_end(step, self._logs())
            if self.stop_training:
                break

    # --- evaluate / predict ---------------------------------------------------------------------
    def _evaluate_arrays(self, x, y, sw, batch_size, bar=None, steps=None, cb=None):
        self.reset_metrics()
        n_steps = math.ceil(len(x) / batch_size)
        if steps is not None:
            n_steps = min(n_steps, self._positive_int(steps, "steps", "evaluate"))
        if cb is not None and cb.on_test_begin:
            cb.on_test_begin()
        for step in range(n_steps):
            if cb is not None and cb.on_test_batch_begin:
                cb.on_test_batch_begin(step, {})
            sl = slice(step * batch_size, (step + 1) * batch_size)
            wb = None if sw is None else sw[sl]
            loss, y_pred = self._test_batch(x[sl], y[sl], wb)
            self._track(loss, y[sl], y_pred, wb, len(y_pred))
            if bar is not None:
                bar.update(step + 1, self._logs(), finalize=step + 1 == n_steps)
            if cb is not None and cb.on_test_batch_end:
                cb.on_test_batch_end(step, self._logs())
        logs = self._logs()
        if cb is not None and cb.on_test_end:
            cb.on_test_end(logs)
        return logs

    @staticmethod
    def _positive_int(value, what, where):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{where}() expects {what} to be a positive integer or None, got {value!r}.")
        return int(value)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False, **kwargs):
        """Loss and metrics on (x, y): ``[loss, *metrics]`` in compile order (a float if there are none)."""
        if kwargs:
            raise TypeError(f"evaluate() got an unexpected keyword argument {next(iter(kwargs))!r}.")
        self._assert_compiled("evaluate")
        x, y, sample_weight = self._check_xy(x, y, sample_weight, "evaluate")
        self._ensure_built(x.shape)
        batch_size = self._batch_size(batch_size, "evaluate")
        verbose = self._verbose(verbose)
        n_steps = math.ceil(len(x) / batch_size)
        if steps is not None:
            n_steps = min(n_steps, self._positive_int(steps, "steps", "evaluate"))
        bar = None
        if verbose:
            from ..utils.progbar import Progbar
            bar = Progbar(n_steps, verbose=verbose)
        cb = _callbacks.CallbackList(callbacks, self, {"verbose": verbose, "steps": n_steps}) if callbacks else None
        logs = self._evaluate_arrays(x, y, sample_weight, batch_size, bar, n_steps, cb)
        if return_dict:
            return logs
        values = [logs["loss"]] + [logs[m.name] for m in self.metrics]
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Outputs for x, computed in batches with dropout off (a float array, like Keras's)."""
        x = self._check_x(x, "predict")
        self._ensure_built(x.shape)
        batch_size = self._batch_size(batch_size, "predict")
        verbose = self._verbose(verbose)
        n_steps = math.ceil(len(x) / batch_size)
        if steps is not None:
            n_steps = min(n_steps, self._positive_int(steps, "steps", "predict"))
        bar = None
        if verbose:
            from ..utils.progbar import Progbar
            bar = Progbar(n_steps, verbose=verbose)
        cb = _callbacks.CallbackList(callbacks, self, {"verbose": verbose, "steps": n_steps}) if callbacks else None
        if cb is not None and cb.on_predict_begin:
            cb.on_predict_begin()
        outs = []
        for step in range(n_steps):
            if cb is not None and cb.on_predict_batch_begin:
                cb.on_predict_batch_begin(step, {})
            out = self.call(x if n_steps == 1 else x[step * batch_size:(step + 1) * batch_size], training=False)
            outs.append(out)
            if bar:
                bar.update(step + 1, finalize=step + 1 == n_steps)
            if cb is not None and cb.on_predict_batch_end:
                cb.on_predict_batch_end(step, {"outputs": out})
        if cb is not None and cb.on_predict_end:
            cb.on_predict_end()
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False,
                       reset_metrics=True):
        """One optimizer step on one batch; returns ``[loss, *metrics]`` for this batch (Keras 2's default)."""
        self._assert_compiled("train_on_batch")
        x, y, sample_weight = self._check_xy(x, y, sample_weight, "train_on_batch")
        if class_weight is not None:
            sample_weight = _data.class_weight_to_sample_weight(y, class_weight).astype(x.dtype)
        self._prepare_training(x)
        if reset_metrics or self._metrics is None:
            self._metrics_ready_for_batch()
        loss, y_pred = self._train_batch(x, y, sample_weight)
        self._track(loss, y, y_pred, sample_weight, len(x))
        return self._batch_result(return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False, reset_metrics=True):
        self._assert_compiled("test_on_batch")
        x, y, sample_weight = self._check_xy(x, y, sample_weight, "test_on_batch")
        self._ensure_built(x.shape)
        if reset_metrics or self._metrics is None:
            self._metrics_ready_for_batch()
        loss, y_pred = self._test_batch(x, y, sample_weight)
        self._track(loss, y, y_pred, sample_weight, len(x))
        return self._batch_result(return_dict)

    def _metrics_ready_for_batch(self):
        if self._metrics is not None:
            self.reset_metrics()
        else:
            self._loss_total, self._loss_count = 0.0, 0

    def _batch_result(self, return_dict):
        logs = self._logs()
        if return_dict:
            return logs
        values = [logs["loss"]] + [logs[m.name] for m in self.metrics]
        return values[0] if len(values) == 1 else values

    def predict_on_batch(self, x):
        x = self._check_x(x, "predict_on_batch")
        self._ensure_built(x.shape)
        return self.call(x, training=False)

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
