"""Checkpoint folder -> validated graphs -> a Triton model repository, all or nothing.

Everything is built in a staging folder beside the repository and moved into place only after every graph
passed its numeric gate, so a failed export never leaves a half-written or wrong model behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from mmembed.export.onnx_graph import check_parity, export_tower
from mmembed.export.onnx_precision import reduce_precision
from mmembed.export.tensorrt_engine import build_engine, optimization_profile, require_tensorrt, run_engine
from mmembed.export.triton_config import (
    GPU_INPUTS,
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
from mmembed.model_repository import (
    IMAGE_PREPROCESS,
    L2_NORMALIZE,
    ONNX_ENCODER,
    TEXT_PREPROCESS,
    TORCH_ENCODER,
)
from tritonclient.grpc import model_config_pb2 as pb

from mmembed import contract
from mmembed.contract import TOWER_FOLDER
from mmembed.families import ModelFamily, Towers
from mmembed.families.base import Modality, TowerSpec
from mmembed.load_gate import REFERENCE_FILE, GateReference
from mmembed.numeric_gate import GateReport, gate
from mmembed.preprocessing import (
    DISPLAY_DECODE,
    SETTINGS_FILE,
    ImageSettings,
    InputLimits,
    TextSettings,
    TextTokenizer,
    image_pixels,
)
from mmembed.sample_images import CAPTIONS, synthetic_jpeg
from mmembed.torch_encoder import EncoderOptions, build_encoder

REPORT_FILE = "export_report.json"
IMAGE_DECODES = ("reference", "display")
TIMING_CACHE_FILE = "tensorrt_timing.cache"  # beside the models: Triton ignores files in the repository root


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
    device: str = "cuda"  # runtime torch: where the encoders run when served ("cuda" or "cpu")
    fast_jpeg: bool = False  # decode large JPEGs at reduced scale (see ImageSettings.fast_jpeg)
    compile: bool = False  # runtime torch: torch.compile the towers at load (see EncoderOptions.compile)
    # "pillow": decode and resize on CPU instances; "torch" (runtime torch): nvJPEG decode where available,
    # resize and normalise with torch on the encoder's device (see mmembed.device_preprocessing)
    image_preprocess: str = "pillow"
    # "reference": decode files as the family's reference pipeline does (e.g. transformers' load_image);
    # "display": as a viewer shows them (EXIF orientation, transparency on white, 16-bit scaled), a
    # documented deviation from the reference for such files
    image_decode: str = "reference"
    limits: InputLimits = field(default_factory=InputLimits)


@dataclass(frozen=True, kw_only=True)
class ExportReport:
    """What was exported and how closely it matches PyTorch; written as JSON into the repository."""

    name: str
    family: str
    checkpoint: str
    runtime: str
    precision: str
    dimension: int
    parity: list[GateReport]
    models: list[str]


def export_model(request: ExportRequest, log: Callable[[str], None] = print) -> ExportReport:
    """Export REQUEST's checkpoint into REQUEST's repository and return the report."""
    _check_request(request)
    if request.runtime is Runtime.TENSORRT:
        require_tensorrt()  # before minutes of export, not after
    family, checkpoint = request.family, request.checkpoint
    names = ModelNames(name=request.name)
    log(f"reading {family.name} checkpoint {checkpoint}")
    limits = request.limits
    reference_image = family.image_settings(checkpoint)
    image = replace(
        reference_image,
        decode=DISPLAY_DECODE if request.image_decode == "display" else reference_image.decode,
        fast_jpeg=request.fast_jpeg,
        max_image_bytes=limits.max_image_bytes,
        max_image_pixels=limits.max_image_pixels,
    )
    text = replace(family.text_settings(checkpoint), max_text_bytes=limits.max_text_bytes)
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
        variable_length=text.pad_to_longest,
    )
    request.repository.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=request.repository, prefix=".staging-") as scratch:
        staging = Path(scratch)
        parity: list[GateReport] = []
        photos = _sample_jpegs(4)
        real_inputs = {"image": _pixels(photos, image), "text": _sample_token_ids(text, checkpoint)}
        batching = request.batching
        tower_steps: tuple[tuple[str, Modality, torch.nn.Module, TowerSpec], ...] = (
            (names.vision_encoder, "image", towers.vision, vision_spec),
            (names.text_encoder, "text", towers.text, text_spec),
        )
        for model, modality, tower, spec in tower_steps:
            version = staging / model / "1"
            if request.runtime is Runtime.TORCH:
                log(f"writing {model} tower for the torch runtime")
                folder = version / TOWER_FOLDER
                gate_reports = _torch_tower(request, towers, modality, tower, spec, folder, real_inputs[modality])
            else:
                log(f"exporting {model} to ONNX")
                graph = export_tower(tower, spec, version)
                gate_reports = [check_parity(tower, spec, graph, name=model)]
                if request.runtime is Runtime.TENSORRT:
                    # fp8 activation scales: other photos than the gate's (the captions are all there are)
                    calibration = (
                        _pixels(_sample_jpegs(8, first_seed=100), image) if modality == "image" else real_inputs["text"]
                    )
                    limit = batching.max_batch_size if modality == "image" else batching.text_max_batch_size
                    gate_reports += _tensorrt_tower(
                        request, tower, spec, graph, limit, real_inputs[modality], calibration, log
                    )
            for gate_report in gate_reports:
                log(f"  gate {gate_report.line()}")
            parity.extend(gate_reports)
        _write_models(request, names, staging, image, text, vision_spec, text_spec, towers.dimension)
        _gate_reference(request, towers, photos, real_inputs).save(staging / names.image / REFERENCE_FILE)
        _write_query_models(request, names, staging, text, text_spec, towers.dimension)
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
    ensembles = [name for name in (names.image, names.text, names.query) if name in report.models]
    log(f"wrote {len(report.models)} models to {request.repository}: ensembles {', '.join(ensembles)}")
    return report


def _torch_tower(
    request: ExportRequest,
    towers: Towers,
    modality: Modality,
    tower: torch.nn.Module,
    spec: TowerSpec,
    folder: Path,
    real_inputs: torch.Tensor,
) -> list[GateReport]:
    """Write the tower folder, prove it loads to the same fp32 tower, and gate the served precision."""
    family = request.family
    family.save_tower(towers, modality, folder)
    name = folder.parent.parent.name
    device = "cuda" if request.device == "cuda" and torch.cuda.is_available() else "cpu"  # so400m: 8 TFLOP here
    loaded = family.load_tower(folder, modality).to(device)
    inputs = torch.cat([spec.random_input(4, seed=4321), real_inputs]).to(device)
    with torch.inference_mode():
        expected, actual = tower.to(device)(inputs).cpu().numpy(), loaded(inputs).cpu().numpy()
    reports = [gate(f"{name} (tower folder)", "fp32", actual, expected)]
    if request.precision is not Precision.FP32:
        options = EncoderOptions(precision=request.precision.value, device=device, cuda_graphs=False)  # graphs: at load
        encoder = build_encoder(loaded, spec, options, name=name, fp8_scope=family.fp8_scope, real_inputs=real_inputs)
        reports.append(encoder.gate_report)
        del encoder
    return reports


def _tensorrt_tower(
    request: ExportRequest,
    tower: torch.nn.Module,
    spec: TowerSpec,
    graph: Path,
    limit: int,
    real_inputs: torch.Tensor,
    calibration: torch.Tensor,
    log: Callable[[str], None],
) -> list[GateReport]:
    """Type the graph in the requested precision and gate it on the CPU; build the plan (batch 1..LIMIT)
    and gate it on the GPU. CALIBRATION, with random inputs, sets fp8's activation scales."""
    name = graph.parent.parent.name
    precision = request.precision.value
    reports = []
    if request.precision is not Precision.FP32:
        log(f"writing {name} as a {precision} graph")
        batches = [spec.random_input(8, seed=99).numpy(), calibration.numpy()]
        reduce_precision(graph, precision, request.family.fp8_scope, batches)
        typed = f"{name} (typed graph)"
        reports.append(check_parity(tower, spec, graph, name=typed, precision=precision, real_inputs=real_inputs))
    log(f"building TensorRT engine for {name}")
    plan = build_engine(graph, spec, limit, timing_cache=request.repository / TIMING_CACHE_FILE)
    inputs = torch.cat([spec.random_input(4, seed=4321), real_inputs])
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the build needed a GPU: this is where it is
    with torch.no_grad():
        expected = tower.to(device)(inputs.to(device)).float().cpu().numpy()
    reports.append(gate(f"{name} (TensorRT plan)", precision, run_engine(plan, spec, inputs, limit), expected))
    return reports


def _sample_jpegs(count: int, first_seed: int = 0) -> list[bytes]:
    """Photo-like JPEGs: the gates' real images."""
    return [synthetic_jpeg(640, 480, seed=seed) for seed in range(first_seed, first_seed + count)]


def _pixels(jpegs: list[bytes], settings: ImageSettings) -> torch.Tensor:
    """JPEGS through the served preprocessing."""
    return torch.from_numpy(np.stack([image_pixels(data, settings) for data in jpegs]))


def _gate_reference(
    request: ExportRequest, towers: Towers, photos: list[bytes], real_inputs: dict[str, torch.Tensor]
) -> GateReference:
    """The fp32 towers' normalised embeddings of the sample photos and captions, for the check at load."""
    embeddings = []
    for tower, inputs in ((towers.vision, real_inputs["image"]), (towers.text, real_inputs["text"])):
        device = next(tower.parameters()).device  # where the export left it: the GPU if it used one
        with torch.no_grad():
            raw = tower(inputs.to(device)).float()
        embeddings.append(torch.nn.functional.normalize(raw, dim=-1).cpu().numpy())
    return GateReference(
        precision=request.precision.value,
        images=photos,
        texts=list(CAPTIONS),
        image_embeddings=embeddings[0],
        text_embeddings=embeddings[1],
    )


def _sample_token_ids(settings: TextSettings, checkpoint: Path) -> torch.Tensor:
    """Captions at the full length, the shape of the gate's random token ids."""
    full_length = replace(settings, pad_to_longest=False)
    return torch.from_numpy(TextTokenizer(full_length, checkpoint)(list(CAPTIONS)))


def _check_request(request: ExportRequest) -> None:
    allowed = SUPPORTED_PRECISIONS[request.runtime]
    if request.precision not in allowed:
        raise ExportError(
            f"runtime {request.runtime.value} supports precision {', '.join(p.value for p in allowed)}, "
            f"not {request.precision.value}"
        )
    if request.image_preprocess not in ("pillow", "torch"):
        raise ExportError(f"image preprocessing {request.image_preprocess!r}: choose pillow or torch")
    if request.image_preprocess == "torch" and request.runtime is not Runtime.TORCH:
        raise ExportError("image preprocessing torch runs beside runtime torch's encoders: use --runtime torch")
    if request.image_decode not in IMAGE_DECODES:
        raise ExportError(f"image decoding {request.image_decode!r}: choose {' or '.join(IMAGE_DECODES)}")
    if request.device not in ("cuda", "cpu"):
        raise ExportError(f"device {request.device!r}: choose cuda or cpu")
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
    text_batching = replace(batching, max_batch_size=batching.text_max_batch_size)
    shared_batching = replace(batching, max_batch_size=max(batching.max_batch_size, batching.text_max_batch_size))
    image_bytes = TensorSpec(name=contract.IMAGE_INPUT, data_type=pb.TYPE_STRING, dims=(1,))
    text_bytes = TensorSpec(name=contract.TEXT_INPUT, data_type=pb.TYPE_STRING, dims=(1,))
    pixels = TensorSpec(name=vision_spec.input_name, data_type=pb.TYPE_FP32, dims=vision_spec.dims)
    ids = TensorSpec(name=text_spec.input_name, data_type=pb.TYPE_INT64, dims=text_spec.dims)
    raw = TensorSpec(name=contract.RAW_EMBEDDING, data_type=pb.TYPE_FP32, dims=(dimension,))
    embedding = TensorSpec(name=contract.EMBEDDING_OUTPUT, data_type=pb.TYPE_FP32, dims=(dimension,))
    encoder_source = {Runtime.ONNXRUNTIME_CPU: ONNX_ENCODER, Runtime.TORCH: TORCH_ENCODER}.get(request.runtime)
    gpu_tensors = request.runtime is Runtime.TORCH and request.device == "cuda"
    torch_parameters = {
        "family": request.family.name,
        "device": request.device,
        "compile": "true" if request.compile else "false",
    }
    preprocess_instances = batching.preprocess_instances
    torch_preprocessing = request.image_preprocess == "torch"
    configs = {
        names.image_preprocess: (
            python_model_config(
                names.image_preprocess,
                [image_bytes],
                [pixels],
                batching,
                instances=preprocess_instances,
                parameters={"device": request.device} if torch_preprocessing else None,
                gpu=torch_preprocessing and request.device == "cuda",
            ),
            IMAGE_PREPROCESS,
        ),
        names.text_preprocess: (
            python_model_config(
                names.text_preprocess, [text_bytes], [ids], text_batching, instances=preprocess_instances
            ),
            TEXT_PREPROCESS,
        ),
        names.l2_normalize: (
            python_model_config(
                names.l2_normalize,
                [raw],
                [embedding],
                shared_batching,
                instances=1,
                parameters=GPU_INPUTS if gpu_tensors else None,
                gpu=gpu_tensors,
            ),
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
                torch_parameters={**torch_parameters, "modality": "image"},
                profile=optimization_profile(vision_spec, batching.max_batch_size),
            ),
            encoder_source,
        ),
        names.text_encoder: (
            encoder_config(
                names.text_encoder,
                ids,
                raw,
                text_batching,
                runtime=request.runtime,
                precision=request.precision,
                torch_parameters={
                    **torch_parameters,
                    "modality": "text",
                    "vocab_size": str(text_spec.high),
                    "max_length": str(text_spec.item_shape[0]),
                },
                profile=optimization_profile(text_spec, text_batching.max_batch_size),
            ),
            encoder_source,
        ),
    }
    image_metadata = {
        "modality": "image",
        "image_size": f"{image.height}x{image.width}",
        "image_decode": request.image_decode,
    }
    text_metadata = {"modality": "text", "max_text_length": str(text.max_length)}
    chains = (
        (names.image, image_bytes, names.image_preprocess, names.vision_encoder, pixels, batching, image_metadata),
        (names.text, text_bytes, names.text_preprocess, names.text_encoder, ids, text_batching, text_metadata),
    )
    for ensemble, ensemble_input, preprocess, encoder, encoder_input, chain_batching, metadata in chains:
        chain = _Chain(ensemble, ensemble_input, preprocess, encoder, encoder_input, chain_batching)
        configs[ensemble] = (_ensemble(request, names, chain, dimension, metadata), None)
    _write_configs(staging, configs)
    (staging / names.image_preprocess / "1" / SETTINGS_FILE).write_text(image.to_json())
    _write_text_settings(request, staging / names.text_preprocess / "1", text)


def _write_query_models(
    request: ExportRequest, names: ModelNames, staging: Path, text: TextSettings, text_spec: TowerSpec, dimension: int
) -> None:
    """NAME_query: the text chain with the model's query instruction in front, when it has one."""
    instruction = request.family.query_instruction(request.checkpoint)
    if not instruction:
        return
    batching = replace(request.batching, max_batch_size=request.batching.text_max_batch_size)
    text_bytes = TensorSpec(name=contract.TEXT_INPUT, data_type=pb.TYPE_STRING, dims=(1,))
    ids = TensorSpec(name=text_spec.input_name, data_type=pb.TYPE_INT64, dims=text_spec.dims)
    preprocess = python_model_config(
        names.query_preprocess, [text_bytes], [ids], batching, instances=request.batching.preprocess_instances
    )
    chain = _Chain(names.query, text_bytes, names.query_preprocess, names.text_encoder, ids, batching)
    metadata = {"modality": "query", "max_text_length": str(text.max_length), "query_instruction": instruction}
    ensemble = _ensemble(request, names, chain, dimension, metadata)
    _write_configs(staging, {names.query_preprocess: (preprocess, TEXT_PREPROCESS), names.query: (ensemble, None)})
    _write_text_settings(request, staging / names.query_preprocess / "1", replace(text, prefix=instruction))


@dataclass(frozen=True)
class _Chain:
    """ensemble = preprocess -> encoder -> the shared L2 normalisation."""

    ensemble: str
    ensemble_input: TensorSpec
    preprocess: str
    encoder: str
    encoder_input: TensorSpec
    batching: BatchingOptions


def _ensemble(
    request: ExportRequest, names: ModelNames, chain: _Chain, dimension: int, metadata: dict[str, str]
) -> pb.ModelConfig:
    """CHAIN's ensemble config; its `mmembed.*` parameters describe the model to clients."""
    dimensions = request.family.matryoshka_dimensions(request.checkpoint)
    described = {
        "family": request.family.name,
        "dimension": str(dimension),
        "runtime": request.runtime.value,
        "precision": request.precision.value,
        "matryoshka_dimensions": ",".join(str(d) for d in dimensions),
        **metadata,
    }
    embedding = TensorSpec(name=contract.EMBEDDING_OUTPUT, data_type=pb.TYPE_FP32, dims=(dimension,))
    steps = [
        (chain.preprocess, chain.ensemble_input.name, chain.encoder_input.name),
        (chain.encoder, chain.encoder_input.name, contract.RAW_EMBEDDING),
        (names.l2_normalize, contract.RAW_EMBEDDING, contract.EMBEDDING_OUTPUT),
    ]
    return ensemble_config(chain.ensemble, chain.ensemble_input, steps, embedding, chain.batching, metadata=described)


def _write_configs(staging: Path, configs: dict[str, tuple[pb.ModelConfig, Path | None]]) -> None:
    for model, (config, source) in configs.items():
        version = staging / model / "1"
        version.mkdir(parents=True, exist_ok=True)  # ensembles need an (empty) version folder too
        (staging / model / "config.pbtxt").write_text(to_pbtxt(config))
        if source is not None:
            shutil.copyfile(source, version / "model.py")


def _write_text_settings(request: ExportRequest, folder: Path, text: TextSettings) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SETTINGS_FILE).write_text(text.to_json())
    shutil.copyfile(request.checkpoint / text.tokenizer_file, folder / text.tokenizer_file)
