"""`mmembed index` and `mmembed search` against the real tritonserver and Qdrant's embedded local mode:
bad files counted, re-runs idempotent, a killed job resumed without loss, searches that find what was
indexed."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import MODEL
from image_files import encode, photo
from image_server import image_server
from qdrant_client import QdrantClient

from mmembed.index.job import IndexJob, run_index
from mmembed.index.search import SearchError, search
from mmembed.serving.server import TritonServer


def photo_folder(folder: Path, count: int, first_seed: int = 0) -> Path:
    for seed in range(first_seed, first_seed + count):
        kind = "PNG" if seed % 3 == 0 else "JPEG"
        path = folder / f"album-{seed // 10}" / f"photo-{seed:03d}.{kind.lower()}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(photo(48 + seed % 7 * 8, 40 + seed % 5 * 8, seed=seed), kind))
    return folder


def stored(qdrant_path: Path, collection: str) -> list[dict[str, object]]:
    client = QdrantClient(path=str(qdrant_path))
    try:
        records, _ = client.scroll(collection, limit=10_000, with_payload=True)
        return [{"id": str(r.id), **(r.payload or {})} for r in records]
    finally:
        client.close()


def test_index_counts_bad_files_and_a_rerun_embeds_nothing_twice(server: TritonServer, tmp_path: Path) -> None:
    images = photo_folder(tmp_path / "photos", 24)
    (images / "album-0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (images / "album-1" / "empty.png").write_bytes(b"")
    original = images / "album-0" / "photo-001.jpeg"
    for copy in (images / "album-0" / "photo-001 copy.jpeg", images / "album-2" / "again.jpeg"):
        copy.write_bytes(original.read_bytes())  # in the original's batch (sorted before it), and in a later one
    job = IndexJob(
        source=images,
        model=MODEL,
        collection="photos",
        url=server.grpc_url,
        qdrant_path=tmp_path / "qdrant",
        batch_size=8,
    )
    first = run_index(job, progress=False)
    assert (first.indexed, first.skipped, len(first.failed)) == (24, 2, 2)  # the copies skipped: stored once
    assert "corrupt or truncated" in first.failed[str(images / "album-0" / "broken.jpg")]
    assert first.failed[str(images / "album-1" / "empty.png")] == "image is empty (0 bytes)"
    points = stored(tmp_path / "qdrant", "photos")
    assert len(points) == 24 and {p["model"] for p in points} == {MODEL}
    paths = {str(p["path"]) for p in points}
    assert str(images / "album-0" / "photo-001 copy.jpeg") in paths and str(original) not in paths  # the first
    again = run_index(job, progress=False)
    assert (again.indexed, again.skipped, len(again.failed)) == (0, 26, 2)
    assert len(stored(tmp_path / "qdrant", "photos")) == 24


def test_a_killed_job_resumes_without_loss(server: TritonServer, tmp_path: Path) -> None:
    images = photo_folder(tmp_path / "photos", 96)
    command = [
        sys.executable, "-m", "mmembed.cli", "index", str(images), "--model", MODEL, "--collection", "c",
        "--url", server.grpc_url, "--qdrant-path", str(tmp_path / "qdrant"), "--batch-size", "8",
    ]  # fmt: skip
    job = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    assert job.stderr is not None
    progress = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # tqdm's progress: kill once some, not all, batches are stored
        progress += os.read(job.stderr.fileno(), 4096)
        done = [int(n) for n in re.findall(rb"(\d+)/96", progress)]  # items read; two batches may be embedding
        if done and 40 <= done[-1] < 96:
            break
    job.send_signal(signal.SIGKILL)
    job.wait()
    before = len(stored(tmp_path / "qdrant", "c"))
    assert 16 <= before < 96  # the batches stored before the kill are there
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    summary = finished.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"indexed {96 - before}, skipped {before} (already there), failed 0")
    points = stored(tmp_path / "qdrant", "c")
    assert len(points) == 96 and len({p["path"] for p in points}) == 96


def test_search_by_text_and_by_image(server: TritonServer, tmp_path: Path) -> None:
    images = photo_folder(tmp_path / "photos", 12)
    files = sorted(images.rglob("*.*"))
    rows = [{"path": str(path.relative_to(tmp_path)), "caption": f"photo {i}"} for i, path in enumerate(files)]
    listing = tmp_path / "list.jsonl"
    listing.write_text("\n".join(json.dumps(row) for row in rows))
    qdrant = tmp_path / "qdrant"
    summary = run_index(
        IndexJob(source=listing, model=MODEL, collection="c", url=server.grpc_url, qdrant_path=qdrant), progress=False
    )
    assert summary.indexed == 12
    target = files[5]
    hits = search(collection="c", image=target, top_k=3, url=server.grpc_url, qdrant_path=qdrant)
    assert hits[0].path == str(target) and hits[0].score > 0.9999 and hits[0].caption == "photo 5"
    found = subprocess.run(
        [sys.executable, "-m", "mmembed.cli", "search", "a photo", "--collection", "c", "--top-k", "4", "--json",
         "--url", server.grpc_url, "--qdrant-path", str(qdrant)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    answer = json.loads(found.stdout)
    assert len(answer) == 4 and set(answer[0]) == {"path", "score", "caption"}
    assert [hit["score"] for hit in answer] == sorted((hit["score"] for hit in answer), reverse=True)
    with pytest.raises(SearchError, match="no collection named 'nope'"):
        search(collection="nope", text="x", url=server.grpc_url, qdrant_path=qdrant)


def test_hybrid_search_finds_a_caption_by_its_words_and_meaning(server: TritonServer, tmp_path: Path) -> None:
    """A query equal to one caption, whose rare word no other caption has, is first in the dense caption list
    (cosine 1) and in the BM25 list, so first after fusion; the rare word alone finds it through BM25."""
    images = photo_folder(tmp_path / "photos", 10)
    files = sorted(images.rglob("*.*"))
    captions = [f"a photo of a {animal}" for animal in ("cat", "dog", "horse", "bird", "cow")] * 2
    captions[7] = "a striped zebra near the river"
    rows = [{"path": str(path), "caption": caption} for path, caption in zip(files, captions, strict=True)]
    with open(tmp_path / "list.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    qdrant = tmp_path / "qdrant"
    job = IndexJob(source=tmp_path / "list.csv", model=MODEL, collection="c", url=server.grpc_url, qdrant_path=qdrant)
    assert run_index(job, progress=False).indexed == 10
    hits = search(collection="c", text=captions[7], hybrid=True, top_k=3, url=server.grpc_url, qdrant_path=qdrant)
    assert hits[0].path == str(files[7]) and hits[0].caption == captions[7]
    # The rare word alone: the random model's dense ranks say little, the words list holds only that item,
    # and fusion puts it above anything ranked first by meaning alone (1/61 + 1/(60 + r) > 1/61).
    words = search(collection="c", text="zebra", hybrid=True, top_k=3, url=server.grpc_url, qdrant_path=qdrant)
    assert words[0].path == str(files[7])
    with pytest.raises(SearchError, match="hybrid search looks in the captions: give a text"):
        search(collection="c", image=files[0], hybrid=True, url=server.grpc_url, qdrant_path=qdrant)


def test_parquet_lists_and_allowed_urls_are_indexed_and_refused_urls_listed(
    server: TritonServer, tmp_path: Path
) -> None:
    """A Parquet list (path, caption) with local files and image URLs: URLs are fetched only from the
    allowed host, and a missing one is listed as failed, as is every URL when fetching is off."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmembed.gateway.fetch import FetchPolicy

    photos = {f"/p{i}.jpg": encode(photo(56, 48, seed=100 + i), "JPEG") for i in range(3)}
    (tmp_path / "local.png").write_bytes(encode(photo(40, 40, seed=7), "PNG"))
    with image_server(photos) as base:
        rows = {
            "path": ["local.png", f"{base}/p0.jpg", f"{base}/p1.jpg", f"{base}/p2.jpg", f"{base}/gone.jpg"],
            "caption": ["a local file", "first url", None, "third url", "missing"],
            "ignored": [1, 2, 3, 4, 5],  # other columns stay on disk
        }
        listing = tmp_path / "images.parquet"
        pq.write_table(pa.table(rows), listing)
        base_job = IndexJob(source=listing, model=MODEL, collection="mixed", url=server.grpc_url, batch_size=2)
        refused = run_index(replace(base_job, qdrant_path=tmp_path / "q-off"), progress=False)
        assert (refused.indexed, len(refused.failed)) == (1, 4)
        assert "--allow-url-host" in refused.failed[f"{base}/p0.jpg"]
        policy = FetchPolicy(allowed_hosts=("127.0.0.1",), allowed_networks=("127.0.0.1/32",))
        allowed = run_index(replace(base_job, qdrant_path=tmp_path / "q-on", fetch=policy), progress=False)
    assert (allowed.indexed, list(allowed.failed)) == (4, [f"{base}/gone.jpg"])
    assert "cannot fetch" in allowed.failed[f"{base}/gone.jpg"] and "404" in allowed.failed[f"{base}/gone.jpg"]
    points = {point["path"]: point for point in stored(tmp_path / "q-on", "mixed")}
    assert set(points) == {str(tmp_path / "local.png"), f"{base}/p0.jpg", f"{base}/p1.jpg", f"{base}/p2.jpg"}
    assert points[f"{base}/p0.jpg"]["caption"] == "first url" and points[f"{base}/p1.jpg"]["caption"] is None
