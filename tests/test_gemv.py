"""engine.gemv: one row through large dense layers on two cores, against the NumPy path and float64 math."""
import os
import threading
import time

import numpy as np
import pytest

import glassnet
from glassnet import activations
from glassnet.engine import compiled, gemv, parallel
from glassnet.layers import Dense, Dropout

from fork_util import run_in_fork

needs_two_cores = pytest.mark.skipif(
    not (compiled.available() and gemv._load() and (parallel.blas_threads() or 0) >= 2 and parallel._cores() >= 2),
    reason="needs numba, Linux on x86-64, threadpoolctl and two cores with BLAS allowed two threads")
pytestmark = needs_two_cores

WIDE = (256, 512, 512, 10)  # 1.5 MiB of float32 kernels: above gemv.MIN_BYTES


def mlp(sizes=WIDE, hidden="relu", head="softmax", dtype="float32", use_bias=True, dropout=False, seed=1):
    glassnet.set_random_seed(seed)
    layers = [glassnet.Input((sizes[0],), dtype=dtype)]
    for n in sizes[1:-1]:
        layers.append(Dense(n, activation=hidden, use_bias=use_bias, dtype=dtype,
                            bias_initializer="random_normal"))
        if dropout:
            layers.append(Dropout(0.5))
    layers.append(Dense(sizes[-1], activation=head, use_bias=use_bias, dtype=dtype, bias_initializer="random_normal"))
    return glassnet.Sequential(layers)


def row(n, dtype="float32", seed=2):
    return np.random.default_rng(seed).standard_normal((1, n)).astype(dtype)


def float64_forward(model, x):
    """The model's math in float64 NumPy, layer by layer (Dropout: the identity)."""
    h = x.astype(np.float64)
    for layer in model.layers:
        if not isinstance(layer, Dense):
            continue
        h = h @ layer.kernel.value.astype(np.float64)
        if layer.use_bias:
            h = h + layer.bias.value.astype(np.float64)
        h = layer.activation(h)
    return h


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    """These tests count chains and helper blocks: a busy machine must not make calls back off to the NumPy
    path meanwhile (test_backs_off_when_the_helper_gets_no_core tests that)."""
    monkeypatch.setattr(gemv, "MISSES", 10 ** 9)
    monkeypatch.setattr(gemv, "_resume_at", 0.0)


@pytest.fixture
def runs(monkeypatch):
    """Counts the chains run (calls of the compiled ``run``)."""
    count = {"n": 0}
    real = gemv._k.run

    def counting(*args):
        count["n"] += 1
        return real(*args)
    monkeypatch.setattr(gemv._k, "run", counting)
    return count


def helper_claimed(layer=0):
    """True when the last chain's ``layer`` was computed with the helper (its second block claimed by it)."""
    k = gemv._k
    return k.get(gemv._state, k.CLAIM(layer)) == 4 * gemv._seq + 1


def predict_until_helped(model, x, seconds=5.0):
    """Predict until the helper took part — it may be asleep at first, or without a core for a while: after a
    GEMM OpenBLAS's threads spin on the cores for ~0.1 s — and return that prediction."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        y = model.predict(x, verbose=0)
        if helper_claimed():
            return y
    pytest.fail("the helper thread never took part in a chain")


@pytest.mark.parametrize("dtype, rtol", [("float32", 2e-5), ("float64", 1e-12)])
def test_mlp_row_equals_numpy_path_and_float64_math(dtype, rtol, runs):
    model = mlp(dtype=dtype)
    x = row(WIDE[0], dtype)
    y = predict_until_helped(model, x)
    assert runs["n"] >= 1 and y.dtype == np.dtype(dtype) and y.shape == (1, 10)
    assert model._row_spans == ((0, 3),)
    with gemv.use_row_split(False):
        reference = model.predict(x, verbose=0)
    np.testing.assert_allclose(y, reference, rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_allclose(y, float64_forward(model, x), rtol=rtol, atol=rtol * 1e-2)
    assert abs(float(y.sum()) - 1) < 10 * np.finfo(dtype).eps  # softmax rows sum to one


def test_same_bits_whoever_computes_the_second_blocks():
    """The helper's blocks and the calling thread's (when it claims them first) add up identically."""
    model = mlp()
    x = row(WIDE[0])
    helped = predict_until_helped(model, x)
    layers = [(d.kernel.value, d.bias.value, d.activation) for d in model.layers]
    k = gemv._k
    alone = np.zeros(k.STATE_SIZE, np.int64)  # a state no helper reads: the calling thread claims every block
    flags = (k.RELU | k.BIAS, k.RELU | k.BIAS, k.SOFTMAX | k.BIAS)
    splits = tuple(int(W.shape[0] * gemv.MAIN_SHARE + 4) // 8 * 8 if W.size >= gemv.MIN_SPLIT_VALUES
                   else W.shape[0] for W, _, _ in layers)
    assert splits[0] < WIDE[0] and splits[2] == WIDE[2]  # the first layers split, the 512x10 head does not
    y = k.run(alone, 1, x.reshape(-1), tuple(W for W, _, _ in layers), tuple(b for _, b, _ in layers), flags, splits)
    np.testing.assert_array_equal(y, helped)
    assert k.get(alone, k.CLAIM(0)) == 4 + 2 and k.get(alone, k.CLAIM(2)) == 4 + 3  # main's, main's whole


@pytest.mark.parametrize("head", ["sigmoid", "tanh", "linear", "relu", None])
@pytest.mark.parametrize("use_bias", [True, False])
def test_heads_and_no_bias(head, use_bias, runs):
    model = mlp(head=head, use_bias=use_bias)
    x = row(WIDE[0])
    y = model.predict(x, verbose=0)
    assert runs["n"] == 1
    np.testing.assert_allclose(y, float64_forward(model, x), rtol=2e-5, atol=1e-6)
    with gemv.use_row_split(False):
        np.testing.assert_allclose(y, model.predict(x, verbose=0), rtol=2e-5, atol=1e-6)


def test_linear_hidden_layers_and_dropout_between(runs):
    model = mlp(hidden=None, dropout=True)
    assert model._find_row_spans() == ((0, 5),)  # Dense, Dropout, Dense, Dropout, Dense: one chain
    x = row(WIDE[0])
    y = model.predict(x, verbose=0)
    assert runs["n"] == 1
    np.testing.assert_allclose(y, float64_forward(model, x), rtol=2e-5, atol=1e-7)


def test_other_activation_ends_a_chain(runs):
    glassnet.set_random_seed(3)
    model = glassnet.Sequential([glassnet.Input((512,)), Dense(512, activation="tanh"), Dense(512, activation="relu"),
                                 glassnet.layers.BatchNormalization(), Dense(512, activation="relu"), Dense(4)])
    # tanh ends the first run (1 MiB: a chain of its own); the second (1 MiB) stops before BatchNormalization
    assert model._find_row_spans() == ((0, 1), (1, 2), (3, 5))
    x = row(512)
    y = model.predict(x, verbose=0)
    assert runs["n"] == 3
    with gemv.use_row_split(False):
        np.testing.assert_allclose(y, model.predict(x, verbose=0), rtol=2e-5, atol=1e-6)


def test_small_models_do_not_use_it(runs):
    tutorial = glassnet.Sequential([glassnet.Input((8,)), Dense(12, activation="relu"), Dense(1, activation="sigmoid")])
    half_mib = mlp(sizes=(256, 256, 256, 10))  # 0.5 MiB: measured no faster on two cores
    assert tutorial._find_row_spans() == () and half_mib._find_row_spans() == ()
    tutorial.predict(row(8), verbose=0)
    half_mib.predict(row(256), verbose=0)
    assert runs["n"] == 0


def test_batches_do_not_use_it(runs):
    model = mlp()
    x = np.random.default_rng(0).standard_normal((2, WIDE[0])).astype("float32")
    model.predict(x, verbose=0)
    model.predict_on_batch(x)
    assert runs["n"] == 0


def test_functional_dense_layer_alone(runs):
    inputs = glassnet.Input((512,))
    hidden = Dense(1024, activation="relu")(inputs)  # 2 MiB: the layer's own chain of one
    outputs = Dense(3, activation="softmax")(hidden)
    model = glassnet.Model(inputs, outputs)
    x = row(512)
    y = model.predict(x, verbose=0)
    assert runs["n"] == 1
    with gemv.use_row_split(False):
        np.testing.assert_allclose(y, model.predict(x, verbose=0), rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("how", ["set_enabled", "use_compiled", "one_blas_thread", "strict_errstate",
                                 "strided_input"])
def test_off_when_switched_off_or_limited(how, runs, monkeypatch):
    from threadpoolctl import threadpool_limits
    model = mlp()
    x = row(WIDE[0])
    with gemv.use_row_split(False):
        reference = model.predict(x, verbose=0)
    if how == "set_enabled":
        monkeypatch.setattr(gemv._switch, "on", False)
        y = model.predict(x, verbose=0)
    elif how == "use_compiled":
        with compiled.use_compiled(False):
            y = model.predict(x, verbose=0)
    elif how == "one_blas_thread":  # the user's thread limit: no second thread
        with threadpool_limits(1, user_api="blas"):
            y = model.predict(x, verbose=0)
    elif how == "strict_errstate":
        with np.errstate(all="raise"):
            y = model.predict(x, verbose=0)
    else:  # a row that is not C-contiguous (every other value of a wider one)
        strided = np.repeat(x, 2, axis=1)[:, ::2]
        assert not strided.flags.c_contiguous
        y = model.call(strided)
    # (a strided row skips the model's chain; the first layer's output is a fresh row, and the 1 MiB second
    # layer then runs as a chain of its own, Dense.call's)
    assert runs["n"] == (1 if how == "strided_input" else 0)
    np.testing.assert_allclose(y, reference, rtol=1e-6, atol=1e-9)


def test_env_switch_in_a_fresh_process():
    import subprocess
    import sys
    code = ("from glassnet.engine import gemv; print(gemv.enabled())")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "GLASSNET_ROW_SPLIT": "0"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_concurrent_calls_from_threads(runs):
    """One call at a time uses the helper; the others take the NumPy path. Every answer is right."""
    model = mlp()
    xs = [row(WIDE[0], seed=s) for s in range(4)]
    with gemv.use_row_split(False):
        expected = [model.predict(x, verbose=0) for x in xs]
    errors = []

    def work(i):
        for _ in range(60):
            y = model.predict(xs[i], verbose=0)
            if not np.allclose(y, expected[i], rtol=2e-5, atol=1e-7):
                errors.append(i)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads) and not errors
    assert 0 < runs["n"] <= 240  # some calls went through the chain, one at a time (the lock; others: NumPy)


def test_helper_asleep_between_calls():
    """After a pause longer than its spin the helper is asleep when a call comes: the call computes both blocks,
    wakes it, and the next calls find it awake. The answers stay exact, bit for bit (the sums are the same
    whoever computes them)."""
    model = mlp()
    x = row(WIDE[0])
    first = predict_until_helped(model, x)
    helped = alone = 0
    end = time.perf_counter() + 20  # (stops as soon as both were seen: the time only matters on a busy host)
    for i in range(100000):
        if i % 10 == 0:
            time.sleep(gemv.SPIN_US * 20e-6)  # 20x its spin: asleep
        assert np.array_equal(model.predict(x, verbose=0), first)
        if helper_claimed():
            helped += 1
        else:
            alone += 1
        if (i >= 100 and helped and alone) or time.perf_counter() > end:
            break
    assert helped and alone


def test_stop_and_restart():
    model = mlp()
    x = row(WIDE[0])
    y = model.predict(x, verbose=0)
    thread = gemv._thread
    assert thread is not None and thread.is_alive() and thread.daemon and thread.name == "glassnet-gemv"
    gemv.stop()
    assert not thread.is_alive() and gemv._thread is None
    np.testing.assert_array_equal(predict_until_helped(model, x), y)
    assert gemv._thread.is_alive()


def _predict_in_child():
    model = mlp()
    y = predict_until_helped(model, row(WIDE[0]))  # only a helper thread of the child's own can take part
    return y, gemv._thread is not None and gemv._thread.is_alive()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_starts_its_own_helper():
    model = mlp()
    y = predict_until_helped(model, row(WIDE[0]))  # the parent's helper runs
    y_child, started = run_in_fork(_predict_in_child)
    assert started is True
    np.testing.assert_array_equal(y_child, y)
    assert helper_claimed() or predict_until_helped(model, row(WIDE[0])) is not None  # the parent's still helps


def test_weights_read_at_each_call(runs):
    """No copy of the kernels is kept: set_weights (or training) shows at the next call."""
    model = mlp()
    x = row(WIDE[0])
    before = model.predict(x, verbose=0)
    weights = model.get_weights()
    model.set_weights([w * 0.5 for w in weights])
    after = model.predict(x, verbose=0)
    assert not np.allclose(after, before) and runs["n"] == 2
    np.testing.assert_allclose(after, float64_forward(model, x), rtol=2e-5, atol=1e-7)


def test_nan_in_weights_spreads_as_in_numpy(runs):
    model = mlp(head=None)
    model.layers[1].kernel.value[3, 7] = np.nan  # one hidden unit's input weight
    x = row(WIDE[0])
    y = model.predict(x, verbose=0)
    assert runs["n"] == 1
    with gemv.use_row_split(False):
        reference = model.predict(x, verbose=0)
    assert np.array_equal(np.isnan(y), np.isnan(reference)) and np.isnan(y).any()
    np.testing.assert_allclose(y[~np.isnan(y)], reference[~np.isnan(reference)], rtol=2e-5, atol=1e-6)


def test_row_spans_follow_the_layers():
    model = mlp()
    assert model._find_row_spans() == ((0, 3),)
    model.pop()
    assert model._row_spans is None and model._find_row_spans() == ((0, 2),)  # 1.5 MiB left, relu last
    model.add(Dense(10, activation="softmax"))
    assert model._find_row_spans() == ((0, 3),)


def test_activation_changed_after_the_spans_were_found(runs):
    model = mlp()
    x = row(WIDE[0])
    model.predict(x, verbose=0)
    assert runs["n"] == 1
    model.layers[0].activation = activations.get("tanh")  # not allowed inside a chain: that span runs as usual,
    y = model.predict(x, verbose=0)                        # layer by layer (its 1 MiB second layer: a chain of one)
    assert runs["n"] == 2
    np.testing.assert_allclose(y, float64_forward(model, x), rtol=2e-5, atol=1e-7)


def test_a_list_given_to_call():
    model = mlp()
    x = row(WIDE[0])
    np.testing.assert_allclose(model.call(x.tolist()), model.predict(x, verbose=0), rtol=2e-5, atol=1e-7)


def test_status_says_why_not(monkeypatch):
    assert gemv.status() == "1-row dense products on 2 cores"
    monkeypatch.setattr(gemv, "_cores", 1)
    assert gemv.status() == "row split off (one core)"
    assert not gemv.usable(row(WIDE[0]), mlp().layers[0].kernel.value)
    monkeypatch.setattr(gemv, "_cores", None)
    monkeypatch.setattr(parallel, "_blas_controllers", lambda: False)
    assert gemv.status() == "row split off (needs threadpoolctl and a BLAS it knows, to read the thread limit)"
    monkeypatch.setattr(compiled._switch, "on", False)
    assert gemv.status() == "row split off (compiled kernels off)"
    monkeypatch.setattr(gemv._switch, "on", False)
    assert gemv.status() == "row split off (GLASSNET_ROW_SPLIT=0)"


def test_read_only_rows_and_weights(runs):
    """numba types read-only arrays apart: a read-only row is copied (one row), read-only weights take the
    NumPy path; neither may fail."""
    model = mlp()
    x = row(WIDE[0])
    with gemv.use_row_split(False):
        reference = model.predict(x, verbose=0)
    x.setflags(write=False)
    np.testing.assert_allclose(model.predict(x, verbose=0), reference, rtol=2e-5, atol=1e-7)
    assert runs["n"] == 1
    W = model.layers[1].kernel.value
    frozen = W.copy()
    frozen.setflags(write=False)
    layers = [(d.kernel.value, d.bias.value, d.activation) for d in model.layers]
    layers[1] = (frozen, layers[1][1], layers[1][2])
    assert gemv.chain(x, layers) is None and runs["n"] == 1


def test_backs_off_when_the_helper_gets_no_core(monkeypatch, runs):
    """A helper that is awake but takes no block (no core for it) sends 1-row calls to the NumPy path for a
    while, then they try again; the pause doubles while retries miss, and resets once the helper takes part."""
    model = mlp()
    x = row(WIDE[0])
    model.predict(x, verbose=0)  # (the real helper started)
    monkeypatch.setattr(gemv, "MISSES", 4)
    monkeypatch.setattr(gemv, "BACKOFF_S", (0.05, 0.2))
    monkeypatch.setattr(gemv, "_backoff", 0.05)
    monkeypatch.setattr(gemv, "_misses", 0)
    # a state no helper reads, marked awake: every block is the calling thread's, as with a helper starved of a core
    monkeypatch.setattr(gemv, "_state", np.zeros(gemv._k.STATE_SIZE, np.int64))
    with gemv.use_row_split(False):
        reference = model.predict(x, verbose=0)
    n = runs["n"]
    for _ in range(10):
        np.testing.assert_allclose(model.predict(x, verbose=0), reference, rtol=2e-5, atol=1e-7)
    assert runs["n"] - n == 4  # four misses, then the NumPy path
    assert gemv._backoff == 0.1 and gemv._resume_at > time.perf_counter()
    time.sleep(0.06)
    n = runs["n"]
    for _ in range(10):
        model.predict(x, verbose=0)
    assert runs["n"] - n == 4 and gemv._backoff == 0.2  # retried, missed again: a longer pause
    monkeypatch.undo()
    monkeypatch.setattr(gemv, "MISSES", 10 ** 9)  # (undo() removed the fixture's too: a busy machine must not
    gemv._resume_at, gemv._misses = 0.0, 0       # make the wait below back off)
    predict_until_helped(model, x)  # a helper that takes part resets the pause
    assert gemv._backoff == gemv.BACKOFF_S[0] and gemv._misses == 0


def test_numba_disable_jit_turns_it_off_cleanly():
    import subprocess
    import sys
    code = ("import numpy as np, glassnet; from glassnet.layers import Dense; from glassnet.engine import gemv; "
            "m = glassnet.Sequential([glassnet.Input((512,)), Dense(512, activation='relu'), Dense(3)]); "
            "print(m.predict(np.ones((1, 512), 'float32'), verbose=0).shape, gemv.status())")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "NUMBA_DISABLE_JIT": "1"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(1, 3) row split off (numba lacks what it needs here)"


def test_a_helper_that_cannot_start(monkeypatch, runs):
    """No thread to be had: the call takes the NumPy path, and a later call tries again."""
    gemv.stop()
    model = mlp()
    x = row(WIDE[0])
    with gemv.use_row_split(False):
        reference = model.predict(x, verbose=0)

    def refuse(self):
        raise RuntimeError("can't start new thread")
    monkeypatch.setattr(threading.Thread, "start", refuse)
    np.testing.assert_array_equal(model.predict(x, verbose=0), reference)
    assert runs["n"] == 0 and gemv._thread is None
    monkeypatch.undo()
    monkeypatch.setattr(gemv, "MISSES", 10 ** 9)
    np.testing.assert_allclose(predict_until_helped(model, x), reference, rtol=2e-5, atol=1e-7)
