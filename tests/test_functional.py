"""Merge layers, the functional API (multi-input/output, shared layers, nested models) and subclassed models."""
import re

import numpy as np
import pytest
from gradcheck import numeric_grad, rel_error

import glassnet
from glassnet import Input, Model, Sequential
from glassnet.layers import (Add, Average, Concatenate, Dense, Dot, Dropout, Maximum, Minimum, Multiply,
                             Normalization, Subtract)


def assert_model_gradients(model, x, dy):
    """The input and every weight gradient of J = Σ model(x)·dy agree with finite differences."""
    for w in model.weights:
        w.grad[...] = 0
    _, backward = model.forward(x, training=True)
    dx = backward(dy)

    def objective():
        return float((model.call(x) * dy).sum())

    assert rel_error(dx, numeric_grad(objective, x)) < 1e-6
    for w in model.trainable_weights:
        assert rel_error(w.grad, numeric_grad(objective, w.value)) < 1e-6


MERGES = [Add, Subtract, Multiply, Average, Maximum, Minimum, lambda: Concatenate(axis=-1),
          lambda: Concatenate(axis=1), lambda: Dot(axes=1), lambda: Dot(axes=1, normalize=True)]


@pytest.mark.parametrize("make", MERGES)
def test_merge_layer_gradients(float64, make):
    layer = make()
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(4, 5)), rng.normal(size=(4, 5))]
    if isinstance(layer, Add) or type(layer).__name__ in ("Multiply", "Average", "Maximum", "Minimum"):
        xs.append(rng.normal(size=(4, 5)))
    y, backward = layer.forward(xs)
    dy = rng.normal(size=y.shape)
    dxs = backward(dy)
    for x, dx in zip(xs, dxs):
        num = numeric_grad(lambda: float((layer.forward(xs)[0] * dy).sum()), x)
        assert rel_error(dx, num) < 1e-6


def test_dot_rank3_matches_einsum(float64):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4))
    y, backward = Dot(axes=2).forward([a, b])
    np.testing.assert_allclose(y, np.einsum("nik,njk->nij", a, b))
    dy = rng.normal(size=y.shape)
    da, db = backward(dy)
    np.testing.assert_allclose(da, numeric_grad(lambda: float((Dot(axes=2).forward([a, b])[0] * dy).sum()), a),
                               atol=1e-7)


def test_merge_errors_name_the_problem():
    a, b = Input((3,)), Input((4,))
    with pytest.raises(ValueError, match="same shape"):
        Add()([a, b])
    with pytest.raises(ValueError, match="list of inputs"):
        Add()(a)
    with pytest.raises(ValueError, match="exactly 2 inputs"):
        Subtract()([a, a, a])


def two_in_two_out():
    num = Input((4,), name="num")
    cat = Input((3,), name="cat")
    shared = Dense(5, activation="tanh", name="shared")
    h = Concatenate()([shared(num), Dense(5, activation="relu", name="cat_proj")(cat)])
    h = Add()([h, Dense(10, name="skip")(num)])
    score = Dense(1, activation="sigmoid", name="score")(h)
    amount = Dense(2, name="amount")(h)
    return Model(inputs={"num": num, "cat": cat}, outputs={"score": score, "amount": amount}, name="two")


def test_functional_forward_equals_the_composition():
    model = two_in_two_out()
    rng = np.random.default_rng(2)
    x = {"num": rng.normal(size=(6, 4)).astype("float32"), "cat": rng.normal(size=(6, 3)).astype("float32")}
    score, amount = model.predict(x, verbose=0)
    L = {layer.name: layer for layer in model.layers}
    h = np.concatenate([L["shared"].call(x["num"]), L["cat_proj"].call(x["cat"])], axis=1) + L["skip"].call(x["num"])
    np.testing.assert_allclose(score, L["score"].call(h), rtol=1e-6)
    np.testing.assert_allclose(amount, L["amount"].call(h), rtol=1e-6)
    assert model.input_names == ["num", "cat"] and model.output_names == ["score", "amount"]


def test_functional_gradients_with_fan_out_and_shared_layers(float64):
    x_in = Input((3,))
    shared = Dense(3, activation="tanh")
    h1 = shared(x_in)
    h2 = shared(h1)                                   # the same layer applied twice
    out = Dense(1)(Add()([h1, h2, x_in]))             # x_in and h1 fan out
    model = Model(x_in, out)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 3))
    dy = rng.normal(size=(5, 1))
    assert_model_gradients(model, x, dy)


def test_nested_models_as_layers(float64):
    inner_in = Input((4,))
    inner = Model(inner_in, Dense(3, activation="relu")(inner_in), name="inner")
    outer_in = Input((4,))
    outer = Model(outer_in, Dense(1)(inner(outer_in)), name="outer")
    seq = Sequential([Input((4,)), inner, Dense(2)])
    x = np.random.default_rng(4).normal(size=(3, 4))
    np.testing.assert_allclose(outer.predict(x, verbose=0), outer.layers[-1].call(inner.call(x)))
    assert seq.predict(x, verbose=0).shape == (3, 2)
    assert outer.count_params() == 4 * 3 + 3 + 3 + 1


def test_multi_output_training_logs_and_evaluate():
    model = two_in_two_out()
    model.compile(optimizer=glassnet.optimizers.Adam(0.01),
                  loss={"score": "binary_crossentropy", "amount": "mse"},
                  loss_weights={"score": 2.0, "amount": 0.5},
                  metrics={"score": ["accuracy"], "amount": ["mae"]})
    rng = np.random.default_rng(5)
    x = {"num": rng.normal(size=(64, 4)).astype("float32"), "cat": rng.normal(size=(64, 3)).astype("float32")}
    y = {"score": (x["num"][:, 0] > 0).astype("float32"), "amount": x["cat"][:, :2] * 2}
    history = model.fit(x, y, epochs=30, batch_size=16, verbose=0)
    assert sorted(history.history) == ["amount_loss", "amount_mae", "loss", "score_accuracy", "score_loss"]
    assert history.history["loss"][-1] < history.history["loss"][0] * 0.5
    # the total is the weighted sum of the per-output losses
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(2.0 * logs["score_loss"] + 0.5 * logs["amount_loss"], rel=1e-5)
    values = model.evaluate(x, y, verbose=0)
    assert model.metrics_names == ["loss", "score_loss", "amount_loss", "score_accuracy", "amount_mae"]
    assert values == pytest.approx([logs[k] for k in model.metrics_names])
    # per-output losses equal the losses computed by hand on predict
    score, amount = model.predict(x, verbose=0)
    assert logs["amount_loss"] == pytest.approx(float(np.mean((amount - y["amount"]) ** 2)), rel=1e-4)
    with pytest.raises(ValueError, match="outputs \\['score', 'amount'\\]"):
        model.fit(x, y["score"], verbose=0)


def test_functional_errors():
    a, b = Input((3,), name="a"), Input((3,), name="b")
    out = Dense(1)(Add()([a, b]))
    with pytest.raises(ValueError, match="Graph disconnected.*'b'"):
        Model(a, out)
    with pytest.raises(TypeError, match="symbolic tensors"):
        Model(a, np.zeros(3))
    model = Model([a, b], out)
    with pytest.raises(ValueError, match="takes 2 input"):
        model.predict(np.zeros((2, 3)), verbose=0)


SUMMARY = """\
Model: "functional_3"
┏━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━┓
┃ Layer (type)        ┃ Output Shape      ┃    Param # ┃ Connected to      ┃
┡━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━┩
│ features            │ (None, 8)         │          0 │ -                 │
│ (InputLayer)        │                   │            │                   │
├─────────────────────┼───────────────────┼────────────┼───────────────────┤
│ dense_3 (Dense)     │ (None, 4)         │         36 │ features[0][0]    │
├─────────────────────┼───────────────────┼────────────┼───────────────────┤
│ dense_4 (Dense)     │ (None, 4)         │         36 │ features[0][0]    │
├─────────────────────┼───────────────────┼────────────┼───────────────────┤
│ concatenate         │ (None, 8)         │          0 │ dense_3[0][0],    │
│ (Concatenate)       │                   │            │ dense_4[0][0]     │"""


def test_summary_has_keras_connected_to_column(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    f = Input((8,), name="features")
    c = Concatenate()([Dense(4, name="dense_3")(f), Dense(4, name="dense_4")(f)])
    model = Model(f, Dense(1)(c), name="functional_3")
    lines = []
    model.summary(print_fn=lines.append)
    assert "\n".join(lines).startswith(SUMMARY)  # the reference's lines, verbatim


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_functional_save_load_round_trip(tmp_path, dtype):
    glassnet.set_floatx(dtype)
    model = two_in_two_out()
    model.compile(optimizer="adam", loss={"score": "binary_crossentropy", "amount": "mse"},
                  metrics={"score": ["accuracy"]})
    rng = np.random.default_rng(6)
    x = {"num": rng.normal(size=(8, 4)).astype(dtype), "cat": rng.normal(size=(8, 3)).astype(dtype)}
    y = {"score": np.ones(8, dtype), "amount": np.zeros((8, 2), dtype)}
    model.fit(x, y, epochs=2, verbose=0)
    model.save(tmp_path / "two.glassnet")
    loaded = glassnet.load_model(tmp_path / "two.glassnet")
    for a, b in zip(model.predict(x, verbose=0), loaded.predict(x, verbose=0)):
        np.testing.assert_array_equal(a, b)
    assert loaded.input_names == ["num", "cat"] and loaded.output_names == ["score", "amount"]
    model.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


class Residual(Model):
    """A subclassed model: layers as attributes, call() composes them."""

    def __init__(self):
        super().__init__(name="residual")
        self.norm = Normalization(mean=0.0, variance=1.0)
        self.hidden = Dense(6, activation="tanh")
        self.project = Dense(6)
        self.add = Add()
        self.drop = Dropout(0.0)
        self.out = Dense(1, activation="sigmoid")

    def call(self, x, training=False):
        h = self.norm(x)
        h = self.add([self.hidden(h), self.project(h)])
        return self.out(self.drop(h, training=training))


def test_subclassed_model_backward_follows_its_layers(float64):
    model = Residual()
    x = np.random.default_rng(7).normal(size=(5, 3))
    model.build((None, 3))
    assert [type(layer).__name__ for layer in model.layers] == ["Normalization", "Dense", "Dense", "Add", "Dropout",
                                                                "Dense"]
    dy = np.random.default_rng(8).normal(size=(5, 1))
    assert_model_gradients(model, x, dy)


def test_subclassed_model_trains_and_refuses_untraceable_math(pima_standardized):
    (x, y), _ = pima_standardized
    model = Residual()
    model.compile(optimizer="adam", loss="mse", metrics=["accuracy"])
    history = model.fit(x, y, epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]

    class Bad(Model):
        def __init__(self):
            super().__init__()
            self.a = Dense(1)

        def call(self, x, training=False):
            return self.a(x) * 2.0  # NumPy math outside a layer: no backward for it

    bad = Bad()
    bad.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="outside layers"):
        bad.fit(x, y, epochs=1, verbose=0)


def test_functional_models_carry_masks_like_sequential():
    from glassnet.layers import LSTM, Embedding
    rng = np.random.default_rng(9)
    tokens = Input((None,))  # any sequence length
    out = Dense(1)(LSTM(4)(Embedding(10, 3, mask_zero=True)(tokens)))
    model = Model(tokens, out)
    seq = Sequential([Input((None,))] + [layer for layer in model.layers[1:]])
    x = rng.integers(1, 10, size=(3, 6)).astype("float32")
    padded = x.copy()
    padded[:, 4:] = 0  # trailing padding must not change the result of the first four steps
    np.testing.assert_allclose(model.predict(padded, verbose=0), seq.predict(padded, verbose=0), rtol=1e-6)
    np.testing.assert_allclose(model.predict(padded, verbose=0), model.predict(x[:, :4], verbose=0), rtol=1e-5)


def test_sequential_refuses_layers_with_several_outputs():
    from glassnet.layers import LSTM
    with pytest.raises(ValueError, match="functional API"):
        Sequential([Input((5, 3)), LSTM(4, return_state=True)])


# --- training computes no gradient into the model's inputs -------------------------------------------------
def _spy_input_grads(layer, seen):
    """Record, for each backward call of ``layer``, whether it was asked for its dx."""
    original = layer.forward

    def forward(x, training=False, **kwargs):
        y, backward = original(x, training, **kwargs)

        def spying(dy, input_grad=True):
            seen.append(input_grad)
            return backward(dy, input_grad=input_grad) if layer._skips_input_grad() else backward(dy)

        return y, spying

    layer.forward = forward


def _fit_twice(build, x, y):
    """The same fit with the input-gradient skipping (training's default) and with every dx computed."""
    results = []
    for skip in (True, False):
        glassnet.set_random_seed(4)
        model = build()
        model.compile(optimizer="adam", loss="mse")
        if not skip:
            model._skips_input_grad = lambda: False  # Model._train_batch then calls backward(dy): all of it
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        results.append([w.numpy() for w in model.weights])
    return results


@pytest.mark.parametrize("kind", ["mlp", "rescaled", "two_inputs", "frozen_first", "nested_first"])
def test_functional_training_skips_input_gradients(kind):
    from glassnet.layers import Rescaling
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 6)).astype("float32")
    x2 = rng.normal(size=(48, 3)).astype("float32")
    y = rng.normal(size=(48, 2)).astype("float32")
    seen = {}

    def build():
        a = Input((6,))
        first = Dense(5, activation="relu", name="first")
        seen["first"], seen["second"] = [], []
        if kind == "nested_first":
            inner = Sequential([Input((6,)), first])
            h = inner(a)
        elif kind == "rescaled":
            h = first(Rescaling(0.5)(a))
        else:
            h = first(a)
        if kind == "frozen_first":
            first.trainable = False
        second = Dense(4, activation="tanh", name="second")
        _spy_input_grads(first, seen["first"])
        _spy_input_grads(second, seen["second"])
        if kind == "two_inputs":
            b = Input((3,))
            return Model([a, b], Dense(2)(Concatenate()([second(h), b])))
        return Model(a, Dense(2)(second(h)))

    inputs = [x, x2] if kind == "two_inputs" else x
    skipped, full = _fit_twice(build, inputs, y)
    for u, v in zip(skipped, full):
        np.testing.assert_array_equal(u, v)  # skipping dx into the inputs changes no weight gradient
    glassnet.set_random_seed(4)
    model = build()
    model.compile(optimizer="sgd", loss="mse")
    model.train_on_batch(inputs if kind != "two_inputs" else [x, x2], y)
    if kind == "frozen_first":
        assert seen["first"] == [] and seen["second"] == [False]  # nothing trains before "second"
    else:
        assert seen["first"] == [False] and seen["second"] == [True]
    out, backward = model.forward(inputs, training=True)  # explanations still get the input gradient
    dx = backward(np.ones_like(out))
    assert (dx[0] if kind == "two_inputs" else dx).shape == x.shape
