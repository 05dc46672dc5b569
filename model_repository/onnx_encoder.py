"""Triton Python model: one encoder's ONNX graph in onnxruntime on the CPU (the pip Triton has no ORT
backend). Its inputs and output are read from `encoder.json` (`EncoderSettings`).

All requests of a dynamic batch run as one onnxruntime call, then the output is split back per request.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils

# This repository's own copy of the mmembed code it runs (export put it beside this file) comes first.
sys.path.insert(0, str(Path(__file__).parent))

from mmembed.core.encoder_settings import EncoderSettings
from mmembed.runtime.glue import error_response, input_array, version_folder


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        folder = version_folder(args)
        settings = EncoderSettings.load(folder)
        self.input_names = [spec.name for spec in settings.spec.inputs]
        self.output_name = settings.spec.output
        self.session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])

    def execute(self, requests: list[Any]) -> list[Any]:
        try:
            batches = [{name: input_array(request, name) for name in self.input_names} for request in requests]
            feeds = {name: np.concatenate([batch[name] for batch in batches]) for name in self.input_names}
            (outputs,) = self.session.run([self.output_name], feeds)
        except Exception as e:
            pb_utils.Logger.log_error(f"mmembed: onnxruntime failed: {e}")
            return [error_response(f"encoder failed: {e}", invalid_input=False) for _ in requests]
        splits = np.cumsum([len(batch[self.input_names[0]]) for batch in batches])[:-1]
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, part)])
            for part in np.split(outputs, splits)
        ]
