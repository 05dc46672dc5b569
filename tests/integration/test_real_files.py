"""Files nobody on the team made, through the real server.

Every file of a corpus covering every format Pillow registers (valid, truncated, cut after the header,
overwritten in the middle, oversized, impostors) comes back as a unit vector or as a clean
INVALID_ARGUMENT naming the caller's item, exactly as the model's preprocessing decides on this machine;
the server stays ready. And each family embeds odd files (transparency, EXIF orientation, 16-bit, CMYK,
layers, frames) as its own reference pipeline does: transformers' `load_image` for SigLIP-2, the official
`Image.open(...).convert("RGB")` for JinaCLIP-v2.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import JINA_MODEL, JINA_TORCH_MODEL, MODEL, TORCH_MODEL
from image_files import BROKEN_VARIANTS, UNDECODABLE, format_corpus, odd_files
from jina_reference import JinaReference, official_image_pixels
from transformers import AutoProcessor, SiglipModel
from transformers.image_utils import load_image

from mmembed.client import ClientOptions, EmbeddingClient
from mmembed.core.numeric_gate import MIN_COSINE, row_cosines
from mmembed.core.preprocessing import SETTINGS_FILE, ImageSettings, InvalidInputError, image_pixels
from mmembed.serving.server import TritonServer

CORPUS = format_corpus()
NAMES = sorted(CORPUS)
ODD = odd_files()


def _local_outcome(settings: ImageSettings) -> dict[str, str | None]:
    """Each file's error message from the model's own preprocessing run here, or None if it decodes."""
    outcome: dict[str, str | None] = {}
    for name in NAMES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image_pixels(CORPUS[name], settings)
            outcome[name] = None
        except InvalidInputError as e:
            outcome[name] = str(e)
    return outcome


@pytest.mark.parametrize("model", [MODEL, JINA_MODEL, TORCH_MODEL])  # Pillow, Pillow + crop, torch preprocessing
def test_every_format_is_embedded_or_refused_cleanly(server: TritonServer, model: str) -> None:
    folder = server.settings.repository / f"{model}_image_preprocess" / "1"
    expected = _local_outcome(ImageSettings.from_json((folder / SETTINGS_FILE).read_text()))
    with EmbeddingClient(server.grpc_url, ClientOptions(timeout_s=600)) as client:
        partial = client.embed_images(model, [CORPUS[name] for name in NAMES], on_error="skip")
    failed = {NAMES[index]: str(error) for index, error in partial.errors.items()}
    assert {name for name, message in expected.items() if message} == set(failed)
    for index, error in partial.errors.items():
        assert error.index == index and str(error) == f"item {index}: {expected[NAMES[index]]}"
    valid = {name for name in NAMES if not name.endswith(BROKEN_VARIANTS)}
    assert set(failed) & valid == set(UNDECODABLE)
    assert len(partial.indexes) >= len(valid) - len(UNDECODABLE)  # every other valid file is embedded
    np.testing.assert_allclose(np.linalg.norm(partial.embeddings, axis=1), 1.0, atol=1e-3)
    assert {f"{model}_image", f"{model}_text"} <= set(server.ready_models())


def _siglip_reference(checkpoint: Path, files: list[bytes], tmp_path: Path) -> np.ndarray:
    """transformers end to end: `load_image(path)`, the checkpoint's processor, SiglipModel."""
    model, processor = SiglipModel.from_pretrained(checkpoint).eval(), AutoProcessor.from_pretrained(checkpoint)
    images = []
    for index, data in enumerate(files):
        path = tmp_path / f"file-{index}"
        path.write_bytes(data)
        images.append(load_image(str(path)))
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        features = model.get_image_features(pixel_values=pixels).pooler_output
    return torch.nn.functional.normalize(features, dim=-1).numpy()


def _jina_reference(checkpoint: Path, files: list[bytes]) -> np.ndarray:
    """The official encode_image's decoding and transform, then the independent forward pass."""
    pixels = torch.from_numpy(np.stack([official_image_pixels(data, checkpoint) for data in files]))
    with torch.no_grad():
        features = JinaReference(checkpoint).image(pixels)
    return torch.nn.functional.normalize(features, dim=-1).numpy()


@pytest.mark.parametrize(("model", "precision"), [(MODEL, "fp32"), (TORCH_MODEL, "bf16")])
def test_siglip2_embeds_odd_files_as_transformers_does(
    client: EmbeddingClient, checkpoint: Path, tmp_path: Path, model: str, precision: str
) -> None:
    names = sorted(ODD)
    served = client.embed_images(model, [ODD[name] for name in names])
    expected = _siglip_reference(checkpoint, [ODD[name] for name in names], tmp_path)
    cosines = row_cosines(served, expected)
    print(f"{model} odd files vs transformers: min cosine {cosines.min():.8f} ({names[int(cosines.argmin())]})")
    assert cosines.min() >= MIN_COSINE[precision], dict(zip(names, cosines.round(5).tolist(), strict=True))


@pytest.mark.parametrize(("model", "precision"), [(JINA_MODEL, "fp32"), (JINA_TORCH_MODEL, "bf16")])
def test_jinaclip2_embeds_odd_files_as_its_official_code_does(
    client: EmbeddingClient, jina_checkpoint: Path, model: str, precision: str
) -> None:
    names = sorted(ODD)
    served = client.embed_images(model, [ODD[name] for name in names])
    expected = _jina_reference(jina_checkpoint, [ODD[name] for name in names])
    cosines = row_cosines(served, expected)
    print(f"{model} odd files vs the official pipeline: min cosine {cosines.min():.8f}")
    assert cosines.min() >= MIN_COSINE[precision], dict(zip(names, cosines.round(5).tolist(), strict=True))
