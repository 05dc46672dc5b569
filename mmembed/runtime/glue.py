"""Helpers for the Python-backend models: read inputs, answer each request alone, never crash a batch.

An exception that escapes `execute` fails every request of the dynamic batch, other clients' too, so each
request is answered on its own: bad input becomes INVALID_ARG with a message naming the item and the
problem; anything else becomes INTERNAL with the exception's type, and is logged.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from mmembed.core.preprocessing import InvalidInputError

T = TypeVar("T")

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # outside tritonserver: this module is only used inside it
    pb_utils = None


def version_folder(args: dict[str, str]) -> Path:
    """The model's version folder, where export put its settings and weights."""
    return Path(args["model_repository"]) / args["model_version"]


def input_array(request: Any, name: str) -> np.ndarray:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise InvalidInputError(f"request has no input tensor named {name!r}")
    array: np.ndarray = tensor.as_numpy()
    return array


def respond(request: Any, handle: Callable[[Any], list[Any]]) -> Any:
    """Run HANDLE on one request and wrap its output tensors, or its failure, in a response."""
    try:
        return pb_utils.InferenceResponse(output_tensors=handle(request))
    except InvalidInputError as e:
        return error_response(str(e), invalid_input=True)
    except Exception as e:
        pb_utils.Logger.log_error(f"mmembed: {type(e).__name__}: {e}")
        return error_response(f"internal error: {type(e).__name__}: {e}", invalid_input=False)


def error_response(message: str, *, invalid_input: bool) -> Any:
    code = pb_utils.TritonError.INVALID_ARG if invalid_input else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def optional_items(request: Any, name: str, count: int, handle: Callable[[bytes], T]) -> list[T] | None:
    """HANDLE applied to each item of optional input NAME, or None where the request leaves it out; it
    must hold COUNT items, one per item of the request's main input. Errors name the item and NAME."""
    if pb_utils.get_input_tensor_by_name(request, name) is None:
        return None

    def named(data: bytes) -> T:
        try:
            return handle(data)
        except InvalidInputError as e:
            raise InvalidInputError(f"{name.lower()}: {e}") from None

    items = map_items(input_array(request, name), named)
    if len(items) != count:
        raise InvalidInputError(f"{len(items)} {name} items for {count} inputs: send one per input")
    return items


def map_items(items: np.ndarray, handle: Callable[[bytes], T]) -> list[T]:
    """HANDLE applied to each BYTES item, in order; a bad item fails with its index in the message."""
    results = []
    for index, item in enumerate(items.reshape(-1)):
        try:
            results.append(handle(bytes(item)))
        except InvalidInputError as e:
            raise InvalidInputError(f"item {index}: {e}") from None
    return results


def instance_device(args: dict[str, str], device: str) -> str:
    """DEVICE as this model instance runs on it: "cuda" becomes the instance's own GPU, made current."""
    if device != "cuda":
        return device
    import torch  # only the torch-using models get here

    device = f"cuda:{args['model_instance_device_id']}"
    torch.cuda.set_device(device)
    return device


# Troubleshooting switch: hand tensors to the next step through host memory instead of in place on the GPU.
HOST_TENSORS = os.environ.get("MMEMBED_HOST_TENSORS") == "1"


def tensor_output(name: str, tensor: Any) -> Any:
    """A torch tensor as output NAME: left on the GPU for the next step (DLPack) unless HOST_TENSORS."""
    if tensor.is_cuda and not HOST_TENSORS:
        return pb_utils.Tensor.from_dlpack(name, tensor.contiguous().__dlpack__())
    return pb_utils.Tensor(name, tensor.cpu().numpy())
