"""Checkpoint folder -> validated encoders -> a Triton model repository, all or nothing.

The family declares what the model serves (`core.contract.ModelSpec`); this module applies the request to
that declaration and has each encoder built and gated (`encoders`) and every model written
(`repository`). Everything is built in a staging folder beside the repository and moved into place only
after every artefact passed its numeric gate, so a failed export never leaves a half-written or wrong
model behind.
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

from mmembed.core.contract import (
    EncoderSpec,
    EnsembleSpec,
    ImageStep,
    ImageTextStep,
    ModelFamily,
    ModelSpec,
    PreprocessStep,
    TextStep,
)
from mmembed.core.encoder_settings import EncoderSettings
from mmembed.core.gate_reference import GateReference
from mmembed.core.numeric_gate import GateReport
from mmembed.core.preprocessing import DISPLAY_DECODE, ImageSettings, InputLimits, TextSettings
from mmembed.core.types import SUPPORTED_PRECISIONS, Modality, Precision, Runtime
from mmembed.export.encoders import build_artefact
from mmembed.export.onnx_graph import run_module
from mmembed.export.repository import (
    batching_for,
    write_encoder,
    write_ensemble,
    write_gate_reference,
    write_l2_normalize,
)
from mmembed.export.samples import encoder_inputs, sample_items
from mmembed.export.tensorrt_engine import require_tensorrt
from mmembed.export.triton_config import BatchingOptions, ModelNames

REPORT_FILE = "export_report.json"  # beside NAME_l2_normalize's config: every served model has one
IMAGE_DECODES = ("reference", "display")
TIMING_CACHE_FILE = "tensorrt_timing.cache"  # beside the models: Triton ignores files in the repository root


class ExportError(ValueError):
    """The export was asked for something it cannot do (unknown runtime/precision pair, bad name)."""


@dataclass(frozen=True, kw_only=True)
class ExportRequest:
    family: ModelFamily
    checkpoint: Path
    repository: Path
    name: str = ""  # the served model name; "" for the family's name
    runtime: Runtime = Runtime.ONNXRUNTIME_CPU
    precision: Precision = Precision.FP32
    batching: BatchingOptions = field(default_factory=BatchingOptions)
    device: str = "cuda"  # runtime torch: where the encoders run when served ("cuda" or "cpu")
    fast_jpeg: bool = False  # decode large JPEGs at reduced scale (see ImageSettings.fast_jpeg)
    # runtime torch: compile the encoders ahead of time (AOTInductor) here, for this device and torch build;
    # served without compiling (mmembed.runtime.compiled_engine)
    compile: bool = False
    # runtime tensorrt: plans that later TensorRT versions run too; otherwise only the building version does
    tensorrt_version_compatible: bool = False
    # "pillow": decode and resize on CPU instances; "torch" (runtime torch): nvJPEG decode where available,
    # resize and normalise with torch on the encoder's device (see mmembed.runtime.device_preprocessing)
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
    family = request.family
    names = ModelNames(name=request.name or family.name)
    log(f"reading {family.name} checkpoint {request.checkpoint}")
    spec = served_spec(request)
    modules = family.load_encoders(request.checkpoint)
    if sorted(modules) != sorted(encoder.name for encoder in spec.encoders):
        raise ExportError(f"family {family.name} loaded encoders {sorted(modules)} but declares {spec.encoders}")
    request.repository.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=request.repository, prefix=".staging-") as scratch:
        staging = Path(scratch)
        samples = {ensemble.modality: sample_items(ensemble) for ensemble in spec.ensembles}
        parity = _build_encoders(request, spec, modules, samples, staging, names, log)
        _write_ensembles(request, spec, modules, samples, staging, names)
        report = ExportReport(
            name=names.name,
            family=family.name,
            checkpoint=str(request.checkpoint.resolve()),
            runtime=request.runtime.value,
            precision=request.precision.value,
            dimension=spec.dimension,
            parity=parity,
            models=sorted(p.name for p in staging.iterdir()),
        )
        (staging / names.l2_normalize / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2))
        _move_into_place(staging, request.repository)
    ensembles = ", ".join(names.ensemble(ensemble.modality) for ensemble in spec.ensembles)
    log(f"wrote {len(report.models)} models to {request.repository}: ensembles {ensembles}")
    return report


Samples = dict[Modality, dict[str, list[bytes]]]  # modality -> ensemble input -> items


def _build_encoders(
    request: ExportRequest,
    spec: ModelSpec,
    modules: dict[str, torch.nn.Module],
    samples: Samples,
    staging: Path,
    names: ModelNames,
    log: Callable[[str], None],
) -> list[GateReport]:
    """Each encoder's artefact and config, gated on random inputs and the samples of the first ensemble
    that feeds it; the gate reports of all."""
    parity: list[GateReport] = []
    for encoder in spec.encoders:
        feeding = next(ensemble for ensemble in spec.ensembles if ensemble.encoder == encoder.name)
        settings = _encoder_settings(request, encoder)
        reports = build_artefact(
            request.family,
            modules[encoder.name],
            settings,
            staging / names.encoder(encoder.name) / "1",
            real_inputs=encoder_inputs(feeding, samples[feeding.modality], request.checkpoint),
            calibration=encoder_inputs(feeding, sample_items(feeding, first_seed=100), request.checkpoint),
            timing_cache=request.repository / TIMING_CACHE_FILE,
            tensorrt_version_compatible=request.tensorrt_version_compatible,
            log=log,
        )
        for report in reports:
            log(f"  gate {report.line()}")
        parity.extend(reports)
        write_encoder(staging, names, settings, batching_for(encoder, request.batching))
    return parity


def _write_ensembles(
    request: ExportRequest,
    spec: ModelSpec,
    modules: dict[str, torch.nn.Module],
    samples: Samples,
    staging: Path,
    names: ModelNames,
) -> None:
    """Every declared ensemble with its preprocessing and gate reference, and the shared normalisation."""
    for ensemble in spec.ensembles:
        encoder = spec.encoder(ensemble.encoder)
        write_ensemble(
            staging,
            names,
            ensemble,
            encoder,
            batching_for(encoder, request.batching),
            checkpoint=request.checkpoint,
            metadata=_described(request, spec, ensemble),
            image_device=request.device if request.image_preprocess == "torch" else None,
        )
        reference = _reference(modules[encoder.name], spec, ensemble, samples[ensemble.modality], request)
        write_gate_reference(staging, names, ensemble, reference)
    limits = [batching_for(encoder, request.batching).max_batch_size for encoder in spec.encoders]
    widest = replace(request.batching, max_batch_size=max(limits))
    gpu_tensors = request.runtime is Runtime.TORCH and request.device == "cuda"
    write_l2_normalize(staging, names, spec.dimension, widest, gpu=gpu_tensors)


def _move_into_place(staging: Path, repository: Path) -> None:
    """Every staged model into REPOSITORY, replacing an earlier export of the same name."""
    for folder in staging.iterdir():
        target = repository / folder.name
        if target.exists():
            shutil.rmtree(target)
        folder.rename(target)


def served_spec(request: ExportRequest) -> ModelSpec:
    """The family's declaration with the request's choices applied to every preprocessing step: decoding,
    fast JPEG, input limits. Checked before anything is built."""
    spec = request.family.describe(request.checkpoint)
    spec.check()

    limits = request.limits

    def image(settings: ImageSettings) -> ImageSettings:
        return replace(
            settings,
            decode=DISPLAY_DECODE if request.image_decode == "display" else settings.decode,
            fast_jpeg=request.fast_jpeg,
            max_image_bytes=limits.max_image_bytes,
            max_image_pixels=limits.max_image_pixels,
        )

    def text(settings: TextSettings) -> TextSettings:
        return replace(settings, max_text_bytes=limits.max_text_bytes)

    def applied(step: PreprocessStep) -> PreprocessStep:
        if isinstance(step, ImageStep):
            return ImageStep(settings=image(step.settings))
        if isinstance(step, ImageTextStep):
            return replace(step, image=image(step.image), text=text(step.text))
        return TextStep(settings=text(step.settings))

    ensembles = tuple(replace(e, steps=tuple(applied(step) for step in e.steps)) for e in spec.ensembles)
    return replace(spec, ensembles=ensembles)


def _encoder_settings(request: ExportRequest, encoder: EncoderSpec) -> EncoderSettings:
    return EncoderSettings(
        spec=encoder,
        runtime=request.runtime,
        precision=request.precision,
        max_batch_size=batching_for(encoder, request.batching).max_batch_size,
        family_module=request.family.load_encoder.__module__,
        device=request.device,
        compile=request.compile,
    )


def _described(request: ExportRequest, spec: ModelSpec, ensemble: EnsembleSpec) -> dict[str, str]:
    """ENSEMBLE's `mmembed.*` parameters: what a client learns about the model from its config."""
    described = {
        "family": request.family.name,
        "modality": ensemble.modality,
        "dimension": str(spec.dimension),
        "runtime": request.runtime.value,
        "precision": request.precision.value,
        "matryoshka_dimensions": ",".join(str(d) for d in spec.matryoshka_dimensions),
    }
    for step in ensemble.steps:
        image, text = _step_settings(step)
        if isinstance(step, ImageTextStep):
            described["image_with_text"] = "true"
        if image is not None:
            described.update(image_size=f"{image.height}x{image.width}", image_decode=request.image_decode)
        if text is not None:
            described["max_text_length"] = str(text.max_length)
            if text.prefix:
                described["query_instruction"] = text.prefix
            if text.takes_instruction:
                described["instruction_template"] = text.instruction_template
    return described


def _step_settings(step: PreprocessStep) -> tuple[ImageSettings | None, TextSettings | None]:
    if isinstance(step, ImageStep):
        return step.settings, None
    if isinstance(step, TextStep):
        return None, step.settings
    return step.image, step.text


def _reference(
    module: torch.nn.Module,
    spec: ModelSpec,
    ensemble: EnsembleSpec,
    items: dict[str, list[bytes]],
    request: ExportRequest,
) -> GateReference:
    """The fp32 encoder's normalised embeddings of ITEMS, for the check at every server start."""
    encoder = spec.encoder(ensemble.encoder)
    raw = run_module(module, encoder, encoder_inputs(ensemble, items, request.checkpoint))
    normalised = raw / np.maximum(np.linalg.norm(raw, axis=-1, keepdims=True), 1e-12)
    return GateReference(precision=request.precision.value, inputs=items, embeddings=normalised.astype(np.float32))


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
    if request.runtime is Runtime.TORCH and request.family.load_encoder.__module__ == "__main__":
        raise ExportError(
            f"runtime torch imports family {request.family.name}'s module inside tritonserver, and a script's "
            "__main__ cannot be imported there: move the family into a module of an installed package"
        )
    if request.device not in ("cuda", "cpu"):
        raise ExportError(f"device {request.device!r}: choose cuda or cpu")
    if request.tensorrt_version_compatible and request.runtime is not Runtime.TENSORRT:
        raise ExportError("--tensorrt-version-compatible is for runtime tensorrt's plans: use --runtime tensorrt")
    if request.compile and request.runtime is not Runtime.TORCH:
        raise ExportError("--compile builds runtime torch's compiled encoders: use --runtime torch")
    if request.compile and request.device == "cuda" and not torch.cuda.is_available():
        raise ExportError(
            "--compile builds the encoders' kernels for the device that serves them, and this machine has no "
            "GPU: export on the GPU machine, or use --device cpu"
        )
    if request.name and not request.name.replace("_", "").replace("-", "").isalnum():
        raise ExportError(f"model name {request.name!r} may hold only letters, digits, '-' and '_'")
