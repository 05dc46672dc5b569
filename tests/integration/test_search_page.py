"""The search page (`mmembed search-page`) in a real headless Chromium (Debian's package): the page loads,
runs the search in its address, and renders the results with their thumbnails; a screenshot is kept in
test-artifacts/. Its JSON API searches by text and by image, and serves only the collection's images."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MODEL
from gateway_server import running_app
from image_files import encode, photo

from mmembed.index.job import IndexJob, run_index
from mmembed.index.page import PageSettings, create_page_app
from mmembed.serving.server import TritonServer

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CAPTIONS = ["a red car", "a blue boat", "a green tree", "a yellow house", "a black cat", "a white dog"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "the search page is tested in Debian's chromium package: apt-get install chromium (.ci/run does)"
    return found


@pytest.fixture(scope="module")
def page(server: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("page-photos")
    with open(folder / "list.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "caption"])
        for seed, caption in enumerate(CAPTIONS):
            (folder / f"{seed}.jpg").write_bytes(encode(photo(96, 72, seed=300 + seed), "JPEG"))
            writer.writerow([f"{seed}.jpg", caption])
    qdrant = folder / "qdrant"
    job = IndexJob(source=folder / "list.csv", model=MODEL, collection="album", url=server.grpc_url, qdrant_path=qdrant)
    assert run_index(job, progress=False).indexed == len(CAPTIONS)
    settings = PageSettings(collection="album", url=server.grpc_url, qdrant_path=qdrant, top_k=4)
    with running_app(create_page_app(settings)) as url:
        yield url, folder


def _browser(*arguments: str) -> subprocess.CompletedProcess[str]:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    command += ["--virtual-time-budget=20000", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_page_searches_and_renders_the_results_in_chromium(page: tuple[str, Path]) -> None:
    url, _ = page
    dom = _browser("--dump-dom", f"{url}/?q=a+red+car").stdout
    assert f'<b id="model">{MODEL}</b>' in dom and '<b id="collection">album</b>' in dom
    cards = re.findall(r'<div class="result"><img src="([^"]+)"[^>]*><div><span class="score">([\d.]+)</span>', dom)
    assert len(cards) == 4, dom[-2000:]  # top_k results rendered
    assert all(source.startswith("/image/") for source, _ in cards)
    scores = [float(score) for _, score in cards]
    assert scores == sorted(scores, reverse=True)
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "search-page.png"
    screenshot.unlink(missing_ok=True)
    _browser(f"--screenshot={screenshot}", "--window-size=1280,900", f"{url}/?q=a+red+car")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")


def test_the_api_searches_by_image_and_serves_only_the_collections_images(page: tuple[str, Path]) -> None:
    url, folder = page
    image = (folder / "2.jpg").read_bytes()
    request = urllib.request.Request(f"{url}/api/search", image, method="POST")
    with urllib.request.urlopen(request, timeout=60) as answer:
        hits = json.loads(answer.read())
    assert hits[0]["path"] == str(folder / "2.jpg") and hits[0]["score"] > 0.999  # itself first
    with urllib.request.urlopen(f"{url}{hits[0]['image']}", timeout=30) as answer:
        assert answer.read() == image and answer.headers["content-type"] == "image/jpeg"
    for wrong in ("/image/not-an-id", "/image/00000000-0000-0000-0000-000000000000", "/image/..%2F..%2Fetc%2Fpasswd"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}{wrong}", timeout=30)
        assert refused.value.code == 404, wrong
