"""The ``glassnet`` command: ``run`` a Keras script unchanged, ``tutorial``, ``serve``, ``deploy``, ``export``, ``info``."""
import argparse
import json
import os
import runpy
import sys


class UsageError(Exception):
    """Bad input to a command: printed as one line ``glassnet <command>: <message>``, exit status 2."""


def _user_errors(fn):
    """Run command ``fn``; a problem with the user's files or arguments (a missing or unreadable file, a folder
    where a file belongs, a file that is not what it claims, an output that exists) is one line on stderr and exit
    status 2, not a traceback."""
    import functools
    import zipfile

    @functools.wraps(fn)
    def run(args):
        try:
            return fn(args)
        except (UsageError, OSError, ValueError, zipfile.BadZipFile) as e:
            what = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror and e.filename else e
            print(f"glassnet {args.command}: {what}", file=sys.stderr)
            return 2
    return run


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def _port(text):
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1 to 65535, got {text}")
    return value


def cmd_run(args):
    import zipfile
    from .keras_import import install
    script = args.script
    if not os.path.isfile(script):
        print(f"glassnet run: no such script: {script}", file=sys.stderr)
        return 2
    if zipfile.is_zipfile(script):
        print(f"glassnet run: {script} is an archive (a model file?), not a Python script. To look inside a model "
              f"file: glassnet info {script}", file=sys.stderr)
        return 2
    if args.seed is not None:
        from .utils import set_random_seed
        set_random_seed(args.seed)
    sys.argv = [script] + list(args.args)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    install(spawned_too=True)  # (first on sys.path, before the script's folder: keras resolves to glassnet there too)
    runpy.run_path(script, run_name="__main__")
    return 0


@_user_errors
def cmd_tutorial(args):
    from .tutorial import main
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a file; give a folder for the model, the plots and the history.")
    main(out=args.out, epochs=args.epochs, seed=args.seed, verbose=args.verbose)
    return 0


def _example_row(served):
    sig = served.signature
    example = sig.metadata.get("example_instance")
    if isinstance(example, list) and len(sig.inputs) == 1 and len(example) == sig.inputs[0].shape[-1]:
        return example
    if len(sig.inputs) == 1 and len(sig.inputs[0].shape) == 2 and sig.inputs[0].dtype.kind == "f" \
            and sig.inputs[0].shape[1] <= 32:
        return [0.0] * sig.inputs[0].shape[1]
    return None


def print_banner(host, port, served, api_key=False):
    """The served models and ready-to-paste curl commands for both protocols."""
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    print(f"glassnet serve: {url}  (web page {url}/ , API docs {url}/docs , metrics {url}/metrics)")
    for m in served:
        print(f"  model {m.name!r} version {m.version} from {m.path}")
    if not served:
        return
    first = max((m for m in served if m.name == served[0].name), key=lambda m: m.version)
    row = _example_row(first)
    if row is None:
        print(f"Example requests for every model: {url}/docs")
        return
    auth = " -H 'Authorization: Bearer $GLASSNET_API_KEY'" if api_key else ""
    tf = json.dumps({"instances": [row]})
    v2 = json.dumps({"inputs": [{"name": first.signature.inputs[0].name, "shape": [1, len(row)],
                                 "datatype": first.signature.inputs[0].datatype, "data": row}]})
    print("Try it (TensorFlow Serving REST, then Open Inference Protocol / KServe V2):")
    print(f"  curl -s{auth} {url}/v1/models/{first.name}:predict -d '{tf}'")
    print(f"  curl -s{auth} {url}/v2/models/{first.name}/infer -d '{v2}'")
    print("Stop with Ctrl-C (in-flight requests finish first).", flush=True)


def cmd_serve(args):
    from .serve.server import run
    api_key = args.api_key or os.environ.get("GLASSNET_API_KEY") or None
    options = dict(model_name=args.model_name, version_policy=args.version_policy,
                   max_batch_size=args.max_batch_size, batch_timeout_ms=args.batch_timeout_ms,
                   request_timeout_s=args.request_timeout_s, max_body_bytes=args.max_body_bytes, api_key=api_key,
                   cors_origins=args.cors_origin or (), poll_seconds=args.poll_seconds,
                   access_log=not args.no_access_log, threads=args.threads)
    try:
        return run(args.path, host=args.host, port=args.port, workers=args.workers, log_level=args.log_level,
                   graceful_timeout_s=args.graceful_timeout_s, http=args.http,
                   on_ready=lambda server, served: print_banner(args.host, args.port, served, bool(api_key)),
                   **options)
    except (FileNotFoundError, ValueError) as e:
        print(f"glassnet serve: {e}", file=sys.stderr)
        return 2


@_user_errors
def cmd_export(args):
    from .saving import load_model
    if not os.path.isfile(args.model):
        raise UsageError(f"no such model file: {args.model}")
    if os.path.realpath(args.out) == os.path.realpath(args.model):
        raise UsageError(f"the output {args.out} is the model file itself; give another name, e.g. "
                         f"{os.path.splitext(args.model)[0]}.onnx")
    if os.path.isdir(args.out):
        raise UsageError(f"the output {args.out} is a folder; give a file name, e.g. {os.path.join(args.out, 'model.onnx')}")
    if not args.out.lower().endswith(".onnx"):
        print(f"glassnet export: note: {args.out} does not end in .onnx (written as ONNX anyway)", file=sys.stderr)
    model = load_model(args.model, compile=False)
    model.export_onnx(args.out, opset=args.opset)
    print(f"Wrote {args.out} (ONNX opset {args.opset}, dynamic batch) from {args.model}")
    return 0


def _info_onnx(path):
    try:
        import onnx
    except ImportError:
        raise UsageError("reading ONNX files needs the onnx package: pip install 'glassnet[onnx]'") from None
    try:
        proto = onnx.load(path)
    except OSError:
        raise
    except Exception as e:  # protobuf's DecodeError and friends: not an ONNX file
        raise UsageError(f"{path} is not a readable ONNX file ({type(e).__name__}: {e}).") from None

    def describe(values):
        out = []
        for v in values:
            dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            out.append(f"{v.name} {onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)} {dims}")
        return ", ".join(out)

    print(f"{path}: ONNX model, opset {[o.version for o in proto.opset_import]}, producer {proto.producer_name} "
          f"{proto.producer_version}")
    print(f"inputs: {describe(proto.graph.input)}")
    print(f"outputs: {describe(proto.graph.output)}")
    print(f"nodes: {', '.join(n.op_type for n in proto.graph.node)}")
    for prop in proto.metadata_props:
        print(f"metadata {prop.key}: {prop.value}")


@_user_errors
def cmd_info(args):
    import zipfile
    from .saving import load_model, safetensors
    path = args.file
    if not os.path.exists(path):
        raise UsageError(f"no such file: {path}")
    if os.path.isdir(path):
        raise UsageError(f"{path} is a folder; give a model (.glassnet, .keras), weights (.safetensors) or ONNX file")
    kind = path.lower()
    if kind.endswith(".onnx"):
        _info_onnx(path)
        return 0
    if kind.endswith(".keras"):
        model = load_model(path, compile=False)
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("metadata.json")) if "metadata.json" in zf.namelist() else {}
        print(f"{path}: Keras 3 model file {json.dumps(meta)}")
        model.summary()
        return 0
    if kind.endswith(".safetensors"):
        with open(path, "rb") as f:
            tensors, meta = safetensors.loads(f.read(), path)
        print(f"{path}: {len(tensors)} tensors, metadata {meta}")
        for name, arr in tensors.items():
            print(f"  {name:40s} {str(arr.shape):16s} {arr.dtype}")
        return 0
    model = load_model(path, compile=False)
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
    print(f"{path}: glassnet model (format {config['format_version']}, saved by glassnet {config['glassnet_version']} "
          f"on {config['date_saved']})")
    print("signature:", json.dumps(config["signature"]))
    if config.get("metadata"):
        print("metadata:", json.dumps(config["metadata"]))
    model.summary()
    return 0


def version_text():
    """glassnet's version, NumPy's, whether the compiled kernels (glassnet[fast]) are in use, and whether
    convnet batches split over two threads (engine.parallel)."""
    import numpy as np
    from . import __version__
    from .engine import blas_pool, compiled, gemv, parallel
    if compiled.enabled():
        import numba
        kernels = f"compiled kernels on (numba {numba.__version__})"
    elif compiled.available():
        kernels = "compiled kernels off (GLASSNET_COMPILED=0)"
    else:
        kernels = "NumPy path only (pip install 'glassnet[fast]' adds the compiled kernels)"
    return (f"glassnet {__version__} (numpy {np.__version__}; {kernels}; {parallel.status()}; {gemv.status()}; "
            f"{blas_pool.status()})")


class _Version(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def add_serve_arguments(p):
    """The options of ``glassnet serve`` on parser ``p`` (also used by ``glassnet deploy`` to check --serve-arg)."""
    p.add_argument("path", help="a model file, one model's folder of versions, or a repository of models")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all; default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8501)
    p.add_argument("--workers", type=_positive_int, default=1, help="worker processes sharing the port (default 1)")
    p.add_argument("--model-name", default=None, help="name for a single model (default: the file or folder name)")
    p.add_argument("--version-policy", default="latest", help="latest | latest:N | all | specific:1,2")
    p.add_argument("--max-batch-size", type=int, default=64,
                   help="rows per model call when concurrent requests are batched (1 turns batching off)")
    p.add_argument("--batch-timeout-ms", type=float, default=0.0,
                   help="how long a batch waits for more requests when not full (default 0: take what is queued)")
    p.add_argument("--request-timeout-s", type=float, default=30.0, help="answer 503 after this long (0: no limit)")
    p.add_argument("--max-body-bytes", type=int, default=32 * 1024 * 1024, help="larger request bodies get 413")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (or X-API-Key) on model "
                                                   "endpoints; also read from $GLASSNET_API_KEY")
    p.add_argument("--cors-origin", action="append", help="allow browser requests from this origin (repeatable; "
                                                          "'*' for any). CORS is off by default")
    p.add_argument("--poll-seconds", type=float, default=2.0, help="how often to look for new versions (0: never)")
    p.add_argument("--graceful-timeout-s", type=float, default=30.0,
                   help="on SIGTERM, how long in-flight requests may take to finish")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS threads per worker (default 1, or what OMP_NUM_THREADS/OPENBLAS_NUM_THREADS say): "
                        "one inference thread per model already runs beside the event loop")
    p.add_argument("--no-access-log", action="store_true", help="no JSON access log lines on stderr")
    p.add_argument("--http", default="auto", choices=("auto", "httptools", "h11"),
                   help="uvicorn's HTTP/1.1 parser: httptools (C, the default when installed) or h11 (pure Python)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="glassnet", description="Keras-compatible neural networks on NumPy.")
    parser.add_argument("--version", action=_Version, help="print the versions, whether the compiled kernels are in "
                                                            "use and whether convnet batches split, then exit")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a Keras script unchanged, with its keras imports resolved to glassnet")
    p.add_argument("--seed", type=int, default=None, help="seed every random source first (reproducible runs)")
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("tutorial", help="train the tutorial network on the bundled Pima data and save it")
    p.add_argument("--out", default="runs/tutorial")
    p.add_argument("--epochs", type=_positive_int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    p.set_defaults(fn=cmd_tutorial)
    p = sub.add_parser("serve", help="serve models over HTTP: TensorFlow Serving REST + Open Inference Protocol (V2)",
                       description="Serve a model file (.glassnet/.keras) or a model repository laid out as "
                                   "<name>/<version>/model.glassnet. New versions are picked up without a restart.")
    add_serve_arguments(p)
    p.set_defaults(fn=cmd_serve)
    p = sub.add_parser("export", help="convert a model file to another format")
    p.add_argument("format", choices=["onnx"])
    p.add_argument("model", help="a .glassnet or .keras model file")
    p.add_argument("out", help="the file to write, e.g. model.onnx")
    p.add_argument("--opset", type=int, default=17)
    p.set_defaults(fn=cmd_export)
    p = sub.add_parser("info", help="print the architecture, signature and metadata of a model, weights or ONNX file")
    p.add_argument("file")
    p.set_defaults(fn=cmd_info)
    from .deploy.cli import add_deploy_parser
    add_deploy_parser(sub)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
