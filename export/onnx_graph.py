"""Export one tower to an ONNX graph with a dynamic batch axis, and prove it computes what PyTorch does.

Weights always go to one external data file beside the graph (`model.onnx.data`), so the SigLIP-2 text
tower (about 2.8 GB in fp32, over protobuf's 2 GB limit) and a tiny CI model take the same path.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

OPSET = 18  # >= 17 keeps LayerNormalization one op (TensorRT then holds it in fp32); < 23 avoids `Attention`.
GRAPH_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"


@dataclass(frozen=True, kw_only=True)
class TowerSpec:
    """The contract of one exported tower: tensor names and the per-item input shape."""

    input_name: str
    input_dtype: torch.dtype
    item_shape: tuple[int, ...]  # input shape without the batch axis
    output_name: str
    high: int = 0  # exclusive upper bound of integer inputs (token ids); unused for float inputs

    def random_input(self, batch: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        shape = (batch, *self.item_shape)
        if self.input_dtype.is_floating_point:
            return torch.rand(shape, generator=generator, dtype=self.input_dtype) * 2 - 1
        return torch.randint(0, self.high, shape, generator=generator, dtype=self.input_dtype)


@dataclass(frozen=True, kw_only=True)
class ParityReport:
    """How closely the ONNX graph reproduces the PyTorch tower on fresh inputs."""

    tower: str
    batch: int
    max_abs_error: float
    min_cosine: float

    def line(self) -> str:
        return (
            f"{self.tower}: batch {self.batch}, max abs error {self.max_abs_error:.3g}, "
            f"min cosine {self.min_cosine:.7f}"
        )


class ExportValidationError(RuntimeError):
    """An exported graph does not match its PyTorch tower within the tolerance; nothing was written."""


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
            dynamic_axes={spec.input_name: {0: "batch"}, spec.output_name: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
        graph = onnx.load(str(raw_path), load_external_data=True)
    onnx.save(graph, str(graph_path), save_as_external_data=True, all_tensors_to_one_file=True, location=DATA_FILE)
    onnx.checker.check_model(str(graph_path))
    return graph_path


def check_parity(
    tower: torch.nn.Module, spec: TowerSpec, graph_path: Path, *, name: str, min_cosine: float, batch: int = 3
) -> ParityReport:
    """Compare the graph with the tower on fresh random inputs at a batch size other than the traced one.

    Raises ExportValidationError when any row's cosine falls under MIN_COSINE or an output is not finite.
    """
    import onnxruntime

    inputs = spec.random_input(batch, seed=1234)
    with torch.no_grad():
        expected = tower(inputs).float().numpy()
    session = onnxruntime.InferenceSession(str(graph_path), providers=["CPUExecutionProvider"])
    (actual,) = session.run([spec.output_name], {spec.input_name: inputs.numpy()})
    if actual.shape != expected.shape:
        raise ExportValidationError(f"{name}: ONNX output shape {actual.shape}, PyTorch {expected.shape}")
    if not np.isfinite(actual).all():
        raise ExportValidationError(f"{name}: ONNX output has NaN or Inf")
    report = ParityReport(
        tower=name,
        batch=batch,
        max_abs_error=float(np.abs(actual - expected).max()),
        min_cosine=float(row_cosines(actual, expected).min()),
    )
    if report.min_cosine < min_cosine:
        raise ExportValidationError(f"{report.line()}, under the required {min_cosine}")
    return report


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of A with the same row of B, computed in float64."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    result: np.ndarray = (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    return result
