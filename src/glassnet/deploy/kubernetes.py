"""``glassnet deploy kubernetes MODEL --out DIR``: manifests for a Kubernetes cluster and for KServe.

DIR gets:

* ``deployment.yaml`` — the server with liveness ``/v2/health/live``, readiness
  ``/v2/health/ready`` and a startup probe, CPU/memory requests and limits, and a locked-down
  security context (non-root uid 10001, read-only root filesystem, no privilege escalation, all
  capabilities dropped, RuntimeDefault seccomp, no service-account token); an ``emptyDir`` at
  ``/tmp``; optionally the model repository from a PersistentVolumeClaim at ``/models``.
* ``service.yaml`` (ClusterIP), ``hpa.yaml`` (autoscaling/v2 on CPU), ``pdb.yaml`` (policy/v1,
  one pod always available), ``kustomization.yaml`` (``kubectl apply -k DIR``).
* ``kserve/inferenceservice.yaml`` — a KServe ``InferenceService`` whose predictor is the same
  container on KServe's port 8080; glassnet speaks the Open Inference Protocol (V2), so KServe's
  ``/v2/models/{name}/infer`` route reaches it natively.
* ``docker/`` — the image's build context (``glassnet deploy docker``), ``README.md`` with commands.

Every manifest is checked offline against the Kubernetes schemas of :data:`K8S_VERSION`
(``kubernetes-validate``) in tests/test_deploy_kubernetes.py; see :mod:`glassnet.deploy.validate`.
"""
import os
import re
from decimal import Decimal, InvalidOperation

from . import _package, _yaml, docker

K8S_VERSION = "1.30.0"  # the Kubernetes API the manifests are written for and validated against
KSERVE_PORT = 8080  # KServe routes to the predictor container's port 8080
MiB = 1024 * 1024


_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# resource.Quantity: a number and a suffix, binary (Ki..Ei), decimal (n, u, m, k, M..E) or an exponent (e3)
_QUANTITY = re.compile(r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                       r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
_SUFFIX = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60,
           "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": 10 ** 3, "M": 10 ** 6,
           "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18}


def check_dns_label(value, what, kind):
    """A DNS-1123 label (namespaces): lowercase letters, digits and '-', at most 63 characters."""
    if not (isinstance(value, str) and len(value) <= 63 and _DNS1123_LABEL.match(value)):
        raise ValueError(f"{what} {value!r} is not a valid {kind} name: Kubernetes needs lowercase letters, digits "
                         "and '-', starting and ending with a letter or digit, at most 63 characters "
                         "(e.g. ml-serving).")
    return value


def check_dns_subdomain(value, what, kind, example="pima-models"):
    """A DNS-1123 subdomain (Secrets, PersistentVolumeClaims): like a label, '.' allowed, at most 253 characters."""
    if not (isinstance(value, str) and len(value) <= 253 and _DNS1123_SUBDOMAIN.match(value)):
        raise ValueError(f"{what} {value!r} is not a valid {kind} name: Kubernetes needs lowercase letters, digits, "
                         "'-' and '.', starting and ending with a letter or digit, at most 253 characters "
                         f"(e.g. {example}).")
    return value


def quantity(value, what):
    """The value of a Kubernetes resource quantity (``250m`` -> 0.25, ``1Gi`` -> 1073741824); refuses others."""
    m = _QUANTITY.match(value.strip()) if isinstance(value, str) and value == value.strip() else None
    if not m:
        raise ValueError(f"{what} {value!r} is not a Kubernetes quantity: write a number with an optional suffix and "
                         "no space, e.g. 500m or 2 (CPU), 512Mi or 1Gi (memory).")
    try:
        number = Decimal(m.group("num"))
    except InvalidOperation:
        raise ValueError(f"{what} {value!r} is not a Kubernetes quantity.") from None
    suffix = m.group("suffix") or ""
    scale = Decimal(10) ** int(suffix[1:]) if suffix[:1] in ("e", "E") else Decimal(_SUFFIX.get(suffix, 1))
    amount = number * scale
    if amount <= 0:
        raise ValueError(f"{what} {value!r} must be more than zero, e.g. 500m (CPU) or 512Mi (memory).")
    return amount


def _label_value(value):
    """A label value (at most 63 of [A-Za-z0-9._-], alphanumeric at both ends): ``0.1.0+g1`` -> ``0.1.0_g1``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", value)[:63].strip("._-") or "unknown"


def _labels(app, version):
    return {"app.kubernetes.io/name": "glassnet", "app.kubernetes.io/instance": app,
            "app.kubernetes.io/version": _label_value(version), "app.kubernetes.io/component": "predictor"}


def _selector(app):
    return {"app.kubernetes.io/name": "glassnet", "app.kubernetes.io/instance": app}


def _metadata(name, labels, namespace):
    meta = {"name": name, "labels": labels}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _memory(models_bytes):
    """Requests/limits in MiB: the interpreter and NumPy (~120 MiB) plus room for the weights and batches."""
    model_mib = -(-models_bytes // MiB)
    request = max(256, 160 + 4 * model_mib)
    return f"{request}Mi", f"{2 * request}Mi"


def container_security_context():
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "runAsUser": docker.UID, "runAsGroup": docker.UID, "privileged": False,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def pod_security_context():
    return {"runAsNonRoot": True, "runAsUser": docker.UID, "runAsGroup": docker.UID, "fsGroup": docker.UID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def _probes(port):
    def get(path, **kw):
        return {"httpGet": {"path": path, "port": port}, "timeoutSeconds": 2, **kw}
    return {"startupProbe": get("/v2/health/live", periodSeconds=2, failureThreshold=30),
            "livenessProbe": get("/v2/health/live", periodSeconds=10, failureThreshold=3),
            "readinessProbe": get("/v2/health/ready", periodSeconds=5, failureThreshold=2)}


def _container(name, image, args, port, port_name, resources, env, mounts, pull_policy):
    c = {"name": name, "image": image, "imagePullPolicy": pull_policy, "args": args,
         "ports": [{"name": port_name, "containerPort": port, "protocol": "TCP"}] if port_name else
         [{"containerPort": port, "protocol": "TCP"}]}
    if env:
        c["env"] = env
    c.update(_probes(port_name or port))
    c["resources"] = resources
    c["securityContext"] = container_security_context()
    c["volumeMounts"] = mounts
    return c


def check_values(*, min_replicas=2, max_replicas=10, cpu_target=70, cpu_request="250m", cpu_limit="1",
                 memory_request=None, memory_limit=None, workers=1, namespace=None, model_pvc=None,
                 api_key_secret=None, kserve_mode="RawDeployment", concurrency_target=None):
    """Refuse (ValueError, naming the option and the fix) what Kubernetes or KServe would reject."""
    if kserve_mode not in ("RawDeployment", "Serverless"):
        raise ValueError(f"--kserve-mode must be RawDeployment or Serverless, got {kserve_mode!r}.")
    if max_replicas < 1:
        raise ValueError(f"--max-replicas {max_replicas}: it must be at least 1.")
    if min_replicas == 0 and kserve_mode != "Serverless":
        raise ValueError("--min-replicas 0 (scale to zero) needs --kserve-mode Serverless (Knative); a "
                         "HorizontalPodAutoscaler keeps at least 1 replica: pass --min-replicas 1 or more.")
    if not 0 <= min_replicas <= max_replicas:
        raise ValueError(f"Replicas must satisfy 0 <= --min-replicas <= --max-replicas (0 only with --kserve-mode "
                         f"Serverless); got min {min_replicas}, max {max_replicas}.")
    if not isinstance(cpu_target, int) or not 1 <= cpu_target <= 100:
        raise ValueError(f"--cpu-target {cpu_target}: the target CPU utilisation is a percentage of the CPU request "
                         "from 1 to 100 (the HPA needs more than 0, KServe at most 100), e.g. 70.")
    if concurrency_target is not None:
        if kserve_mode != "Serverless":
            raise ValueError("--concurrency-target is Knative's scale target: it needs --kserve-mode Serverless "
                             "(RawDeployment scales on --cpu-target).")
        if not isinstance(concurrency_target, int) or concurrency_target < 1:
            raise ValueError(f"--concurrency-target {concurrency_target}: in-flight requests per replica, at least 1.")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers {workers}: the server needs at least 1 worker process.")
    for request, limit, what in ((cpu_request, cpu_limit, "cpu"), (memory_request, memory_limit, "memory")):
        req = quantity(request, f"--{what}-request") if request is not None else None
        lim = quantity(limit, f"--{what}-limit") if limit is not None else None
        if req is not None and lim is not None and req > lim:
            raise ValueError(f"--{what}-request {request} is more than --{what}-limit {limit}: Kubernetes needs the "
                             "request to be at most the limit; raise the limit or lower the request.")
    if namespace is not None:
        check_dns_label(namespace, "--namespace", "namespace")
    if model_pvc is not None:
        check_dns_subdomain(model_pvc, "--model-pvc", "PersistentVolumeClaim")
    if api_key_secret is not None:
        check_dns_subdomain(api_key_secret, "--api-key-secret", "Secret", "pima-api-key")


def _double(memory):
    """Twice a memory quantity, in whole MiB (the default limit for a given request)."""
    return f"{-(-int(2 * quantity(memory, '--memory-request')) // MiB)}Mi"


def manifests(app, image, *, version="0.1.0", namespace=None, min_replicas=2, max_replicas=10, cpu_target=70,
              cpu_request="250m", cpu_limit="1", memory_request="256Mi", memory_limit="512Mi", port=docker.PORT,
              workers=1, model_pvc=None, api_key_secret=None, serve_args=(), pull_policy="IfNotPresent",
              kserve_mode="RawDeployment", concurrency_target=None):
    """The manifests as dicts: {"deployment": ..., "service": ..., "hpa": ..., "pdb": ..., "inferenceservice": ...}.

    ``min_replicas=0`` (scale to zero) is for KServe's Serverless mode only (Knative's autoscaler): the
    InferenceService gets ``minReplicas: 0`` and the Deployment and HorizontalPodAutoscaler, which cannot
    scale to zero, keep one replica. In Serverless mode the InferenceService scales on ``concurrency``
    (Knative's KPA; ``concurrency_target`` in-flight requests per replica, Knative's default when None),
    in RawDeployment mode on CPU through an HPA.
    """
    check_values(min_replicas=min_replicas, max_replicas=max_replicas, cpu_target=cpu_target,
                 cpu_request=cpu_request, cpu_limit=cpu_limit, memory_request=memory_request,
                 memory_limit=memory_limit, workers=workers, namespace=namespace, model_pvc=model_pvc,
                 api_key_secret=api_key_secret, kserve_mode=kserve_mode, concurrency_target=concurrency_target)
    _package.check_image(image)
    hpa_min = max(1, min_replicas)
    labels = _labels(app, version)
    resources = {"requests": {"cpu": cpu_request, "memory": memory_request},
                 "limits": {"cpu": cpu_limit, "memory": memory_limit}}
    env = []
    if api_key_secret:
        env.append({"name": "GLASSNET_API_KEY", "valueFrom": {"secretKeyRef": {"name": api_key_secret,
                                                                                 "key": "api-key"}}})
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes = [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]
    if model_pvc:
        mounts.append({"name": "models", "mountPath": "/models", "readOnly": True})
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": model_pvc, "readOnly": True}})

    def serve(p):
        return ["serve", "/models", "--host", "0.0.0.0", "--port", str(p)] + \
            (["--workers", str(workers)] if workers != 1 else []) + list(serve_args)

    pod_spec = {
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": 30,
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": _selector(app)}}],
        "containers": [_container("glassnet", image, serve(port), port, "http", resources, env, mounts,
                                  pull_policy)],
        "volumes": volumes,
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(app, labels, namespace),
        "spec": {
            "replicas": hpa_min,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": _selector(app)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels,
                                      "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                                                      "prometheus.io/path": "/metrics"}},
                         "spec": pod_spec},
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": _metadata(app, labels, namespace),
        "spec": {"type": "ClusterIP", "selector": _selector(app),
                 "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]},
    }
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _metadata(app, labels, namespace),
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app},
                 "minReplicas": hpa_min, "maxReplicas": max_replicas,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                     "type": "Utilization", "averageUtilization": cpu_target}}}],
                 "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}},
    }
    pdb = {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _metadata(app, labels, namespace),
        "spec": {"selector": {"matchLabels": _selector(app)},
                 ("minAvailable" if hpa_min > 1 else "maxUnavailable"): 1},
    }
    kserve_container = _container("kserve-container", image, serve(KSERVE_PORT), KSERVE_PORT, None, resources, env,
                                  mounts, pull_policy)
    annotations = {"serving.kserve.io/deploymentMode": kserve_mode}
    if kserve_mode == "RawDeployment":
        # KServe's HPA scales on cpu (or memory); KServe wants the CPU target as a 1-100 percentage
        annotations["serving.kserve.io/autoscalerClass"] = "hpa"
        scaling = {"scaleMetric": "cpu", "scaleTarget": cpu_target}
    else:
        # Knative's default autoscaler (KPA) scales on concurrency or rps, not cpu (that needs its HPA class)
        scaling = {"scaleMetric": "concurrency"}
        if concurrency_target is not None:
            scaling["scaleTarget"] = concurrency_target
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {**_metadata(app, labels, namespace), "annotations": annotations},
        "spec": {"predictor": {
            "minReplicas": min_replicas, "maxReplicas": max_replicas, **scaling,
            "automountServiceAccountToken": False,
            "securityContext": pod_security_context(),
            "containers": [kserve_container],
            "volumes": volumes,
        }},
    }
    return {"deployment": deployment, "service": service, "hpa": hpa, "pdb": pdb, "inferenceservice": isvc}


README = """\
# {app} on Kubernetes

Generated by `glassnet deploy kubernetes` (glassnet {version}); written for Kubernetes {k8s} and checked
against its schemas. Image: `{image}`.

## 1. Build and push the image

```bash
docker build -t {image} docker/
docker push {image}            # to a registry the cluster can pull from (ECR, Artifact Registry, ACR, ...)
```
{pvc_note}
## 2. Deploy

```bash
kubectl apply -k .            # Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget
kubectl rollout status deployment/{app}{ns_flag}
kubectl port-forward service/{app} {port}:{port}{ns_flag}
curl -s localhost:{port}/v2/health/ready
curl -s -X POST localhost:{port}/v1/models/{model}:predict -d '{{"instances": [[...one row...]]}}'
```
{secret_note}
## Or: KServe

```bash
kubectl apply -f kserve/inferenceservice.yaml
kubectl get inferenceservice {app}{ns_flag}        # READY True, then:
curl -s -H "Host: {app}-predictor.<namespace>.<domain>" http://$INGRESS/v2/models/{model}/infer -d @request.json
```

The predictor is the same container on port {kport}; glassnet implements the Open Inference Protocol (V2),
so KServe's V2 routes, health checks and metadata reach it unchanged. Deployment mode: `{kmode}`:
{kscale}.

## What the manifests guarantee

* Probes: startup and liveness on `/v2/health/live`, readiness on `/v2/health/ready`.
* Resources: requests cpu {cpu_request}, memory {memory_request}; limits cpu {cpu_limit}, memory {memory_limit}.
* Security: runs as uid {uid} (non-root), read-only root filesystem, no privilege escalation, all
  capabilities dropped, RuntimeDefault seccomp, no service-account token; `/tmp` is a small in-memory emptyDir.
* Availability: {min_r}–{max_r} replicas (HPA at {cpu_target}% CPU), rolling updates with no unavailable pod,
  a PodDisruptionBudget, pods spread across nodes.
"""


def generate(model, out, *, name=None, image=None, namespace=None, min_replicas=2, max_replicas=10, cpu_target=70,
             cpu_request="250m", cpu_limit="1", memory_request=None, memory_limit=None, model_pvc=None,
             api_key_secret=None, workers=1, serve_args=(), kserve_mode="RawDeployment", pull_policy="IfNotPresent",
             base_image=docker.DEFAULT_BASE, check_model=True, concurrency_target=None):
    """Write the manifests (and the image's build context in ``out/docker``); returns what was written.

    Every option is checked (:func:`check_values`) before anything is written. The Kubernetes object
    names are the model's name made a DNS-1123 label (``My_Model`` -> ``my-model``; ``app`` in the result);
    the model is still served under its own name (``models``).
    """
    check_values(min_replicas=min_replicas, max_replicas=max_replicas, cpu_target=cpu_target,
                 cpu_request=cpu_request, cpu_limit=cpu_limit, memory_request=memory_request,
                 memory_limit=memory_limit, workers=workers, namespace=namespace, model_pvc=model_pvc,
                 api_key_secret=api_key_secret, kserve_mode=kserve_mode, concurrency_target=concurrency_target)
    if image is not None:
        _package.check_image(image)
    _package.check_image(base_image, "--base-image")
    _package.check_serve_args(serve_args, docker.PORT)
    _package.prepare_out(out)
    built = docker.generate(model, os.path.join(out, "docker"), name=name, image=image, base_image=base_image,
                            mount=bool(model_pvc), serve_args=serve_args, check_model=check_model)
    app = built["app"]
    version = _package.glassnet_version()
    mem_req, mem_lim = _memory(_package.tree_size(os.path.join(out, "docker", "models")))
    if memory_request:
        mem_req, mem_lim = memory_request, _double(memory_request)
    elif memory_limit and quantity(mem_req, "memory request") > quantity(memory_limit, "--memory-limit"):
        mem_req = memory_limit
    memory_request, memory_limit = memory_request or mem_req, memory_limit or mem_lim
    docs = manifests(app, built["image"], version=version, namespace=namespace, min_replicas=min_replicas,
                     max_replicas=max_replicas, cpu_target=cpu_target, cpu_request=cpu_request, cpu_limit=cpu_limit,
                     memory_request=memory_request, memory_limit=memory_limit,
                     workers=workers, model_pvc=model_pvc, api_key_secret=api_key_secret, serve_args=serve_args,
                     pull_policy=pull_policy, kserve_mode=kserve_mode, concurrency_target=concurrency_target)
    header = f"# Generated by `glassnet deploy kubernetes` (glassnet {version}) for Kubernetes {K8S_VERSION}.\n"
    files = {}
    for key, fname in (("deployment", "deployment.yaml"), ("service", "service.yaml"), ("hpa", "hpa.yaml"),
                       ("pdb", "pdb.yaml"), ("inferenceservice", os.path.join("kserve", "inferenceservice.yaml"))):
        files[key] = _package.write(os.path.join(out, fname), header + _yaml.dump(docs[key]))
    kust = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"]}
    if namespace:
        kust["namespace"] = namespace
    files["kustomization"] = _package.write(os.path.join(out, "kustomization.yaml"), header + _yaml.dump(kust))
    ns_flag = f" -n {namespace}" if namespace else ""
    pvc_note = "" if not model_pvc else (
        f"\nThe image holds no model: copy `docker/models/` onto the PersistentVolumeClaim `{model_pvc}` "
        "(it is mounted read-only at `/models`), e.g. with a helper pod and `kubectl cp`.\n")
    secret_note = "" if not api_key_secret else (
        f"\nThe prediction endpoints need an API key from the Secret `{api_key_secret}` (key `api-key`):\n"
        f"`kubectl create secret generic {api_key_secret} --from-literal=api-key=$(openssl rand -hex 24){ns_flag}`\n")
    if kserve_mode == "Serverless":
        target = f"{concurrency_target} in-flight requests per replica" if concurrency_target else \
            "Knative's default concurrency target"
        kscale = (f"Knative's autoscaler (KPA) scales the predictor on concurrency ({target}) between "
                  f"{min_replicas} and {max_replicas} replicas" + (", down to zero when idle" if min_replicas == 0
                                                                   else "; `--min-replicas 0` scales to zero"))
    else:
        kscale = (f"an HPA scales the predictor on CPU ({cpu_target}%) between {min_replicas} and {max_replicas} "
                  "replicas; it needs no Knative (`--kserve-mode Serverless` uses Knative, and can scale to zero "
                  "with `--min-replicas 0`)")
    _package.write(os.path.join(out, "README.md"), README.format(
        app=app, version=version, k8s=K8S_VERSION, image=built["image"], ns_flag=ns_flag, port=docker.PORT,
        model=built["models"][0], pvc_note=pvc_note, secret_note=secret_note, kport=KSERVE_PORT, kmode=kserve_mode,
        kscale=kscale, cpu_request=cpu_request, memory_request=memory_request, cpu_limit=cpu_limit,
        memory_limit=memory_limit, uid=docker.UID, min_r=max(1, min_replicas), max_r=max_replicas,
        cpu_target=cpu_target))
    return {"out": out, "app": app, "image": built["image"], "files": files, "manifests": docs,
            "models": built["models"]}
