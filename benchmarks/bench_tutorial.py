"""The tutorial's 100-epoch fit (Pima, 8-10-1, MSE, SGD Nesterov, batch 32 = 2,000 steps), side by side.

Systems: glassnet, a hand-written NumPy loop (the floor a NumPy engine can reach), PyTorch eager and
Keras 3 (JAX backend) when installed (``make bench`` installs them). Each measurement runs in a fresh
process; systems are interleaved and the order rotates every repetition; we report medians and
paired ratios (system ÷ hand-written NumPy in the same repetition).

    python benchmarks/bench_tutorial.py [--reps 5] [--epochs 100]
Writes benchmarks/results/tutorial.json and prints a markdown table.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SYSTEMS = ("glassnet", "numpy", "torch", "keras")


def load_data():
    sys.path.insert(0, os.path.join(ROOT, "src"))
    import numpy as np
    data = np.loadtxt(os.path.join(ROOT, "src", "glassnet", "datasets", "data", "pima-indians-diabetes.csv"),
                      delimiter=",", dtype=np.float32)
    x, y = data[:, :8], data[:, 8]
    x_train, y_train, x_test, y_test = x[:614], y[:614], x[614:], y[614:]
    mean, std = x_train.mean(0), x_train.std(0)
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


def glorot(rng, fan_in, fan_out):
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    return rng.uniform(-limit, limit, (fan_in, fan_out)).astype("float32")


def time_twice(fit):
    """Seconds of a first call of ``fit()`` (compilation, caches) and of a second, warm one."""
    t0 = time.perf_counter()
    fit()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit()
    return first, time.perf_counter() - t0


def run_glassnet(epochs):
    import glassnet
    from glassnet.layers import Dense
    from glassnet.optimizers import SGD
    x, y, xt, yt = load_data()
    glassnet.set_random_seed(1)
    model = glassnet.Sequential([glassnet.Input((8,)), Dense(10, activation="relu"), Dense(1, activation="sigmoid")])
    model.compile(loss="mse", optimizer=SGD(learning_rate=0.01, momentum=0.9, nesterov=True), metrics=["accuracy"])
    first, warm = time_twice(lambda: model.fit(x, y, epochs=epochs, batch_size=32, verbose=0))
    acc = float(((model.predict(xt, verbose=0)[:, 0] > 0.5) == yt).mean())
    return first, warm, acc


def run_numpy(epochs):
    """Float32, preallocated buffers, one flat parameter/velocity vector, in-place updates."""
    import numpy as np
    x, y, xt, yt = load_data()
    rng = np.random.default_rng(1)
    flat = np.zeros(8 * 10 + 10 + 10 + 1, np.float32)
    grad = np.zeros_like(flat)
    vel = np.zeros_like(flat)
    W1, b1 = flat[:80].reshape(8, 10), flat[80:90]
    W2, b2 = flat[90:100].reshape(10, 1), flat[100:]
    dW1, db1 = grad[:80].reshape(8, 10), grad[80:90]
    dW2, db2 = grad[90:100].reshape(10, 1), grad[100:]
    W1[...] = glorot(rng, 8, 10)
    W2[...] = glorot(rng, 10, 1)
    y2 = y.reshape(-1, 1)
    lr, mu = np.float32(0.01), np.float32(0.9)
    tmp = np.empty_like(flat)

    def fit():
        nonlocal flat, vel
        for _ in range(epochs):
            order = rng.permutation(len(x))
            xs, ys = x[order], y2[order]
            total = correct = 0.0
            for s in range(0, len(x), 32):
                xb, yb = xs[s:s + 32], ys[s:s + 32]
                n = len(xb)
                z1 = xb @ W1
                z1 += b1
                a1 = np.maximum(z1, 0)
                z2 = a1 @ W2
                z2 += b2
                p = np.tanh(z2 * 0.5)
                p += 1
                p *= 0.5
                d = p - yb
                total += float(np.dot(d[:, 0], d[:, 0]))
                correct += float(((p > 0.5) == yb).sum())
                dz2 = d * (2.0 / n) * p * (1 - p)
                np.matmul(a1.T, dz2, out=dW2)
                db2[...] = dz2.sum(0)
                dz1 = dz2 @ W2.T
                dz1 *= z1 > 0
                np.matmul(xb.T, dz1, out=dW1)
                db1[...] = dz1.sum(0)
                vel *= mu
                np.multiply(grad, lr, out=tmp)
                vel -= tmp
                flat += mu * vel
                flat -= tmp
        return total, correct

    first, warm = time_twice(fit)
    z = np.maximum(xt @ W1 + b1, 0) @ W2 + b2
    acc = float(((z[:, 0] > 0) == yt).mean())
    return first, warm, acc


def run_torch(epochs):
    import numpy as np
    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads())
    x, y, xt, yt = load_data()
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 10), torch.nn.ReLU(), torch.nn.Linear(10, 1), torch.nn.Sigmoid())
    rng = np.random.default_rng(1)
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(glorot(rng, 8, 10).T.copy()))
        model[2].weight.copy_(torch.from_numpy(glorot(rng, 10, 1).T.copy()))
        model[0].bias.zero_()
        model[2].bias.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    X, Y = torch.from_numpy(x), torch.from_numpy(y.reshape(-1, 1))
    loss_fn = torch.nn.MSELoss()

    def fit():
        for _ in range(epochs):
            order = torch.randperm(len(X))
            xs, ys = X[order], Y[order]
            total = correct = 0.0
            for s in range(0, len(X), 32):
                xb, yb = xs[s:s + 32], ys[s:s + 32]
                opt.zero_grad()
                p = model(xb)
                loss = loss_fn(p, yb)
                loss.backward()
                opt.step()
                total += loss.item() * len(xb)
                correct += ((p > 0.5).float() == yb).sum().item()

    first, warm = time_twice(fit)
    with torch.no_grad():
        acc = float(((model(torch.from_numpy(xt))[:, 0] > 0.5).numpy() == yt).mean())
    return first, warm, acc


def run_keras(epochs):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras
    x, y, xt, yt = load_data()
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(10, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(loss="mse", optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9, nesterov=True),
                  metrics=["accuracy"])
    first, warm = time_twice(lambda: model.fit(x, y, epochs=epochs, batch_size=32, verbose=0))
    acc = float(((model.predict(xt, verbose=0)[:, 0] > 0.5) == yt).mean())
    return first, warm, acc


def available(system):
    module = {"torch": "torch", "keras": "keras"}.get(system)
    if module is None:
        return True
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec(%r) is None)" % module
    return subprocess.run([sys.executable, "-c", probe]).returncode == 0


def child(system, epochs):
    first, warm, acc = globals()["run_" + system](epochs)
    print(json.dumps({"system": system, "first_s": first, "warm_s": warm, "test_acc": acc}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--child", choices=SYSTEMS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.epochs)
    systems = [s for s in SYSTEMS if available(s)]
    missing = [s for s in SYSTEMS if s not in systems]
    runs = {s: [] for s in systems}
    for rep in range(args.reps):
        order = systems[rep % len(systems):] + systems[:rep % len(systems)]
        for system in order:
            out = subprocess.run([sys.executable, __file__, "--child", system, "--epochs", str(args.epochs)],
                                 capture_output=True, text=True, check=True)
            runs[system].append(json.loads(out.stdout.strip().splitlines()[-1]))
    steps = args.epochs * 20
    rows = []
    for system in systems:
        first = statistics.median(r["first_s"] for r in runs[system])
        warm = statistics.median(r["warm_s"] for r in runs[system])
        ratio = statistics.median(r["warm_s"] / n["warm_s"] for r, n in zip(runs[system], runs["numpy"]))
        vs_glassnet = statistics.median(r["warm_s"] / g["warm_s"] for r, g in zip(runs[system], runs["glassnet"]))
        rows.append({"system": system, "fit_first_s": first, "fit_warm_s": warm, "us_per_step": warm / steps * 1e6,
                     "ratio_vs_numpy": ratio, "ratio_vs_glassnet": vs_glassnet,
                     "test_acc_median": statistics.median(r["test_acc"] for r in runs[system])})
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {sys.platform}",
              "python": sys.version.split()[0], "reps": args.reps, "epochs": args.epochs, "rows": rows,
              "not_installed": missing, "runs": runs}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "tutorial.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"Tutorial fit, {args.epochs} epochs = {steps} steps, median of {args.reps} interleaved process runs")
    print("| system | fit #1 s | fit #2 s (warm) | µs/step warm | × hand-written NumPy | × glassnet | test acc |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['system']} | {r['fit_first_s']:.3f} | {r['fit_warm_s']:.3f} | {r['us_per_step']:.0f} | "
              f"{r['ratio_vs_numpy']:.2f} | {r['ratio_vs_glassnet']:.2f} | {r['test_acc_median']:.3f} |")
    if missing:
        print(f"(not installed, skipped: {', '.join(missing)}; `make bench` installs them)")


if __name__ == "__main__":
    main()
