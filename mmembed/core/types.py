"""The vocabulary every layer shares: where encoders run, in which precision, and what a client embeds."""

from __future__ import annotations

from enum import Enum
from typing import Literal


class Runtime(str, Enum):
    """Where the encoders run. The ensembles, preprocessing and normalisation are the same for all."""

    ONNXRUNTIME_CPU = "onnxruntime-cpu"  # onnxruntime inside a Python-backend model: the pip Triton, CI
    ONNXRUNTIME = "onnxruntime"  # Triton's onnxruntime backend on a GPU (NGC containers)
    TENSORRT = "tensorrt"  # a TensorRT plan built on the target GPU (NGC containers)
    TORCH = "torch"  # the checkpoint's encoders in torch inside a Python-backend model, GPU or CPU


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"


SUPPORTED_PRECISIONS: dict[Runtime, tuple[Precision, ...]] = {
    Runtime.ONNXRUNTIME_CPU: (Precision.FP32,),
    Runtime.ONNXRUNTIME: (Precision.FP32, Precision.FP16),
    Runtime.TENSORRT: (Precision.FP32, Precision.FP16, Precision.FP8),
    Runtime.TORCH: (Precision.FP32, Precision.FP16, Precision.BF16, Precision.FP8),
}

# What one served ensemble embeds, and the suffix of its name: NAME_image, NAME_text, NAME_query,
# NAME_image_query. "query" is text with the model's retrieval instruction in front, for models whose
# queries differ; "image_query" an image (with an optional text) as a query, for models that read both
# together (MM-Embed), whose NAME_image also takes an optional text.
Modality = Literal["image", "text", "query", "image_query"]
MODALITIES: tuple[Modality, ...] = ("image", "text", "query", "image_query")
