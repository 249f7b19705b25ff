"""Dynamic batching: concurrent requests to one model version run as one ``predict``, off the event loop.

Each served version has one inference thread. Requests queue their arrays; the thread takes
everything queued (up to ``max_batch_size`` rows), waits up to ``batch_timeout_s`` for more when
the batch is not full, concatenates, predicts once, splits the outputs back by row counts and
hands each request its slice on the event loop. Under load the queue fills while a batch runs, so
batches form even with a zero timeout; ``max_batch_size=1`` turns batching off (one request at a
time, still off the loop).
"""
import asyncio
import collections
import threading
import time

import numpy as np


class QueueFull(Exception):
    pass


class Batcher:
    def __init__(self, served, loop, max_batch_size=64, batch_timeout_s=0.0, max_queue_rows=100_000,
                 on_batch=None):
        self.served = served
        self.loop = loop
        self.max_batch_size = max(1, int(max_batch_size))
        self.timeout = max(0.0, float(batch_timeout_s))
        self.max_queue_rows = max_queue_rows
        self.on_batch = on_batch  # callback(rows, seconds, rows still queued) from the inference thread (metrics)
        self._queue = collections.deque()
        self._rows = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"glassnet-infer-{served.name}-{served.version}",
                                        daemon=True)
        self._thread.start()

    @property
    def queued_rows(self):
        return self._rows

    def submit(self, arrays):
        """Queue one request (list of input arrays); returns an asyncio future of its output list."""
        fut = self.loop.create_future()
        n = len(arrays[0])
        with self._cond:
            if self._stopping:  # retired version: answer anyway, on a worker thread
                return asyncio.ensure_future(asyncio.to_thread(self.served.predict, arrays))
            if self._rows and self._rows + n > self.max_queue_rows:
                raise QueueFull(f"model {self.served.name!r} has {self._rows} rows queued (limit "
                                f"{self.max_queue_rows}); try again shortly.")
            self._queue.append((arrays, n, fut))
            self._rows += n
            self._cond.notify()
        return fut

    def _take(self):
        """Block until there is work; return a list of queued items (None when stopping and drained)."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            items, rows = [self._queue.popleft()], 0
            rows = items[0][1]
            deadline = None
            while rows < self.max_batch_size:
                if self._queue:
                    if rows + self._queue[0][1] > self.max_batch_size:
                        break
                    item = self._queue.popleft()
                    items.append(item)
                    rows += item[1]
                    continue
                if self.timeout <= 0 or self._stopping:
                    break
                if deadline is None:
                    deadline = time.monotonic() + self.timeout
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._rows -= rows
            return items

    def _run(self):
        while True:
            items = self._take()
            if items is None:
                return
            start = time.perf_counter()
            try:
                if len(items) == 1:
                    results = [self.served.predict(items[0][0])]
                else:
                    n_inputs = len(items[0][0])
                    batch = [np.concatenate([it[0][i] for it in items]) for i in range(n_inputs)]
                    outputs = self.served.predict(batch)
                    bounds = np.cumsum([it[1] for it in items])[:-1]
                    parts = [np.split(o, bounds) for o in outputs]
                    results = [[p[k] for p in parts] for k in range(len(items))]
                error = None
            except Exception as e:  # reported to every request of the batch; the server keeps serving
                results, error = None, e
            if self.on_batch is not None:
                self.on_batch(sum(it[1] for it in items), time.perf_counter() - start, self._rows)
            try:
                self.loop.call_soon_threadsafe(_deliver, items, results, error)
            except RuntimeError:  # the loop has closed (shutdown)
                return

    def stop(self, wait=True):
        """Finish what is queued, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if wait:
            self._thread.join()


def _deliver(items, results, error):
    for k, (_, _, fut) in enumerate(items):
        if fut.done():  # the request timed out or its client went away
            continue
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(results[k])
