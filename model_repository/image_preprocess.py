"""Triton Python model: encoded image bytes -> pixel_values, one request's failure never another's.

By default Pillow decodes and resizes on this CPU instance. Exported with `--image-preprocess torch`, the
model's `device` parameter moves that work to the encoder's device (`mmembed.runtime.device_preprocessing`:
nvJPEG on a GPU) and hands the pixels on in place (DLPack).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

# This repository's own copy of the mmembed code it runs (export put it beside this file) comes first.
sys.path.insert(0, str(Path(__file__).parent))

from mmembed.core.names import IMAGE_INPUT, PIXEL_VALUES
from mmembed.core.preprocessing import SETTINGS_FILE, ImageSettings, image_pixels
from mmembed.runtime.glue import input_array, instance_device, map_items, respond, tensor_output, version_folder


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.settings = ImageSettings.from_json((version_folder(args) / SETTINGS_FILE).read_text())
        parameters = json.loads(args["model_config"]).get("parameters", {})
        device = parameters.get("device", {}).get("string_value")
        self.on_device = None
        if device:
            from mmembed.runtime.device_preprocessing import DevicePreprocessor

            device = instance_device(args, device)
            self.on_device = DevicePreprocessor(self.settings, device)
            decoder = "nvJPEG for JPEGs" if self.on_device.decode_jpegs is not None else "Pillow"
            pb_utils.Logger.log_info(f"mmembed: image preprocessing on {device}, decoding with {decoder}")

    def execute(self, requests: list[Any]) -> list[Any]:
        handle = self._preprocess if self.on_device is None else self._preprocess_on_device
        return [respond(request, handle) for request in requests]

    def _preprocess(self, request: Any) -> list[Any]:
        pixels = map_items(input_array(request, IMAGE_INPUT), lambda data: image_pixels(data, self.settings))
        return [pb_utils.Tensor(PIXEL_VALUES, np.stack(pixels))]

    def _preprocess_on_device(self, request: Any) -> list[Any]:
        assert self.on_device is not None
        pixels = self.on_device([bytes(item) for item in input_array(request, IMAGE_INPUT).reshape(-1)])
        return [tensor_output(PIXEL_VALUES, pixels)]
