"""``glassnet deploy docker|kubernetes|lambda MODEL --out DIR``.

``glassnet.cli`` registers it with :func:`add_deploy_parser`; ``python -m glassnet.deploy.cli`` runs it alone.
"""
import argparse
import os
import shlex
import sys

q = shlex.quote


def _derived(info):
    """A line saying which deployment name was derived from the served model name, when they differ."""
    models = info["models"]
    if len(models) == 1 and info["app"] == models[0]:
        return None
    served = ", ".join(repr(m) for m in models)
    return (f"  name {info['app']!r} (Kubernetes objects and the default image; lowercase letters, digits and '-') "
            f"derived from {'the repository folder' if len(models) > 1 else 'the model name'}; "
            f"served as {served} (/v1/models/{models[0]}:predict).")


def _docker(args):
    from . import docker
    info = docker.generate(args.model, args.out, name=args.name, image=args.image, base_image=args.base_image,
                           mount=args.mount_models, serve_args=args.serve_arg or ())
    print(f"Wrote a Docker build context to {args.out} (image {info['image']}, models {info['models']}).")
    if _derived(info):
        print(_derived(info))
    mount = f" -v {q(os.path.abspath(os.path.join(args.out, 'models')) + ':/models:ro')}" if info["mount"] else ""
    print(f"  docker build -t {q(info['image'])} {q(args.out)}")
    print(f"  docker run --rm -p {info['port']}:{info['port']}{mount} {q(info['image'])}")
    return 0


def _kubernetes(args):
    from . import kubernetes
    info = kubernetes.generate(args.model, args.out, name=args.name, image=args.image, namespace=args.namespace,
                               min_replicas=args.min_replicas, max_replicas=args.max_replicas,
                               cpu_target=args.cpu_target, cpu_request=args.cpu_request, cpu_limit=args.cpu_limit,
                               memory_request=args.memory_request, memory_limit=args.memory_limit,
                               model_pvc=args.model_pvc, api_key_secret=args.api_key_secret, workers=args.workers,
                               kserve_mode=args.kserve_mode, base_image=args.base_image,
                               serve_args=args.serve_arg or (), concurrency_target=args.concurrency_target)
    print(f"Wrote Kubernetes {kubernetes.K8S_VERSION} manifests and a KServe InferenceService to {args.out} "
          f"(image {info['image']}; its build context is in {os.path.join(args.out, 'docker')}).")
    if _derived(info):
        print(_derived(info))
    print(f"  docker build -t {q(info['image'])} {q(os.path.join(args.out, 'docker'))} && docker push {q(info['image'])}")
    print(f"  kubectl apply -k {q(args.out)}      # or: kubectl apply -f "
          f"{q(os.path.join(args.out, 'kserve', 'inferenceservice.yaml'))}")
    return 0


def _lambda(args):
    from . import aws_lambda
    info = aws_lambda.generate(args.model, args.out, name=args.name, python_version=args.python,
                               arch=args.arch, build_zip=not args.no_zip)
    MiB = aws_lambda.MiB
    if "zip" in info:
        print(f"Wrote {info['zip']}: {info['zipped_bytes'] / MiB:.1f} MiB zipped, {info['unzipped_bytes'] / MiB:.1f} "
              f"MiB unzipped (Lambda's limit: {aws_lambda.UNZIPPED_LIMIT / MiB:.0f} MiB unzipped, AWS's \"250 MB\"), "
              f"for {info['runtime']} {info['architecture']}; handler {info['handler']}.")
    else:
        print(f"--no-zip: no zip package; the function is the container image in "
              f"{os.path.join(args.out, 'container')} (for {info['runtime']} {info['architecture']}).")
    if _derived(info):
        print(_derived(info).replace("Kubernetes objects and the default image", "function, role and image"))
    print(f"The container-image variant is in {os.path.join(args.out, 'container')}; commands in "
          f"{os.path.join(args.out, 'README.md')}.")
    return 0


def _safe(fn):
    """Refusals (bad model, bad options, unusable --out, pip failures) print one line and exit 2, not a traceback."""
    def run_safely(args):
        try:
            return fn(args)
        except (ValueError, RuntimeError) as e:
            print(f"glassnet deploy {args.target}: {e}", file=sys.stderr)
            return 2
        except OSError as e:  # FileNotFoundError (our own messages), FileExistsError, PermissionError, ...
            msg = f"{e.strerror}: {e.filename}" if e.filename and e.strerror else str(e)
            print(f"glassnet deploy {args.target}: {msg}. Check the model path and --out.", file=sys.stderr)
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
    k.add_argument("--min-replicas", type=int, default=2, help="default 2; 0 (scale to zero) with --kserve-mode "
                                                                   "Serverless only")
    k.add_argument("--max-replicas", type=int, default=10)
    k.add_argument("--cpu-target", type=int, default=70, help="HPA target CPU utilisation, percent (1-100)")
    k.add_argument("--cpu-request", default="250m")
    k.add_argument("--cpu-limit", default="1")
    k.add_argument("--memory-request", default=None, help="default: from the model size, at least 256Mi")
    k.add_argument("--memory-limit", default=None, help="default: twice the request")
    k.add_argument("--workers", type=int, default=1)
    k.add_argument("--model-pvc", default=None, metavar="CLAIM",
                   help="serve the models from this PersistentVolumeClaim (mounted read-only at /models)")
    k.add_argument("--api-key-secret", default=None, metavar="SECRET",
                   help="require an API key, read from this Secret's key 'api-key'")
    k.add_argument("--kserve-mode", default="RawDeployment", choices=["RawDeployment", "Serverless"],
                   help="RawDeployment (default): the InferenceService scales on CPU with an HPA, no Knative. "
                        "Serverless: Knative's autoscaler on concurrency, --min-replicas 0 allowed (scale to zero)")
    k.add_argument("--concurrency-target", type=int, default=None, metavar="N",
                   help="Serverless only: in-flight requests per replica Knative scales at (default: Knative's)")
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
