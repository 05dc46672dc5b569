"""Triton Python model: scale each embedding to unit L2 norm, so cosine similarity is a dot product.

Embeddings a GPU encoder left on the GPU are normalised there (torch, through DLPack); CPU ones in numpy.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

# This repository's own copy of the mmembed code it runs (export put it beside this file) comes first.
sys.path.insert(0, str(Path(__file__).parent))

from mmembed.core.names import EMBEDDING_OUTPUT, RAW_EMBEDDING
from mmembed.runtime.glue import respond


def l2_normalize(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings.astype(np.float32), axis=-1, keepdims=True)
    result: np.ndarray = (embeddings / np.maximum(norms, 1e-12)).astype(np.float32)
    return result


class TritonPythonModel:
    def execute(self, requests: list[Any]) -> list[Any]:
        return [respond(request, self._normalize) for request in requests]

    def _normalize(self, request: Any) -> list[Any]:
        tensor = pb_utils.get_input_tensor_by_name(request, RAW_EMBEDDING)
        if tensor.is_cpu():
            return [pb_utils.Tensor(EMBEDDING_OUTPUT, l2_normalize(tensor.as_numpy()))]
        import torch
        from torch.utils.dlpack import from_dlpack

        embeddings = from_dlpack(tensor.to_dlpack()).float()
        normalised = torch.nn.functional.normalize(embeddings, dim=-1, eps=1e-12).contiguous()
        return [pb_utils.Tensor.from_dlpack(EMBEDDING_OUTPUT, normalised.__dlpack__())]
