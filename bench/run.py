"""Run every measurement of `mmembed bench` in order and print one table.

Order matters: the in-process measurements (matmul ceilings, encoder alone, the transformers baseline)
run first and give the GPU back before tritonserver starts, so each number has the card to itself.
A step that fails is recorded in the result and the run goes on: a precision refused by its gate, say,
still leaves every other number of a run that may have been expensive to get.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmembed.bench.baseline import baseline_rates
from mmembed.bench.encoder import attention_backend, device_inputs, encoder_rate, kernel_breakdown
from mmembed.bench.gpu import GpuSampler, flops_per_item, matmul_tflops
from mmembed.bench.load import LoadPlan, run_load
from mmembed.bench.preprocess import device_preprocess_rate, preprocess_rate
from mmembed.bench.smoke import served_parity
from mmembed.core.contract import ImageStep, ModelSpec
from mmembed.core.encoder_settings import EncoderSettings
from mmembed.core.names import TOWER_FOLDER
from mmembed.core.numeric_gate import row_cosines
from mmembed.core.preprocessing import ImageSettings, image_pixels
from mmembed.core.sample_images import caption_corpus, photo_corpus
from mmembed.core.types import Precision, Runtime
from mmembed.export import BatchingOptions, ExportRequest, export_model
from mmembed.families import get_family
from mmembed.runtime.compiled_engine import ENGINE_FOLDER, EngineBuild
from mmembed.runtime.device_preprocessing import DevicePreprocessor, nvjpeg_available
from mmembed.runtime.torch_encoder import build_encoder
from mmembed.serving.server import ServerSettings, TritonServer


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    work_dir: Path
    family: str = "siglip2"
    size: str = "so400m-512"
    precisions: tuple[str, ...] = ("bf16", "fp8")
    device: str = "cuda"
    seconds: float = 30.0  # per served image phase; text phases and the baseline run half as long
    processes: int = 4  # load-generator processes
    threads: int = 8  # users per process
    image_batch: int = 16  # images per request
    text_batch: int = 64  # texts per request
    preprocess_instances: int = 8
    encoder_instances: int = 2
    max_batch_size: int = 64
    text_max_batch_size: int = 256
    corpus_size: int = 40
    skip: tuple[str, ...] = ()  # steps to leave out: smoke, encoder, baseline, preprocess, served
    # Each precision also compiled ahead of time at export (AOTInductor), measured beside the eager one as
    # variant "<precision>-aot" (served and alone)
    compile: bool = False
    image_preprocess: str = "pillow"  # served image preprocessing: pillow (CPU instances) or torch (device)


@dataclass(kw_only=True)
class BenchResult:
    machine: str
    date: str
    config: dict[str, Any]
    ceilings_tflops: dict[str, float] = field(default_factory=dict)
    flops_per_image: float = 0.0
    flops_per_text: float = 0.0
    encoder: dict[str, dict[str, float]] = field(default_factory=dict)
    cuda_graphs: dict[str, str] = field(default_factory=dict)  # encoder alone: model -> "used" or why not
    # encoder alone: model -> attention backend, and with --compile the package's compile time and size
    towers: dict[str, dict[str, Any]] = field(default_factory=dict)
    kernel_shares: dict[str, float] = field(default_factory=dict)
    fast_jpeg_min_cosine: float = float("nan")
    device_preprocess_min_cosine: float = float("nan")  # torch/nvJPEG preprocessing vs Pillow, embeddings
    baseline: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, float] = field(default_factory=dict)
    served: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    smoke_parity: dict[str, float] = field(default_factory=dict)
    host_tensors: bool = False  # set when GPU tensors between steps failed and the run fell back
    errors: dict[str, str] = field(default_factory=dict)
    server_logs: dict[str, str] = field(default_factory=dict)


# Steps whose reference is transformers' own SigLIP (JinaCLIP-v2 has none that current transformers runs).
SIGLIP2_ONLY_STEPS = ("smoke", "baseline")


def run_benchmark(config: BenchConfig, log: Callable[[str], None] = print) -> BenchResult:
    family = get_family(config.family)
    cuda = config.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but torch sees no GPU here; use --device cpu for a rehearsal")
    result = BenchResult(
        machine=_machine(cuda), date=date.today().isoformat(), config={k: str(v) for k, v in asdict(config).items()}
    )
    clock = _Clock(result, log)
    if config.family != "siglip2" and not set(SIGLIP2_ONLY_STEPS) <= set(config.skip):
        log(f"steps {', '.join(SIGLIP2_ONLY_STEPS)} compare with transformers' SigLIP: skipped for {config.family}")
        config = replace(config, skip=(*config.skip, *SIGLIP2_ONLY_STEPS))
    if "smoke" not in config.skip:
        with clock("smoke test (tiny, served vs transformers)"):
            _smoke(config, result, log)
    checkpoint = config.work_dir / f"checkpoint-{config.family}-{config.size}"
    if not (checkpoint / "config.json").is_file():
        with clock("checkpoint"):
            family.make_checkpoint(config.size, checkpoint)
    exported = []
    for variant in variants(config):
        with clock(f"export {variant}"):
            export_model(export_request(config, checkpoint, repository_folder(config, variant), variant), log=log)
            exported.append(variant)
    config = replace(config, precisions=tuple(v for v in config.precisions if v in exported))
    measured = [variant for variant in variants(config) if variant in exported]
    jpegs, texts = photo_corpus(config.corpus_size), caption_corpus(1024)
    image_settings = _image_settings(family.describe(checkpoint))
    if cuda:
        with clock("matmul ceilings"):
            result.ceilings_tflops = matmul_tflops()
    for variant in measured if "encoder" not in config.skip else ():
        with clock(f"encoder alone {variant}"):
            _encoder_alone(config, variant, jpegs, image_settings, result)
    if "baseline" not in config.skip:
        with clock("transformers baseline"):
            baseline = baseline_rates(checkpoint, jpegs, texts, device=config.device, seconds=config.seconds / 2)
            result.baseline = asdict(baseline)
    if "preprocess" not in config.skip:
        with clock("preprocessing alone"):
            for fast in (False, True):
                settings = replace(image_settings, fast_jpeg=fast)
                rate = preprocess_rate(jpegs, settings, config.preprocess_instances, seconds=min(5.0, config.seconds))
                result.preprocess["fast_jpeg" if fast else "exact"] = rate
            decoder = "nvJPEG" if config.device == "cuda" and nvjpeg_available() else "Pillow decode"
            rate = device_preprocess_rate(jpegs, image_settings, config.device, seconds=min(5.0, config.seconds))
            result.preprocess[f"torch on {config.device} ({decoder}), in process"] = rate
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    for variant in measured if "served" not in config.skip else ():
        with clock(f"served {variant}"):
            _served(config, variant, jpegs, texts, result, log)
    return result


def _image_settings(spec: ModelSpec) -> ImageSettings:
    """The settings of the model's first image step: what the preprocessing measurements use."""
    steps = [step for ensemble in spec.ensembles for step in ensemble.steps if isinstance(step, ImageStep)]
    if not steps:
        raise ValueError("the benchmark measures image throughput: this model has no image ensemble")
    return steps[0].settings


def _smoke(config: BenchConfig, result: BenchResult, log: Callable[[str], None]) -> None:
    """Served parity on the tiny checkpoint; if GPU tensors between steps fail, retry through the host."""
    try:
        result.smoke_parity = served_parity(config.work_dir, config.device, config.precisions, config.image_preprocess)
    except Exception as e:
        if config.device != "cuda":
            raise
        log(f"smoke test failed with GPU tensors between steps ({type(e).__name__}: {e}); retrying through host")
        result.errors["smoke test with GPU tensors"] = f"{type(e).__name__}: {e}"
        os.environ["MMEMBED_HOST_TENSORS"] = "1"  # inherited by every tritonserver started from now on
        result.host_tensors = True
        result.smoke_parity = served_parity(config.work_dir, config.device, config.precisions, config.image_preprocess)
    log(f"smoke parity: {result.smoke_parity}")


COMPILED = "-aot"  # a variant's suffix: the precision compiled ahead of time


def variants(config: BenchConfig) -> tuple[str, ...]:
    """What is measured side by side: each precision eager, and with --compile each compiled too."""
    return (*config.precisions, *(p + COMPILED for p in config.precisions if config.compile))


def model_name(config: BenchConfig, variant: str) -> str:
    return f"{config.family}_{variant.replace('-', '_')}"


def repository_folder(config: BenchConfig, variant: str) -> Path:
    """One repository (and one server) per variant: a model refused at load stops only its own run."""
    return config.work_dir / f"repository-{variant}"


def export_request(config: BenchConfig, checkpoint: Path, repository: Path, variant: str) -> ExportRequest:
    return ExportRequest(
        family=get_family(config.family),
        checkpoint=checkpoint,
        repository=repository,
        name=model_name(config, variant),
        runtime=Runtime.TORCH,
        precision=Precision(variant.removesuffix(COMPILED)),
        device=config.device,
        fast_jpeg=True,
        compile=variant.endswith(COMPILED),
        image_preprocess=config.image_preprocess,
        batching=BatchingOptions(
            max_batch_size=config.max_batch_size,
            text_max_batch_size=config.text_max_batch_size,
            preprocess_instances=config.preprocess_instances,
            encoder_instances=config.encoder_instances,
        ),
    )


def _encoder_alone(
    config: BenchConfig, variant: str, jpegs: list[bytes], image_settings: ImageSettings, result: BenchResult
) -> None:
    """Each encoder the export wrote, built from its `encoder.json` as the served model builds it."""
    family = get_family(config.family)
    rates: dict[str, float] = {}
    result.encoder[variant] = rates
    for folder in sorted(repository_folder(config, variant).glob(f"{model_name(config, variant)}_*_encoder")):
        settings = replace(EncoderSettings.load(folder / "1"), device=config.device)
        module = family.load_encoder(settings.spec.name, folder / "1" / TOWER_FOLDER)
        engine = folder / "1" / ENGINE_FOLDER
        encoder = build_encoder(module, settings, name=folder.name, engine=engine)  # converts MODULE in place
        tower: dict[str, Any] = {"attention": attention_backend(module, device_inputs(encoder, 2, seed=3))}
        if settings.compile:
            build = EngineBuild.load(engine)
            tower.update(compile_s=build.seconds, package_bytes=build.bytes, compiled_for=build.target.device)
        result.towers[folder.name] = tower
        modality, batch = ("image" if settings.spec.takes_pixels else "text"), settings.max_batch_size
        rates[modality] = encoder_rate(encoder, batch, seconds=config.seconds / 3).items_per_s
        rates[f"{modality}_min_cosine_vs_fp32"] = encoder.gate_report.min_cosine
        if config.device == "cuda":
            result.cuda_graphs[folder.name] = encoder.graph_error or "used"
        if variant == config.precisions[0]:
            flops = flops_per_item(module, device_inputs(encoder, 1, seed=0))  # counted on the eager module
            setattr(result, "flops_per_image" if modality == "image" else "flops_per_text", flops)
            if modality == "image":
                result.fast_jpeg_min_cosine, result.device_preprocess_min_cosine = _preprocess_parity(
                    encoder, jpegs, image_settings, config.device
                )
                if config.device == "cuda":
                    result.kernel_shares = kernel_breakdown(encoder, batch=32)
        del encoder, module
        gc.collect()
        if config.device == "cuda":
            torch.cuda.empty_cache()


def _preprocess_parity(encoder: Any, jpegs: list[bytes], settings: ImageSettings, device: str) -> tuple[float, float]:
    """Min cosines between embeddings of exact Pillow preprocessing and (1) fast-JPEG Pillow preprocessing,
    (2) preprocessing on DEVICE (nvJPEG + torch resize on a GPU), on the same 16 photos."""
    photos = jpegs[:16]

    def embed(pixels: torch.Tensor) -> np.ndarray:
        result: np.ndarray = encoder([pixels]).float().cpu().numpy()
        return result

    def on_cpu(current: ImageSettings) -> torch.Tensor:
        return torch.from_numpy(np.stack([image_pixels(data, current) for data in photos]))

    exact = embed(on_cpu(settings))
    fast = embed(on_cpu(replace(settings, fast_jpeg=True)))
    on_device = embed(DevicePreprocessor(settings, device)(photos))
    return float(row_cosines(fast, exact).min()), float(row_cosines(on_device, exact).min())


def _served(
    config: BenchConfig,
    variant: str,
    jpegs: list[bytes],
    texts: list[str],
    result: BenchResult,
    log: Callable[[str], None],
) -> None:
    repository = repository_folder(config, variant)
    settings = ServerSettings.on_free_ports(repository)
    log(f"starting tritonserver on {repository} ...")
    started = time.monotonic()
    server = TritonServer(settings)
    try:
        server.start()
        result.timings_s[f"tritonserver start {variant} (load, gate, CUDA graphs)"] = time.monotonic() - started
        model = model_name(config, variant)
        phases = (
            ("image", config.image_batch, jpegs, config.seconds),
            ("text", config.text_batch, texts, config.seconds / 2),
        )
        for modality, batch, corpus, seconds in phases:
            plan = LoadPlan(
                url=server.grpc_url,
                model=model,
                modality=modality,
                batch=batch,
                processes=config.processes,
                threads=config.threads,
                warmup_s=3.0,
                seconds=seconds,
            )
            with GpuSampler() as sampler:
                load = run_load(plan, corpus)
            row = {**asdict(load), "gpu_util": sampler.mean}
            result.served[f"{variant} {modality}"] = row
            log(f"served {model} {modality}: {load.items_per_s:.1f}/s, p50 {load.p50_ms:.0f} ms, {load.failures}")
    finally:
        result.server_logs[variant] = str(server.log_file)
        server.stop()


def _machine(cuda: bool) -> str:
    cpus = os.cpu_count()
    if cuda:
        return f"{torch.cuda.get_device_name(0)}, {cpus} CPU cores, torch {torch.__version__}"
    return f"CPU only ({platform.processor() or platform.machine()}), {cpus} cores, torch {torch.__version__}"


class _Clock:
    """`with clock("step"):` logs the step and records how long it took."""

    def __init__(self, result: BenchResult, log: Callable[[str], None]) -> None:
        self.result, self.log = result, log

    def __call__(self, step: str) -> _Step:
        return _Step(self, step)


class _Step:
    def __init__(self, clock: _Clock, step: str) -> None:
        self.clock, self.step = clock, step

    def __enter__(self) -> None:
        self.clock.log(f"== {self.step}")
        self.started = time.monotonic()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        elapsed = time.monotonic() - self.started
        self.clock.result.timings_s[self.step] = elapsed
        if exc is not None and isinstance(exc, Exception):  # recorded, and the run goes on
            self.clock.result.errors[self.step] = f"{type(exc).__name__}: {exc}"
            self.clock.log(f"   {self.step} FAILED after {elapsed:.1f} s: {type(exc).__name__}: {exc}")
            self.clock.log("".join(traceback.format_exception(exc)[-3:]))
            return True
        self.clock.log(f"   {self.step}: {elapsed:.1f} s")
        return False


def write_json(result: BenchResult, path: Path) -> None:
    path.write_text(json.dumps(asdict(result), indent=2, default=str))
