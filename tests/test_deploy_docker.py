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


# --- re-runs, names, --mount-models, --serve-arg, file modes, --out, --image ----------------------------------

@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    tutorial_model(str(tmp / "A.glassnet"))
    tutorial_model(str(tmp / "B.glassnet"))
    return tmp


def _cli(capsys, *argv):
    from glassnet.deploy.cli import main
    rc = main(["deploy", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def _repository(root, layout, source):
    """A repository folder: {"My_Model": [1], ...} -> root/My_Model/1/model.glassnet."""
    for name, versions in layout.items():
        for v in versions:
            (root / name / str(v)).mkdir(parents=True)
            shutil.copyfile(source, root / name / str(v) / "model.glassnet")
    return root


def test_rerun_replaces_the_staged_models(two_models, tmp_path, capsys):
    out = tmp_path / "ctx"
    assert _cli(capsys, "docker", two_models / "A.glassnet", "--out", out)[0] == 0
    assert _cli(capsys, "docker", two_models / "B.glassnet", "--out", out)[0] == 0
    assert sorted(os.listdir(out / "models")) == ["b"], "the image would serve the previous model too"
    (out / "keep.txt").write_text("not the generator's")
    # a refused model leaves the staged repository as it was, and nothing else is touched
    bad = tmp_path / "bad.glassnet"
    bad.write_bytes(b"not a zip")
    rc, _, err = _cli(capsys, "docker", bad, "--out", out)
    assert rc == 2 and "could not be loaded" in err
    assert sorted(os.listdir(out / "models")) == ["b"] and (out / "keep.txt").exists()
    # the model may come from the folder being replaced
    staged = out / "models" / "b" / "1" / "model.glassnet"
    assert _cli(capsys, "docker", staged, "--out", out, "--name", "again")[0] == 0
    assert sorted(os.listdir(out / "models")) == ["again"]
    assert not [f for f in os.listdir(out) if f.startswith(".models-")]


def test_names_are_derived_from_a_repository(two_models, tmp_path, capsys):
    repo = _repository(tmp_path / "Repo_Folder", {"My_Model": [1, 2]}, two_models / "A.glassnet")
    rc, out, _ = _cli(capsys, "docker", repo, "--out", tmp_path / "ctx")
    assert rc == 0
    info_image = f"glassnet-my-model:{_package.image_tag(_package.glassnet_version())}"
    assert f"docker build -t {info_image} " in out
    assert "'my-model'" in out and "'My_Model'" in out, "the output says which name was derived"
    # the served name (the URL path) is still the folder name
    assert sorted(os.listdir(tmp_path / "ctx" / "models")) == ["My_Model"]
    assert sorted(os.listdir(tmp_path / "ctx" / "models" / "My_Model")) == ["1", "2"]
    assert _package.check_image(info_image)
    readme = (tmp_path / "ctx" / "README.md").read_text()
    assert "/v1/models/My_Model:predict" in readme
    # several models: the image is named after the repository folder, not after --out
    repo2 = _repository(tmp_path / "Team_Models", {"Alpha": [1], "beta": [3]}, two_models / "A.glassnet")
    info = docker.generate(repo2, tmp_path / "docker", check_model=False)
    assert info["image"].startswith("glassnet-team-models:") and info["app"] == "team-models"
    assert info["models"] == ["Alpha", "beta"]
    _package.check_image(info["image"])


@pytest.mark.parametrize("image", ["bad image name", "Glassnet-X:1", "x:tag with space", "x::1", "-x:1", "x:"])
def test_bad_image_names_are_refused(two_models, tmp_path, capsys, image):
    rc, _, err = _cli(capsys, "docker", two_models / "A.glassnet", "--out", tmp_path / "ctx", f"--image={image}")
    assert rc == 2 and "not a valid Docker image reference" in err and "Traceback" not in err
    assert not (tmp_path / "ctx").exists()


@pytest.mark.parametrize("image", ["pima", "registry.example.com:5000/team/pima:1.0-rc_1", "localhost/a/b",
                                   "ghcr.io/o/p@sha256:" + "a" * 64])
def test_good_image_names_are_accepted(image):
    assert _package.check_image(image) == image


def test_mount_models_run_commands(two_models, tmp_path, capsys):
    out = tmp_path / "build ctx"  # a space: the printed commands must quote it
    rc, printed, _ = _cli(capsys, "docker", two_models / "A.glassnet", "--out", out, "--mount-models")
    assert rc == 0
    import shlex
    run = shlex.split(next(line for line in printed.splitlines() if "docker run" in line))
    image = run[-1]
    assert image.startswith("glassnet-a:"), "the image is the last word: anything after it goes to glassnet"
    assert run[run.index("-v") + 1] == f"{out.resolve() / 'models'}:/models:ro"
    build = shlex.split(next(line for line in printed.splitlines() if "docker build" in line))
    assert build == ["docker", "build", "-t", image, str(out)]
    header = next(line for line in (out / "Dockerfile").read_text().splitlines() if "Run: docker run" in line)
    words = shlex.split(header.split("Run:", 1)[1])
    assert words[-1] == image and words[words.index("-v") + 1] == "$PWD/models:/models:ro"
    readme_runs = [shlex.split(line) for line in (out / "README.md").read_text().splitlines()
                   if line.startswith("docker run")]
    assert readme_runs and all("-v" in r and r.index("-v") < r.index(image) for r in readme_runs)


def test_serve_args_keep_the_cmd_valid_json(two_models, tmp_path):
    extra = ["--cors-origin", '"https://x"', "--cors-origin", "https://a\\b", "--max-batch-size", "32"]
    docker.generate(two_models / "A.glassnet", tmp_path / "ctx", serve_args=extra, check_model=False)
    stages, _ = _stages(tmp_path / "ctx" / "Dockerfile")
    (cmd,) = [v for i, v in stages[1]["ins"] if i == "CMD"]
    assert json.loads(cmd) == ["serve", "/models", "--host", "0.0.0.0", "--port", str(docker.PORT), *extra]


@pytest.mark.parametrize("args,message", [
    (["--port", "9000"], "--port"), (["--port=9000"], "--port"), (["--po", "9000"], "ambiguous"),
    (["--host", "127.0.0.1"], "--host"), (["--bogus"], "unrecognized arguments: --bogus"),
    (["--max-batch-size", "lots"], "invalid int value"), (["--http", "quic"], "invalid choice"),
    (["--workers"], "expected one argument"), (["extra-path"], "unrecognized arguments"), (["--help"], "help"),
])
def test_serve_args_are_checked_with_the_serve_parser(two_models, tmp_path, capsys, args, message):
    rc, out, err = _cli(capsys, "docker", two_models / "A.glassnet", "--out", tmp_path / "ctx",
                        *[f"--serve-arg={a}" for a in args])
    assert rc == 2 and message in err and err.startswith("glassnet deploy docker: --serve-arg")
    assert len(err.strip().splitlines()) == 1 and not out and not (tmp_path / "ctx").exists()


def test_serve_args_that_serve_accepts_pass(two_models, tmp_path, capsys):
    rc, _, err = _cli(capsys, "docker", two_models / "A.glassnet", "--out", tmp_path / "ctx",
                      "--serve-arg=--workers", "--serve-arg=2", "--serve-arg=--no-access-log",
                      "--serve-arg=--batch-timeout-ms=2.5")
    assert rc == 0, err
    cmd = json.loads((tmp_path / "ctx" / "Dockerfile").read_text().split("\nCMD ", 1)[1].splitlines()[0])
    assert cmd[-4:] == ["--workers", "2", "--no-access-log", "--batch-timeout-ms=2.5"]


def test_staged_files_are_world_readable_under_a_strict_umask(two_models, tmp_path):
    repo = _repository(tmp_path / "repo", {"pima": [1, 2]}, two_models / "A.glassnet")
    old = os.umask(0o077)
    try:
        docker.generate(repo, tmp_path / "ctx", check_model=False)
    finally:
        os.umask(old)
    ctx = tmp_path / "ctx"
    for path in [ctx / "models", ctx / "models" / "pima", ctx / "models" / "pima" / "1", ctx / "wheels"]:
        assert os.stat(path).st_mode & 0o777 == 0o755, path
    files = [ctx / "models" / "pima" / v / "model.glassnet" for v in ("1", "2")] + \
        list((ctx / "wheels").iterdir()) + [ctx / "Dockerfile", ctx / "requirements.txt"]
    for path in files:
        assert os.stat(path).st_mode & 0o777 == 0o644, path


@pytest.mark.parametrize("target", ["docker", "kubernetes", "lambda"])
def test_out_that_is_a_file_is_a_clean_error(two_models, tmp_path, capsys, target):
    afile = tmp_path / "afile"
    afile.write_text("x")
    extra = ["--no-zip"] if target == "lambda" else []
    rc, _, err = _cli(capsys, target, two_models / "A.glassnet", "--out", afile, *extra)
    assert rc == 2 and err.startswith(f"glassnet deploy {target}: --out {afile} is a file, not a folder")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    rc, _, err = _cli(capsys, target, two_models / "A.glassnet", "--out", afile / "sub", *extra)
    assert rc == 2 and "Not a directory" in err and "Traceback" not in err
    assert afile.read_text() == "x"
