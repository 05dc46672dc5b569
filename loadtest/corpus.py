"""What the load test sends: the user's own images, or photo-like JPEGs of realistic sizes."""

from __future__ import annotations

from pathlib import Path

from mmembed.core.sample_images import caption_corpus, photo_corpus

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


class CorpusError(ValueError):
    """The corpus folder is missing or holds no images."""


def load_images(folder: str | Path | None, count: int) -> list[bytes]:
    """The encoded images of FOLDER (up to COUNT, sorted by name), or COUNT generated JPEGs if no folder."""
    if not folder:
        return photo_corpus(count)
    path = Path(folder)
    if not path.is_dir():
        raise CorpusError(f"image corpus {path} is not a folder")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise CorpusError(f"image corpus {path} holds no {'/'.join(sorted(IMAGE_SUFFIXES))} files")
    return [p.read_bytes() for p in files[:count]]


def load_texts(count: int) -> list[str]:
    return caption_corpus(count)
