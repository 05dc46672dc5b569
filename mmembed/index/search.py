"""`mmembed search`: text-to-image and image-to-image search of an indexed collection, and hybrid caption
search (the captions' dense vectors and their BM25 words, fused by reciprocal rank)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qdrant_client import models

from mmembed.client import EmbeddingClient
from mmembed.index import store


class SearchError(ValueError):
    """A search that cannot run: no such collection, an empty one, or neither text nor image given."""


@dataclass(frozen=True)
class Hit:
    path: str
    score: float
    caption: str | None
    id: str = ""  # the point's id in the collection


def search(
    *,
    collection: str,
    text: str | None = None,
    image: Path | bytes | None = None,
    model: str | None = None,
    top_k: int = 10,
    hybrid: bool = False,
    url: str = "localhost:8001",
    qdrant_path: Path = Path("mmembed-qdrant"),
    qdrant_url: str | None = None,
) -> list[Hit]:
    """The TOP_K images closest to TEXT (embedded as a search query) or to IMAGE; with HYBRID, the items
    whose captions match TEXT best, by meaning and by words. MODEL defaults to the one the collection was
    indexed with."""
    if (text is None) == (image is None):
        raise SearchError("search for a text or for an image (--image FILE), one of them")
    if hybrid and text is None:
        raise SearchError("hybrid search looks in the captions: give a text")
    qdrant = store.connect(qdrant_path, qdrant_url)
    try:
        if not qdrant.collection_exists(collection):
            raise SearchError(f"no collection named {collection!r}: index one with mmembed index")
        model = model or _indexed_model(qdrant, collection)
        with EmbeddingClient(url) as client:
            if text is not None:
                vector = client.embed_texts(model, [text], query=True)[0]
            else:
                assert image is not None
                vector = client.embed_images(model, [image])[0]
        if hybrid and text is not None:
            candidates = max(top_k * 4, 50)  # each list's depth before fusion
            answer = qdrant.query_points(
                collection,
                prefetch=[
                    models.Prefetch(query=vector.tolist(), using=store.CAPTION_VECTOR, limit=candidates),
                    models.Prefetch(
                        query=store.words_vector(text, query=True), using=store.CAPTION_WORDS, limit=candidates
                    ),
                ],
                query=models.FusionQuery(fusion=models.Fusion.RRF),
                limit=top_k,
                with_payload=True,
            )
        else:
            answer = qdrant.query_points(
                collection, query=vector.tolist(), using=store.IMAGE_VECTOR, limit=top_k, with_payload=True
            )
    finally:
        qdrant.close()
    return [
        Hit(
            path=str((point.payload or {}).get("path")),
            score=float(point.score),
            caption=(point.payload or {}).get("caption"),
            id=str(point.id),
        )
        for point in answer.points
    ]


def _indexed_model(qdrant: object, collection: str) -> str:
    records, _ = qdrant.scroll(collection, limit=1, with_payload=True)  # type: ignore[attr-defined]
    if not records:
        raise SearchError(f"collection {collection!r} is empty")
    model: str = records[0].payload["model"]
    return model
