"""Export: checkpoint folder -> ONNX graphs (and TensorRT plans) -> a Triton model repository."""

from __future__ import annotations

from mmembed.export.pipeline import ExportError, ExportReport, ExportRequest, export_model
from mmembed.export.tensorrt_engine import TensorRTUnavailableError
from mmembed.export.triton_config import BatchingOptions, Precision, Runtime

__all__ = [
    "BatchingOptions",
    "ExportError",
    "ExportReport",
    "ExportRequest",
    "Precision",
    "Runtime",
    "TensorRTUnavailableError",
    "export_model",
]
