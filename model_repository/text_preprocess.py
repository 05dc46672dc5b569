"""Triton Python model: UTF-8 text -> input_ids (and attention_mask, pool_mask where the encoder takes them),
with the checkpoint's tokenizer and padding; and, for models whose queries take an instruction, the optional
per-item INSTRUCTION (the task text alone; the repository's default task where it is left out)."""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils

from mmembed.core.names import INSTRUCTION_INPUT, TEXT_INPUT
from mmembed.core.preprocessing import (
    SETTINGS_FILE,
    InvalidInputError,
    TextSettings,
    TextTokenizer,
    decode_text,
)
from mmembed.runtime.glue import input_array, map_items, respond, version_folder


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        folder = version_folder(args)
        self.settings = TextSettings.from_json((folder / SETTINGS_FILE).read_text())
        self.tokenize = TextTokenizer(self.settings, folder)

    def execute(self, requests: list[Any]) -> list[Any]:
        return [respond(request, self._preprocess) for request in requests]

    def _preprocess(self, request: Any) -> list[Any]:
        limit = self.settings.max_text_bytes
        texts = map_items(input_array(request, TEXT_INPUT), lambda data: decode_text(data, limit))
        tasks = None
        if pb_utils.get_input_tensor_by_name(request, INSTRUCTION_INPUT) is not None:
            tasks = map_items(input_array(request, INSTRUCTION_INPUT), lambda data: _task(data, limit))
            if len(tasks) != len(texts):
                raise InvalidInputError(f"{len(tasks)} instructions for {len(texts)} texts: send one per text")
        return [pb_utils.Tensor(name, array) for name, array in self.tokenize.encode(texts, tasks).items()]


def _task(data: bytes, limit: int) -> str | None:
    """One item's instruction task; an empty one means the default."""
    try:
        return decode_text(data, limit) or None
    except InvalidInputError as e:
        raise InvalidInputError(f"instruction: {e}") from None
