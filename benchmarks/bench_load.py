"""Time to load the tutorial model file (issue target: < 20 ms), in-process after import, median of many loads.

    python benchmarks/bench_load.py [--reps 50]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()
    import glassnet
    from glassnet.tutorial import build_model
    (x, y), _ = glassnet.datasets.pima.load_data()
    glassnet.set_random_seed(1)
    model = build_model(x)
    model.fit(x, y, epochs=2, verbose=0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"glassnet": os.path.join(tmp, "pima.glassnet")}
        model.save(paths["glassnet"])
        try:
            model.save(os.path.join(tmp, "pima.keras"))
            paths["keras"] = os.path.join(tmp, "pima.keras")
        except ImportError as e:  # h5py (the keras extra) is not installed
            print(f"(.keras skipped: {e})")
        for kind, path in paths.items():
            glassnet.load_model(path)  # warm the file cache and lazy imports
            times = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                glassnet.load_model(path)
                times.append(time.perf_counter() - t0)
            results[kind] = {"median_ms": statistics.median(times) * 1000, "min_ms": min(times) * 1000,
                             "bytes": os.path.getsize(path)}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "load.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("| file | size | load, median ms | min ms |")
    print("|---|---|---|---|")
    for kind, r in results.items():
        print(f"| tutorial model (.{kind}) | {r['bytes']:,} B | {r['median_ms']:.2f} | {r['min_ms']:.2f} |")
    print(f"target: load < 20 ms -> {'met' if results['glassnet']['median_ms'] < 20 else 'NOT met'}")


if __name__ == "__main__":
    main()
