"""The Qdrant collection an index lives in: embedded local mode (a folder, no server) or a server URL.

Points have named vectors, `image` and, for items with a caption, `caption` (dense) and `caption_words`
(sparse BM25 term weights, Qdrant applying the collection's IDF); their ids come from the image's content,
so indexing the same file again finds it already there."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient, models

NAMESPACE = uuid.UUID("6f1c2a56-57a4-4d0c-9d8e-2f3b7a1e6c01")  # mmembed's: ids are uuid5(NAMESPACE, sha256)
IMAGE_VECTOR, CAPTION_VECTOR, CAPTION_WORDS = "image", "caption", "caption_words"
BM25_K1 = 1.2  # term-frequency saturation; lengths are not normalised (captions are short)


def words_vector(text: str, *, query: bool = False) -> models.SparseVector:
    """TEXT's words as a sparse vector: hashed lowercase words, BM25 term weights (a query's words weigh 1;
    Qdrant multiplies by each word's IDF in the collection)."""
    counts = Counter(re.findall(r"\w+", text.lower()))
    weights: dict[int, float] = {}
    for word, count in counts.items():
        index = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
        weight = 1.0 if query else count * (BM25_K1 + 1) / (count + BM25_K1)
        weights[index] = weights.get(index, 0.0) + weight
    return models.SparseVector(indices=list(weights), values=list(weights.values()))


def point_id(content_sha256: str) -> str:
    return str(uuid.uuid5(NAMESPACE, content_sha256))


def connect(path: Path | None, url: str | None) -> QdrantClient:
    """A client for the server at URL, else for the local collection folder PATH."""
    return QdrantClient(url=url) if url else QdrantClient(path=str(path))


def ensure_collection(client: QdrantClient, name: str, dimension: int) -> None:
    if client.collection_exists(name):
        return
    vector = models.VectorParams(size=dimension, distance=models.Distance.COSINE)
    client.create_collection(
        name,
        vectors_config={IMAGE_VECTOR: vector, CAPTION_VECTOR: vector},
        sparse_vectors_config={CAPTION_WORDS: models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )


def existing(client: QdrantClient, name: str, ids: list[str]) -> set[str]:
    return {str(record.id) for record in client.retrieve(name, ids=ids, with_payload=False, with_vectors=False)}


Point = tuple[str, dict[str, Any], dict[str, Any]]  # id, named vectors, payload


def upsert(client: QdrantClient, name: str, points: list[Point]) -> None:
    client.upsert(
        name,
        points=[models.PointStruct(id=pid, vector=dict(vectors), payload=payload) for pid, vectors, payload in points],
        wait=True,
    )


def all_ids(client: QdrantClient, name: str) -> set[str]:
    """Every point id in the collection, a page at a time (for a job that checks ids away from Qdrant)."""
    ids: set[str] = set()
    offset: Any = None
    while True:
        records, offset = client.scroll(name, limit=10_000, offset=offset, with_payload=False, with_vectors=False)
        ids.update(str(record.id) for record in records)
        if offset is None:
            return ids
