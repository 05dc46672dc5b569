"""The numeric gate at every server start, for every runtime: each served ensemble must still give the
embeddings export computed with the fp32 encoders.

Export runs each encoder through its gate, but some engines are only built where they are served: the
onnxruntime runtime's TensorRT execution provider compiles its fp16 engine at model load on the serving
GPU, and a TensorRT plan or the torch runtime meet drivers, kernels and DLPack handoffs export never saw.
So export stores a few real items with the fp32 encoder's normalised embeddings of them beside every
ensemble's config (`core.gate_reference`), and `mmembed serve` sends them through that ensemble once every
model is ready: one under its precision's gate stops the start, naming the ensemble, the precision and
the cosine. Image, text, query and fused ensembles alike: the reference says which inputs to send.
"""

from __future__ import annotations

from pathlib import Path

from mmembed.core.gate_reference import REFERENCE_FILE, GateReference
from mmembed.core.numeric_gate import GateReport, gate
from mmembed.serving.probe import http_embed


def references(repository: Path) -> dict[str, GateReference]:
    """Every ensemble of REPOSITORY that export gave a reference, by name."""
    return {path.parent.name: GateReference.load(path) for path in sorted(repository.glob(f"*/{REFERENCE_FILE}"))}


def check_repository(
    repository: Path, http_port: int, api_key: str | None, timeout_s: float = 120.0
) -> list[GateReport]:
    """Gate every ensemble of REPOSITORY that has a reference; raise PrecisionGateError at the first one
    under its gate."""
    reports = []
    for ensemble, reference in references(repository).items():
        served = http_embed(http_port, ensemble, reference.inputs, api_key, timeout_s)
        reports.append(gate(f"{ensemble} served", reference.precision, served, reference.embeddings))
    return reports
