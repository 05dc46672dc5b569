"""What the client returns besides embeddings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """One served model, as its ensembles describe it."""

    name: str
    family: str
    dimension: int
    modalities: tuple[str, ...]  # "image", "text"
    image_size: tuple[int, int] | None  # (height, width) the images are resized to
    max_text_length: int | None  # tokens; longer text is truncated
    runtime: str  # onnxruntime-cpu, onnxruntime, tensorrt or torch
    precision: str  # fp32, fp16, bf16 or fp8
