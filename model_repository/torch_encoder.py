"""Triton Python model: one encoder run by torch (runtime `torch`), on the GPU or the CPU.

At load it reads `encoder.json` (`EncoderSettings`), loads the encoder folder export wrote through the
family's `load_encoder`, and builds a `mmembed.runtime.torch_encoder.TorchEncoder`: converted to the
precision (run by the package export compiled, if it did; refused if built elsewhere), gated against
fp32 on fresh inputs (a model that fails the gate does not load, and the server log says why), CUDA
graphs captured, checked, and kept if not slower than eager. Inputs on the GPU (DLPack) are used in
place; the output stays on the GPU for the normalisation step.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import from_dlpack

# This repository's own copy of the mmembed code it runs (export put it beside this file) comes first.
sys.path.insert(0, str(Path(__file__).parent))

from mmembed.core.encoder_settings import EncoderSettings
from mmembed.core.names import TOWER_FOLDER
from mmembed.runtime.compiled_engine import ENGINE_FOLDER
from mmembed.runtime.glue import error_response, instance_device, tensor_output, version_folder
from mmembed.runtime.torch_encoder import build_encoder


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        folder = version_folder(args)
        settings = EncoderSettings.load(folder)
        settings = replace(settings, device=instance_device(args, settings.device))
        try:
            family_module = importlib.import_module(settings.family_module)
        except ImportError as e:
            raise RuntimeError(
                f"the module that loads this encoder, {settings.family_module!r}, cannot be imported inside "
                f"tritonserver ({e}): install the package that defines the family in the server's Python"
            ) from None
        module = family_module.load_encoder(settings.spec.name, folder / TOWER_FOLDER)
        self.input_names = [spec.name for spec in settings.spec.inputs]
        self.output_name = settings.spec.output
        self.encoder = build_encoder(module, settings, name=args["model_name"], engine=folder / ENGINE_FOLDER)
        graphs = ", ".join(str(size) for size in self.encoder.graphs) or f"none {self.encoder.graph_error}"
        pb_utils.Logger.log_info(f"mmembed: gate passed: {self.encoder.gate_report.line()}; CUDA graphs: {graphs}")

    def execute(self, requests: list[Any]) -> list[Any]:
        try:
            batches = [[self._input(request, name) for name in self.input_names] for request in requests]
            joined = [parts[0] if len(parts) == 1 else torch.cat(parts) for parts in zip(*batches, strict=True)]
            outputs = self.encoder(joined)
        except Exception as e:
            pb_utils.Logger.log_error(f"mmembed: torch encoder failed: {type(e).__name__}: {e}")
            return [error_response(f"encoder failed: {type(e).__name__}: {e}", invalid_input=False) for _ in requests]
        parts = torch.split(outputs, [len(batch[0]) for batch in batches])
        return [pb_utils.InferenceResponse(output_tensors=[tensor_output(self.output_name, part)]) for part in parts]

    def _input(self, request: Any, name: str) -> torch.Tensor:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor.is_cpu():
            return torch.from_numpy(tensor.as_numpy())
        return from_dlpack(tensor.to_dlpack()).to(self.encoder.device, non_blocking=True)
