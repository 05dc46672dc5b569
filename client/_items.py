"""One call's items: each keeps the caller's index from conversion to the result, so an error names the
item the caller passed (not its place in an internal batch), and `on_error="skip"` can set bad items aside.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np

from mmembed.client._errors import InvalidInputError

T = TypeVar("T")
OnError = Literal["raise", "skip"]
ON_ERROR_CHOICES = ("raise", "skip")
Payload = bytes | tuple[bytes, bytes]  # an image's or a text's request bytes, or an (image, text) pair
Item = tuple[int, Payload]  # (the caller's index, what is sent for it)

# How the server's preprocessing names a bad item of a request ("..., item 3: cannot identify ...").
_SERVER_ITEM = re.compile(r"\bitem (\d+): ")


@dataclass(frozen=True)
class PartialEmbeddings:
    """What a call with `on_error="skip"` could embed.

    Row i of `embeddings` is the item at `indexes[i]` of the caller's list (ascending); `errors` maps the
    index of every item that could not be embedded to its InvalidInputError.
    """

    embeddings: np.ndarray  # float32 (len(indexes), dimension), unit norm
    indexes: np.ndarray  # int64, ascending
    errors: dict[int, InvalidInputError]


@dataclass
class BatchResult:
    """One request's outcome: vectors for the items at `indexes`, and the items set aside."""

    indexes: list[int]
    vectors: np.ndarray | None
    errors: dict[int, InvalidInputError] = field(default_factory=dict)


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")


def convert_items(values: Iterable[T], convert: Callable[[T], Payload], skip: bool) -> tuple[list[Item], BatchResult]:
    """Request bytes for each value with its index; one that cannot be converted raises InvalidInputError
    naming its index, or with SKIP goes into the returned result's errors."""
    items: list[Item] = []
    set_aside = BatchResult(indexes=[], vectors=None)
    for index, value in enumerate(values):
        try:
            items.append((index, convert(value)))
        except InvalidInputError as e:
            error = InvalidInputError(f"item {index}: {e}", index=index)
            if not skip:
                raise error from None
            set_aside.errors[index] = error
    return items, set_aside


def rebased(error: InvalidInputError, items: list[Item]) -> InvalidInputError:
    """ERROR from a request of ITEMS, naming the caller's index where the server named its own."""
    message = str(error)
    found = _SERVER_ITEM.search(message)
    if found is None or int(found.group(1)) >= len(items):
        return error
    index = items[int(found.group(1))][0]
    return InvalidInputError(f"item {index}: {message[found.end() :]}", index=index)


def without(items: list[Item], index: int) -> list[Item]:
    return [item for item in items if item[0] != index]


def assemble(results: list[BatchResult], dimension: Callable[[], int], skip: bool) -> np.ndarray | PartialEmbeddings:
    """The call's result from its requests' results, in the caller's order (DIMENSION is asked only when
    no request returned a vector: the model's embedding size)."""
    pieces = [result.vectors for result in results if result.vectors is not None and len(result.indexes)]
    vectors = np.concatenate(pieces) if pieces else np.empty((0, dimension()), dtype=np.float32)
    if not skip:
        return vectors
    indexes = np.asarray([index for result in results for index in result.indexes], dtype=np.int64)
    order = np.argsort(indexes, kind="stable")
    errors = {index: error for result in results for index, error in result.errors.items()}
    return PartialEmbeddings(embeddings=vectors[order], indexes=indexes[order], errors=dict(sorted(errors.items())))


def batches(items: list[Item], size: int) -> list[list[Item]]:
    """Consecutive slices of at most SIZE items, in order."""
    return [items[start : start + size] for start in range(0, len(items), size)]
