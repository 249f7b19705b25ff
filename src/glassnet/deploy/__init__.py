"""Deployment: ``glassnet deploy docker|kubernetes|lambda MODEL --out DIR`` and Ray Serve.

* :mod:`.docker` — a Docker build context (multi-stage, slim base, non-root, HEALTHCHECK).
* :mod:`.kubernetes` — Deployment, Service, HPA, PDB and a KServe InferenceService.
* :mod:`.aws_lambda` — an AWS Lambda zip package and container image; the handler is
  :mod:`.lambda_handler`.
* :mod:`.ray_serve` — the model as a Ray Serve deployment (optional ``ray[serve]``).

Each generator checks that the model loads, lays the model repository out as ``glassnet serve``
reads it (``models/<name>/<version>/model.glassnet``) and pins the runtime requirements to the
versions installed where it runs. See docs/deploy.md.
"""
