"""The only module that touches tritonclient: request building, model metadata and error translation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from tritonclient.utils import InferenceServerException

from mmembed.client._errors import EmbeddingError, InvalidInputError, ModelNotFoundError, translate
from mmembed.client._items import PartialEmbeddings, Payload
from mmembed.client._types import ModelInfo
from mmembed.core.names import EMBEDDING_OUTPUT, IMAGE_INPUT, INSTRUCTION_INPUT, PARAM_PREFIX, TEXT_INPUT
from mmembed.core.types import MODALITIES

MODALITY_INPUT: dict[str, str] = {
    "image": IMAGE_INPUT,
    "text": TEXT_INPUT,
    "query": TEXT_INPUT,
    "image_query": IMAGE_INPUT,
}
# Model NAME is served as the ensembles NAME_<modality>.
MODALITY_SUFFIX: dict[str, str] = {modality: f"_{modality}" for modality in MODALITIES}


@contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raise tritonclient's single exception type as the client's own tree."""
    try:
        yield
    except InferenceServerException as e:
        raise translate(e.status(), e.message() or str(e)) from None


@dataclass(frozen=True, kw_only=True)
class Target:
    """Where one call's requests go: the ensemble, what it embeds, and the query instruction's task."""

    ensemble: str
    modality: str
    instruction: str | None = None  # sent as the optional INSTRUCTION input, once per item


def infer_inputs(module: Any, target: Target, items: Sequence[Payload]) -> tuple[list[Any], list[Any]]:
    """The inputs and requested output of one request; MODULE is tritonclient.grpc or its aio twin.
    (image, text) pairs go as IMAGE and the image ensembles' optional TEXT."""
    pairs = [item for item in items if isinstance(item, tuple)]
    if pairs:
        inputs = [_bytes_input(module, IMAGE_INPUT, [image for image, _ in pairs])]
        inputs.append(_bytes_input(module, TEXT_INPUT, [text for _, text in pairs]))
    else:
        inputs = [_bytes_input(module, MODALITY_INPUT[target.modality], [i for i in items if isinstance(i, bytes)])]
    if target.instruction is not None:
        inputs.append(_bytes_input(module, INSTRUCTION_INPUT, [target.instruction.encode()] * len(items)))
    return inputs, [module.InferRequestedOutput(EMBEDDING_OUTPUT)]


def _bytes_input(module: Any, name: str, items: list[bytes]) -> Any:
    data = np.empty((len(items), 1), dtype=object)
    data[:, 0] = items
    infer_input = module.InferInput(name, [len(items), 1], "BYTES")
    infer_input.set_data_from_numpy(data)
    return infer_input


def multimodal_modality(info: ModelInfo, query: bool) -> str:
    """Where (image, text) pairs go: NAME_image, or NAME_image_query for queries; refused by models that
    do not read an image and its text together."""
    if not info.image_with_text:
        raise InvalidInputError(
            f"model {info.name!r} does not embed an image and a text together (it embeds: {', '.join(info.modalities)})"
        )
    if query and "image_query" not in info.modalities:
        raise InvalidInputError(f"model {info.name!r} has no image queries")
    return "image_query" if query else "image"


def check_instruction(info: ModelInfo, query: bool, instruction: str | None) -> None:
    """Refuse an instruction the request cannot carry: on documents, or for a model whose queries take none."""
    if instruction is None:
        return
    if not query:
        raise InvalidInputError("an instruction applies to queries: pass query=True with it")
    if info.instruction_template is None:
        fixed = f"; its queries always get {info.query_instruction!r}" if info.query_instruction else ""
        raise InvalidInputError(f"model {info.name!r} takes no per-request instruction{fixed}")
    if not instruction.strip():
        raise InvalidInputError("the instruction is empty: pass None for the model's default task")


def embeddings(result: Any) -> np.ndarray:
    array: np.ndarray = result.as_numpy(EMBEDDING_OUTPUT)
    return array.astype(np.float32, copy=False)


def text_modality(info: ModelInfo, query: bool) -> str:
    """Queries go to NAME_query where the model has one; elsewhere a query is embedded like any text."""
    return "query" if query and "query" in info.modalities else "text"


def check_dimensions(info: ModelInfo, dimensions: int | None) -> None:
    """Refuse a `dimensions=` the model was not trained for, naming the sizes it supports."""
    if dimensions is None or dimensions == info.dimension or dimensions in info.matryoshka_dimensions:
        return
    supported = sorted({*info.matryoshka_dimensions, info.dimension})
    raise InvalidInputError(
        f"model {info.name!r} supports dimensions {', '.join(map(str, supported))}, not {dimensions}"
    )


def truncate(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """The first DIMENSIONS values of each unit vector, scaled back to unit length (Matryoshka)."""
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    head = vectors[:, :dimensions]
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    result: np.ndarray = (head / np.maximum(norms, 1e-12)).astype(np.float32)
    return result


def truncate_result(result: np.ndarray | PartialEmbeddings, dimensions: int | None) -> np.ndarray | PartialEmbeddings:
    """`truncate` applied to a call's result, partial or whole."""
    if isinstance(result, PartialEmbeddings):
        return replace(result, embeddings=truncate(result.embeddings, dimensions))
    return truncate(result, dimensions)


def model_not_found(model: str, infos: list[ModelInfo], modality: str | None = None) -> ModelNotFoundError:
    """The error for a call to MODEL (its MODALITY, if given) that the server does not have, naming what it has."""
    by_name = {info.name: info for info in infos}
    if model in by_name and modality is not None:
        embeds = ", ".join(by_name[model].modalities)
        return ModelNotFoundError(f"model {model!r} does not embed {modality}s (it embeds: {embeds})")
    served = ", ".join(sorted(by_name)) or "none"
    return ModelNotFoundError(f"no model named {model!r} on this server; the models it serves: {served}")


def ensemble_name(model: str, modality: str) -> str:
    return model + MODALITY_SUFFIX[modality]


def ready_ensembles(statistics: dict[str, Any]) -> list[str]:
    """Names of the loaded models, from Triton's statistics (the repository index is an administrator's
    protocol, locked by mmembed serve), that look like mmembed ensembles."""
    names = {m["name"] for m in statistics.get("model_stats", [])}
    return sorted(n for n in names if n.endswith(tuple(MODALITY_SUFFIX.values())))


def model_infos(configs: dict[str, dict[str, Any]]) -> list[ModelInfo]:
    """ModelInfo per served model from its ensembles' configs (as JSON); non-mmembed models are skipped."""
    grouped: dict[str, dict[str, str]] = {}
    modalities: dict[str, list[str]] = {}
    for ensemble, config in configs.items():
        parameters = {
            key.removeprefix(PARAM_PREFIX): value.get("string_value", "")
            for key, value in config.get("parameters", {}).items()
            if key.startswith(PARAM_PREFIX)
        }
        modality = parameters.get("modality")
        if modality not in MODALITY_SUFFIX:
            continue
        name = ensemble.removesuffix(MODALITY_SUFFIX[modality])
        grouped.setdefault(name, {}).update(parameters)
        modalities.setdefault(name, []).append(modality)
    infos = []
    for name, parameters in sorted(grouped.items()):
        image_size = parameters.get("image_size")
        height, _, width = (image_size or "").partition("x")
        max_length = parameters.get("max_text_length")
        matryoshka = parameters.get("matryoshka_dimensions", "")
        infos.append(
            ModelInfo(
                name=name,
                family=parameters.get("family", ""),
                dimension=int(parameters["dimension"]),
                modalities=tuple(sorted(modalities[name])),
                image_size=(int(height), int(width)) if image_size else None,
                max_text_length=int(max_length) if max_length else None,
                runtime=parameters.get("runtime", ""),
                precision=parameters.get("precision", ""),
                matryoshka_dimensions=tuple(int(d) for d in matryoshka.split(",") if d),
                query_instruction=parameters.get("query_instruction"),
                instruction_template=parameters.get("instruction_template"),
                image_with_text=parameters.get("image_with_text") == "true",
                image_decode=parameters.get("image_decode"),
            )
        )
    return infos


__all__ = [
    "EmbeddingError",
    "check_dimensions",
    "embeddings",
    "ensemble_name",
    "infer_inputs",
    "model_infos",
    "model_not_found",
    "text_modality",
    "translated_errors",
    "truncate",
    "truncate_result",
]
