"""MM-Embed without a server: the declaration, the retriever indirection, prompts and pool masks, the
splice, both encoders against an independent reference forward, the strict loader, the published size."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from nvembed_reference import ReferenceMMEmbed
from PIL import Image

from mmembed.core.contract import CheckpointError, ImageTextStep, TextStep
from mmembed.core.preprocessing import TextTokenizer, image_pixels
from mmembed.core.sample_images import synthetic_jpeg
from mmembed.families.mm_embed import FAMILY
from mmembed.families.mm_embed.checkpoint import official_files
from mmembed.families.mm_embed.encoder import MMEmbedEncoder, splice
from mmembed.families.mm_embed.layout import read_config
from mmembed.families.nvembed2 import checkpoint as nvembed_files
from mmembed.families.nvembed2.encoder import NVEmbedTextEncoder
from mmembed.families.nvembed2.layout import nvembed_config

TEXTS = ["a cat on a red car", "", "two dogs in the city at night " * 3]
TASK = "Retrieve images that match the description"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mm_embed")
    FAMILY.make_checkpoint("tiny", folder)
    return folder


@pytest.fixture(scope="module")
def encoders(checkpoint: Path) -> dict[str, torch.nn.Module]:
    return FAMILY.load_encoders(checkpoint)


def test_the_declaration(checkpoint: Path) -> None:
    spec = FAMILY.describe(checkpoint)
    spec.check()
    ensembles = {e.modality: e for e in spec.ensembles}
    assert {m: (e.encoder, e.inputs, e.optional_inputs) for m, e in ensembles.items()} == {
        "text": ("text", ("TEXT",), ()),
        "query": ("text", ("TEXT",), ("INSTRUCTION",)),
        "image": ("multimodal", ("IMAGE",), ("TEXT",)),
        "image_query": ("multimodal", ("IMAGE",), ("TEXT", "INSTRUCTION")),
    }
    step = ensembles["image_query"].steps[0]
    assert isinstance(step, ImageTextStep) and step.image_prompt == "<image>\n"
    assert (step.image.height, step.image.width, step.image.resample) == (56, 56, 3)  # squashed, bicubic
    assert step.image.shortest_edge is None and step.text.prefix == "Query: " and step.text.max_length == 512


def test_the_decoder_comes_from_the_retriever_config_not_text_config(checkpoint: Path) -> None:
    config = read_config(checkpoint)
    own = json.loads((checkpoint / "config.json").read_text())["text_config"]
    assert own["vocab_size"] == 32064 and own["rope_theta"] == 1e6  # MM-Embed's own, ignored as in the reference
    assert config.retriever.vocab_size == 1000 and config.retriever.text_config["rope_theta"] == 1e4


def test_a_missing_retriever_config_says_where_to_put_it(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    folder = shutil.copytree(checkpoint, tmp_path / "no-retriever")
    shutil.rmtree(folder / "retriever")
    with pytest.raises(CheckpointError, match=r"nvidia/NV-Embed-v1's config.json(.|\n)*huggingface-cli download"):
        FAMILY.describe(folder)


def _encode(checkpoint: Path, modality: str, texts: list[str], task: str | None) -> dict[str, np.ndarray]:
    (step,) = next(e for e in FAMILY.describe(checkpoint).ensembles if e.modality == modality).steps
    if isinstance(step, TextStep):
        return TextTokenizer(step.settings, checkpoint).encode(texts, [task] * len(texts))
    assert isinstance(step, ImageTextStep)
    prompts = [step.image_prompt + text for text in texts]
    return TextTokenizer(step.text, checkpoint).encode(prompts, [task] * len(texts))


def test_pool_masks_hide_bos_the_instruction_and_its_newline_only_with_a_task(checkpoint: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    with_task = _encode(checkpoint, "query", ["judo"], TASK)
    counted = len(tokenizer.encode(f"Instruct: {TASK}").ids)  # BOS and EOS included, as the reference counts
    assert tokenizer.encode(f"Instruct: {TASK}").tokens[-1] == "</s>"
    assert int(np.argmax(with_task["pool_mask"][0] != 0)) == counted  # leading positions hidden
    for modality, task in (("query", None), ("text", None), ("image", None), ("image_query", None)):
        encoded = _encode(checkpoint, modality, ["judo"], task)
        assert np.array_equal(encoded["pool_mask"], encoded["attention_mask"]), modality
    prompt = tokenizer.encode("Query: <image>\njudo").tokens
    assert prompt[0] == "<s>" and "<image>" in prompt and prompt[-1] == "</s>"


def test_splice_puts_the_image_where_its_token_stands_and_counts_the_hidden_positions_merged() -> None:
    torch.manual_seed(0)
    text, image = torch.randn(2, 6, 4), torch.randn(2, 3, 4)
    attention = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    pool = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 0, 0]])  # row 0 hides past the image at position 2
    positions = torch.tensor([2, 1])
    merged, merged_attention, merged_pool = splice(text, image, positions, attention, pool)
    for row in range(2):
        p = int(positions[row])
        expected = torch.cat([text[row, :p], image[row], text[row, p + 1 :]])
        assert torch.equal(merged[row], expected)
    assert merged_attention.tolist() == [[1] * 8, [1, 1, 1, 1, 1, 1, 0, 0]]
    assert merged_pool.tolist() == [[0, 0, 0, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 0, 0]]


CASES = [
    ("text", None, False),
    ("query", None, True),
    ("query", TASK, True),
    ("image", None, False),
    ("image_query", None, True),
    ("image_query", TASK, True),
]


@pytest.mark.parametrize(("modality", "task", "query"), CASES)
def test_the_encoders_match_an_independent_reference_forward(
    checkpoint: Path, encoders: dict[str, torch.nn.Module], modality: str, task: str | None, query: bool
) -> None:
    photos = [synthetic_jpeg(100, 80, seed=seed) for seed in range(len(TEXTS))]
    texts = TEXTS if task is None or modality != "query" else [t for t in TEXTS if t]  # an empty one: nothing left
    encoded = _encode(checkpoint, modality, texts, task)
    tokens = [torch.from_numpy(encoded[n]) for n in ("input_ids", "attention_mask", "pool_mask")]
    with torch.no_grad():
        if modality in ("text", "query"):
            raw = encoders["text"](*tokens)
            items = [(None, text) for text in texts]
        else:
            image = FAMILY.describe(checkpoint).ensembles[2].steps[0].image  # type: ignore[union-attr]
            pixels = torch.from_numpy(np.stack([image_pixels(photo, image) for photo in photos]))
            raw = encoders["multimodal"](pixels, *tokens)
            items = [(Image.open(io.BytesIO(photo)), text) for photo, text in zip(photos, texts, strict=True)]
    served = torch.nn.functional.normalize(raw, dim=-1).numpy()
    expected = ReferenceMMEmbed(checkpoint).embed_items(items, query, task)
    assert (served * expected).sum(axis=1).min() >= 0.9999
    assert np.abs(served - expected).max() < 1e-5


def test_the_loader_refuses_a_checkpoint_without_its_vision_tower(checkpoint: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(checkpoint, tmp_path / "changed")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    name = "vision_tower.vision_model.post_layernorm.weight"
    file = index["weight_map"].pop(name)
    tensors = load_file(str(folder / file))
    del tensors[name]
    save_file(tensors, str(folder / file))
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    FAMILY.load_encoder("text", folder)  # the text encoder does not need it
    with pytest.raises(CheckpointError, match=f"1 missing \\({name}\\)"):
        FAMILY.load_encoder("multimodal", folder)


def test_the_published_configs_build_the_published_size() -> None:
    config = json.loads(official_files("full")["config.json"])
    retriever = nvembed_config(json.loads(nvembed_files.official_files("full")["config.json"]), "retriever")
    with torch.device("meta"):
        text = NVEmbedTextEncoder(retriever.text_config, retriever.pooler)
        encoder = MMEmbedEncoder(
            text, config["vision_config"], image_token_index=32000, feature_layer=-2, keep_cls=False
        )
    count = {name: sum(p.numel() for p in module.parameters()) for name, module in encoder.named_children()}
    assert count["vision"] == 303_507_456 and count["projector"] == 20_979_712
    total = sum(p.numel() for p in encoder.parameters())
    assert total == 7_851_016_192 + 303_507_456 + 20_979_712 + 4096
    assert round(total / 1e9, 2) == 8.18  # mteb's n_parameters for MM-Embed: 8,180,000,000


def test_the_encoder_folders_round_trip(checkpoint: Path, encoders: dict[str, torch.nn.Module], tmp_path: Path) -> None:
    for name, encoder in encoders.items():
        FAMILY.save_encoder(name, encoder, tmp_path / name)
        loaded = FAMILY.load_encoder(name, tmp_path / name)
        for key, tensor in encoder.state_dict().items():
            assert torch.equal(tensor, loaded.state_dict()[key]), (name, key)
