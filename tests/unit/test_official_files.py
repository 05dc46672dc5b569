"""The official checkpoint files, loaded as they are.

The fixtures in ../shared/fixtures/official-configs are the hub's own small files (config, processor,
tokenizer config, special tokens). The loaders must read them unchanged: a key they need and the
official file lacks is a loader bug. `mmembed checkpoint` writes them byte for byte for the real sizes,
and for tiny with only the architecture numbers shrunk.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from family_settings import image_settings, text_settings
from transformers import SiglipConfig

from mmembed.core.contract import CheckpointError
from mmembed.core.preprocessing import PILLOW_CONVERT_DECODE, TRANSFORMERS_DECODE
from mmembed.families import get_family
from mmembed.families.fabricated_tokenizers import gemma_like_tokenizer, xlm_roberta_like_tokenizer
from mmembed.families.jinaclip2 import checkpoint as jina_files
from mmembed.families.jinaclip2.eva02 import Eva02Config
from mmembed.families.jinaclip2.layout import text_settings_of, vision_config
from mmembed.families.jinaclip2.text_tower import text_config
from mmembed.families.mm_embed import checkpoint as mm_embed_files
from mmembed.families.nvembed2 import checkpoint as nvembed_files
from mmembed.families.official import OFFICIAL
from mmembed.families.siglip2 import checkpoint as siglip_files

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "official-configs"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
# Keys whose values are sizes: the only ones a tiny checkpoint may change.
ARCHITECTURE_KEYS = {
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_hidden_layers",
    "projection_size",
    "projection_dim",
    "vocab_size",
    "image_size",
    "embed_dim",
    "width",
    "layers",
    "head_width",
    "matryoshka_dimensions",
    "size",
    "height",
    "max_position_embeddings",
    "num_key_value_heads",
    "num_latents_value",
    "num_cross_heads",
    "hidden_dim",
    "latent_dim",
    "cross_dim_head",
    "max_seq_length",
    "image_token_index",
    "model_max_length",
}


def test_the_fixtures_are_there() -> None:
    assert (FIXTURES / "PROVENANCE.md").is_file(), f"the team's official config fixtures are missing: {FIXTURES}"


@pytest.mark.parametrize("path", sorted(OFFICIAL.glob("*/*.json")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_packaged_files_are_the_fixtures_byte_for_byte(path: Path) -> None:
    assert path.read_bytes() == (FIXTURES / path.parent.name / path.name).read_bytes()


FILE_MAKERS = [(siglip_files, "so400m-512"), (jina_files, "full"), (nvembed_files, "full"), (mm_embed_files, "full")]


@pytest.mark.parametrize(("module", "size"), FILE_MAKERS)
def test_the_real_sizes_write_the_official_files(module: Any, size: str) -> None:
    folder = FIXTURES / module.MODEL_ID.replace("/", "__")
    files = module.official_files(size)
    assert set(files) == set(module.OFFICIAL_FILES) and "config.json" in files
    for name, data in files.items():
        assert data == (folder / name).read_bytes(), name


def _leaves(value: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(value, dict) and value and path[-1:] != ("added_tokens_decoder",):
        return {leaf: v for key, item in value.items() for leaf, v in _leaves(item, (*path, key)).items()}
    return {path: value}


@pytest.mark.parametrize(("module", "size"), FILE_MAKERS)
def test_tiny_changes_only_the_architecture_numbers(module: Any, size: str) -> None:
    official, tiny = module.official_files(size), module.official_files("tiny")
    for name in official:
        before, after = _leaves(json.loads(official[name])), _leaves(json.loads(tiny[name]))
        assert set(before) <= set(after), name  # every official key is kept, spelled the same
        for path, value in before.items():
            if path[-1] == "added_tokens_decoder":  # the same tokens; ids past the small vocabulary move
                contents = [token["content"] for _, token in sorted(value.items(), key=lambda item: int(item[0]))]
                kept = [token["content"] for _, token in sorted(after[path].items(), key=lambda item: int(item[0]))]
                assert kept == [content for content in contents if content in kept] and kept[:4] == contents[:4]
            elif path[-1] not in ARCHITECTURE_KEYS:
                assert after[path] == value, (name, path)


# --- the loaders read the official files unchanged ------------------------------------------------------


@pytest.fixture(scope="module")
def siglip_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer.json laid out like Gemma's 256,000-token one (the real file is 34 MB)."""
    config = json.loads((FIXTURES / "google__siglip2-so400m-patch16-512" / "tokenizer_config.json").read_text())
    path = tmp_path_factory.mktemp("gemma") / "tokenizer.json"
    gemma_like_tokenizer(256000, config["added_tokens_decoder"]).save(str(path))
    return path


def _official_folder(fixture: str, tokenizer: Path, destination: Path) -> Path:
    shutil.copytree(FIXTURES / fixture, destination)
    shutil.copyfile(tokenizer, destination / "tokenizer.json")
    return destination


@pytest.mark.parametrize(
    ("fixture", "side", "width"),
    [
        ("google__siglip2-base-patch16-224", 224, 768),
        ("google__siglip2-so400m-patch14-384", 384, 1152),
        ("google__siglip2-so400m-patch16-512", 512, 1152),
    ],
)
def test_siglip2_reads_the_official_files(
    fixture: str, side: int, width: int, siglip_tokenizer: Path, tmp_path: Path
) -> None:
    folder = _official_folder(fixture, siglip_tokenizer, tmp_path / "checkpoint")
    family = get_family("siglip2")
    image, text = image_settings(family, folder), text_settings(family, folder)
    assert (image.height, image.width, image.shortest_edge, image.resample) == (side, side, None, 2)
    assert image.image_mean == (0.5, 0.5, 0.5) and image.rescale_factor == pytest.approx(1 / 255)
    assert image.decode == TRANSFORMERS_DECODE
    assert (text.max_length, text.pad_token_id, text.lowercase, text.pad_to_longest) == (64, 0, True, False)
    config = SiglipConfig.from_dict(json.loads((folder / "config.json").read_text()))
    assert config.vision_config.hidden_size == width and config.vision_config.image_size == side
    spec = family.describe(folder)
    assert [e.modality for e in spec.ensembles] == ["image", "text"] and spec.matryoshka_dimensions == ()


@pytest.fixture(scope="module")
def jina_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer.json laid out like XLM-RoBERTa's 250,002-piece one."""
    config = json.loads((FIXTURES / "jinaai__jina-clip-v2" / "tokenizer_config.json").read_text())
    path = tmp_path_factory.mktemp("xlmr") / "tokenizer.json"
    xlm_roberta_like_tokenizer(250002, config["added_tokens_decoder"]).save(str(path))
    return path


@pytest.mark.parametrize("processor_file", ["preprocessor_config.json", "preprocessor_config.json.alt1"])
def test_jinaclip2_reads_the_official_files(processor_file: str, jina_tokenizer: Path, tmp_path: Path) -> None:
    """The official preprocessor config spells the normalisation `mean` / `std`, as JinaCLIPImageProcessor
    reads it: this file was refused before (the loader wanted image_mean / image_std)."""
    folder = _official_folder("jinaai__jina-clip-v2", jina_tokenizer, tmp_path / "checkpoint")
    if processor_file != "preprocessor_config.json":
        shutil.copyfile(folder / processor_file, folder / "preprocessor_config.json")
    family = get_family("jinaclip2")
    image, text = image_settings(family, folder), text_settings(family, folder)
    assert (image.height, image.width, image.shortest_edge, image.resample) == (512, 512, 512, 3)
    assert image.image_mean == OPENAI_CLIP_MEAN and image.image_std == (0.26862954, 0.26130258, 0.27577711)
    assert image.decode == PILLOW_CONVERT_DECODE
    assert (text.max_length, text.pad_token_id, text.lowercase, text.pad_to_longest) == (512, 1, False, True)
    assert text_settings(family, folder, "query").prefix == "Represent the query for retrieving evidence documents: "
    assert family.describe(folder).matryoshka_dimensions == (32, 64, 128, 256, 512, 768, 1024)
    config = json.loads((folder / "config.json").read_text())
    assert vision_config(config) == Eva02Config(
        image_size=512,
        patch_size=14,
        width=1024,
        layers=24,
        head_width=64,
        mlp_ratio=2.6667,
        pt_hw_seq_len=16,
        intp_freq=True,
    )
    text_model = text_config(text_settings_of(config))
    assert (text_model.vocab_size, text_model.hidden_size, text_model.num_hidden_layers) == (250002, 1024, 24)


def test_jinaclip2_refuses_a_mean_its_processor_would_ignore(jina_tokenizer: Path, tmp_path: Path) -> None:
    folder = _official_folder("jinaai__jina-clip-v2", jina_tokenizer, tmp_path / "checkpoint")
    config = json.loads((folder / "preprocessor_config.json").read_text())
    del config["mean"]
    config["image_mean"] = [0.5, 0.5, 0.5]
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"image_mean \[0\.5, 0\.5, 0\.5\], which JinaCLIPImageProcessor ignores"):
        image_settings(get_family("jinaclip2"), folder)
