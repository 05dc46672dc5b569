"""Photo-like test images, made locally: there is no image hub to download from, in CI or on the GPU box.

Smooth colour fields, a few solid shapes with edges, and sensor-like noise, so JPEG files come out at the
sizes real photos have (a few hundred KB at 2048x1536) and resizing has edges and texture to get right.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

# Camera and phone sizes from VGA to 3 MP, the mix the benchmark and load tests send.
PHOTO_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1024, 768), (1280, 960), (1600, 1200), (2048, 1536))

CAPTIONS: tuple[str, ...] = (
    "a photo of a cat sitting on a red chair",
    "two dogs running on the beach at sunset",
    "a close-up of a blue running shoe on a white background",
    "city street at night with cars and people",
    "a bowl of fruit on a kitchen table",
    "mountain river under a cloudy sky",
    "a woman reading a book in a cafe",
    "product photo of a black leather bag",
)


def synthetic_photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (4, 6, 3)).astype(np.uint8)  # low-frequency colour field
    field = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    image = Image.fromarray(np.clip(field, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        x1, y1 = x0 + rng.uniform(0.05, 0.4) * width, y0 + rng.uniform(0.05, 0.4) * height
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def synthetic_jpeg(width: int, height: int, seed: int, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    synthetic_photo(width, height, seed).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def photo_corpus(count: int, seed: int = 0) -> list[bytes]:
    """COUNT JPEGs cycling through PHOTO_SIZES (portrait and landscape), each one different."""
    corpus = []
    for index in range(count):
        width, height = PHOTO_SIZES[index % len(PHOTO_SIZES)]
        if index % 3 == 2:
            width, height = height, width
        corpus.append(synthetic_jpeg(width, height, seed=seed + index))
    return corpus


def caption_corpus(count: int) -> list[str]:
    """COUNT different captions (SigLIP pads every text to its full length, so length barely matters)."""
    return [f"{CAPTIONS[index % len(CAPTIONS)]}, picture {index}" for index in range(count)]
