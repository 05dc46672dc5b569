"""Triton Python model: an image with an optional text (and, for queries, an optional INSTRUCTION task) ->
pixel_values and the prompt's input_ids, attention_mask and pool_mask, for models that read both together
(MM-Embed): the prompt is the text with the model's image placeholder in front; a missing text is ""."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

# This repository's own copy of the mmembed code it runs (export put it beside this file) comes first.
sys.path.insert(0, str(Path(__file__).parent))

from mmembed.core.names import IMAGE_INPUT, INPUT_IDS, INSTRUCTION_INPUT, PIXEL_VALUES, TEXT_INPUT
from mmembed.core.preprocessing import (
    SETTINGS_FILE,
    ImageSettings,
    InvalidInputError,
    TextSettings,
    TextTokenizer,
    decode_text,
    image_pixels,
    task,
)
from mmembed.runtime.glue import input_array, map_items, optional_items, respond, version_folder


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        folder = version_folder(args)
        text = (folder / SETTINGS_FILE).read_text()
        self.image = ImageSettings.from_json(text)
        self.text = TextSettings.from_json(text)
        self.image_prompt: str = json.loads(text)["image_prompt"]
        self.tokenize = TextTokenizer(self.text, folder)
        self.image_token = self.tokenize.token_id(json.loads(text)["image_token"])

    def execute(self, requests: list[Any]) -> list[Any]:
        return [respond(request, self._preprocess) for request in requests]

    def _preprocess(self, request: Any) -> list[Any]:
        pixels = map_items(input_array(request, IMAGE_INPUT), lambda data: image_pixels(data, self.image))
        limit = self.text.max_text_bytes
        texts = optional_items(request, TEXT_INPUT, len(pixels), lambda data: decode_text(data, limit))
        tasks = optional_items(request, INSTRUCTION_INPUT, len(pixels), lambda data: task(data, limit))
        prompts = [self.image_prompt + text for text in (texts or [""] * len(pixels))]
        tokens = self.tokenize.encode(prompts, tasks)
        for row, ids in enumerate(tokens[INPUT_IDS]):
            if self.image_token not in ids:
                raise InvalidInputError(f"item {row}: the instruction is so long that the image's place was cut off")
        return [pb_utils.Tensor(PIXEL_VALUES, np.stack(pixels))] + [
            pb_utils.Tensor(name, array) for name, array in tokens.items()
        ]
