"""The dynamic batcher on its own: a real event loop and inference thread, a recording stand-in model.

The server tests (test_serve_server.py) check batching end to end over HTTP; these pin the queue's
rules exactly: batch size limits (a request that does not fit starts the next batch), the wait for
more rows, the queue limit, errors, and stop() answering everything queued before it.
"""
import asyncio
import threading
import time

import numpy as np
import pytest

from glassnet.serve.batching import Batcher, QueueFull


class Recorder:
    """predict() returns 2*x and [x.sum(axis=1)] per row and records the batch sizes it saw."""
    name, version = "rec", 1

    def __init__(self, delay=0.0, fail=False, refuse_negative=False):
        self.batches = []
        self.refuse_negative = refuse_negative  # like an Embedding refusing an id out of range
        self.delay = delay
        self.fail = fail
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def predict(self, arrays):
        self.entered.set()
        self.gate.wait(10)
        x = arrays[0]
        self.batches.append(len(x))
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise ValueError("the model failed")
        if self.refuse_negative and (x < 0).any():
            raise ValueError("negative values refused")
        return [2 * x, x.sum(axis=1, keepdims=True)]


def rows(start, n):
    return [np.arange(start, start + n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))  # a lost request fails the test instead of hanging it


def check(outputs, start, n):
    x = rows(start, n)[0]
    assert len(outputs) == 2
    np.testing.assert_array_equal(outputs[0], 2 * x)
    np.testing.assert_array_equal(outputs[1], x.sum(axis=1, keepdims=True))


async def hold(b, model):
    """Submit a one-row request and wait until the thread is inside predict with it, held at the gate:
    what is submitted next queues up and forms the following batches deterministically."""
    model.gate.clear()
    fut = b.submit(rows(-1, 1))
    assert await asyncio.to_thread(model.entered.wait, 10)
    return fut


def test_each_request_gets_its_own_rows_and_no_batch_exceeds_the_limit():
    model = Recorder()

    async def main():
        b = Batcher(model, asyncio.get_running_loop(), max_batch_size=4)
        first = await hold(b, model)
        sizes = [1, 3, 2, 2, 1, 4, 3, 1, 1]
        starts = np.cumsum([0] + sizes[:-1]) * 10
        futs = [b.submit(rows(int(s), n)) for s, n in zip(starts, sizes)]
        assert b.queued_rows == sum(sizes)
        model.gate.set()
        results = await asyncio.gather(*futs)
        check(await first, -1, 1)
        b.stop()
        return b, sizes, starts, results

    b, sizes, starts, results = run(main())
    for s, n, out in zip(starts, sizes, results):
        check(out, int(s), n)
    # in arrival order; a request that does not fit starts the next batch
    assert model.batches == [1, 4, 4, 1, 4, 4, 1]
    assert b.queued_rows == 0


def test_requests_larger_than_the_batch_limit_run_alone():
    model = Recorder()

    async def main():
        b = Batcher(model, asyncio.get_running_loop(), max_batch_size=2)
        first = await hold(b, model)
        futs = [b.submit(rows(0, 5)), b.submit(rows(100, 1)), b.submit(rows(200, 1))]
        model.gate.set()
        out = await asyncio.gather(first, *futs)
        b.stop()
        return out

    out = run(main())
    check(out[0], -1, 1)
    check(out[1], 0, 5)
    check(out[2], 100, 1)
    check(out[3], 200, 1)
    assert model.batches == [1, 5, 2]


def test_batch_timeout_waits_for_more_rows():
    model = Recorder()

    async def main():
        loop = asyncio.get_running_loop()
        b = Batcher(model, loop, max_batch_size=8, batch_timeout_s=2.0)
        first = b.submit(rows(0, 1))
        await asyncio.sleep(0.05)  # well within the timeout: joins the first request's batch
        second = b.submit(rows(10, 2))
        t = time.monotonic()
        out = await asyncio.gather(first, second)
        b.stop()
        return out, time.monotonic() - t

    (a, c), waited = run(main())
    check(a, 0, 1)
    check(c, 10, 2)
    assert model.batches == [3]
    assert 1.0 < waited < 15  # the batch waited for the timeout (2 s from the first row), then ran


def test_a_full_batch_does_not_wait_for_the_timeout():
    model = Recorder()

    async def main():
        b = Batcher(model, asyncio.get_running_loop(), max_batch_size=2, batch_timeout_s=30)
        t = time.monotonic()
        out = await asyncio.gather(b.submit(rows(0, 1)), b.submit(rows(5, 1)))
        elapsed = time.monotonic() - t
        b.stop()
        return out, elapsed

    out, elapsed = run(main())
    assert model.batches == [2] and elapsed < 10
    check(out[0], 0, 1)
    check(out[1], 5, 1)


def test_queue_limit_refuses_new_rows_until_the_queue_drains():
    model = Recorder()

    async def main():
        b = Batcher(model, asyncio.get_running_loop(), max_batch_size=1, max_queue_rows=3)
        futs = [await hold(b, model), b.submit(rows(1, 2))]  # the first is taken: no longer queued
        assert b.queued_rows == 2
        with pytest.raises(QueueFull, match="rows queued"):
            b.submit(rows(3, 2))
        futs.append(b.submit(rows(3, 1)))  # fits: 2 + 1 <= 3
        model.gate.set()
        out = await asyncio.gather(*futs)
        late = await b.submit(rows(7, 3))  # drained: accepted again
        b.stop()
        return out, late

    out, late = run(main())
    check(out[0], -1, 1)
    check(out[1], 1, 2)
    check(out[2], 3, 1)
    check(late, 7, 3)


def test_an_error_reaches_every_request_of_the_batch_and_the_thread_keeps_serving():
    model = Recorder(fail=True)

    async def main():
        b = Batcher(model, asyncio.get_running_loop(), max_batch_size=8)
        first = await hold(b, model)
        futs = [b.submit(rows(i, 1)) for i in range(3)]
        model.gate.set()
        errors = await asyncio.gather(first, *futs, return_exceptions=True)
        model.fail = False
        ok = await b.submit(rows(9, 2))
        b.stop()
        return errors, ok

    errors, ok = run(main())
    assert len(errors) == 4
    assert all(isinstance(e, ValueError) and "the model failed" in str(e) for e in errors)
    check(ok, 9, 2)
    assert model.batches == [1, 3, 1, 1, 1, 2]  # the failed batch of 3 was tried request by request


def test_a_request_the_model_refuses_fails_alone_and_its_batch_is_answered():
    """One request's bad input (an Embedding id out of range, say) must not fail the requests batched with it:
    the batch is predicted again request by request, and only that one gets the error."""
    model = Recorder(refuse_negative=True)

    async def main():
        b = Batcher(model, asyncio.get_running_loop(), max_batch_size=8)
        first = await hold(b, model)
        futs = [b.submit(rows(1, 2)), b.submit(rows(-5, 1)), b.submit(rows(4, 1))]
        model.gate.set()
        out = await asyncio.gather(first, *futs, return_exceptions=True)
        b.stop()
        return out

    out = run(main())
    assert isinstance(out[0], ValueError) and isinstance(out[2], ValueError)  # rows(-1, 1) and rows(-5, 1)
    assert "negative values refused" in str(out[2])
    check(out[1], 1, 2)
    check(out[3], 4, 1)
    assert model.batches == [1, 4, 2, 1, 1]


def test_stop_answers_everything_queued_then_ends_the_thread():
    model = Recorder(delay=0.01)

    async def main():
        b = Batcher(model, asyncio.get_running_loop(), max_batch_size=2)
        futs = [await hold(b, model)] + [b.submit(rows(10 * i, 1)) for i in range(7)]
        threading.Timer(0.1, model.gate.set).start()  # stop() comes first: the queue is still full
        await asyncio.to_thread(b.stop)  # waits for the thread: every queued request is answered first
        assert not b._thread.is_alive()
        assert all(f.done() for f in futs)
        late = await b.submit(rows(500, 2))  # a retired version still answers, on a worker thread
        return [f.result() for f in futs], late

    results, late = run(main())
    check(results[0], -1, 1)
    for i, out in enumerate(results[1:]):
        check(out, 10 * i, 1)
    check(late, 500, 2)
    assert model.batches == [1, 2, 2, 2, 1, 2]  # the late request ran on its own thread, outside batching


def test_stop_while_waiting_for_more_rows():
    model = Recorder()

    async def main():
        b = Batcher(model, asyncio.get_running_loop(), max_batch_size=8, batch_timeout_s=60)
        fut = b.submit(rows(0, 1))
        await asyncio.sleep(0.05)  # the thread waits (up to 60 s) for more rows
        t = time.monotonic()
        await asyncio.to_thread(b.stop)
        return await fut, time.monotonic() - t

    out, elapsed = run(main())
    check(out, 0, 1)
    assert elapsed < 10  # stopping ends the wait
    assert model.batches == [1]


# --- the garbage collector after models load ---------------------------------------------------------
def _tiny(seed):
    import glassnet as g
    g.set_random_seed(seed)
    m = g.Sequential([g.layers.Input((3,)), g.layers.Dense(2)])
    m.compile(optimizer="sgd", loss="mse")
    return m


def _server(tmp_path, **kw):
    from glassnet.serve.app import InferenceServer
    from glassnet.serve.repository import ModelRepository
    from serving_util import save_version
    repo = str(tmp_path / "models")
    save_version(repo, "m", 1, _tiny(0))
    return repo, InferenceServer(ModelRepository(repo), poll_seconds=0.05, access_log=False, **kw)


def _hold_predict(served):
    """Make ``served.predict`` wait, once inside, until the returned ``release`` event is set (``entered`` says
    it is inside); the stand-in holds the served version only weakly, so it does not keep it alive itself."""
    import weakref
    release, entered = threading.Event(), threading.Event()
    this = weakref.ref(served)

    def held_predict(arrays):
        entered.set()
        release.wait(20)
        return type(this()).predict(this(), arrays)
    served.predict = held_predict
    return release, entered


async def _until(condition, seconds=10):
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


def test_server_freezes_what_is_loaded_and_frees_a_retired_version(tmp_path):
    """startup() moves the loaded objects out of the collector's view (full collections cost ~10 ms of
    serving with NumPy and a model loaded); a version retired by hot reload is still freed."""
    import gc
    import weakref
    from serving_util import save_version
    gc.unfreeze()
    repo, server = _server(tmp_path)

    async def main():
        await server.startup()
        frozen_at_start = gc.get_freeze_count()
        served = server.repository.get("m").model
        served.cycle = served  # only the collector frees it now, and it was frozen at startup
        first = weakref.ref(served)
        del served
        save_version(repo, "m", 2, _tiny(1))
        freed = await _until(lambda: server.repository.versions("m") == [2] and first() is None)
        await server.shutdown()
        return frozen_at_start, freed

    try:
        frozen_at_start, freed = run(main())
    finally:
        gc.unfreeze()
    assert frozen_at_start > 1000
    assert freed  # the retired model was collected, not kept frozen


def test_refreeze_waits_for_a_retired_version_to_answer_its_queue(tmp_path, monkeypatch):
    """A retired version still answering queued requests is reachable: the server freezes only after
    its inference thread has ended, so the model is freed afterwards."""
    import gc
    import weakref
    import glassnet.serve.app as app_module
    from serving_util import save_version
    gc.unfreeze()
    freezes = []
    real_freeze = app_module.freeze_long_lived
    monkeypatch.setattr(app_module, "freeze_long_lived", lambda: (freezes.append(1), real_freeze()))
    repo, server = _server(tmp_path)

    async def main():
        await server.startup()
        served = server.repository.get("m")
        release, entered = _hold_predict(served)
        served.model.cycle = served.model
        first = weakref.ref(served.model)
        request = server._batcher(served).submit([np.ones((1, 3), np.float32)])
        assert await asyncio.to_thread(entered.wait, 10)
        del served
        startup_freezes = len(freezes)
        save_version(repo, "m", 2, _tiny(1))
        assert await _until(lambda: server.repository.versions("m") == [2])
        await asyncio.sleep(0.5)  # ten polls: none may freeze while version 1 is still predicting
        held = (len(freezes) == startup_freezes, first() is not None, len(server._retiring))
        release.set()
        answer = await request
        freed = await _until(lambda: first() is None)
        await server.shutdown()
        return held, answer, freed, len(freezes) - startup_freezes

    try:
        held, answer, freed, later_freezes = run(main())
    finally:
        gc.unfreeze()
    assert held == (True, True, 1)
    assert answer[0].shape == (1, 2)  # the queued request was answered by version 1
    assert freed and later_freezes == 1


def test_server_can_leave_the_collector_alone(tmp_path):
    """freeze_gc=False: nothing is frozen, and retired versions are let go as before."""
    import gc
    import weakref
    from serving_util import save_version
    gc.unfreeze()
    repo, server = _server(tmp_path, freeze_gc=False)

    async def main():
        await server.startup()
        count = gc.get_freeze_count()
        served = server.repository.get("m")
        await server._batcher(served).submit([np.ones((2, 3), np.float32)])  # a batcher to retire
        first = weakref.ref(served.model)
        del served
        save_version(repo, "m", 2, _tiny(1))
        freed = await _until(lambda: server.repository.versions("m") == [2] and first() is None)
        retiring = len(server._retiring)
        await server.shutdown()
        return count, freed, retiring, gc.get_freeze_count()

    count, freed, retiring, count_after = run(main())
    assert count == 0 and count_after == 0
    assert freed and retiring == 0


def test_shutdown_answers_a_retired_version_queue_and_unfreezes(tmp_path):
    """A version retired by hot reload while still predicting: shutdown() waits for its answer, and the
    collector sees everything again afterwards."""
    import gc
    from serving_util import save_version
    gc.unfreeze()
    repo, server = _server(tmp_path)

    async def main():
        await server.startup()
        served = server.repository.get("m")
        release, entered = _hold_predict(served)
        request = server._batcher(served).submit([np.ones((1, 3), np.float32)])
        assert await asyncio.to_thread(entered.wait, 10)
        del served
        save_version(repo, "m", 2, _tiny(1))
        assert await _until(lambda: server.repository.versions("m") == [2] and server._retiring)
        threading.Timer(0.3, release.set).start()
        await server.shutdown()
        return request.done(), (await request)[0].shape, gc.get_freeze_count()

    done, shape, frozen = run(main())
    assert done and shape == (1, 2)  # answered before shutdown() returned
    assert frozen == 0
