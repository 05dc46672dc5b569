"""The loop a user writes without this project: transformers' AutoModel + AutoProcessor, fp16, batch 128."""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from mmembed.bench.gpu import wall_time


@dataclass(frozen=True, kw_only=True)
class BaselineRate:
    images_per_s: float
    texts_per_s: float
    processor: str  # the image processor class transformers chose (its fast or its PIL one)
    dtype: str


def baseline_rates(
    checkpoint: Path, jpegs: list[bytes], texts: list[str], *, device: str, seconds: float, batch: int = 128
) -> BaselineRate:
    from transformers import AutoModel, AutoProcessor

    dtype = torch.float16 if device == "cuda" else torch.float32  # fp16 matmuls are slow emulation on a CPU
    model = AutoModel.from_pretrained(checkpoint, dtype=dtype).to(device).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)  # type: ignore[no-untyped-call]
    image_cycle, text_cycle = itertools.cycle(jpegs), itertools.cycle(texts)

    def images() -> int:
        decoded = [Image.open(io.BytesIO(next(image_cycle))).convert("RGB") for _ in range(batch)]
        pixels = processor(images=decoded, return_tensors="pt")["pixel_values"].to(device, dtype)
        with torch.inference_mode():
            features = model.get_image_features(pixel_values=pixels).pooler_output
            torch.nn.functional.normalize(features.float(), dim=-1).cpu()
        return batch

    def encode_texts() -> int:
        chunk = [next(text_cycle).lower() for _ in range(batch)]
        ids = processor(text=chunk, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            features = model.get_text_features(input_ids=ids["input_ids"].to(device)).pooler_output
            torch.nn.functional.normalize(features.float(), dim=-1).cpu()
        return batch

    images()  # warm-up: cuBLAS, the processor's first call
    image_items, image_s = wall_time(images, seconds)
    encode_texts()
    text_items, text_s = wall_time(encode_texts, seconds / 2)
    result = BaselineRate(
        images_per_s=image_items / image_s,
        texts_per_s=text_items / text_s,
        processor=type(processor.image_processor).__name__,
        dtype=str(dtype).removeprefix("torch."),
    )
    return result  # the model is freed with this frame; the caller empties the CUDA cache
