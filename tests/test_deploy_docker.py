"""`glassnet deploy docker`: the build context is parsed and checked; its Python environment is rebuilt."""
import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import glassnet
from deploy_helpers import tutorial_model
from glassnet.deploy import _package, docker

SERVE_RUNTIME = {"numpy", "uvicorn", "httptools", "prometheus-client", "orjson", "threadpoolctl"}


@pytest.fixture
def context(tmp_path):
    model, x = tutorial_model(str(tmp_path / "pima.glassnet"))
    out = tmp_path / "ctx"
    info = docker.generate(tmp_path / "pima.glassnet", out)
    return out, info, model, x


def _stages(path):
    dfp = pytest.importorskip("dockerfile_parse")
    parser = dfp.DockerfileParser(path=str(path))
    stages, current = [], None
    for ins in parser.structure:
        if ins["instruction"] == "FROM":
            current = {"from": ins["value"], "ins": []}
            stages.append(current)
        elif current is not None:
            current["ins"].append((ins["instruction"], ins["value"]))
    args = {}  # global ARGs: the ones before the first FROM
    for ins in parser.structure:
        if ins["instruction"] == "FROM":
            break
        if ins["instruction"] == "ARG" and "=" in ins["value"]:
            k, v = ins["value"].split("=", 1)
            args[k] = v
    return stages, args


def test_dockerfile_properties(context):
    out, info, _, _ = context
    stages, args = _stages(out / "Dockerfile")
    assert len(stages) == 2, "multi-stage: a build stage and a runtime stage"
    base = args["BASE_IMAGE"]
    assert base == docker.DEFAULT_BASE and base.startswith("python:3.") and "-slim" in base
    assert base.split(":")[1][0].isdigit() and base.count(".") >= 2, "the base is pinned to a patch release"
    assert all(s["from"].startswith("${BASE_IMAGE}") for s in stages)
    build, runtime = stages
    assert build["from"].endswith("AS build") and runtime["from"].endswith("AS runtime")
    run = runtime["ins"]
    names = [i for i, _ in run]
    # the runtime stage runs as an unprivileged user from USER on, and installs nothing after it
    user = [v for i, v in run if i == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0") and int(user[-1].split(":")[0]) >= 1000
    assert "RUN" not in names[names.index("USER"):]
    assert any(i == "COPY" and v.startswith("--from=build /opt/venv") for i, v in run)
    health = [v for i, v in run if i == "HEALTHCHECK"]
    assert health and "/v2/health/ready" in health[0] and "--interval" in health[0]
    assert [v for i, v in run if i == "ENTRYPOINT"] == ['["glassnet"]']
    cmd = json.loads([v for i, v in run if i == "CMD"][0])
    assert cmd[:2] == ["serve", "/models"] and "--port" in cmd
    assert "COPY --chown=root:root models/ /models/" in (out / "Dockerfile").read_text()
    # the build stage installs wheels only, from requirements.txt and glassnet's wheel
    build_runs = " ".join(v for i, v in build["ins"] if i == "RUN")
    assert "--only-binary=:all: -r /tmp/requirements.txt" in build_runs and "--no-deps /tmp/wheels/glassnet-" in build_runs


def test_requirements_are_pinned_runtime_only(context):
    out, info, _, _ = context
    lines = [ln for ln in (out / "requirements.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    names = _package.requirement_names(lines)
    assert names == SERVE_RUNTIME
    assert not names & _package.DEV_PACKAGES
    assert all("==" in ln for ln in lines), lines
    ignore = (out / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*"):] == ["*", "!requirements.txt", "!wheels/", "!models/"]
    readme = (out / "README.md").read_text()
    assert "docker build -t glassnet-pima:" in readme and "docker run --rm -p 8501:8501" in readme


def test_wheel_and_baked_model(context):
    out, info, model, x = context
    wheels = glob.glob(str(out / "wheels" / "glassnet-*-py3-none-any.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as zf:
        names = zf.namelist()
        assert "glassnet/serve/protocol.py" in names and "glassnet/deploy/lambda_handler.py" in names
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        assert "Provides-Extra: serve" in meta
        assert "glassnet = glassnet.cli:main" in zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    baked = glassnet.load_model(str(out / "models" / "pima" / "1" / "model.glassnet"))
    np.testing.assert_array_equal(baked.predict(x, verbose=0), model.predict(x, verbose=0))


def test_mounted_models_variant(tmp_path):
    tutorial_model(str(tmp_path / "pima.glassnet"))
    docker.generate(tmp_path / "pima.glassnet", tmp_path / "ctx", mount=True)
    text = (tmp_path / "ctx" / "Dockerfile").read_text()
    assert "COPY --chown=root:root models/" not in text and "mount it at /models" in text
    assert "-v \"$PWD/models:/models:ro\"" in (tmp_path / "ctx" / "README.md").read_text()


def test_not_a_model_is_refused(tmp_path):
    bad = tmp_path / "bad.glassnet"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="could not be loaded"):
        docker.generate(bad, tmp_path / "ctx")
    from glassnet.deploy.cli import main
    assert main(["deploy", "docker", str(bad), "--out", str(tmp_path / "ctx")]) == 2


@pytest.mark.skipif(os.environ.get("GLASSNET_OFFLINE") == "1", reason="needs PyPI (GLASSNET_OFFLINE=1)")
def test_image_environment_rebuilt_without_docker(context, tmp_path):
    """The build stage's commands, run here in an empty venv: the server then answers from /models.

    What Docker would add (the base image, the user, the HEALTHCHECK) is checked above; this checks that
    requirements.txt plus the wheel are enough for the server — nothing missing, nothing from dev tools.
    """
    out, info, model, x = context
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--only-binary=:all:", "-r", str(out / "requirements.txt")],
                   check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", *glob.glob(str(out / "wheels" / "*.whl"))],
                   check=True)
    freeze = subprocess.run([py, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True)
    installed = {_package.canonical(d["name"]) for d in json.loads(freeze.stdout)}
    assert not installed & _package.DEV_PACKAGES
    code = (
        "import json, sys\n"
        "from glassnet.serve.app import InferenceServer\n"
        "from glassnet.serve.repository import ModelRepository\n"
        "import uvicorn, httptools, prometheus_client, orjson\n"
        f"s = InferenceServer(ModelRepository({str(out / 'models')!r}), poll_seconds=0)\n"
        "s.load()\n"
        "r = s.handle('POST', '/v1/models/pima:predict', {}, json.dumps({'instances': json.loads(sys.argv[1])}))\n"
        "print(r.status, r.body.decode())\n")
    res = subprocess.run([py, "-I", "-c", code, json.dumps(x.tolist())], capture_output=True, text=True,
                         cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    status, body = res.stdout.split(" ", 1)
    assert status == "200"
    np.testing.assert_allclose(json.loads(body)["predictions"], model.predict(x, verbose=0), rtol=1e-6)


def _docker_daemon():
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _docker_daemon(), reason="no Docker daemon reachable (docker info failed)")
def test_image_builds_and_serves(context):
    out, info, model, x = context
    tag = "glassnet-deploy-test:latest"
    subprocess.run(["docker", "build", "-q", "-t", tag, str(out)], check=True, timeout=900)
    user = subprocess.run(["docker", "image", "inspect", "-f", "{{.Config.User}}", tag], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert user == f"{docker.UID}:{docker.UID}"
    run = subprocess.run(["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--entrypoint", "python", tag,
                          "-c", "import glassnet.serve.app, os; print(os.getuid())"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == str(docker.UID), run.stderr
