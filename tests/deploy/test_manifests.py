"""deploy/k8s: every manifest valid against the Kubernetes API schemas (offline), listed in the
kustomization, and speaking our real command lines (the worker's `serve` flags and the router's
flags parse with the programs' own parsers)."""

from __future__ import annotations

import argparse
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
VERSION = "1.30.0"  # the oldest Kubernetes these target (StatefulSet, RBAC v1, probes)


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _container(kind: str, name: str) -> dict:
    for path in MANIFESTS:
        for doc in _docs(path):
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                [c] = doc["spec"]["template"]["spec"]["containers"]
                return c
    raise AssertionError(f"no {kind} {name}")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_against_the_api_schema(path):
    docs = _docs(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, VERSION, strict=True)  # raises with the field's path


def test_kustomization_lists_every_manifest():
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(k["resources"]) == [p.name for p in MANIFESTS]


def test_a_bad_manifest_would_fail():  # the check above can fail
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
           "spec": {"ports": [{"port": "eighty"}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSION, strict=True)


def test_worker_pod_runs_serve_with_flags_that_match_its_annotations(tiny_model):
    from moep_sglang.server.node import add_serve_args, parse_node_args

    sts = next(d for p in MANIFESTS for d in _docs(p) if d["kind"] == "StatefulSet")
    notes = sts["spec"]["template"]["metadata"]["annotations"]
    c = _container("StatefulSet", "moep-worker")
    argv = [a for a in c["args"][1:] if not a.startswith("--model-path")]
    p = argparse.ArgumentParser()
    add_serve_args(p)
    args = p.parse_args([*argv, f"--model-path={tiny_model}"])
    node = parse_node_args(args, gpus=int(c["resources"]["limits"]["nvidia.com/gpu"]))
    assert c["args"][0] == "serve" and node.workers_only and node.worker_host == "0.0.0.0"
    assert node.num_workers == int(notes["moep.io/workers"])
    assert node.worker_base_port == int(notes["moep.io/worker-base-port"])
    assert sts["spec"]["template"]["metadata"]["labels"]["app"] == "moep-worker"
    scraped = sorted(p["containerPort"] for p in c["ports"] if p["name"].startswith("worker"))
    assert scraped == [node.worker_port(i) for i in range(node.num_workers)]  # every worker
    # Ready once SGLang's warm-up finished (/model_info answers before it), on a served port
    for probe in (c["readinessProbe"], c["startupProbe"]):
        assert probe["httpGet"]["path"] == "/health"
        assert probe["httpGet"]["port"] == node.worker_port(0)


def test_router_deployment_discovers_the_worker_pods(tiny_model):
    from moep_router.config import parse_router_args

    c = _container("Deployment", "moep-router")
    argv = [a for a in c["args"] if not a.startswith("--model-path")]
    config = parse_router_args([*argv, f"--model-path={tiny_model}"])
    assert config.k8s_selector == "app=moep-worker" and config.host == "0.0.0.0"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
