"""Triton Python model: one tower's ONNX graph in onnxruntime on the CPU (the pip Triton has no ORT backend).

All requests of a dynamic batch run as one onnxruntime call, then the output is split back per request.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils

from mmembed.triton_glue import error_response, input_array, version_folder


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        parameters = json.loads(args["model_config"])["parameters"]
        self.input_name = parameters["input_name"]["string_value"]
        self.output_name = parameters["output_name"]["string_value"]
        graph = version_folder(args) / "model.onnx"
        self.session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])

    def execute(self, requests: list[Any]) -> list[Any]:
        try:
            batches = [input_array(request, self.input_name) for request in requests]
            (outputs,) = self.session.run([self.output_name], {self.input_name: np.concatenate(batches)})
        except Exception as e:
            pb_utils.Logger.log_error(f"mmembed: onnxruntime failed: {e}")
            return [error_response(f"encoder failed: {e}", invalid_input=False) for _ in requests]
        splits = np.cumsum([len(batch) for batch in batches])[:-1]
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, part)])
            for part in np.split(outputs, splits)
        ]
