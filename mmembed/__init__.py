"""mmembed: self-hosted multimodal embeddings on NVIDIA Triton Inference Server.

from mmembed import EmbeddingClient
with EmbeddingClient("localhost:8001") as client:
    vectors = client.embed_images("siglip2", ["photo.jpg"])
"""

from __future__ import annotations

from mmembed.client import (
    AccessDeniedError,
    AsyncEmbeddingClient,
    ClientOptions,
    DeadlineExceededError,
    EmbeddingClient,
    EmbeddingError,
    ImageInput,
    InvalidInputError,
    ModelInfo,
    ModelNotFoundError,
    PartialEmbeddings,
    ServerError,
    ServerOverloadedError,
    ServerUnavailableError,
)

__version__ = "0.1.0"

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
    "__version__",
]
