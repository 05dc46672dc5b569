"""The generated model repository: every config parses back, and states batching and instances."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import JINA_MODEL, TORCH_MODEL
from tritonclient.grpc import model_config_pb2 as pb

from mmembed.core.contract import EncoderInput, EncoderSpec
from mmembed.core.encoder_settings import EncoderSettings
from mmembed.core.types import Precision, Runtime
from mmembed.export import BatchingOptions, ExportError, ExportRequest, export_model
from mmembed.export.tensorrt_engine import optimization_profile
from mmembed.export.triton_config import TensorSpec, encoder_config, parse_pbtxt, to_pbtxt
from mmembed.families import get_family


def configs(repository: Path) -> dict[str, pb.ModelConfig]:
    return {p.parent.name: parse_pbtxt(p.read_text()) for p in repository.glob("*/config.pbtxt")}


def test_repository_layout(repository: Path) -> None:
    found = {
        name: config
        for name, config in configs(repository).items()
        if name.startswith("siglip2_") and not name.startswith(TORCH_MODEL)
    }
    assert sorted(found) == [
        "siglip2_image",
        "siglip2_image_preprocess",
        "siglip2_l2_normalize",
        "siglip2_text",
        "siglip2_text_encoder",
        "siglip2_text_preprocess",
        "siglip2_vision_encoder",
    ]
    text_chain = {"siglip2_text", "siglip2_text_preprocess", "siglip2_text_encoder", "siglip2_l2_normalize"}
    for name, config in found.items():
        assert config.name == name
        assert config.max_batch_size == (256 if name in text_chain else 64)
        if config.platform == "ensemble":
            continue
        assert config.dynamic_batching.max_queue_delay_microseconds == 2000
        assert len(config.instance_group) == 1 and config.instance_group[0].count >= 1
        assert (repository / name / "1" / "model.py").is_file()
    for encoder in ("siglip2_vision_encoder", "siglip2_text_encoder"):
        assert (repository / encoder / "1" / "model.onnx").is_file()
        assert (repository / encoder / "1" / "model.onnx.data").is_file()
    assert (repository / "siglip2_text_preprocess" / "1" / "tokenizer.json").is_file()


def test_query_ensemble_prefixes_the_instruction_and_shares_the_text_encoder(repository: Path) -> None:
    """JinaCLIP-v2 also gets NAME_query: its own preprocessing (instruction in front), the same encoder."""
    found = configs(repository)
    query = found[f"{JINA_MODEL}_query"]
    steps = [step.model_name for step in query.ensemble_scheduling.step]
    assert steps == [f"{JINA_MODEL}_query_preprocess", f"{JINA_MODEL}_text_encoder", f"{JINA_MODEL}_l2_normalize"]
    assert query.parameters["mmembed.modality"].string_value == "query"
    assert query.parameters["mmembed.matryoshka_dimensions"].string_value == "16,32,64"
    settings = json.loads((repository / f"{JINA_MODEL}_query_preprocess" / "1" / "preprocessing.json").read_text())
    assert settings["text"]["prefix"] == "Represent the query for retrieving evidence documents: "
    plain = json.loads((repository / f"{JINA_MODEL}_text_preprocess" / "1" / "preprocessing.json").read_text())
    assert plain["text"]["prefix"] == ""
    assert "siglip2_query" not in found  # SigLIP-2 queries are plain texts


def test_torch_runtime_layout(repository: Path) -> None:
    """Each encoder holds its own tower (config + fp32 weights) and the torch model source; no ONNX."""
    found = configs(repository)
    for encoder in (f"{TORCH_MODEL}_vision_encoder", f"{TORCH_MODEL}_text_encoder"):
        version = repository / encoder / "1"
        assert {p.name for p in (version / "tower").iterdir()} == {"config.json", "model.safetensors"}
        assert (version / "model.py").is_file() and not (version / "model.onnx").exists()
        settings = EncoderSettings.load(version)  # typed settings beside the model, not config strings
        assert (settings.runtime, settings.precision, settings.device) == (Runtime.TORCH, Precision.BF16, "cpu")
        assert settings.family_module == "mmembed.families.siglip2.model"
        assert dict(found[encoder].parameters) == {}
        assert found[encoder].instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    text_settings = EncoderSettings.load(repository / f"{TORCH_MODEL}_text_encoder" / "1")
    assert [item.name for item in text_settings.spec.inputs] == ["input_ids"]
    assert text_settings.max_batch_size == 256 and text_settings.spec.inputs[0].high == 1024  # the vocabulary
    report = json.loads((repository / f"{TORCH_MODEL}_l2_normalize" / "export_report.json").read_text())
    assert [row["precision"] for row in report["parity"]] == ["fp32", "bf16", "fp32", "bf16"]
    # --image-preprocess torch: preprocessing told to run on the encoders' device (KIND_GPU there)
    preprocess = found[f"{TORCH_MODEL}_image_preprocess"]
    assert preprocess.parameters["device"].string_value == "cpu"
    assert "device" not in found["siglip2_image_preprocess"].parameters  # the default: Pillow on CPU instances


def test_torch_image_preprocessing_needs_the_torch_runtime(checkpoint: Path, tmp_path: Path) -> None:
    request = ExportRequest(
        family=get_family("siglip2"), checkpoint=checkpoint, repository=tmp_path, image_preprocess="torch"
    )
    with pytest.raises(ExportError, match="image preprocessing torch runs beside runtime torch's encoders"):
        export_model(request)
    assert not any(tmp_path.iterdir())


def test_ensembles_chain_preprocess_encoder_normalize(repository: Path) -> None:
    image = configs(repository)["siglip2_image"]
    assert [step.model_name for step in image.ensemble_scheduling.step] == [
        "siglip2_image_preprocess",
        "siglip2_vision_encoder",
        "siglip2_l2_normalize",
    ]
    assert image.input[0].name == "IMAGE" and image.input[0].data_type == pb.TYPE_STRING
    assert image.output[0].name == "EMBEDDING" and list(image.output[0].dims) == [64]
    steps = image.ensemble_scheduling.step
    assert steps[0].output_map["pixel_values"] == steps[1].input_map["pixel_values"]
    assert steps[2].output_map["EMBEDDING"] == "EMBEDDING"
    assert image.parameters["mmembed.dimension"].string_value == "64"
    assert image.parameters["mmembed.image_size"].string_value == "64x64"


def test_export_report_records_parity(repository: Path) -> None:
    report = json.loads((repository / "siglip2_l2_normalize" / "export_report.json").read_text())
    assert report["runtime"] == "onnxruntime-cpu" and report["dimension"] == 64
    assert all(row["min_cosine"] >= 0.9999 for row in report["parity"])


@pytest.mark.parametrize(
    ("runtime", "precision", "platform", "kind"),
    [
        (Runtime.ONNXRUNTIME, Precision.FP32, "onnxruntime_onnx", pb.ModelInstanceGroup.KIND_GPU),
        (Runtime.TENSORRT, Precision.FP32, "tensorrt_plan", pb.ModelInstanceGroup.KIND_GPU),
        (Runtime.TENSORRT, Precision.FP8, "tensorrt_plan", pb.ModelInstanceGroup.KIND_GPU),  # typed in the plan
        (Runtime.ONNXRUNTIME_CPU, Precision.FP32, "", pb.ModelInstanceGroup.KIND_CPU),
        (Runtime.TORCH, Precision.BF16, "", pb.ModelInstanceGroup.KIND_GPU),
    ],
)
def test_encoder_configs_per_runtime(runtime: Runtime, precision: Precision, platform: str, kind: int) -> None:
    pixels = TensorSpec(name="pixel_values", data_type=pb.TYPE_FP32, dims=(3, 64, 64))
    raw = TensorSpec(name="embedding", data_type=pb.TYPE_FP32, dims=(64,))
    gpu = runtime is Runtime.TORCH
    config = encoder_config("m", [pixels], raw, BatchingOptions(), runtime=runtime, precision=precision, gpu=gpu)
    config = parse_pbtxt(to_pbtxt(config))
    assert config.platform == platform
    assert config.instance_group[0].kind == kind
    assert list(config.input[0].dims) == [3, 64, 64]
    if runtime is Runtime.TENSORRT:  # the precision lives in the plan's types, not in builder or EP flags
        assert not config.optimization.execution_accelerators.gpu_execution_accelerator
    if runtime is Runtime.TORCH:  # GPU tensors from the previous step stay on the GPU
        assert config.backend == "python"
        assert config.parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value == "no"


def _text_encoder(variable_length: bool, *, mask: bool = False, max_length: int = 64) -> EncoderSpec:
    axes = ((0, "tokens"),) if variable_length else ()
    ids = EncoderInput(name="input_ids", kind="token_ids", item_shape=(max_length,), dynamic_axes=axes, high=100)
    inputs = (
        ids,
        EncoderInput(name="attention_mask", kind="attention_mask", item_shape=(max_length,), dynamic_axes=axes),
    )
    return EncoderSpec(name="text", inputs=inputs if mask else inputs[:1], dimension=64, precision_scope="x")


@pytest.mark.parametrize("variable_length", [False, True])
def test_onnxruntime_fp16_uses_the_tensorrt_accelerator_with_profiles(variable_length: bool) -> None:
    """Fixed-length ids (SigLIP-2) get one length; JinaCLIP's per-request lengths get 16 up to 64; every
    input (ids and mask) gets its profile."""
    spec = _text_encoder(variable_length, mask=True)
    inputs = [TensorSpec(name=item.name, data_type=pb.TYPE_INT64, dims=item.dims) for item in spec.inputs]
    raw = TensorSpec(name="embedding", data_type=pb.TYPE_FP32, dims=(64,))
    config = encoder_config(
        "m",
        inputs,
        raw,
        BatchingOptions(max_batch_size=32),
        runtime=Runtime.ONNXRUNTIME,
        precision=Precision.FP16,
        gpu=False,
        profile=optimization_profile(spec, 32),
    )
    accelerator = parse_pbtxt(to_pbtxt(config)).optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP16"
    assert accelerator.parameters["trt_profile_max_shapes"] == "input_ids:32x64,attention_mask:32x64"
    shortest = "1x16" if variable_length else "1x64"
    assert accelerator.parameters["trt_profile_min_shapes"] == f"input_ids:{shortest},attention_mask:{shortest}"


def test_tensorrt_profile_covers_batch_one_to_max() -> None:
    pixels = EncoderInput(name="pixel_values", kind="pixels", item_shape=(3, 512, 512))
    spec = EncoderSpec(name="vision", inputs=(pixels,), dimension=64, precision_scope="x")
    profile = optimization_profile(spec, 128)
    assert profile == {"pixel_values": {"min": (1, 3, 512, 512), "opt": (64, 3, 512, 512), "max": (128, 3, 512, 512)}}
    text = _text_encoder(True, max_length=512)
    assert optimization_profile(text, 256) == {"input_ids": {"min": (1, 16), "opt": (128, 32), "max": (256, 512)}}


def test_unsupported_precision_is_refused_before_any_work(checkpoint: Path, tmp_path: Path) -> None:
    request = ExportRequest(
        family=get_family("siglip2"), checkpoint=checkpoint, repository=tmp_path, precision=Precision.FP8
    )
    with pytest.raises(ExportError, match="supports precision fp32, not fp8"):
        export_model(request)
    assert not any(tmp_path.iterdir())


def test_tensorrt_without_tensorrt_is_a_clear_error(checkpoint: Path, tmp_path: Path) -> None:
    from mmembed.export import TensorRTUnavailableError

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here; this checks the message where it is not")
    request = ExportRequest(
        family=get_family("siglip2"),
        checkpoint=checkpoint,
        repository=tmp_path,
        runtime=Runtime.TENSORRT,
        precision=Precision.FP8,
    )
    steps: list[str] = []
    with pytest.raises(TensorRTUnavailableError, match="TensorRT Python package and a CUDA GPU"):
        export_model(request, log=steps.append)
    assert steps == []  # refused before reading the checkpoint, not after minutes of export
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing half-written
