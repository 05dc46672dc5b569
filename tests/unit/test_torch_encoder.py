"""The torch runtime's encoder: every precision is gated against fp32, and a precision that overflows is
refused, at export and (see the integration tests) at load. All of it runs on the CPU here."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import overflowing_checkpoint

from mmembed.core.contract import EncoderSpec
from mmembed.core.encoder_settings import EncoderSettings
from mmembed.core.numeric_gate import MIN_COSINE, PrecisionGateError, row_cosines
from mmembed.core.types import Precision, Runtime
from mmembed.export import ExportRequest, export_model
from mmembed.families import get_family
from mmembed.runtime.compiled_engine import (
    BUILD_FILE,
    PACKAGE_FILE,
    CompiledModule,
    EngineBuild,
    EngineMismatchError,
    compile_engine,
    load_engine,
)
from mmembed.runtime.fp8 import Fp8Linear
from mmembed.runtime.torch_encoder import batch_buckets, build_encoder, convert_precision

FAMILY = get_family("siglip2")
ENCODERS = ("vision", "text")


@pytest.fixture(scope="module")
def specs(checkpoint: Path) -> dict[str, EncoderSpec]:
    return {name: FAMILY.describe(checkpoint).encoder(name) for name in ENCODERS}


@pytest.fixture(scope="module")
def encoder_folders(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    modules = FAMILY.load_encoders(checkpoint)
    folders = {}
    for name in ENCODERS:
        folders[name] = tmp_path_factory.mktemp(f"encoder-{name}")
        FAMILY.save_encoder(name, modules[name], folders[name])
    return folders


def settings(spec: EncoderSpec, precision: str, **changes: object) -> EncoderSettings:
    fields: dict[str, object] = {"max_batch_size": 4, **changes}
    return EncoderSettings(spec=spec, runtime=Runtime.TORCH, precision=Precision(precision), **fields)  # type: ignore[arg-type]


def random_batch(spec: EncoderSpec, batch: int, seed: int) -> list[torch.Tensor]:
    return [torch.from_numpy(spec.random_inputs(batch, seed)[item.name]) for item in spec.inputs]


def test_buckets_cover_every_batch_size_up_to_the_maximum() -> None:
    assert batch_buckets(64) == (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
    assert batch_buckets(1) == (1,)
    for limit in (1, 10, 64, 256):
        buckets = batch_buckets(limit)
        assert buckets[-1] == limit and all(size <= limit for size in buckets)


def test_encoder_folder_reproduces_the_checkpoint_encoders(
    checkpoint: Path, encoder_folders: dict[str, Path], specs: dict[str, EncoderSpec]
) -> None:
    modules = FAMILY.load_encoders(checkpoint)
    for name in ENCODERS:
        inputs = random_batch(specs[name], 3, seed=7)
        with torch.no_grad():
            assert torch.equal(FAMILY.load_encoder(name, encoder_folders[name])(*inputs), modules[name](*inputs))


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16", "fp8"])
@pytest.mark.parametrize("name", ENCODERS)
def test_each_precision_passes_its_gate_and_matches_fp32(
    precision: str, name: str, encoder_folders: dict[str, Path], specs: dict[str, EncoderSpec]
) -> None:
    reference = FAMILY.load_encoder(name, encoder_folders[name])
    module = FAMILY.load_encoder(name, encoder_folders[name])
    # Fixed gate inputs: fp8 on this 64-wide random tower sits near its 0.99 gate (0.986-0.998 seen over
    # fresh inputs), so fresh ones would make the test flaky; served models always draw fresh inputs.
    encoder = build_encoder(module, settings(specs[name], precision), name=name, gate_seed=0)
    assert encoder.gate_report.min_cosine >= MIN_COSINE[precision]
    inputs = random_batch(specs[name], 10, seed=99)  # more than max_batch_size: run in chunks, order kept
    with torch.no_grad():
        expected = reference(*inputs).numpy()
    actual = encoder(inputs).numpy()
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    assert row_cosines(actual, expected).min() >= MIN_COSINE[precision]


def test_fp8_replaces_only_the_transformer_blocks_linear_layers(
    encoder_folders: dict[str, Path], specs: dict[str, EncoderSpec]
) -> None:
    module = FAMILY.load_encoder("vision", encoder_folders["vision"])
    encoder = build_encoder(module, settings(specs["vision"], "fp8"), name="v", gate_seed=0)
    fp8 = [name for name, child in encoder.module.named_modules() if isinstance(child, Fp8Linear)]
    # 2 layers x (fused qkv, out projection + 2 MLP layers); the pooling head keeps bf16
    assert len(fp8) == 8 and all(".encoder.layers." in name for name in fp8)
    assert not any("head" in name for name in fp8)
    patch_embedding = next(m for name, m in encoder.module.named_modules() if name.endswith("patch_embedding"))
    assert patch_embedding.weight.dtype == torch.bfloat16


def test_fp16_overflow_is_refused_at_export(checkpoint: Path, tmp_path: Path) -> None:
    tampered = overflowing_checkpoint(checkpoint, tmp_path / "checkpoint")
    repository = tmp_path / "repository"
    request = ExportRequest(
        family=FAMILY,
        checkpoint=tampered,
        repository=repository,
        runtime=Runtime.TORCH,
        precision=Precision.FP16,
        device="cpu",
    )
    with pytest.raises(PrecisionGateError, match=r"fp16: \d+ of \d+ outputs hold NaN or Inf"):
        export_model(request, log=lambda line: None)
    assert [p.name for p in repository.iterdir()] == []  # nothing half-written


@pytest.fixture(scope="module")
def compiled_vision(
    encoder_folders: dict[str, Path], specs: dict[str, EncoderSpec], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The vision encoder compiled ahead of time for batches 1 to 4, as export does it (fp32, this CPU)."""
    module = convert_precision(FAMILY.load_encoder("vision", encoder_folders["vision"]), "fp32", ".*")
    folder = tmp_path_factory.mktemp("compiled-vision")
    compile_engine(module, specs["vision"], "fp32", 4, folder)
    return folder


def test_compiled_encoder_is_gated_and_computes_what_eager_does_at_every_batch_size(
    encoder_folders: dict[str, Path], specs: dict[str, EncoderSpec], compiled_vision: Path
) -> None:
    """The package (AOTInductor, dynamic batch 1..4) runs what the eager module does, at batch sizes it was
    not traced with, a batch over its limit split; and it is what build_encoder gated and runs."""
    reference = FAMILY.load_encoder("vision", encoder_folders["vision"])
    module = FAMILY.load_encoder("vision", encoder_folders["vision"])
    compiled = settings(specs["vision"], "fp32", compile=True)
    encoder = build_encoder(module, compiled, name="v", gate_seed=0, engine=compiled_vision)
    assert isinstance(encoder.module, CompiledModule)
    assert encoder.gate_report.min_cosine >= MIN_COSINE["fp32"]
    for batch in (1, 3, 4, 7):
        inputs = random_batch(specs["vision"], batch, seed=batch)
        with torch.no_grad():
            expected = reference(*inputs).numpy()
        np.testing.assert_allclose(encoder(inputs).numpy(), expected, atol=1e-4)
    with pytest.raises(ValueError, match="no engine folder"):
        build_encoder(FAMILY.load_encoder("vision", encoder_folders["vision"]), compiled, name="v")


def test_the_package_holds_kernels_and_the_weights_come_from_the_encoder_folder(
    encoder_folders: dict[str, Path], specs: dict[str, EncoderSpec], compiled_vision: Path
) -> None:
    """Weights given at load are the ones used, so the repository does not hold them twice."""
    original = FAMILY.load_encoder("vision", encoder_folders["vision"])
    changed = FAMILY.load_encoder("vision", encoder_folders["vision"])
    with torch.no_grad():
        for parameter in changed.parameters():
            parameter.mul_(1.25)
    inputs = random_batch(specs["vision"], 2, seed=11)
    with torch.no_grad():
        served = load_engine(changed, compiled_vision, "fp32")(*inputs).numpy()
        expected, before = changed(*inputs).numpy(), original(*inputs).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-4)
    assert not np.allclose(served, before, atol=1e-3)
    assert EngineBuild.load(compiled_vision).bytes == (compiled_vision / PACKAGE_FILE).stat().st_size


def test_a_package_built_by_another_torch_or_for_another_device_is_refused(
    encoder_folders: dict[str, Path], compiled_vision: Path, tmp_path: Path
) -> None:
    """Never served silently: each mismatch names what built the package, what is here, and what to do."""
    copy = tmp_path / "compiled"
    shutil.copytree(compiled_vision, copy)
    module = FAMILY.load_encoder("vision", encoder_folders["vision"])
    build = EngineBuild.load(copy)
    other_torch = dataclasses.replace(build.target, torch_version="2.11.0+cu130")
    other_device = dataclasses.replace(build.target, device="NVIDIA H100 80GB HBM3 (sm_90)")
    cases = [
        (dataclasses.replace(build, target=other_torch), r"built with torch 2\.11\.0\+cu130 for cpu"),
        (
            dataclasses.replace(build, target=other_device),
            r"for NVIDIA H100 80GB HBM3 \(sm_90\) in fp32; this is .* on cpu",
        ),
        (dataclasses.replace(build, precision="bf16"), r"in bf16; this is .* in fp32"),
    ]
    for tampered, message in cases:
        tampered.save(copy)
        with pytest.raises(EngineMismatchError, match=message + r".*export again with --compile on this machine"):
            load_engine(module, copy, "fp32")
    (copy / BUILD_FILE).unlink()
    with pytest.raises(EngineMismatchError, match="no compiled encoder"):
        load_engine(module, copy, "fp32")


def test_token_lengths_that_vary_are_compiled_dynamic(jina_checkpoint: Path, tmp_path: Path) -> None:
    """JinaCLIP-v2's text encoder takes ids of any length up to its maximum: one package serves them all,
    and equals the eager module at each."""
    family = get_family("jinaclip2")
    spec = family.describe(jina_checkpoint).encoder("text")
    reference = family.load_encoders(jina_checkpoint)["text"].eval()
    compile_engine(reference, spec, "fp32", 4, tmp_path)
    compiled = load_engine(reference, tmp_path, "fp32")
    ids_spec = spec.inputs[0]
    for batch, length in ((1, 5), (3, 17), (4, ids_spec.item_shape[0])):
        ids = torch.randint(5, ids_spec.high, (batch, length))
        with torch.no_grad():
            np.testing.assert_allclose(compiled(ids).numpy(), reference(ids).numpy(), atol=1e-4)


def test_fp8_encoder_compiles_and_passes_its_gate(
    encoder_folders: dict[str, Path], specs: dict[str, EncoderSpec], tmp_path: Path
) -> None:
    """The fp8 variant (Fp8Linear's per-row scaling and scaled matmuls) exports and compiles as one graph."""
    spec = specs["vision"]
    served = convert_precision(FAMILY.load_encoder("vision", encoder_folders["vision"]), "fp8", spec.precision_scope)
    compile_engine(served, spec, "fp8", 4, tmp_path)
    module = FAMILY.load_encoder("vision", encoder_folders["vision"])
    encoder = build_encoder(module, settings(spec, "fp8", compile=True), name="v", gate_seed=0, engine=tmp_path)
    assert isinstance(encoder.module, CompiledModule) and encoder.gate_report.min_cosine >= MIN_COSINE["fp8"]
