"""The torch runtime's encoder: every precision is gated against fp32, and a precision that overflows is
refused, at export and (see the integration tests) at load. All of it runs on the CPU here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import overflowing_checkpoint
from mmembed.export import ExportRequest, Precision, Runtime, export_model

from mmembed.families import get_family
from mmembed.families.base import TowerSpec
from mmembed.fp8 import Fp8Linear
from mmembed.numeric_gate import MIN_COSINE, PrecisionGateError, row_cosines
from mmembed.torch_encoder import EncoderOptions, batch_buckets, build_encoder

FAMILY = get_family("siglip2")
PIXELS = TowerSpec(input_name="pixel_values", input_dtype=torch.float32, item_shape=(3, 64, 64), output_name="e")
IDS = TowerSpec(input_name="input_ids", input_dtype=torch.int64, item_shape=(64,), output_name="e", high=1024)


@pytest.fixture(scope="module")
def tower_folders(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    towers = FAMILY.load_towers(checkpoint)
    folders = {}
    for modality in ("image", "text"):
        folders[modality] = tmp_path_factory.mktemp(f"tower-{modality}")
        FAMILY.save_tower(towers, modality, folders[modality])  # type: ignore[arg-type]
    return folders


def test_buckets_cover_every_batch_size_up_to_the_maximum() -> None:
    assert batch_buckets(64) == (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
    assert batch_buckets(1) == (1,)
    for limit in (1, 10, 64, 256):
        buckets = batch_buckets(limit)
        assert buckets[-1] == limit and all(size <= limit for size in buckets)


def test_tower_folder_reproduces_the_checkpoint_towers(checkpoint: Path, tower_folders: dict[str, Path]) -> None:
    towers = FAMILY.load_towers(checkpoint)
    pixels, ids = PIXELS.random_input(3, seed=7), IDS.random_input(3, seed=7)
    with torch.no_grad():
        assert torch.equal(FAMILY.load_tower(tower_folders["image"], "image")(pixels), towers.vision(pixels))
        assert torch.equal(FAMILY.load_tower(tower_folders["text"], "text")(ids), towers.text(ids))


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16", "fp8"])
@pytest.mark.parametrize("modality", ["image", "text"])
def test_each_precision_passes_its_gate_and_matches_fp32(
    precision: str, modality: str, tower_folders: dict[str, Path]
) -> None:
    spec = PIXELS if modality == "image" else IDS
    reference = FAMILY.load_tower(tower_folders[modality], modality)  # type: ignore[arg-type]
    tower = FAMILY.load_tower(tower_folders[modality], modality)  # type: ignore[arg-type]
    # Fixed gate inputs: fp8 on this 64-wide random tower sits near its 0.99 gate (0.986-0.998 seen over
    # fresh inputs), so fresh ones would make the test flaky; served models always draw fresh inputs.
    options = EncoderOptions(precision=precision, max_batch_size=4, gate_seed=0)
    encoder = build_encoder(tower, spec, options, name=modality, fp8_scope=FAMILY.fp8_scope)
    assert encoder.gate_report.min_cosine >= MIN_COSINE[precision]
    inputs = spec.random_input(10, seed=99)  # more than max_batch_size: run in chunks, order kept
    with torch.no_grad():
        expected = reference(inputs).numpy()
    actual = encoder(inputs).numpy()
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    assert row_cosines(actual, expected).min() >= MIN_COSINE[precision]


def test_fp8_replaces_only_the_transformer_blocks_linear_layers(tower_folders: dict[str, Path]) -> None:
    tower = FAMILY.load_tower(tower_folders["image"], "image")
    options = EncoderOptions(precision="fp8", gate_seed=0)
    encoder = build_encoder(tower, PIXELS, options, name="v", fp8_scope=FAMILY.fp8_scope)
    fp8 = [name for name, module in encoder.tower.named_modules() if isinstance(module, Fp8Linear)]
    # 2 layers x (q, k, v, out projections + 2 MLP layers); the pooling head keeps bf16
    assert len(fp8) == 12 and all(".encoder.layers." in name for name in fp8)
    assert not any("head" in name for name in fp8)
    patch_embedding = next(m for name, m in encoder.tower.named_modules() if name.endswith("patch_embedding"))
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


def test_compiled_tower_passes_the_gate_and_matches_eager(tower_folders: dict[str, Path]) -> None:
    """torch.compile (inductor, dynamic batch) computes what the eager tower does, at batch sizes other
    than the one it was first compiled for."""
    reference = FAMILY.load_tower(tower_folders["image"], "image")
    tower = FAMILY.load_tower(tower_folders["image"], "image")
    options = EncoderOptions(precision="fp32", compile=True, gate_seed=0)
    encoder = build_encoder(tower, PIXELS, options, name="v", fp8_scope=FAMILY.fp8_scope)
    assert encoder.gate_report.min_cosine >= MIN_COSINE["fp32"]
    for batch in (1, 5):
        inputs = PIXELS.random_input(batch, seed=batch)
        with torch.no_grad():
            expected = reference(inputs).numpy()
        np.testing.assert_allclose(encoder(inputs).numpy(), expected, atol=1e-4)
