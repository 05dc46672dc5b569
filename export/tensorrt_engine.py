"""Build a TensorRT plan from an exported graph, on the GPU that will serve it.

Plans are tied to the TensorRT version and the GPU architecture, so they are built where they run (inside
the NGC tritonserver container) and the TensorRT version is recorded beside the plan; `mmembed serve`
compares it with the server's before starting. The network is strongly typed: TensorRT 10.12 deprecates,
and 11 removes, the FP16/FP8 builder flags. A timing cache shared by every build of a repository makes
the second tower and every rebuild much faster.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmembed.core.contract import EncoderInput, EncoderSpec
from mmembed.core.preprocessing import MIN_TEXT_LENGTH
from mmembed.export.onnx_graph import NamedInputs
from mmembed.serving.tensorrt_versions import VERSION_FILE, PlanVersion

PLAN_FILE = "model.plan"


class TensorRTUnavailableError(RuntimeError):
    """TensorRT or a CUDA GPU is missing where an engine must be built."""


def optimization_profile(spec: EncoderSpec, max_batch_size: int) -> dict[str, dict[str, tuple[int, ...]]]:
    """Per input, min/opt/max shapes: every batch size from 1 to MAX_BATCH_SIZE, tuned for half of it;
    on dynamic (token) axes also every length from MIN_TEXT_LENGTH up, tuned for a short caption's."""
    optimal = max(1, max_batch_size // 2)
    return {
        item.name: {
            "min": _shape(item, 1, MIN_TEXT_LENGTH),
            "opt": _shape(item, optimal, 2 * MIN_TEXT_LENGTH),
            "max": _shape(item, max_batch_size, None),
        }
        for item in spec.inputs
    }


def _shape(item: EncoderInput, batch: int, length: int | None) -> tuple[int, ...]:
    """ITEM's shape at BATCH, its dynamic axes at LENGTH (at most their largest size; None: the largest)."""
    varying = {axis for axis, _ in item.dynamic_axes}
    sizes = (min(length, size) if length and axis in varying else size for axis, size in enumerate(item.item_shape))
    return (batch, *sizes)


def require_tensorrt() -> None:
    """Raise TensorRTUnavailableError unless the TensorRT Python package and a CUDA GPU are both here."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        raise TensorRTUnavailableError(
            "runtime tensorrt needs the TensorRT Python package and a CUDA GPU: run this export inside the "
            "NGC tritonserver container on the serving GPU, or use --runtime onnxruntime"
        )
    if not torch.cuda.is_available():
        raise TensorRTUnavailableError("runtime tensorrt needs a CUDA GPU to build the engine; none is visible")


def build_engine(
    graph_path: Path,
    spec: EncoderSpec,
    max_batch_size: int,
    timing_cache: Path | None = None,
    *,
    version_compatible: bool = False,
) -> Path:
    """Write `model.plan` beside GRAPH_PATH, or raise TensorRTUnavailableError saying what is missing.

    The network is strongly typed: each layer runs in the type the graph gives it (`onnx_precision` writes
    fp16 and fp8 graphs). TIMING_CACHE (read if present, written back after the build) holds the kernel
    timings of earlier builds on this GPU. VERSION_COMPATIBLE builds a plan that later TensorRT versions
    run too (TensorRT says it can be slower); otherwise only this exact TensorRT version runs it."""
    require_tensorrt()
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {graph_path}: {errors}")
    config = builder.create_builder_config()
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    profile = builder.create_optimization_profile()
    for input_name, shapes in optimization_profile(spec, max_batch_size).items():
        profile.set_shape(input_name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    cache = None
    if timing_cache is not None:
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {graph_path}")
    plan_path = graph_path.with_name(PLAN_FILE)
    plan_path.write_bytes(bytes(plan))
    plan_path.with_name(VERSION_FILE).write_text(PlanVersion(trt.__version__, version_compatible).line() + "\n")
    if timing_cache is not None and cache is not None:
        timing_cache.write_bytes(bytes(cache.serialize()))
    return plan_path


def run_engine(plan_path: Path, spec: EncoderSpec, inputs: NamedInputs, max_batch_size: int) -> np.ndarray:
    """Run the plan on the GPU over INPUTS (in batches the profile accepts) and return its fp32 outputs:
    what the numeric gate compares with the fp32 encoder before the plan is kept."""
    import tensorrt as trt

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        raise RuntimeError(f"TensorRT cannot load the plan it just built: {plan_path}")
    context = engine.create_execution_context()
    stream = torch.cuda.current_stream()
    outputs = []
    count = len(inputs[spec.inputs[0].name])
    for start in range(0, count, max_batch_size):
        batch = {
            name: torch.from_numpy(array[start : start + max_batch_size]).to("cuda").contiguous()
            for name, array in inputs.items()
        }
        for name, tensor in batch.items():
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
        output = torch.empty(tuple(context.get_tensor_shape(spec.output)), dtype=torch.float32, device="cuda")
        context.set_tensor_address(spec.output, output.data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT failed to run {plan_path}")
        stream.synchronize()
        outputs.append(output.cpu().numpy())
    return np.concatenate(outputs)
