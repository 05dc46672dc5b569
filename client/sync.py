"""EmbeddingClient: blocking calls, with several requests of one call in flight on a thread pool."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import numpy as np
import tritonclient.grpc as grpcclient
from mmembed.client import _triton
from mmembed.client._errors import DeadlineExceededError, EmbeddingError, ModelNotFoundError
from mmembed.client._inputs import ImageInput, batches, image_bytes, text_bytes
from mmembed.client._retry import retry_delay
from mmembed.client._types import ModelInfo
from mmembed.client.options import ClientOptions


class EmbeddingClient:
    """Embed images and texts with models served by mmembed on Triton, over gRPC.

    `url` is host:port of Triton's gRPC endpoint. `timeout_s` bounds each whole call (all its batches);
    a call may override it. Results are float32 arrays (n, dimension) with unit L2 norm, in input order.
    """

    def __init__(self, url: str = "localhost:8001", options: ClientOptions | None = None) -> None:
        self.options = options or ClientOptions()
        self._client = grpcclient.InferenceServerClient(
            url, ssl=self.options.ssl, root_certificates=self.options.root_certificates
        )
        self._headers = self.options.request_headers()
        self._pool = ThreadPoolExecutor(self.options.max_in_flight, thread_name_prefix="mmembed")
        self._infos: dict[str, ModelInfo] = {}

    def embed_images(
        self,
        model: str,
        images: Iterable[ImageInput],
        *,
        dimensions: int | None = None,
        timeout_s: float | None = None,
    ) -> np.ndarray:
        """Unit vectors (n, dimension), or (n, dimensions): the Matryoshka prefix, re-normalised."""
        if dimensions is not None:
            _triton.check_dimensions(self.model_info(model), dimensions)
        items = [image_bytes(image) for image in images]
        vectors = self._embed(model, "image", items, self.options.image_batch_size, timeout_s)
        truncated: np.ndarray = _triton.truncate(vectors, dimensions)
        return truncated

    def embed_texts(
        self,
        model: str,
        texts: Iterable[str],
        *,
        query: bool = False,
        dimensions: int | None = None,
        timeout_s: float | None = None,
    ) -> np.ndarray:
        """Like embed_images; `query=True` embeds search queries, with the instruction the model expects."""
        modality = "text"
        if query or dimensions is not None:
            info = self.model_info(model)
            _triton.check_dimensions(info, dimensions)
            modality = _triton.text_modality(info, query)
        items = [text_bytes(text) for text in texts]
        vectors = self._embed(model, modality, items, self.options.text_batch_size, timeout_s)
        truncated: np.ndarray = _triton.truncate(vectors, dimensions)
        return truncated

    def list_models(self) -> list[ModelInfo]:
        with _triton.translated_errors():
            index = self._client.get_model_repository_index(headers=self._headers, as_json=True)
            configs = {
                name: self._client.get_model_config(name, headers=self._headers, as_json=True)["config"]
                for name in _triton.ready_ensembles(index)
            }
        infos: list[ModelInfo] = _triton.model_infos(configs)
        self._infos = {info.name: info for info in infos}
        return infos

    def model_info(self, model: str) -> ModelInfo:
        if model not in self._infos:
            self.list_models()
        if model not in self._infos:
            raise ModelNotFoundError(f"no ready mmembed model named {model!r}")
        return self._infos[model]

    def _embed(
        self, model: str, modality: str, items: list[bytes], batch_size: int, timeout_s: float | None
    ) -> np.ndarray:
        if not items:
            return np.empty((0, self.model_info(model).dimension), dtype=np.float32)
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.options.timeout_s)
        ensemble = _triton.ensemble_name(model, modality)
        futures = [
            self._pool.submit(self._infer, ensemble, modality, batch, deadline) for batch in batches(items, batch_size)
        ]
        try:
            return np.concatenate([future.result() for future in futures])
        finally:
            for future in futures:
                future.cancel()

    def _infer(self, ensemble: str, modality: str, batch: Sequence[bytes], deadline: float) -> np.ndarray:
        inputs, outputs = _triton.infer_inputs(grpcclient, modality, batch)
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceededError("the call's timeout passed before this batch was sent")
            try:
                with _triton.translated_errors():
                    result = self._client.infer(
                        ensemble, inputs, outputs=outputs, headers=self._headers, client_timeout=remaining
                    )
            except EmbeddingError as e:
                delay = retry_delay(e, attempt, deadline, self.options)
                if delay is None:
                    raise
                time.sleep(delay)
                attempt += 1
                continue
            vectors: np.ndarray = _triton.embeddings(result)
            return vectors

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
