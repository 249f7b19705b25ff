"""The ``glassnet`` command: ``run`` a Keras script unchanged, ``tutorial``, ``info``."""
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


def cmd_info(args):
    import zipfile
    from .saving import native, safetensors
    path = args.file
    if path.endswith(".safetensors"):
        with open(path, "rb") as f:
            tensors, meta = safetensors.loads(f.read(), path)
        print(f"{path}: {len(tensors)} tensors, metadata {meta}")
        for name, arr in tensors.items():
            print(f"  {name:40s} {str(arr.shape):16s} {arr.dtype}")
        return 0
    model = native.load_model(path, compile=False)
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
    p = sub.add_parser("info", help="print the architecture, signature and metadata of a model or weights file")
    p.add_argument("file")
    p.set_defaults(fn=cmd_info)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
