"""`mmembed index --ray`: the same job on Ray Data, spread over several Triton endpoints.

Ray Data streams the source's items to a pool of actors. Each actor reads its batch, skips the ids the
collection held when the job started, and embeds the rest through one client over every endpoint (round
robin, failing over). Only the driver writes to Qdrant, so the embedded local mode works too, and a batch
is stored once embedded: a killed job resumes exactly as the single-machine one does.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from mmembed.client import ClientOptions, EmbeddingClient
from mmembed.index import store
from mmembed.index.job import IndexJob, IndexSummary, embed, points, unstored
from mmembed.index.source import SourceItem, read_source

INDEXED, SKIPPED, FAILED = "indexed", "skipped", "failed"


@dataclass(frozen=True, kw_only=True)
class RayOptions:
    # None: Ray's own rule (RAY_ADDRESS, else a cluster started on this machine, else a new local one).
    address: str | None = None
    workers_per_endpoint: int = 2  # actors per Triton endpoint, each with a batch in flight
    cpus_per_worker: float = 0.5  # they mostly wait on Triton; reading and hashing is the CPU they need


def run_index_on_ray(job: IndexJob, options: RayOptions, *, progress: bool = True) -> IndexSummary:
    """Index JOB's source on the Ray cluster at OPTIONS.address, over every endpoint in JOB.url."""
    import ray
    import ray.data

    items = read_source(job.source)
    summary = IndexSummary()
    started = time.monotonic()
    qdrant = store.connect(job.qdrant_path, job.qdrant_url)
    try:
        with EmbeddingClient(job.url) as client:
            info, endpoints = client.model_info(job.model), len(client.urls)
        store.ensure_collection(qdrant, job.collection, info.dimension)
        held = frozenset(store.all_ids(qdrant, job.collection))
        if not ray.is_initialized():
            ray.init(address=options.address, logging_level=logging.WARNING, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts stored items
        # No caption travels as "" (a column of nothing but None would come back as NaN).
        rows = [{"location": item.location, "caption": item.caption or ""} for item in items]
        results = ray.data.from_items(rows).map_batches(
            EmbedWorker,
            fn_constructor_kwargs={"job": job, "held": held},
            batch_size=job.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=options.workers_per_endpoint * endpoints),
            num_cpus=options.cpus_per_worker,
        )
        bar = tqdm(total=len(items), unit="img", disable=not progress, dynamic_ncols=True)
        written: set[str] = set()  # an image found twice in the source, by two workers, is stored once
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            _store(qdrant, job.collection, batch, written, summary)
            bar.update(len(batch["status"]))
            bar.set_postfix(indexed=summary.indexed, skipped=summary.skipped, failed=len(summary.failed))
        bar.close()
    finally:
        qdrant.close()
    summary.seconds = time.monotonic() - started
    return summary


class EmbedWorker:
    """A Ray actor: reads, skips and embeds a batch of items at a time, and answers one row per item:
    its status, why it failed, or its point (id, payload as JSON, image and caption vectors)."""

    def __init__(self, job: IndexJob, held: frozenset[str]) -> None:
        self.job, self.held = job, held
        self.client = EmbeddingClient(job.url, ClientOptions(max_in_flight=job.in_flight))
        self.info = self.client.model_info(job.model)
        self.readers = ThreadPoolExecutor(max_workers=job.readers)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [
            SourceItem(str(location), str(caption) or None)
            for location, caption in zip(batch["location"], batch["caption"], strict=True)
        ]
        outcome = IndexSummary()
        todo = unstored(items, self.job.fetch, self.readers, self.held.intersection, outcome)
        made = points(self.info, todo, embed(self.client, self.info, todo), outcome) if todo else []
        by_location = {payload["path"]: (pid, vectors, payload) for pid, vectors, payload in made}
        dimension = self.info.dimension
        rows: dict[str, list[Any]] = {key: [] for key in ("status", "reason", "id", "payload", "image", "caption")}
        for item in items:
            pid, vectors, payload = by_location.get(item.location, ("", {}, {}))
            failed = outcome.failed.get(item.location)
            rows["status"].append(FAILED if failed is not None else INDEXED if pid else SKIPPED)
            rows["reason"].append(failed or "")
            rows["id"].append(pid)
            rows["payload"].append(json.dumps(payload))
            rows["image"].append(vectors.get(store.IMAGE_VECTOR, [0.0] * dimension))
            rows["caption"].append(vectors.get(store.CAPTION_VECTOR, [0.0] * dimension))
        return {
            **{key: np.array(rows[key], dtype=object) for key in ("status", "reason", "id", "payload")},
            "location": np.array([item.location for item in items], dtype=object),
            "image": np.asarray(rows["image"], dtype=np.float32),
            "caption": np.asarray(rows["caption"], dtype=np.float32),
        }


def _store(
    qdrant: Any, collection: str, batch: dict[str, np.ndarray], written: set[str], summary: IndexSummary
) -> None:
    """Write a batch of the workers' rows: their points, failures and skips (and the points WRITTEN holds)."""
    made: list[store.Point] = []
    for status, reason, location, pid, payload_json, image, caption in zip(
        *(batch[key] for key in ("status", "reason", "location", "id", "payload", "image", "caption")), strict=True
    ):
        if status == FAILED:
            summary.failed[str(location)] = str(reason)
        elif status == SKIPPED or pid in written:
            summary.skipped += 1
        else:
            written.add(str(pid))
            payload = json.loads(payload_json)
            vectors: dict[str, Any] = {store.IMAGE_VECTOR: image.tolist()}
            if payload["caption"] is not None:
                vectors[store.CAPTION_VECTOR] = caption.tolist()
                vectors[store.CAPTION_WORDS] = store.words_vector(payload["caption"])
            made.append((str(pid), vectors, payload))
    if made:
        store.upsert(qdrant, collection, made)
    summary.indexed += len(made)
