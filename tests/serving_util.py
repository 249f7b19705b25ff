"""Shared helpers for the serving tests: small real models on disk and a real `glassnet serve` process."""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np


def tutorial_model(seed=0, epochs=2):
    """The tutorial network (8 -> 10 -> 1, Normalization in front), briefly trained on Pima."""
    from glassnet import set_random_seed
    from glassnet.datasets import pima
    from glassnet.tutorial import build_model
    (x, y), _ = pima.load_data()
    set_random_seed(seed)
    model = build_model(x)
    model.metadata = {"feature_names": list(pima.FEATURE_NAMES)}
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model, x


def two_input_model(seed=0):
    """A functional model with two named inputs and two named outputs."""
    import glassnet as g
    g.set_random_seed(seed)
    a = g.layers.Input((3,), name="a")
    b = g.layers.Input((2, 2), name="b")
    h = g.layers.Dense(4, activation="tanh", name="hidden")(g.layers.Concatenate()([a, g.layers.Flatten()(b)]))
    model = g.models.Model([a, b], [g.layers.Dense(2, name="scores")(h),
                                    g.layers.Dense(1, activation="sigmoid", name="prob")(h)])
    return model


def embedding_model(seed=0):
    """Token ids in (Input of dtype int32, 4 ids from 0 to 9) -> Embedding -> Flatten -> Dense(1)."""
    import glassnet as g
    g.set_random_seed(seed)
    return g.Sequential([g.Input((4,), dtype="int32"), g.layers.Embedding(10, 3), g.layers.Flatten(),
                         g.layers.Dense(1)])


def save_version(repo, name, version, model):
    """Write ``repo/name/version/model.glassnet`` atomically (file then rename), as a deployment would."""
    folder = os.path.join(repo, name, str(version))
    os.makedirs(folder, exist_ok=True)
    model.save(os.path.join(folder, "model.glassnet"), include_optimizer=False)
    return os.path.join(folder, "model.glassnet")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A running `glassnet serve`: its stdout (the banner) and stderr (logs, access log) kept apart."""

    def __init__(self, proc, port, out_path, err_path):
        self.proc, self.port, self.out_path, self.err_path = proc, port, out_path, err_path
        self.url = f"http://127.0.0.1:{port}"

    def stdout(self):
        with open(self.out_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stderr(self):
        with open(self.err_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def log(self):
        return self.stdout() + self.stderr()


@contextlib.contextmanager
def serve(path, *args, tmp_path, ready_timeout=60):
    """Run ``glassnet serve PATH ARGS`` on a free loopback port until the block ends (then SIGTERM)."""
    port = free_port()
    out_path = os.path.join(str(tmp_path), f"serve-{port}.out")
    err_path = os.path.join(str(tmp_path), f"serve-{port}.err")
    cmd = [sys.executable, "-m", "glassnet", "serve", str(path), "--port", str(port), *map(str, args)]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
    server = ServerProcess(proc, port, out_path, err_path)
    deadline = time.monotonic() + ready_timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"glassnet serve exited with {proc.returncode}:\n{server.log()}")
            try:
                with urllib.request.urlopen(server.url + "/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"glassnet serve was not ready within {ready_timeout} s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def rows(x, n=3):
    return np.asarray(x[:n], dtype=np.float32)
