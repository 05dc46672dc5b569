"""AsyncEmbeddingClient: the asyncio twin of EmbeddingClient, with the same arguments and results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Literal, overload

import numpy as np
import tritonclient.grpc.aio as aioclient

from mmembed.client import _triton
from mmembed.client._endpoints import Endpoints, parse_urls
from mmembed.client._errors import (
    DeadlineExceededError,
    EmbeddingError,
    InvalidInputError,
    ModelNotFoundError,
    ServerUnavailableError,
)
from mmembed.client._inputs import ImageInput, image_bytes, image_text_bytes, text_bytes
from mmembed.client._items import (
    BatchResult,
    Item,
    OnError,
    PartialEmbeddings,
    Payload,
    assemble,
    batches,
    check_on_error,
    convert_items,
    rebased,
    without,
)
from mmembed.client._retry import retry_delay
from mmembed.client._types import ModelInfo
from mmembed.client.options import ClientOptions


class AsyncEmbeddingClient:
    """Embed images and texts over gRPC from asyncio code; see EmbeddingClient for the contract."""

    def __init__(self, url: str | Sequence[str] = "localhost:8001", options: ClientOptions | None = None) -> None:
        self.options = options or ClientOptions()
        urls = parse_urls(url)
        clients = [
            aioclient.InferenceServerClient(u, ssl=self.options.ssl, root_certificates=self.options.root_certificates)
            for u in urls
        ]
        self._endpoints = Endpoints(urls, clients)
        self._headers = self.options.request_headers()
        self._infos: dict[str, ModelInfo] = {}

    @property
    def urls(self) -> list[str]:
        """The endpoints this client spreads its requests over."""
        return list(self._endpoints.urls)

    @overload
    async def embed_images(
        self,
        model: str,
        images: Iterable[ImageInput],
        *,
        dimensions: int | None = None,
        timeout_s: float | None = None,
        on_error: Literal["raise"] = "raise",
    ) -> np.ndarray: ...

    @overload
    async def embed_images(
        self,
        model: str,
        images: Iterable[ImageInput],
        *,
        dimensions: int | None = None,
        timeout_s: float | None = None,
        on_error: Literal["skip"],
    ) -> PartialEmbeddings: ...

    async def embed_images(
        self,
        model: str,
        images: Iterable[ImageInput],
        *,
        dimensions: int | None = None,
        timeout_s: float | None = None,
        on_error: OnError = "raise",
    ) -> np.ndarray | PartialEmbeddings:
        check_on_error(on_error)
        if dimensions is not None:
            _triton.check_dimensions(await self.model_info(model), dimensions)
        skip = on_error == "skip"
        items, set_aside = convert_items(images, image_bytes, skip)
        result = await self._embed(model, "image", items, self.options.image_batch_size, timeout_s, set_aside, skip)
        return _triton.truncate_result(result, dimensions)

    @overload
    async def embed_texts(
        self,
        model: str,
        texts: Iterable[str],
        *,
        query: bool = False,
        instruction: str | None = None,
        dimensions: int | None = None,
        timeout_s: float | None = None,
        on_error: Literal["raise"] = "raise",
    ) -> np.ndarray: ...

    @overload
    async def embed_texts(
        self,
        model: str,
        texts: Iterable[str],
        *,
        query: bool = False,
        instruction: str | None = None,
        dimensions: int | None = None,
        timeout_s: float | None = None,
        on_error: Literal["skip"],
    ) -> PartialEmbeddings: ...

    async def embed_texts(
        self,
        model: str,
        texts: Iterable[str],
        *,
        query: bool = False,
        instruction: str | None = None,
        dimensions: int | None = None,
        timeout_s: float | None = None,
        on_error: OnError = "raise",
    ) -> np.ndarray | PartialEmbeddings:
        check_on_error(on_error)
        modality = "text"
        if query or dimensions is not None or instruction is not None:
            info = await self.model_info(model)
            _triton.check_dimensions(info, dimensions)
            _triton.check_instruction(info, query, instruction)
            modality = _triton.text_modality(info, query)
        skip = on_error == "skip"
        items, set_aside = convert_items(texts, text_bytes, skip)
        batch_size = self.options.text_batch_size
        result = await self._embed(model, modality, items, batch_size, timeout_s, set_aside, skip, instruction)
        return _triton.truncate_result(result, dimensions)

    @overload
    async def embed_multimodal(
        self,
        model: str,
        items: Iterable[tuple[ImageInput, str]],
        *,
        query: bool = False,
        instruction: str | None = None,
        dimensions: int | None = None,
        timeout_s: float | None = None,
        on_error: Literal["raise"] = "raise",
    ) -> np.ndarray: ...

    @overload
    async def embed_multimodal(
        self,
        model: str,
        items: Iterable[tuple[ImageInput, str]],
        *,
        query: bool = False,
        instruction: str | None = None,
        dimensions: int | None = None,
        timeout_s: float | None = None,
        on_error: Literal["skip"],
    ) -> PartialEmbeddings: ...

    async def embed_multimodal(
        self,
        model: str,
        items: Iterable[tuple[ImageInput, str]],
        *,
        query: bool = False,
        instruction: str | None = None,
        dimensions: int | None = None,
        timeout_s: float | None = None,
        on_error: OnError = "raise",
    ) -> np.ndarray | PartialEmbeddings:
        """One vector per (image, text) pair, the two read together, for models that do (MM-Embed); a text
        may be "" (the image alone). `query=True` embeds them as queries, with INSTRUCTION's task or none."""
        check_on_error(on_error)
        info = await self.model_info(model)
        _triton.check_dimensions(info, dimensions)
        _triton.check_instruction(info, query, instruction)
        modality = _triton.multimodal_modality(info, query)
        skip = on_error == "skip"
        pairs, set_aside = convert_items(items, image_text_bytes, skip)
        batch_size = self.options.image_batch_size
        result = await self._embed(model, modality, pairs, batch_size, timeout_s, set_aside, skip, instruction)
        return _triton.truncate_result(result, dimensions)

    async def ready(self) -> bool:
        """Whether a server answers and says every model is ready (mmembed serve's strict readiness); with
        several endpoints, whether at least one does."""
        for client in self._endpoints.clients:
            try:
                with _triton.translated_errors():
                    if await client.is_server_ready(headers=self._headers):
                        return True
            except ServerUnavailableError:
                continue
        return False

    async def list_models(self) -> list[ModelInfo]:
        """The models served (from the first endpoint that answers)."""
        for _ in self._endpoints.clients:
            index, client = self._endpoints.pick()
            try:
                with _triton.translated_errors():
                    statistics = await client.get_inference_statistics(headers=self._headers, as_json=True)
                    configs = {
                        name: (await client.get_model_config(name, headers=self._headers, as_json=True))["config"]
                        for name in _triton.ready_ensembles(statistics)
                    }
                break
            except ServerUnavailableError:
                if not self._endpoints.set_aside(index):
                    raise
        else:
            raise ServerUnavailableError(f"no endpoint answered: {', '.join(self._endpoints.urls)}")
        infos: list[ModelInfo] = _triton.model_infos(configs)
        self._infos = {info.name: info for info in infos}
        return infos

    async def model_info(self, model: str) -> ModelInfo:
        if model not in self._infos:
            await self.list_models()
        if model not in self._infos:
            raise _triton.model_not_found(model, list(self._infos.values()))
        return self._infos[model]

    async def _embed(
        self,
        model: str,
        modality: str,
        items: list[Item],
        batch_size: int,
        timeout_s: float | None,
        set_aside: BatchResult,
        skip: bool,
        instruction: str | None = None,
    ) -> np.ndarray | PartialEmbeddings:
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.options.timeout_s)
        target = _triton.Target(
            ensemble=_triton.ensemble_name(model, modality), modality=modality, instruction=instruction
        )
        in_flight = asyncio.Semaphore(self.options.max_in_flight)

        async def infer_items(batch: list[Item]) -> BatchResult:
            async with in_flight:
                return await self._infer_items(target, batch, deadline, skip)

        try:
            results = await asyncio.gather(*(infer_items(batch) for batch in batches(items, batch_size)))
        except ModelNotFoundError:
            raise _triton.model_not_found(model, await self.list_models(), modality) from None
        dimension = 0
        if not any(result.indexes for result in results):  # no vector came back: the model tells its size
            dimension = (await self.model_info(model)).dimension
        return assemble([set_aside, *results], lambda: dimension, skip)

    async def _infer_items(self, target: _triton.Target, items: list[Item], deadline: float, skip: bool) -> BatchResult:
        """One request of ITEMS; with SKIP, a bad item is set aside and the rest sent again."""
        errors: dict[int, InvalidInputError] = {}
        while items:
            try:
                vectors = await self._infer(target, [data for _, data in items], deadline)
                return BatchResult([index for index, _ in items], vectors, errors)
            except InvalidInputError as e:
                error = rebased(e, items)
                if not skip or error.index is None:
                    raise error from None
                errors[error.index] = error
                items = without(items, error.index)
        return BatchResult([], None, errors)

    async def _infer(self, target: _triton.Target, batch: Sequence[Payload], deadline: float) -> np.ndarray:
        inputs, outputs = _triton.infer_inputs(aioclient, target, batch)
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceededError("the call's timeout passed before this batch was sent")
            index, client = self._endpoints.pick(target.ensemble)
            try:
                with _triton.translated_errors():
                    result = await client.infer(
                        target.ensemble, inputs, outputs=outputs, headers=self._headers, client_timeout=remaining
                    )
            except EmbeddingError as e:
                delay = retry_delay(e, attempt, deadline, self.options)
                if delay is None:
                    raise
                attempt += 1
                if not self._endpoints.set_aside(index):  # no other endpoint is healthy: wait, then try again
                    await asyncio.sleep(delay)
                continue
            self._endpoints.healthy(index)
            vectors: np.ndarray = _triton.embeddings(result)
            return vectors

    async def close(self) -> None:
        for client in self._endpoints.clients:
            await client.close()

    async def __aenter__(self) -> AsyncEmbeddingClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
