"""What to index: the image files of a folder (recursive), or the rows of a CSV or JSONL file naming
image paths and optional captions (relative paths are taken from the list file's folder)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"})


class SourceError(ValueError):
    """A source that cannot be read: it does not exist, or a list file's row is malformed."""


@dataclass(frozen=True)
class SourceItem:
    path: Path
    caption: str | None = None


def read_source(source: Path) -> list[SourceItem]:
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return [SourceItem(path) for path in files]
    if not source.is_file():
        raise SourceError(f"{source} is neither a folder nor a file")
    if source.suffix.lower() == ".csv":
        with open(source, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    elif source.suffix.lower() in (".jsonl", ".ndjson"):
        lines = source.read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    else:
        raise SourceError(f"{source}: give a folder, a .csv or a .jsonl file")
    items = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not row.get("path"):
            raise SourceError(f"{source} row {number} has no 'path'")
        path = Path(row["path"])
        items.append(SourceItem(path if path.is_absolute() else source.parent / path, row.get("caption") or None))
    return items
