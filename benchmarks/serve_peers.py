"""The two reference servers of benchmarks/serve_bench.py, on the same stack as glassnet serve
(uvicorn with httptools, uvloop when installed, one process, no access log).

    python benchmarks/serve_peers.py bare PORT             # parse the JSON body, return a constant: the ceiling
    python benchmarks/serve_peers.py bare-h11 PORT         # the same on uvicorn's pure-Python HTTP parser (h11)
    python benchmarks/serve_peers.py torch PORT MODEL.safetensors   # minimal FastAPI + PyTorch server

The PyTorch server loads the same weights as the glassnet model (a glassnet .weights.safetensors
file of a Dense stack) into an equivalent ``torch.nn.Sequential`` and answers TF-Serving-style
``{"instances": [...]}`` requests with ``{"predictions": [...]}``, as a user would write it.
"""
import json
import sys

import uvicorn

# the loop and parser glassnet serve picks too: uvloop when installed, httptools
OPTS = dict(host="127.0.0.1", loop="auto", http="httptools", access_log=False, log_level="warning")


async def bare_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    json.loads(body)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"predictions": [[0.5]]}'})


def torch_app(weights_path):
    import numpy as np
    import torch
    from fastapi import FastAPI, Request

    sys.path.insert(0, "src")
    from glassnet.saving import safetensors
    torch.set_num_threads(1)
    with open(weights_path, "rb") as f:
        tensors, meta = safetensors.loads(f.read(), weights_path)
    acts = json.loads(meta["activations"])
    layers = []
    for i, act in enumerate(acts):
        w, b = tensors[f"{i}.kernel"], tensors[f"{i}.bias"]
        lin = torch.nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        layers.append({"relu": torch.nn.ReLU(), "sigmoid": torch.nn.Sigmoid(), "softmax": torch.nn.Softmax(-1),
                       "linear": torch.nn.Identity()}[act])
    net = torch.nn.Sequential(*layers).eval()
    app = FastAPI()

    @app.post("/v1/models/{name}:predict")
    async def predict(name: str, request: Request):
        body = await request.json()
        x = torch.tensor(body["instances"], dtype=torch.float32)
        with torch.inference_mode():
            y = net(x)
        return {"predictions": y.tolist()}
    return app


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    app = bare_app if kind.startswith("bare") else torch_app(sys.argv[3])
    uvicorn.run(app, port=port, **{**OPTS, "http": "h11" if kind == "bare-h11" else OPTS["http"]})
