"""Offline checks of generated manifests (used by the tests; needs ``kubernetes-validate``).

* Kubernetes kinds: :func:`kubernetes` validates against the official OpenAPI-derived JSON schemas
  that ``kubernetes-validate`` ships, for :data:`glassnet.deploy.kubernetes.K8S_VERSION`, in strict
  mode (unknown fields are errors).
* KServe ``InferenceService``: no schema ships with kubernetes-validate and KServe's CRD is not
  vendored here. :data:`KSERVE_INFERENCESERVICE` is a JSON schema written for this project from the
  field names, types and enums of KServe's ``serving.kserve.io/v1beta1`` CRD
  (config/crd/full/serving.kserve.io_inferenceservices.yaml, KServe 0.13-0.15) for every field the
  generator emits, closed to unknown fields at the predictor level; the parts of the predictor that
  KServe inlines from the core PodSpec (``containers``, ``securityContext``, ``volumes``) are checked
  against the same Kubernetes schemas as above.
"""
import json
import os

from .kubernetes import K8S_VERSION

_DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/"
_DNS1123 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

KSERVE_INFERENCESERVICE = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": {"allOf": [{"$ref": _DEFS + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}, {
            "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": _DNS1123, "maxLength": 63},
                           "annotations": {"type": "object", "properties": {
                               "serving.kserve.io/deploymentMode": {"enum": ["Serverless", "RawDeployment",
                                                                             "ModelMesh"]},
                               "serving.kserve.io/autoscalerClass": {"enum": ["hpa", "external", "keda",
                                                                              "none"]}}}}}]},
        "spec": {
            "type": "object", "required": ["predictor"], "additionalProperties": False,
            "properties": {"predictor": {
                "type": "object", "additionalProperties": False,
                "required": ["containers"],
                "properties": {
                    # ComponentExtensionSpec
                    "minReplicas": {"type": "integer", "minimum": 0},
                    "maxReplicas": {"type": "integer", "minimum": 0},
                    "scaleTarget": {"type": "integer"},
                    "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
                    "containerConcurrency": {"type": "integer", "format": "int64"},
                    "timeout": {"type": "integer", "format": "int64"},
                    "canaryTrafficPercent": {"type": "integer", "format": "int64"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                    "deploymentStrategy": {"$ref": _DEFS + "io.k8s.api.apps.v1.DeploymentStrategy"},
                    # inlined core/v1 PodSpec fields
                    "containers": {"type": "array", "minItems": 1,
                                   "items": {"$ref": _DEFS + "io.k8s.api.core.v1.Container"}},
                    "securityContext": {"$ref": _DEFS + "io.k8s.api.core.v1.PodSecurityContext"},
                    "volumes": {"type": "array", "items": {"$ref": _DEFS + "io.k8s.api.core.v1.Volume"}},
                    "automountServiceAccountToken": {"type": "boolean"},
                    "serviceAccountName": {"type": "string"},
                    "imagePullSecrets": {"type": "array", "items": {
                        "$ref": _DEFS + "io.k8s.api.core.v1.LocalObjectReference"}},
                    "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
                    "tolerations": {"type": "array", "items": {"$ref": _DEFS + "io.k8s.api.core.v1.Toleration"}},
                },
            }},
        },
    },
}


def _schema_dir(version, strict=True):
    import kubernetes_validate
    return os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema",
                        f"v{version}-local" + ("-strict" if strict else ""))


def kubernetes(doc, version=K8S_VERSION):
    """Raise ``kubernetes_validate.ValidationError`` unless ``doc`` is valid for that Kubernetes version."""
    import kubernetes_validate
    return kubernetes_validate.validate(doc, version, strict=True)


def kserve(doc, version=K8S_VERSION):
    """Raise ``jsonschema.ValidationError`` unless ``doc`` is a valid InferenceService (see module docstring)."""
    import jsonschema
    from referencing import Registry, Resource
    with open(os.path.join(_schema_dir(version), "_definitions.json")) as f:
        defs = json.load(f)
    registry = Registry().with_resource("https://kubernetes.io/api/_definitions.json",
                                        Resource.from_contents(defs))
    pred = doc.get("spec", {}).get("predictor", {}) if isinstance(doc, dict) else {}
    jsonschema.Draft202012Validator(KSERVE_INFERENCESERVICE, registry=registry).validate(doc)
    if isinstance(pred.get("minReplicas"), int) and isinstance(pred.get("maxReplicas"), int) \
            and pred["maxReplicas"] and pred["minReplicas"] > pred["maxReplicas"]:
        raise jsonschema.ValidationError("spec.predictor.minReplicas is larger than maxReplicas")
    return version
