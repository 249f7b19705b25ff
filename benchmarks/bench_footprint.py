"""Runtime dependency footprint of a model server: what `pip install` puts into an empty virtualenv.

    python benchmarks/bench_footprint.py [--only glassnet,torch,tensorflow] [--keep DIR]

Three stacks, each installed into its own fresh venv (python -m venv, nothing else), measured as the
bytes under site-packages minus those of the empty venv (pip itself), plus the number of
distributions pip installed:

* glassnet[serve]  — glassnet (a wheel of this checkout) with its serving extra: numpy, uvicorn,
                     httptools, prometheus-client, orjson, threadpoolctl.
* PyTorch CPU      — torch==2.13.0 (the CPU build; on this machine pip takes it from local disk)
                     + fastapi + uvicorn: the usual way a PyTorch model is put behind HTTP.
* TensorFlow CPU   — tensorflow-cpu + fastapi + uvicorn, installed the same way. Where it cannot be
                     installed (no wheel for this Python or platform, no network), the result says
                     why and reports the sizes of the published wheels from PyPI's JSON API instead,
                     labelled as such (download size of the wheels, not installed size).

Results: benchmarks/results/footprint.json and a Markdown table on stdout. The target in the
deployment issue is glassnet <= 1/10 of either peer.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "src"))
from glassnet.deploy._package import tree_size  # noqa: E402

STACKS = {
    "glassnet": {"label": "glassnet[serve]", "packages": None},  # filled with the wheel path
    "torch": {"label": "PyTorch 2.13.0 CPU + FastAPI + uvicorn", "packages": ["torch==2.13.0", "fastapi", "uvicorn"]},
    "tensorflow": {"label": "TensorFlow CPU + FastAPI + uvicorn", "packages": ["tensorflow-cpu", "fastapi", "uvicorn"]},
}


def site_packages(venv):
    out = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                          "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def distributions(venv):
    out = subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pip", "list", "--format=json"],
                         capture_output=True, text=True, check=True)
    return {d["name"]: d["version"] for d in json.loads(out.stdout)}


def measure(packages, workdir, name):
    venv = os.path.join(workdir, name)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    sp = site_packages(venv)
    base_size, base_dists = tree_size(sp), distributions(venv)
    t = time.perf_counter()
    proc = subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pip", "install",
                           "--disable-pip-version-check", "-q", *packages], capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        return {"installed": False, "error": (proc.stderr or proc.stdout).strip()[-1500:]}
    dists = distributions(venv)
    added = {k: v for k, v in dists.items() if k not in base_dists}
    top = sorted(((tree_size(os.path.join(sp, d)), d) for d in os.listdir(sp)
                  if os.path.isdir(os.path.join(sp, d)) and not d.endswith((".dist-info", "__pycache__"))),
                 reverse=True)[:8]
    return {"installed": True, "bytes": tree_size(sp) - base_size, "distributions": len(added),
            "versions": added, "install_seconds": round(seconds, 1),
            "largest_dirs_mb": {d: round(s / 1e6, 1) for s, d in top}}


def pypi_wheel_sizes(packages, python_tag):
    """Sizes of the wheels pip would download for ``packages`` (top level only), from PyPI's JSON API."""
    out = {}
    for name in packages:
        with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=30) as r:
            info = json.load(r)
        version = info["info"]["version"]
        wheels = [f for f in info["urls"] if f["packagetype"] == "bdist_wheel"
                  and (python_tag in f["filename"] or "py3-none-any" in f["filename"])
                  and ("manylinux" in f["filename"] and "x86_64" in f["filename"] or "none-any" in f["filename"])]
        out[name] = {"version": version, "wheel": wheels[0]["filename"] if wheels else None,
                     "bytes": wheels[0]["size"] if wheels else None}
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="glassnet,torch,tensorflow")
    parser.add_argument("--keep", default=None, help="build the venvs here and keep them")
    args = parser.parse_args()
    from glassnet.deploy._package import build_wheel
    workdir = args.keep or tempfile.mkdtemp(prefix="glassnet-footprint-")
    os.makedirs(workdir, exist_ok=True)
    wheel = build_wheel(os.path.join(workdir, "wheel"))
    STACKS["glassnet"]["packages"] = [f"{wheel}[serve]"]
    results = {"python": platform.python_version(), "machine": platform.machine(),
               "date": time.strftime("%Y-%m-%d"), "stacks": {}}
    try:
        for key in args.only.split(","):
            stack = STACKS[key]
            print(f"installing {stack['label']} ...", file=sys.stderr, flush=True)
            r = measure(stack["packages"], workdir, key)
            r["label"] = stack["label"]
            r["packages"] = [os.path.basename(p) for p in stack["packages"]]
            if not r["installed"] and key == "tensorflow":
                tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
                try:
                    r["pypi_wheels"] = pypi_wheel_sizes(["tensorflow-cpu"], tag)
                    r["note"] = ("not installable here; 'pypi_wheels' is the published wheel size (download, "
                                 "compressed), a lower bound of the installed size")
                except OSError as e:
                    r["pypi_wheels_error"] = str(e)
            results["stacks"][key] = r
            if not args.keep:
                shutil.rmtree(os.path.join(workdir, key), ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    g = results["stacks"].get("glassnet", {}).get("bytes")
    for key, r in results["stacks"].items():
        if g and r.get("bytes"):
            r["ratio_to_glassnet"] = round(r["bytes"] / g, 1)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "footprint.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"Python {results['python']} on {results['machine']}, {results['date']}\n")
    print("| serving stack | installed MB | distributions | × glassnet |")
    print("|---|---|---|---|")
    for key, r in results["stacks"].items():
        if r.get("bytes"):
            print(f"| {r['label']} | {r['bytes'] / 1e6:.1f} | {r['distributions']} | {r.get('ratio_to_glassnet', 1.0)} |")
        else:
            print(f"| {r['label']} | not installed: {r.get('error', '')[-200:]!r} | | |")
    return results


if __name__ == "__main__":
    main()
