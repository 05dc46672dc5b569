"""The Grafana dashboard and the autoscaler's adapter rule ask for metrics a real tritonserver exports."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from conftest import MODEL

from mmembed.client import EmbeddingClient
from mmembed.serving.server import TritonServer

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
GPU_ONLY = {"nv_gpu_utilization", "nv_gpu_memory_used_bytes"}  # exported only where Triton sees a GPU
PROMQL_WORDS = {"sum", "by", "rate", "clamp_min", "model", "gpu_uuid", "namespace", "pod", "LabelMatchers", "GroupBy"}


def _metric_names(expression: str) -> set[str]:
    return {word for word in re.findall(r"\b(nv_[a-z_]+)", expression) if word not in PROMQL_WORDS}


def test_every_metric_the_deployment_reads_is_exported(server: TritonServer) -> None:
    with EmbeddingClient(server.grpc_url) as client:
        client.embed_texts(MODEL, ["warm the counters up"])
    with urllib.request.urlopen(f"http://localhost:{server.settings.metrics_port}/metrics", timeout=10) as answer:
        exported = set(re.findall(r"^# TYPE (\w+) ", answer.read().decode(), flags=re.MULTILINE))
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "mmembed.json").read_text())
    wanted = {
        name for panel in dashboard["panels"] for target in panel["targets"] for name in _metric_names(target["expr"])
    }
    wanted |= _metric_names((DEPLOY / "kubernetes" / "prometheus-adapter-rules.yaml").read_text())
    assert len(wanted) >= 6
    assert wanted - GPU_ONLY <= exported, sorted(wanted - GPU_ONLY - exported)
