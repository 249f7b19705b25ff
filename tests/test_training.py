"""fit / evaluate / predict semantics against Keras 3 (keras-semantics.md sections 2.3-2.9).

Every expected value here is computed independently: by hand, by a small NumPy re-implementation of
the training loop, or from the Keras reference text. The conftest fixture gives each test fresh
layer names (sequential, dense, dense_1 ...) and seed 0.
"""
import csv
import math
import re

import numpy as np
import pytest

import glassnet
from glassnet import Input, Sequential, load_model
from glassnet.callbacks import (Callback, CSVLogger, EarlyStopping, LambdaCallback, LearningRateScheduler,
                                ModelCheckpoint, ReduceLROnPlateau, TerminateOnNaN)
from glassnet.engine.layer import Layer
from glassnet.layers import Dense, Dropout, Normalization
from glassnet.metrics import (AUC, BinaryAccuracy, CategoricalAccuracy, Precision, Recall,
                              SparseCategoricalAccuracy)
from glassnet.optimizers import SGD, Adam

ANSI = re.compile(r"\x1b\[[0-9;]*m")
NUM = r"\d+\.\d{4}"


# --- helpers -----------------------------------------------------------------------------------------
def tutorial_model(input_dim=8):
    """The seed tutorial's network, built the tutorial's way (input_dim on the first layer)."""
    model = Sequential()
    model.add(Dense(10, input_dim=input_dim, activation="relu"))
    model.add(Dense(1, activation="sigmoid"))
    return model


def compiled_tutorial(lr=0.01, momentum=0.9, nesterov=True, metrics=("accuracy",), loss="mse"):
    model = tutorial_model()
    model.compile(loss=loss, optimizer=SGD(learning_rate=lr, momentum=momentum, nesterov=nesterov),
                  metrics=list(metrics))
    return model


def identity_model(n_features=1):
    """A linear Dense(1) with kernel 1 and bias 0: predict(x) == x, so metrics see chosen predictions."""
    model = Sequential([Input((n_features,)), Dense(1)])
    model.set_weights([np.ones((n_features, 1), np.float32), np.zeros(1, np.float32)])
    return model


class Spy(Layer):
    """A weightless pass-through layer that records the training batches it sees."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.batches = []

    def forward(self, x, training=False):
        if training:
            self.batches.append(np.array(x, copy=True))
        return x, lambda dy: dy


class SetLog(Callback):
    """Writes a chosen value into logs[key] at each epoch end (placed before the callback under test)."""

    def __init__(self, key, values):
        super().__init__()
        self.key, self.values = key, list(values)

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = float(self.values[epoch])


def screen_lines(raw):
    """Replay a terminal: ANSI removed, '\\r' to column 0, '\\b' one column left, characters overwrite."""
    text = ANSI.sub("", raw)
    lines, cur, pos = [], [], 0
    for ch in text:
        if ch == "\n":
            lines.append("".join(cur).rstrip())
            cur, pos = [], 0
        elif ch == "\r":
            pos = 0
        elif ch == "\b":
            pos = max(0, pos - 1)
        else:
            if pos < len(cur):
                cur[pos] = ch
            else:
                cur.append(ch)
            pos += 1
    if cur:
        lines.append("".join(cur).rstrip())
    return lines


def mann_whitney_auc(y, s):
    """P(score of a positive > score of a negative) + ½·P(tie): the exact ROC AUC."""
    pos, neg = s[y == 1], s[y == 0]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (len(pos) * len(neg))


def trapezoid_roc_auc(y, s):
    """Exact ROC curve through every distinct score, integrated with the trapezoid rule."""
    thresholds = np.concatenate([[np.inf], np.unique(s)[::-1]])
    tpr = np.array([((s >= t) & (y == 1)).sum() for t in thresholds]) / (y == 1).sum()
    fpr = np.array([((s >= t) & (y == 0)).sum() for t in thresholds]) / (y == 0).sum()
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))


# --- History ------------------------------------------------------------------------------------------
def test_history_keys_sorted_python_floats_and_params(pima_standardized):
    (x, y), (xt, yt) = pima_standardized
    model = compiled_tutorial()
    history = model.fit(x, y, epochs=3, verbose=0, validation_data=(xt, yt))
    assert history is model.history
    assert list(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    for values in history.history.values():
        assert len(values) == 3
        assert all(type(v) is float for v in values)
    assert history.params == {"verbose": 0, "epochs": 3, "steps": 20}
    assert history.epoch == [0, 1, 2]


def test_history_params_verbose_and_steps_follow_the_arguments(pima_standardized, capsys):
    (x, y), _ = pima_standardized
    model = compiled_tutorial()
    history = model.fit(x, y, epochs=2, batch_size=100, verbose=2)
    assert history.params == {"verbose": 2, "epochs": 2, "steps": 7}
    history = model.fit(x, y, epochs=1, validation_split=0.2, verbose=0)
    assert history.params["steps"] == math.ceil(491 / 32) == 16


def test_history_values_are_python_floats_with_regularizer(pima_standardized):
    (x, y), _ = pima_standardized
    model = Sequential([Input((8,)), Dense(4, activation="relu", kernel_regularizer="l2"),
                        Dense(1, activation="sigmoid")])
    model.compile(loss="mse", optimizer="sgd", metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, verbose=0, validation_split=0.25)
    for values in history.history.values():
        assert all(type(v) is float for v in values)


# --- epoch loss = batch-size-weighted mean of pre-update batch losses --------------------------------
def test_epoch_loss_with_zero_learning_rate_equals_evaluate(pima_standardized):
    (x, y), _ = pima_standardized
    model = compiled_tutorial(lr=0.0)
    history = model.fit(x, y, epochs=2, verbose=0)
    loss, acc = model.evaluate(x, y, verbose=0)
    assert history.history["loss"] == pytest.approx([loss, loss], rel=1e-6)
    assert history.history["accuracy"] == pytest.approx([acc, acc], abs=1e-12)
    # The weighting matters: the last batch has 6 rows, not 32, so the plain mean of batch means differs.
    batch_losses = [model.test_on_batch(x[i:i + 32], y[i:i + 32])[0] for i in range(0, 614, 32)]
    sizes = [len(x[i:i + 32]) for i in range(0, 614, 32)]
    assert sizes[-1] == 6
    assert np.average(batch_losses, weights=sizes) == pytest.approx(loss, rel=1e-6)
    assert abs(np.mean(batch_losses) - loss) > 1e-5


def test_batch_end_logs_are_running_means(pima_standardized):
    (x, y), _ = pima_standardized
    model = compiled_tutorial(lr=0.0)
    seen = []
    model.fit(x, y, epochs=1, shuffle=False, verbose=0,
              callbacks=[LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(dict(logs)))])
    assert len(seen) == 20
    preds = model.predict(x, verbose=0)[:, 0]
    sq = (preds.astype(np.float64) - y) ** 2
    for b, logs in enumerate(seen):
        n = min(32 * (b + 1), 614)
        assert logs["loss"] == pytest.approx(sq[:n].mean(), rel=1e-5)
        assert logs["accuracy"] == pytest.approx(((preds[:n] > 0.5) == y[:n]).mean(), abs=1e-12)


def test_epoch_loss_is_weighted_mean_of_pre_update_batch_losses_by_hand(pima_standardized, float64):
    """A NumPy re-implementation of the loop: forward on the pre-update weights, MSE, backprop, momentum."""
    (x, y), _ = pima_standardized
    x, y = x.astype(np.float64), y.astype(np.float64)
    model = Sequential([Input((8,)), Dense(4, activation="relu"), Dense(1, activation="sigmoid")])
    lr, mu, bs = 0.1, 0.9, 50
    model.compile(loss="mse", optimizer=SGD(learning_rate=lr, momentum=mu), metrics=["accuracy"])
    W1, b1, W2, b2 = model.get_weights()
    history = model.fit(x, y, epochs=3, batch_size=bs, shuffle=False, verbose=0)

    params = [W1, b1, W2, b2]
    velocity = [np.zeros_like(p) for p in params]
    expected_loss, expected_acc = [], []
    for _ in range(3):
        total, correct = 0.0, 0.0
        for s in range(0, len(x), bs):
            xb, yb = x[s:s + bs], y[s:s + bs, None]
            W1, b1, W2, b2 = params
            z1 = xb @ W1 + b1
            h = np.maximum(z1, 0)
            p = 1 / (1 + np.exp(-(h @ W2 + b2)))
            batch_loss = np.mean((p - yb) ** 2)
            total += len(xb) * batch_loss
            correct += np.sum((p > 0.5) == yb)
            dz2 = 2 * (p - yb) / len(xb) * p * (1 - p)
            dz1 = (dz2 @ W2.T) * (z1 > 0)
            grads = [xb.T @ dz1, dz1.sum(0), h.T @ dz2, dz2.sum(0)]
            for i, g in enumerate(grads):
                velocity[i] = mu * velocity[i] - lr * g
                params[i] = params[i] + velocity[i]
        expected_loss.append(total / len(x))
        expected_acc.append(correct / len(x))
    assert history.history["loss"] == pytest.approx(expected_loss, rel=1e-10)
    assert history.history["accuracy"] == pytest.approx(expected_acc, abs=1e-12)
    for got, want in zip(model.get_weights(), params):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# --- batching, shuffling, validation_split ------------------------------------------------------------
def test_batch_size_none_means_32_and_last_partial_batch_is_kept(pima_standardized):
    (x, y), _ = pima_standardized
    spy = Spy()
    model = Sequential([Input((8,)), spy, Dense(1, activation="sigmoid")])
    model.compile(loss="mse", optimizer="sgd")
    history = model.fit(x, y, epochs=1, verbose=0)
    assert history.params["steps"] == 20
    assert [len(b) for b in spy.batches] == [32] * 19 + [6]


def test_shuffle_true_permutes_every_row_each_epoch(pima_standardized):
    (x, y), _ = pima_standardized
    spy = Spy()
    model = Sequential([Input((8,)), spy, Dense(1)])
    model.compile(loss="mse", optimizer=SGD(learning_rate=0.0))
    model.fit(x, y, epochs=2, verbose=0)
    epoch1, epoch2 = np.concatenate(spy.batches[:20]), np.concatenate(spy.batches[20:])
    for seen in (epoch1, epoch2):
        assert sorted(map(tuple, seen)) == sorted(map(tuple, x))
        assert not np.array_equal(seen, x)
    assert not np.array_equal(epoch1, epoch2)


def test_shuffle_false_keeps_row_order(pima_standardized):
    (x, y), _ = pima_standardized
    spy = Spy()
    model = Sequential([Input((8,)), spy, Dense(1)])
    model.compile(loss="mse", optimizer="sgd")
    model.fit(x, y, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_array_equal(np.concatenate(spy.batches[:20]), x)
    np.testing.assert_array_equal(np.concatenate(spy.batches[20:]), x)


def test_validation_split_takes_the_last_rows_before_shuffling(pima_standardized):
    (x, y), _ = pima_standardized
    spy = Spy()
    model = Sequential([Input((8,)), spy, Dense(10, activation="relu"), Dense(1, activation="sigmoid")])
    model.compile(loss="mse", optimizer=SGD(learning_rate=0.0), metrics=["accuracy"])
    history = model.fit(x, y, epochs=1, validation_split=0.2, verbose=0)  # shuffle=True
    split_at = int(math.floor(614 * 0.8))
    assert split_at == 491
    trained_on = np.concatenate(spy.batches)
    assert sorted(map(tuple, trained_on)) == sorted(map(tuple, x[:split_at]))
    val_loss, val_acc = model.evaluate(x[split_at:], y[split_at:], verbose=0)
    assert len(x[split_at:]) == 123
    assert history.history["val_loss"][0] == pytest.approx(val_loss, rel=1e-6)
    assert history.history["val_accuracy"][0] == pytest.approx(val_acc, abs=1e-12)
    train_loss, _ = model.evaluate(x[:split_at], y[:split_at], verbose=0)
    assert history.history["loss"][0] == pytest.approx(train_loss, rel=1e-6)


def test_shuffle_false_is_deterministic_whatever_the_seed(pima_standardized):
    (x, y), _ = pima_standardized
    model = compiled_tutorial()
    start = model.get_weights()
    glassnet.set_random_seed(1)
    h1 = model.fit(x, y, epochs=2, shuffle=False, verbose=0).history
    w1 = model.get_weights()
    model2 = compiled_tutorial()
    model2.set_weights(start)
    glassnet.set_random_seed(99)
    h2 = model2.fit(x, y, epochs=2, shuffle=False, verbose=0).history
    assert h1 == h2
    for a, b in zip(w1, model2.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_set_random_seed_makes_runs_identical(pima_standardized):
    (x, y), _ = pima_standardized

    def run(seed):
        glassnet.set_random_seed(seed)
        model = Sequential([Input((8,)), Dense(10, activation="relu"), Dropout(0.3),
                            Dense(1, activation="sigmoid")])
        model.compile(loss="mse", optimizer=SGD(learning_rate=0.05, momentum=0.9), metrics=["accuracy"])
        history = model.fit(x, y, epochs=3, validation_split=0.1, verbose=0)
        return model.get_weights(), history.history

    w_a, h_a = run(3)
    w_b, h_b = run(3)
    w_c, _ = run(4)
    assert h_a == h_b
    for a, b in zip(w_a, w_b):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, c) for a, c in zip(w_a, w_c))


def test_shuffle_batch_permutes_only_within_batch_sized_chunks(pima_standardized):
    (x, y), _ = pima_standardized
    spy = Spy()
    model = Sequential([Input((8,)), spy, Dense(1)])
    model.compile(loss="mse", optimizer=SGD(learning_rate=0.0))
    model.fit(x, y, epochs=1, batch_size=100, shuffle="batch", verbose=0)
    assert [len(b) for b in spy.batches] == [100] * 6 + [14]
    for i, batch in enumerate(spy.batches):
        chunk = x[i * 100:(i + 1) * 100]
        assert sorted(map(tuple, batch)) == sorted(map(tuple, chunk))
    assert not np.array_equal(np.concatenate(spy.batches), x)


def test_labels_of_shape_n_and_n_by_1_train_identically(pima_standardized):
    (x, y), _ = pima_standardized
    runs = []
    for labels in (y, y.reshape(-1, 1), y.astype(np.int64)):
        glassnet.set_random_seed(2)
        model = compiled_tutorial()
        runs.append((model.fit(x, labels, epochs=2, verbose=0).history, model.get_weights()))
    for history, weights in runs[1:]:
        assert history == runs[0][0]
        for a, b in zip(weights, runs[0][1]):
            np.testing.assert_array_equal(a, b)


def test_validation_data_with_sample_weight(pima_standardized):
    (x, y), (xt, yt) = pima_standardized
    model = compiled_tutorial(lr=0.0)
    wt = np.where(yt == 1, 3.0, 0.5)
    history = model.fit(x, y, epochs=1, verbose=0, validation_data=(xt, yt, wt))
    p = model.predict(xt, verbose=0)[:, 0].astype(np.float64)
    assert history.history["val_loss"][0] == pytest.approx(np.sum(wt * (p - yt) ** 2) / len(xt), rel=1e-5)


def test_epochs_zero_and_verbose_auto_params(pima_standardized, capsys):
    (x, y), _ = pima_standardized
    model = compiled_tutorial()
    start = model.get_weights()
    history = model.fit(x, y, epochs=0, verbose=0)
    assert history.epoch == [] and history.history == {}
    for a, b in zip(start, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    history = model.fit(x, y, epochs=1)          # verbose='auto'
    assert history.params["verbose"] == 1
    capsys.readouterr()


# --- weights: class_weight, sample_weight ---------------------------------------------------------------
def test_class_weight_equals_the_equivalent_sample_weight(pima_standardized):
    (x, y), _ = pima_standardized

    def run(**weights):
        glassnet.set_random_seed(5)
        model = compiled_tutorial(lr=0.05)
        history = model.fit(x, y, epochs=3, verbose=0, **weights)
        return model.get_weights(), history.history

    w_cw, h_cw = run(class_weight={0: 1.0, 1: 2.5})
    w_sw, h_sw = run(sample_weight=np.where(y == 1, 2.5, 1.0))
    w_none, h_none = run()
    assert h_cw == h_sw
    for a, b in zip(w_cw, w_sw):
        np.testing.assert_array_equal(a, b)
    assert h_cw["loss"] != h_none["loss"]


def test_sample_weight_reduction_divides_by_number_of_samples():
    loss = glassnet.losses.MeanSquaredError()
    per_sample = np.array([0.1, 0.9, 0.4, 0.19])
    y_pred = np.sqrt(per_sample).reshape(4, 1)
    y_true = np.zeros((4, 1))
    w = np.array([1.0, 0.0, 3.0, 1.0])
    assert float(loss(y_true, y_pred, sample_weight=w)) == pytest.approx(0.3725, rel=1e-9)   # Σw·l / N
    assert float(loss(y_true, y_pred, sample_weight=w)) != pytest.approx(0.298, rel=1e-3)    # not Σw·l / Σw

    model = identity_model()
    model.compile(loss="mse", optimizer="sgd")
    got = model.evaluate(np.sqrt(per_sample).reshape(4, 1), np.zeros(4), sample_weight=w, verbose=0)
    assert got == pytest.approx(0.3725, rel=1e-6)
    # Over several batches: Σ_b n_b·(Σ_b w·l / n_b) / N = Σ w·l / N.
    got = model.evaluate(np.sqrt(per_sample).reshape(4, 1), np.zeros(4), sample_weight=w, batch_size=3, verbose=0)
    assert got == pytest.approx(0.3725, rel=1e-6)


def test_sample_weight_weights_the_loss_and_weighted_metrics_only():
    """Keras 3: `metrics` ignore sample_weight, `weighted_metrics` use it; the loss always does."""
    x = np.array([[0.9], [0.2], [0.7], [0.4]], np.float32)
    y = np.array([1.0, 1.0, 0.0, 0.0], np.float32)            # correct: rows 0 and 3
    w = np.array([3.0, 1.0, 1.0, 1.0])
    model = identity_model()
    model.compile(loss="mse", optimizer="sgd", metrics=["accuracy"])
    result = model.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
    assert result["accuracy"] == pytest.approx(0.5, abs=1e-12)
    assert result["loss"] == pytest.approx(np.sum(w * (x[:, 0] - y) ** 2) / 4, rel=1e-6)
    model.compile(loss="mse", optimizer="sgd", weighted_metrics=["accuracy"])
    result = model.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
    assert result["accuracy"] == pytest.approx(4 / 6, abs=1e-12)


def test_fit_with_sample_weight_and_zero_lr_reports_weighted_loss(pima_standardized):
    (x, y), _ = pima_standardized
    model = compiled_tutorial(lr=0.0)
    w = np.linspace(0.0, 2.0, len(x))
    history = model.fit(x, y, epochs=1, sample_weight=w, verbose=0)
    p = model.predict(x, verbose=0)[:, 0].astype(np.float64)
    assert history.history["loss"][0] == pytest.approx(np.sum(w * (p - y) ** 2) / len(x), rel=1e-5)


# --- initial_epoch, validation_freq -------------------------------------------------------------------
def test_initial_epoch(pima_standardized, capsys):
    (x, y), _ = pima_standardized
    model = compiled_tutorial()
    history = model.fit(x, y, epochs=5, initial_epoch=3, verbose=2)
    assert history.epoch == [3, 4]
    assert history.params["epochs"] == 5
    assert len(history.history["loss"]) == 2
    out = capsys.readouterr().out
    assert "Epoch 4/5" in out and "Epoch 5/5" in out and "Epoch 1/5" not in out


def test_validation_freq(pima_standardized):
    (x, y), (xt, yt) = pima_standardized
    model = compiled_tutorial()
    had_val = []
    cb = LambdaCallback(on_epoch_end=lambda e, logs: had_val.append("val_loss" in logs))
    history = model.fit(x, y, epochs=4, validation_data=(xt, yt), validation_freq=2, verbose=0, callbacks=[cb])
    assert had_val == [False, True, False, True]
    assert len(history.history["val_loss"]) == 2
    assert len(history.history["loss"]) == 4
    assert history.history["val_loss"][-1] == pytest.approx(model.evaluate(xt, yt, verbose=0)[0], rel=1e-6)


# --- batch methods, evaluate, predict -----------------------------------------------------------------
def test_train_test_predict_on_batch(pima_standardized):
    (x, y), _ = pima_standardized
    xb, yb = x[:40], y[:40]
    model = compiled_tutorial(lr=0.1)
    before = model.test_on_batch(xb, yb)
    assert isinstance(before, list) and len(before) == 2
    p = model.predict_on_batch(xb)
    assert p.shape == (40, 1) and p.dtype == np.float32
    np.testing.assert_array_equal(p, model.predict(xb, verbose=0))
    assert before[0] == pytest.approx(np.mean((p[:, 0].astype(np.float64) - yb) ** 2), rel=1e-6)
    assert before[1] == pytest.approx(np.mean((p[:, 0] > 0.5) == yb), abs=1e-12)
    trained = model.train_on_batch(xb, yb)        # logs from the pre-update forward pass
    assert trained == pytest.approx(before, rel=1e-6)
    after = model.test_on_batch(xb, yb)
    assert after[0] < before[0]
    assert model.test_on_batch(xb, yb, return_dict=True) == {"accuracy": after[1], "loss": after[0]}


def test_evaluate_returns_loss_then_metrics_and_return_dict(pima_standardized):
    (x, y), _ = pima_standardized
    model = compiled_tutorial(metrics=["accuracy", "mae"])
    result = model.evaluate(x, y, verbose=0)
    p = model.predict(x, verbose=0)[:, 0].astype(np.float64)
    assert isinstance(result, list) and len(result) == 3
    assert all(type(v) is float for v in result)
    assert result[0] == pytest.approx(np.mean((p - y) ** 2), rel=1e-5)
    assert result[1] == pytest.approx(np.mean((p > 0.5) == y), abs=1e-12)
    assert result[2] == pytest.approx(np.mean(np.abs(p - y)), rel=1e-5)
    as_dict = model.evaluate(x, y, verbose=0, return_dict=True)
    assert list(as_dict) == ["accuracy", "loss", "mae"]
    assert as_dict == {"loss": result[0], "accuracy": result[1], "mae": result[2]}
    loss_only = compiled_tutorial(metrics=())
    assert isinstance(loss_only.evaluate(x, y, verbose=0), float)


def test_predict_shape_and_dtype(pima_standardized):
    (x, y), _ = pima_standardized
    model = compiled_tutorial()
    for data in (x, x.astype(np.float64), x.tolist(), np.round(x).astype(np.int64)):
        p = model.predict(data, verbose=0)
        assert p.shape == (614, 1) and p.dtype == np.float32
    np.testing.assert_allclose(model.predict(x, batch_size=7, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert model.predict(x[:1], verbose=0).shape == (1, 1)


# --- structure: weights, params, pop/add, Input, input_dim, lazy build ---------------------------------
def test_get_set_weights_round_trip(pima_standardized):
    (x, _), _ = pima_standardized
    a, b = tutorial_model(), tutorial_model()
    weights = a.get_weights()
    assert [w.shape for w in weights] == [(8, 10), (10,), (10, 1), (1,)]
    assert all(w.dtype == np.float32 for w in weights)
    weights[0][0, 0] += 1.0                      # get_weights returns copies
    assert a.get_weights()[0][0, 0] != weights[0][0, 0]
    b.set_weights(a.get_weights())
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(a.predict(x, verbose=0), b.predict(x, verbose=0))


def test_count_params_and_biases_start_at_zero():
    model = tutorial_model()
    assert model.count_params() == 8 * 10 + 10 + 10 + 1 == 101
    kernel, bias = model.layers[0].get_weights()
    assert np.all(bias == 0)
    limit = np.sqrt(6 / (8 + 10))                 # glorot_uniform
    assert np.all(np.abs(kernel) <= limit) and kernel.std() > 0


def test_pop_and_add():
    model = tutorial_model()
    removed = model.pop()
    assert removed.name == "dense_1"
    assert [layer.name for layer in model.layers] == ["dense"]
    assert model.output_shape == (None, 10)
    assert model.count_params() == 90
    model.add(Dense(3, activation="softmax"))
    assert model.built and model.output_shape == (None, 3)
    assert model.count_params() == 90 + 33
    assert model.predict(np.ones((2, 8), np.float32), verbose=0).shape == (2, 3)


def test_input_first_builds_the_model():
    model = Sequential([Input(shape=(8,)), Dense(10, activation="relu"), Dense(1, activation="sigmoid")])
    assert model.built
    assert [layer.name for layer in model.layers] == ["dense", "dense_1"]
    assert model.inputs[0].shape == (None, 8)
    assert model.outputs[0].shape == (None, 1)
    assert model.count_params() == 101


def test_input_dim_builds_immediately_and_is_ignored_on_later_layers():
    model = tutorial_model()
    assert model.built
    assert [layer.name for layer in model.layers] == ["dense", "dense_1"]
    assert model.inputs[0].shape == (None, 8)
    other = Sequential([Dense(4, input_dim=8), Dense(2, input_dim=99)])
    assert other.built
    assert other.layers[1].get_weights()[0].shape == (4, 2)


def test_model_without_input_shape_builds_on_first_fit(pima_standardized):
    (x, y), _ = pima_standardized
    model = Sequential([Dense(10, activation="relu"), Dense(1, activation="sigmoid")])
    assert not model.built
    with pytest.raises(AttributeError, match="has no defined inputs yet"):
        model.inputs
    model.compile(loss="mse", optimizer="sgd", metrics=["accuracy"])
    history = model.fit(x, y, epochs=1, verbose=0)
    assert model.built
    assert model.count_params() == 101
    assert model.layers[0].get_weights()[0].shape == (8, 10)
    assert len(history.history["loss"]) == 1


def test_model_built_by_fit_keeps_a_free_batch_dimension(pima_standardized):
    """Keras 3 records the first batch's size, (32, 10); glassnet builds with a None batch dimension
    (documented in docs/keras-compatibility.md), so any batch size works afterwards."""
    (x, y), _ = pima_standardized
    model = Sequential([Dense(10, activation="relu"), Dense(1, activation="sigmoid")])
    model.compile(loss="mse", optimizer="sgd")
    model.fit(x, y, epochs=1, verbose=0)
    lines = []
    model.summary(print_fn=lines.append)
    assert any("(None, 10)" in line for line in lines), "\n".join(lines)
    assert any("(None, 1)" in line for line in lines), "\n".join(lines)
    assert model.predict(x[:5], verbose=0).shape == (5, 1)


# --- 'accuracy' resolution and metric names --------------------------------------------------------
def test_accuracy_is_binary_for_last_dim_one(pima_standardized):
    (x, y), _ = pima_standardized
    model = compiled_tutorial(loss="mse")
    model.fit(x[:64], y[:64], epochs=1, verbose=0)
    assert isinstance(model.metrics[0], BinaryAccuracy)
    assert model.metrics[0].name == "accuracy"


def _three_class_data(n=90):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    labels = rng.integers(0, 3, size=n)
    return x, labels


def test_accuracy_is_sparse_for_integer_labels_and_softmax_output():
    x, labels = _three_class_data()
    model = Sequential([Input((4,)), Dense(3, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(x, labels, epochs=1, verbose=0)
    assert isinstance(model.metrics[0], SparseCategoricalAccuracy)
    p = model.predict(x, verbose=0)
    assert model.evaluate(x, labels, verbose=0)[1] == pytest.approx(np.mean(p.argmax(-1) == labels), abs=1e-12)
    # labels of shape (n, 1) are sparse too
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.evaluate(x, labels[:, None], verbose=0)
    assert isinstance(model.metrics[0], SparseCategoricalAccuracy)


def test_accuracy_is_categorical_for_one_hot_and_for_multi_hot_sigmoid():
    x, labels = _three_class_data()
    one_hot = np.eye(3, dtype=np.float32)[labels]
    model = Sequential([Input((4,)), Dense(3, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(x, one_hot, epochs=1, verbose=0)
    assert isinstance(model.metrics[0], CategoricalAccuracy)
    # Keras 3 uses shapes only: a 3-unit sigmoid with binary_crossentropy still gets CategoricalAccuracy.
    multi_hot = (np.random.default_rng(1).random((len(x), 3)) > 0.5).astype(np.float32)
    model = Sequential([Input((4,)), Dense(3, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(x, multi_hot, epochs=1, verbose=0)
    assert isinstance(model.metrics[0], CategoricalAccuracy)


def test_metric_name_is_the_string_passed(pima_standardized):
    (x, y), (xt, yt) = pima_standardized
    model = compiled_tutorial(metrics=["acc"])
    history = model.fit(x, y, epochs=1, validation_data=(xt, yt), verbose=0)
    assert sorted(history.history) == ["acc", "loss", "val_acc", "val_loss"]
    assert model.metrics_names == ["loss", "acc"]
    assert isinstance(model.metrics[0], BinaryAccuracy)


def test_binary_accuracy_threshold_is_strict():
    y_true = np.array([1, 0, 1, 0], np.float32)
    y_pred = np.array([0.5, 0.5, 0.5000001, 0.4999])
    metric = BinaryAccuracy()
    assert metric(y_true, y_pred[:, None]) == pytest.approx(0.75, abs=1e-12)
    model = identity_model()
    model.compile(loss="mse", optimizer="sgd", metrics=["accuracy"])
    assert model.evaluate(y_pred.reshape(4, 1), y_true, verbose=0)[1] == pytest.approx(0.75, abs=1e-12)


# --- precision, recall, AUC ------------------------------------------------------------------------
PR_TRUE = np.array([1, 1, 0, 0, 1, 0, 1, 0], np.float32)
PR_PRED = np.array([0.9, 0.5, 0.6, 0.2, 0.7, 0.5, 0.3, 0.1], np.float32)
# p > 0.5 is positive: TP = {0.9, 0.7} = 2, FP = {0.6} = 1, FN = {0.5, 0.3} = 2


def test_precision_and_recall_by_hand():
    assert Precision()(PR_TRUE, PR_PRED) == pytest.approx(2 / 3, abs=1e-12)
    assert Recall()(PR_TRUE, PR_PRED) == pytest.approx(2 / 4, abs=1e-12)
    w = np.array([1, 1, 2, 1, 3, 1, 1, 1], np.float64)     # TP = 1+3, FP = 2, FN = 1+1
    assert Precision()(PR_TRUE, PR_PRED, sample_weight=w) == pytest.approx(4 / 6, abs=1e-12)
    assert Recall()(PR_TRUE, PR_PRED, sample_weight=w) == pytest.approx(4 / 6, abs=1e-12)
    assert Precision(thresholds=0.65)(PR_TRUE, PR_PRED) == pytest.approx(1.0)
    assert Recall(thresholds=0.65)(PR_TRUE, PR_PRED) == pytest.approx(0.5)


def test_precision_recall_accumulate_counts_across_batches():
    model = identity_model()
    model.compile(loss="mse", optimizer="sgd", metrics=["precision", "recall"])
    # Batches of 3: per-batch ratios averaged would differ from the pooled counts.
    result = model.evaluate(PR_PRED.reshape(-1, 1), PR_TRUE, batch_size=3, verbose=0, return_dict=True)
    assert result["precision"] == pytest.approx(2 / 3, abs=1e-12)
    assert result["recall"] == pytest.approx(2 / 4, abs=1e-12)


def _grid_scores(indices):
    """Scores in the middle of the AUC's threshold intervals (i/199): sampled ROC = exact ROC."""
    return (np.asarray(indices, np.float64) + 0.5) / 199


def test_auc_separable_is_one():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    s = _grid_scores([3, 20, 50, 120, 150, 170, 198])
    assert AUC()(y, s) == pytest.approx(1.0, abs=1e-12)
    assert AUC()(1 - y, s) == pytest.approx(0.0, abs=1e-12)


def test_auc_non_separable_on_the_threshold_grid_is_exact():
    y = np.array([1, 0, 1, 0, 0, 1, 0, 1, 0, 1])
    s = _grid_scores([180, 160, 90, 120, 10, 140, 60, 40, 100, 170])
    exact = trapezoid_roc_auc(y, s)
    assert exact == pytest.approx(mann_whitney_auc(y, s), abs=1e-12)
    assert 0.5 < exact < 1
    assert AUC()(y, s) == pytest.approx(exact, abs=1e-9)
    # A tie between a positive and a negative (same interval) counts one half: still exact.
    y2 = np.array([1, 0, 1, 0])
    s2 = _grid_scores([50, 50, 150, 20])
    assert AUC()(y2, s2) == pytest.approx(mann_whitney_auc(y2, s2), abs=1e-9) == pytest.approx(0.875)


def test_auc_off_grid_is_close_to_exact_roc_auc():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    s = 1 / (1 + np.exp(-(1.2 * (y - 0.5) + rng.normal(size=400))))
    exact = trapezoid_roc_auc(y, s)
    assert AUC()(y, s) == pytest.approx(exact, abs=1e-2)
    model = identity_model()
    model.compile(loss="mse", optimizer="sgd", metrics=["auc"])
    got = model.evaluate(s.reshape(-1, 1).astype(np.float32), y, batch_size=64, verbose=0, return_dict=True)
    assert got["auc"] == pytest.approx(exact, abs=1e-2)


# --- callbacks ------------------------------------------------------------------------------------------
def test_early_stopping_patience(pima_standardized):
    (x, y), _ = pima_standardized
    model = compiled_tutorial(lr=0.0)          # loss never improves after epoch 0 (same batches, same sums)
    stopper = EarlyStopping(monitor="loss", patience=2)
    history = model.fit(x, y, epochs=10, shuffle=False, verbose=0, callbacks=[stopper])
    assert history.epoch == [0, 1, 2]
    assert stopper.stopped_epoch == 2


@pytest.mark.parametrize("mode, scores, best_epoch, stop_epoch", [
    ("min", [3.0, 1.0, 2.0, 4.0, 0.5, 0.1], 1, 3),
    ("max", [1.0, 3.0, 2.0, 0.0, 9.0, 9.5], 1, 3),
    ("auto", [3.0, 1.0, 2.0, 4.0, 0.5, 0.1], 1, 3),   # 'score' is minimised by default
])
def test_early_stopping_restore_best_weights_and_mode(pima_standardized, mode, scores, best_epoch, stop_epoch):
    (x, y), _ = pima_standardized
    model = compiled_tutorial(lr=0.05)
    snapshots = []
    record = LambdaCallback(on_epoch_end=lambda e, logs: snapshots.append(model.get_weights()))
    stopper = EarlyStopping(monitor="score", patience=2, mode=mode, restore_best_weights=True)
    history = model.fit(x, y, epochs=6, verbose=0, callbacks=[SetLog("score", scores), record, stopper])
    assert history.epoch == list(range(stop_epoch + 1))
    assert stopper.best_epoch == best_epoch
    for got, want in zip(model.get_weights(), snapshots[best_epoch]):
        np.testing.assert_array_equal(got, want)
    assert not all(np.array_equal(a, b) for a, b in zip(snapshots[-1], snapshots[best_epoch]))


def test_early_stopping_auto_mode_maximises_accuracy(pima_standardized):
    (x, y), _ = pima_standardized
    model = compiled_tutorial()
    stopper = EarlyStopping(monitor="val_accuracy", patience=1)
    model.fit(x, y, epochs=3, verbose=0, validation_split=0.2,
              callbacks=[SetLog("val_accuracy", [0.5, 0.6, 0.7]), stopper])
    assert stopper.best == pytest.approx(0.7)
    assert stopper.stopped_epoch == 0


def test_model_checkpoint_weights_only(tmp_path, pima_standardized):
    (x, y), (xt, _) = pima_standardized
    model = compiled_tutorial()
    preds = []
    record = LambdaCallback(on_epoch_end=lambda e, logs: preds.append(model.predict(xt, verbose=0)))
    path = tmp_path / "ckpt-{epoch:02d}.weights.safetensors"
    model.fit(x, y, epochs=3, verbose=0, callbacks=[record, ModelCheckpoint(str(path), save_weights_only=True)])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["ckpt-01.weights.safetensors", "ckpt-02.weights.safetensors", "ckpt-03.weights.safetensors"]
    for epoch in range(3):
        fresh = tutorial_model()
        fresh.load_weights(tmp_path / f"ckpt-{epoch + 1:02d}.weights.safetensors")
        np.testing.assert_array_equal(fresh.predict(xt, verbose=0), preds[epoch])


def test_model_checkpoint_full_model_best_only_keep_last(tmp_path, pima_standardized):
    (x, y), (xt, yt) = pima_standardized
    model = compiled_tutorial()
    preds = []
    record = LambdaCallback(on_epoch_end=lambda e, logs: preds.append(model.predict(xt, verbose=0)))
    ckpt = ModelCheckpoint(str(tmp_path / "model-{epoch}.glassnet"), monitor="score", save_best_only=True,
                           keep_last=2)
    model.fit(x, y, epochs=5, verbose=0, callbacks=[SetLog("score", [3, 1, 2, 0.5, 0.7]), record, ckpt])
    # improved at epochs 1, 2, 4 -> written model-1, model-2, model-4; keep_last=2 removes model-1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-2.glassnet", "model-4.glassnet"]
    for name, epoch in (("model-2.glassnet", 1), ("model-4.glassnet", 3)):
        loaded = load_model(tmp_path / name)
        np.testing.assert_array_equal(loaded.predict(xt, verbose=0), preds[epoch])
    loaded = load_model(tmp_path / "model-4.glassnet")
    assert loaded.evaluate(xt, yt, verbose=0, return_dict=True).keys() == {"accuracy", "loss"}


def test_model_checkpoint_every_epoch_overwrites_a_fixed_name(tmp_path, pima_standardized):
    (x, y), (xt, _) = pima_standardized
    model = compiled_tutorial()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[ModelCheckpoint(str(tmp_path / "last.glassnet"))])
    assert [p.name for p in tmp_path.iterdir()] == ["last.glassnet"]
    np.testing.assert_array_equal(load_model(tmp_path / "last.glassnet").predict(xt, verbose=0),
                                  model.predict(xt, verbose=0))


def test_terminate_on_nan(pima, capsys):
    (x, y), _ = pima                            # raw features and a huge learning rate: the loss explodes
    model = Sequential([Input((8,)), Dense(1)])
    model.compile(loss="mse", optimizer=SGD(learning_rate=1e6))
    batches = []
    with np.errstate(all="ignore"):
        history = model.fit(x, y, epochs=5, verbose=0, callbacks=[
            TerminateOnNaN(), LambdaCallback(on_train_batch_end=lambda b, logs: batches.append(logs["loss"]))])
    assert history.epoch == [0]
    assert len(batches) < 20
    assert not math.isfinite(batches[-1]) and all(math.isfinite(v) for v in batches[:-1])
    assert not math.isfinite(history.history["loss"][0])
    assert "Invalid loss, terminating training" in capsys.readouterr().out


def test_learning_rate_scheduler(pima_standardized):
    (x, y), _ = pima_standardized
    model = compiled_tutorial(lr=0.1)
    seen = []
    probe = LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(model.optimizer.learning_rate))
    sched = LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[sched, probe])
    assert seen == pytest.approx([0.1, 0.05, 0.1 / 3])
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    assert model.optimizer.learning_rate == pytest.approx(0.1 / 3)
    # the one-argument form schedule(epoch) works too
    model.fit(x, y, epochs=2, verbose=0, callbacks=[LearningRateScheduler(lambda epoch: 0.001 * (epoch + 1))])
    assert model.optimizer.learning_rate == pytest.approx(0.002)


def test_learning_rate_scheduler_changes_the_updates(pima_standardized):
    (x, y), _ = pima_standardized
    model = compiled_tutorial(lr=0.1)
    start = model.get_weights()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[LearningRateScheduler(lambda epoch, lr: 0.0)])
    for a, b in zip(start, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_reduce_lr_on_plateau(pima_standardized):
    (x, y), _ = pima_standardized
    model = compiled_tutorial(lr=0.1)
    reducer = ReduceLROnPlateau(monitor="score", factor=0.5, patience=1)
    history = model.fit(x, y, epochs=4, verbose=0, callbacks=[SetLog("score", [1.0, 1.0, 1.0, 0.5]), reducer])
    # epoch 0 sets best; 1 and 2 stall (halve after each: patience 1); 3 improves
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    assert model.optimizer.learning_rate == pytest.approx(0.025)


def test_reduce_lr_on_plateau_respects_min_lr_and_cooldown(pima_standardized):
    (x, y), _ = pima_standardized
    model = compiled_tutorial(lr=0.1)
    reducer = ReduceLROnPlateau(monitor="score", factor=0.1, patience=1, cooldown=2, min_lr=0.005)
    history = model.fit(x, y, epochs=6, verbose=0, callbacks=[SetLog("score", [1.0] * 6), reducer])
    # Keras: the cooldown counter is decremented first, then the epoch may already count towards patience.
    # Reduce at epoch 1 (to 0.01, counter 2), epoch 2 in cooldown (counter 1), epoch 3 counter 0 -> reduce to
    # max(0.001, min_lr) = 0.005; at min_lr there is nothing more to reduce.
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.005, 0.005])
    assert model.optimizer.learning_rate == pytest.approx(0.005)


def test_csv_logger(tmp_path, pima_standardized):
    (x, y), (xt, yt) = pima_standardized
    model = compiled_tutorial()
    path = tmp_path / "log.csv"
    history = model.fit(x, y, epochs=3, verbose=0, validation_data=(xt, yt), callbacks=[CSVLogger(str(path))])
    text = path.read_text()
    lines = text.splitlines()
    assert lines[0] == "epoch,accuracy,loss,val_accuracy,val_loss"
    assert len(lines) == 4
    rows = list(csv.DictReader(text.splitlines()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for key in ("accuracy", "loss", "val_accuracy", "val_loss"):
        assert [float(r[key]) for r in rows] == history.history[key]
    model.fit(x, y, epochs=2, verbose=0, validation_data=(xt, yt), callbacks=[CSVLogger(str(path), append=True)])
    lines = path.read_text().splitlines()
    assert len(lines) == 6 and lines.count("epoch,accuracy,loss,val_accuracy,val_loss") == 1
    model.fit(x, y, epochs=1, verbose=0, callbacks=[CSVLogger(str(path), separator=";")])
    # no val_ keys in the first epoch: their columns are there anyway, NA until validation runs (Keras 3)
    assert path.read_text().splitlines() == ["epoch;accuracy;loss;val_accuracy;val_loss",
                                             f"0;{model.history.history['accuracy'][0]};"
                                             f"{model.history.history['loss'][0]};NA;NA"]
    history = model.fit(x, y, epochs=2, verbose=0, validation_data=(xt, yt), validation_freq=2,
                        callbacks=[CSVLogger(str(path))])
    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert [r["val_loss"] for r in rows] == ["NA", str(history.history["val_loss"][0])]


def test_lambda_callback_hooks_called(pima_standardized):
    (x, y), _ = pima_standardized
    model = compiled_tutorial()
    calls = {"epoch_begin": [], "epoch_end": [], "batch_end": 0, "train_begin": 0, "train_end": 0}

    def on_batch_end(batch, logs):
        calls["batch_end"] += 1

    cb = LambdaCallback(on_epoch_begin=lambda e, logs: calls["epoch_begin"].append(e),
                        on_epoch_end=lambda e, logs: calls["epoch_end"].append((e, sorted(logs))),
                        on_batch_end=on_batch_end,
                        on_train_begin=lambda logs=None: calls.__setitem__("train_begin", calls["train_begin"] + 1),
                        on_train_end=lambda logs=None: calls.__setitem__("train_end", calls["train_end"] + 1))
    model.fit(x, y, epochs=4, verbose=0, callbacks=[cb])
    assert calls["epoch_begin"] == [0, 1, 2, 3]
    assert calls["epoch_end"] == [(e, ["accuracy", "loss"]) for e in range(4)]
    assert calls["batch_end"] == 4 * 20
    assert calls["train_begin"] == 1 and calls["train_end"] == 1


# --- printed output -----------------------------------------------------------------------------------
def test_verbose_0_prints_nothing(pima_standardized, capsys):
    (x, y), (xt, yt) = pima_standardized
    model = compiled_tutorial()
    model.fit(x, y, epochs=2, verbose=0, validation_data=(xt, yt))
    model.evaluate(xt, yt, verbose=0)
    model.predict(xt, verbose=0)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_verbose_2_lines(pima_standardized, capsys):
    (x, y), (xt, yt) = pima_standardized
    model = compiled_tutorial()
    model.fit(x, y, epochs=3, verbose=2, validation_data=(xt, yt))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0::2] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    pattern = re.compile(rf"^20/20 - \d+s - \d+(us|ms|s)/step - accuracy: {NUM} - loss: {NUM} - "
                         rf"val_accuracy: {NUM} - val_loss: {NUM}$")
    assert len(lines) == 6
    for line in lines[1::2]:
        assert pattern.match(line), line


def test_verbose_2_values_match_history(pima_standardized, capsys):
    (x, y), _ = pima_standardized
    model = compiled_tutorial()
    history = model.fit(x, y, epochs=1, verbose=2)
    (line,) = capsys.readouterr().out.splitlines()   # no 'Epoch 1/1' header for a single epoch
    assert f"accuracy: {history.history['accuracy'][0]:.4f}" in line
    assert f"loss: {history.history['loss'][0]:.4f}" in line


def test_verbose_1_final_line_and_redraws(pima_standardized, capsys, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    (x, y), (xt, yt) = pima_standardized
    model = compiled_tutorial()
    history = model.fit(x, y, epochs=3, verbose=1, validation_data=(xt, yt))
    raw = capsys.readouterr().out
    assert "\x1b[1m20/20\x1b[0m" in raw                  # bold counter, as Keras writes on POSIX
    assert "\b" in raw and "\r" in raw
    lines = [line for line in screen_lines(raw) if line]
    assert lines[0::2] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    pattern = re.compile(rf"^20/20 ━{{20}} \d+s \d+(us|ms|s)/step - accuracy: {NUM} - loss: {NUM} - "
                         rf"val_accuracy: {NUM} - val_loss: {NUM}$")
    assert len(lines) == 6
    for epoch, line in enumerate(lines[1::2]):
        assert pattern.match(line), line
        assert f"val_loss: {history.history['val_loss'][epoch]:.4f}" in line


def test_verbose_1_single_epoch_has_no_header(pima_standardized, capsys):
    (x, y), _ = pima_standardized
    model = compiled_tutorial()
    model.fit(x, y, epochs=1)                             # verbose='auto' is 1
    raw = capsys.readouterr().out
    assert "Epoch" not in raw
    lines = [line for line in screen_lines(raw) if line]
    assert len(lines) == 1
    assert re.match(rf"^20/20 ━{{20}} \d+s \d+(us|ms|s)/step - accuracy: {NUM} - loss: {NUM}$", lines[0]), lines


def test_evaluate_and_predict_print_their_own_bar(pima_standardized, capsys):
    (x, y), (xt, yt) = pima_standardized
    model = compiled_tutorial()
    model.evaluate(xt, yt)
    lines = [line for line in screen_lines(capsys.readouterr().out) if line]
    assert len(lines) == 1
    assert re.match(rf"^5/5 ━{{20}} \d+s \d+(us|ms|s)/step - accuracy: {NUM} - loss: {NUM}$", lines[0]), lines
    model.predict(xt)
    lines = [line for line in screen_lines(capsys.readouterr().out) if line]
    assert len(lines) == 1 and re.match(r"^5/5 ━{20} \d+s \d+(us|ms|s)/step$", lines[0]), lines


KERAS3_SUMMARY = """\
Model: "sequential"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┓
┃ Layer (type)                    ┃ Output Shape           ┃       Param # ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━┩
│ dense (Dense)                   │ (None, 10)             │            90 │
├─────────────────────────────────┼────────────────────────┼───────────────┤
│ dense_1 (Dense)                 │ (None, 1)              │            11 │
└─────────────────────────────────┴────────────────────────┴───────────────┘
 Total params: 101 (404.00 B)
 Trainable params: 101 (404.00 B)
 Non-trainable params: 0 (0.00 B)
"""

KERAS3_SUMMARY_AFTER_FIT = KERAS3_SUMMARY.replace(
    " Total params: 101 (404.00 B)", " Total params: 204 (816.00 B)") + " Optimizer params: 103 (412.00 B)\n"

KERAS3_SUMMARY_UNBUILT = """\
Model: "sequential"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┓
┃ Layer (type)                    ┃ Output Shape           ┃       Param # ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━┩
│ dense (Dense)                   │ ?                      │   0 (unbuilt) │
├─────────────────────────────────┼────────────────────────┼───────────────┤
│ dense_1 (Dense)                 │ ?                      │   0 (unbuilt) │
└─────────────────────────────────┴────────────────────────┴───────────────┘
 Total params: 0 (0.00 B)
 Trainable params: 0 (0.00 B)
 Non-trainable params: 0 (0.00 B)
"""


def test_summary_matches_keras3_before_and_after_fit(pima_standardized, capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    (x, y), _ = pima_standardized
    model = tutorial_model()
    model.summary()
    assert capsys.readouterr().out == KERAS3_SUMMARY
    model.compile(loss="mse", optimizer=SGD(learning_rate=0.01, momentum=0.9, nesterov=True), metrics=["accuracy"])
    model.summary()
    assert capsys.readouterr().out == KERAS3_SUMMARY        # the optimizer has no state before fit
    model.fit(x, y, epochs=1, verbose=0)
    model.summary()
    assert capsys.readouterr().out == KERAS3_SUMMARY_AFTER_FIT
    lines = []
    model.summary(print_fn=lines.append)
    assert "\n".join(lines) + "\n" == KERAS3_SUMMARY_AFTER_FIT


def test_summary_of_unbuilt_model(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    model = Sequential([Dense(10, activation="relu"), Dense(1, activation="sigmoid")])
    model.summary()
    assert capsys.readouterr().out == KERAS3_SUMMARY_UNBUILT


# --- saving and loading -----------------------------------------------------------------------------
def _normalized_model(x):
    norm = Normalization()
    model = Sequential([Input((8,)), norm, Dense(10, activation="relu"), Dense(1, activation="sigmoid")])
    norm.adapt(x)
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_round_trip_with_normalization(tmp_path, pima, dtype):
    glassnet.set_floatx(dtype)
    (x, y), (xt, yt) = pima                    # raw features: Normalization inside the model standardises
    model = _normalized_model(x)
    model.compile(loss="mse", optimizer=SGD(learning_rate=0.01, momentum=0.9, nesterov=True), metrics=["accuracy"])
    model.fit(x, y, epochs=2, verbose=0)
    path = tmp_path / "m.glassnet"
    model.save(path)
    loaded = load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers] == ["Normalization", "Dense", "Dense"]
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    before, after = model.predict(xt, verbose=0), loaded.predict(xt, verbose=0)
    assert after.dtype == before.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(after, before)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert loaded.evaluate(xt, yt, verbose=0) == model.evaluate(xt, yt, verbose=0)
    assert loaded.optimizer.iterations == model.optimizer.iterations == 40
    assert loaded.optimizer.momentum == 0.9 and loaded.optimizer.nesterov


@pytest.mark.parametrize("make_optimizer", [
    lambda: SGD(learning_rate=0.01, momentum=0.9, nesterov=True),
    lambda: Adam(learning_rate=0.01),
])
def test_training_continues_identically_after_load(tmp_path, pima, make_optimizer):
    (x, y), _ = pima
    model = _normalized_model(x)
    model.compile(loss="mse", optimizer=make_optimizer(), metrics=["accuracy"])
    model.fit(x, y, epochs=2, shuffle=False, verbose=0)
    path = tmp_path / "half.glassnet"
    model.save(path)
    glassnet.set_random_seed(11)
    continued = model.fit(x, y, epochs=2, shuffle=False, verbose=0).history
    loaded = load_model(path)
    glassnet.set_random_seed(11)
    resumed = loaded.fit(x, y, epochs=2, shuffle=False, verbose=0).history
    assert resumed == continued
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert loaded.optimizer.iterations == model.optimizer.iterations == 80


def test_training_continues_identically_after_load_with_shuffle_and_same_seed(tmp_path, pima_standardized):
    (x, y), _ = pima_standardized
    model = compiled_tutorial()
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.glassnet")
    glassnet.set_random_seed(21)
    model.fit(x, y, epochs=2, verbose=0)
    loaded = load_model(tmp_path / "m.glassnet")
    glassnet.set_random_seed(21)
    loaded.fit(x, y, epochs=2, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_load_model_without_compile(tmp_path, pima_standardized):
    (x, y), (xt, _) = pima_standardized
    model = compiled_tutorial()
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.glassnet")
    loaded = load_model(tmp_path / "m.glassnet", compile=False)
    np.testing.assert_array_equal(loaded.predict(xt, verbose=0), model.predict(xt, verbose=0))
    assert not loaded.compiled


def test_save_weights_load_weights(tmp_path, pima):
    (x, y), (xt, _) = pima
    model = _normalized_model(x)
    model.compile(loss="mse", optimizer="adam")
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "w.weights.safetensors"
    model.save_weights(path)
    other = Sequential([Input((8,)), Normalization(), Dense(10, activation="relu"), Dense(1, activation="sigmoid")])
    other.load_weights(path)
    np.testing.assert_array_equal(other.predict(xt, verbose=0), model.predict(xt, verbose=0))
    # weights can also be read from a full .glassnet file
    model.save(tmp_path / "m.glassnet")
    third = Sequential([Input((8,)), Normalization(), Dense(10, activation="relu"), Dense(1, activation="sigmoid")])
    third.load_weights(tmp_path / "m.glassnet")
    np.testing.assert_array_equal(third.predict(xt, verbose=0), model.predict(xt, verbose=0))


# --- steps limits and callbacks in evaluate / predict --------------------------------------------
class Recorder(Callback):
    def __init__(self):
        super().__init__()
        self.events = []

    def on_test_begin(self, logs=None):
        self.events.append("test_begin")

    def on_test_batch_end(self, batch, logs=None):
        self.events.append(("test_batch", batch, round(logs["loss"], 6)))

    def on_test_end(self, logs=None):
        self.events.append("test_end")

    def on_predict_batch_end(self, batch, logs=None):
        self.events.append(("predict_batch", batch, logs["outputs"].shape))

    def on_predict_end(self, logs=None):
        self.events.append("predict_end")


def test_evaluate_and_predict_call_their_callbacks_and_respect_steps(pima_standardized):
    (x, y), _ = pima_standardized
    model = compiled_tutorial(loss="mse")
    rec = Recorder()
    full = model.evaluate(x, y, batch_size=100, verbose=0, callbacks=[rec])
    assert rec.events[0] == "test_begin" and rec.events[-1] == "test_end"
    assert [e[1] for e in rec.events[1:-1]] == list(range(7))          # ceil(614 / 100) batches
    assert rec.events[-2][2] == pytest.approx(full[0], abs=1e-6)        # the last running loss is the result
    two = model.evaluate(x, y, batch_size=100, steps=2, verbose=0)
    assert two[0] == pytest.approx(model.evaluate(x[:200], y[:200], batch_size=100, verbose=0)[0])
    rec.events.clear()
    out = model.predict(x, batch_size=256, steps=2, verbose=0, callbacks=[rec])
    assert out.shape == (512, 1)
    assert rec.events == [("predict_batch", 0, (256, 1)), ("predict_batch", 1, (256, 1)), "predict_end"]
    with pytest.raises(ValueError, match="steps to be a positive integer"):
        model.predict(x, steps=0, verbose=0)


def test_fit_validation_steps_and_callbacks_see_validation(pima_standardized):
    (x, y), (xt, yt) = pima_standardized
    model = compiled_tutorial(loss="mse")
    model.optimizer.learning_rate = 0.0
    rec = Recorder()
    history = model.fit(x, y, epochs=1, verbose=0, validation_data=(xt, yt), validation_steps=2, callbacks=[rec])
    assert rec.events[0] == "test_begin" and rec.events[-1] == "test_end" and len(rec.events) == 4
    assert history.history["val_loss"][0] == pytest.approx(model.evaluate(xt[:64], yt[:64], verbose=0)[0])
    with pytest.raises(ValueError, match="validation_freq"):
        model.fit(x, y, epochs=1, verbose=0, validation_freq=0)


@pytest.mark.parametrize("make,calls,expected", [
    # 1-D batches: one value per sample (a batch was averaged into one value and counted once; weights crashed)
    (lambda: BinaryAccuracy(), [([1., 0, 1, 1], [.9, .8, .7, .6]), ([1., 0], [.9, .1])], 5 / 6),
    (lambda: BinaryAccuracy(), [([1., 0], [.9, .8], [1., 3.])], 1 / 4),
    # (n, 1) sample weights for per-sample values (the weight's shape was padded by a negative count)
    (lambda: CategoricalAccuracy(), [([[0, 1, 0], [1, 0, 0.]], [[.1, .8, .1], [.2, .7, .1]], [[1.], [3.]])], 1 / 4),
    (lambda: Precision(class_id=1), [([[0, 1, 0], [1, 0, 0.]], [[.1, .8, .1], [.2, .7, .1]], [[1.], [3.]])], 1 / 4),
    # top_k: each of the k kept scores is a positive (Keras's threshold is -inf then), exactly k per row
    (lambda: Precision(top_k=1), [([[0, 1, 0, 0.]], [[.1, .3, .2, .15]])], 1.0),
    (lambda: Recall(top_k=1), [([[0, 1, 0, 0.]], [[.1, .3, .2, .15]])], 1.0),
    (lambda: Precision(top_k=1), [([[0, 1, 0, 0.]], [[.9, .9, .2, .1]])], 0.0),  # a tie: the lower index is kept
    (lambda: Precision(top_k=2), [([[0, 1, 0, 1.], [1, 0, 0, 0]], [[.9, .9, .9, .1], [.5, .5, .2, .3]])], 0.5),
    # AUC clips scores to [0, 1] (a linear output's -0.5 and 1.5 fell off the curve's ends)
    (lambda: AUC(), [([0, 1, 0, 1.], [-.5, 1.5, .2, .8])], 1.0),
    (lambda: AUC(curve="PR"), [([0, 1, 0, 1.], [-.5, 1.5, .2, .8])], 1.0),
    # any nonzero label is a positive
    (lambda: Precision(), [([.3, 0, 1, .7], [.9, .9, .9, .2])], 2 / 3),
    (lambda: Recall(), [([.3, 0, 1, .7], [.9, .9, .9, .2])], 2 / 3),
], ids=["binary_1d", "binary_1d_weighted", "categorical_n1_weights", "precision_class_id_n1_weights",
        "precision_top_k", "recall_top_k", "precision_top_k_tie", "precision_top_2", "auc_clipped", "auc_pr_clipped",
        "precision_soft_labels", "recall_soft_labels"])
def test_metrics_agree_with_keras_3_on_shapes_weights_top_k_and_ranges(make, calls, expected):
    """Values worked out by hand, and equal to Keras 3.15's for the same calls."""
    metric = make()
    for call in calls:
        metric.update_state(*[np.asarray(a) for a in call])
    assert metric.result() == pytest.approx(expected, rel=1e-6)


def test_weighted_metrics_take_n_by_1_sample_weights_in_evaluate():
    x = np.array([[0.0], [1.0], [2.0], [3.0]], np.float32)
    y = np.array([0, 1, 1, 0], np.float32)
    model = Sequential([Input((1,)), Dense(1, activation="sigmoid", kernel_initializer="ones",
                                           bias_initializer=glassnet.initializers.Constant(-1.5))])
    model.compile(loss="binary_crossentropy", weighted_metrics=["acc", "mae"])
    w = np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)
    result = model.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
    p = 1 / (1 + np.exp(-(x[:, 0] - 1.5)))
    hits = (y == (p > 0.5)).astype(float)
    assert result["acc"] == pytest.approx(float((hits * w[:, 0]).sum() / w.sum()), rel=1e-6)
    assert result["mae"] == pytest.approx(float((np.abs(y - p) * w[:, 0]).sum() / w.sum()), rel=1e-5)


def _constant_model():
    """Dense(1) with zero weights: predicts 0 for every row, so a batch's MSE is the mean of its y² (lr 0 keeps it)."""
    model = Sequential([Input((1,)), Dense(1, kernel_initializer="zeros")])
    model.compile(optimizer=SGD(learning_rate=0.0), loss="mse")
    return model


def test_class_weight_weights_training_batches_only():
    """With validation_split, the class weights were sliced into the validation rows too: val_loss was weighted."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    model = Sequential([Input((4,)), Dense(1, activation="sigmoid")])
    model.compile(optimizer=SGD(learning_rate=0.0), loss="mse")
    history = model.fit(x, y, class_weight={0: 1.0, 1: 10.0}, validation_split=0.5, epochs=1, shuffle=False,
                        verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(model.evaluate(x[20:], y[20:], verbose=0), rel=1e-6)
    unweighted = model.evaluate(x[:20], y[:20], verbose=0)
    assert history.history["loss"][0] != pytest.approx(unweighted, rel=1e-3)  # ... while training was weighted


@pytest.mark.parametrize("steps,expected", [
    # batches of 10 rows hold y = 0, 1, 2, 3 (MSE 0, 1, 4, 9): epochs go on where the last one stopped
    (2, [[0.0, 0.5], [4.0, 6.5], [0.0, 0.5]]),
    (3, [[0.0, 0.5, 5 / 3], [9.0], [0.0, 0.5, 5 / 3]]),  # a pass's end ends an epoch early; the next starts afresh
])
def test_steps_per_epoch_goes_on_through_the_data(steps, expected):
    """Keras 3's epoch iterator outlives the epoch when steps_per_epoch is given; glassnet restarted every epoch at
    batch 0, so batches 2 and 3 were never trained on."""
    x = np.ones((40, 1), np.float32)
    y = np.repeat(np.arange(4, dtype=np.float32), 10)
    seen = []
    record = LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append([]),
                            on_train_batch_end=lambda batch, logs: seen[-1].append(logs["loss"]))
    history = _constant_model().fit(x, y, batch_size=10, steps_per_epoch=steps, epochs=3, shuffle=False, verbose=0,
                                    callbacks=[record])
    assert seen == [pytest.approx(e) for e in expected]
    assert history.history["loss"] == pytest.approx([e[-1] for e in expected])


def test_callbacks_run_before_history_and_the_progress_bar_and_get_keras_logs(capsys):
    """Keras's order: the user's callbacks, History, then the progress bar, whose line shows what callbacks added
    (ReduceLROnPlateau's learning_rate); on_train_begin gets {} and on_train_end the last epoch's logs; a callback
    defining only Keras 2's on_batch_end is called for every batch."""
    x = np.ones((20, 1), np.float32)
    y = np.zeros(20, np.float32)
    calls = []

    class Legacy(glassnet.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            calls.append(batch)

        def on_epoch_begin(self, epoch, logs=None):
            print(f"user begins {epoch}")

    ends = []
    lam = LambdaCallback(on_train_begin=lambda logs: ends.append(("begin", logs)),
                         on_train_end=lambda logs: ends.append(("end", logs)))
    history = _constant_model().fit(x, y, batch_size=5, epochs=2, verbose=2, callbacks=[
        Legacy(), lam, glassnet.callbacks.ReduceLROnPlateau(monitor="loss", patience=5)])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "user begins 0" and out[1] == "Epoch 1/2"
    assert out[2].endswith(" - loss: 0.0000e+00 - learning_rate: 0.0000e+00"), out[2]
    assert calls == [0, 1, 2, 3] * 2
    assert ends[0] == ("begin", {})
    assert ends[1][0] == "end" and ends[1][1]["loss"] == history.history["loss"][-1]


def test_validation_freq_takes_a_list_of_epochs():
    x = np.ones((20, 1), np.float32)
    y = np.zeros(20, np.float32)
    seen = []
    history = _constant_model().fit(x, y, epochs=4, verbose=0, validation_data=(x, y), validation_freq=[1, 3],
                                    callbacks=[LambdaCallback(on_epoch_end=lambda e, logs: seen.append(
                                        "val_loss" in logs))])
    assert seen == [True, False, True, False] and len(history.history["val_loss"]) == 2
    with pytest.raises(ValueError, match="each epoch in validation_freq"):
        _constant_model().fit(x, y, epochs=2, verbose=0, validation_data=(x, y), validation_freq=[0, 2])


class _Batches:
    """A keras.utils.Sequence-style object: len() batches of ``size`` rows, in order; counts on_epoch_end calls."""

    def __init__(self, x, y, size, w=None):
        self.x, self.y, self.w, self.size, self.ends, self.seen = x, y, w, size, 0, []

    def __len__(self):
        return -(-len(self.x) // self.size)

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        self.seen.append(i)
        sl = slice(i * self.size, (i + 1) * self.size)
        return (self.x[sl], self.y[sl]) if self.w is None else (self.x[sl], self.y[sl], self.w[sl])

    def on_epoch_end(self):
        self.ends += 1


def _gen(x, y, size, forever=True):
    while True:
        for start in range(0, len(x), size):
            yield x[start:start + size], y[start:start + size]
        if not forever:
            return


def _twin_models(seed=5):
    made = []
    for _ in range(2):
        glassnet.set_random_seed(seed)
        model = Sequential([Input((4,)), Dense(3, activation="relu"), Dense(1, activation="sigmoid")])
        model.compile(optimizer=SGD(learning_rate=0.1, momentum=0.9), loss="binary_crossentropy",
                      metrics=["accuracy"])
        made.append(model)
    return made


def _xy(n=40):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (x[:, 0] + x[:, 1] > 0).astype("float32")


def test_fit_evaluate_predict_on_a_sequence_equal_the_same_batches_as_arrays():
    """A keras.utils.Sequence / PyDataset-style object gives the batches: in order (shuffle=False) they are the
    batches fit makes of the arrays, so weights, History, evaluate and predict are the same. Before, NumPy indexed
    such an object forever (fit hung, eating gigabytes)."""
    x, y = _xy()
    a, b = _twin_models()
    ha = a.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, validation_data=(x[:16], y[:16]))
    seq = _Batches(x, y, 8)
    hb = b.fit(seq, epochs=3, shuffle=False, verbose=0, validation_data=_Batches(x[:16], y[:16], 8))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert ha.history == hb.history and seq.ends == 3
    assert b.evaluate(_Batches(x, y, 8), verbose=0) == a.evaluate(x, y, batch_size=8, verbose=0)
    np.testing.assert_array_equal(b.predict(_Batches(x, y, 8), verbose=0), a.predict(x, batch_size=8, verbose=0))


def test_fit_on_a_sequence_shuffles_its_batches_each_pass_and_applies_class_weights():
    x, y = _xy()
    a, b = _twin_models()
    seq = _Batches(x, y, 8)
    b.fit(seq, epochs=2, verbose=0)  # shuffle=True: every batch once per epoch, in a new order
    assert sorted(seq.seen[1:6]) == list(range(5)) and sorted(seq.seen[6:11]) == list(range(5))  # ([0]: the peek)
    assert seq.seen[1:6] != seq.seen[6:11]
    weights = np.where(y == 1, 3.0, 1.0).astype("float32")
    a.fit(_Batches(x, y, 8, weights), epochs=1, shuffle=False, verbose=0)
    c = _twin_models()[0]
    c.fit(_Batches(x, y, 8), epochs=1, shuffle=False, verbose=0, class_weight={0: 1.0, 1: 3.0})
    for wa, wc in zip(a.get_weights(), c.get_weights()):
        np.testing.assert_allclose(wa, wc, rtol=1e-6)


def test_fit_on_a_generator_takes_steps_per_epoch_batches_and_stops_when_it_runs_out(capsys):
    x, y = _xy()
    a, b = _twin_models()
    a.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    b.fit(_gen(x, y, 8), steps_per_epoch=5, epochs=2, verbose=0)  # (a generator is never shuffled)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert b.evaluate(_gen(x, y, 8), steps=5, verbose=0) == a.evaluate(x, y, batch_size=8, verbose=0)
    np.testing.assert_array_equal(b.predict((xb for xb, _ in _gen(x, y, 8)), steps=5, verbose=0),
                                  a.predict(x, batch_size=8, verbose=0))
    history = _twin_models()[0].fit(_gen(x, y, 8, forever=False), steps_per_epoch=3, epochs=5, verbose=0)
    assert len(history.history["loss"]) == 2  # 5 batches in all: 3, then 2 and out
    assert "ran out of batches in epoch 2" in capsys.readouterr().err


@pytest.mark.parametrize("call,message", [
    (lambda m, x, y: m.fit(_gen(x, y, 8), epochs=1, verbose=0), "has no length: pass steps_per_epoch="),
    (lambda m, x, y: m.evaluate(_gen(x, y, 8), verbose=0), "has no length: pass steps="),
    (lambda m, x, y: m.fit(_Batches(x, y, 8), y, verbose=0), "do not pass y or sample_weight"),
    (lambda m, x, y: m.fit(_Batches(x, y, 8), validation_split=0.2, verbose=0), "validation_split needs arrays"),
    (lambda m, x, y: m.fit(x, y, validation_data=_gen(x, y, 8), verbose=0), "pass validation_steps="),
    (lambda m, x, y: m.train_on_batch(_gen(x, y, 8), y), "a generator or iterator of batches"),
])
def test_batch_sources_used_wrongly_get_clear_errors(call, message):
    x, y = _xy()
    with pytest.raises((ValueError, TypeError), match=message):
        call(_twin_models()[0], x, y)


def test_a_one_array_list_is_that_array_for_a_single_input_model():
    x, y = _xy()
    a, b = _twin_models()
    a.fit([x], y, epochs=1, shuffle=False, verbose=0)
    b.fit(x, y, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_array_equal(a.predict([x], verbose=0), b.predict(x, verbose=0))


def test_a_keras_pydataset_subclass_trains_as_in_keras():
    """keras.utils.PyDataset / Sequence as Keras tutorials subclass them (workers accepted, doing nothing)."""
    from glassnet.keras.utils import PyDataset, Sequence
    x, y = _xy()

    class Data(PyDataset):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.epochs_ended = 0

        def __len__(self):
            return 5

        def __getitem__(self, i):
            return x[i * 8:(i + 1) * 8], y[i * 8:(i + 1) * 8]

        def on_epoch_end(self):
            self.epochs_ended += 1

    a, b = _twin_models()
    data = Data(workers=4, use_multiprocessing=True)
    a.fit(data, epochs=2, shuffle=False, verbose=0)
    b.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert data.epochs_ended == 2 and data.num_batches == 5 and Sequence is PyDataset

    class NoLength(PyDataset):
        def __getitem__(self, i):
            return x[:8], y[:8]

    with pytest.raises(ValueError, match="has no length .*must define __len__"):
        a.fit(NoLength(), verbose=0)


def test_sequence_lists_are_batches_and_empty_generators_are_errors_not_zeros(capsys):
    """A PyDataset's [x, y] is (x, y) (Keras converts its lists); a generator that yields nothing is an error in
    evaluate (it gave loss 0.0), and one that runs out exactly at an epoch's end adds no epoch of zeros."""
    x, y = _xy()

    class Lists(_Batches):
        def __getitem__(self, i):
            return list(super().__getitem__(i))

    a, b = _twin_models()
    assert a.evaluate(Lists(x, y, 8), verbose=0) == b.evaluate(x, y, batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="yielded no batch"):
        a.evaluate((batch for batch in []), steps=2, verbose=0)
    history = a.fit(_gen(x, y, 8, forever=False), steps_per_epoch=5, epochs=3, verbose=0)
    assert len(history.history["loss"]) == 1 and min(history.history["loss"]) > 0
    assert "ran out of batches in epoch 2" in capsys.readouterr().err
