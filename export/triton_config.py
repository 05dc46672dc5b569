"""Build every `config.pbtxt` of a model repository as protobuf messages, never as string templates.

One model NAME becomes five models and two ensembles:

    NAME_image = NAME_image_preprocess -> NAME_vision_encoder -> NAME_l2_normalize
    NAME_text  = NAME_text_preprocess  -> NAME_text_encoder   -> NAME_l2_normalize

and, for models that embed retrieval queries with an instruction in front (JinaCLIP-v2), a third:

    NAME_query = NAME_query_preprocess -> NAME_text_encoder   -> NAME_l2_normalize
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from mmembed.contract import IMAGE_SUFFIX, PARAM_PREFIX, QUERY_SUFFIX, TEXT_SUFFIX


class Runtime(str, Enum):
    """Where the encoders run. The ensembles, preprocessing and normalisation are the same for all."""

    ONNXRUNTIME_CPU = "onnxruntime-cpu"  # onnxruntime inside a Python-backend model: the pip Triton, CI
    ONNXRUNTIME = "onnxruntime"  # Triton's onnxruntime backend on a GPU (NGC containers)
    TENSORRT = "tensorrt"  # a TensorRT plan built on the target GPU (NGC containers)
    TORCH = "torch"  # the checkpoint's towers in torch inside a Python-backend model, GPU or CPU


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"


SUPPORTED_PRECISIONS: dict[Runtime, tuple[Precision, ...]] = {
    Runtime.ONNXRUNTIME_CPU: (Precision.FP32,),
    Runtime.ONNXRUNTIME: (Precision.FP32, Precision.FP16),
    Runtime.TENSORRT: (Precision.FP32, Precision.FP16, Precision.FP8),
    Runtime.TORCH: (Precision.FP32, Precision.FP16, Precision.BF16, Precision.FP8),
}

# Python-backend parameter: hand GPU tensors to the model as they are instead of copying them to the host.
GPU_INPUTS = {"FORCE_CPU_ONLY_INPUT_TENSORS": "no"}


@dataclass(frozen=True, kw_only=True)
class BatchingOptions:
    """Batching and instance knobs written into every generated config."""

    max_batch_size: int = 64  # images per batch (and the image ensemble's largest request)
    text_max_batch_size: int = 256  # texts are ~16x cheaper than images: larger batches fill the GPU
    max_queue_delay_us: int = 2000
    preprocess_instances: int = 2
    encoder_instances: int = 1
    # Overload: past this many queued requests per model, or this long in a queue, a request is
    # rejected at once (the client sees ServerOverloadedError and may retry) instead of piling up.
    max_queue_size: int = 256
    queue_timeout_s: float = 30.0


@dataclass(frozen=True, kw_only=True)
class TensorSpec:
    name: str
    data_type: int  # a pb.DataType value
    dims: tuple[int, ...]  # per item, without the batch axis


@dataclass(frozen=True, kw_only=True)
class ModelNames:
    """The names of the models that make up the ensembles of one served model."""

    name: str

    @property
    def image(self) -> str:
        return self.name + IMAGE_SUFFIX

    @property
    def text(self) -> str:
        return self.name + TEXT_SUFFIX

    @property
    def query(self) -> str:
        return self.name + QUERY_SUFFIX

    @property
    def query_preprocess(self) -> str:
        return f"{self.name}_query_preprocess"

    @property
    def image_preprocess(self) -> str:
        return f"{self.name}_image_preprocess"

    @property
    def text_preprocess(self) -> str:
        return f"{self.name}_text_preprocess"

    @property
    def vision_encoder(self) -> str:
        return f"{self.name}_vision_encoder"

    @property
    def text_encoder(self) -> str:
        return f"{self.name}_text_encoder"

    @property
    def l2_normalize(self) -> str:
        return f"{self.name}_l2_normalize"


def _base(name: str, options: BatchingOptions) -> pb.ModelConfig:
    config = pb.ModelConfig(name=name, max_batch_size=options.max_batch_size)
    batching = config.dynamic_batching
    batching.max_queue_delay_microseconds = options.max_queue_delay_us
    batching.default_queue_policy.max_queue_size = options.max_queue_size
    batching.default_queue_policy.timeout_action = pb.ModelQueuePolicy.REJECT
    batching.default_queue_policy.default_timeout_microseconds = int(options.queue_timeout_s * 1e6)
    batching.default_queue_policy.allow_timeout_override = True
    return config


def _add_io(config: pb.ModelConfig, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
    for spec in inputs:
        config.input.add(name=spec.name, data_type=spec.data_type, dims=list(spec.dims))
    for spec in outputs:
        config.output.add(name=spec.name, data_type=spec.data_type, dims=list(spec.dims))


def python_model_config(
    name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    options: BatchingOptions,
    *,
    instances: int,
    parameters: dict[str, str] | None = None,
    gpu: bool = False,
) -> pb.ModelConfig:
    """A Python-backend model with dynamic batching, its instances on the CPU or on each GPU."""
    config = _base(name, options)
    config.backend = "python"
    _add_io(config, inputs, outputs)
    kind = pb.ModelInstanceGroup.KIND_GPU if gpu else pb.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(kind=kind, count=instances)
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = value
    return config


def encoder_config(
    name: str,
    input_spec: TensorSpec,
    output_spec: TensorSpec,
    options: BatchingOptions,
    *,
    runtime: Runtime,
    precision: Precision,
    torch_parameters: dict[str, str] | None = None,
    profile: dict[str, tuple[int, ...]] | None = None,
) -> pb.ModelConfig:
    """The encoder step for RUNTIME; its tensor names are the exported graph's.

    TORCH_PARAMETERS (runtime torch only) tell the Python model its family, modality and device.
    PROFILE (runtime onnxruntime, fp16) is the TensorRT optimization profile: min/opt/max input shapes,
    batch axis included (`tensorrt_engine.optimization_profile`)."""
    if runtime is Runtime.TORCH:
        parameters = dict(torch_parameters or {})
        gpu = parameters.get("device") == "cuda"
        parameters.update(precision=precision.value, output_name=output_spec.name, **(GPU_INPUTS if gpu else {}))
        return python_model_config(
            name,
            [input_spec],
            [output_spec],
            options,
            instances=options.encoder_instances,
            parameters=parameters,
            gpu=gpu,
        )
    if runtime is Runtime.ONNXRUNTIME_CPU:
        return python_model_config(
            name,
            [input_spec],
            [output_spec],
            options,
            instances=options.encoder_instances,
            parameters={"input_name": input_spec.name, "output_name": output_spec.name},
        )
    config = _base(name, options)
    _add_io(config, [input_spec], [output_spec])
    config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_GPU, count=options.encoder_instances)
    if runtime is Runtime.TENSORRT:
        config.platform = "tensorrt_plan"
        return config
    config.platform = "onnxruntime_onnx"
    if precision is Precision.FP16:
        if profile is None:
            raise ValueError("onnxruntime fp16 runs through TensorRT: give its optimization profile")
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        accelerator.parameters.update(
            {
                "precision_mode": "FP16",
                "trt_engine_cache_enable": "1",
                "trt_layer_norm_fp32_fallback": "1",
                **{
                    f"trt_profile_{key}_shapes": f"{input_spec.name}:{'x'.join(map(str, profile[key]))}"
                    for key in ("min", "opt", "max")
                },
            }
        )
    return config


def ensemble_config(
    name: str,
    input_spec: TensorSpec,
    steps: list[tuple[str, str, str]],
    output_spec: TensorSpec,
    options: BatchingOptions,
    *,
    metadata: dict[str, str],
) -> pb.ModelConfig:
    """A linear ensemble. STEPS are (model, its input name, its output name), each feeding the next."""
    config = pb.ModelConfig(name=name, platform="ensemble", max_batch_size=options.max_batch_size)
    _add_io(config, [input_spec], [output_spec])
    for key, value in metadata.items():
        config.parameters[PARAM_PREFIX + key].string_value = value
    carried = input_spec.name
    for index, (model, step_input, step_output) in enumerate(steps):
        last = index == len(steps) - 1
        produced = output_spec.name if last else f"_{model}_{step_output}"
        step = config.ensemble_scheduling.step.add(model_name=model, model_version=-1)
        step.input_map[step_input] = carried
        step.output_map[step_output] = produced
        carried = produced
    return config


def to_pbtxt(config: pb.ModelConfig) -> str:
    text: str = text_format.MessageToString(config)
    return text


def parse_pbtxt(text: str) -> pb.ModelConfig:
    config = pb.ModelConfig()
    text_format.Parse(text, config)
    return config
