"""JinaCLIP-v2 without a server: the official-layout loader, LoRA merge, preprocessing, tokenizer, gates."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from family_settings import image_settings, text_settings
from image_files import photo
from jina_reference import JinaReference, official_transform
from PIL import Image
from safetensors.torch import load_file, save_file

from mmembed.client import _triton
from mmembed.client._errors import InvalidInputError as ClientInputError
from mmembed.client._types import ModelInfo
from mmembed.core.contract import CheckpointError
from mmembed.core.encoder_settings import EncoderSettings
from mmembed.core.numeric_gate import row_cosines
from mmembed.core.preprocessing import InvalidInputError, TextTokenizer, preprocess_image
from mmembed.core.types import Precision, Runtime
from mmembed.families import get_family
from mmembed.runtime.fp8 import Fp8Linear
from mmembed.runtime.torch_encoder import build_encoder

FAMILY = get_family("jinaclip2")


def _pixels(checkpoint: Path, count: int = 3) -> torch.Tensor:
    settings = image_settings(FAMILY, checkpoint)
    images = [photo(160 + 13 * i, 120, seed=i) for i in range(count)]
    return torch.from_numpy(np.stack([preprocess_image(image, settings) for image in images]))


def _ids(checkpoint: Path, texts: list[str], *, full_length: bool = False) -> torch.Tensor:
    settings = text_settings(FAMILY, checkpoint)
    if full_length:
        settings = replace(settings, pad_to_longest=False)
    return torch.from_numpy(TextTokenizer(settings, checkpoint)(texts))


TEXTS = ["a photo of a cat", "一只猫的照片", "صورة قطة", "एक बिल्ली की तस्वीर", "🐱🐶 cat and dog"]


def test_loaded_towers_match_an_independent_forward_on_the_official_weights(jina_checkpoint: Path) -> None:
    reference = JinaReference(jina_checkpoint)
    towers = FAMILY.load_encoders(jina_checkpoint)
    pixels, ids = _pixels(jina_checkpoint), _ids(jina_checkpoint, TEXTS)
    with torch.no_grad():
        image_cosines = row_cosines(towers["vision"](pixels).numpy(), reference.image(pixels).numpy())
        text_cosines = row_cosines(towers["text"](ids).numpy(), reference.text(ids).numpy())
    assert image_cosines.min() >= 0.9999 and text_cosines.min() >= 0.9999


def test_the_lora_adapter_is_merged_not_dropped(jina_checkpoint: Path, tmp_path: Path) -> None:
    """With the LoRA factors zeroed the text embedding moves: the merge has a visible effect."""
    folder = tmp_path / "no-lora"
    shutil.copytree(jina_checkpoint, folder)
    state = load_file(str(folder / "model.safetensors"))
    zeroed = {k: torch.zeros_like(v) if k.endswith("lora_B") else v for k, v in state.items()}
    save_file(zeroed, str(folder / "model.safetensors"))
    ids = _ids(jina_checkpoint, TEXTS)
    with torch.no_grad():
        merged = FAMILY.load_encoders(jina_checkpoint)["text"](ids).numpy()
        plain = FAMILY.load_encoders(folder)["text"](ids).numpy()
    assert row_cosines(merged, plain).max() < 0.99


def _with_state(checkpoint: Path, folder: Path, change: dict[str, torch.Tensor | None]) -> Path:
    shutil.copytree(checkpoint, folder)
    state = load_file(str(folder / "model.safetensors"))
    for key, value in change.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    save_file(state, str(folder / "model.safetensors"))
    return folder


def test_unknown_keys_are_an_error(jina_checkpoint: Path, tmp_path: Path) -> None:
    key = "vision_model.blocks.0.attn.relative_position_bias_table"
    folder = _with_state(jina_checkpoint, tmp_path / "c", {key: torch.zeros(10, 4)})
    with pytest.raises(CheckpointError, match=r"vision_model: 1 unknown keys, e\.g\. blocks\.0\.attn\.relative_"):
        FAMILY.load_encoders(folder)


def test_a_vision_head_in_the_checkpoint_is_applied(jina_checkpoint: Path, tmp_path: Path) -> None:
    """EVA-CLIP builds a Linear head when asked for classes; the published config implies none, but a
    checkpoint that has one gets it, and one that maps to another width than the text is refused."""
    generator = torch.Generator().manual_seed(3)
    head = {
        "vision_model.head.weight": torch.randn(64, 64, generator=generator) / 8,
        "vision_model.head.bias": torch.randn(64, generator=generator),
    }
    folder = _with_state(jina_checkpoint, tmp_path / "head", head)
    pixels = _pixels(jina_checkpoint)
    with torch.no_grad():
        served = FAMILY.load_encoders(folder)["vision"](pixels).numpy()
        plain = FAMILY.load_encoders(jina_checkpoint)["vision"](pixels).numpy()
        expected = JinaReference(folder).image(pixels).numpy()
    assert row_cosines(served, expected).min() >= 0.9999 and row_cosines(served, plain).max() < 0.99
    narrow = _with_state(jina_checkpoint, tmp_path / "narrow", {"vision_model.head.weight": torch.zeros(32, 64)})
    with pytest.raises(CheckpointError, match="image embeddings are 32-d but text embeddings 64-d"):
        FAMILY.load_encoders(narrow)


def test_missing_keys_are_an_error(jina_checkpoint: Path, tmp_path: Path) -> None:
    key = "text_model.transformer.roberta.encoder.layers.1.norm2.bias"
    folder = _with_state(jina_checkpoint, tmp_path / "c", {key: None})
    with pytest.raises(CheckpointError, match=r"text_model: 1 weights missing.*layers\.1\.post_mlp_layernorm\.bias"):
        FAMILY.load_encoders(folder)


def test_lora_factors_without_their_weight_are_an_error(jina_checkpoint: Path, tmp_path: Path) -> None:
    key = "text_model.transformer.roberta.encoder.layers.0.mlp.fc1.parametrizations.weight.original"
    folder = _with_state(jina_checkpoint, tmp_path / "c", {key: None})
    with pytest.raises(CheckpointError, match="LoRA factors without a weight"):
        FAMILY.load_encoders(folder)


def test_saved_rotary_tables_are_checked(jina_checkpoint: Path, tmp_path: Path) -> None:
    """Some EVA-CLIP versions save their RoPE tables; ours must equal them, else the layout differs."""
    from mmembed.families.jinaclip2.eva02 import rotary_tables

    cos, sin = rotary_tables(FAMILY.load_encoders(jina_checkpoint)["vision"].config)  # type: ignore[attr-defined]
    same = _with_state(jina_checkpoint, tmp_path / "same", {"vision_model.rope.freqs_cos": cos.clone()})
    FAMILY.load_encoders(same)
    swapped = _with_state(jina_checkpoint, tmp_path / "swapped", {"vision_model.rope.freqs_sin": cos.clone()})
    with pytest.raises(CheckpointError, match=r"rope\.freqs_sin differs"):
        FAMILY.load_encoders(swapped)
    assert not torch.equal(cos, sin)


def test_unsupported_variants_are_refused(jina_checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "c"
    shutil.copytree(jina_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"]["subln"] = False
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="subln=False is not supported"):
        FAMILY.load_encoders(folder)


def test_text_settings_default_to_the_jina_embeddings_v3_base(jina_checkpoint: Path, tmp_path: Path) -> None:
    """The official model takes its text architecture from jina-embeddings-v3's config, updated with
    `hf_model_config_kwargs`; a setting the folder leaves out takes that base value, and the weights'
    shapes then say whether it fits."""
    folder = tmp_path / "c"
    shutil.copytree(jina_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    del config["text_config"]["hf_model_config_kwargs"]["hidden_size"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError,
        match=r"text_model: \d+ weights do not fit the config, e\.g\. .* \(64,\), the config implies \(1024,\)",
    ):
        FAMILY.load_encoders(folder)


def test_sharded_checkpoints_load_the_same(jina_checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "sharded"
    shutil.copytree(jina_checkpoint, folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(folder / shard))
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    ids = _ids(jina_checkpoint, TEXTS)
    with torch.no_grad():
        expected = FAMILY.load_encoders(jina_checkpoint)["text"](ids)
        actual = FAMILY.load_encoders(folder)["text"](ids)
    assert torch.equal(expected, actual)


def test_tower_folders_round_trip(jina_checkpoint: Path, tmp_path: Path) -> None:
    """What the torch runtime serves from: each tower alone, LoRA already merged."""
    towers = FAMILY.load_encoders(jina_checkpoint)
    pixels, ids = _pixels(jina_checkpoint), _ids(jina_checkpoint, TEXTS)
    FAMILY.save_encoder("vision", towers["vision"], tmp_path / "vision")
    FAMILY.save_encoder("text", towers["text"], tmp_path / "text")
    with torch.no_grad():
        assert torch.equal(FAMILY.load_encoder("vision", tmp_path / "vision")(pixels), towers["vision"](pixels))
        assert torch.equal(FAMILY.load_encoder("text", tmp_path / "text")(ids), towers["text"](ids))


def test_preprocessing_matches_the_official_transform(jina_checkpoint: Path) -> None:
    """Shortest side resized bicubic, centre crop, mean/std from preprocessor_config.json."""
    processor = official_transform(jina_checkpoint)
    settings = image_settings(FAMILY, jina_checkpoint)
    for width, height in [(160, 120), (120, 160), (300, 58), (56, 56), (1000, 700)]:
        image = photo(width, height, seed=width)
        expected = processor(images=image, return_tensors="np")["pixel_values"][0]
        np.testing.assert_allclose(preprocess_image(image, settings), expected, atol=1e-5)


def test_centre_crop_rounds_half_offsets_as_torchvision(jina_checkpoint: Path) -> None:
    """A 75-wide resize cropped to 56 leaves 19 columns: torchvision starts at round(9.5) = 10."""
    settings = image_settings(FAMILY, jina_checkpoint)
    columns = np.tile(np.arange(150, dtype=np.uint8), (112, 1))  # 150x112 -> resized 75x56
    image = Image.fromarray(np.stack([columns] * 3, axis=-1))
    pixels = preprocess_image(image, settings)
    resized = np.asarray(image.resize((75, 56), resample=Image.Resampling.BICUBIC), dtype=np.float32)
    mean, std = np.float32(settings.image_mean[0]), np.float32(settings.image_std[0])  # type: ignore[index]
    expected = (resized[:, 10:66, 0] / np.float32(255) - mean) / std
    np.testing.assert_allclose(pixels[0], expected, atol=1e-5)


def test_extreme_aspect_ratios_fail_with_a_clear_error(jina_checkpoint: Path) -> None:
    with pytest.raises(InvalidInputError, match="aspect ratio over 64:1"):
        preprocess_image(Image.new("RGB", (10_000, 10)), image_settings(FAMILY, jina_checkpoint))


def test_tokenizer_handles_many_scripts_and_truncates_keeping_the_end_token(jina_checkpoint: Path) -> None:
    settings = text_settings(FAMILY, jina_checkpoint)
    ids = _ids(jina_checkpoint, [*TEXTS, "cat " * 500])
    assert settings.max_length == 64 and ids.shape == (len(TEXTS) + 1, 64)
    assert (ids[:, 0] == 0).all()  # <s>
    real = ids[:-1][ids[:-1] != settings.pad_token_id]
    assert (real != 3).float().mean() > 0.8  # mostly known pieces, not <unk>
    assert ids[-1, -1] == 2  # a truncated text still ends with </s>


def test_requests_are_padded_to_their_longest_text_in_power_of_two_steps(jina_checkpoint: Path) -> None:
    """Padding is masked out, so it is cut to what each request needs: 16, 32 or 64 positions here."""
    settings = text_settings(FAMILY, jina_checkpoint)
    assert settings.pad_to_longest
    assert _ids(jina_checkpoint, ["a cat"]).shape == (1, 16)
    assert _ids(jina_checkpoint, ["a cat", "cat " * 10]).shape == (2, 32)
    assert _ids(jina_checkpoint, ["cat " * 500]).shape == (1, 64)
    short, full = _ids(jina_checkpoint, TEXTS), _ids(jina_checkpoint, TEXTS, full_length=True)
    assert torch.equal(full[:, : short.shape[1]], short) and (full[:, short.shape[1] :] == 1).all()
    tower = FAMILY.load_encoders(jina_checkpoint)["text"]
    with torch.no_grad():
        assert row_cosines(tower(short).numpy(), tower(full).numpy()).min() >= 0.99999


def test_query_instruction_comes_from_the_config(jina_checkpoint: Path, checkpoint: Path) -> None:
    query = text_settings(FAMILY, jina_checkpoint, "query")
    assert query.prefix == "Represent the query for retrieving evidence documents: "
    assert query == replace(text_settings(FAMILY, jina_checkpoint), prefix=query.prefix)
    assert "query" not in {ensemble.modality for ensemble in get_family("siglip2").describe(checkpoint).ensembles}


def _info(dimensions: tuple[int, ...]) -> ModelInfo:
    return ModelInfo(
        name="m",
        family="jinaclip2",
        dimension=64,
        modalities=("image", "query", "text"),
        image_size=(56, 56),
        max_text_length=64,
        runtime="onnxruntime-cpu",
        precision="fp32",
        matryoshka_dimensions=dimensions,
    )


def test_matryoshka_truncation_is_the_renormalised_prefix() -> None:
    rng = np.random.default_rng(0)
    full = rng.normal(size=(5, 64)).astype(np.float32)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    short = _triton.truncate(full, 16)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-6)
    scale = np.linalg.norm(full[:, :16], axis=1, keepdims=True)
    np.testing.assert_allclose(short * scale, full[:, :16], atol=1e-6)
    assert _triton.truncate(full, None) is full


def test_unsupported_dimensions_are_refused_with_the_supported_sizes() -> None:
    _triton.check_dimensions(_info((16, 32, 64)), 32)
    _triton.check_dimensions(_info(()), 64)
    with pytest.raises(ClientInputError, match="supports dimensions 16, 32, 64, not 17"):
        _triton.check_dimensions(_info((16, 32, 64)), 17)
    with pytest.raises(ClientInputError, match="supports dimensions 64, not 32"):
        _triton.check_dimensions(_info(()), 32)


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_reduced_precision_towers_pass_their_gates(jina_checkpoint: Path, precision: str) -> None:
    """The torch runtime's gate on the CPU: bf16 >= 0.999 and fp8 (transformer blocks only) >= 0.99."""
    towers = FAMILY.load_encoders(jina_checkpoint)
    spec = FAMILY.describe(jina_checkpoint)
    real = {
        "vision": {"pixel_values": _pixels(jina_checkpoint).numpy()},
        "text": {"input_ids": _ids(jina_checkpoint, TEXTS, full_length=True).numpy()},
    }
    for name, inputs in real.items():
        settings = EncoderSettings(
            spec=spec.encoder(name), runtime=Runtime.TORCH, precision=Precision(precision), max_batch_size=8
        )
        encoder = build_encoder(towers[name], settings, name=f"jina {name}", real_inputs=inputs, gate_seed=0)
        assert encoder.gate_report.min_cosine >= (0.999 if precision == "bf16" else 0.99)
        if precision == "fp8":  # the transformer blocks' Linears, not the patch embedding or norms
            assert any(isinstance(m, Fp8Linear) for m in encoder.module.modules())
