"""Batch splitting (glassnet.engine.parallel): a training step's convolutional front as two half-batches
on two threads must equal the unsplit step (up to the rounding of dW summed in two halves), leave no
trace after the step (plain Weights, BLAS's thread count), and split only when it should."""
import os
import threading
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import glassnet
from glassnet.activations import Activation as ActivationFn
from glassnet.engine import backend, parallel
from glassnet.engine.weight import ShardedWeight, Weight
from glassnet.layers import (GRU, Activation, BatchNormalization, Concatenate, Conv1D, Conv2D, Dense, Dropout, Flatten,
                             GlobalAveragePooling2D, MaxPooling1D, MaxPooling2D)


@pytest.fixture
def can_split(monkeypatch):
    """Split whenever enabled and the batch is large enough, whatever this machine's cores and BLAS say and
    however little work the (small, fast) test models hold."""
    monkeypatch.setattr(parallel, "worthwhile", lambda batch: parallel.enabled() and batch >= parallel.MIN_BATCH)
    monkeypatch.setattr(parallel, "MIN_WORK", 0)


@pytest.fixture
def float64():
    backend.set_floatx("float64")
    yield
    backend.set_floatx("float32")


@pytest.fixture
def halves(monkeypatch):
    """Counts run_halves calls (two per split step: forward and backward) and the threads they ran on."""
    calls = {"n": 0, "threads": set()}
    original = parallel.run_halves

    def counting(fn, first, second):
        calls["n"] += 1

        def noting(*args):
            calls["threads"].add(threading.get_ident())
            return fn(*args)

        return original(noting, first, second)

    monkeypatch.setattr(parallel, "run_halves", counting)
    return calls


def convnet(dropout=False, frozen_first=False, activation_layer=False):
    layers = [glassnet.Input((12, 12, 2))]
    if activation_layer:
        layers += [Conv2D(6, 3), Activation("tanh")]
    else:
        layers += [Conv2D(6, 3, activation="relu"), MaxPooling2D(2)]
    layers += [Conv2D(8, 3, activation="relu", padding="same"), Flatten()]
    if dropout:
        layers.append(Dropout(0.3))
    layers.append(Dense(5, activation="softmax"))
    model = glassnet.Sequential(layers)
    if frozen_first:
        model.layers[0].trainable = False
    return model


def data(n=150, shape=(12, 12, 2), classes=5, dtype=None):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n,) + shape).astype(dtype or backend.floatx())
    return x, rng.integers(0, classes, n)


def sgd_model(build, seed):
    """``build()`` with the random seed set first, compiled with plain SGD and sparse crossentropy."""
    glassnet.set_random_seed(seed)
    model = build()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model


def train(build, split, x, y, epochs=2, batch_size=64, optimizer="adam", **kwargs):
    glassnet.set_random_seed(7)
    model = build(**kwargs)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    with parallel.use_batch_split(split):
        history = model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    return model, history.history


def max_diff(a, b):
    return max(float(np.max(np.abs(u.value - v.value))) for u, v in zip(a.weights, b.weights))


@pytest.mark.parametrize("kwargs", [{}, {"dropout": True}, {"frozen_first": True}, {"activation_layer": True}])
def test_split_training_equals_unsplit_float64(can_split, float64, halves, kwargs):
    x, y = data()
    plain, h_plain = train(convnet, False, x, y, **kwargs)
    assert halves["n"] == 0
    split, h_split = train(convnet, True, x, y, **kwargs)
    # 150 rows in batches of 64: two split steps (forward + backward each) and a last batch of 22 < MIN_BATCH
    assert halves["n"] == 2 * 2 * 2
    assert len(halves["threads"]) == 2  # both halves ran, on two threads
    assert max_diff(plain, split) < 1e-12
    np.testing.assert_allclose(h_split["loss"], h_plain["loss"], rtol=1e-12)
    assert h_split["accuracy"] == h_plain["accuracy"]


def test_split_training_float32_w3_shape(can_split, halves):
    """The benchmark's convnet (conv-relu-pool twice, relu after pool), float32, SGD with momentum."""
    def build():
        return glassnet.Sequential([glassnet.Input((28, 28, 1)), Conv2D(32, 3, activation="relu"), MaxPooling2D(2),
                                    Conv2D(64, 3, activation="relu"), MaxPooling2D(2), Flatten(),
                                    Dense(10, activation="softmax")])
    x, y = data(256, (28, 28, 1), 10, "float32")
    x = np.abs(x)
    plain, _ = train(build, False, x, y, epochs=1, batch_size=128, optimizer="sgd")
    split, _ = train(build, True, x, y, epochs=1, batch_size=128, optimizer="sgd")
    assert halves["n"] == 4
    assert max_diff(plain, split) < 1e-6


def test_split_with_lazy_zeroing_everywhere(can_split, float64, monkeypatch, halves):
    # every model's Dense/Conv gradients are zeroed lazily (the twins' too); this small convnet checks it
    x, y = data()
    plain, _ = train(convnet, False, x, y)
    split, _ = train(convnet, True, x, y)
    assert halves["n"] == 8
    assert max_diff(plain, split) < 1e-12


def test_split_conv1d(can_split, float64, halves):
    def build():
        return glassnet.Sequential([glassnet.Input((40, 3)), Conv1D(16, 5, activation="relu"), MaxPooling1D(2),
                                    Flatten(), Dense(2, activation="softmax")])
    x, y = data(100, (40, 3), classes=2)
    plain, _ = train(build, False, x, y, batch_size=50)
    split, _ = train(build, True, x, y, batch_size=50)
    assert halves["n"] == 2 * 2 * 2
    assert max_diff(plain, split) < 1e-12


def test_split_forward_backward_with_input_gradient(can_split, float64):
    """The split backward also returns dx (fit asks for none; explanations will): equal to the unsplit one."""
    glassnet.set_random_seed(1)
    model = convnet()
    model.compile(optimizer="sgd", loss="mse")
    x, _ = data(64)
    dy = np.random.default_rng(0).normal(size=(64, 5))
    results = []
    for split in (False, True):
        with parallel.use_batch_split(split), parallel.session(model, len(x)) as splitting:
            assert splitting is split
            for w in model.trainable_weights:
                w.grad[...] = 0
            y, backward = model.forward(x, training=True)
            dx = backward(dy)
            results.append((y, dx, [w.grad.copy() for w in model.trainable_weights]))
    (y0, dx0, g0), (y1, dx1, g1) = results
    np.testing.assert_allclose(y1, y0, rtol=1e-13)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-12, atol=1e-14)
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_which_models_split():
    assert convnet()._splits_batches() == 3  # conv, pool, conv; Flatten is not a batch_parallel layer
    assert convnet(activation_layer=True)._splits_batches() == 3
    mlp = glassnet.Sequential([glassnet.Input((8,)), Dense(4, activation="relu"), Dense(1)])
    assert mlp._splits_batches() == 0  # no convolution: splitting measured slower for dense layers (W2)
    bn_first = glassnet.Sequential([glassnet.Input((8, 8, 1)), BatchNormalization(), Conv2D(2, 3)])
    assert bn_first._splits_batches() == 0  # batch statistics need the whole batch
    penalised = glassnet.Sequential([glassnet.Input((8, 8, 1)), Conv2D(2, 3, activity_regularizer="l2"), Flatten()])
    assert penalised._splits_batches() == 0  # the activity penalty is recorded on the layer
    frozen = glassnet.Sequential([glassnet.Input((8, 8, 1)), Conv2D(2, 3), MaxPooling2D(2), Flatten(), Dense(2)])
    frozen.layers[0].trainable = False
    assert frozen._splits_batches() == 0  # nothing trainable in the front
    inputs = glassnet.Input((8, 8, 1))
    functional = glassnet.Model(inputs, Flatten()(Conv2D(2, 3)(inputs)))
    assert functional._splits_batches() == 1  # functional models split a chain of calls too (tests below)


def test_front_must_hold_nearly_all_the_work():
    """BLAS runs on one thread per half for the whole epoch, so heavy layers after the front would run on one
    core: a model splits only when the layers after the front hold at most 1/MAX_REST_SHARE of its work, and
    only for batches holding at least MIN_WORK multiply-adds in the front."""
    w3 = glassnet.Sequential([glassnet.Input((28, 28, 1)), Conv2D(32, 3, activation="relu"), MaxPooling2D(2),
                              Conv2D(64, 3, activation="relu"), MaxPooling2D(2), Flatten(),
                              Dense(10, activation="softmax")])
    assert w3._splits_batches() == 4
    front, work = w3._split_front
    conv1 = 26 * 26 * 32 * (3 * 3 * 1 + 1)
    conv2 = 11 * 11 * 64 * (3 * 3 * 32 + 1)
    assert work == conv1 + 13 * 13 * 32 + conv2 + 5 * 5 * 64  # the pools count one per output element
    assert w3._splits_batches(128) == 4 and w3._splits_batches(2) == 0  # 2 x work < MIN_WORK
    # Conv -> BatchNormalization -> relu -> pool -> Conv ...: the front is the first conv alone, the second
    # conv (after BatchNormalization) holds most of the work: no split (measured 10-15% slower split)
    bn = glassnet.Sequential([glassnet.Input((28, 28, 1)), Conv2D(32, 3), BatchNormalization(), Activation("relu"),
                              MaxPooling2D(2), Conv2D(64, 3), BatchNormalization(), Activation("relu"),
                              MaxPooling2D(2), Flatten(), Dense(10, activation="softmax")])
    assert bn._splits_batches() == 0
    # a tiny conv before a large dense layer: most of the work is after the front
    wide = glassnet.Sequential([glassnet.Input((28, 28, 1)), Conv2D(2, 3, activation="relu"), Flatten(),
                                Dense(256, activation="relu"), Dense(10)])
    assert wide._splits_batches() == 0


def test_session_respects_limits_and_restores_blas(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_WORK", 0)  # the small test model holds little work
    blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    if not blas or parallel._cores() < 2:
        pytest.skip("needs a BLAS threadpoolctl can control and two cores")
    model = convnet()
    threads = parallel.blas_threads()
    if threads < 2:
        pytest.skip("BLAS is limited to one thread here")
    with parallel.session(model, 64) as splitting:
        assert splitting and parallel.active()
        assert parallel.blas_threads() == 1  # one BLAS thread per half-batch
        seen = []
        t = threading.Thread(target=lambda: seen.append(parallel.active()))
        t.start()
        t.join()
        assert seen == [False]  # only the thread that entered the session splits
    assert not parallel.active() and parallel.blas_threads() == threads
    with threadpool_limits(1, "blas"), parallel.session(model, 64) as splitting:
        assert not splitting  # the user's limit: one thread, so no splitting
    with parallel.session(model, parallel.MIN_BATCH - 1) as splitting:
        assert not splitting
    with parallel.use_batch_split(False), parallel.session(model, 64) as splitting:
        assert not splitting
    mlp = glassnet.Sequential([glassnet.Input((8,)), Dense(4)])
    with parallel.session(mlp, 64) as splitting:
        assert not splitting
    monkeypatch.setattr(parallel, "_blas_controllers", lambda: False)
    with parallel.session(model, 64) as splitting:
        assert not splitting  # no threadpoolctl (or no BLAS it knows): BLAS's threads cannot be set


def test_fit_splits_by_default_and_restores_blas(halves, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_WORK", 0)  # the small test model holds little work
    if parallel.blas_threads() is None or parallel.blas_threads() < 2 or parallel._cores() < 2:
        pytest.skip("needs two cores and two BLAS threads")
    threads = parallel.blas_threads()
    x, y = data(128)
    train(convnet, True, x, y, epochs=1)
    assert halves["n"] == 4
    assert parallel.blas_threads() == threads


def test_error_in_a_half_leaves_plain_weights(can_split):
    x, y = data(128)
    model = sgd_model(convnet, seed=0)
    conv = model.layers[2]
    original = conv.forward

    def failing(x, training=False, activation=None):
        y, backward = original(x, training, activation)

        def back(dz, input_grad=True):
            if threading.get_ident() == parallel.worker_id():
                raise RuntimeError("boom in the worker")
            return backward(dz, input_grad)

        return y, back

    conv.forward = failing
    before = [w.value.copy() for w in model.weights]
    threads = parallel.blas_threads()
    with pytest.raises(RuntimeError, match="boom in the worker"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert all(type(w) is Weight for w in model.weights)
    assert not parallel.active()
    assert parallel.blas_threads() == threads  # BLAS's thread count is back
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(w.value, b)  # the failed step updated nothing
    conv.forward = original
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)  # and training goes on
    assert any(not np.array_equal(w.value, b) for w, b in zip(model.weights, before))


def test_sharded_weight_routes_the_worker_thread():
    w = Weight(np.ones((2, 3)), "k")
    w.grad[...] = 1.0
    from glassnet.engine.weight import shard, unshard
    worker = parallel.worker_id()
    shard([w], worker)
    assert type(w) is ShardedWeight

    def in_worker():
        w.add_matmul(np.ones((2, 1)), np.full((1, 3), 2.0))  # twin: lazily zero, then written by the GEMM
        w.grad += 1.0

    parallel._pool().submit(in_worker).result()
    np.testing.assert_array_equal(w.grad, 1.0)  # this thread sees its own gradient, untouched
    unshard([w])
    assert type(w) is Weight
    np.testing.assert_array_equal(w.grad, 4.0)  # 1 + (2 + 1)
    shard([w], worker)
    unshard([w])  # a twin the worker never touched adds nothing
    np.testing.assert_array_equal(w.grad, 4.0)
    shard([w, w], worker)  # a weight listed twice (two layers sharing it) ...
    parallel._pool().submit(in_worker).result()
    unshard([w, w])  # ... gets the worker's part once
    np.testing.assert_array_equal(w.grad, 7.0)


def test_sharded_weight_routes_add_and_add_sum_of_the_worker_thread():
    from glassnet.engine.weight import shard, unshard
    b = Weight(np.zeros(3), "bias")
    b.grad[...] = 1.0
    worker = parallel.worker_id()
    shard([b], worker)

    def in_worker():
        b.add_sum(np.full((4, 3), 0.5))  # the twin, lazily zero: written by the reduction (2.0 each)
        b.add(np.arange(3.0))             # then accumulated

    parallel._pool().submit(in_worker).result()
    b.add(np.full(3, 10.0))  # this thread: its own gradient
    np.testing.assert_array_equal(b.grad, 11.0)
    unshard([b])
    np.testing.assert_array_equal(b.grad, [13.0, 14.0, 15.0])


def test_custom_activation_splits_only_when_it_says_per_example(can_split, float64):
    """A user's activation may mix examples (here: centring over the batch), so it keeps the front unsplit
    unless it declares per_example=True."""
    def centre(x):
        return x - x.mean(axis=0)

    def centre_grad(x, y, dy):
        return dy - dy.mean(axis=0)

    mixing = ActivationFn("centre", centre, centre_grad)
    assert not mixing.per_example and glassnet.activations.get("relu").per_example

    def build(act):
        return glassnet.Sequential([glassnet.Input((12, 12, 2)), Conv2D(8, 3, activation=act), MaxPooling2D(2),
                                    Flatten(), Dense(2, activation="softmax")])

    assert build(mixing)._splits_batches() == 0
    assert build(ActivationFn("tanh2", np.tanh, lambda x, y, dy: dy * (1 - y * y), per_example=True)
                 )._splits_batches() == 2
    x, y = data(classes=2)
    plain, _ = train(build, False, x, y, act=mixing)
    split, _ = train(build, True, x, y, act=mixing)
    assert max_diff(plain, split) == 0.0  # not split at all: identical


def test_worthwhile_uses_exactly_two_threads(monkeypatch):
    for cores, blas, expected in [(2, 2, True), (2, 8, True), (8, 2, True), (1, 2, False), (2, 1, False),
                                  (4, 4, False), (16, 16, False)]:
        monkeypatch.setattr(parallel, "_cores", lambda: cores)
        monkeypatch.setattr(parallel, "blas_threads", lambda: blas)
        assert parallel.worthwhile(64) is expected, (cores, blas)
        assert parallel.worthwhile(parallel.MIN_BATCH - 1) is False
    monkeypatch.setattr(parallel, "blas_threads", lambda: None)  # BLAS unknown (no threadpoolctl)
    monkeypatch.setattr(parallel, "_cores", lambda: 2)
    assert parallel.worthwhile(64) is False


def test_small_data_set_keeps_blas_threads(can_split):
    """Fewer rows than MIN_BATCH: no step can split, so the epoch keeps BLAS as it is."""
    seen = []
    probe = glassnet.callbacks.LambdaCallback(on_train_batch_begin=lambda batch, logs: seen.append(parallel.active()))
    for rows, expected in ((20, False), (64, True)):
        seen.clear()
        model = sgd_model(convnet, seed=0)
        x, y = data(rows)
        model.fit(x, y, batch_size=32 if rows == 20 else 64, epochs=1, verbose=0, callbacks=[probe])
        assert seen == [expected]


def test_one_session_at_a_time(can_split):
    """BLAS's thread count is process-wide: a second thread's fit does not split while one session is open."""
    model = convnet()
    entered, release, answers = threading.Event(), threading.Event(), []

    def holder():
        with parallel.session(model, 64) as splitting:
            answers.append(("holder", splitting))
            entered.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert entered.wait(10)
    with parallel.session(model, 64) as splitting:
        answers.append(("second", splitting))
        assert not parallel.active()
    release.set()
    t.join(10)
    assert answers == [("holder", True), ("second", False)]
    with parallel.session(model, 64) as splitting:  # free again
        assert splitting


def test_run_halves_waits_for_the_worker_when_this_half_fails():
    done = []

    def half(who):
        if who == "worker":
            time.sleep(0.2)
            done.append(who)
            return who
        raise ValueError("this half failed")

    with pytest.raises(ValueError, match="this half failed"):
        parallel.run_halves(half, ("main",), ("worker",))
    assert done == ["worker"]  # the worker's half had finished before the error got here


def test_run_halves_waits_through_an_interrupt(monkeypatch):
    """Ctrl-C while waiting for the worker: keep waiting until it is done, then raise KeyboardInterrupt."""
    from concurrent import futures
    done, real_wait, calls = [], futures.wait, []

    def interrupted_once(fs, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real_wait(fs, *args, **kwargs)

    monkeypatch.setattr(futures, "wait", interrupted_once)

    def half(who):
        if who == "worker":
            time.sleep(0.2)
            done.append(who)
        return who

    with pytest.raises(KeyboardInterrupt):
        parallel.run_halves(half, ("main",), ("worker",))
    assert done == ["worker"] and len(calls) == 2


def test_worker_half_keeps_the_callers_errstate():
    def half(big):
        return np.float32(big) * np.float32(10)  # overflows float32 for big = 1e38

    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        parallel.run_halves(half, (1.0,), (1e38,))  # only the worker's half overflows
    with np.errstate(over="ignore"):
        assert parallel.run_halves(half, (1.0,), (1e38,)) == (10.0, np.inf)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_its_own_worker(can_split):
    """After the parent split a step, a forked child (multiprocessing's default on Linux) has no worker thread;
    its fit must start one instead of waiting forever on the parent's."""
    x, y = data(64)
    train(convnet, True, x, y, epochs=1)
    assert parallel._worker is not None
    pid = os.fork()
    if pid == 0:  # the child: fit, then leave without running pytest's teardown
        code = 1
        try:
            train(convnet, True, x, y, epochs=1)
            code = 0 if parallel._worker_id != threading.get_ident() else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's fit did not finish in 60 s")


def test_predict_and_evaluate_split_equal_unsplit(can_split, halves):
    """Inference on a convnet splits too (predict, evaluate, validation during fit): the same outputs."""
    x, y = data(200)
    glassnet.set_random_seed(3)
    model = convnet()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    with parallel.use_batch_split(False):
        expected = model.predict(x, batch_size=64, verbose=0)
        expected_one_batch = model.predict(x, verbose=0, batch_size=200)
        expected_eval = model.evaluate(x, y, batch_size=64, verbose=0)
    assert halves["n"] == 0
    got = model.predict(x, batch_size=64, verbose=0)
    assert halves["n"] == 3  # batches of 64, 64, 64 split; the last 8 rows do not
    got_one_batch = model.predict(x, verbose=0, batch_size=200)  # the single-batch fast path
    assert halves["n"] == 4
    got_eval = model.evaluate(x, y, batch_size=64, verbose=0)
    assert halves["n"] == 7
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got_one_batch, expected_one_batch, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got_eval, expected_eval, rtol=1e-6)
    halves["n"] = 0
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, validation_data=(x[:64], y[:64]))
    assert halves["n"] == 3 * 2 + 1  # three training steps (forward + backward) and one validation batch


def test_one_row_predict_opens_no_session(can_split, monkeypatch):
    """The 1-row latency path must not pay for a session (or even a context manager)."""
    opened = []
    real = parallel.session

    def counting(*args, **kwargs):
        opened.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(parallel, "session", counting)
    model = convnet()
    x, _ = data(40)
    model.predict(x[:1], verbose=0)
    model.predict(x[:parallel.MIN_BATCH - 1], verbose=0)
    assert opened == []
    model.predict(x[:parallel.MIN_BATCH], verbose=0)
    assert opened == [parallel.MIN_BATCH]


def test_models_that_must_not_split(can_split, halves):
    """Found by review: each of these once split (or held BLAS at one thread for nothing)."""
    # masks: a recurrent layer makes them, forward/call take the masked path, which never splits
    rnn = glassnet.Sequential([glassnet.Input((40, 3)), Conv1D(32, 5, activation="relu"), MaxPooling1D(2), GRU(2),
                               Dense(2)])
    assert rnn._masking and rnn._splits_batches() == 0
    with parallel.session(rnn, 64) as splitting:
        assert not splitting  # so BLAS is not held at one thread for an epoch with no split step
    # unknown sizes: no estimate of the work, no split (the BatchNormalization model below splits otherwise)
    variable = glassnet.Sequential([glassnet.Input((None, None, 1)), Conv2D(32, 3), BatchNormalization(),
                                    Conv2D(64, 3), Flatten()])
    assert variable._splits_batches() == 0
    # NumPy integers in the input shape count like ints
    np_shape = glassnet.Sequential([glassnet.Input(tuple(np.array([28, 28, 1]))), Conv2D(2, 3), Flatten(),
                                    Dense(4096), Dense(4096)])
    assert np_shape._splits_batches() == 0  # most of the work is in the Dense layers
    assert np.isfinite(np_shape._split_front[1])
    # a subclass that overrides call alone: its inference is not what the class declaring batch_parallel vouched for
    class Recording(Conv2D):
        def call(self, x, training=False):
            y = super().call(x, training)
            self.feature_maps = y
            return y

    recording = glassnet.Sequential([glassnet.Input((12, 12, 2)), Recording(6, 3, activation="relu"),
                                     MaxPooling2D(2), Flatten(), Dense(2)])
    assert recording._splits_batches() == 0
    x, _ = data(64)
    recording.predict(x, batch_size=64, verbose=0)
    assert recording.layers[0].feature_maps.shape[0] == 64 and halves["n"] == 0


def test_last_batch_with_too_little_work_runs_unsplit(can_split, halves, monkeypatch):
    x, y = data(100)
    model = convnet()
    assert model._splits_batches() == 3
    work = model._split_front[1]
    monkeypatch.setattr(parallel, "MIN_WORK", 40 * work)  # batches of 64 split, the last one of 36 does not
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert halves["n"] == 2


def test_scalar_input_to_call_still_works(can_split):
    model = glassnet.Sequential([Activation("relu")])
    assert float(model(np.float32(-2.0))) == 0.0
    with parallel.session(convnet(), 64):
        assert float(model(np.float32(3.0))) == 3.0


def test_accuracy_results_are_python_floats():
    m = glassnet.metrics.BinaryAccuracy()
    m.update_state(np.array([1, 0, 1]), np.array([0.9, 0.2, 0.1]))
    assert type(m.result()) is float and m.result() == pytest.approx(2 / 3)


def test_status_names_the_reason(monkeypatch):
    monkeypatch.setattr(parallel._switch, "on", True)
    cases = [(2, 2, "convnet batches split over 2 threads"), (8, 2, "convnet batches split over 2 threads"),
             (2, 1, "batch split off (BLAS limited to one thread)"), (1, 2, "batch split off (one core)"),
             (8, 8, "batch split off (8 threads: BLAS uses them itself)")]
    for cores, threads, text in cases:
        monkeypatch.setattr(parallel, "_cores", lambda: cores)
        monkeypatch.setattr(parallel, "blas_threads", lambda: threads)
        assert parallel.status() == text
    monkeypatch.setattr(parallel, "blas_threads", lambda: None)  # threadpoolctl here, but no BLAS it can set
    assert parallel.status() == "batch split off (no BLAS whose threads threadpoolctl can set)"
    monkeypatch.setattr(parallel._switch, "on", False)
    assert parallel.status() == "batch split off (GLASSNET_BATCH_SPLIT=0)"


# --- functional models: the chain of calls from the one input --------------------------------------------
def functional_convnet(kind="chain"):
    inputs = glassnet.Input((12, 12, 2))
    h = MaxPooling2D(2)(Conv2D(6, 3, activation="relu")(inputs))
    h = Conv2D(8, 3, activation="relu", padding="same")(h)
    if kind == "chain":
        out = Dense(5, activation="softmax")(Flatten()(h))
    elif kind == "fan_out":  # the chain's last output feeds two branches
        out = Dense(5, activation="softmax")(Concatenate()([Flatten()(h), GlobalAveragePooling2D()(h)]))
    elif kind == "skip_from_input":  # the input is also read after the chain
        out = Dense(5, activation="softmax")(Concatenate()([Flatten()(h), GlobalAveragePooling2D()(inputs)]))
    return glassnet.Model(inputs, out)


@pytest.mark.parametrize("kind", ["chain", "fan_out", "skip_from_input"])
def test_functional_split_equals_unsplit(can_split, float64, halves, kind):
    assert functional_convnet(kind)._splits_batches() == 3  # conv, pool, conv
    x, y = data()
    plain, h_plain = train(functional_convnet, False, x, y, kind=kind)
    assert halves["n"] == 0
    split, h_split = train(functional_convnet, True, x, y, kind=kind)
    assert halves["n"] == 2 * 2 * 2  # two split steps per epoch (forward + backward), two epochs
    assert max_diff(plain, split) < 1e-12
    np.testing.assert_allclose(h_split["loss"], h_plain["loss"], rtol=1e-12)
    with parallel.use_batch_split(False):
        expected = plain.predict(x, batch_size=64, verbose=0)
    np.testing.assert_allclose(plain.predict(x, batch_size=64, verbose=0), expected, rtol=1e-12)
    assert halves["n"] == 8 + 2  # and inference: two full batches of 64 split


def test_functional_input_gradient_split_equals_unsplit(can_split, float64):
    glassnet.set_random_seed(2)
    model = functional_convnet("skip_from_input")
    x, _ = data(64)
    dy = np.random.default_rng(1).normal(size=(64, 5))
    results = []
    for split in (False, True):
        with parallel.use_batch_split(split), parallel.session(model, 64) as splitting:
            assert splitting is split
            for w in model.trainable_weights:
                w.grad[...] = 0
            y, backward = model.forward(x, training=True)
            results.append((y, backward(dy), [w.grad.copy() for w in model.trainable_weights]))
    (y0, dx0, g0), (y1, dx1, g1) = results
    np.testing.assert_allclose(y1, y0, rtol=1e-13)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-12, atol=1e-14)  # both paths into the input add up
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_functional_models_that_do_not_split():
    a, b = glassnet.Input((12, 12, 2)), glassnet.Input((3,))
    two_inputs = glassnet.Model([a, b], Dense(2)(Concatenate()([Flatten()(Conv2D(8, 3)(a)), b])))
    assert two_inputs._splits_batches() == 0
    shared = Conv2D(2, 3, padding="same")
    inputs = glassnet.Input((12, 12, 2))
    twice = glassnet.Model(inputs, Flatten()(shared(shared(inputs))))  # a layer called twice: its weights are shared
    assert twice._splits_batches() == 0
    inputs = glassnet.Input((28, 28, 1))
    h = Conv2D(32, 3)(inputs)
    bn = glassnet.Model(inputs, Dense(10)(Flatten()(Conv2D(64, 3)(BatchNormalization()(h)))))
    assert bn._splits_batches() == 0  # the work is after the chain
    inner = convnet()
    inputs = glassnet.Input((12, 12, 2))
    nested = glassnet.Model(inputs, Dense(2)(inner(inputs)))  # a model as a layer is not a batch_parallel layer
    assert nested._splits_batches() == 0


def test_freezing_a_layer_during_fit_keeps_the_plan_of_the_fit(can_split, float64, halves):
    """A callback freezing a conv mid-fit: the split step keeps using the plan made when fit started (as the
    unsplit step and the optimizer do), for Sequential and functional models alike (found by review)."""
    class FreezeFirstConv(glassnet.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            next(layer for layer in self.model.layers if isinstance(layer, Conv2D)).trainable = False

    x, y = data()
    for build in (convnet, functional_convnet):
        results = []
        for split in (False, True):
            model = sgd_model(build, seed=9)
            with parallel.use_batch_split(split):
                model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[FreezeFirstConv()])
            results.append(model)
        assert max_diff(*results) < 1e-12
    assert halves["n"] == 2 * 8


def test_on_batch_methods_split_too(can_split, float64, halves):
    """train_on_batch / test_on_batch / predict_on_batch open a session around their one batch."""
    x, y = data(64)
    models = []
    for split in (False, True):
        model = sgd_model(convnet, seed=5)
        with parallel.use_batch_split(split):
            model.train_on_batch(x, y)
            models.append((model, model.test_on_batch(x, y), model.predict_on_batch(x)))
    assert halves["n"] == 2 + 1 + 1  # train (forward + backward), test, predict
    (plain, test_plain, pred_plain), (split, test_split, pred_split) = models
    assert max_diff(plain, split) < 1e-12
    np.testing.assert_allclose(test_split, test_plain, rtol=1e-12)
    np.testing.assert_allclose(pred_split, pred_plain, rtol=1e-12)
    split.predict_on_batch(x[:parallel.MIN_BATCH - 1])  # small batches: no session, no split
    assert halves["n"] == 4
