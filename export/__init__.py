"""Export: checkpoint folder -> validated encoders (ONNX graphs, TensorRT plans, torch folders) -> a
Triton model repository."""

from __future__ import annotations

from mmembed.export.pipeline import ExportError, ExportReport, ExportRequest, export_model
from mmembed.export.tensorrt_engine import TensorRTUnavailableError
from mmembed.export.triton_config import BatchingOptions

__all__ = [
    "BatchingOptions",
    "ExportError",
    "ExportReport",
    "ExportRequest",
    "TensorRTUnavailableError",
    "export_model",
]
