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


# --- names, option checks, Serverless scale-to-zero --------------------------------------------------------

@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("k8s-model")
    tutorial_model(str(tmp / "pima.glassnet"))
    return tmp / "pima.glassnet"


def _cli(capsys, *argv):
    from glassnet.deploy.cli import main
    rc = main(["deploy", "kubernetes", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_names_from_a_repository_are_valid_kubernetes_and_docker_names(model_file, tmp_path, capsys):
    import shutil
    (tmp_path / "repo" / "My_Model" / "1").mkdir(parents=True)
    shutil.copyfile(model_file, tmp_path / "repo" / "My_Model" / "1" / "model.glassnet")
    rc, out, _ = _cli(capsys, tmp_path / "repo", "--out", tmp_path / "k")
    assert rc == 0 and "'my-model'" in out and "'My_Model'" in out
    for key in ("deployment", "service", "hpa", "pdb"):
        doc = _load(tmp_path / "k" / f"{key}.yaml")
        assert doc["metadata"]["name"] == "my-model"
        validate.kubernetes(doc)
    isvc = _load(tmp_path / "k" / "kserve" / "inferenceservice.yaml")
    assert isvc["metadata"]["name"] == "my-model"
    validate.kserve(isvc)
    image = _load(tmp_path / "k" / "deployment.yaml")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("glassnet-my-model:")
    # served under the folder's name
    assert sorted(p.name for p in (tmp_path / "k" / "docker" / "models").iterdir()) == ["My_Model"]
    assert "/v1/models/My_Model:predict" in (tmp_path / "k" / "README.md").read_text()


@pytest.mark.parametrize("args,message", [
    (["--cpu-target", "-5"], "--cpu-target -5"), (["--cpu-target", "0"], "from 1 to 100"),
    (["--cpu-target", "101"], "from 1 to 100"), (["--workers", "0"], "--workers 0"),
    (["--cpu-request", "lots"], "--cpu-request 'lots' is not a Kubernetes quantity"),
    (["--memory-limit", "1 GB"], "--memory-limit '1 GB' is not a Kubernetes quantity"),
    (["--memory-request=-1Gi"], "more than zero"), (["--cpu-limit", "1.5 cores"], "not a Kubernetes quantity"),
    (["--cpu-request", "2"], "--cpu-request 2 is more than --cpu-limit 1"),
    (["--memory-request", "1Gi", "--memory-limit", "512Mi"], "more than --memory-limit"),
    (["--namespace", "Bad_NS"], "--namespace 'Bad_NS' is not a valid namespace name"),
    (["--namespace", "a" * 64], "at most 63"),
    (["--model-pvc", "Bad PVC"], "--model-pvc 'Bad PVC' is not a valid PersistentVolumeClaim name"),
    (["--api-key-secret", "x y"], "--api-key-secret 'x y' is not a valid Secret name"),
    (["--min-replicas", "0"], "needs --kserve-mode Serverless"), (["--max-replicas", "0"], "at least 1"),
    (["--kserve-mode", "Serverless", "--min-replicas", "-1"], "0 <= --min-replicas"),
    (["--concurrency-target", "5"], "needs --kserve-mode Serverless"),
    (["--serve-arg=--port", "--serve-arg=9000"], "--port"), (["--serve-arg=--bogus"], "--bogus"),
    (["--image", "Registry/My Image"], "not a valid Docker image reference"),
])
def test_bad_options_are_refused_before_anything_is_written(model_file, tmp_path, capsys, args, message):
    rc, out, err = _cli(capsys, model_file, "--out", tmp_path / "k", *args)
    assert rc == 2 and message in err, err
    assert err.startswith("glassnet deploy kubernetes: ") and len(err.strip().splitlines()) == 1
    assert not out and not (tmp_path / "k").exists()


def test_quantities_and_memory_defaults(model_file, tmp_path, capsys):
    assert kubernetes.quantity("250m", "x") == kubernetes.quantity("0.25", "x")
    assert kubernetes.quantity("1Gi", "x") == 2 ** 30 and kubernetes.quantity("1e3", "x") == 1000
    rc, _, err = _cli(capsys, model_file, "--out", tmp_path / "k", "--memory-request", "1.5Gi", "--cpu-request", "500m",
                      "--cpu-limit", "2", "--namespace", "ml-serving", "--model-pvc", "pima.models",
                      "--api-key-secret", "pima-api-key")
    assert rc == 0, err
    dep = _load(tmp_path / "k" / "deployment.yaml")
    validate.kubernetes(dep)
    res = dep["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res["requests"] == {"cpu": "500m", "memory": "1.5Gi"}
    assert kubernetes.quantity(res["limits"]["memory"], "x") == 3 * 2 ** 30, "the limit defaults to twice the request"


def test_serverless_scales_to_zero_on_concurrency(model_file, tmp_path, capsys):
    rc, _, err = _cli(capsys, model_file, "--out", tmp_path / "k", "--kserve-mode", "Serverless", "--min-replicas", "0",
                      "--concurrency-target", "8")
    assert rc == 0, err
    isvc = _load(tmp_path / "k" / "kserve" / "inferenceservice.yaml")
    validate.kserve(isvc)
    pred = isvc["spec"]["predictor"]
    assert pred["minReplicas"] == 0 and pred["scaleMetric"] == "concurrency" and pred["scaleTarget"] == 8
    assert isvc["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "Serverless"}
    # the HPA path cannot go to zero: the plain manifests keep one replica and stay valid
    hpa, dep = _load(tmp_path / "k" / "hpa.yaml"), _load(tmp_path / "k" / "deployment.yaml")
    assert hpa["spec"]["minReplicas"] == 1 and dep["spec"]["replicas"] == 1
    validate.kubernetes(hpa)
    validate.kubernetes(dep)
    validate.kubernetes(_load(tmp_path / "k" / "pdb.yaml"))
    assert "down to zero" in (tmp_path / "k" / "README.md").read_text()
    # without a target, Knative's default applies; RawDeployment stays on CPU through the HPA
    rc, _, _ = _cli(capsys, model_file, "--out", tmp_path / "k2", "--kserve-mode", "Serverless")
    pred = _load(tmp_path / "k2" / "kserve" / "inferenceservice.yaml")["spec"]["predictor"]
    assert rc == 0 and pred["scaleMetric"] == "concurrency" and "scaleTarget" not in pred and pred["minReplicas"] == 2
    rc, _, _ = _cli(capsys, model_file, "--out", tmp_path / "k3", "--cpu-target", "60")
    isvc = _load(tmp_path / "k3" / "kserve" / "inferenceservice.yaml")
    assert rc == 0 and isvc["spec"]["predictor"]["scaleMetric"] == "cpu" and isvc["spec"]["predictor"]["scaleTarget"] == 60
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"
