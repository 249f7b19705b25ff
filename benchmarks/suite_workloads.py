"""The workloads of the benchmark suite (W1-W4 and the scaling sweep), one function per (workload, system).

Each function takes the run's config dict and returns a dict of measurements; `benchmarks/suite.py` runs
each one in a fresh process and adds the peak RSS. All systems use Glorot-uniform kernels and zero
biases (torch re-initialised to match Keras), float32, shuffle every epoch and track the loss, as in
/work/shared/reference/peer-performance.md. Only the library under test is imported inside a function,
so a child process pays for exactly one peer.
"""
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, HERE)

W2_LAYERS = (784, 512, 512, 10)
W2_FLOP_PER_SAMPLE = 3_210_240    # exact training FLOPs: forward + dW + dX (no dX into the input)
W3_FLOP_PER_SAMPLE = 14_260_480   # conv1 fwd/dW, conv2 fwd/dW/dX, dense fwd/dW/dX (im2col GEMM shapes)
SCALE_INPUT, SCALE_CLASSES = 784, 10


# --- helpers ------------------------------------------------------------------------------------------
def rss_mib():
    """Current resident set size of this process (MiB), from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def glorot(rng, fan_in, fan_out, shape=None):
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    return rng.uniform(-limit, limit, shape or (fan_in, fan_out)).astype("float32")


def timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def w2_data(rows):
    """Synthetic MNIST-shaped rows (no 60k dataset is bundled): uniform [0, 1) pixels, uniform labels."""
    import numpy as np
    rng = np.random.default_rng(0)
    return rng.random((rows, 784), dtype=np.float32), rng.integers(0, 10, rows).astype(np.int64)


def w3_data(images):
    """Synthetic 28x28x1 images (NHWC) and labels (the bundled MNIST has 5k, the workload needs 10k)."""
    import numpy as np
    rng = np.random.default_rng(0)
    return rng.random((images, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, images).astype(np.int64)


def torch_threads():
    """torch's default thread count unless OMP_NUM_THREADS is set (torch reads it too; this makes it explicit)."""
    import torch
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    return torch


def torch_glorot_(model):
    import torch
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            torch.nn.init.xavier_uniform_(m.weight)
            torch.nn.init.zeros_(m.bias)


def keras_module():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras
    return keras


def thread_info(system):
    """What the child ran with: torch's thread count, XLA's devices, or the BLAS threadpools NumPy loaded."""
    if system == "torch":
        import torch
        return {"torch_num_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads()}
    if system == "keras":
        import jax
        return {"jax_devices": [str(d) for d in jax.devices()]}
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {}
    return {"blas": [{k: p.get(k) for k in ("internal_api", "num_threads", "architecture")}
                     for p in threadpool_info() if p.get("user_api") == "blas"]}


# --- W1: the tutorial fit (Pima, 8-10-1, MSE, SGD nesterov, batch 32) ----------------------------------
def _w1(run, cfg):
    first, warm, acc = run(cfg["w1_epochs"])
    steps = cfg["w1_epochs"] * 20  # 614 rows / 32 = 20 steps per epoch
    return {"fit1_s": first, "fit2_s": warm, "us_per_step": warm / steps * 1e6, "test_acc": acc}


def w1_glassnet(cfg):
    import bench_tutorial
    return _w1(bench_tutorial.run_glassnet, cfg)


def w1_numpy(cfg):
    import bench_tutorial
    return _w1(bench_tutorial.run_numpy, cfg)


def w1_torch(cfg):
    import bench_tutorial
    torch_threads()
    return _w1(bench_tutorial.run_torch, cfg)


def w1_keras(cfg):
    import bench_tutorial
    return _w1(bench_tutorial.run_keras, cfg)


def w1_sklearn(cfg):
    """MLPClassifier has no MSE: log-loss, same net/optimizer/batch; fit #2 continues with warm_start."""
    import warnings
    import bench_tutorial
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    def run(epochs):
        x, y, xt, yt = bench_tutorial.load_data()
        clf = MLPClassifier((10,), solver="sgd", learning_rate_init=0.01, momentum=0.9, nesterovs_momentum=True,
                            batch_size=32, max_iter=epochs, n_iter_no_change=epochs + 1, tol=0.0, alpha=0.0,
                            warm_start=True, random_state=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            first = timed(clf.fit, x, y)
            warm = timed(clf.fit, x, y)
        return first, warm, float((clf.predict(xt) == yt).mean())
    return _w1(run, cfg)


# --- W2: MLP 784-512-512-10, Adam, batch 128, 60k rows ---------------------------------------------------
# --- W3: convnet conv32-pool-conv64-pool-dense10, Adam, batch 128, 10k images ------------------------------
def _epochs_result(epoch_times, rows, flop_per_sample, rss_start):
    e1, e2 = epoch_times
    return {"epoch1_s": e1, "epoch2_s": e2, "samples_per_s": rows / e2, "gflops": rows * flop_per_sample / e2 / 1e9,
            "rss_start_mib": rss_start}


def _glassnet_epochs(model, x, y, cfg):
    import glassnet
    model.compile(optimizer=glassnet.optimizers.Adam(learning_rate=1e-3), loss="sparse_categorical_crossentropy")
    return [timed(lambda: model.fit(x, y, batch_size=128, epochs=1, verbose=0)) for _ in range(2)]


def w2_glassnet(cfg):
    import glassnet
    from glassnet.layers import Dense
    x, y = w2_data(cfg["w2_rows"])
    glassnet.set_random_seed(1)
    model = glassnet.Sequential([glassnet.Input((784,)), Dense(512, activation="relu"), Dense(512, activation="relu"),
                                 Dense(10, activation="softmax")])
    rss = rss_mib()
    return _epochs_result(_glassnet_epochs(model, x, y, cfg), len(x), W2_FLOP_PER_SAMPLE, rss)


def w3_glassnet(cfg):
    import glassnet
    from glassnet.layers import Conv2D, Dense, Flatten, MaxPooling2D
    x, y = w3_data(cfg["w3_images"])
    glassnet.set_random_seed(1)
    model = glassnet.Sequential([glassnet.Input((28, 28, 1)), Conv2D(32, 3, activation="relu"), MaxPooling2D(2),
                                 Conv2D(64, 3, activation="relu"), MaxPooling2D(2), Flatten(),
                                 Dense(10, activation="softmax")])
    rss = rss_mib()
    return _epochs_result(_glassnet_epochs(model, x, y, cfg), len(x), W3_FLOP_PER_SAMPLE, rss)


def _keras_epochs(model, x, y):
    keras = keras_module()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="sparse_categorical_crossentropy")
    return [timed(lambda: model.fit(x, y, batch_size=128, epochs=1, verbose=0)) for _ in range(2)]


def w2_keras(cfg):
    keras = keras_module()
    x, y = w2_data(cfg["w2_rows"])
    keras.utils.set_random_seed(1)
    L = keras.layers
    model = keras.Sequential([keras.Input((784,)), L.Dense(512, activation="relu"), L.Dense(512, activation="relu"),
                              L.Dense(10, activation="softmax")])
    rss = rss_mib()
    return _epochs_result(_keras_epochs(model, x, y), len(x), W2_FLOP_PER_SAMPLE, rss)


def w3_keras(cfg):
    keras = keras_module()
    x, y = w3_data(cfg["w3_images"])
    keras.utils.set_random_seed(1)
    L = keras.layers
    model = keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
                              L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2), L.Flatten(),
                              L.Dense(10, activation="softmax")])
    rss = rss_mib()
    return _epochs_result(_keras_epochs(model, x, y), len(x), W3_FLOP_PER_SAMPLE, rss)


def _torch_epochs(model, X, Y, batch=128, epochs=2):
    """The usual eager loop: logits + CrossEntropyLoss, torch Adam (eps 1e-8, its default), shuffled each epoch."""
    import torch
    torch_glorot_(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch():
        order = torch.randperm(len(X))
        total = 0.0
        for s in range(0, len(X), batch):
            idx = order[s:s + batch]
            xb, yb = X[idx], Y[idx]
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        return total

    return [timed(epoch) for _ in range(epochs)]


def w2_torch(cfg):
    torch = torch_threads()
    x, y = w2_data(cfg["w2_rows"])
    torch.manual_seed(1)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    rss = rss_mib()
    return _epochs_result(_torch_epochs(model, torch.from_numpy(x), torch.from_numpy(y)), len(x),
                          W2_FLOP_PER_SAMPLE, rss)


def w3_torch(cfg):
    torch = torch_threads()
    x, y = w3_data(cfg["w3_images"])
    torch.manual_seed(1)
    X = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())  # NCHW, converted once, untimed
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 10))
    rss = rss_mib()
    return _epochs_result(_torch_epochs(model, X, torch.from_numpy(y)), len(x), W3_FLOP_PER_SAMPLE, rss)


def w2_sklearn(cfg):
    """MLPClassifier (adam, batch 128, float32 input): epoch 1 = fit(max_iter=1), epoch 2 = partial_fit."""
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    x, y = w2_data(cfg["w2_rows"])
    clf = MLPClassifier((512, 512), solver="adam", batch_size=128, learning_rate_init=1e-3, max_iter=1, alpha=0.0,
                        random_state=1)
    rss = rss_mib()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        times = [timed(clf.fit, x, y), timed(clf.partial_fit, x, y)]
    return _epochs_result(times, len(x), W2_FLOP_PER_SAMPLE, rss)


def _gemm_floor(shapes, steps):
    """Time only the GEMMs of `steps` training steps (float32 NumPy, preallocated outputs): the floor a NumPy
    engine cannot beat without a faster BLAS. `shapes` lists (m, k, n) of every GEMM in one step."""
    import numpy as np
    rng = np.random.default_rng(0)
    ops = [(rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32), np.empty((m, n), np.float32))
           for m, k, n in shapes]

    def epoch():
        for _ in range(steps):
            for a, b, out in ops:
                np.matmul(a, b, out=out)
    return [timed(epoch) for _ in range(2)]


def w2_floor(cfg):
    b, (i, h1, h2, o) = 128, W2_LAYERS
    shapes = [(b, i, h1), (b, h1, h2), (b, h2, o),          # forward
              (h2, b, o), (b, o, h2), (h1, b, h2), (b, h2, h1), (i, b, h1)]  # dW3, dX3, dW2, dX2, dW1
    rows = cfg["w2_rows"]
    rss = rss_mib()
    return _epochs_result(_gemm_floor(shapes, -(-rows // b)), rows, W2_FLOP_PER_SAMPLE, rss)


def w3_floor(cfg):
    b = 128
    p1, p2 = b * 26 * 26, b * 11 * 11  # conv output positions (im2col rows)
    shapes = [(p1, 9, 32), (p2, 288, 64), (b, 1600, 10),               # forward
              (1600, b, 10), (b, 10, 1600),                            # dense dW, dX
              (288, p2, 64), (p2, 64, 288), (9, p1, 32)]               # conv2 dW, dX; conv1 dW
    images = cfg["w3_images"]
    rss = rss_mib()
    return _epochs_result(_gemm_floor(shapes, -(-images // b)), images, W3_FLOP_PER_SAMPLE, rss)


# --- W4: predict latency (1 row) and throughput (batch 1024), W1 and W2 models ------------------------------
def _timings(call, x, warmup, n):
    """Seconds of each of ``n`` calls ``call(x)`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call(x)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call(x)
        out.append(time.perf_counter() - t0)
    return out


def _latency(call, rows_1, rows_batch, cfg):
    import numpy as np
    times = np.array(_timings(call, rows_1, cfg["w4_warmup"], cfg["w4_calls"])) * 1e6
    batch_times = np.array(_timings(call, rows_batch, 3, cfg["w4_batch_calls"]))
    return {"row_us": float(np.median(times)), "row_p99_us": float(np.percentile(times, 99)),
            "batch_rows_per_s": len(rows_batch) / float(np.median(batch_times))}


def _w4(make_call, cfg):
    """Both models; make_call(model_name) -> callable(x) returning a NumPy array."""
    import numpy as np
    rng = np.random.default_rng(2)
    out = {}
    for name, width in (("w1", 8), ("w2", 784)):
        x = rng.random((cfg["w4_batch"], width), dtype=np.float32)
        for key, value in _latency(make_call(name), x[:1], x, cfg).items():
            out[f"{name}_{key}"] = value
    return out


def _layer_sizes(name):
    return (8, 10, 1) if name == "w1" else W2_LAYERS


def w4_glassnet(cfg):
    """glassnet's ``predict(x, verbose=0)`` for one row, ``predict(x, batch_size=len(x))`` for the batch."""
    import glassnet
    from glassnet.layers import Dense

    def make(name):
        sizes = _layer_sizes(name)
        glassnet.set_random_seed(1)
        layers = [Dense(n, activation="relu") for n in sizes[1:-1]]
        layers.append(Dense(sizes[-1], activation="sigmoid" if name == "w1" else "softmax"))
        model = glassnet.Sequential([glassnet.Input((sizes[0],))] + layers)
        return lambda x: model.predict(x, batch_size=len(x), verbose=0)
    return _w4(make, cfg)


def w4_numpy(cfg):
    """Hand-written float32 forward pass in plain NumPy (what a NumPy engine's predict can approach)."""
    import numpy as np

    def make(name):
        sizes = _layer_sizes(name)
        rng = np.random.default_rng(1)
        params = [(glorot(rng, i, o), np.zeros(o, np.float32)) for i, o in zip(sizes[:-1], sizes[1:])]

        def forward(x):
            for W, b in params[:-1]:
                x = x @ W
                x += b
                np.maximum(x, 0, out=x)
            W, b = params[-1]
            z = x @ W
            z += b
            if name == "w1":
                return 1 / (1 + np.exp(-z))
            z -= z.max(1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(1, keepdims=True)
            return z
        return forward
    return _w4(make, cfg)


def w4_torch(cfg):
    """``model(torch.from_numpy(x)).numpy()`` under ``torch.inference_mode()``."""
    torch = torch_threads()
    nn = torch.nn

    def make(name):
        sizes = _layer_sizes(name)
        mods = []
        for i, o in zip(sizes[:-2], sizes[1:-1]):
            mods += [nn.Linear(i, o), nn.ReLU()]
        mods += [nn.Linear(sizes[-2], sizes[-1]), nn.Sigmoid() if name == "w1" else nn.Softmax(dim=1)]
        model = nn.Sequential(*mods).eval()
        torch_glorot_(model)

        def call(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()
        return call
    return _w4(make, cfg)


def w4_keras(cfg):
    """``model.predict_on_batch(x)`` (Keras's ``predict()`` is ~10x slower per call; see peer-performance.md)."""
    keras = keras_module()

    def make(name):
        sizes = _layer_sizes(name)
        keras.utils.set_random_seed(1)
        layers = [keras.layers.Dense(n, activation="relu") for n in sizes[1:-1]]
        layers.append(keras.layers.Dense(sizes[-1], activation="sigmoid" if name == "w1" else "softmax"))
        model = keras.Sequential([keras.Input((sizes[0],))] + layers)
        return model.predict_on_batch
    return _w4(make, cfg)


def w4_sklearn(cfg):
    """``MLPClassifier.predict_proba(x)`` on a net fitted for one iteration on random data (weights don't matter)."""
    import warnings
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    def make(name):
        sizes = _layer_sizes(name)
        rng = np.random.default_rng(1)
        x = rng.random((256, sizes[0]), dtype=np.float32)
        y = rng.integers(0, 2 if name == "w1" else 10, 256)
        clf = MLPClassifier(sizes[1:-1], max_iter=1, random_state=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x, y)
        return clf.predict_proba
    return _w4(make, cfg)


# --- scaling sweep: one MLP training step (784-width^depth-10, relu, softmax/CE, Adam) ---------------------
def scale_points(cfg):
    """(axis, value, batch, width, depth) around the base point (batch 128, width 512, depth 2 = W2's step)."""
    base = cfg["scale_base"]
    points = []
    for axis in ("batch", "width", "depth"):
        for value in cfg["scale"][axis]:
            points.append(dict(base, axis=axis, value=value, **{axis: value}))
    return points


def scale_flops(batch, width, depth):
    sizes = [SCALE_INPUT] + [width] * depth + [SCALE_CLASSES]
    mults = sum(i * o for i, o in zip(sizes[:-1], sizes[1:]))
    return 2 * batch * (3 * mults - SCALE_INPUT * width)  # forward + dW + dX, no dX into the input


def _scale(step_fn_factory, cfg):
    import numpy as np
    steps = cfg["scale_steps"]
    rng = np.random.default_rng(3)
    out = []
    for p in scale_points(cfg):
        x = rng.random((p["batch"] * steps, SCALE_INPUT), dtype=np.float32)
        y = rng.integers(0, SCALE_CLASSES, len(x)).astype(np.int64)
        run = step_fn_factory(p, x, y)
        run(2)                                   # warm-up: 2 steps
        seconds = timed(run, steps)
        out.append(dict(p, step_ms=seconds / steps * 1e3,
                        gflops=scale_flops(p["batch"], p["width"], p["depth"]) * steps / seconds / 1e9))
    return {"points": out}


def scale_glassnet(cfg):
    """Steps are timed through ``fit(x, y, batch_size, epochs=1, shuffle=False)`` on exactly `steps` batches."""
    import glassnet
    from glassnet.layers import Dense

    def factory(p, x, y):
        glassnet.set_random_seed(1)
        model = glassnet.Sequential([glassnet.Input((SCALE_INPUT,))] +
                                    [Dense(p["width"], activation="relu") for _ in range(p["depth"])] +
                                    [Dense(SCALE_CLASSES, activation="softmax")])
        model.compile(optimizer=glassnet.optimizers.Adam(), loss="sparse_categorical_crossentropy")
        b = p["batch"]
        return lambda steps: model.fit(x[:steps * b], y[:steps * b], batch_size=b, epochs=1, shuffle=False, verbose=0)
    return _scale(factory, cfg)


def scale_torch(cfg):
    torch = torch_threads()
    nn = torch.nn

    def factory(p, x, y):
        mods, prev = [], SCALE_INPUT
        for _ in range(p["depth"]):
            mods += [nn.Linear(prev, p["width"]), nn.ReLU()]
            prev = p["width"]
        model = nn.Sequential(*mods, nn.Linear(prev, SCALE_CLASSES))
        torch_glorot_(model)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = nn.CrossEntropyLoss()
        X, Y, b = torch.from_numpy(x), torch.from_numpy(y), p["batch"]

        def run(steps):
            for s in range(steps):
                opt.zero_grad()
                loss = loss_fn(model(X[s * b:(s + 1) * b]), Y[s * b:(s + 1) * b])
                loss.backward()
                opt.step()
            loss.item()
        return run
    return _scale(factory, cfg)
