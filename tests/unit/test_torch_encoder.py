"""The torch runtime's encoder: every precision is gated against fp32, and a precision that overflows is
refused, at export and (see the integration tests) at load. All of it runs on the CPU here."""

from __future__ import annotations

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
from mmembed.runtime.fp8 import Fp8Linear
from mmembed.runtime.torch_encoder import batch_buckets, build_encoder

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
    # 2 layers x (q, k, v, out projections + 2 MLP layers); the pooling head keeps bf16
    assert len(fp8) == 12 and all(".encoder.layers." in name for name in fp8)
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


def test_compiled_encoder_passes_the_gate_and_matches_eager(
    encoder_folders: dict[str, Path], specs: dict[str, EncoderSpec]
) -> None:
    """torch.compile (inductor, dynamic batch) computes what the eager module does, at batch sizes other
    than the one it was first compiled for."""
    reference = FAMILY.load_encoder("vision", encoder_folders["vision"])
    module = FAMILY.load_encoder("vision", encoder_folders["vision"])
    encoder = build_encoder(module, settings(specs["vision"], "fp32", compile=True), name="v", gate_seed=0)
    assert encoder.gate_report.min_cosine >= MIN_COSINE["fp32"]
    for batch in (1, 5):
        inputs = random_batch(specs["vision"], batch, seed=batch)
        with torch.no_grad():
            expected = reference(*inputs).numpy()
        np.testing.assert_allclose(encoder(inputs).numpy(), expected, atol=1e-4)
