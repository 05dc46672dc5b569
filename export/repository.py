"""Write one served model into a (staging) model repository: every step's config, its Python model source,
its settings file, and each ensemble's load-gate reference. It decides nothing: the pipeline says what."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as pb

from mmembed.core.contract import EncoderSpec, EnsembleSpec, ImageStep, ImageTextStep, TextStep
from mmembed.core.encoder_settings import EncoderSettings
from mmembed.core.gate_reference import REFERENCE_FILE, GateReference
from mmembed.core.names import EMBEDDING_OUTPUT, RAW_EMBEDDING
from mmembed.core.preprocessing import SETTINGS_FILE
from mmembed.core.types import Precision, Runtime
from mmembed.export.runtime_code import copy_runtime_code
from mmembed.export.tensorrt_engine import optimization_profile
from mmembed.export.triton_config import (
    GPU_INPUTS,
    BatchingOptions,
    EnsembleStep,
    ModelNames,
    TensorSpec,
    encoder_config,
    ensemble_config,
    python_model_config,
    to_pbtxt,
)
from mmembed.model_repository import (
    IMAGE_PREPROCESS,
    IMAGE_TEXT_PREPROCESS,
    L2_NORMALIZE,
    ONNX_ENCODER,
    TEXT_PREPROCESS,
    TORCH_ENCODER,
)

_DATA_TYPES = {"float32": pb.TYPE_FP32, "int64": pb.TYPE_INT64}
_ENCODER_SOURCES = {Runtime.ONNXRUNTIME_CPU: ONNX_ENCODER, Runtime.TORCH: TORCH_ENCODER}


def _bytes(name: str, *, optional: bool = False) -> TensorSpec:
    return TensorSpec(name=name, data_type=pb.TYPE_STRING, dims=(1,), optional=optional)


def _embedding(name: str, dimension: int) -> TensorSpec:
    return TensorSpec(name=name, data_type=pb.TYPE_FP32, dims=(dimension,))


def _encoder_tensors(spec: EncoderSpec) -> dict[str, TensorSpec]:
    return {
        item.name: TensorSpec(name=item.name, data_type=_DATA_TYPES[item.dtype], dims=item.dims) for item in spec.inputs
    }


def write_model(
    folder: Path, config: pb.ModelConfig, source: Path | None = None, run_time_modules: tuple[str, ...] = ()
) -> Path:
    """FOLDER/config.pbtxt, and SOURCE as the Python model with the mmembed code it runs beside it (and
    RUN_TIME_MODULES', which it imports by name); returns the version folder (ensembles need an empty one)."""
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(to_pbtxt(config))
    if source is not None:
        shutil.copyfile(source, version / "model.py")
        copy_runtime_code(version, source, run_time_modules)
    return version


def write_encoder(staging: Path, names: ModelNames, settings: EncoderSettings, batching: BatchingOptions) -> None:
    """NAME_<encoder>_encoder: its config and `encoder.json`; the artefact is already in its version folder."""
    spec = settings.spec
    model = names.encoder(spec.name)
    fp16_through_tensorrt = settings.runtime is Runtime.ONNXRUNTIME and settings.precision is Precision.FP16
    config = encoder_config(
        model,
        list(_encoder_tensors(spec).values()),
        _embedding(spec.output, spec.dimension),
        batching,
        runtime=settings.runtime,
        precision=settings.precision,
        gpu=settings.runtime is Runtime.TORCH and settings.device == "cuda",
        profile=optimization_profile(spec, batching.max_batch_size) if fp16_through_tensorrt else None,
    )
    family = (settings.family_module,) if settings.runtime is Runtime.TORCH else ()  # torch imports it by name
    settings.save(write_model(staging / model, config, _ENCODER_SOURCES.get(settings.runtime), family))


def write_ensemble(
    staging: Path,
    names: ModelNames,
    ensemble: EnsembleSpec,
    encoder: EncoderSpec,
    batching: BatchingOptions,
    *,
    checkpoint: Path,
    metadata: dict[str, str],
    image_device: str | None,
) -> None:
    """NAME_<modality>: its preprocessing models (settings and tokenizer beside them) and the ensemble
    wiring them to the encoder and the shared normalisation. IMAGE_DEVICE: where image steps run
    (None: Pillow on CPU instances)."""
    tensors = _encoder_tensors(encoder)
    steps = []
    for step in ensemble.steps:
        model = names.preprocess(ensemble.modality, step.input if len(ensemble.steps) > 1 else None)
        outputs = [tensors[name] for name in step.outputs]
        if isinstance(step, ImageStep):
            config = python_model_config(
                model,
                [_bytes(step.input)],
                outputs,
                batching,
                instances=batching.preprocess_instances,
                parameters={"device": image_device} if image_device else None,
                gpu=image_device == "cuda",
            )
            version = write_model(staging / model, config, IMAGE_PREPROCESS)
            (version / SETTINGS_FILE).write_text(step.settings.to_json())
        elif isinstance(step, TextStep):
            inputs = [_bytes(step.input), *(_bytes(name, optional=True) for name in step.optional_inputs)]
            config = python_model_config(model, inputs, outputs, batching, instances=batching.preprocess_instances)
            version = write_model(staging / model, config, TEXT_PREPROCESS)
            (version / SETTINGS_FILE).write_text(step.settings.to_json())
            shutil.copyfile(checkpoint / step.settings.tokenizer_file, version / step.settings.tokenizer_file)
        elif isinstance(step, ImageTextStep):
            inputs = [_bytes(step.input), *(_bytes(name, optional=True) for name in step.optional_inputs)]
            config = python_model_config(model, inputs, outputs, batching, instances=batching.preprocess_instances)
            version = write_model(staging / model, config, IMAGE_TEXT_PREPROCESS)
            settings = {**json.loads(step.image.to_json()), **json.loads(step.text.to_json())}
            settings.update(image_prompt=step.image_prompt, image_token=step.image_token)
            (version / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
            shutil.copyfile(checkpoint / step.text.tokenizer_file, version / step.text.tokenizer_file)
        output_map = {name: f"_{model}_{name}" for name in step.outputs}
        input_map = {name: name for name in (step.input, *step.optional_inputs)}
        steps.append(EnsembleStep(model=model, input_map=input_map, output_map=output_map))
    produced = {name: tensor for step in steps for name, tensor in step.output_map.items()}
    raw = f"_{names.encoder(encoder.name)}_{encoder.output}"
    steps += [
        EnsembleStep(model=names.encoder(encoder.name), input_map=produced, output_map={encoder.output: raw}),
        EnsembleStep(
            model=names.l2_normalize, input_map={RAW_EMBEDDING: raw}, output_map={EMBEDDING_OUTPUT: EMBEDDING_OUTPUT}
        ),
    ]
    config = ensemble_config(
        names.ensemble(ensemble.modality),
        [_bytes(name) for name in ensemble.inputs] + [_bytes(name, optional=True) for name in ensemble.optional_inputs],
        steps,
        _embedding(EMBEDDING_OUTPUT, encoder.dimension),
        batching,
        metadata=metadata,
    )
    write_model(staging / names.ensemble(ensemble.modality), config)


def write_gate_reference(staging: Path, names: ModelNames, ensemble: EnsembleSpec, reference: GateReference) -> None:
    reference.save(staging / names.ensemble(ensemble.modality) / REFERENCE_FILE)


def write_l2_normalize(
    staging: Path, names: ModelNames, dimension: int, batching: BatchingOptions, *, gpu: bool
) -> None:
    """NAME_l2_normalize, shared by every ensemble."""
    config = python_model_config(
        names.l2_normalize,
        [_embedding(RAW_EMBEDDING, dimension)],
        [_embedding(EMBEDDING_OUTPUT, dimension)],
        batching,
        instances=1,
        parameters=GPU_INPUTS if gpu else None,
        gpu=gpu,
    )
    write_model(staging / names.l2_normalize, config, L2_NORMALIZE)


def batching_for(encoder: EncoderSpec, batching: BatchingOptions) -> BatchingOptions:
    """BATCHING with the batch limit of ENCODER's kind: image encoders take fewer items than text ones."""
    limit = batching.max_batch_size if encoder.takes_pixels else batching.text_max_batch_size
    return replace(batching, max_batch_size=limit)
