"""Cold start of the AWS Lambda handler: import + model load + first prediction, in fresh processes.

    python benchmarks/bench_lambda_cold_start.py [--reps 15] [--python /path/to/python3.12]

Builds the Lambda zip of the tutorial model (`glassnet deploy lambda`, python3.12 runtime, x86_64
wheels from PyPI), unzips it, and starts a fresh interpreter per run with only the unzipped package
on its path (as Lambda's runtime does): it times `import glassnet.deploy.lambda_handler` (which
loads the model during the init phase) and the first invocation with an API Gateway HTTP API
event. Medians over the runs; also the zip's size. Results: benchmarks/results/lambda_cold_start.json.
What it does not include: Lambda fetching and unpacking the package and starting the runtime
(AWS-side, not measurable here) and the difference between Lambda's CPU share and this machine.
"""
import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from glassnet.deploy.lambda_handler import handler
t1 = time.perf_counter()
event = {"version": "2.0", "rawPath": "/v1/models/pima:predict", "headers": {"content-type": "application/json"},
         "requestContext": {"http": {"method": "POST", "path": "/v1/models/pima:predict"}, "stage": "$default"},
         "body": json.dumps({"instances": [[6, 148, 72, 35, 0, 33.6, 0.627, 50]]}), "isBase64Encoded": False}
r = handler(event, None)
t2 = time.perf_counter()
assert r["statusCode"] == 200, r
r = handler(event, None)
t3 = time.perf_counter()
print(json.dumps({"import_and_load": t1 - t0, "first_invoke": t2 - t1, "warm_invoke": t3 - t2}))
"""


def find_python(version):
    for py in sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python{version}"))) + \
            [p for p in [shutil.which(f"python{version}")] if p]:
        if subprocess.run([py, "-c", f"import sys; assert sys.version_info[:2] == {tuple(map(int, version.split('.')))}"],
                          capture_output=True).returncode == 0:
            return py
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--python", default=None, help="interpreter matching the runtime (default: find python3.12)")
    args = parser.parse_args()
    import glassnet
    from glassnet.deploy import aws_lambda
    from glassnet.tutorial import build_model
    py = args.python or find_python("3.12")
    runtime = "3.12"
    if py is None:  # fall back to this interpreter's version
        py, runtime = sys.executable, f"{sys.version_info.major}.{sys.version_info.minor}"
    work = tempfile.mkdtemp(prefix="glassnet-coldstart-")
    try:
        (x, y), _ = glassnet.datasets.pima.load_data()
        glassnet.set_random_seed(1)
        model = build_model(x)
        model.fit(x, y, epochs=5, verbose=0)
        model.save(os.path.join(work, "pima.glassnet"))
        info = aws_lambda.generate(os.path.join(work, "pima.glassnet"), os.path.join(work, "out"),
                                   python_version=runtime)
        root = os.path.join(work, "task")
        with zipfile.ZipFile(info["zip"]) as zf:
            zf.extractall(root)
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": root, "LAMBDA_TASK_ROOT": root,
               "PYTHONDONTWRITEBYTECODE": "1"}  # Lambda's disk is read-only: only shipped .pyc count
        runs = []
        for i in range(args.reps + 1):
            t = time.perf_counter()
            out = subprocess.run([py, "-s", "-c", CHILD], capture_output=True, text=True, env=env, cwd=root)
            wall = time.perf_counter() - t
            if out.returncode != 0:
                raise SystemExit(out.stderr)
            if i:  # the first run warms the file cache
                runs.append({**json.loads(out.stdout.strip().splitlines()[-1]), "process_wall": wall})
        med = {k: statistics.median(r[k] for r in runs) * 1000 for k in runs[0]}
        result = {"runtime": f"python{runtime}", "interpreter": py, "reps": args.reps,
                  "median_ms": {k: round(v, 1) for k, v in med.items()},
                  "cold_start_ms": round(med["import_and_load"] + med["first_invoke"], 1),
                  "zipped_bytes": info["zipped_bytes"], "unzipped_bytes": info["unzipped_bytes"],
                  "installed": info["installed"], "date": time.strftime("%Y-%m-%d"), "runs_s": runs}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "lambda_cold_start.json"), "w") as f:
        json.dump(result, f, indent=1)
    m = result["median_ms"]
    print(f"Lambda package (python{runtime}, x86_64): {result['zipped_bytes'] / 1e6:.1f} MB zipped, "
          f"{result['unzipped_bytes'] / 1e6:.1f} MB unzipped (limit 262.1 MB)")
    print("| step | median ms |\n|---|---|")
    print(f"| import handler + load model (init phase) | {m['import_and_load']:.1f} |")
    print(f"| first invocation (predict) | {m['first_invoke']:.1f} |")
    print(f"| cold start (sum) | {result['cold_start_ms']:.1f} |")
    print(f"| warm invocation | {m['warm_invoke']:.2f} |")
    print(f"| whole process (interpreter start to exit) | {m['process_wall']:.1f} |")
    return result


if __name__ == "__main__":
    main()
