"""Export one encoder to an ONNX graph with a dynamic batch axis (and the dynamic axes its inputs
declare), and prove it computes what PyTorch does.

Weights always go to one external data file beside the graph (`model.onnx.data`), so the SigLIP-2 text
tower (about 2.8 GB in fp32, over protobuf's 2 GB limit) and a tiny CI model take the same path.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from mmembed.core.contract import EncoderSpec
from mmembed.core.numeric_gate import GateReport, gate

OPSET = 18  # >= 17 keeps LayerNormalization one op (TensorRT then holds it in fp32); < 23 avoids `Attention`.
GRAPH_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"

NamedInputs = dict[str, np.ndarray]


def run_module(module: torch.nn.Module, spec: EncoderSpec, inputs: NamedInputs) -> np.ndarray:
    """MODULE on named numpy INPUTS (passed in declared order), fp32 numpy out, on the module's device."""
    device = next(module.parameters()).device
    with torch.no_grad():
        tensors = [torch.from_numpy(inputs[item.name]).to(device) for item in spec.inputs]
        result: np.ndarray = module(*tensors).float().cpu().numpy()
    return result


def export_encoder(module: torch.nn.Module, spec: EncoderSpec, folder: Path) -> Path:
    """Write `folder/model.onnx` (+ `model.onnx.data`) for MODULE and return the graph's path."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    graph_path = folder / GRAPH_FILE
    example = spec.random_inputs(2, seed=0)
    dynamic_axes: dict[str, dict[int, str]] = {spec.output: {0: "batch"}}
    for item in spec.inputs:
        dynamic_axes[item.name] = {0: "batch", **{axis + 1: name for axis, name in item.dynamic_axes}}
    with tempfile.TemporaryDirectory() as scratch, torch.no_grad():
        # The TorchScript exporter: quick on large encoders, and dynamic_axes is all a batch axis needs.
        raw_path = Path(scratch) / GRAPH_FILE
        torch.onnx.export(
            module.cpu(),
            tuple(torch.from_numpy(example[item.name]) for item in spec.inputs),
            str(raw_path),
            input_names=[item.name for item in spec.inputs],
            output_names=[spec.output],
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
        )
        graph = onnx.load(str(raw_path), load_external_data=True)
    onnx.save(graph, str(graph_path), save_as_external_data=True, all_tensors_to_one_file=True, location=DATA_FILE)
    onnx.checker.check_model(str(graph_path))
    return graph_path


def shortened(spec: EncoderSpec, inputs: NamedInputs, length: int) -> NamedInputs:
    """INPUTS cut to LENGTH along every dynamic axis: a shape other than the traced one."""
    result = {}
    for item in spec.inputs:
        array = inputs[item.name]
        for axis, _ in item.dynamic_axes:
            array = np.take(array, range(min(length, array.shape[axis + 1])), axis=axis + 1)
        result[item.name] = array
    return result


def check_parity(
    module: torch.nn.Module,
    spec: EncoderSpec,
    graph_path: Path,
    *,
    name: str,
    precision: str = "fp32",
    real_inputs: NamedInputs | None = None,
    batch: int = 3,
) -> GateReport:
    """Compare the graph with the fp32 module on fresh random inputs at a batch size other than the traced
    one (and, where inputs have dynamic axes, a length other than the traced one), plus REAL_INPUTS.

    Raises PrecisionGateError when any row's cosine falls under PRECISION's gate or an output is not finite.
    """
    import onnxruntime

    inputs = spec.random_inputs(batch, seed=1234)
    if real_inputs is not None:
        inputs = {key: np.concatenate([value, real_inputs[key]]) for key, value in inputs.items()}
    parts = [inputs]
    if spec.varies:
        longest = max(item.item_shape[axis] for item in spec.inputs for axis, _ in item.dynamic_axes)
        parts.append(shortened(spec, inputs, max(1, longest // 4)))
    session = onnxruntime.InferenceSession(str(graph_path), providers=["CPUExecutionProvider"])
    expected = [run_module(module.cpu(), spec, part) for part in parts]
    actual = [session.run([spec.output], part)[0] for part in parts]
    return gate(name, precision, np.concatenate(actual), np.concatenate(expected))
