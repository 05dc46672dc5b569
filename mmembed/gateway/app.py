"""The gateway's HTTP application: `/v1/embeddings`, `/v1/models`, `/health`, `/metrics`.

Each request becomes at most two calls of the async client (its texts, its images), which Triton batches
with everyone else's; the answer keeps the caller's order.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from mmembed.client import AsyncEmbeddingClient, ClientOptions, EmbeddingError, InvalidInputError, ModelInfo
from mmembed.gateway.errors import ApiError, bad_input, from_client_error
from mmembed.gateway.fetch import FetchError, FetchPolicy, fetch, fetch_error
from mmembed.gateway.items import Items, parse_items
from mmembed.gateway.metrics import GatewayMetrics
from mmembed.gateway.wire import EmbeddingRequest, EmbeddingResponse, ModelCard, ModelList


@dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    triton_url: str = "localhost:8001"
    # Callers must send `Authorization: Bearer <one of these>`; empty: no key is asked for.
    api_keys: tuple[str, ...] = ()
    max_items: int = 2048  # per request
    max_request_bytes: int = 64 * 1024 * 1024  # per request body, checked while it arrives
    triton: ClientOptions = field(default_factory=ClientOptions)  # timeout, TLS and key towards Triton
    fetch: FetchPolicy = field(default_factory=FetchPolicy)  # image URLs: off unless hosts are allowed


def read_api_keys(path: Path | None, listed: str = "") -> tuple[str, ...]:
    """Keys from PATH (one per line; blank lines and # comments skipped) and LISTED (comma-separated)."""
    lines = path.read_text().splitlines() if path is not None else []
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    keys += [key.strip() for key in listed.split(",") if key.strip()]
    return tuple(keys)


def create_app(settings: GatewaySettings) -> FastAPI:
    metrics = GatewayMetrics()
    state: dict[str, AsyncEmbeddingClient] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncEmbeddingClient(settings.triton_url, settings.triton) as client:
            state["client"] = client
            yield

    app = FastAPI(
        title="mmembed gateway", summary="OpenAI-compatible embeddings for text and images", lifespan=lifespan
    )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        metrics.errors.labels(code=error.code or str(error.status)).inc()
        metrics.requests.labels(endpoint=request.url.path, status=str(error.status)).inc()
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers())

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        """A bug answers as OpenAI's error object too (and is logged with its traceback by the server)."""
        api = ApiError(500, f"internal error: {type(error).__name__}", type="server_error", code="internal")
        return await api_error(request, api)

    @app.post("/v1/embeddings", response_model=EmbeddingResponse)
    async def embeddings(request: Request) -> Response:
        started = time.perf_counter()
        _authorize(request, settings.api_keys)
        body = _parse(await _read_limited(request, settings.max_request_bytes))
        client = state["client"]
        info = await _model(client, body.model)
        items = parse_items(body, settings.max_items, fetch_urls=settings.fetch.enabled)
        _check_request(info, body, items)
        await _fetch_urls(items, settings.fetch)
        vectors = await _embed(client, info, body, items)
        metrics.items.labels(kind="text").inc(len(items.texts))
        metrics.items.labels(kind="image").inc(len(items.images))
        metrics.latency.observe(time.perf_counter() - started)
        metrics.requests.labels(endpoint="/v1/embeddings", status="200").inc()
        return Response(_answer(body, vectors), media_type="application/json")

    @app.get("/v1/models", response_model=ModelList)
    async def models(request: Request) -> ModelList:
        _authorize(request, settings.api_keys)
        try:
            infos = await state["client"].list_models()
        except EmbeddingError as e:
            raise from_client_error(e) from None
        return ModelList(data=[_card(info) for info in infos])

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 only when Triton answers and reports every model ready."""
        ready = await state["client"].ready()
        return JSONResponse({"status": "ready" if ready else "unavailable"}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4")

    return app


def _authorize(request: Request, keys: tuple[str, ...]) -> None:
    if not keys:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Every key is compared, in constant time, whatever matched: the timing tells nothing.
    matches = [hmac.compare_digest(given.encode(), key.encode()) for key in keys]
    if scheme.lower() != "bearer" or not any(matches):
        raise ApiError(401, "a valid API key is required: Authorization: Bearer <key>", code="invalid_api_key")


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to pass LIMIT (declared or while arriving)."""
    too_large = ApiError(413, f"request body over this server's limit of {limit} bytes", code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> EmbeddingRequest:
    try:
        return EmbeddingRequest.model_validate_json(body)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise bad_input(f"{where}: {first['msg']}", param=where or "body", code="invalid_request") from None


async def _model(client: AsyncEmbeddingClient, model: str) -> ModelInfo:
    try:
        return await client.model_info(model)
    except EmbeddingError as e:
        raise from_client_error(e) from None


def _check_request(info: ModelInfo, body: EmbeddingRequest, items: Items) -> None:
    if body.instruction is not None and info.instruction_template is None:
        fixed = f" (its queries get {info.query_instruction!r})" if info.query_instruction else ""
        raise bad_input(f"model {info.name!r} does not take a per-request instruction{fixed}", param="instruction")
    if body.instruction is not None and body.input_type == "document":
        raise bad_input("an instruction applies to queries, not to input_type 'document'", param="instruction")
    if body.instruction is not None and not body.instruction.strip():
        raise bad_input("the instruction is empty: leave it out for the model's default task", param="instruction")
    if (items.images or items.urls) and "image" not in info.modalities:
        raise bad_input(f"model {info.name!r} does not embed images (it embeds: {', '.join(info.modalities)})")
    allowed = {info.dimension, *info.matryoshka_dimensions}
    if body.dimensions is not None and body.dimensions not in allowed:
        sizes = ", ".join(map(str, sorted(allowed)))
        raise bad_input(f"model {info.name!r} supports dimensions {sizes}, not {body.dimensions}", param="dimensions")


async def _fetch_urls(items: Items, policy: FetchPolicy) -> None:
    """Fetch ITEMS' image URLs side by side (each in a thread: the fetch blocks) into its images."""

    async def one(index: int, url: str) -> tuple[int, bytes]:
        try:
            return index, await asyncio.to_thread(fetch, url, policy)
        except FetchError as e:
            raise fetch_error(index, e) from None

    items.images += await asyncio.gather(*(one(index, url) for index, url in items.urls))
    items.urls.clear()


async def _embed(client: AsyncEmbeddingClient, info: ModelInfo, body: EmbeddingRequest, items: Items) -> np.ndarray:
    """The vectors of every item, in the caller's order; a bad item fails the request naming its index."""
    query = body.input_type == "query" or body.instruction is not None  # an instruction makes a query

    async def texts() -> np.ndarray:
        result: np.ndarray = await client.embed_texts(
            body.model,
            [text for _, text in items.texts],
            query=query,
            instruction=body.instruction,
            dimensions=body.dimensions,
        )
        return result

    async def images() -> np.ndarray:
        data = [image for _, image in items.images]
        if query and "image_query" in info.modalities:  # models with image queries (MM-Embed): as queries
            pairs = [(image, "") for image in data]
            instruction = body.instruction
            queried: np.ndarray = await client.embed_multimodal(
                body.model, pairs, query=True, instruction=instruction, dimensions=body.dimensions
            )
            return queried
        result: np.ndarray = await client.embed_images(body.model, data, dimensions=body.dimensions)
        return result

    calls = [(texts, [i for i, _ in items.texts])] if items.texts else []
    calls += [(images, [i for i, _ in items.images])] if items.images else []
    results = await asyncio.gather(*(call() for call, _ in calls), return_exceptions=True)
    vectors: np.ndarray | None = None
    for (_, indexes), result in zip(calls, results, strict=True):
        if isinstance(result, InvalidInputError):
            raise from_client_error(result, indexes[result.index] if result.index is not None else None)
        if isinstance(result, EmbeddingError):
            raise from_client_error(result)
        if isinstance(result, BaseException):
            raise result
        if vectors is None:
            vectors = np.empty((len(items), result.shape[1]), dtype=np.float32)
        vectors[indexes] = result
    assert vectors is not None
    return vectors


def _answer(body: EmbeddingRequest, vectors: np.ndarray) -> str:
    """The response as JSON, written straight from the vectors: putting thousands of floats through the
    response model costs more than embedding a short text (EmbeddingResponse documents the shape). The
    gateway does not tokenise (the server's preprocessing does), so it reports no token counts."""
    data = [
        {"object": "embedding", "index": index, "embedding": _encode(vector, body.encoding_format)}
        for index, vector in enumerate(vectors)
    ]
    usage = {"prompt_tokens": 0, "total_tokens": 0}
    return json.dumps({"object": "list", "data": data, "model": body.model, "usage": usage}, separators=(",", ":"))


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # OpenAI's: little-endian float32, base64
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    result: list[float] = vector.tolist()
    return result


def _card(info: ModelInfo) -> ModelCard:
    return ModelCard(
        id=info.name,
        dimension=info.dimension,
        modalities=list(info.modalities),
        matryoshka_dimensions=list(info.matryoshka_dimensions),
        max_text_length=info.max_text_length,
        image_size=list(info.image_size) if info.image_size else None,
    )
