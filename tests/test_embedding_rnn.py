"""Embedding, SimpleRNN, LSTM, GRU and Bidirectional.

(a) finite-difference gradient checks (float64, central differences, relative error < 1e-6) of the
    input and every weight, across return_sequences, go_backwards, masks, merge modes, dropout, states;
(b) PyTorch references (float32, 1e-5): outputs and gradients with identical weights;
(c) the real Keras 3 (numpy backend, in-process): forward values with identical weights, masks included;
(d) Keras's initial values; (e) a small Embedding → LSTM → Dense model trains, and its summary counts
    parameters as Keras does.
"""
import os
import sys

import numpy as np
import pytest
from gradcheck import numeric_grad, rel_error

import glassnet
from glassnet.engine import backend
from glassnet.engine.registry import deserialize, serialize
from glassnet.layers.core import Dense, Input
from glassnet.layers.embedding import Embedding
from glassnet.layers.recurrent import GRU, LSTM, Bidirectional, SimpleRNN
from glassnet.models.sequential import Sequential

TOL = 1e-6
H = 1e-6
TOL32 = 1e-5
N, T, IN, U = 3, 5, 3, 2
# some trailing False steps (sample 0), a full row (sample 1), a leading and a trailing gap (sample 2)
MASK = np.array([[1, 1, 1, 0, 0],
                 [1, 1, 1, 1, 1],
                 [0, 1, 1, 1, 0]], dtype=bool)


# --- gradient-check helpers ---------------------------------------------------------------------------
def assert_grad(analytic, f, x, what):
    err = rel_error(analytic, numeric_grad(f, x))
    assert err < TOL, f"{what}: relative error {err:.3g}"


def randomize(layer, rng, scale=0.5):
    """Random weights everywhere (biases too), so every path of the math carries a gradient."""
    for w in layer.weights:
        w.value = rng.normal(scale=scale, size=w.shape)


def as_list(y):
    return list(y) if isinstance(y, (list, tuple)) else [y]


def check_layer(layer, x, mask=None, training=False, initial_state=None, seed=0):
    """Check ∂J/∂x and ∂J/∂w for J = Σ_k Σ y_k·dy_k over every output y_k (output, states, halves).

    Dropout masks are drawn from a generator seeded afresh on every call, so each evaluation of J
    uses the same masks (as one training step does)."""
    rng = np.random.default_rng(seed)
    layer._maybe_build(x.shape)
    randomize(layer, rng)

    def run():
        with backend.using_rng(np.random.default_rng(1234)):
            return layer.forward(x, training, mask=mask, initial_state=initial_state)

    y, backward = run()
    dys = [rng.normal(size=a.shape) for a in as_list(y)]
    for w in layer.weights:
        w.grad[...] = 0
    dx = backward(dys if isinstance(y, (list, tuple)) else dys[0])
    analytic = [w.grad.copy() for w in layer.weights]

    def J():
        return float(sum(np.sum(a * d) for a, d in zip(as_list(run()[0]), dys)))

    assert dx.shape == x.shape
    assert_grad(dx, J, x, f"{layer.name} dx")
    for w, g in zip(layer.weights, analytic):
        assert_grad(g, J, w.value, w.path)


def sequences(rng, n=N, t=T, d=IN):
    return rng.normal(size=(n, t, d))


CELLS = {
    "simple_rnn": lambda **kw: SimpleRNN(U, **kw),
    "lstm": lambda **kw: LSTM(U, **kw),
    "gru": lambda **kw: GRU(U, **kw),
    "gru_reset_before": lambda **kw: GRU(U, reset_after=False, **kw),
}


# --- (a) gradient checks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "gobackwards"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "seq"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_rnn_gradients(float64, cell, return_sequences, go_backwards, masked):
    layer = CELLS[cell](return_sequences=return_sequences, go_backwards=go_backwards)
    check_layer(layer, sequences(np.random.default_rng(1)), mask=MASK if masked else None)


@pytest.mark.parametrize("cell", list(CELLS))
def test_rnn_gradients_zero_output_for_mask(float64, cell):
    layer = CELLS[cell](return_sequences=True, zero_output_for_mask=True)
    check_layer(layer, sequences(np.random.default_rng(2)), mask=MASK)


@pytest.mark.parametrize("cell", list(CELLS))
def test_rnn_gradients_return_state_and_initial_state(float64, cell):
    """Gradients flow in through the final states as well as the output; initial states are honoured."""
    layer = CELLS[cell](return_sequences=True, return_state=True)
    rng = np.random.default_rng(3)
    n_states = 2 if cell == "lstm" else 1
    init = [rng.normal(size=(N, U)) for _ in range(n_states)]
    check_layer(layer, sequences(rng), mask=MASK, initial_state=init)


@pytest.mark.parametrize("cell", list(CELLS))
def test_rnn_gradients_with_dropout(float64, cell):
    """Training with dropout and recurrent_dropout: the masks are fixed per sequence, backward uses them."""
    layer = CELLS[cell](return_sequences=True, dropout=0.3, recurrent_dropout=0.4)
    check_layer(layer, sequences(np.random.default_rng(4)), mask=MASK, training=True)


@pytest.mark.parametrize("cell", ["simple_rnn", "lstm", "gru"])
def test_rnn_gradients_input_dropout_only(float64, cell):
    layer = CELLS[cell](dropout=0.5)  # one input mask shared by every gate (Keras's implementation 2)
    check_layer(layer, sequences(np.random.default_rng(5)), training=True)


@pytest.mark.parametrize("cell", list(CELLS))
def test_rnn_gradients_no_bias_other_activation(float64, cell):
    layer = CELLS[cell](use_bias=False, activation="softsign", return_sequences=True)
    check_layer(layer, sequences(np.random.default_rng(6)), mask=MASK)


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "seq"])
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "ave", "mul", None])
def test_bidirectional_gradients(float64, merge_mode, return_sequences, masked):
    layer = Bidirectional(LSTM(U, return_sequences=return_sequences), merge_mode=merge_mode)
    check_layer(layer, sequences(np.random.default_rng(7)), mask=MASK if masked else None)


def test_bidirectional_gradients_custom_backward_layer_and_states(float64):
    layer = Bidirectional(GRU(U, return_sequences=True, return_state=True),
                          backward_layer=GRU(U + 1, reset_after=False, return_sequences=True, return_state=True,
                                             go_backwards=True))
    check_layer(layer, sequences(np.random.default_rng(8)), mask=MASK)


def test_embedding_gradient_with_repeated_ids(float64):
    layer = Embedding(7, 3)
    ids = np.array([[1, 4, 4, 0], [4, 6, 1, 1]])
    layer._maybe_build(ids.shape)
    rng = np.random.default_rng(9)
    dy = rng.normal(size=(2, 4, 3))
    y, backward = layer.forward(ids)
    np.testing.assert_array_equal(y, layer.embeddings.value[ids])
    assert backward(dy) is None  # integer ids: no input gradient
    analytic = layer.embeddings.grad.copy()
    assert_grad(analytic, lambda: float(np.sum(layer.forward(ids)[0] * dy)), layer.embeddings.value, "embeddings")
    # id 4 occurs three times: its row collects all three gradients; unused ids get none
    np.testing.assert_allclose(analytic[4], dy[0, 1] + dy[0, 2] + dy[1, 0])
    np.testing.assert_array_equal(analytic[[2, 3, 5]], 0)


def test_sequential_embedding_lstm_dense_gradients(float64):
    """The whole chain with a mask from Embedding(mask_zero=True): every weight checked through Sequential."""
    model = Sequential([Input((T,)), Embedding(6, 3, mask_zero=True), LSTM(U, return_sequences=True),
                       GRU(U), Dense(2)])
    rng = np.random.default_rng(10)
    for layer in model.layers:
        randomize(layer, rng)
    ids = np.array([[3, 1, 5, 0, 0], [2, 2, 4, 1, 3], [5, 0, 0, 0, 0]], dtype=np.float64)
    dy = rng.normal(size=(3, 2))
    y, backward = model.forward(ids)
    np.testing.assert_allclose(model.call(ids), y)
    for w in model.weights:
        w.grad[...] = 0
    assert backward(dy) is None
    analytic = [w.grad.copy() for w in model.weights]
    for w, g in zip(model.weights, analytic):
        assert_grad(g, lambda: float(np.sum(model.forward(ids)[0] * dy)), w.value, w.path)


# --- masks, shapes, order: direct semantics ----------------------------------------------------------------
def test_masked_steps_carry_state_and_repeat_output(float64):
    rng = np.random.default_rng(11)
    x = sequences(rng)
    layer = LSTM(U, return_sequences=True)
    y = layer(x, mask=MASK)
    assert np.allclose(y[0, 3], y[0, 2]) and np.allclose(y[0, 4], y[0, 2])  # previous output repeated
    np.testing.assert_array_equal(y[2, 0], 0)                               # initial state (zeros)
    # a masked step leaves the state alone: masked trailing steps == the sequence cut short
    np.testing.assert_allclose(LSTM.call(layer, x[:1, :3]), y[:1, :3])
    last = LSTM(U)
    last._maybe_build(x.shape), last.set_weights(layer.get_weights())
    np.testing.assert_allclose(last(x, mask=MASK), y[:, -1])
    # zero_output_for_mask: masked steps output zeros, the state still carries
    zero = LSTM(U, return_sequences=True, zero_output_for_mask=True)
    zero._maybe_build(x.shape), zero.set_weights(layer.get_weights())
    yz = zero(x, mask=MASK)
    np.testing.assert_array_equal(yz[~MASK], 0)
    np.testing.assert_allclose(yz[MASK], y[MASK])


def test_go_backwards_is_reversed_input_and_reversed_output(float64):
    rng = np.random.default_rng(12)
    x = sequences(rng)
    fwd, bwd = GRU(U, return_sequences=True), GRU(U, return_sequences=True, go_backwards=True)
    fwd._maybe_build(x.shape), bwd._maybe_build(x.shape)
    bwd.set_weights(fwd.get_weights())
    np.testing.assert_allclose(bwd(x), fwd(x[:, ::-1]))  # output in processing order, as Keras


def test_return_state_values(float64):
    x = sequences(np.random.default_rng(13))
    layer = LSTM(U, return_sequences=True, return_state=True)
    seq, h, c = layer(x)
    assert seq.shape == (N, T, U) and h.shape == c.shape == (N, U)
    np.testing.assert_allclose(seq[:, -1], h)
    assert layer.compute_output_shape((None, T, IN)) == [(None, T, U), (None, U), (None, U)]
    assert layer.multiple_outputs


def test_float32_stays_float32():
    x = np.random.default_rng(14).normal(size=(N, T, IN)).astype(np.float32)
    for layer in (LSTM(U, return_sequences=True, dropout=0.2, recurrent_dropout=0.2, zero_output_for_mask=True),
                  GRU(U, reset_after=False), SimpleRNN(U), Bidirectional(GRU(U, return_sequences=True), "ave")):
        layer(x)
        y, backward = layer.forward(x, training=True, mask=MASK)
        assert y.dtype == np.float32 and backward(np.ones_like(y)).dtype == np.float32
        assert all(w.grad.dtype == np.float32 for w in layer.weights)


def test_keras1_argument_names(capsys):
    layer = LSTM(output_dim=3, inner_activation="hard_sigmoid", W_regularizer="l2", dropout_U=0.1)
    assert layer.units == 3 and layer.recurrent_activation.name == "hard_sigmoid"
    assert layer.kernel_regularizer is not None and layer.recurrent_dropout == 0.1
    assert "inner_activation" in capsys.readouterr().err


def test_bidirectional_structure():
    layer = Bidirectional(LSTM(4, return_sequences=True), merge_mode="concat")
    y = layer(np.zeros((2, 5, 3), np.float32))
    assert y.shape == (2, 5, 8)
    assert layer.compute_output_shape((None, 5, 3)) == (None, 5, 8)
    assert [w.path for w in layer.weights] == [
        f"forward_lstm/{n}" for n in ("kernel", "recurrent_kernel", "bias")] + [
        f"backward_lstm/{n}" for n in ("kernel", "recurrent_kernel", "bias")]
    assert layer.count_params() == 2 * 4 * 4 * (3 + 4 + 1)
    assert layer.backward_layer.go_backwards and not layer.forward_layer.go_backwards
    assert layer.compute_mask(None, MASK) is MASK
    with pytest.raises(ValueError, match="merge_mode"):
        Bidirectional(LSTM(4), merge_mode="max")
    with pytest.raises(ValueError, match="go_backwards"):
        Bidirectional(LSTM(4, go_backwards=True))
    with pytest.raises(ValueError, match="recurrent layer"):
        Bidirectional(Dense(3))


def test_configs_round_trip():
    layers = [LSTM(3, return_sequences=True, dropout=0.1, unit_forget_bias=False, kernel_regularizer="l2"),
              GRU(3, reset_after=False, go_backwards=True), SimpleRNN(3, activation="relu"),
              Bidirectional(GRU(3), merge_mode="sum"), Embedding(10, 4, mask_zero=True)]
    x = np.zeros((2, 4, 5), np.float32)
    for layer in layers:
        copy = deserialize("layers", serialize(layer), "layer")
        assert type(copy) is type(layer)
        cfg, cfg2 = layer.get_config(), copy.get_config()
        cfg.pop("name"), cfg2.pop("name")
        assert cfg == cfg2
        if not isinstance(layer, Embedding):
            layer(x), copy(x)
            copy.set_weights(layer.get_weights())
            np.testing.assert_allclose(copy(x + 1), layer(x + 1))


def test_errors_are_clear():
    with pytest.raises(ValueError, match="stateful=True is not supported"):
        LSTM(4, stateful=True)
    with pytest.raises(ValueError, match="3-D inputs"):
        LSTM(4)(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="positive integer"):
        GRU(0)
    with pytest.raises(ValueError, match="mask of shape"):
        LSTM(4)(np.zeros((2, 3, 1), np.float32), mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match=r"initial_state with 1"):
        LSTM(4)(np.zeros((2, 3, 1), np.float32), initial_state=[np.zeros((2, 4))])
    emb = Embedding(5, 2)
    with pytest.raises(ValueError, match=r"token id 5 at position \(1, 0\).*input_dim=5 allows ids 0 to 4"):
        emb(np.array([[1, 2], [5, 0]]))
    with pytest.raises(ValueError, match="token id -1"):
        emb(np.array([[1, -1]]))
    with pytest.raises(ValueError, match="non-integer"):
        emb(np.array([[1.5, 2.0]]))
    with pytest.raises(ValueError, match="positive integer"):
        Embedding(0, 3)


def test_embedding_mask_and_legacy_input_length(capsys):
    emb = Embedding(10, 4, mask_zero=True, input_length=3)
    assert "input_length" in capsys.readouterr().err
    ids = np.array([[3, 0, 0], [1, 2, 9]])
    np.testing.assert_array_equal(emb.compute_mask(ids), ids != 0)
    assert Embedding(10, 4).compute_mask(ids) is None
    assert emb(ids).shape == (2, 3, 4) and emb(ids).dtype == np.float32
    assert emb.compute_output_shape((None, 3)) == (None, 3, 4)


def test_dropout_is_fixed_per_sequence_and_off_at_inference():
    """A dropped input feature is dropped at every step: with all-equal steps, every step sees the same x."""
    layer = SimpleRNN(4, dropout=0.5, return_sequences=True, seed=3, activation="linear",
                      recurrent_initializer="zeros", use_bias=False)
    x = np.ones((8, 6, 5), np.float32)
    inference = layer(x)
    y = layer.forward(x, training=True)[0]
    np.testing.assert_allclose(y, np.broadcast_to(y[:, :1], y.shape), rtol=1e-6)  # same mask each step
    assert not np.allclose(y, inference)                                           # dropout did something
    np.testing.assert_allclose(inference, layer.forward(x, training=False)[0])     # inference: no dropout


# --- (b) PyTorch references ----------------------------------------------------------------------------------
def _torch():
    return pytest.importorskip("torch")


def _close(got, want, what):
    want = want.detach().numpy() if hasattr(want, "detach") else np.asarray(want)
    np.testing.assert_allclose(np.asarray(got), want, rtol=TOL32, atol=TOL32, err_msg=what)


def _torch_case(layer, torch_module, to_torch, from_torch_grads):
    """Same weights and inputs in both; compare outputs and the gradients of J = Σ y·dy."""
    torch = _torch()
    rng = np.random.default_rng(20)
    x = rng.normal(size=(3, 6, 4)).astype(np.float32)
    layer._maybe_build(x.shape)
    randomize(layer, rng)
    params = dict(torch_module.named_parameters())
    with torch.no_grad():
        for name, value in to_torch(layer).items():
            params[name].copy_(torch.from_numpy(np.ascontiguousarray(value)))
    out, backward = layer.forward(x)
    seq, *states = out
    dy = rng.normal(size=seq.shape).astype(np.float32)
    for w in layer.weights:
        w.grad[...] = 0
    dx = backward([dy] + [None] * len(states))

    xt = torch.from_numpy(x).requires_grad_(True)
    seq_t, states_t = torch_module(xt)
    (seq_t * torch.from_numpy(dy)).sum().backward()
    _close(seq, seq_t, "sequence output")
    states_t = states_t if isinstance(states_t, tuple) else (states_t,)
    for s, st in zip(states, states_t):
        _close(s, st[0], "final state")
    _close(dx, xt.grad, "dx")
    grads = from_torch_grads({name: p.grad.numpy() for name, p in torch_module.named_parameters()})
    for w in layer.weights:
        _close(w.grad, grads[w.name], f"d{w.name}")


@pytest.mark.reference
def test_lstm_matches_torch():
    torch = _torch()
    torch.manual_seed(0)
    u = 5
    # torch's gates i, f, g, o are Keras's i, f, c, o; torch's second bias (bias_hh) is set to zero
    _torch_case(LSTM(u, return_sequences=True, return_state=True), torch.nn.LSTM(4, u, batch_first=True),
                lambda l: {"weight_ih_l0": l.kernel.value.T, "weight_hh_l0": l.recurrent_kernel.value.T,
                           "bias_ih_l0": l.bias.value, "bias_hh_l0": np.zeros(4 * u, np.float32)},
                lambda g: {"kernel": g["weight_ih_l0"].T, "recurrent_kernel": g["weight_hh_l0"].T,
                           "bias": g["bias_ih_l0"]})


@pytest.mark.reference
def test_gru_reset_after_matches_torch():
    torch = _torch()
    torch.manual_seed(0)
    u = 5
    # Keras blocks z, r, h; torch's r, z, n. torch's n = tanh(W_in·x + b_in + r ⊙ (W_hn·h + b_hn)) is Keras's
    # reset_after=True candidate with bias[0] the input bias and bias[1] the recurrent bias.
    to_torch_order = np.r_[u:2 * u, 0:u, 2 * u:3 * u]   # torch column j = Keras column to_torch_order[j]
    to_keras_order = np.argsort(to_torch_order)
    _torch_case(GRU(u, return_sequences=True, return_state=True), torch.nn.GRU(4, u, batch_first=True),
                lambda l: {"weight_ih_l0": l.kernel.value[:, to_torch_order].T,
                           "weight_hh_l0": l.recurrent_kernel.value[:, to_torch_order].T,
                           "bias_ih_l0": l.bias.value[0, to_torch_order], "bias_hh_l0": l.bias.value[1, to_torch_order]},
                lambda g: {"kernel": g["weight_ih_l0"].T[:, to_keras_order],
                           "recurrent_kernel": g["weight_hh_l0"].T[:, to_keras_order],
                           "bias": np.stack([g["bias_ih_l0"][to_keras_order], g["bias_hh_l0"][to_keras_order]])})


@pytest.mark.reference
def test_simple_rnn_matches_torch():
    torch = _torch()
    torch.manual_seed(0)
    u = 5
    _torch_case(SimpleRNN(u, return_sequences=True, return_state=True),
                torch.nn.RNN(4, u, nonlinearity="tanh", batch_first=True),
                lambda l: {"weight_ih_l0": l.kernel.value.T, "weight_hh_l0": l.recurrent_kernel.value.T,
                           "bias_ih_l0": l.bias.value, "bias_hh_l0": np.zeros(u, np.float32)},
                lambda g: {"kernel": g["weight_ih_l0"].T, "recurrent_kernel": g["weight_hh_l0"].T,
                           "bias": g["bias_ih_l0"]})


# --- (c) the real Keras 3 -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keras():
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "numpy"  # before keras is imported: no JAX/TF needed
    return pytest.importorskip("keras")


def _keras_pair(keras, ours, theirs, x, mask=None, rng=None):
    rng = rng or np.random.default_rng(30)
    ours._maybe_build(x.shape)
    randomize(ours, rng)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    got = ours(x, mask=mask)
    want = theirs(x, mask=mask) if mask is not None else theirs(x)
    return got, want


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("make", [
    lambda k, **kw: (LSTM(4, **kw), k.layers.LSTM(4, **kw)),
    lambda k, **kw: (GRU(4, **kw), k.layers.GRU(4, **kw)),
    lambda k, **kw: (GRU(4, reset_after=False, **kw), k.layers.GRU(4, reset_after=False, **kw)),
    lambda k, **kw: (SimpleRNN(4, **kw), k.layers.SimpleRNN(4, **kw)),
], ids=["lstm", "gru", "gru_reset_before", "simple_rnn"])
def test_forward_matches_keras(keras, make, masked):
    x = np.random.default_rng(31).normal(size=(N, T, IN)).astype(np.float32)
    for kw in ({}, {"return_sequences": True}, {"return_sequences": True, "go_backwards": True}):
        ours, theirs = make(keras, **kw)
        got, want = _keras_pair(keras, ours, theirs, x, MASK if masked else None)
        np.testing.assert_allclose(got, np.asarray(want), rtol=TOL32, atol=TOL32, err_msg=str(kw))


@pytest.mark.parametrize("merge_mode", ["concat", "mul"])
def test_bidirectional_matches_keras(keras, merge_mode):
    x = np.random.default_rng(32).normal(size=(N, T, IN)).astype(np.float32)
    for rs in (False, True):
        ours = Bidirectional(LSTM(4, return_sequences=rs), merge_mode=merge_mode)
        theirs = keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=rs), merge_mode=merge_mode)
        got, want = _keras_pair(keras, ours, theirs, x, MASK)
        np.testing.assert_allclose(got, np.asarray(want), rtol=TOL32, atol=TOL32)


@pytest.mark.parametrize("return_sequences", [False, True])
def test_masked_embedding_lstm_matches_keras(keras, return_sequences):
    ids = np.array([[4, 2, 7, 0, 0, 0], [1, 1, 3, 5, 6, 2], [9, 0, 0, 0, 0, 0], [0, 0, 3, 4, 0, 0]])
    ours = Sequential([Input((6,)), Embedding(10, 3, mask_zero=True), LSTM(4, return_sequences=return_sequences)])
    theirs = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(10, 3, mask_zero=True),
                               keras.layers.LSTM(4, return_sequences=return_sequences)])
    rng = np.random.default_rng(33)
    for layer in ours.layers:
        randomize(layer, rng)
    theirs.set_weights(ours.get_weights())
    want = np.asarray(theirs(ids))
    np.testing.assert_allclose(ours.predict(ids, verbose=0), want, rtol=TOL32, atol=TOL32)
    np.testing.assert_allclose(ours.forward(ids.astype(np.float32))[0], want, rtol=TOL32, atol=TOL32)


def test_keras_weight_layout_and_counts(keras):
    for ours, theirs in ((LSTM(5), keras.layers.LSTM(5)), (GRU(5), keras.layers.GRU(5)),
                         (GRU(5, reset_after=False), keras.layers.GRU(5, reset_after=False)),
                         (SimpleRNN(5), keras.layers.SimpleRNN(5)), (Embedding(7, 5), keras.layers.Embedding(7, 5))):
        shape = (None, 4) if isinstance(ours, Embedding) else (None, 4, 3)
        ours._maybe_build(shape)
        theirs.build(shape)
        assert [w.shape for w in ours.weights] == [tuple(w.shape) for w in theirs.weights]
        assert [w.name for w in ours.weights] == [w.name for w in theirs.weights]
        assert ours.count_params() == theirs.count_params()


# --- (d) Keras's initial values --------------------------------------------------------------------------------
def test_initializers_match_keras_defaults():
    u, d = 6, 3
    lstm = LSTM(u)
    lstm.build((None, 4, d))
    b = lstm.bias.value
    np.testing.assert_array_equal(b[u:2 * u], 1)           # unit_forget_bias: the forget slice is ones
    np.testing.assert_array_equal(np.delete(b, np.s_[u:2 * u]), 0)
    R = lstm.recurrent_kernel.value                         # orthogonal (u, 4u): orthonormal rows
    np.testing.assert_allclose(R @ R.T, np.eye(u), atol=1e-5)
    limit = np.sqrt(6 / (d + 4 * u))                        # glorot_uniform kernel
    assert np.abs(lstm.kernel.value).max() <= limit
    no_forget = LSTM(u, unit_forget_bias=False)
    no_forget.build((None, 4, d))
    np.testing.assert_array_equal(no_forget.bias.value, 0)
    gru = GRU(u)
    gru.build((None, 4, d))
    assert gru.bias.shape == (2, 3 * u) and not gru.bias.value.any()
    Rg = gru.recurrent_kernel.value
    np.testing.assert_allclose(Rg @ Rg.T, np.eye(u), atol=1e-5)
    emb = Embedding(1000, 8)
    emb.build((None, 5))
    E = emb.embeddings.value
    assert E.dtype == np.float32 and np.abs(E).max() <= 0.05 and np.abs(E).max() > 0.045  # U(-0.05, 0.05)


# --- (e) training and summary ------------------------------------------------------------------------------------
def test_embedding_lstm_dense_trains():
    """Toy task: does token 3 occur in a zero-padded sequence? The loss falls as the model learns it."""
    rng = np.random.default_rng(40)
    n, t = 256, 8
    lengths = rng.integers(2, t + 1, size=n)
    ids = rng.integers(1, 10, size=(n, t)) * (np.arange(t) < lengths[:, None])
    y = (ids == 3).any(axis=1).astype(np.float32)
    model = Sequential([Input((t,)), Embedding(10, 8, mask_zero=True), LSTM(8), Dense(1, activation="sigmoid")])
    model.compile(optimizer=glassnet.optimizers.Adam(learning_rate=0.02), loss="binary_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(ids, y, epochs=12, batch_size=32, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0], losses
    assert history.history["accuracy"][-1] > 0.8
    # the padded tail does not change the prediction: masking works in predict too
    longer = np.concatenate([ids, np.zeros((n, 3), ids.dtype)], axis=1)
    model2 = Sequential([Input((t + 3,)), Embedding(10, 8, mask_zero=True), LSTM(8), Dense(1, activation="sigmoid")])
    model2.set_weights(model.get_weights())
    np.testing.assert_allclose(model2.predict(longer, verbose=0), model.predict(ids, verbose=0), rtol=1e-5, atol=1e-6)


def test_summary_counts_match_keras():
    """keras-semantics.md §3: Embedding(100, 16) on 20 steps → LSTM(32) → Dense(1): 1,600 + 6,272 + 33."""
    model = Sequential([Input((20,)), Embedding(100, 16), LSTM(32), Dense(1, activation="sigmoid")])
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert [layer.count_params() for layer in model.layers] == [1600, 4 * 32 * (16 + 32 + 1), 33]
    assert "(None, 20, 16)" in text and "1,600" in text and "6,272" in text
    assert "Total params: 7,905 (30.88 KB)" in text
    assert [w.shape for w in model.layers[1].weights] == [(16, 128), (32, 128), (128,)]
