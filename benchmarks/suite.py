"""The performance suite: workloads W1-W5 for glassnet beside PyTorch eager, Keras 3 (JAX) and scikit-learn.

Workloads (defined in /work/shared/reference/peer-performance.md, which has the peers' reference figures):

* W1  the tutorial fit: Pima (bundled), 8-10 relu-1 sigmoid, MSE, SGD(0.01, momentum 0.9, nesterov), batch 32,
      100 epochs = 2,000 steps; fit #1 (fresh model, includes any JIT) and fit #2 (100 more epochs, warm).
      Also a hand-written float32 NumPy loop (the floor for a NumPy engine); sklearn uses log-loss (no MSE).
* W2  MLP 784-512 relu-512 relu-10 softmax, sparse categorical cross-entropy, Adam(1e-3), batch 128,
      60,000 SYNTHETIC rows (uniform pixels, uniform labels: no 60k dataset is bundled); epoch 1 (includes
      warm-up/XLA compilation) and epoch 2 (steady, used for ratios and targets).
* W3  the Keras MNIST convnet without its dropout (peer-performance.md specifies "conv32-pool-conv64-pool-dense10"):
      Conv2D(32, 3x3, relu) - MaxPool(2) - Conv2D(64, 3x3, relu) - MaxPool(2) - Flatten - Dense(10, softmax),
      Adam(1e-3), batch 128, 10,000 SYNTHETIC 28x28x1 images (the bundled MNIST has 5k); NHWC, torch NCHW
      (converted once, untimed). Epochs as W2.
* W2/W3 "floor": only the GEMMs of an epoch (same shapes, float32 NumPy, preallocated outputs) - the
      GEMM-bound floor the W2 target refers to, re-measured here instead of quoted.
* W4  predict latency: 2,000 single-row calls after 100 warm-up (median, p99) and batch-1024 throughput
      (median of 50 calls), on the W1 and W2 architectures; glassnet `predict(x, verbose=0)`, torch
      `model(x)` under inference_mode (NumPy in and out), Keras `predict_on_batch`, sklearn `predict_proba`.
* W5  import time: `python -c "import X"` in a fresh process (in-process import time, process wall time,
      RSS after import), after one discarded warm-up per module; run with a bytecode cache (as an installed
      package has) kept outside the source tree, even if the environment sets PYTHONDONTWRITEBYTECODE.
* Scaling sweep (glassnet and torch): one MLP training step (784-width^depth-10, Adam, batch 128, width 512,
      depth 2 at the base point), varying batch size, width and depth one at a time; time per step, GFLOP/s and
      how time grows with the work (fitted exponent of time vs FLOPs; 1.0 = proportional).

Method: every (workload, system) measurement runs in its own fresh process; within a repetition the workloads
run in turn and each workload's systems run one after another, the order rotating every repetition; tables
show medians (min-max) over repetitions, and ratios are PAIRED: system / reference within the same repetition,
then the median. Peak RSS is the child's ru_maxrss (whole process, imports and data included); "RSS growth"
is peak minus the RSS just before training. CPU used by other processes during each child (/proc/stat busy
minus our child's CPU) is recorded as "foreign CPU", since other work on the machine makes timings noisy.
Threads: library defaults, unless OMP_NUM_THREADS (etc.) is set in the environment, which is passed through
(torch.set_num_threads follows OMP_NUM_THREADS explicitly). Peers that are not installed are skipped.

    python benchmarks/suite.py [--quick] [--reps N] [--only W1,W3,scale] [--systems glassnet,torch,...]
Writes benchmarks/results/suite.json and benchmarks/results/RESULTS.md (and prints the markdown).
"""
import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

SYSTEMS = ("glassnet", "numpy", "floor", "torch", "keras", "sklearn")
PEER_MODULES = {"torch": ("torch",), "keras": ("keras", "jax"), "sklearn": ("sklearn",)}
WORKLOADS = {  # name: (title, systems that implement it)
    "W1": ("W1 tutorial fit (Pima 8-10-1, MSE, SGD nesterov, batch 32)", ("glassnet", "numpy", "torch", "keras",
                                                                           "sklearn")),
    "W2": ("W2 MLP 784-512-512-10, Adam, batch 128, synthetic rows", ("glassnet", "floor", "torch", "keras",
                                                                       "sklearn")),
    "W3": ("W3 convnet conv32-pool-conv64-pool-dense10, Adam, batch 128, synthetic images",
           ("glassnet", "floor", "torch", "keras")),
    "W4": ("W4 predict latency and throughput (W1 and W2 models)", ("glassnet", "numpy", "torch", "keras", "sklearn")),
    "W5": ("W5 import time", ("glassnet", "numpy", "torch", "keras", "sklearn")),
    "scale": ("Scaling sweep: one MLP training step", ("glassnet", "torch")),
}
IMPORTS = {"python": "sys", "glassnet": "glassnet", "numpy": "numpy", "torch": "torch", "keras": "keras",
           "sklearn": "sklearn"}
PRESETS = {
    # full: the numbers the targets are judged on (about 10 min on an idle 2-core machine with every peer)
    "full": {"reps": 4, "scale_reps": 2, "w1_epochs": 100, "w2_rows": 60000, "w3_images": 10000, "w4_calls": 2000,
             "w4_warmup": 100, "w4_batch": 1024, "w4_batch_calls": 50, "scale_steps": 20,
             "scale_base": {"batch": 128, "width": 512, "depth": 2},
             "scale": {"batch": [32, 128, 512, 2048], "width": [128, 256, 512, 1024], "depth": [1, 2, 4, 8]}},
    # quick: a 1-2 minute smoke run; reduced sizes (per-step costs and ratios stay comparable, noisier)
    "quick": {"reps": 1, "scale_reps": 1, "w1_epochs": 20, "w2_rows": 12800, "w3_images": 2560, "w4_calls": 500,
              "w4_warmup": 50, "w4_batch": 1024, "w4_batch_calls": 10, "scale_steps": 5,
              "scale_base": {"batch": 128, "width": 512, "depth": 2},
              "scale": {"batch": [32, 512, 2048], "width": [128, 512, 1024], "depth": [1, 2, 8]}},
    # tiny: structure only (the test suite's smoke test)
    "tiny": {"reps": 1, "scale_reps": 1, "w1_epochs": 1, "w2_rows": 256, "w3_images": 32, "w4_calls": 10,
             "w4_warmup": 2, "w4_batch": 64, "w4_batch_calls": 3, "scale_steps": 2,
             "scale_base": {"batch": 8, "width": 16, "depth": 1},
             "scale": {"batch": [8, 16], "width": [16, 32], "depth": [1, 2]}},
}
CHILD_ENV = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
                 PYTHONPATH=os.pathsep.join(p for p in (os.path.join(ROOT, "src"), os.environ.get("PYTHONPATH"))
                                            if p))
# W5 imports run with a bytecode cache (as a pip-installed package has), kept outside the source tree,
# even where the environment sets PYTHONDONTWRITEBYTECODE; the discarded warm-up import fills it.
IMPORT_ENV = dict(CHILD_ENV, PYTHONPYCACHEPREFIX=os.path.join(tempfile.gettempdir(), "glassnet-bench-pycache"))
IMPORT_ENV.pop("PYTHONDONTWRITEBYTECODE", None)
THREAD_ENV = ("PYTHONDONTWRITEBYTECODE", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
              "XLA_FLAGS")


# --- running one measurement ----------------------------------------------------------------------------
def installed(system):
    return all(importlib.util.find_spec(m) is not None for m in PEER_MODULES.get(system, ()))


def busy_cpu_s():
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    except (OSError, ValueError):
        return 0.0
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def child_main(spec, cfg):
    """Inside the child: run one workload function, add peak RSS and thread settings, print JSON."""
    import suite_workloads
    workload, system = spec.split(":")
    result = getattr(suite_workloads, f"{workload.lower()}_{system}")(cfg)
    result["peak_rss_mib"] = suite_workloads.peak_rss_mib()
    result["threads"] = suite_workloads.thread_info(system)
    print(json.dumps(result))


def run_child(workload, system, cfg, in_process=False):
    """One measurement in a fresh process (or in this one, for the smoke test). Never raises."""
    if workload == "W5":
        return run_import(system)
    if in_process:
        import suite_workloads
        try:
            result = getattr(suite_workloads, f"{workload.lower()}_{system}")(cfg)
        except Exception as e:  # noqa: BLE001 - a failed system is reported, not fatal
            return {"error": f"{type(e).__name__}: {e}"}
        result["peak_rss_mib"] = suite_workloads.peak_rss_mib()
        return result
    cmd = [sys.executable, os.path.abspath(__file__), "--child", f"{workload}:{system}", "--config", json.dumps(cfg)]
    return _measured_process(cmd, timeout=600)


def _measured_process(cmd, timeout, env=CHILD_ENV):
    busy0, mine0, t0 = busy_cpu_s(), children_cpu_s(), time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    wall = time.perf_counter() - t0
    mine = children_cpu_s() - mine0
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {out.returncode}: " + " | ".join(tail)}
    result = json.loads(lines[-1])
    result.update(process_wall_s=wall, child_cpu_s=mine, foreign_cpu_s=max(0.0, busy_cpu_s() - busy0 - mine))
    return result


IMPORT_CODE = ("import time, resource, json; t = time.perf_counter(); import {mod}; t = time.perf_counter() - t; "
               "print(json.dumps({{'import_ms': t * 1e3, 'peak_rss_mib': "
               "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))")


def run_import(system):
    """W5: `python -c "import X"`; wall_ms is the whole process (interpreter start included)."""
    result = _measured_process([sys.executable, "-c", IMPORT_CODE.format(mod=IMPORTS[system])], timeout=300,
                               env=IMPORT_ENV)
    if "process_wall_s" in result:
        result["wall_ms"] = result.pop("process_wall_s") * 1e3
    return result


# --- summaries --------------------------------------------------------------------------------------------
def ok_runs(runs):
    return [r for r in runs if r is not None and "error" not in r]


def stats(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize(runs):
    """Median/min/max of every numeric field over the successful repetitions."""
    good = ok_runs(runs)
    keys = [k for k, v in (good[0].items() if good else []) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {k: stats([r.get(k) for r in good]) for k in keys}


def paired(results, workload, system, ref, key, invert=False):
    """Median over repetitions of system[key] / ref[key] in the same repetition (ref / system if invert)."""
    wl = results.get(workload, {})
    a, b = wl.get(system), wl.get(ref)
    if not a or not b:
        return None
    ratios = []
    for x, y in zip(a["runs"], b["runs"]):
        if x and y and "error" not in x and "error" not in y and x.get(key) and y.get(key):
            ratios.append(y[key] / x[key] if invert else x[key] / y[key])
    return stats(ratios)


# --- targets ----------------------------------------------------------------------------------------------
# (workload, description, how it is measured, op, threshold). "ratio" entries are paired medians:
# (numerator system, denominator system, key); "value" entries are glassnet's median of a key.
TARGETS = [
    ("W1", "training within 2x of hand-written NumPy (warm fit)", ("ratio", "glassnet", "numpy", "fit2_s"), "<=", 2.0),
    ("W1", ">=4x faster than PyTorch (warm fit)", ("ratio", "torch", "glassnet", "fit2_s"), ">=", 4.0),
    ("W1", ">=4x faster than Keras/JAX (warm fit)", ("ratio", "keras", "glassnet", "fit2_s"), ">=", 4.0),
    ("W2", "faster than Keras 3/JAX (epoch 2)", ("ratio", "keras", "glassnet", "epoch2_s"), ">", 1.0),
    ("W2", ">=1.5x faster than PyTorch (epoch 2)", ("ratio", "torch", "glassnet", "epoch2_s"), ">=", 1.5),
    ("W2", "within 1.5x of the GEMM-bound floor (epoch 2)", ("ratio", "glassnet", "floor", "epoch2_s"), "<=", 1.5),
    ("W2", "peak RSS <= PyTorch's", ("ratio", "glassnet", "torch", "peak_rss_mib"), "<=", 1.0),
    ("W3", ">=1.25x faster than PyTorch eager (epoch 2)", ("ratio", "torch", "glassnet", "epoch2_s"), ">=", 1.25),
    ("W3", ">=3x faster than Keras/JAX (epoch 2)", ("ratio", "keras", "glassnet", "epoch2_s"), ">=", 3.0),
    ("W3", "peak RSS <= PyTorch's", ("ratio", "glassnet", "torch", "peak_rss_mib"), "<=", 1.0),
    ("W4", "1-row predict <= 10 us (W1 model)", ("value", "w1_row_us"), "<=", 10.0),
    ("W4", "1-row predict <= 50 us (W2 model)", ("value", "w2_row_us"), "<=", 50.0),
    ("W4", "batch-1024 throughput >= PyTorch's (W1 model)", ("ratio", "glassnet", "torch", "w1_batch_rows_per_s"),
     ">=", 1.0),
    ("W4", "batch-1024 throughput >= PyTorch's (W2 model)", ("ratio", "glassnet", "torch", "w2_batch_rows_per_s"),
     ">=", 1.0),
    ("W5", "import glassnet <= 150 ms (in-process import time)", ("value", "import_ms"), "<=", 150.0),
]


def judge_targets(results):
    out = []
    for workload, text, how, op, threshold in TARGETS:
        row = {"workload": workload, "target": text, "op": op, "threshold": threshold}
        if how[0] == "ratio":
            _, num, den, key = how
            s = paired(results, workload, num, den, key)
            missing = [x for x in (num, den) if not ok_runs(results.get(workload, {}).get(x, {}).get("runs", []))]
            unit = "x"
        else:
            s = (results.get(workload, {}).get("glassnet", {}).get("summary") or {}).get(how[1])
            missing = [] if s else ["glassnet"]
            unit = " ms" if how[1].endswith("_ms") else " us"
        if s is None:
            row.update(status="n/a", measured=None, detail=f"not measured ({', '.join(missing) or 'no data'})")
            out.append(row)
            continue
        m = s["median"]
        met = {"<=": m <= threshold, ">=": m >= threshold, ">": m > threshold}[op]
        # gap: by how much glassnet must improve to meet it (speed, time or memory factor)
        gap = (m / threshold) if op == "<=" else (threshold / m)
        row.update(status="met" if met else "NOT met", measured=m, min=s["min"], max=s["max"], gap_factor=gap,
                   detail=f"{m:.3g}{unit} ({s['min']:.3g}-{s['max']:.3g}) vs {op} {threshold:g}{unit}"
                   + ("" if met else f"; glassnet needs {gap:.2f}x improvement"))
        out.append(row)
    return out


# --- scaling sweep summary ----------------------------------------------------------------------------------
def scaling_summary(scale_results, base):
    """Per axis and point: median ms/step per system, GFLOP/s, growth vs the axis's first point, torch/glassnet."""
    import suite_workloads
    table = {}
    for system, entry in scale_results.items():
        for run in ok_runs(entry["runs"]):
            for p in run["points"]:
                key = (p["axis"], p["value"])
                table.setdefault(key, {}).setdefault(system, []).append(p["step_ms"])
    axes, exponents = {}, {}
    for (axis, value), per_system in table.items():
        probe = dict(base, **{axis: value})
        flops = suite_workloads.scale_flops(probe["batch"], probe["width"], probe["depth"])
        point = {"value": value, "flop_per_step": flops}
        for system, times in per_system.items():
            ms = statistics.median(times)
            point[system] = {"step_ms": ms, "gflops": flops / ms / 1e6}
        if "glassnet" in per_system and "torch" in per_system:
            pairs = [t / g for t, g in zip(per_system["torch"], per_system["glassnet"])]
            point["torch_over_glassnet"] = statistics.median(pairs)
        axes.setdefault(axis, []).append(point)
    for axis, points in list(axes.items()):
        points.sort(key=lambda p: p["value"])
        for system in scale_results:
            have = [p for p in points if system in p]
            if len(have) < 2:
                continue
            for p in have:
                p[system]["growth"] = p[system]["step_ms"] / have[0][system]["step_ms"]
            xs = [math.log(p["flop_per_step"]) for p in have]
            ys = [math.log(p[system]["step_ms"]) for p in have]
            mx, my = statistics.fmean(xs), statistics.fmean(ys)
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
            exponents.setdefault(axis, {})[system] = slope
    return {"axes": axes, "exponent": exponents}


# --- machine --------------------------------------------------------------------------------------------------
def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {}
    for dist in ("glassnet", "numpy", "numba", "torch", "keras", "jax", "jaxlib", "scikit-learn", "threadpoolctl"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu_model": cpu, "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "mem_gib": mem, "platform": platform.platform(), "python": platform.python_version(),
            "versions": versions, "thread_env": {k: os.environ.get(k) for k in THREAD_ENV},
            "glassnet_compiled": os.environ.get("GLASSNET_COMPILED", "1") != "0" and versions.get("numba") is not None,
            "loadavg_start": os.getloadavg()}


# --- markdown -------------------------------------------------------------------------------------------------
def fmt(s, digits=3, scale=1.0):
    if not s:
        return "-"
    med, lo, hi = s["median"] * scale, s["min"] * scale, s["max"] * scale
    if s["n"] == 1:
        return f"{med:.{digits}g}"
    return f"{med:.{digits}g} ({lo:.{digits}g}-{hi:.{digits}g})"


def ratio_cell(s):
    return fmt(s, 3) + "x" if s else "-"


def markdown(report):
    res, cfg = report["workloads"], report["config"]
    m = report["machine"]
    lines = [
        "# glassnet performance suite", "",
        f"{report['date']} · mode `{report['mode']}` · {report['reps_done']} of {cfg['reps']} repetitions "
        f"(scaling sweep {min(report['reps_done'], cfg['scale_reps'])})"
        f" · total {report['duration_s'] / 60:.1f} min", "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} CPUs, {m['mem_gib']} GiB, Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
        + "; thread env: " + (", ".join(f"{k}={v}" for k, v in m["thread_env"].items() if v) or "none set (library"
                              " defaults)") + f"; load average at start {m['loadavg_start'][0]:.2f}; glassnet's "
        + ("compiled kernels on (numba, glassnet[fast])" if m.get("glassnet_compiled") else
           "NumPy path only (no numba, or GLASSNET_COMPILED=0)") + ".", "",
        "Each measurement is a fresh process; systems interleaved with rotating order; medians (min-max) over "
        "repetitions; ratios are paired per repetition (system / reference), then the median. "
        f"W2 uses {cfg['w2_rows']:,} and W3 {cfg['w3_images']:,} **synthetic random** samples (no dataset of that "
        "size is bundled); W1 uses the bundled Pima data. Peak RSS = the child process's maximum (imports and data "
        "included); RSS growth = peak minus RSS just before training. See benchmarks/suite.py for the method.", ""]
    if report["skipped"]:
        lines += ["Skipped (not installed): " + ", ".join(f"{k} ({v})" for k, v in report["skipped"].items()), ""]
    if report["mode"] != "full":
        lines += [f"**{report['mode']} mode: reduced sizes; absolute times are not comparable with the full run.**",
                  ""]

    lines += ["## Targets", "", "| workload | target | measured (median, min-max) | status |", "|---|---|---|---|"]
    for t in report["targets"]:
        lines.append(f"| {t['workload']} | {t['target']} | {t['detail']} | **{t['status']}** |")
    lines.append("")

    def rows(workload):
        return [(s, e) for s, e in res.get(workload, {}).items()]

    def rss_cells(e):
        s = e["summary"]
        growth = None
        good = ok_runs(e["runs"])
        if good and "rss_start_mib" in good[0]:
            growth = stats([r["peak_rss_mib"] - r["rss_start_mib"] for r in good])
        return fmt(s.get("peak_rss_mib"), 4), fmt(growth, 3)

    def foreign(e):
        v = [r.get("foreign_cpu_s", 0.0) for r in ok_runs(e["runs"])]
        return f"{max(v):.1f}" if v else "-"

    def errors(e):
        bad = [r["error"] for r in e["runs"] if r and "error" in r]
        return f" ({len(bad)} failed: {bad[0][:80]})" if bad else ""

    if "W1" in res:
        steps = cfg["w1_epochs"] * 20
        lines += [f"## {WORKLOADS['W1'][0]}: {cfg['w1_epochs']} epochs = {steps:,} steps", "",
                  "| system | fit #1 s (incl. JIT) | fit #2 s (warm) | us/step warm | x hand-written NumPy (paired) "
                  "| x glassnet (paired) | test acc | peak RSS MiB | runs | max foreign CPU s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for s, e in rows("W1"):
            su = e["summary"]
            lines.append(f"| {s} | {fmt(su.get('fit1_s'))} | {fmt(su.get('fit2_s'))} | {fmt(su.get('us_per_step'))} | "
                         f"{ratio_cell(paired(res, 'W1', s, 'numpy', 'fit2_s'))} | "
                         f"{ratio_cell(paired(res, 'W1', s, 'glassnet', 'fit2_s'))} | {fmt(su.get('test_acc'))} | "
                         f"{fmt(su.get('peak_rss_mib'), 4)} | {len(ok_runs(e['runs']))}{errors(e)} | {foreign(e)} |")
        lines += ["", "sklearn: log-loss (MLPClassifier has no MSE). numpy: hand-written float32 loop "
                  "(benchmarks/bench_tutorial.py).", ""]
    for w, n in (("W2", cfg["w2_rows"]), ("W3", cfg["w3_images"])):
        if w not in res:
            continue
        lines += [f"## {WORKLOADS[w][0]}: {n:,} per epoch", "",
                  "| system | epoch 1 s (incl. warm-up/JIT) | epoch 2 s | samples/s (ep. 2) | GFLOP/s | x glassnet "
                  "(paired, ep. 2) | glassnet / system | peak RSS MiB | RSS growth MiB | runs | max foreign CPU s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for s, e in rows(w):
            su = e["summary"]
            peak, growth = rss_cells(e)
            label = "GEMM floor (numpy)" if s == "floor" else s
            lines.append(f"| {label} | {fmt(su.get('epoch1_s'))} | {fmt(su.get('epoch2_s'))} | "
                         f"{fmt(su.get('samples_per_s'), 4)} | {fmt(su.get('gflops'))} | "
                         f"{ratio_cell(paired(res, w, s, 'glassnet', 'epoch2_s'))} | "
                         f"{ratio_cell(paired(res, w, 'glassnet', s, 'epoch2_s'))} | {peak} | {growth} | "
                         f"{len(ok_runs(e['runs']))}{errors(e)} | {foreign(e)} |")
        lines += ["", "GEMM floor: only the epoch's GEMMs (forward, dW, dX; same shapes as im2col for W3), float32 "
                  "NumPy; its RSS is not a training footprint. Epoch 2 is used for ratios and targets.", ""]
    if "W4" in res:
        lines += [f"## {WORKLOADS['W4'][0]}", "",
                  f"{cfg['w4_calls']:,} single-row calls after {cfg['w4_warmup']} warm-up; batch of "
                  f"{cfg['w4_batch']:,}: median of {cfg['w4_batch_calls']} calls.", "",
                  "| model | system | 1-row median us | 1-row p99 us | x glassnet (1-row, paired) | batch rows/s | "
                  "glassnet / system throughput | peak RSS MiB | runs |", "|---|---|---|---|---|---|---|---|---|"]
        for model in ("w1", "w2"):
            for s, e in rows("W4"):
                su = e["summary"]
                lines.append(f"| {model.upper()} | {s} | {fmt(su.get(model + '_row_us'))} | "
                             f"{fmt(su.get(model + '_row_p99_us'))} | "
                             f"{ratio_cell(paired(res, 'W4', s, 'glassnet', model + '_row_us'))} | "
                             f"{fmt(su.get(model + '_batch_rows_per_s'), 4)} | "
                             f"{ratio_cell(paired(res, 'W4', 'glassnet', s, model + '_batch_rows_per_s'))} | "
                             f"{fmt(su.get('peak_rss_mib'), 4)} | {len(ok_runs(e['runs']))}{errors(e)} |")
        lines += ["", "Calls: glassnet `predict(x, verbose=0)` (batch: `batch_size=len(x)`); numpy hand-written "
                  "forward; torch `model(torch.from_numpy(x)).numpy()` in inference_mode; Keras `predict_on_batch`; "
                  "sklearn `predict_proba`.", ""]
    if "W5" in res:
        lines += [f"## {WORKLOADS['W5'][0]}", "",
                  "| module | in-process import ms | process wall ms (`python -c`) | wall minus bare python ms | "
                  "x glassnet (wall, paired) | RSS after import MiB | runs |", "|---|---|---|---|---|---|---|"]
        for s, e in rows("W5"):
            su = e["summary"]
            base = res["W5"].get("python", {}).get("summary", {}).get("wall_ms")
            extra = f"{su['wall_ms']['median'] - base['median']:.0f}" if su.get("wall_ms") and base else "-"
            lines.append(f"| {'(bare python)' if s == 'python' else IMPORTS[s]} | {fmt(su.get('import_ms'))} | "
                         f"{fmt(su.get('wall_ms'))} | {extra} | "
                         f"{ratio_cell(paired(res, 'W5', s, 'glassnet', 'wall_ms'))} | "
                         f"{fmt(su.get('peak_rss_mib'), 4)} | {len(ok_runs(e['runs']))}{errors(e)} |")
        lines.append("")
    sc = report.get("scaling")
    if sc:
        lines += [f"## {WORKLOADS['scale'][0]} (784-width^depth-10, relu, softmax CE, Adam)", "",
                  "Base point " + ", ".join(f"{k} {v}" for k, v in cfg["scale_base"].items())
                  + " (W2's step in the full run); one axis varied at a time; "
                  f"{cfg['scale_steps']} timed steps after 2 warm-up steps; medians over {cfg['scale_reps']} "
                  "repetitions. growth = time / time at the axis's first point; the exponent k fits "
                  "time ~ FLOPs^k along the axis (1 = cost proportional to the work, <1 = per-call overhead "
                  "dominates the small end).", ""]
        systems = [s for s in ("glassnet", "torch") if any(s in p for ps in sc["axes"].values() for p in ps)]
        for axis in ("batch", "width", "depth"):
            if axis not in sc["axes"]:
                continue
            head = "| " + axis + " | MFLOP/step | " + " | ".join(
                f"{s} ms/step | {s} GFLOP/s | {s} growth" for s in systems) + " | torch / glassnet |"
            lines += [head, "|" + "---|" * (3 + 3 * len(systems))]
            for p in sc["axes"][axis]:
                cells = []
                for s in systems:
                    q = p.get(s)
                    cells.append(f"{q['step_ms']:.3g} | {q['gflops']:.3g} | {q.get('growth', 1):.2f}" if q
                                 else "- | - | -")
                r = p.get("torch_over_glassnet")
                lines.append(f"| {p['value']} | {p['flop_per_step'] / 1e6:.3g} | " + " | ".join(cells)
                             + f" | {f'{r:.2f}x' if r else '-'} |")
            exps = sc["exponent"].get(axis, {})
            lines += ["", "Fitted exponent k (time ~ FLOPs^k): " + (", ".join(
                f"{s} {k:.2f}" for s, k in exps.items()) or "-"), ""]
    return "\n".join(lines) + "\n"


# --- main -----------------------------------------------------------------------------------------------------
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="~1-2 minute smoke run with reduced sizes")
    p.add_argument("--preset", choices=sorted(PRESETS), help=argparse.SUPPRESS)
    p.add_argument("--reps", type=int, help="repetitions (default: 5 full, 1 quick)")
    p.add_argument("--only", help="comma-separated subset of " + ",".join(WORKLOADS))
    p.add_argument("--systems", help="comma-separated subset of " + ",".join(SYSTEMS))
    p.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # smoke test: no child processes
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, json.loads(args.config))
    mode = args.preset or ("quick" if args.quick else "full")
    cfg = json.loads(json.dumps(PRESETS[mode]))
    if args.reps:
        cfg["reps"], cfg["scale_reps"] = args.reps, min(args.reps, cfg["scale_reps"])
    only = args.only.split(",") if args.only else list(WORKLOADS)
    wanted = args.systems.split(",") if args.systems else list(SYSTEMS)
    for name, allowed in (("--only", WORKLOADS), ("--systems", SYSTEMS)):
        bad = set(only if name == "--only" else wanted) - set(allowed)
        if bad:
            raise SystemExit(f"{name}: unknown {sorted(bad)}; choose from {','.join(allowed)}")
    skipped = {s: "not installed: " + "/".join(PEER_MODULES[s]) for s in wanted if not installed(s)}
    systems = [s for s in wanted if s not in skipped]
    plan = {w: [s for s in WORKLOADS[w][1] if s in systems] for w in WORKLOADS if w in only}
    if "W5" in plan:
        plan["W5"] = ["python"] + plan["W5"]
    results = {w: {s: {"runs": []} for s in plan[w]} for w in plan}

    machine, start = machine_info(), time.time()
    if "W5" in plan and not args.in_process:
        for s in plan["W5"]:  # warm the page cache; discarded
            run_import(s)
    for rep in range(cfg["reps"]):
        for w, syss in plan.items():
            if w == "scale" and rep >= cfg["scale_reps"]:
                continue
            k = rep % len(syss) if syss else 0
            for s in syss[k:] + syss[:k]:
                t0 = time.perf_counter()
                r = run_child(w, s, cfg, args.in_process)
                results[w][s]["runs"].append(r)
                status = r.get("error", "ok") if r else "?"
                log(f"[rep {rep + 1}/{cfg['reps']}] {w} {s}: {time.perf_counter() - t0:.1f} s {status[:200]}")
                if r and "threads" in r:
                    machine.setdefault("child_threads", {}).setdefault(s, r.pop("threads"))

        # write after every repetition, so an interrupted run still leaves its results so far
        report = write_report(args.out_dir, mode, cfg, machine, start, systems, skipped, results, rep + 1)
    print(report["markdown"])
    return report


def write_report(out_dir, mode, cfg, machine, start, systems, skipped, results, reps_done):
    """Summaries, targets and the markdown table from the runs so far; writes suite.json and RESULTS.md."""
    workloads = {w: {s: dict(e, summary=summarize(e["runs"])) for s, e in syss.items()}
                 for w, syss in results.items() if w != "scale"}
    scale = results.get("scale")
    machine = dict(machine, loadavg_end=os.getloadavg())
    report = {"suite": "glassnet performance suite (benchmarks/suite.py)", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "mode": mode, "config": cfg, "reps_done": reps_done, "machine": machine,
              "duration_s": time.time() - start, "systems": systems, "skipped": skipped, "workloads": workloads,
              "scaling_runs": scale, "scaling": scaling_summary(scale, cfg["scale_base"]) if scale else None}
    report["targets"] = judge_targets(workloads)
    md = markdown(report)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "suite.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out_dir, "RESULTS.md"), "w") as f:
        f.write(md)
    return dict(report, markdown=md)


if __name__ == "__main__":
    main()
