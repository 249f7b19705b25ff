"""``glassnet deploy docker|kubernetes|lambda MODEL --out DIR``.

``glassnet.cli`` registers it with :func:`add_deploy_parser`; ``python -m glassnet.deploy.cli`` runs it alone.
"""
import argparse
import sys


def _docker(args):
    from . import docker
    info = docker.generate(args.model, args.out, name=args.name, image=args.image, base_image=args.base_image,
                           mount=args.mount_models, serve_args=args.serve_arg or ())
    print(f"Wrote a Docker build context to {args.out} (image {info['image']}, models {info['models']}).")
    print(f"  docker build -t {info['image']} {args.out}")
    print(f"  docker run --rm -p {info['port']}:{info['port']} {info['image']}")
    return 0


def _kubernetes(args):
    from . import kubernetes
    info = kubernetes.generate(args.model, args.out, name=args.name, image=args.image, namespace=args.namespace,
                               min_replicas=args.min_replicas, max_replicas=args.max_replicas,
                               cpu_target=args.cpu_target, cpu_request=args.cpu_request, cpu_limit=args.cpu_limit,
                               memory_request=args.memory_request, memory_limit=args.memory_limit,
                               model_pvc=args.model_pvc, api_key_secret=args.api_key_secret, workers=args.workers,
                               kserve_mode=args.kserve_mode, base_image=args.base_image,
                               serve_args=args.serve_arg or ())
    print(f"Wrote Kubernetes {kubernetes.K8S_VERSION} manifests and a KServe InferenceService to {args.out} "
          f"(image {info['image']}; its build context is in {args.out}/docker).")
    print(f"  docker build -t {info['image']} {args.out}/docker && docker push {info['image']}")
    print(f"  kubectl apply -k {args.out}      # or: kubectl apply -f {args.out}/kserve/inferenceservice.yaml")
    return 0


def _lambda(args):
    from . import aws_lambda
    info = aws_lambda.generate(args.model, args.out, name=args.name, python_version=args.python,
                               arch=args.arch, build_zip=not args.no_zip)
    if "zip" in info:
        print(f"Wrote {info['zip']}: {info['zipped_bytes'] / 1e6:.1f} MB zipped, {info['unzipped_bytes'] / 1e6:.1f} MB "
              f"unzipped (Lambda's limit: {aws_lambda.UNZIPPED_LIMIT / 1e6:.0f} MB), for {info['runtime']} "
              f"{info['architecture']}; handler {info['handler']}.")
    print(f"The container-image variant is in {args.out}/container; commands in {args.out}/README.md.")
    return 0


def _safe(fn):
    """Refusals (bad model, bad options, pip failures) print one line and exit 2, not a traceback."""
    def run_safely(args):
        try:
            return fn(args)
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            print(f"glassnet deploy {args.target}: {e}", file=sys.stderr)
            return 2
    return run_safely


def add_deploy_parser(subparsers):
    """Register ``deploy`` (with ``docker``, ``kubernetes``, ``lambda``) on an argparse subparsers object."""
    p = subparsers.add_parser("deploy", help="generate a deployment: Docker image, Kubernetes/KServe, AWS Lambda",
                              description="Generate everything needed to deploy a model; see docs/deploy.md.")
    sub = p.add_subparsers(dest="target", required=True)

    def common(sp):
        sp.add_argument("model", help="a .glassnet/.keras file, or a repository laid out as <name>/<version>/model.*")
        sp.add_argument("--out", required=True, help="the folder to write")
        sp.add_argument("--name", default=None, help="the model's name (default: from the file name)")

    def image_opts(sp):
        from .docker import DEFAULT_BASE
        sp.add_argument("--image", default=None, help="image name (default glassnet-<name>:<glassnet version>)")
        sp.add_argument("--base-image", default=DEFAULT_BASE, help=f"Python base image (default {DEFAULT_BASE})")
        sp.add_argument("--serve-arg", action="append", default=None, metavar="ARG",
                        help="an extra argument for `glassnet serve` in the container (repeatable), "
                             "e.g. --serve-arg=--max-batch-size --serve-arg=32")

    d = sub.add_parser("docker", help="a Docker build context (multi-stage, slim, non-root, HEALTHCHECK)")
    common(d)
    image_opts(d)
    d.add_argument("--mount-models", action="store_true",
                   help="leave the models out of the image; mount them at /models at run time")
    d.set_defaults(fn=_safe(_docker))

    k = sub.add_parser("kubernetes", aliases=["k8s"],
                       help="Deployment, Service, HPA, PodDisruptionBudget and a KServe InferenceService")
    common(k)
    image_opts(k)
    k.add_argument("--namespace", default=None)
    k.add_argument("--min-replicas", type=int, default=2)
    k.add_argument("--max-replicas", type=int, default=10)
    k.add_argument("--cpu-target", type=int, default=70, help="HPA target CPU utilisation, percent")
    k.add_argument("--cpu-request", default="250m")
    k.add_argument("--cpu-limit", default="1")
    k.add_argument("--memory-request", default=None, help="default: from the model size, at least 256Mi")
    k.add_argument("--memory-limit", default=None, help="default: twice the request")
    k.add_argument("--workers", type=int, default=1)
    k.add_argument("--model-pvc", default=None, metavar="CLAIM",
                   help="serve the models from this PersistentVolumeClaim (mounted read-only at /models)")
    k.add_argument("--api-key-secret", default=None, metavar="SECRET",
                   help="require an API key, read from this Secret's key 'api-key'")
    k.add_argument("--kserve-mode", default="RawDeployment", choices=["RawDeployment", "Serverless"])
    k.set_defaults(fn=_safe(_kubernetes))

    lam = sub.add_parser("lambda", help="an AWS Lambda zip package (and container image) with the handler")
    common(lam)
    lam.add_argument("--python", default="3.12", choices=["3.10", "3.11", "3.12", "3.13"],
                     help="the Lambda Python runtime (default 3.12)")
    lam.add_argument("--arch", default="x86_64", choices=["x86_64", "arm64"])
    lam.add_argument("--no-zip", action="store_true", help="write the container variant only (no pip download)")
    lam.set_defaults(fn=_safe(_lambda))
    return p


def main(argv=None):
    parser = argparse.ArgumentParser(prog="glassnet")
    sub = parser.add_subparsers(dest="command", required=True)
    add_deploy_parser(sub)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
