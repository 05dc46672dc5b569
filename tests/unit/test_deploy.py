"""The deployment files, checked as far as this machine can without docker or a cluster: hadolint on the
Dockerfile, the compose file against the Compose Specification's JSON schema, the Kubernetes manifests
against the Kubernetes API schemas (kubernetes-validate, offline), and the wiring between them. The
container is not built and nothing is deployed here (no docker, no cluster): docs/DEPLOYMENT.md says so."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.32"  # validated against this API version's schemas
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "PodMonitor")}  # CRDs: not in the core API schemas


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_starts_from_a_blackwell_triton_release() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    version = re.search(r"ARG TRITON_VERSION=(\d+)\.(\d+)", text)
    assert version and (int(version.group(1)), int(version.group(2))) >= (25, 1)  # 25.01: CUDA 12.8, Blackwell
    assert "FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3" in text
    lines = (DEPLOY / "serve-requirements.txt").read_text().splitlines()
    packages = [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    assert "numpy<2" in packages and not any("mmembed" in p for p in packages)  # the code travels in the repository


def test_the_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    jsonschema.validate(compose, schema)
    assert set(compose["services"]) == {"triton", "prometheus", "grafana"}
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), source  # every file it mounts is in the repository
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["triton:8002"]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda path: path.name)
def test_the_kubernetes_manifests_follow_the_api_schemas(manifest: Path) -> None:
    for document in yaml.safe_load_all(manifest.read_text()):
        if (document["apiVersion"], document["kind"]) in CUSTOM_RESOURCES:
            assert document["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
            continue
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_probes_run_the_probe_the_image_carries() -> None:
    (deployment,) = yaml.safe_load_all((DEPLOY / "kubernetes" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:2] == ["python3", "/opt/mmembed/probe.py"], probe
    assert container["readinessProbe"]["failureThreshold"] == 1  # unready at the first failed probe
    assert "COPY probe.py /opt/mmembed/probe.py" in (DEPLOY / "Dockerfile").read_text()
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    (hpa,) = yaml.safe_load_all((DEPLOY / "kubernetes" / "hpa.yaml").read_text())
    adapter = (DEPLOY / "kubernetes" / "prometheus-adapter-rules.yaml").read_text()
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] in adapter  # the adapter publishes what it scales on
