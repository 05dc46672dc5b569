"""`mmembed index`: embed a source's images (and captions) through Triton and store them in Qdrant.

Idempotent and resumable: each point's id comes from its image's content, ids already in the collection
are skipped before anything is embedded, and a batch is stored only once embedded, so a job killed
midway loses at most the batches in flight and a re-run finishes them. Files that cannot be read or decoded
are counted and listed, and the job goes on.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mmembed.client import ClientOptions, EmbeddingClient, ModelInfo, PartialEmbeddings
from mmembed.gateway.fetch import FetchError, FetchPolicy, fetch
from mmembed.index import store
from mmembed.index.source import SourceItem, read_source

# Batches embedding at once. With one, the server idled at each batch's end while its last requests
# finished: 3,000 photos on the 2-core CPU machine, 217 images/s at 1, 234 at 2, 231-248 at 3
# (docs/PERFORMANCE.md, "Indexing").
BATCHES_EMBEDDING = 2


@dataclass(frozen=True, kw_only=True)
class IndexJob:
    source: Path
    model: str
    collection: str
    url: str = "localhost:8001"  # Triton's gRPC endpoint
    qdrant_path: Path = Path("mmembed-qdrant")  # embedded local mode: a folder, no server
    qdrant_url: str | None = None  # a Qdrant server instead
    # Images per round trip, sent as requests of ClientOptions.image_batch_size, IN_FLIGHT at a time: enough
    # to keep the server's batches full (3,000 photos, 2-core CPU: 166 images/s at 64 and 4 in flight,
    # 215 at 128 and 8; docs/PERFORMANCE.md).
    batch_size: int = 128
    in_flight: int = 8
    # Image URLs in a list file are fetched only from these hosts, never from private networks (unless
    # listed): `mmembed index --allow-url-host`. Off by default.
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    readers: int = 8  # files read and URLs fetched side by side


@dataclass(kw_only=True)
class IndexSummary:
    indexed: int = 0
    skipped: int = 0  # already in the collection
    failed: dict[str, str] = field(default_factory=dict)  # path or URL -> why
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.indexed / self.seconds if self.seconds else 0.0
        return (
            f"indexed {self.indexed}, skipped {self.skipped} (already there), failed {len(self.failed)}, "
            f"in {self.seconds:.1f} s ({rate:.1f} images/s)"
        )


def run_index(job: IndexJob, *, progress: bool = True) -> IndexSummary:
    """Index JOB's source. Two batches are embedded at once (in worker threads) while the one before them is
    stored and the next read, so the server is not left idle while files are read, Qdrant writes, or one
    batch's last requests finish."""
    items = read_source(job.source)
    summary = IndexSummary()
    started = time.monotonic()
    qdrant = store.connect(job.qdrant_path, job.qdrant_url)
    try:
        with (
            EmbeddingClient(job.url, ClientOptions(max_in_flight=job.in_flight)) as client,
            ThreadPoolExecutor(max_workers=BATCHES_EMBEDDING) as embedder,
            ThreadPoolExecutor(max_workers=job.readers) as readers,
        ):
            info = client.model_info(job.model)
            store.ensure_collection(qdrant, job.collection, info.dimension)
            bar = tqdm(total=len(items), unit="img", disable=not progress, dynamic_ncols=True)
            embedding: deque[tuple[Future[Embedded], list[Pending]]] = deque()
            taken: set[str] = set()  # ids this run embeds: an image found twice in the source is stored once

            def held(ids: list[str]) -> AbstractSet[str]:
                return store.existing(qdrant, job.collection, ids) | taken.intersection(ids)

            for start in range(0, len(items), job.batch_size):
                batch = items[start : start + job.batch_size]
                todo = unstored(batch, job.fetch, readers, held, summary)
                taken.update(pid for _, _, pid in todo)
                if todo:
                    embedding.append((embedder.submit(embed, client, info, todo), todo))
                if len(embedding) > BATCHES_EMBEDDING:
                    _store(qdrant, job.collection, info, *embedding.popleft(), summary)
                bar.update(len(batch))
                bar.set_postfix(indexed=summary.indexed, skipped=summary.skipped, failed=len(summary.failed))
            while embedding:
                _store(qdrant, job.collection, info, *embedding.popleft(), summary)
            bar.close()
    finally:
        qdrant.close()
    summary.seconds = time.monotonic() - started
    return summary


Pending = tuple[SourceItem, bytes, str]  # an item, its bytes, its point id
Embedded = tuple[PartialEmbeddings, dict[str, list[float]]]  # image vectors (bad files set aside), captions


def unstored(
    batch: list[SourceItem],
    policy: FetchPolicy,
    readers: ThreadPoolExecutor,
    stored: Callable[[list[str]], AbstractSet[str]],
    summary: IndexSummary,
) -> list[Pending]:
    """BATCH's readable items whose ids STORED does not report, each image once (the unreadable, the stored
    and the copies are counted in SUMMARY)."""
    read: list[Pending] = []
    for item, data in zip(batch, readers.map(lambda item: _read(item, policy), batch), strict=True):
        if isinstance(data, str):
            summary.failed[item.location] = data
            continue
        read.append((item, data, store.point_id(hashlib.sha256(data).hexdigest())))
    taken = set(stored([pid for _, _, pid in read]))
    todo = []
    for entry in read:
        if entry[2] in taken:
            summary.skipped += 1
        else:
            taken.add(entry[2])
            todo.append(entry)
    return todo


def _read(item: SourceItem, policy: FetchPolicy) -> bytes | str:
    """ITEM's bytes, or why they cannot be had."""
    if item.is_url:
        if not policy.enabled:
            return "URLs are not fetched unless their hosts are allowed (mmembed index --allow-url-host HOST)"
        try:
            return fetch(item.location, policy)
        except FetchError as e:
            return f"cannot fetch: {e}"
    try:
        return Path(item.location).read_bytes()
    except OSError as e:
        return f"cannot read: {e.strerror or e}"


def embed(client: EmbeddingClient, info: ModelInfo, todo: list[Pending]) -> Embedded:
    images = client.embed_images(info.name, [data for _, data, _ in todo], on_error="skip")
    captions = sorted({item.caption for item, _, _ in todo if item.caption is not None})
    vectors = client.embed_texts(info.name, captions) if captions else []
    return images, {caption: vector.tolist() for caption, vector in zip(captions, vectors, strict=True)}


def points(info: ModelInfo, todo: list[Pending], embedded: Embedded, summary: IndexSummary) -> list[store.Point]:
    """The points of TODO's embedded items; the files that failed to decode are listed in SUMMARY."""
    images, captions = embedded
    for index, error in images.errors.items():
        summary.failed[todo[index][0].location] = str(error).removeprefix(f"item {index}: ")
    made = []
    for index, vector in zip(images.indexes, images.embeddings, strict=True):
        item, data, pid = todo[index]
        vectors: dict[str, Any] = {store.IMAGE_VECTOR: vector.tolist()}
        if item.caption is not None:
            vectors[store.CAPTION_VECTOR] = captions[item.caption]
            vectors[store.CAPTION_WORDS] = store.words_vector(item.caption)
        payload = {"path": item.location, "caption": item.caption, "bytes": len(data), "model": info.name}
        made.append((pid, vectors, {**payload, "family": info.family, "dimension": info.dimension}))
    return made


def _store(
    qdrant: Any,
    collection: str,
    info: ModelInfo,
    future: Future[Embedded],
    todo: list[Pending],
    summary: IndexSummary,
) -> None:
    """Wait for TODO's vectors and write them."""
    made = points(info, todo, future.result(), summary)
    if made:
        store.upsert(qdrant, collection, made)
    summary.indexed += len(made)
