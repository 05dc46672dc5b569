"""Triton Python model: encoded image bytes -> pixel_values, one request's failure never another's.

By default Pillow decodes and resizes on this CPU instance. Exported with `--image-preprocess torch`, the
model's `device` parameter moves that work to the encoder's device (`mmembed.device_preprocessing`:
nvJPEG on a GPU) and hands the pixels on in place (DLPack).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from mmembed.contract import IMAGE_INPUT, PIXEL_VALUES
from mmembed.preprocessing import SETTINGS_FILE, ImageSettings, decode_image, preprocess_image
from mmembed.triton_glue import input_array, map_items, respond, version_folder


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.settings = ImageSettings.from_json((version_folder(args) / SETTINGS_FILE).read_text())
        parameters = json.loads(args["model_config"]).get("parameters", {})
        device = parameters.get("device", {}).get("string_value")
        self.on_device = None
        if device:
            import torch

            from mmembed.device_preprocessing import DevicePreprocessor

            if device == "cuda":
                device = f"cuda:{args['model_instance_device_id']}"
                torch.cuda.set_device(device)
            self.on_device = DevicePreprocessor(self.settings, device)
            decoder = "nvJPEG for JPEGs" if self.on_device.decode_jpegs is not None else "Pillow"
            pb_utils.Logger.log_info(f"mmembed: image preprocessing on {device}, decoding with {decoder}")
        # Troubleshooting switch, as in the torch encoder: hand pixels on through host memory instead.
        self.host_outputs = os.environ.get("MMEMBED_HOST_TENSORS") == "1"

    def execute(self, requests: list[Any]) -> list[Any]:
        handle = self._preprocess if self.on_device is None else self._preprocess_on_device
        return [respond(request, handle) for request in requests]

    def _preprocess(self, request: Any) -> list[Any]:
        pixels = map_items(
            input_array(request, IMAGE_INPUT),
            lambda data: preprocess_image(decode_image(data, self.settings), self.settings),
        )
        return [pb_utils.Tensor(PIXEL_VALUES, np.stack(pixels))]

    def _preprocess_on_device(self, request: Any) -> list[Any]:
        assert self.on_device is not None
        pixels = self.on_device([bytes(item) for item in input_array(request, IMAGE_INPUT).reshape(-1)])
        if pixels.is_cuda and not self.host_outputs:
            return [pb_utils.Tensor.from_dlpack(PIXEL_VALUES, pixels.__dlpack__())]
        return [pb_utils.Tensor(PIXEL_VALUES, pixels.cpu().numpy())]
