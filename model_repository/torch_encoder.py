"""Triton Python model: one tower run by torch (runtime `torch`), on the GPU or the CPU.

At load it builds a `mmembed.torch_encoder.TorchEncoder` from the tower folder export wrote: converted to
the precision, gated against fp32 on fresh inputs (a model that fails the gate does not load, and the
server log says why), CUDA graphs captured, checked, and kept if not slower than eager. Inputs on the
GPU (DLPack) are used in place; the output stays on the GPU for the normalisation step.
"""

from __future__ import annotations

import json
from typing import Any

import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import from_dlpack

from mmembed.contract import TOWER_FOLDER
from mmembed.families import get_family
from mmembed.families.base import TowerSpec
from mmembed.torch_encoder import EncoderOptions, build_encoder
from mmembed.triton_glue import error_response, instance_device, tensor_output, version_folder


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
        device = instance_device(args, parameters["device"])
        family = get_family(parameters["family"])
        modality = parameters["modality"]
        (model_input,) = config["input"]
        self.input_name = model_input["name"]
        self.output_name = parameters["output_name"]
        spec = TowerSpec.from_config(
            input_name=self.input_name,
            output_name=self.output_name,
            modality=modality,
            dims=tuple(int(d) for d in model_input["dims"]),
            high=int(parameters.get("vocab_size", "0")),
            max_length=int(parameters.get("max_length", "0")),
        )
        options = EncoderOptions(
            precision=parameters["precision"],
            device=device,
            max_batch_size=int(config["max_batch_size"]),
            cuda_graphs=parameters.get("cuda_graphs", "true") == "true",
            compile=parameters.get("compile", "false") == "true",
        )
        tower = family.load_tower(version_folder(args) / TOWER_FOLDER, modality)
        self.encoder = build_encoder(tower, spec, options, name=args["model_name"], fp8_scope=family.fp8_scope)
        graphs = ", ".join(str(size) for size in self.encoder.graphs) or f"none {self.encoder.graph_error}"
        pb_utils.Logger.log_info(f"mmembed: gate passed: {self.encoder.gate_report.line()}; CUDA graphs: {graphs}")

    def execute(self, requests: list[Any]) -> list[Any]:
        try:
            batches = [self._input(request).to(self.encoder.device, non_blocking=True) for request in requests]
            outputs = self.encoder(batches[0] if len(batches) == 1 else torch.cat(batches))
        except Exception as e:
            pb_utils.Logger.log_error(f"mmembed: torch encoder failed: {type(e).__name__}: {e}")
            return [error_response(f"encoder failed: {type(e).__name__}: {e}", invalid_input=False) for _ in requests]
        parts = torch.split(outputs, [len(batch) for batch in batches])
        return [pb_utils.InferenceResponse(output_tensors=[tensor_output(self.output_name, part)]) for part in parts]

    def _input(self, request: Any) -> torch.Tensor:
        tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
        if tensor.is_cpu():
            return torch.from_numpy(tensor.as_numpy())
        return from_dlpack(tensor.to_dlpack())
