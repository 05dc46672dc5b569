"""The HTTP API's request and response bodies: OpenAI's `/v1/embeddings` shapes, plus the extensions
other embedding APIs use for images and queries (Jina's `{"image": ...}` items, Infinity's `modality`,
Cohere's and Voyage's `input_type`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ImageItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str  # a data URI or plain base64 (URLs are refused: this gateway fetches nothing)


class TextItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


InputItem = str | ImageItem | TextItem


class EmbeddingRequest(BaseModel):
    model: str
    input: str | list[InputItem]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None  # accepted, as OpenAI does; not used
    # "query" embeds texts as search queries (the model's query ensemble); "document" (default) as they are.
    input_type: Literal["query", "document"] | None = None
    # Infinity's shape: a list of plain strings that are all images.
    modality: Literal["text", "image"] | None = None
    # The task of a query's instruction, for models that take one per request (NV-Embed: "Given a question,
    # retrieve passages that answer the question"); it makes the texts queries. Refused by other models.
    instruction: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # floats, or base64 of little-endian float32 with encoding_format=base64


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "mmembed"
    dimension: int
    modalities: list[str]
    matryoshka_dimensions: list[int]
    max_text_length: int | None
    image_size: list[int] | None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
