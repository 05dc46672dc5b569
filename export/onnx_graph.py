"""Export one tower to an ONNX graph with a dynamic batch axis, and prove it computes what PyTorch does.

Weights always go to one external data file beside the graph (`model.onnx.data`), so the SigLIP-2 text
tower (about 2.8 GB in fp32, over protobuf's 2 GB limit) and a tiny CI model take the same path.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from mmembed.families.base import TowerSpec
from mmembed.numeric_gate import GateReport, gate

OPSET = 18  # >= 17 keeps LayerNormalization one op (TensorRT then holds it in fp32); < 23 avoids `Attention`.
GRAPH_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"


def export_tower(tower: torch.nn.Module, spec: TowerSpec, folder: Path) -> Path:
    """Write `folder/model.onnx` (+ `model.onnx.data`) for TOWER and return the graph's path."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    graph_path = folder / GRAPH_FILE
    with tempfile.TemporaryDirectory() as scratch, torch.no_grad():
        # The TorchScript exporter: quick on large towers, and dynamic_axes is all a batch axis needs.
        raw_path = Path(scratch) / GRAPH_FILE
        torch.onnx.export(
            tower,
            (spec.random_input(2, seed=0),),
            str(raw_path),
            input_names=[spec.input_name],
            output_names=[spec.output_name],
            dynamic_axes={
                spec.input_name: {0: "batch", 1: "tokens"} if spec.variable_length else {0: "batch"},
                spec.output_name: {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
        graph = onnx.load(str(raw_path), load_external_data=True)
    onnx.save(graph, str(graph_path), save_as_external_data=True, all_tensors_to_one_file=True, location=DATA_FILE)
    onnx.checker.check_model(str(graph_path))
    return graph_path


def check_parity(
    tower: torch.nn.Module,
    spec: TowerSpec,
    graph_path: Path,
    *,
    name: str,
    precision: str = "fp32",
    real_inputs: torch.Tensor | None = None,
    batch: int = 3,
) -> GateReport:
    """Compare the graph with the fp32 tower on fresh random inputs at a batch size other than the traced one
    (and, for variable-length token ids, a length other than the traced one), plus REAL_INPUTS if given.

    Raises PrecisionGateError when any row's cosine falls under PRECISION's gate or an output is not finite.
    """
    import onnxruntime

    inputs = spec.random_input(batch, seed=1234)
    if real_inputs is not None:
        inputs = torch.cat([inputs, real_inputs])
    parts = [inputs, inputs[:, : spec.item_shape[0] // 4]] if spec.variable_length else [inputs]
    session = onnxruntime.InferenceSession(str(graph_path), providers=["CPUExecutionProvider"])
    expected, actual = [], []
    for part in parts:  # variable-length token ids: a shorter length than the traced one too
        with torch.no_grad():
            expected.append(tower(part).float().numpy())
        actual.append(session.run([spec.output_name], {spec.input_name: part.numpy()})[0])
    return gate(name, precision, np.concatenate(actual), np.concatenate(expected))
