"""What the client returns besides embeddings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """One served model, as its ensembles describe it."""

    name: str
    family: str
    dimension: int
    modalities: tuple[str, ...]  # "image", "text", and "query" when queries get an instruction
    image_size: tuple[int, int] | None  # (height, width) the images are resized to
    max_text_length: int | None  # tokens; longer text is truncated
    runtime: str  # onnxruntime-cpu, onnxruntime, tensorrt or torch
    precision: str  # fp32, fp16, bf16 or fp8
    # Sizes `dimensions=` accepts besides `dimension` (Matryoshka); empty when the model has none.
    matryoshka_dimensions: tuple[int, ...] = ()
    query_instruction: str | None = None  # what the server puts before texts embedded with query=True
    # Models whose queries take a task per request (NV-Embed): the template the task fills, e.g.
    # "Instruct: {task}\nQuery: "; None for models with a fixed query instruction or none.
    instruction_template: str | None = None
    # Whether an image may come with a text, embedded together (`embed_multimodal`; MM-Embed).
    image_with_text: bool = False
    # How image files are decoded: "reference" (as the model's own pipeline does) or "display" (EXIF
    # orientation, transparency on white, 16-bit scaled: `mmembed export --image-decode display`)
    image_decode: str | None = None
