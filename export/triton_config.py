"""Build every `config.pbtxt` of a model repository as protobuf messages, never as string templates.

A served model NAME is one ensemble per modality its family declares, each a chain

    NAME_<modality> = NAME_<modality>_preprocess -> NAME_<encoder>_encoder -> NAME_l2_normalize

e.g. NAME_image -> NAME_vision_encoder and NAME_text, NAME_query -> NAME_text_encoder for a two-tower
model. An ensemble with several preprocessing steps (a fused encoder taking pixels and token ids) runs
them side by side, as NAME_<modality>_<input>_preprocess.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from mmembed.core.names import PARAM_PREFIX
from mmembed.core.types import Precision, Runtime

# Python-backend parameter: hand GPU tensors to the model as they are instead of copying them to the host.
GPU_INPUTS = {"FORCE_CPU_ONLY_INPUT_TENSORS": "no"}


@dataclass(frozen=True, kw_only=True)
class BatchingOptions:
    """Batching and instance knobs written into every generated config."""

    max_batch_size: int = 64  # items per batch of an encoder that takes images (and its ensembles' requests)
    text_max_batch_size: int = 256  # text-only encoders: texts are ~16x cheaper, larger batches fill the GPU
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
    optional: bool = False  # a request may leave it out


@dataclass(frozen=True, kw_only=True)
class ModelNames:
    """The names of the models that make up the ensembles of one served model."""

    name: str

    def ensemble(self, modality: str) -> str:
        return f"{self.name}_{modality}"

    def preprocess(self, modality: str, step_input: str | None = None) -> str:
        """STEP_INPUT names the step only where an ensemble has several."""
        middle = f"{modality}_{step_input.lower()}" if step_input else modality
        return f"{self.name}_{middle}_preprocess"

    def encoder(self, encoder: str) -> str:
        return f"{self.name}_{encoder}_encoder"

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
        config.input.add(name=spec.name, data_type=spec.data_type, dims=list(spec.dims), optional=spec.optional)
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
    inputs: list[TensorSpec],
    output: TensorSpec,
    options: BatchingOptions,
    *,
    runtime: Runtime,
    precision: Precision,
    gpu: bool,
    profile: dict[str, dict[str, tuple[int, ...]]] | None = None,
) -> pb.ModelConfig:
    """The encoder step for RUNTIME; its tensor names are the exported graph's. The Python-backend
    runtimes read everything else from `encoder.json` beside the model (`EncoderSettings`).

    GPU (runtime torch): instances on each GPU, taking GPU tensors in place. PROFILE (runtime onnxruntime,
    fp16) is the TensorRT optimization profile: per input, min/opt/max shapes, batch axis included
    (`tensorrt_engine.optimization_profile`)."""
    if runtime in (Runtime.TORCH, Runtime.ONNXRUNTIME_CPU):
        return python_model_config(
            name,
            inputs,
            [output],
            options,
            instances=options.encoder_instances,
            parameters=GPU_INPUTS if gpu else None,
            gpu=gpu,
        )
    config = _base(name, options)
    _add_io(config, inputs, [output])
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
                    f"trt_profile_{key}_shapes": ",".join(
                        f"{input_name}:{'x'.join(map(str, shapes[key]))}" for input_name, shapes in profile.items()
                    )
                    for key in ("min", "opt", "max")
                },
            }
        )
    return config


@dataclass(frozen=True, kw_only=True)
class EnsembleStep:
    """One model in an ensemble: which ensemble tensors feed its inputs and what its outputs are called."""

    model: str
    input_map: dict[str, str]  # the model's input name -> ensemble tensor
    output_map: dict[str, str]  # the model's output name -> ensemble tensor


def ensemble_config(
    name: str,
    inputs: list[TensorSpec],
    steps: list[EnsembleStep],
    output: TensorSpec,
    options: BatchingOptions,
    *,
    metadata: dict[str, str],
) -> pb.ModelConfig:
    """An ensemble of STEPS, wired by tensor name; its `mmembed.*` parameters describe it to clients."""
    config = pb.ModelConfig(name=name, platform="ensemble", max_batch_size=options.max_batch_size)
    _add_io(config, inputs, [output])
    for key, value in metadata.items():
        config.parameters[PARAM_PREFIX + key].string_value = value
    for step in steps:
        added = config.ensemble_scheduling.step.add(model_name=step.model, model_version=-1)
        added.input_map.update(step.input_map)
        added.output_map.update(step.output_map)
    return config


def to_pbtxt(config: pb.ModelConfig) -> str:
    text: str = text_format.MessageToString(config)
    return text


def parse_pbtxt(text: str) -> pb.ModelConfig:
    config = pb.ModelConfig()
    text_format.Parse(text, config)
    return config
