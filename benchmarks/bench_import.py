"""Import time of glassnet beside numpy alone (fresh process each, interleaved, medians).

    python benchmarks/bench_import.py [--reps 9]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(HERE), "src"), KERAS_BACKEND="jax")
CODE = "import time; t = time.perf_counter(); import {mod}; print(time.perf_counter() - t)"


def measure(module):
    out = subprocess.run([sys.executable, "-c", CODE.format(mod=module)], capture_output=True, text=True, env=ENV,
                         check=True)
    return float(out.stdout)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()
    modules = ["numpy", "glassnet"] + [m for m in ("torch", "keras") if subprocess.run(
        [sys.executable, "-c", f"import importlib.util,sys; sys.exit(importlib.util.find_spec('{m}') is None)"]
    ).returncode == 0]
    measure("glassnet")  # warm the file cache
    times = {m: [] for m in modules}
    for rep in range(args.reps):
        for m in modules[rep % len(modules):] + modules[:rep % len(modules)]:
            times[m].append(measure(m))
    result = {m: statistics.median(v) * 1000 for m, v in times.items()}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "import.json"), "w") as f:
        json.dump({"median_ms": result, "runs_s": times}, f, indent=1)
    print("| module | import, median ms |")
    print("|---|---|")
    for m, ms in result.items():
        print(f"| {m} | {ms:.0f} |")
    print(f"target: import glassnet <= 150 ms -> {'met' if result['glassnet'] <= 150 else 'NOT met'}")


if __name__ == "__main__":
    main()
