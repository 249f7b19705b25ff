"""Callbacks for ``fit``: History, progress, early stopping, checkpoints, LR control, logging."""
import csv
import math
import os
import sys

import numpy as np

from .engine.registry import register


class Callback:
    """Base class. Hooks receive the epoch/batch index and a ``logs`` dict of current values."""

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_batch_begin(self, batch, logs=None): pass  # Keras 2's names: the training batch hooks call them
    def on_batch_end(self, batch, logs=None): pass
    def on_train_batch_begin(self, batch, logs=None): self.on_batch_begin(batch, logs)
    def on_train_batch_end(self, batch, logs=None): self.on_batch_end(batch, logs)
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_test_batch_begin(self, batch, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass
    def on_predict_begin(self, logs=None): pass
    def on_predict_end(self, logs=None): pass
    def on_predict_batch_begin(self, batch, logs=None): pass
    def on_predict_batch_end(self, batch, logs=None): pass


def _overrides(cb, hook):
    """True when ``cb`` defines ``hook`` itself (a method, or an instance attribute as LambdaCallback sets); for the
    training batch hooks, also when it defines Keras 2's ``on_batch_begin`` / ``on_batch_end`` they call."""
    if hook in vars(cb) or getattr(type(cb), hook, None) is not getattr(Callback, hook):
        return True
    alias = _ALIASES.get(hook)
    return alias is not None and _overrides(cb, alias)


_ALIASES = {"on_train_batch_begin": "on_batch_begin", "on_train_batch_end": "on_batch_end"}


class CallbackList:
    """Dispatches each hook to every callback, skipping hooks nobody overrides (keeps steps cheap)."""

    HOOKS = [name for name in vars(Callback) if name.startswith("on_") and name not in _ALIASES.values()]

    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.set_model(model)
            cb.set_params(params)
        for hook in self.HOOKS:
            active = [getattr(cb, hook) for cb in self.callbacks if _overrides(cb, hook)]
            setattr(self, hook, self._dispatch(active) if active else None)

    @staticmethod
    def _dispatch(fns):
        def call(*args):
            for fn in fns:
                fn(*args)
        return call

    def __iter__(self):
        return iter(self.callbacks)


@register("callbacks")
class History(Callback):
    """Records each epoch's logs: ``history.history = {'loss': [...], ...}``, ``history.epoch``."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self):
        return f"<History epochs={len(self.epoch)} keys={sorted(self.history)}>"


class ProgbarLogger(Callback):
    """Prints Keras 3's progress: ``Epoch i/N`` (when N > 1) and the bar (verbose 1) or a line (verbose 2)."""

    def __init__(self, verbose=1):
        super().__init__()
        self.verbose = verbose
        self._bar = None

    def on_epoch_begin(self, epoch, logs=None):
        from .utils.progbar import Progbar
        if self.params.get("epochs", 1) > 1:
            print(f"Epoch {epoch + 1}/{self.params['epochs']}", flush=True)
        self._bar = Progbar(self.params["steps"], verbose=self.verbose)

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 < self.params["steps"]:
            self._bar.update(batch + 1, logs, finalize=False)

    def on_epoch_end(self, epoch, logs=None):
        self._bar.update(self.params["steps"], logs, finalize=True)


@register("callbacks")
class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        self.monitor, self.min_delta, self.patience, self.verbose = monitor, abs(min_delta), patience, verbose
        self.baseline, self.restore_best_weights, self.start_from_epoch = baseline, restore_best_weights, start_from_epoch
        self.mode = _resolve_mode(mode, monitor)
        self.stopped_epoch = 0

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_weights = None
        self.best_epoch = 0

    def _improved(self, value, reference):
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        value = _get_monitored(logs, self.monitor, "EarlyStopping")
        if value is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
        self.wait += 1
        if self._improved(value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._improved(value, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


def _resolve_mode(mode, monitor):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}.")
    if mode != "auto":
        return mode
    return "max" if any(k in monitor for k in ("acc", "auc", "precision", "recall")) else "min"


def _get_monitored(logs, monitor, who):
    logs = logs or {}
    if monitor not in logs:
        print(f"{who}: metric {monitor!r} is not available; available metrics are: {', '.join(sorted(logs))}.",
              file=sys.stderr)
        return None
    return float(logs[monitor])


@register("callbacks")
class ModelCheckpoint(Callback):
    """Save the model (``.glassnet``, or ``.keras`` for Keras 3) or its weights (``.weights.safetensors``) after epochs.

    Files are written atomically: a temporary file in the same directory, fsync, then rename, so
    a crash never leaves a partial checkpoint. ``filepath`` may hold ``{epoch}`` and log keys.
    ``keep_last`` (glassnet) keeps only the newest N files that this callback wrote.
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None, keep_last=None):
        super().__init__()
        self.filepath = os.fspath(filepath)
        if save_weights_only and not self.filepath.endswith(".weights.safetensors"):
            raise ValueError(f"When save_weights_only=True, the filepath must end in `.weights.safetensors`. "
                             f"Received: filepath={self.filepath}")
        if not save_weights_only and not self.filepath.endswith((".glassnet", ".keras")):
            raise ValueError(f"The filepath provided must end in `.glassnet` (the glassnet model format) or `.keras` "
                             f"(Keras 3's), or use save_weights_only=True with `.weights.safetensors`. Received: "
                             f"filepath={self.filepath}")
        if keep_last is not None and not (isinstance(keep_last, int) and not isinstance(keep_last, bool)
                                          and keep_last >= 1):
            raise ValueError(f"keep_last must be None (keep every file) or a number >= 1, got {keep_last!r}.")
        if save_freq != "epoch" and not (isinstance(save_freq, int) and save_freq > 0):
            raise ValueError(f"save_freq must be 'epoch' or a positive number of batches, got {save_freq!r}.")
        self.monitor, self.verbose, self.save_best_only = monitor, verbose, save_best_only
        self.save_weights_only, self.save_freq, self.keep_last = save_weights_only, save_freq, keep_last
        self.mode = _resolve_mode(mode, monitor)
        self.best = initial_value_threshold if initial_value_threshold is not None else (
            math.inf if self.mode == "min" else -math.inf)
        self.written = []
        self._batches = 0
        self._epoch = 0

    def on_train_begin(self, logs=None):
        """Remove temporary files that a killed process may have left from an interrupted write."""
        from .saving.native import remove_stale_temporaries
        remove_stale_temporaries(self.filepath)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq != "epoch":
            self._batches += 1
            if self._batches % self.save_freq == 0:
                self._save(self._epoch, logs, batch=batch)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, logs)

    def _save(self, epoch, logs, batch=None):
        logs = dict(logs or {})
        try:
            path = self.filepath.format(epoch=epoch + 1, batch=batch, **logs)
        except KeyError as e:
            raise KeyError(f"ModelCheckpoint filepath {self.filepath!r} names {e}, which is not in the logs "
                           f"({', '.join(sorted(logs))}).") from None
        if self.save_best_only:
            value = _get_monitored(logs, self.monitor, "ModelCheckpoint")
            if value is None:
                return
            better = value < self.best if self.mode == "min" else value > self.best
            if not better:
                if self.verbose:
                    print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
                return
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to {value:.5f}, "
                      f"saving model to {path}")
            self.best = value
        elif self.verbose:
            print(f"\nEpoch {epoch + 1}: saving model to {path}")
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
        if path in self.written:
            self.written.remove(path)
        self.written.append(path)
        if self.keep_last is not None:
            while len(self.written) > self.keep_last:
                old = self.written.pop(0)
                if os.path.exists(old):
                    os.remove(old)


@register("callbacks")
class TerminateOnNaN(Callback):
    """Stop training as soon as a batch loss is NaN or infinite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


@register("callbacks")
class LearningRateScheduler(Callback):
    """At each epoch start, set the learning rate to ``schedule(epoch, lr)`` (or ``schedule(epoch)``)."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        try:
            lr = self.schedule(epoch, float(opt.learning_rate))
        except TypeError:
            lr = self.schedule(epoch)
        if not isinstance(lr, (float, int, np.floating, np.integer)) or not math.isfinite(lr):
            raise ValueError(f"The output of the `schedule` function should be a float, got {lr!r}.")
        opt.learning_rate = float(lr)
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(lr)}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


@register("callbacks")
class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls for ``patience`` epochs."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0, **kwargs):
        super().__init__()
        if "epsilon" in kwargs:  # Keras 2 name
            min_delta = kwargs.pop("epsilon")
        if kwargs:
            raise ValueError(f"Unrecognized arguments to ReduceLROnPlateau: {kwargs}")
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor >= 1.0. Received factor={factor}")
        self.monitor, self.factor, self.patience, self.verbose = monitor, factor, patience, verbose
        self.min_delta, self.cooldown, self.min_lr = min_delta, cooldown, min_lr
        self.mode = _resolve_mode(mode, monitor)

    def on_train_begin(self, logs=None):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        self.cooldown_counter = 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = float(self.model.optimizer.learning_rate)
        value = _get_monitored(logs, self.monitor, "ReduceLROnPlateau")
        if value is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        better = value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        if better:
            self.best, self.wait = value, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = float(self.model.optimizer.learning_rate)
                if old > self.min_lr:
                    new = max(old * self.factor, self.min_lr)
                    self.model.optimizer.learning_rate = new
                    if self.verbose:
                        print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


@register("callbacks")
class CSVLogger(Callback):
    """Append one CSV row per epoch: ``epoch`` then the sorted log keys."""

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename, self.sep, self.append = os.fspath(filename), separator, append
        self._file = self._writer = None
        self._keys = None

    def on_train_begin(self, logs=None):
        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._header_written = exists
        self._keys = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._keys is None:
            self._keys = sorted(logs)
            if self._keys and not any(k.startswith("val_") for k in self._keys):
                # validation may come later (validation_freq > 1): its columns are there from the header on, as
                # Keras 3's CSVLogger has them (NA until then)
                self._keys += [f"val_{k}" for k in self._keys]
            self._writer = csv.DictWriter(self._file, fieldnames=["epoch"] + self._keys, delimiter=self.sep)
            if not self._header_written:
                self._writer.writeheader()
        self._writer.writerow({"epoch": epoch, **{k: logs.get(k, "NA") for k in self._keys}})
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file:
            self._file.close()
            self._file = None


@register("callbacks")
class LambdaCallback(Callback):
    """A callback from plain functions: on_epoch_begin=..., on_epoch_end=..., on_batch_end=... ."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None, on_train_end=None,
                 on_train_batch_begin=None, on_train_batch_end=None, **kwargs):
        super().__init__()
        on_train_batch_begin = kwargs.pop("on_batch_begin", on_train_batch_begin)
        on_train_batch_end = kwargs.pop("on_batch_end", on_train_batch_end)
        if kwargs:
            raise ValueError(f"Unrecognized arguments to LambdaCallback: {sorted(kwargs)}")
        for name, fn in (("on_epoch_begin", on_epoch_begin), ("on_epoch_end", on_epoch_end),
                         ("on_train_begin", on_train_begin), ("on_train_end", on_train_end),
                         ("on_train_batch_begin", on_train_batch_begin), ("on_train_batch_end", on_train_batch_end)):
            if fn is not None:
                setattr(self, name, fn)
