"""Triton Python model: encoded image bytes -> pixel_values, one request's failure never another's."""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from mmembed.contract import IMAGE_INPUT, PIXEL_VALUES
from mmembed.preprocessing import SETTINGS_FILE, ImageSettings, decode_image, preprocess_image
from mmembed.triton_glue import input_array, map_items, respond, version_folder


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.settings = ImageSettings.from_json((version_folder(args) / SETTINGS_FILE).read_text())

    def execute(self, requests: list[Any]) -> list[Any]:
        return [respond(request, self._preprocess) for request in requests]

    def _preprocess(self, request: Any) -> list[Any]:
        pixels = map_items(
            input_array(request, IMAGE_INPUT),
            lambda data: preprocess_image(decode_image(data, self.settings), self.settings),
        )
        return [pb_utils.Tensor(PIXEL_VALUES, np.stack(pixels))]
