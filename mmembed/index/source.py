"""What to index: the image files of a folder (recursive), or the rows of a CSV, JSONL or Parquet file
naming images and optional captions. A row's `path` is a file (relative paths are taken from the list
file's folder) or an http(s) URL, which the job fetches only from hosts the user allowed."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"})
URL_SCHEMES = ("http://", "https://")


class SourceError(ValueError):
    """A source that cannot be read: it does not exist, or a list file's row is malformed."""


@dataclass(frozen=True)
class SourceItem:
    location: str  # a file path, or an http(s) URL
    caption: str | None = None

    @property
    def is_url(self) -> bool:
        return self.location.startswith(URL_SCHEMES)


def read_source(source: Path) -> list[SourceItem]:
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return [SourceItem(str(path)) for path in files]
    if not source.is_file():
        raise SourceError(f"{source} is neither a folder nor a file")
    items = []
    for number, row in enumerate(_rows(source), start=1):
        if not isinstance(row, dict) or not row.get("path"):
            raise SourceError(f"{source} row {number} has no 'path'")
        location = str(row["path"])
        if not location.startswith(URL_SCHEMES) and not Path(location).is_absolute():
            location = str(source.parent / location)
        caption = row.get("caption")
        items.append(SourceItem(location, str(caption) if caption else None))
    return items


def _rows(source: Path) -> list[Any]:
    suffix = source.suffix.lower()
    if suffix == ".csv":
        with open(source, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    if suffix in (".jsonl", ".ndjson"):
        lines = source.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as parquet
        except ImportError:
            raise SourceError("reading Parquet needs pyarrow: pip install 'mmembed[index]'") from None
        rows: list[Any] = parquet.read_table(source, columns=_parquet_columns(parquet, source)).to_pylist()
        return rows
    raise SourceError(f"{source}: give a folder, a .csv, .jsonl or .parquet file")


def _parquet_columns(parquet: Any, source: Path) -> list[str]:
    """The columns to read: `path`, and `caption` where the file has it (other columns stay on disk)."""
    names = set(parquet.read_schema(source).names)
    if "path" not in names:
        raise SourceError(f"{source} has no 'path' column (it has: {', '.join(sorted(names))})")
    return ["path", "caption"] if "caption" in names else ["path"]
