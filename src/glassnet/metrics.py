"""Metrics: stateful accumulators whose epoch value is the (sample-weighted) running mean, as Keras's.

``update_state(y_true, y_pred, sample_weight=None)`` adds a batch, ``result()`` gives the value so
far, ``reset_state()`` starts over. Accuracy-like metrics are per-sample 0/1 values averaged.
"""
import warnings

import numpy as np

from . import losses as _losses
from .engine import backend
from .engine.registry import register, table


class Metric:
    def __init__(self, name=None, dtype=None):
        self.name = name or backend.snake_case(type(self).__name__)
        self.dtype = dtype
        self.reset_state()

    def reset_state(self):
        pass

    def update_state(self, y_true, y_pred, sample_weight=None):
        raise NotImplementedError

    def result(self):
        raise NotImplementedError

    def __call__(self, y_true, y_pred, sample_weight=None):
        """Update with one batch and return the running result."""
        self.update_state(y_true, y_pred, sample_weight)
        return self.result()

    @property
    def variables_count(self):
        return 2

    def get_config(self):
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"


def _weights_like(sample_weight, ndim):
    """``sample_weight`` as float64 of rank ``ndim`` (values of that rank), to broadcast: trailing axes of size 1
    dropped where the weights have more axes ((n, 1) weights for (n,) values), or added where fewer ((n,) weights
    for (n, t) values)."""
    w = np.asarray(sample_weight, np.float64)
    while w.ndim > ndim and w.shape[-1] == 1:
        w = w[..., 0]
    return w.reshape(w.shape + (1,) * (ndim - w.ndim)) if w.ndim < ndim else w


@register("metrics", "mean")
class Mean(Metric):
    """Weighted mean of the values given to update_state(values, sample_weight)."""

    def reset_state(self):
        self.total = 0.0
        self.count = 0.0

    def update_state(self, values, sample_weight=None):
        values = np.asarray(values)
        if sample_weight is None:
            # accuracies arrive as booleans: counting them is exact and 4x cheaper than a float64 sum (~0.7 µs
            # of the tutorial's ~45 µs step)
            self.total += int(np.count_nonzero(values)) if values.dtype == bool else float(values.sum(dtype=np.float64))
            self.count += values.size
        else:
            w = np.broadcast_to(_weights_like(sample_weight, values.ndim), values.shape)
            self.total += float((values * w).sum())
            self.count += float(w.sum())

    def result(self):
        return self.total / self.count if self.count else 0.0


class MeanMetricWrapper(Mean):
    """The running mean of a per-sample function ``fn(y_true, y_pred)``."""

    def __init__(self, fn, name=None, dtype=None, **kwargs):
        self._fn, self._fn_kwargs = fn, kwargs
        super().__init__(name=name or getattr(fn, "__name__", "metric"), dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        if (self._fn is binary_accuracy and sample_weight is None and type(y_true) is np.ndarray
                and type(y_pred) is np.ndarray and y_pred.ndim and y_pred.shape[-1] == 1
                and (y_true.shape == y_pred.shape or y_true.shape == y_pred.shape[:-1])
                and isinstance(self._fn_kwargs.get("threshold", 0.5), (float, int))):
            # one sigmoid output, as fit gives it, against labels of its shape or without its last axis (a 1-D
            # y, as in the tutorial: the general path squeezes the output's axis): count the hits — what the
            # general path below adds up, without its calls in between (~2 us of the tutorial's ~40 us step)
            if y_true.ndim < y_pred.ndim:
                y_pred = y_pred[..., 0]
            hits = y_true == (y_pred > self._fn_kwargs.get("threshold", 0.5))
            self.total += int(np.count_nonzero(hits))
            self.count += hits.size
            return
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        if not getattr(self, "sparse_labels", False):
            y_true, y_pred = _losses.squeeze_or_expand_to_same_rank(y_true, y_pred)
        super().update_state(self._fn(y_true, y_pred, **self._fn_kwargs), sample_weight)

    def get_config(self):
        return {"name": self.name, **self._fn_kwargs}


# --- per-sample functions ---------------------------------------------------------------------------
def binary_accuracy(y_true, y_pred, threshold=0.5):
    """[y == (p > threshold)] (strictly greater, as Keras 3), averaged over the last axis of 2-D and wider
    outputs: one value per sample (a 1-D batch is one value per sample already)."""
    hits = y_true == (y_pred > threshold)
    return _losses.mean_last(hits) if hits.ndim > 1 else hits


def categorical_accuracy(y_true, y_pred):
    return (np.argmax(y_true, axis=-1) == np.argmax(y_pred, axis=-1)).astype(np.float64)


def sparse_categorical_accuracy(y_true, y_pred):
    y_true = np.asarray(y_true)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    return (y_true.astype(np.int64) == np.argmax(y_pred, axis=-1)).astype(np.float64)


def accuracy(y_true, y_pred):
    """Exact equality of y and p, averaged over the last axis of 2-D and wider outputs (one value per sample)."""
    hits = y_true == y_pred
    return np.mean(hits, axis=-1) if hits.ndim > 1 else hits


def _in_top_k(targets, y_pred, k):
    target_scores = np.take_along_axis(y_pred, targets[..., None], axis=-1)
    return (np.sum(y_pred > target_scores, axis=-1) < k).astype(np.float64)


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    return _in_top_k(np.argmax(y_true, axis=-1), y_pred, k)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5):
    y_true = np.asarray(y_true)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    return _in_top_k(y_true.astype(np.int64), y_pred, k)


def _wrapper_class(class_name, fn, default_name, aliases=(), sparse=False, **defaults):
    params = list(defaults)

    def __init__(self, *args, name=default_name, dtype=None, **kwargs):
        options = dict(defaults)
        options.update(zip(params, args))
        options.update(kwargs)
        MeanMetricWrapper.__init__(self, fn, name=name, dtype=dtype, **options)

    cls = type(class_name, (MeanMetricWrapper,), {"__init__": __init__, "sparse_labels": sparse,
                                                  "__doc__": fn.__doc__, "__module__": __name__})
    return register("metrics", default_name, *aliases)(cls)


Accuracy = _wrapper_class("Accuracy", accuracy, "accuracy")
BinaryAccuracy = _wrapper_class("BinaryAccuracy", binary_accuracy, "binary_accuracy", threshold=0.5)
CategoricalAccuracy = _wrapper_class("CategoricalAccuracy", categorical_accuracy, "categorical_accuracy")
SparseCategoricalAccuracy = _wrapper_class("SparseCategoricalAccuracy", sparse_categorical_accuracy,
                                           "sparse_categorical_accuracy", sparse=True)
TopKCategoricalAccuracy = _wrapper_class("TopKCategoricalAccuracy", top_k_categorical_accuracy,
                                         "top_k_categorical_accuracy", k=5)
SparseTopKCategoricalAccuracy = _wrapper_class("SparseTopKCategoricalAccuracy", sparse_top_k_categorical_accuracy,
                                               "sparse_top_k_categorical_accuracy", sparse=True, k=5)
MeanSquaredError = _wrapper_class("MeanSquaredError", _losses.mean_squared_error, "mean_squared_error", ("mse",))
MeanAbsoluteError = _wrapper_class("MeanAbsoluteError", _losses.mean_absolute_error, "mean_absolute_error",
                                   ("mae",))
MeanAbsolutePercentageError = _wrapper_class("MeanAbsolutePercentageError", _losses.mean_absolute_percentage_error,
                                             "mean_absolute_percentage_error", ("mape",))
BinaryCrossentropy = _wrapper_class("BinaryCrossentropy", _losses.binary_crossentropy, "binary_crossentropy",
                                    from_logits=False, label_smoothing=0.0)
CategoricalCrossentropy = _wrapper_class("CategoricalCrossentropy", _losses.categorical_crossentropy,
                                         "categorical_crossentropy", from_logits=False, label_smoothing=0.0)
SparseCategoricalCrossentropy = _wrapper_class("SparseCategoricalCrossentropy",
                                               _losses.sparse_categorical_crossentropy,
                                               "sparse_categorical_crossentropy", sparse=True, from_logits=False)


# --- confusion-matrix metrics ---------------------------------------------------------------------
class _Confusion(Metric):
    """Accumulates weighted TP/FP/TN/FN at each threshold (prediction > threshold counts positive)."""

    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None, dtype=None):
        self.init_thresholds = thresholds
        # with top_k, every one of the k kept scores counts positive by default (Keras: a threshold of -inf)
        default = 0.5 if top_k is None else -np.inf
        self.thresholds = np.atleast_1d(np.asarray(default if thresholds is None else thresholds, np.float64))
        self.top_k, self.class_id = top_k, class_id
        super().__init__(name=name, dtype=dtype)

    def reset_state(self):
        n = len(self.thresholds)
        self.tp, self.fp, self.tn, self.fn = (np.zeros(n) for _ in range(4))

    def _select(self, y_true, y_pred):
        y_true, y_pred = _losses.squeeze_or_expand_to_same_rank(np.asarray(y_true, np.float64),
                                                                 np.asarray(y_pred, np.float64))
        if self.top_k is not None:  # keep exactly k scores of each row (ties: the lower index, as Keras's top_k);
            order = np.argsort(-y_pred, axis=-1, kind="stable")[..., :self.top_k]  # the rest cannot be positive
            kept = np.zeros(y_pred.shape, bool)
            np.put_along_axis(kept, order, True, axis=-1)
            y_pred = np.where(kept, y_pred, -np.inf)
        if self.class_id is not None:
            y_true, y_pred = y_true[..., self.class_id], y_pred[..., self.class_id]
        return y_true, y_pred

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = self._select(y_true, y_pred)
        w = np.ones_like(y_pred) if sample_weight is None else np.broadcast_to(
            _weights_like(sample_weight, y_pred.ndim), y_pred.shape)
        pos, w, p = (y_true != 0).ravel(), w.ravel(), y_pred.ravel()  # any nonzero label is a positive (Keras)
        above = p[:, None] > self.thresholds[None, :]
        self.tp += (w * pos) @ above
        self.fp += (w * ~pos) @ above
        self.fn += (w * pos) @ ~above
        self.tn += (w * ~pos) @ ~above

    def get_config(self):
        return {"name": self.name, "thresholds": self.init_thresholds, "top_k": self.top_k,
                "class_id": self.class_id}


def _div(a, b):
    return np.divide(a, b, out=np.zeros_like(np.asarray(a, np.float64)), where=np.asarray(b) != 0)


@register("metrics", "precision")
class Precision(_Confusion):
    """TP / (TP + FP)"""

    def result(self):
        r = _div(self.tp, self.tp + self.fp)
        return float(r[0]) if len(r) == 1 else r


@register("metrics", "recall")
class Recall(_Confusion):
    """TP / (TP + FN)"""

    def result(self):
        r = _div(self.tp, self.tp + self.fn)
        return float(r[0]) if len(r) == 1 else r


@register("metrics", "auc")
class AUC(_Confusion):
    """Area under the ROC or PR curve by a Riemann sum over ``num_thresholds`` thresholds (Keras's method).
    ``multi_label=True``: one curve per label (column) of 2-D data, and the mean of their areas (weighted by
    ``label_weights`` when given); otherwise the labels are flattened into one curve, each label's entries
    weighted by ``label_weights`` when given."""

    def __init__(self, num_thresholds=200, curve="ROC", summation_method="interpolation", name=None, dtype=None,
                 thresholds=None, multi_label=False, num_labels=None, label_weights=None, from_logits=False):
        if curve.upper() not in ("ROC", "PR"):
            raise ValueError(f"AUC curve must be 'ROC' or 'PR', got {curve!r}.")
        if summation_method not in ("interpolation", "minoring", "majoring"):
            raise ValueError("AUC summation_method must be 'interpolation', 'minoring' or 'majoring', got "
                             f"{summation_method!r}.")
        if num_labels is not None and not multi_label:
            raise ValueError("`num_labels` is needed only when `multi_label` is True.")
        if num_labels is not None:
            num_labels = _class_count(num_labels, "num_labels")
        if label_weights is not None:
            label_weights = np.asarray(label_weights, np.float64)
            if label_weights.ndim != 1 or not np.isfinite(label_weights).all() or (label_weights < 0).any():
                raise ValueError("label_weights must be a list of non-negative numbers, one per label, got "
                                 f"{label_weights.tolist()!r}.")
        self.curve, self.summation_method, self.from_logits = curve.upper(), summation_method, from_logits
        self.multi_label, self.num_labels, self.label_weights = bool(multi_label), num_labels, label_weights
        self.num_thresholds = num_thresholds
        self._given_thresholds = None if thresholds is None else sorted(float(t) for t in thresholds)
        if thresholds is None:
            eps = backend.epsilon()
            inner = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
            thresholds = [0.0 - eps] + inner + [1.0 + eps]
        else:
            thresholds = [0.0 - backend.epsilon()] + self._given_thresholds + [1.0 + backend.epsilon()]
            self.num_thresholds = len(thresholds)
        super().__init__(thresholds=thresholds, name=name or "auc", dtype=dtype)

    def reset_state(self):
        if not getattr(self, "multi_label", False):
            super().reset_state()
        elif self.num_labels is None:  # one curve per label: sized at the first batch
            self.tp = self.fp = self.tn = self.fn = None
        else:
            shape = (len(self.thresholds), self.num_labels)
            self.tp, self.fp, self.tn, self.fn = (np.zeros(shape) for _ in range(4))

    def update_state(self, y_true, y_pred, sample_weight=None):
        if self.from_logits:
            y_pred = 1.0 / (1.0 + np.exp(-np.asarray(y_pred, np.float64)))
        else:  # scores outside [0, 1] (a linear output) count as 0 or 1, as Keras clips them
            y_pred = np.clip(np.asarray(y_pred, np.float64), 0.0, 1.0)
        if not self.multi_label:
            if self.label_weights is not None:  # each label's entries weighted before the labels are flattened
                w = 1.0 if sample_weight is None else _weights_like(sample_weight, y_pred.ndim)
                sample_weight = np.broadcast_to(w * self.label_weights, y_pred.shape)
            super().update_state(y_true, y_pred, sample_weight)
            return
        y_true, y_pred = self._select(y_true, y_pred)
        if y_pred.ndim != 2:
            raise ValueError(f"AUC(multi_label=True) needs y_pred of rank 2 (samples, labels), got shape "
                             f"{y_pred.shape}.")
        if self.tp is None:
            self.num_labels = y_pred.shape[1]
            self.reset_state()
        if y_pred.shape[1] != self.tp.shape[1]:
            raise ValueError(f"AUC(multi_label=True) was built for {self.tp.shape[1]} labels; this batch has "
                             f"{y_pred.shape[1]}.")
        w = np.ones_like(y_pred) if sample_weight is None else np.broadcast_to(
            _weights_like(sample_weight, 2), y_pred.shape)
        pos = y_true != 0
        above = y_pred[:, :, None] > self.thresholds[None, None, :]  # (samples, labels, thresholds)
        self.tp += np.einsum("nl,nlt->tl", w * pos, above)
        self.fp += np.einsum("nl,nlt->tl", w * ~pos, above)
        self.fn += np.einsum("nl,nlt->tl", w * pos, ~above)
        self.tn += np.einsum("nl,nlt->tl", w * ~pos, ~above)

    def result(self):
        if self.tp is None:
            return 0.0
        tp, fp, tn, fn = self.tp, self.fp, self.tn, self.fn
        if self.curve == "PR" and self.summation_method == "interpolation":
            dtp = tp[:-1] - tp[1:]
            p = tp + fp
            dp = p[:-1] - p[1:]
            slope = _div(dtp, np.maximum(dp, 0))
            intercept = tp[1:] - slope * p[1:]
            ratio = np.where((p[:-1] > 0) & (p[1:] > 0), _div(p[:-1], np.maximum(p[1:], 0)), 1.0)
            terms = _div(slope * (dtp + intercept * np.log(ratio)), np.maximum(tp[1:] + fn[1:], 0))
        else:
            recall = _div(tp, tp + fn)
            if self.curve == "ROC":
                x, y = _div(fp, fp + tn), recall
            else:
                x, y = recall, _div(tp, tp + fp)
            if self.summation_method == "interpolation":
                heights = (y[:-1] + y[1:]) / 2
            elif self.summation_method == "minoring":
                heights = np.minimum(y[:-1], y[1:])
            else:
                heights = np.maximum(y[:-1], y[1:])
            terms = (x[:-1] - x[1:]) * heights
        if not self.multi_label:
            return float(np.sum(terms))
        by_label = terms.sum(axis=0)
        if self.label_weights is None:
            return float(np.mean(by_label))
        total = float(self.label_weights.sum())
        return float(np.sum(by_label * self.label_weights) / total) if total else 0.0

    def get_config(self):
        return {"name": self.name, "num_thresholds": self.num_thresholds, "curve": self.curve,
                "summation_method": self.summation_method, "from_logits": self.from_logits,
                "thresholds": self._given_thresholds, "multi_label": self.multi_label,
                "num_labels": self.num_labels if self.multi_label else None,
                "label_weights": None if self.label_weights is None else self.label_weights.tolist()}


def _two_dims(y_true, y_pred, who):
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    if y_true.ndim != 2 or y_pred.ndim != 2 or y_true.shape != y_pred.shape:
        raise ValueError(f"{who} expects y_true and y_pred of one shape (batch_size, outputs), got "
                         f"{y_true.shape} and {y_pred.shape}.")
    return y_true, y_pred


@register("metrics", "fbeta_score")
class FBetaScore(Metric):
    """F-beta score per class:  (1 + β²)·P·R / (β²·P + R), P = TP/(TP+FP), R = TP/(TP+FN) (each with ε in the
    denominator, as Keras 3). A prediction is positive when it is the row's largest score (``threshold=None``;
    an all-zero row has none) or above ``threshold``. ``average``: None (one score per class), 'micro' (from the
    counts summed over classes), 'macro' (their mean) or 'weighted' (weighted by each class's true count)."""

    def __init__(self, average=None, beta=1.0, threshold=None, name="fbeta_score", dtype=None):
        if average not in (None, "micro", "macro", "weighted"):
            raise ValueError(f"average must be None, 'micro', 'macro' or 'weighted', got {average!r}.")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta <= 0:
            raise ValueError(f"beta must be a number > 0, got {beta!r}.")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not 0 < threshold <= 1):
            raise ValueError(f"threshold must be None or a number with 0 < threshold <= 1, got {threshold!r}.")
        self.average, self.beta, self.threshold = average, float(beta), threshold
        super().__init__(name=name, dtype=dtype)

    def reset_state(self):
        self.tp = self.fp = self.fn = self.support = 0.0

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _two_dims(y_true, y_pred, type(self).__name__)
        if self.threshold is None:
            predicted = (y_pred >= y_pred.max(axis=-1, keepdims=True)) & (np.abs(y_pred) > 1e-9)
        else:
            predicted = y_pred > self.threshold
        predicted = predicted.astype(np.float64)
        w = None if sample_weight is None else _weights_like(sample_weight, 2)  # rows' weights as a column
        axis = None if self.average == "micro" else 0

        def total(values):
            return (values if w is None else values * w).sum(axis=axis)
        self.tp = self.tp + total(predicted * y_true)
        self.fp = self.fp + total(predicted * (1 - y_true))
        self.fn = self.fn + total((1 - predicted) * y_true)
        self.support = self.support + total(y_true)

    def result(self):
        eps = backend.epsilon()
        precision = np.asarray(self.tp / (self.tp + self.fp + eps))
        recall = np.asarray(self.tp / (self.tp + self.fn + eps))
        b2 = self.beta ** 2
        score = (1 + b2) * precision * recall / (b2 * precision + recall + eps)
        if self.average == "weighted":
            support = np.asarray(self.support, np.float64)
            return float(np.sum(score * support / (support.sum() + eps)))
        if self.average is not None:
            return float(np.mean(score))
        return score

    @property
    def variables_count(self):
        return 4

    def get_config(self):
        return {"name": self.name, "average": self.average, "beta": self.beta, "threshold": self.threshold}


@register("metrics", "f1_score")
class F1Score(FBetaScore):
    """F1 score: the F-beta score with β = 1 (the harmonic mean of precision and recall), per class or averaged."""

    def __init__(self, average=None, threshold=None, name="f1_score", dtype=None):
        super().__init__(average=average, beta=1.0, threshold=threshold, name=name, dtype=dtype)

    def get_config(self):
        config = super().get_config()
        del config["beta"]
        return config


@register("metrics", "r2_score")
class R2Score(Metric):
    """Coefficient of determination per output:  1 − Σw(y − p)² / Σw(y − ȳ)², ȳ the weighted mean of y over every
    batch so far (0 where y never varies); ``class_aggregation`` 'uniform_average' (the mean over outputs),
    'variance_weighted_average' (weighted by Σw(y − ȳ)²) or None (one score per output); ``num_regressors`` p > 0
    gives the adjusted score 1 − (1 − R²)(n − 1)/(n − p − 1), n the number of values seen (as Keras 3 counts)."""

    def __init__(self, class_aggregation="uniform_average", num_regressors=0, name="r2_score", dtype=None):
        if class_aggregation not in (None, "uniform_average", "variance_weighted_average"):
            raise ValueError("class_aggregation must be None, 'uniform_average' or 'variance_weighted_average', got "
                             f"{class_aggregation!r}.")
        if isinstance(num_regressors, bool) or not isinstance(num_regressors, int) or num_regressors < 0:
            raise ValueError(f"num_regressors must be a whole number >= 0, got {num_regressors!r}.")
        self.class_aggregation, self.num_regressors = class_aggregation, num_regressors
        super().__init__(name=name, dtype=dtype)

    def reset_state(self):
        self.sum = self.squares = self.residual = self.weight = 0.0
        self.values = 0

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _losses.squeeze_or_expand_to_same_rank(np.asarray(y_true, np.float64),
                                                                 np.asarray(y_pred, np.float64))
        y_true, y_pred = _two_dims(y_true, y_pred, "R2Score")
        w = np.ones_like(y_true) if sample_weight is None else np.broadcast_to(_weights_like(sample_weight, 2),
                                                                              y_true.shape)
        self.sum = self.sum + (w * y_true).sum(axis=0)
        self.squares = self.squares + (w * y_true * y_true).sum(axis=0)
        self.residual = self.residual + (w * (y_true - y_pred) ** 2).sum(axis=0)
        self.weight = self.weight + w.sum(axis=0)
        self.values += y_true.size

    def result(self):
        if np.ndim(self.sum) == 0:
            return 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            total = self.squares - self.sum * (self.sum / self.weight)
            scores = 1 - self.residual / total
        scores = np.where(np.isinf(scores), 0.0, scores)
        if self.class_aggregation == "uniform_average":
            r2 = float(np.mean(scores))
        elif self.class_aggregation == "variance_weighted_average":
            r2 = float(np.sum(total * scores) / np.sum(total))
        else:
            r2 = scores
        n, p = self.values, self.num_regressors
        if p and p < n - 1:
            r2 = 1 - (1 - r2) * (n - 1) / (n - p - 1)
        return r2

    @property
    def variables_count(self):
        return 5

    def get_config(self):
        return {"name": self.name, "class_aggregation": self.class_aggregation,
                "num_regressors": self.num_regressors}


def _class_count(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a whole number >= 1, got {value!r}.")
    return int(value)


@register("metrics", "iou")
class IoU(Metric):
    """Intersection over union per class, TP / (TP + FP + FN), from a confusion matrix summed over every batch so
    far; the mean over the ``target_class_ids`` that occurred (Keras 3's IoU; semantic segmentation). Labels and
    predictions are class ids (``sparse_y_true`` / ``sparse_y_pred``; with False, the argmax over ``axis``); ids
    outside [0, num_classes) and ``ignore_class`` (a "void" label such as 255) are left out. As in Keras, the
    default integer dtype truncates float ids and sample weights (pass ``dtype="float32"`` for fractional weights)."""

    def __init__(self, num_classes, target_class_ids, name=None, dtype=None, ignore_class=None, sparse_y_true=True,
                 sparse_y_pred=True, axis=-1):
        self.num_classes = _class_count(num_classes, "num_classes")
        ids = list(target_class_ids)
        if not ids or any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0 for i in ids):
            raise ValueError(f"target_class_ids must be class ids (whole numbers >= 0), got {target_class_ids!r}.")
        if max(ids) >= self.num_classes:
            raise ValueError(f"Target class id {max(ids)} is out of range, which is [0, {self.num_classes}).")
        self.target_class_ids = [int(i) for i in ids]
        self.ignore_class, self.sparse_y_true, self.sparse_y_pred, self.axis = (
            ignore_class, bool(sparse_y_true), bool(sparse_y_pred), axis)
        if dtype is not None and np.dtype(backend.standardize_dtype(dtype)).kind not in "iuf":
            raise ValueError(f"dtype must be an integer or float dtype, got {dtype!r}.")
        super().__init__(name=name, dtype=dtype)

    def _integer(self):
        return self.dtype is None or np.dtype(backend.standardize_dtype(self.dtype)).kind in "iu"

    def reset_state(self):
        self.total_cm = np.zeros((self.num_classes, self.num_classes), np.int64 if self._integer() else np.float64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        if not self.sparse_y_true:
            y_true = np.argmax(y_true, axis=self.axis)
        if not self.sparse_y_pred:
            y_pred = np.argmax(y_pred, axis=self.axis)
        kind = np.int64 if self._integer() else np.float64
        y_true, y_pred = y_true.astype(kind).reshape(-1), y_pred.astype(kind).reshape(-1)
        if y_true.shape != y_pred.shape:
            raise ValueError(f"{type(self).__name__}: y_true has {y_true.size} class ids and y_pred {y_pred.size}; "
                             "give one predicted id (or score vector, with sparse_y_pred=False) per label.")
        if sample_weight is None:
            w = np.ones(y_true.shape, kind)
        else:
            w = np.asarray(sample_weight)
            if kind is np.int64 and w.dtype.kind == "f" and np.any(w != np.trunc(w)):
                warnings.warn(f"{type(self).__name__}: fractional sample weights are truncated to whole numbers "
                              "under the default integer dtype (as in Keras); pass dtype='float32' to keep them.",
                              stacklevel=2)
            w = w.astype(kind).reshape(-1) if w.ndim > 1 else w.astype(kind)
            if w.ndim and w.size != y_true.size:
                raise ValueError(f"{type(self).__name__}: sample_weight has {w.size} values for {y_true.size} labels; "
                                 "give one weight per label (the shape of y_true) or a single number.")
            w = np.broadcast_to(w, y_true.shape)
        n = self.num_classes
        keep = (y_true >= 0) & (y_true < n) & (y_pred >= 0) & (y_pred < n)
        if self.ignore_class is not None:
            keep &= y_true != self.ignore_class
        cells = np.where(keep, y_true, 0).astype(np.int64) * n + np.where(keep, y_pred, 0).astype(np.int64)
        counts = np.bincount(cells, weights=np.where(keep, w, 0).astype(np.float64), minlength=n * n)
        self.total_cm = self.total_cm + counts.reshape(n, n).astype(self.total_cm.dtype)

    def result(self):
        cm = self.total_cm.astype(np.float64)
        tp = np.diag(cm)
        union = (cm.sum(axis=0) + cm.sum(axis=1) - tp)[self.target_class_ids]
        tp = tp[self.target_class_ids]
        valid = union > 1e-9  # classes never seen nor predicted do not count
        iou = np.where(valid, tp / (union + backend.epsilon()), 0.0)
        return float(iou.sum() / (valid.sum() + backend.epsilon()))

    @property
    def variables_count(self):
        return 1

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "num_classes": self.num_classes,
                "target_class_ids": self.target_class_ids, "ignore_class": self.ignore_class,
                "sparse_y_true": self.sparse_y_true, "sparse_y_pred": self.sparse_y_pred, "axis": self.axis}


@register("metrics", "binary_iou")
class BinaryIoU(IoU):
    """IoU of a binary mask: a prediction is class 1 when its score is >= ``threshold``; the mean over
    ``target_class_ids`` (both classes by default; (1,) for the foreground's alone)."""

    def __init__(self, target_class_ids=(0, 1), threshold=0.5, name=None, dtype=None):
        super().__init__(num_classes=2, target_class_ids=target_class_ids, name=name, dtype=dtype)
        self.threshold = threshold

    def update_state(self, y_true, y_pred, sample_weight=None):
        predicted = (np.asarray(y_pred, np.float32) >= self.threshold).astype(np.int64)
        super().update_state(y_true, predicted, sample_weight)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "target_class_ids": self.target_class_ids,
                "threshold": self.threshold}


@register("metrics", "mean_iou")
class MeanIoU(IoU):
    """The mean of the IoUs of every class (that occurred), from class ids."""

    def __init__(self, num_classes, name=None, dtype=None, ignore_class=None, sparse_y_true=True,
                 sparse_y_pred=True, axis=-1):
        super().__init__(num_classes, list(range(_class_count(num_classes, "num_classes"))), name=name,
                         dtype=dtype, ignore_class=ignore_class, sparse_y_true=sparse_y_true,
                         sparse_y_pred=sparse_y_pred, axis=axis)

    def get_config(self):
        config = super().get_config()
        del config["target_class_ids"]
        return config


@register("metrics", "one_hot_iou")
class OneHotIoU(IoU):
    """IoU with one-hot labels and score vectors (argmax over ``axis``) for the ``target_class_ids``."""

    def __init__(self, num_classes, target_class_ids, name=None, dtype=None, ignore_class=None, sparse_y_pred=False,
                 axis=-1):
        super().__init__(num_classes, target_class_ids, name=name, dtype=dtype, ignore_class=ignore_class,
                         sparse_y_true=False, sparse_y_pred=sparse_y_pred, axis=axis)

    def get_config(self):
        config = super().get_config()
        del config["sparse_y_true"]
        return config


@register("metrics", "one_hot_mean_iou")
class OneHotMeanIoU(MeanIoU):
    """MeanIoU with one-hot labels and score vectors (argmax over ``axis``)."""

    def __init__(self, num_classes, name=None, dtype=None, ignore_class=None, sparse_y_pred=False, axis=-1):
        super().__init__(num_classes, name=name, dtype=dtype, ignore_class=ignore_class, sparse_y_true=False,
                         sparse_y_pred=sparse_y_pred, axis=axis)

    def get_config(self):
        config = super().get_config()
        del config["sparse_y_true"]
        return config


def accuracy_for_shapes(name, y_true, y_pred):
    """Keras 3's rule for the string 'accuracy'/'acc': chosen from shapes only (never from the loss)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_pred.shape[-1] == 1:
        return BinaryAccuracy(name=name)
    if y_true.ndim < y_pred.ndim or (y_true.shape[-1] == 1 and y_pred.shape[-1] > 1):
        return SparseCategoricalAccuracy(name=name)
    return CategoricalAccuracy(name=name)


def _without_arguments(cls, kwargs):
    """``cls(**kwargs)``, or a ValueError naming what the metric needs when it cannot be made without arguments."""
    import inspect
    needed = [p.name for p in inspect.signature(cls.__init__).parameters.values()
              if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD
              and p.name != "self" and p.name not in kwargs]
    if needed:
        raise ValueError(f"The metric {cls.__name__} needs {', '.join(needed)}: pass an instance, e.g. "
                         f"metrics=[{cls.__name__}({', '.join(n + '=...' for n in needed)})], not its name or class.")
    return cls(**kwargs)


def get(identifier):
    """A Metric from a name, a class, an instance, a config dict, or a per-sample function."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return _without_arguments(identifier, {})
    if isinstance(identifier, str):
        cls = table("metrics").get(identifier)
        if cls is not None:
            return _without_arguments(cls, {"name": identifier})
        loss_cls = table("loss_functions").get(identifier)
        if loss_cls is not None and not getattr(loss_cls, "per_sample", True):
            raise ValueError(f"{identifier!r} gives one value for a whole batch, not one per sample, so it cannot be "
                             "a metric (as in Keras); use it as the loss, whose value fit reports as 'loss'.")
        if loss_cls is not None:
            fn = next(k for k, v in table("loss_functions").items() if v is loss_cls and callable(k))
            return MeanMetricWrapper(fn, name=identifier, **getattr(loss_cls(), "options", {}))
        known = sorted(n for n in table("metrics") if n[:1].islower())
        raise ValueError(f"Unknown metric {identifier!r}. Known metrics: accuracy, acc, {', '.join(known)}, "
                         "or any loss name.")
    if isinstance(identifier, dict):
        cls = table("metrics").get(identifier.get("class_name"))
        if cls is None:
            raise ValueError(f"Unknown metric class {identifier.get('class_name')!r} in config.")
        return cls.from_config(dict(identifier.get("config") or {}))
    if callable(identifier):
        return MeanMetricWrapper(identifier, name=getattr(identifier, "__name__", "metric"))
    raise TypeError(f"Could not interpret metric {identifier!r}.")
