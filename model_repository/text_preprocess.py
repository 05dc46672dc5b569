"""Triton Python model: UTF-8 text -> input_ids (and attention_mask, pool_mask where the encoder takes them),
with the checkpoint's tokenizer and padding; and, for models whose queries take an instruction, the optional
per-item INSTRUCTION (the task text alone; the repository's default task where it is left out)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

# This repository's own copy of the mmembed code it runs (export put it beside this file) comes first.
sys.path.insert(0, str(Path(__file__).parent))

from mmembed.core.names import INSTRUCTION_INPUT, TEXT_INPUT
from mmembed.core.preprocessing import SETTINGS_FILE, TextSettings, TextTokenizer, check_pooled, decode_text, task
from mmembed.runtime.glue import input_array, map_items, optional_items, respond, version_folder


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
        tasks = optional_items(request, INSTRUCTION_INPUT, len(texts), lambda data: task(data, limit))
        encoded = self.tokenize.encode(texts, tasks)
        check_pooled(encoded)
        return [pb_utils.Tensor(name, array) for name, array in encoded.items()]
