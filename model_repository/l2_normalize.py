"""Triton Python model: scale each embedding to unit L2 norm, so cosine similarity is a dot product."""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from mmembed.contract import EMBEDDING_OUTPUT, RAW_EMBEDDING
from mmembed.triton_glue import input_array, respond


def l2_normalize(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings.astype(np.float32), axis=-1, keepdims=True)
    result: np.ndarray = (embeddings / np.maximum(norms, 1e-12)).astype(np.float32)
    return result


class TritonPythonModel:
    def execute(self, requests: list[Any]) -> list[Any]:
        return [respond(request, self._normalize) for request in requests]

    def _normalize(self, request: Any) -> list[Any]:
        return [pb_utils.Tensor(EMBEDDING_OUTPUT, l2_normalize(input_array(request, RAW_EMBEDDING)))]
