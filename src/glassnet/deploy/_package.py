"""What every deployment target shares: the model repository, the pinned requirements, the wheel.

* :func:`stage_models` copies a model file (or a TF-Serving-style repository) into
  ``<out>/models/<name>/<version>/model.glassnet`` after checking that it loads, so what is baked into
  an image is exactly what ``glassnet serve`` reads.
* :func:`serving_requirements` pins the serving extra (``glassnet[serve]``) to the versions installed
  here — the ones this machine tested — and :func:`lambda_requirements` keeps only what the
  synchronous Lambda path imports (no HTTP server).
* :func:`build_wheel` writes a ``py3-none-any`` wheel of the glassnet that is running, offline, so a
  build context installs this exact code whether or not glassnet is on a package index.
"""
import base64
import hashlib
import importlib.metadata as metadata
import os
import re
import shutil
import tempfile
import zipfile

MODEL_SUFFIXES = (".glassnet", ".keras")
# The serving extra as the server declares it (pyproject ``serve``); used when the installed metadata
# does not list it (an older editable install).
SERVE_EXTRA = ["uvicorn>=0.30", "httptools>=0.6", "prometheus-client>=0.20", "orjson>=3.9", "threadpoolctl>=3.1"]
# what only the HTTP server process needs: the Lambda handler calls the app directly
HTTP_ONLY = {"uvicorn", "httptools", "uvloop", "threadpoolctl"}
# Python packages that must never end up in a runtime image or package
DEV_PACKAGES = {"pytest", "hypothesis", "matplotlib", "torch", "keras", "jax", "jaxlib", "scipy", "onnx",
                "onnxruntime", "h5py", "scikit-learn", "ray", "kubernetes-validate", "dockerfile-parse", "pip-tools"}
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # reproducible archives: no build time inside


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def model_name(path, name=None):
    """A model name that is also a valid Kubernetes name (DNS-1123 label): ``pima``, ``my-model``."""
    if name is None:
        base = os.path.basename(os.path.normpath(path))
        for suffix in MODEL_SUFFIXES:
            if base.endswith(suffix):
                base = base[:-len(suffix)]
        name = base
    clean = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    if not clean or not clean[0].isalpha():
        clean = ("m-" + clean).strip("-") if clean else "model"
    return clean


def _check_model_file(path):
    from ..saving import load_model
    try:
        load_model(path, compile=False)
    except Exception as e:
        raise ValueError(f"{path} could not be loaded as a glassnet model ({type(e).__name__}: {e}). "
                         "Pass a .glassnet or .keras file saved with model.save().") from None


def _stage(model, dest, name, check):
    """Copy MODEL into the (new, empty) folder ``dest``; returns the served names."""
    if os.path.isfile(model):
        if not model.endswith(MODEL_SUFFIXES):
            raise ValueError(f"{model} is not a model file: pass a .glassnet or .keras file (or a folder laid out "
                             "as <name>/<version>/model.glassnet).")
        if check:
            _check_model_file(model)
        n = model_name(model, name)
        vdir = os.path.join(dest, n, "1")
        os.makedirs(vdir, exist_ok=True)
        shutil.copyfile(model, os.path.join(vdir, "model" + os.path.splitext(model)[1]))
        return [n]
    if not os.path.isdir(model):
        raise FileNotFoundError(f"No model file or repository at {model}.")
    entries = sorted(e for e in os.listdir(model) if os.path.isdir(os.path.join(model, e)))
    # one model's folder of versions gets a name; a repository's folders keep theirs: they are the
    # served names (the URL paths), exactly as `glassnet serve` would serve the repository
    layout = {model_name(model, name): model} if entries and all(e.isdigit() for e in entries) else \
        {e: os.path.join(model, e) for e in entries}
    names = []
    for n, folder in layout.items():
        for v in sorted(e for e in os.listdir(folder) if e.isdigit()):
            files = sorted(f for f in os.listdir(os.path.join(folder, v)) if f.endswith(MODEL_SUFFIXES))
            if not files:
                continue
            src = os.path.join(folder, v, "model.glassnet" if "model.glassnet" in files else files[0])
            if check:
                _check_model_file(src)
            os.makedirs(os.path.join(dest, n, v), exist_ok=True)
            shutil.copyfile(src, os.path.join(dest, n, v, "model" + os.path.splitext(src)[1]))
            if n not in names:
                names.append(n)
    if not names:
        raise ValueError(f"{model} holds no model versions: lay it out as <name>/<version>/model.glassnet.")
    return names


def make_readable(path):
    """Files 0644, folders 0755 under ``path`` (and ``path``): whatever the umask, the image's non-root
    user can read what ``COPY`` puts in it (COPY keeps the build context's modes)."""
    if os.path.isfile(path):
        os.chmod(path, 0o644)
        return path
    os.chmod(path, 0o755)
    for folder, dirs, files in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(folder, d), 0o755)
        for f in files:
            full = os.path.join(folder, f)
            if not os.path.islink(full):
                os.chmod(full, 0o644)
    return path


def prepare_out(out, what="--out"):
    """Create the output folder; a clear error (not FileExistsError) when the path is a file."""
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"{what} {out} is a file, not a folder: pass a folder to write into (it is created if "
                         "missing).")
    os.makedirs(out, exist_ok=True)
    return out


def stage_models(model, out_dir, name=None, check=True):
    """Copy MODEL into ``out_dir/models`` laid out as ``<name>/<version>/model.<ext>``; returns the names.

    MODEL is a ``.glassnet``/``.keras`` file (served as version 1), one model's folder of numbered
    versions, or a repository of such folders. ``out_dir/models`` is the generator's own: it is
    replaced, so a re-run with another model does not leave the previous one in the image. The models
    are staged in a new folder first (the old one stays if MODEL is refused, and MODEL may lie inside
    it), then swapped in; files end up 0644 and folders 0755.
    """
    model = os.fspath(model)
    out_dir = prepare_out(out_dir)
    dest = os.path.join(out_dir, "models")
    staging = tempfile.mkdtemp(prefix=".models-", dir=out_dir)
    try:
        names = _stage(model, staging, name, check)
        make_readable(staging)
        if os.path.islink(dest) or os.path.isfile(dest):
            os.remove(dest)
        elif os.path.isdir(dest):
            shutil.rmtree(dest)
        os.rename(staging, dest)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
    return names


def app_name(model, names, name=None):
    """The name of the deployment (Kubernetes objects, image, Lambda function) as a DNS-1123 label.

    One model: its served name, made valid (``My_Model`` -> ``my-model``); several: ``--name`` or the
    repository folder's name. The served names (URL paths) are not changed.
    """
    if name:
        return model_name("", name)
    if len(names) == 1:
        return model_name("", names[0])
    return model_name(os.path.abspath(os.fspath(model)))


def _declared_serve_extra():
    try:
        reqs = metadata.requires("glassnet") or []
    except metadata.PackageNotFoundError:
        reqs = []
    out = []
    for r in reqs:
        spec, _, marker = r.partition(";")
        if re.search(r"""extra\s*==\s*["']serve["']""", marker):
            rest = re.sub(r"""(\s*and\s*)?extra\s*==\s*["']serve["'](\s*and\s*)?""", "", marker).strip()
            out.append(spec.strip() + (f"; {rest}" if rest else ""))
    return out or list(SERVE_EXTRA)


def _pin(requirement):
    """``uvicorn>=0.30`` -> ``uvicorn==0.54.0`` (the version installed here), marker kept."""
    spec, _, marker = requirement.partition(";")
    name = re.match(r"\s*([A-Za-z0-9_.-]+)", spec).group(1)
    try:
        pinned = f"{canonical(name)}=={metadata.version(name)}"
    except metadata.PackageNotFoundError:
        pinned = spec.strip()  # not installed here: keep the declared range
    return pinned + (f"; {marker.strip()}" if marker.strip() else "")


def serving_requirements():
    """Pinned requirement lines for the HTTP server: numpy plus the ``serve`` extra."""
    return [_pin("numpy>=1.24")] + [_pin(r) for r in _declared_serve_extra()]


def lambda_requirements():
    """Pinned requirement lines for the Lambda handler: the serving extra without the HTTP server."""
    return [r for r in serving_requirements() if canonical(re.match(r"[A-Za-z0-9_.-]+", r).group(0)) not in HTTP_ONLY]


def requirement_names(lines):
    return {canonical(re.match(r"\s*([A-Za-z0-9_.-]+)", line).group(1)) for line in lines
            if line.strip() and not line.lstrip().startswith("#")}


def glassnet_version():
    try:
        return metadata.version("glassnet")
    except metadata.PackageNotFoundError:
        from .. import __version__
        return __version__


def package_dir():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def package_files():
    """(absolute path, path inside site-packages) for every file of the glassnet package, caches left out."""
    root = package_dir()
    parent = os.path.dirname(root)
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if f.endswith((".pyc", ".pyo")):
                continue
            full = os.path.join(folder, f)
            yield full, os.path.relpath(full, parent).replace(os.sep, "/")


def copy_package(dest):
    """Copy the glassnet package (source, data files) into ``dest/glassnet``."""
    for full, rel in package_files():
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(full, target)


def build_wheel(dest_dir):
    """Write ``glassnet-<version>-py3-none-any.whl`` of the running package into ``dest_dir``; returns its path.

    Pure Python and reproducible (fixed timestamps). Its Requires-Dist lines are glassnet's own, so
    ``pip install glassnet-*.whl[serve]`` works as from an index; the build contexts install the
    pinned requirements first and the wheel with ``--no-deps``.
    """
    version = glassnet_version()
    dist_info = f"glassnet-{version}.dist-info"
    try:
        requires = metadata.requires("glassnet") or ["numpy>=1.24"]
    except metadata.PackageNotFoundError:
        requires = ["numpy>=1.24"]
    if not any("extra == \"serve\"" in r or "extra == 'serve'" in r for r in requires):
        requires = list(requires) + [f'{r.partition(";")[0].strip()}; '
                                     + (f'({r.partition(";")[2].strip()}) and ' if ";" in r else "")
                                     + 'extra == "serve"' for r in SERVE_EXTRA]
    extras = sorted({m.group(1) for r in requires for m in [re.search(r"""extra\s*==\s*["']([^"']+)""", r)] if m})
    meta = ["Metadata-Version: 2.1", "Name: glassnet", f"Version: {version}", "Requires-Python: >=3.10",
            "Summary: Keras-compatible neural networks on a readable, gradient-checked NumPy engine"]
    meta += [f"Provides-Extra: {e}" for e in extras] + [f"Requires-Dist: {r}" for r in requires]
    extra_files = {
        f"{dist_info}/METADATA": ("\n".join(meta) + "\n").encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: glassnet.deploy\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n",
        f"{dist_info}/entry_points.txt": b"[console_scripts]\nglassnet = glassnet.cli:main\n",
        f"{dist_info}/top_level.txt": b"glassnet\n",
    }
    os.makedirs(dest_dir, exist_ok=True)
    path = os.path.join(dest_dir, f"glassnet-{version}-py3-none-any.whl")
    record = []

    def add(zf, arcname, data):
        info = zipfile.ZipInfo(arcname, ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        zf.writestr(info, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{arcname},sha256={digest},{len(data)}")

    with zipfile.ZipFile(path, "w") as zf:
        for full, rel in package_files():
            with open(full, "rb") as f:
                add(zf, rel, f.read())
        for arcname, data in extra_files.items():
            add(zf, arcname, data)
        record.append(f"{dist_info}/RECORD,,")
        info = zipfile.ZipInfo(f"{dist_info}/RECORD", ZIP_DATE)
        info.external_attr = 0o644 << 16
        zf.writestr(info, "\n".join(record) + "\n")
    return path


def tree_size(path):
    """Bytes of every regular file under ``path`` (what an unzipped package or venv occupies, apparent size)."""
    total = 0
    for folder, _, files in os.walk(path):
        for f in files:
            full = os.path.join(folder, f)
            if not os.path.islink(full):
                total += os.path.getsize(full)
    return total


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="\n") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


# --- what a Docker image reference and `glassnet serve`'s arguments may be ------------------------------

# Docker's reference grammar (github.com/distribution/reference): [domain[:port]/]path[/path...][:tag][@digest]
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*(?::[0-9]+)?"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(rf"^(?:{_DOMAIN}/)?{_PATH}(?:/{_PATH})*(?::[\w][\w.-]{{0,127}})?"
                    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$")


def check_image(image, what="--image"):
    """Refuse what Docker would not take as an image reference (``bad image``, ``My_Image:1``)."""
    name = image.split("@")[0].rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image.split("@")[0]
    if not _IMAGE.match(image) or len(name) > 255:
        raise ValueError(f"{what} {image!r} is not a valid Docker image reference: use [registry/]name[:tag] with "
                         "a lowercase name (letters, digits, '.', '_', '-' between them), e.g. "
                         "registry.example.com/team/my-model:1.")
    return image


def image_tag(version):
    """A version as a Docker tag (``0.1.0+local`` -> ``0.1.0-local``)."""
    tag = re.sub(r"[^\w.-]", "-", version)[:128]
    return tag if re.match(r"\w", tag) else "v" + tag[:127]


class _ServeArgsRefused(Exception):
    pass


def _serve_parser():
    """The real ``glassnet serve`` options (glassnet.cli.add_serve_arguments) on a parser that raises
    ``_ServeArgsRefused`` instead of printing and exiting."""
    import argparse

    from ..cli import add_serve_arguments

    class Refusing(argparse.ArgumentParser):
        def error(self, message):
            raise _ServeArgsRefused(message)

        def exit(self, status=0, message=None):
            raise _ServeArgsRefused(message or "")

        def print_help(self, file=None):
            raise _ServeArgsRefused("-h/--help would only print the help")

    parser = Refusing(prog="glassnet serve")
    add_serve_arguments(parser)
    return parser


_UNSET = object()
OWNED_SERVE_ARGS = ("host", "port")  # the generators set these: the container port, probes and Service use them


def check_serve_args(serve_args, port):
    """Refuse ``--serve-arg`` values ``glassnet serve`` would reject, and ``--host``/``--port`` (ours).

    They are parsed by the real ``glassnet serve`` parser, so unknown flags, missing values, bad types
    and bad choices fail here rather than when the container starts.
    """
    serve_args = [str(a) for a in serve_args]
    if not serve_args:
        return []
    import argparse
    parser = _serve_parser()
    namespace = argparse.Namespace(**{k: _UNSET for k in OWNED_SERVE_ARGS})
    try:
        parsed = parser.parse_args(["/models", *serve_args], namespace)
    except _ServeArgsRefused as e:
        raise ValueError(f"--serve-arg {' '.join(serve_args)}: `glassnet serve` would refuse it ({e}); see "
                         "`glassnet serve --help` for its options, one --serve-arg per word "
                         "(--serve-arg=--workers --serve-arg=2).") from None
    owned = [k for k in OWNED_SERVE_ARGS if getattr(parsed, k) is not _UNSET]
    if owned:
        flags = " and ".join(f"--{k}" for k in owned)
        raise ValueError(f"--serve-arg {flags}: the generator sets the server's --host 0.0.0.0 and --port {port} (8080 "
                         "under KServe), which the container port, health checks and Service use; leave it out of "
                         "--serve-arg.")
    return serve_args
