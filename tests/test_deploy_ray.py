"""glassnet.deploy.ray_serve on a real local Ray instance: HTTP requests, batching, two replicas."""
import concurrent.futures
import json
import socket
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from deploy_helpers import tutorial_model

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), r.headers.get("x-glassnet-replica")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers.get("x-glassnet-replica")


def _running_replicas(app="default"):
    status = serve.status().applications[app]
    return sum(d.replica_states.get("RUNNING", 0) for d in status.deployments.values())


@pytest.fixture(scope="module")
def ray_serve_port():
    port = _free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()
    ray.shutdown()


def test_ray_serve_answers_http_batches_and_scales_to_two_replicas(tmp_path, ray_serve_port):
    from glassnet.deploy.ray_serve import deployment
    model, x = tutorial_model(str(tmp_path / "pima.glassnet"))
    expected = model.predict(x, verbose=0)
    base = f"http://127.0.0.1:{ray_serve_port}"

    serve.run(deployment(tmp_path / "pima.glassnet", num_replicas=1, max_batch_size=8, batch_wait_timeout_s=0.02,
                         ray_actor_options={"num_cpus": 0.5}), route_prefix="/")
    assert _running_replicas() == 1
    with urllib.request.urlopen(base + "/v2/health/ready", timeout=10) as r:
        assert r.status == 200
    status, out, _ = _post(base + "/v1/models/pima:predict", {"instances": x.tolist()})
    assert status == 200
    np.testing.assert_allclose(np.array(out["predictions"]), expected, rtol=1e-6)
    status, out, _ = _post(base + "/v2/models/pima/infer", {"inputs": [
        {"name": "input", "shape": [len(x), 8], "datatype": "FP32", "data": x.ravel().tolist()}]})
    assert status == 200 and out["model_name"] == "pima"
    np.testing.assert_allclose(np.array(out["outputs"][0]["data"]).reshape(expected.shape), expected, rtol=1e-6)

    # concurrent single-row requests go through @serve.batch and each gets its own row back
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: _post(base + "/v1/models/pima:predict", {"instances": [x[i].tolist()]}),
                                range(len(x))))
    for i, (status, out, _) in enumerate(results):
        assert status == 200
        np.testing.assert_allclose(out["predictions"][0], expected[i], rtol=1e-6)

    # bad input is a 400 with the protocol's message, an unknown model a 404
    status, out, _ = _post(base + "/v1/models/pima:predict", {"instances": [[1.0, 2.0]]})
    assert status == 400 and "shape" in out["error"]
    status, out, _ = _post(base + "/v1/models/nope:predict", {"instances": x[:1].tolist()})
    assert status == 404

    # scale to two replicas; both answer
    serve.run(deployment(tmp_path / "pima.glassnet", num_replicas=2, ray_actor_options={"num_cpus": 0.5}),
              route_prefix="/")
    deadline = time.time() + 60
    while _running_replicas() != 2 and time.time() < deadline:
        time.sleep(0.5)
    assert _running_replicas() == 2
    replicas = set()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for status, out, replica in pool.map(lambda i: _post(base + "/v1/models/pima:predict",
                                                             {"instances": [x[i % len(x)].tolist()]}), range(64)):
            assert status == 200
            replicas.add(replica)
    assert len(replicas) == 2, replicas
