"""Checkpoint folder -> validated graphs -> a Triton model repository, all or nothing.

Everything is built in a staging folder beside the repository and moved into place only after every graph
passed its numeric gate, so a failed export never leaves a half-written or wrong model behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from mmembed.export.onnx_graph import ParityReport, TowerSpec, check_parity, export_tower
from mmembed.export.tensorrt_engine import build_engine
from mmembed.export.triton_config import (
    SUPPORTED_PRECISIONS,
    BatchingOptions,
    ModelNames,
    Precision,
    Runtime,
    TensorSpec,
    encoder_config,
    ensemble_config,
    python_model_config,
    to_pbtxt,
)
from mmembed.model_repository import IMAGE_PREPROCESS, L2_NORMALIZE, ONNX_ENCODER, TEXT_PREPROCESS
from tritonclient.grpc import model_config_pb2 as pb

from mmembed import contract
from mmembed.families import ModelFamily
from mmembed.preprocessing import SETTINGS_FILE, ImageSettings, TextSettings

# Minimum cosine between the exported encoder and the PyTorch fp32 tower, per precision.
MIN_COSINE: dict[Precision, float] = {Precision.FP32: 0.9999, Precision.FP16: 0.999, Precision.FP8: 0.99}
REPORT_FILE = "export_report.json"


class ExportError(ValueError):
    """The export was asked for something it cannot do (unknown runtime/precision pair, bad name)."""


@dataclass(frozen=True, kw_only=True)
class ExportRequest:
    family: ModelFamily
    checkpoint: Path
    repository: Path
    name: str = "siglip2"
    runtime: Runtime = Runtime.ONNXRUNTIME_CPU
    precision: Precision = Precision.FP32
    batching: BatchingOptions = field(default_factory=BatchingOptions)


@dataclass(frozen=True, kw_only=True)
class ExportReport:
    """What was exported and how closely it matches PyTorch; written as JSON into the repository."""

    name: str
    family: str
    checkpoint: str
    runtime: str
    precision: str
    dimension: int
    parity: list[ParityReport]
    models: list[str]


def export_model(request: ExportRequest, log: Callable[[str], None] = print) -> ExportReport:
    """Export REQUEST's checkpoint into REQUEST's repository and return the report."""
    _check_request(request)
    family, checkpoint = request.family, request.checkpoint
    names = ModelNames(name=request.name)
    log(f"reading {family.name} checkpoint {checkpoint}")
    image = family.image_settings(checkpoint)
    text = family.text_settings(checkpoint)
    towers = family.load_towers(checkpoint)
    vision_spec = TowerSpec(
        input_name=contract.PIXEL_VALUES,
        input_dtype=torch.float32,
        item_shape=(3, image.height, image.width),
        output_name=contract.RAW_EMBEDDING,
    )
    text_spec = TowerSpec(
        input_name=contract.INPUT_IDS,
        input_dtype=torch.int64,
        item_shape=(text.max_length,),
        output_name=contract.RAW_EMBEDDING,
        high=towers.vocab_size,
    )
    request.repository.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=request.repository, prefix=".staging-") as scratch:
        staging = Path(scratch)
        parity = []
        for model, tower, spec in (
            (names.vision_encoder, towers.vision, vision_spec),
            (names.text_encoder, towers.text, text_spec),
        ):
            log(f"exporting {model} to ONNX")
            graph = export_tower(tower, spec, staging / model / "1")
            report = check_parity(tower, spec, graph, name=model, min_cosine=MIN_COSINE[Precision.FP32])
            log(f"  parity {report.line()}")
            parity.append(report)
            if request.runtime is Runtime.TENSORRT:
                log(f"building TensorRT engine for {model}")
                build_engine(graph, spec, request.batching.max_batch_size, request.precision)
        _write_models(request, names, staging, image, text, vision_spec, text_spec, towers.dimension)
        report = ExportReport(
            name=request.name,
            family=family.name,
            checkpoint=str(checkpoint.resolve()),
            runtime=request.runtime.value,
            precision=request.precision.value,
            dimension=towers.dimension,
            parity=parity,
            models=sorted(p.name for p in staging.iterdir()),
        )
        (staging / names.image / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2))
        for folder in staging.iterdir():
            target = request.repository / folder.name
            if target.exists():
                shutil.rmtree(target)
            folder.rename(target)
    log(f"wrote {len(report.models)} models to {request.repository}: ensembles {names.image}, {names.text}")
    return report


def _check_request(request: ExportRequest) -> None:
    allowed = SUPPORTED_PRECISIONS[request.runtime]
    if request.precision not in allowed:
        raise ExportError(
            f"runtime {request.runtime.value} supports precision {', '.join(p.value for p in allowed)}, "
            f"not {request.precision.value}"
        )
    if not request.name.replace("_", "").replace("-", "").isalnum():
        raise ExportError(f"model name {request.name!r} may hold only letters, digits, '-' and '_'")


def _write_models(
    request: ExportRequest,
    names: ModelNames,
    staging: Path,
    image: ImageSettings,
    text: TextSettings,
    vision_spec: TowerSpec,
    text_spec: TowerSpec,
    dimension: int,
) -> None:
    batching = request.batching
    image_bytes = TensorSpec(name=contract.IMAGE_INPUT, data_type=pb.TYPE_STRING, dims=(1,))
    text_bytes = TensorSpec(name=contract.TEXT_INPUT, data_type=pb.TYPE_STRING, dims=(1,))
    pixels = TensorSpec(name=vision_spec.input_name, data_type=pb.TYPE_FP32, dims=vision_spec.item_shape)
    ids = TensorSpec(name=text_spec.input_name, data_type=pb.TYPE_INT64, dims=text_spec.item_shape)
    raw = TensorSpec(name=contract.RAW_EMBEDDING, data_type=pb.TYPE_FP32, dims=(dimension,))
    embedding = TensorSpec(name=contract.EMBEDDING_OUTPUT, data_type=pb.TYPE_FP32, dims=(dimension,))
    encoder_source = ONNX_ENCODER if request.runtime is Runtime.ONNXRUNTIME_CPU else None
    preprocess_instances = batching.preprocess_instances
    configs = {
        names.image_preprocess: (
            python_model_config(
                names.image_preprocess, [image_bytes], [pixels], batching, instances=preprocess_instances
            ),
            IMAGE_PREPROCESS,
        ),
        names.text_preprocess: (
            python_model_config(names.text_preprocess, [text_bytes], [ids], batching, instances=preprocess_instances),
            TEXT_PREPROCESS,
        ),
        names.l2_normalize: (
            python_model_config(names.l2_normalize, [raw], [embedding], batching, instances=1),
            L2_NORMALIZE,
        ),
        names.vision_encoder: (
            encoder_config(
                names.vision_encoder,
                pixels,
                raw,
                batching,
                runtime=request.runtime,
                precision=request.precision,
            ),
            encoder_source,
        ),
        names.text_encoder: (
            encoder_config(
                names.text_encoder, ids, raw, batching, runtime=request.runtime, precision=request.precision
            ),
            encoder_source,
        ),
    }
    common = {"family": request.family.name, "dimension": str(dimension), "runtime": request.runtime.value}
    image_metadata = {**common, "modality": "image", "image_size": f"{image.height}x{image.width}"}
    text_metadata = {**common, "modality": "text", "max_text_length": str(text.max_length)}
    chains = (
        (names.image, image_bytes, names.image_preprocess, names.vision_encoder, pixels, image_metadata),
        (names.text, text_bytes, names.text_preprocess, names.text_encoder, ids, text_metadata),
    )
    for ensemble, ensemble_input, preprocess, encoder, encoder_input, metadata in chains:
        steps = [
            (preprocess, ensemble_input.name, encoder_input.name),
            (encoder, encoder_input.name, contract.RAW_EMBEDDING),
            (names.l2_normalize, contract.RAW_EMBEDDING, contract.EMBEDDING_OUTPUT),
        ]
        config = ensemble_config(ensemble, ensemble_input, steps, embedding, batching, metadata=metadata)
        configs[ensemble] = (config, None)
    for model, (config, source) in configs.items():
        version = staging / model / "1"
        version.mkdir(parents=True, exist_ok=True)  # ensembles need an (empty) version folder too
        (staging / model / "config.pbtxt").write_text(to_pbtxt(config))
        if source is not None:
            shutil.copyfile(source, version / "model.py")
    (staging / names.image_preprocess / "1" / SETTINGS_FILE).write_text(image.to_json())
    (staging / names.text_preprocess / "1" / SETTINGS_FILE).write_text(text.to_json())
    shutil.copyfile(
        request.checkpoint / text.tokenizer_file, staging / names.text_preprocess / "1" / text.tokenizer_file
    )
