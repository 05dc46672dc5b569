"""mmembed: self-hosted multimodal embeddings on NVIDIA Triton Inference Server.

from mmembed import EmbeddingClient
with EmbeddingClient("localhost:8001") as client:
    vectors = client.embed_images("siglip2", ["photo.jpg"])

The client (and tritonclient's gRPC stack under it) loads on first use of one of its names, not at
`import mmembed`: the Python models inside tritonserver import mmembed's core and never pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(importlib.import_module("mmembed.client"), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    raise AttributeError(f"module 'mmembed' has no attribute {name!r}")
