"""AsyncEmbeddingClient: the asyncio twin of EmbeddingClient, with the same arguments and results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from types import TracebackType

import numpy as np
import tritonclient.grpc.aio as aioclient
from mmembed.client import _triton
from mmembed.client._errors import DeadlineExceededError, EmbeddingError, ModelNotFoundError
from mmembed.client._inputs import ImageInput, batches, image_bytes, text_bytes
from mmembed.client._retry import retry_delay
from mmembed.client._types import ModelInfo
from mmembed.client.options import ClientOptions


class AsyncEmbeddingClient:
    """Embed images and texts over gRPC from asyncio code; see EmbeddingClient for the contract."""

    def __init__(self, url: str = "localhost:8001", options: ClientOptions | None = None) -> None:
        self.options = options or ClientOptions()
        self._client = aioclient.InferenceServerClient(
            url, ssl=self.options.ssl, root_certificates=self.options.root_certificates
        )
        self._headers = self.options.request_headers()
        self._infos: dict[str, ModelInfo] = {}

    async def embed_images(
        self,
        model: str,
        images: Iterable[ImageInput],
        *,
        dimensions: int | None = None,
        timeout_s: float | None = None,
    ) -> np.ndarray:
        if dimensions is not None:
            _triton.check_dimensions(await self.model_info(model), dimensions)
        items = [image_bytes(image) for image in images]
        vectors = await self._embed(model, "image", items, self.options.image_batch_size, timeout_s)
        truncated: np.ndarray = _triton.truncate(vectors, dimensions)
        return truncated

    async def embed_texts(
        self,
        model: str,
        texts: Iterable[str],
        *,
        query: bool = False,
        dimensions: int | None = None,
        timeout_s: float | None = None,
    ) -> np.ndarray:
        modality = "text"
        if query or dimensions is not None:
            info = await self.model_info(model)
            _triton.check_dimensions(info, dimensions)
            modality = _triton.text_modality(info, query)
        items = [text_bytes(text) for text in texts]
        vectors = await self._embed(model, modality, items, self.options.text_batch_size, timeout_s)
        truncated: np.ndarray = _triton.truncate(vectors, dimensions)
        return truncated

    async def list_models(self) -> list[ModelInfo]:
        with _triton.translated_errors():
            index = await self._client.get_model_repository_index(headers=self._headers, as_json=True)
            configs = {
                name: (await self._client.get_model_config(name, headers=self._headers, as_json=True))["config"]
                for name in _triton.ready_ensembles(index)
            }
        infos: list[ModelInfo] = _triton.model_infos(configs)
        self._infos = {info.name: info for info in infos}
        return infos

    async def model_info(self, model: str) -> ModelInfo:
        if model not in self._infos:
            await self.list_models()
        if model not in self._infos:
            raise ModelNotFoundError(f"no ready mmembed model named {model!r}")
        return self._infos[model]

    async def _embed(
        self, model: str, modality: str, items: list[bytes], batch_size: int, timeout_s: float | None
    ) -> np.ndarray:
        if not items:
            return np.empty((0, (await self.model_info(model)).dimension), dtype=np.float32)
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.options.timeout_s)
        ensemble = _triton.ensemble_name(model, modality)
        in_flight = asyncio.Semaphore(self.options.max_in_flight)

        async def infer(batch: Sequence[bytes]) -> np.ndarray:
            inputs, outputs = _triton.infer_inputs(aioclient, modality, batch)
            attempt = 0
            async with in_flight:
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise DeadlineExceededError("the call's timeout passed before this batch was sent")
                    try:
                        with _triton.translated_errors():
                            result = await self._client.infer(
                                ensemble, inputs, outputs=outputs, headers=self._headers, client_timeout=remaining
                            )
                    except EmbeddingError as e:
                        delay = retry_delay(e, attempt, deadline, self.options)
                        if delay is None:
                            raise
                        await asyncio.sleep(delay)
                        attempt += 1
                        continue
                    vectors: np.ndarray = _triton.embeddings(result)
                    return vectors

        results = await asyncio.gather(*(infer(batch) for batch in batches(items, batch_size)))
        return np.concatenate(results)

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncEmbeddingClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
