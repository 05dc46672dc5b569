"""One encoder's artefact for the requested runtime, each proven against the fp32 module before it is kept.

- onnxruntime, onnxruntime-cpu: an ONNX graph, compared with the module in onnxruntime.
- tensorrt: that graph typed in the precision (checked on the CPU), then a plan built and run on the GPU.
- torch: the encoder folder the family writes (loaded back and compared), and the precision's gate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mmembed.core.contract import ModelFamily
from mmembed.core.encoder_settings import EncoderSettings
from mmembed.core.names import TOWER_FOLDER
from mmembed.core.numeric_gate import GateReport, gate
from mmembed.core.types import Precision, Runtime
from mmembed.export.onnx_graph import NamedInputs, check_parity, export_encoder, run_module
from mmembed.export.onnx_precision import reduce_precision
from mmembed.export.tensorrt_engine import build_engine, run_engine
from mmembed.runtime.compiled_engine import ENGINE_FOLDER, compile_engine
from mmembed.runtime.torch_encoder import build_encoder, convert_precision


def build_artefact(
    family: ModelFamily,
    module: torch.nn.Module,
    settings: EncoderSettings,
    version: Path,
    *,
    real_inputs: NamedInputs,
    calibration: NamedInputs,
    timing_cache: Path,
    log: Callable[[str], None],
    tensorrt_version_compatible: bool = False,
) -> list[GateReport]:
    """Write the artefact for SETTINGS' runtime into the model's VERSION folder; return its gate reports.

    REAL_INPUTS (preprocessed sample items) join every gate's random inputs; CALIBRATION (other items)
    sets fp8's activation scales for TensorRT."""
    model = version.parent.name
    if settings.runtime is Runtime.TORCH:
        log(f"writing {model} for the torch runtime")
        return _torch_encoder(family, module, settings, version / TOWER_FOLDER, real_inputs, log)
    log(f"exporting {model} to ONNX")
    graph = export_encoder(module, settings.spec, version)
    reports = [check_parity(module, settings.spec, graph, name=model, real_inputs=real_inputs)]
    if settings.runtime is Runtime.TENSORRT:
        reports += _tensorrt_plan(
            module, settings, graph, real_inputs, calibration, timing_cache, log, tensorrt_version_compatible
        )
    return reports


def _torch_encoder(
    family: ModelFamily,
    module: torch.nn.Module,
    settings: EncoderSettings,
    folder: Path,
    real_inputs: NamedInputs,
    log: Callable[[str], None],
) -> list[GateReport]:
    """Write the encoder folder, prove it loads to the same fp32 module, compile it if asked (beside the
    folder), and gate what will be served: the precision, and the compiled package."""
    spec = settings.spec
    family.save_encoder(spec.name, module, folder)
    name = folder.parent.parent.name
    device = "cuda" if settings.device == "cuda" and torch.cuda.is_available() else "cpu"  # so400m: 8 TFLOP here
    loaded = family.load_encoder(spec.name, folder).to(device)
    inputs = {key: np.concatenate([value, real_inputs[key]]) for key, value in spec.random_inputs(4, 4321).items()}
    expected, actual = run_module(module.to(device), spec, inputs), run_module(loaded, spec, inputs)
    reports = [gate(f"{name} (encoder folder)", "fp32", actual, expected)]
    engine = folder.parent / ENGINE_FOLDER
    if settings.compile:  # the pipeline made sure the device it is served on is here
        precision = settings.precision.value
        served = convert_precision(family.load_encoder(spec.name, folder).to(device), precision, spec.precision_scope)
        build = compile_engine(served, spec, precision, settings.max_batch_size, engine)
        del served
        log(f"  compiled {name} (AOTInductor) for {build.target.device}: {build.seconds:.0f} s, {build.bytes:,} bytes")
    if settings.precision is not Precision.FP32 or settings.compile:
        at_export = replace(settings, device=device, cuda_graphs=False)  # graphs: at load, where it is served
        encoder = build_encoder(loaded, at_export, name=name, real_inputs=real_inputs, engine=engine)
        reports.append(encoder.gate_report)
        del encoder
    return reports


def _tensorrt_plan(
    module: torch.nn.Module,
    settings: EncoderSettings,
    graph: Path,
    real_inputs: NamedInputs,
    calibration: NamedInputs,
    timing_cache: Path,
    log: Callable[[str], None],
    version_compatible: bool,
) -> list[GateReport]:
    """Type the graph in the precision and gate it on the CPU; build the plan (batch 1..max) and gate it
    on the GPU."""
    spec, precision, limit = settings.spec, settings.precision.value, settings.max_batch_size
    name = graph.parent.parent.name
    reports = []
    if settings.precision is not Precision.FP32:
        log(f"writing {name} as a {precision} graph")
        reduce_precision(graph, precision, spec.precision_scope, [spec.random_inputs(8, seed=99), calibration])
        typed = f"{name} (typed graph)"
        reports.append(check_parity(module, spec, graph, name=typed, precision=precision, real_inputs=real_inputs))
    log(f"building TensorRT engine for {name}")
    plan = build_engine(graph, spec, limit, timing_cache=timing_cache, version_compatible=version_compatible)
    inputs = {key: np.concatenate([value, real_inputs[key]]) for key, value in spec.random_inputs(4, 4321).items()}
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the build needed a GPU: this is where it is
    expected = run_module(module.to(device), spec, inputs)
    reports.append(gate(f"{name} (TensorRT plan)", precision, run_engine(plan, spec, inputs, limit), expected))
    return reports
