"""The deploy/ manifests agree with the product: their commands parse, probes hit served ports, sizes match."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from serving.cli import Query, Route, Serve
from xmr.cli import build_parser

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _containers(doc: dict) -> list[dict]:
    return doc["spec"]["template"]["spec"]["containers"]


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict]:
    """Kustomization resources by kind/name."""
    kust = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    out = {}
    for name in kust["resources"]:
        for d in _docs(DEPLOY / "k8s" / name):
            out[f"{d['kind']}/{d['metadata']['name']}"] = d
    return out


def test_server_commands_parse(k8s):
    parser = build_parser(plugins=(Serve, Route, Query))
    for key in ("StatefulSet/xmr-shard", "Deployment/xmr-router"):
        (c,) = _containers(k8s[key])
        args = [a.replace("$(SHARD_INDEX)", "0") for a in c["args"]]
        ns = parser.parse_args(args)
        assert ns.host == "0.0.0.0"  # reachable from other pods
        ports = {p["containerPort"] for p in c["ports"]}
        assert {ns.port, ns.metrics_port} == ports
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            check = c[probe].get("grpc") or c[probe]["tcpSocket"]
            assert check["port"] == ns.port


def test_router_lists_every_shard_of_the_stateful_set(k8s):
    parser = build_parser(plugins=(Serve, Route, Query))
    (c,) = _containers(k8s["Deployment/xmr-router"])
    shards = parser.parse_args(c["args"]).shards.split(",")
    sts = k8s["StatefulSet/xmr-shard"]
    svc = sts["spec"]["serviceName"]
    assert shards == [f"{sts['metadata']['name']}-{i}.{svc}:50051" for i in range(sts["spec"]["replicas"])]
    assert k8s[f"Service/{svc}"]["spec"]["clusterIP"] == "None"  # headless: one DNS name per pod


def test_ray_job_entrypoint_parses():
    (job,) = [d for d in _docs(DEPLOY / "ray" / "train-job.yaml") if d["kind"] == "RayJob"]
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "xmr"
    ns = build_parser().parse_args(argv[1:])
    assert ns.ray == "auto" and ns.negatives == "tfn"


def test_dockerfile_copies_the_packages():
    text = (DEPLOY / "Dockerfile").read_text()
    copied = [line.split()[1] for line in text.splitlines() if line.startswith("COPY ")]
    for path in copied:
        assert (DEPLOY.parent / path).exists(), path
    for package in ("xmr", "indexing", "serving", "proto"):
        assert package in copied
