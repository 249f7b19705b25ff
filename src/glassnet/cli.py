"""The ``glassnet`` command: ``run`` a Keras script unchanged, ``tutorial``, ``export``, ``info``."""
import argparse
import json
import os
import runpy
import sys


def cmd_run(args):
    from .keras_import import install
    script = args.script
    if not os.path.isfile(script):
        print(f"glassnet run: no such script: {script}", file=sys.stderr)
        return 2
    install()
    if args.seed is not None:
        from .utils import set_random_seed
        set_random_seed(args.seed)
    sys.argv = [script] + list(args.args)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
    return 0


def cmd_tutorial(args):
    from .tutorial import main
    main(out=args.out, epochs=args.epochs, seed=args.seed, verbose=args.verbose)
    return 0


def cmd_export(args):
    from .saving import load_model
    model = load_model(args.model, compile=False)
    model.export_onnx(args.out, opset=args.opset)
    print(f"Wrote {args.out} (ONNX opset {args.opset}, dynamic batch) from {args.model}")
    return 0


def _info_onnx(path):
    import onnx
    proto = onnx.load(path)

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


def cmd_info(args):
    import zipfile
    from .saving import load_model, safetensors
    path = args.file
    if path.endswith(".onnx"):
        _info_onnx(path)
        return 0
    if path.endswith(".keras"):
        model = load_model(path, compile=False)
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("metadata.json")) if "metadata.json" in zf.namelist() else {}
        print(f"{path}: Keras 3 model file {json.dumps(meta)}")
        model.summary()
        return 0
    if path.endswith(".safetensors"):
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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="glassnet", description="Keras-compatible neural networks on NumPy.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a Keras script unchanged, with its keras imports resolved to glassnet")
    p.add_argument("--seed", type=int, default=None, help="seed every random source first (reproducible runs)")
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("tutorial", help="train the tutorial network on the bundled Pima data and save it")
    p.add_argument("--out", default="runs/tutorial")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    p.set_defaults(fn=cmd_tutorial)
    p = sub.add_parser("export", help="convert a model file to another format")
    p.add_argument("format", choices=["onnx"])
    p.add_argument("model", help="a .glassnet or .keras model file")
    p.add_argument("out", help="the file to write, e.g. model.onnx")
    p.add_argument("--opset", type=int, default=17)
    p.set_defaults(fn=cmd_export)
    p = sub.add_parser("info", help="print the architecture, signature and metadata of a model, weights or ONNX file")
    p.add_argument("file")
    p.set_defaults(fn=cmd_info)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
