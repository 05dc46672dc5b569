"""The typed gRPC client for models served by mmembed (`NAME_image` / `NAME_text` ensembles)."""

from __future__ import annotations

from mmembed.client._errors import (
    AccessDeniedError,
    DeadlineExceededError,
    EmbeddingError,
    InvalidInputError,
    ModelNotFoundError,
    ServerError,
    ServerOverloadedError,
    ServerUnavailableError,
)
from mmembed.client._inputs import ImageInput
from mmembed.client._items import PartialEmbeddings
from mmembed.client._types import ModelInfo
from mmembed.client.aio import AsyncEmbeddingClient
from mmembed.client.options import ClientOptions
from mmembed.client.sync import EmbeddingClient

__all__ = [
    "AccessDeniedError",
    "AsyncEmbeddingClient",
    "ClientOptions",
    "DeadlineExceededError",
    "EmbeddingClient",
    "EmbeddingError",
    "ImageInput",
    "InvalidInputError",
    "ModelInfo",
    "ModelNotFoundError",
    "PartialEmbeddings",
    "ServerError",
    "ServerOverloadedError",
    "ServerUnavailableError",
]
