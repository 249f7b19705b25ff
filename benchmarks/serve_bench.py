"""HTTP serving throughput and latency, glassnet beside two references, driven by wrk on loopback.

Servers (each its own process, one at a time, all on uvicorn + httptools (+ uvloop when installed), no access log):
  * glassnet serve, dynamic batching on (the default) and off (--max-batch-size 1), and on uvicorn's
    h11 parser (--http h11) to compare with the bare app on that same stack;
  * a minimal FastAPI + PyTorch server with the same weights (benchmarks/serve_peers.py torch);
  * a bare ASGI app that parses the JSON body and returns a constant: the ceiling of a Python
    server on this stack (benchmarks/serve_peers.py bare), and for context the same app on
    uvicorn's pure-Python HTTP parser h11 (what a plain `pip install uvicorn` runs).
Models: the tutorial network (8-10-1) and a 784-512-512-10 MLP, as plain Dense stacks so PyTorch can
load identical weights. Load: single-row TF-Serving-style ``{"instances": [row]}`` predict requests
from ``wrk -t1`` with 16 connections (and 1 connection), ``--duration`` seconds each after a warm-up.
wrk comes from Debian (apt-get install wrk).

    python benchmarks/serve_bench.py [--duration 10] [--quick]
Writes benchmarks/results/serve.json and benchmarks/results/SERVE.md and prints the table.
Targets (issue 7): at 16 connections on the tutorial model, glassnet >= 1.6x the PyTorch server's
throughput, >= 85% of the bare ASGI ceiling on the same server stack (reported for both parsers),
p50 < 2 ms and p99 < 4 ms.
"""
import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "src"))

MODELS = {"tutorial": ([8, 10, 1], ["relu", "sigmoid"]), "mlp": ([784, 512, 512, 10], ["relu", "relu", "softmax"])}
LUA = """wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_models(folder):
    """Each model as a glassnet repository entry and as a weights file the PyTorch server reads."""
    import numpy as np
    import glassnet as g
    from glassnet.saving import safetensors
    out = {}
    for name, (sizes, acts) in MODELS.items():
        g.set_random_seed(0)
        layers = [g.layers.Input((sizes[0],))] + [g.layers.Dense(n, activation=a) for n, a in zip(sizes[1:], acts)]
        model = g.Sequential(layers, name=name)
        path = os.path.join(folder, "models", name, "1", "model.glassnet")
        os.makedirs(os.path.dirname(path))
        model.save(path)
        dense = [layer for layer in model.layers if layer.weights]
        tensors = {}
        for i, layer in enumerate(dense):
            tensors[f"{i}.kernel"], tensors[f"{i}.bias"] = (np.asarray(w.value) for w in layer.weights)
        weights = os.path.join(folder, f"{name}.safetensors")
        with open(weights, "wb") as f:
            f.write(safetensors.dumps(tensors, {"activations": json.dumps(acts)}))
        rng = np.random.default_rng(0)
        row = [round(float(v), 4) for v in rng.random(sizes[0])]
        expected = model.predict(np.array([row], dtype="float32"), verbose=0)[0]
        out[name] = {"repo": os.path.join(folder, "models"), "weights": weights, "row": row, "expected": expected}
    return out


def wait_ready(url, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server not ready at {url}")


def start(system, model, info, port):
    py = sys.executable
    if system.startswith("glassnet"):
        cmd = [py, "-m", "glassnet", "serve", info["repo"], "--port", str(port), "--no-access-log",
               "--log-level", "warning", "--poll-seconds", "0"]
        if system == "glassnet-nobatch":
            cmd += ["--max-batch-size", "1"]
        if system == "glassnet-h11":  # uvicorn's pure-Python parser: the stack of the bare-h11 reference
            cmd += ["--http", "h11"]
        probe = f"http://127.0.0.1:{port}/v2/health/ready"
    elif system == "torch":
        cmd = [py, os.path.join(HERE, "serve_peers.py"), "torch", str(port), info["weights"]]
        probe = f"http://127.0.0.1:{port}/docs"
    else:
        cmd = [py, os.path.join(HERE, "serve_peers.py"), system, str(port)]
        probe = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_ready(probe, proc)
    return proc


def check_answer(system, model, info, port):
    """The server returns the right prediction (the bare app returns a constant by design)."""
    import numpy as np
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/{model}:predict",
                                 data=json.dumps({"instances": [info["row"]]}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        got = np.array(json.loads(r.read())["predictions"][0], dtype="float32")
    if not system.startswith("bare") and not np.allclose(got, info["expected"], rtol=1e-4, atol=1e-6):
        raise RuntimeError(f"{system} answered {got}, expected {info['expected']}")


def parse_ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_wrk(url, lua_path, connections, duration):
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", lua_path, url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: parse_ms(re.search(rf"\s{p}%\s+([\d.]+\w+)", out).group(1)) for p in ("50", "99")}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": lat["50"], "p99_ms": lat["99"], "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1) if errors else ""}


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--quick", action="store_true", help="3-second runs, 16 connections only")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    duration = 3 if args.quick else args.duration
    conns = (16,) if args.quick else (16, 1)
    systems = ["bare", "bare-h11", "torch", "glassnet", "glassnet-nobatch", "glassnet-h11"]
    try:
        import torch  # noqa: F401
        import fastapi  # noqa: F401
    except ImportError:
        systems.remove("torch")
        print("PyTorch/FastAPI not installed: the PyTorch reference is skipped (make bench installs it).")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        models = make_models(tmp)
        for model, info in models.items():
            lua = os.path.join(tmp, f"{model}.lua")
            with open(lua, "w") as f:
                f.write(LUA % json.dumps({"instances": [info["row"]]}))
            for system in systems:
                if system.endswith("h11") or system == "bare":
                    if model != "tutorial":  # the ceilings hardly depend on the body: measured on the tutorial row
                        continue
                port = free_port()
                proc = start(system, model, info, port)
                try:
                    check_answer(system, model, info, port)
                    url = f"http://127.0.0.1:{port}/v1/models/{model}:predict"
                    run_wrk(url, lua, 16, 1)  # warm-up
                    for c in conns:
                        r = run_wrk(url, lua, c, duration)
                        r.update(system=system, model=model, connections=c)
                        results.append(r)
                        print(f"{model:9s} {system:17s} c={c:2d}  {r['rps']:8.0f} req/s  p50 {r['p50_ms']:.2f} ms  "
                              f"p99 {r['p99_ms']:.2f} ms  non-2xx {r['non_2xx']}", flush=True)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    report = {"machine": machine(), "duration_s": duration, "results": results, "targets": targets(results)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "serve.json"), "w") as f:
        json.dump(report, f, indent=1)
    md = markdown(report)
    with open(os.path.join(args.out, "SERVE.md"), "w") as f:
        f.write(md)
    print(md)


def _find(results, system, model, c=16):
    return next((r for r in results if r["system"] == system and r["model"] == model and r["connections"] == c), None)


def targets(results):
    g, t, b = (_find(results, s, "tutorial") for s in ("glassnet", "torch", "bare"))
    out = []
    if g and t:
        ratio = g["rps"] / t["rps"]
        out.append({"target": ">= 1.6x the FastAPI+PyTorch server's throughput", "value": f"{ratio:.2f}x",
                    "met": ratio >= 1.6})
    if g and b:
        ratio = g["rps"] / b["rps"]
        out.append({"target": ">= 85% of the bare ASGI ceiling on the same stack (httptools, glassnet's default)",
                    "value": f"{ratio:.0%}", "met": ratio >= 0.85})
    gh, bh = _find(results, "glassnet-h11", "tutorial"), _find(results, "bare-h11", "tutorial")
    if gh and bh:
        ratio = gh["rps"] / bh["rps"]
        out.append({"target": ">= 85% of the bare ASGI ceiling on the same stack (h11, `glassnet serve --http h11`)",
                    "value": f"{ratio:.0%}", "met": ratio >= 0.85})
    if g:
        out.append({"target": "p50 < 2 ms", "value": f"{g['p50_ms']:.2f} ms", "met": g["p50_ms"] < 2})
        out.append({"target": "p99 < 4 ms", "value": f"{g['p99_ms']:.2f} ms", "met": g["p99_ms"] < 4})
    return out


def markdown(report):
    m = report["machine"]
    lines = [f"# Serving benchmark ({m['date']}, {m['cpu']}, {m['cores']} cores, Python {m['python']})", "",
             f"Single-row TF-Serving predict requests, wrk -t1 on loopback, {report['duration_s']} s per run.", "",
             "| model | server | connections | req/s | p50 ms | p99 ms | vs PyTorch | vs bare ASGI, same stack |",
             "|---|---|---|---|---|---|---|---|"]
    res = report["results"]
    for r in res:
        t = _find(res, "torch", r["model"], r["connections"])
        b = _find(res, "bare-h11" if r["system"].endswith("h11") else "bare", "tutorial", r["connections"])
        vs_t = f"{r['rps'] / t['rps']:.2f}x" if t and r["system"] != "torch" else ""
        vs_b = f"{r['rps'] / b['rps']:.0%}" if b and not r["system"].startswith("bare") else ""
        lines.append(f"| {r['model']} | {r['system']} | {r['connections']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {vs_t} | {vs_b} |")
    lines += ["", "Targets (tutorial model, 16 connections, glassnet with batching):", ""]
    lines += [f"- {t['target']}: {t['value']} — {'met' if t['met'] else 'NOT met'}" for t in report["targets"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
