"""`mmembed search-page`: a web page to try a collection: a text box and an image drop, a grid of the
closest images with their scores and captions, the model and the collection named.

One small FastAPI app (the gateway's dependencies) on the search functions of `mmembed.index.search`:
`GET /` is the page; `GET /api/search?q=` and `POST /api/search` (image bytes) answer JSON; `GET
/image/{id}` serves the file of a point the collection holds (and nothing else: no path comes from the
request). The page runs the search in its
address (`/?q=red+car`) on load, so a result can be linked to.
"""

from __future__ import annotations

import asyncio
import mimetypes
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from mmembed.index import store
from mmembed.index.search import Hit, SearchError, search

PAGE_FILE = "search_page.html"  # beside this module: the page, with {{collection}} and {{model}} filled in


@dataclass(frozen=True, kw_only=True)
class PageSettings:
    collection: str
    url: str = "localhost:8001"  # Triton's gRPC endpoint
    qdrant_path: Path = Path("mmembed-qdrant")
    qdrant_url: str | None = None
    model: str | None = None  # default: the one the collection was indexed with
    top_k: int = 24
    max_image_bytes: int = 20 * 1024 * 1024


def create_page_app(settings: PageSettings) -> FastAPI:
    app = FastAPI(title="mmembed search page")
    lock = asyncio.Lock()  # Qdrant's local mode allows one open client per folder: one search at a time

    async def run(**query: Any) -> JSONResponse:
        async with lock:
            try:
                hits = await asyncio.to_thread(_search, settings, **query)
            except SearchError as e:
                raise HTTPException(400, str(e)) from None
        return JSONResponse([_result(hit) for hit in hits])

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        model = settings.model if settings.model else await asyncio.to_thread(_collection_model, settings)
        page = (Path(__file__).parent / PAGE_FILE).read_text(encoding="utf-8")
        return page.replace("{{collection}}", _html(settings.collection)).replace("{{model}}", _html(model))

    @app.get("/api/search")
    async def by_text(q: str) -> JSONResponse:
        return await run(text=q)

    @app.post("/api/search")
    async def by_image(request: Request) -> JSONResponse:
        data = await request.body()
        if not data or len(data) > settings.max_image_bytes:
            raise HTTPException(400, f"send one image of 1 to {settings.max_image_bytes} bytes")
        return await run(image=data)

    @app.get("/image/{point_id}")
    async def image(point_id: str) -> Response:
        async with lock:
            path = await asyncio.to_thread(_point_path, settings, point_id)
        if path is None or not path.is_file():
            raise HTTPException(404, "no such image in the collection")
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return Response(path.read_bytes(), media_type=media)

    return app


def _search(settings: PageSettings, **query: Any) -> list[Hit]:
    return search(
        collection=settings.collection,
        model=settings.model,
        top_k=settings.top_k,
        url=settings.url,
        qdrant_path=settings.qdrant_path,
        qdrant_url=settings.qdrant_url,
        **query,
    )


def _result(hit: Hit) -> dict[str, Any]:
    remote = hit.path.startswith(("http://", "https://"))
    return {**asdict(hit), "image": hit.path if remote else f"/image/{hit.id}"}


def _collection_model(settings: PageSettings) -> str:
    qdrant = store.connect(settings.qdrant_path, settings.qdrant_url)
    try:
        records, _ = qdrant.scroll(settings.collection, limit=1, with_payload=True)
        return str((records[0].payload or {}).get("model", "?")) if records else "?"
    finally:
        qdrant.close()


def _point_path(settings: PageSettings, point_id: str) -> Path | None:
    qdrant = store.connect(settings.qdrant_path, settings.qdrant_url)
    try:
        points = qdrant.retrieve(settings.collection, [point_id], with_payload=True)
    except Exception:  # not an id, or no such collection
        return None
    finally:
        qdrant.close()
    path = (points[0].payload or {}).get("path") if points else None
    return Path(path) if isinstance(path, str) and not path.startswith(("http://", "https://")) else None


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
