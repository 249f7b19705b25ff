"""`glassnet deploy kubernetes`: manifests validate offline against the Kubernetes (and KServe) schemas."""
import pytest

from deploy_helpers import tutorial_model
from glassnet.deploy import kubernetes, validate

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture
def generated(tmp_path):
    tutorial_model(str(tmp_path / "pima.glassnet"))
    return kubernetes.generate(tmp_path / "pima.glassnet", tmp_path / "k8s", image="registry.example/pima:1",
                               namespace="ml", api_key_secret="pima-api-key", model_pvc="pima-models")


def _load(path):
    docs = list(yaml.safe_load_all(open(path)))
    assert len(docs) == 1
    return docs[0]


def test_kubernetes_version_is_pinned_and_available():
    assert kubernetes.K8S_VERSION == "1.30.0"
    assert "1.30.0" in kubernetes_validate.utils.all_versions()


@pytest.mark.parametrize("key,kind", [("deployment", "Deployment"), ("service", "Service"),
                                      ("hpa", "HorizontalPodAutoscaler"), ("pdb", "PodDisruptionBudget")])
def test_manifests_validate_against_kubernetes_schemas(generated, key, kind):
    doc = _load(generated["files"][key])
    assert doc["kind"] == kind and doc["metadata"]["namespace"] == "ml"
    assert doc == generated["manifests"][key]  # the YAML writer round-trips
    validate.kubernetes(doc)


def test_validation_is_strict(generated):
    doc = _load(generated["files"]["deployment"])
    doc["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        validate.kubernetes(doc)
    doc = _load(generated["files"]["hpa"])
    doc["spec"]["minReplicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate.kubernetes(doc)


def test_deployment_probes_resources_security(generated):
    dep = _load(generated["files"]["deployment"])
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert set(c["resources"]) == {"requests", "limits"}
    assert set(c["resources"]["requests"]) == set(c["resources"]["limits"]) == {"cpu", "memory"}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 1000
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["privileged"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True and "/tmp" in mounts
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["models"]["persistentVolumeClaim"] == {"claimName": "pima-models", "readOnly": True}
    assert c["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "pima-api-key"
    assert c["args"][:2] == ["serve", "/models"] and c["image"] == "registry.example/pima:1"
    # the Service, HPA and PDB select exactly these pods
    labels = dep["spec"]["template"]["metadata"]["labels"]
    for key in ("service", "pdb"):
        doc = _load(generated["files"][key])
        sel = doc["spec"]["selector"] if key == "service" else doc["spec"]["selector"]["matchLabels"]
        assert sel.items() <= labels.items()
    hpa = _load(generated["files"]["hpa"])
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    svc = _load(generated["files"]["service"])
    assert svc["spec"]["ports"][0]["targetPort"] == c["ports"][0]["name"]
    kust = yaml.safe_load(open(generated["out"] / "kustomization.yaml"))
    assert kust["resources"] == ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"]


def test_kserve_inferenceservice_validates(generated):
    isvc = _load(generated["files"]["inferenceservice"])
    assert validate.kserve(isvc) == kubernetes.K8S_VERSION
    pred = isvc["spec"]["predictor"]
    (c,) = pred["containers"]
    assert c["name"] == "kserve-container" and c["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert "--port" in c["args"] and c["args"][c["args"].index("--port") + 1] == "8080"
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    for broken in ({"scaleMetric": "gpu"}, {"minReplicas": -1}, {"replicas": 2}):
        bad = _load(generated["files"]["inferenceservice"])
        bad["spec"]["predictor"].update(broken)
        with pytest.raises(jsonschema.ValidationError):
            validate.kserve(bad)
    bad = _load(generated["files"]["inferenceservice"])
    bad["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    with pytest.raises(jsonschema.ValidationError):
        validate.kserve(bad)


def test_cli_and_defaults(tmp_path):
    tutorial_model(str(tmp_path / "pima.glassnet"))
    from glassnet.deploy.cli import main
    assert main(["deploy", "kubernetes", str(tmp_path / "pima.glassnet"), "--out", str(tmp_path / "k"),
                 "--kserve-mode", "Serverless", "--min-replicas", "1"]) == 0
    dep = _load(tmp_path / "k" / "deployment.yaml")
    validate.kubernetes(dep)
    assert "namespace" not in dep["metadata"]
    assert not [m for m in dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] if m["name"] == "models"]
    assert (tmp_path / "k" / "docker" / "models" / "pima" / "1" / "model.glassnet").exists()
    pdb = _load(tmp_path / "k" / "pdb.yaml")
    assert pdb["spec"] == {"selector": pdb["spec"]["selector"], "maxUnavailable": 1}
    validate.kubernetes(pdb)
    isvc = _load(tmp_path / "k" / "kserve" / "inferenceservice.yaml")
    validate.kserve(isvc)
    assert "serving.kserve.io/autoscalerClass" not in isvc["metadata"]["annotations"]
    assert main(["deploy", "kubernetes", str(tmp_path / "pima.glassnet"), "--out", str(tmp_path / "k2"),
                 "--min-replicas", "5", "--max-replicas", "2"]) == 2
