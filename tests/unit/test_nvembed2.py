"""NV-Embed-v2 without a server: the pool-mask rule, the strict loader, the encoder against an independent
reference forward, and the published model's size from its official config on the meta device."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from nvembed_reference import DEFAULT_INSTRUCTION, ReferenceNVEmbed
from safetensors.torch import load_file, save_file

from mmembed.core.contract import CheckpointError
from mmembed.core.preprocessing import TextTokenizer
from mmembed.families.nvembed2 import FAMILY
from mmembed.families.nvembed2.checkpoint import official_files
from mmembed.families.nvembed2.encoder import NVEmbedTextEncoder
from mmembed.families.nvembed2.layout import INDEX_FILE, nvembed_config
from mmembed.families.nvembed2.model import DEFAULT_TASK, INSTRUCTION_TEMPLATE, load_text_encoder

TEXTS = ["are judo throws allowed in wrestling?", "a cat on a red car", "two " * 80, "é 猫 🐱"]
OTHER_TASK = "Retrieve images that match the description"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("nvembed2")
    FAMILY.make_checkpoint("tiny", folder)
    return folder


def _settings(checkpoint: Path, modality: str) -> TextTokenizer:
    (step,) = next(e for e in FAMILY.describe(checkpoint).ensembles if e.modality == modality).steps
    return TextTokenizer(step.settings, checkpoint)  # type: ignore[arg-type]


def test_the_declaration_matches_the_reference_pipeline(checkpoint: Path) -> None:
    spec = FAMILY.describe(checkpoint)
    spec.check()
    (encoder,) = spec.encoders
    assert [item.name for item in encoder.inputs] == ["input_ids", "attention_mask", "pool_mask"]
    assert encoder.dimension == 64 and encoder.inputs[0].item_shape == (64,)  # sentence_bert_config's length
    query = next(e for e in spec.ensembles if e.modality == "query")
    assert query.optional_inputs == ("INSTRUCTION",)
    settings = query.steps[0].settings
    assert settings.prefix_for(None) == f"Instruct: {DEFAULT_TASK}\nQuery: " == DEFAULT_INSTRUCTION  # type: ignore[union-attr]
    assert INSTRUCTION_TEMPLATE.replace("{task}", "x") == "Instruct: x\nQuery: "


def test_documents_pool_every_real_token_bos_and_eos_included(checkpoint: Path) -> None:
    encoded = _settings(checkpoint, "text").encode(["a cat on a red car"])
    ids, attention, pool = encoded["input_ids"][0], encoded["attention_mask"][0], encoded["pool_mask"][0]
    length = int(attention.sum())
    assert ids[0] == 1 and ids[length - 1] == 2  # <s> in front, the appended "</s>" at the end
    assert np.array_equal(pool, attention)


def test_queries_hide_the_instruction_as_the_reference_counts_it(checkpoint: Path) -> None:
    """The count is the instruction's tokens alone, without special tokens, masked from position 0 (BOS):
    in context the instruction's trailing lone "▁" merges into the next word, so exactly BOS and the
    instruction's in-context tokens are hidden, and the query's first word is pooled."""
    tokenizer = _settings(checkpoint, "query")
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    for task in (None, OTHER_TASK):
        instruction = DEFAULT_INSTRUCTION if task is None else f"Instruct: {task}\nQuery: "
        encoded = tokenizer.encode(["judo throws"], [task])
        alone = raw.encode(instruction, add_special_tokens=False).tokens
        hidden = int((encoded["pool_mask"][0] == 0).sum() - (encoded["attention_mask"][0] == 0).sum())
        assert hidden == len(alone) and alone[-1] == "▁"
        in_context = raw.encode(instruction + "judo throws</s>").tokens
        assert in_context[hidden - 1] != "▁" and in_context[hidden].startswith("▁judo"[: len(in_context[hidden])])
        assert encoded["pool_mask"][0][hidden] == 1


def test_per_item_tasks_and_the_default_mix_in_one_batch(checkpoint: Path) -> None:
    tokenizer = _settings(checkpoint, "query")
    mixed = tokenizer.encode(["a", "a"], [None, OTHER_TASK])
    default = tokenizer.encode(["a"])
    other = tokenizer.encode(["a"], [OTHER_TASK])
    for row, single in ((0, default), (1, other)):
        length = single["input_ids"].shape[1]
        for name in ("input_ids", "pool_mask"):
            assert np.array_equal(mixed[name][row, :length], single[name][0]), name


def test_a_long_text_is_cut_at_the_served_length_and_loses_its_eos(checkpoint: Path) -> None:
    encoded = _settings(checkpoint, "text").encode(["two " * 200])
    assert encoded["attention_mask"].sum() == 64 and encoded["input_ids"][0, -1] != 2


@pytest.mark.parametrize("modality", ["text", "query"])
def test_the_encoder_matches_an_independent_reference_forward(checkpoint: Path, modality: str) -> None:
    encoder = load_text_encoder(checkpoint)
    reference = ReferenceNVEmbed(checkpoint, max_length=64)
    tokenizer = _settings(checkpoint, modality)
    for task, instruction in ((None, DEFAULT_INSTRUCTION), (OTHER_TASK, f"Instruct: {OTHER_TASK}\nQuery: ")):
        encoded = tokenizer.encode(TEXTS, [task] * len(TEXTS))
        with torch.no_grad():
            raw = encoder(*(torch.from_numpy(encoded[name]) for name in ("input_ids", "attention_mask", "pool_mask")))
        served = torch.nn.functional.normalize(raw, dim=-1).numpy()
        expected = reference.embed(TEXTS, instruction if modality == "query" else "")
        assert (served * expected).sum(axis=1).min() >= 0.9999
        assert np.abs(served - expected).max() < 1e-5  # tighter than cosine: catches tanh-GELU-sized drifts


def test_attention_is_bidirectional_and_padding_is_invisible(checkpoint: Path) -> None:
    encoder = load_text_encoder(checkpoint)
    encoded = _settings(checkpoint, "text").encode(["a cat on a red car", "a"])
    tensors = [torch.from_numpy(encoded[name]) for name in ("input_ids", "attention_mask", "pool_mask")]
    pool_first = tensors[2].clone()
    pool_first[:, 1:] = 0  # pool only BOS: it sees later tokens only if attention is bidirectional
    changed = tensors[0].clone()
    changed[0, 3] = 7
    padded_other = tensors[0].clone()
    padded_other[1, 5:] = 9  # padding positions of the short row
    with torch.no_grad():
        base = encoder(tensors[0], tensors[1], pool_first)
        assert not torch.allclose(base[0], encoder(changed, tensors[1], pool_first)[0])
        full = encoder(*tensors)
        assert torch.allclose(full[1], encoder(padded_other, tensors[1], tensors[2])[1], atol=1e-6)


def test_precomputed_latent_keys_and_values_give_the_same_result(checkpoint: Path) -> None:
    encoder = load_text_encoder(checkpoint)
    encoded = _settings(checkpoint, "query").encode(TEXTS)
    tensors = [torch.from_numpy(encoded[name]) for name in ("input_ids", "attention_mask", "pool_mask")]
    with torch.no_grad():
        frozen = encoder(*tensors)
        encoder.pooler.latent_keys = encoder.pooler.latent_values = None
        assert torch.allclose(frozen, encoder(*tensors), atol=1e-6)


def _copy(checkpoint: Path, destination: Path) -> Path:
    shutil.copytree(checkpoint, destination)
    return destination


def _rewrite_first_shard(folder: Path, change: str) -> str:
    index = json.loads((folder / INDEX_FILE).read_text())
    name, file = next(iter(index["weight_map"].items()))
    tensors = load_file(str(folder / file))
    if change == "drop":
        del tensors[name]
        del index["weight_map"][name]
    elif change == "add":
        name = "latent_attention_model.extra.weight"
        tensors[name] = torch.zeros(2)
        index["weight_map"][name] = file
    else:
        tensors[name] = torch.zeros(3, 3)
    save_file(tensors, str(folder / file))
    (folder / INDEX_FILE).write_text(json.dumps(index))
    return name


@pytest.mark.parametrize(("change", "message"), [("drop", "1 missing"), ("add", "1 unexpected"), ("shape", "shape")])
def test_the_loader_refuses_weights_that_do_not_fit(
    checkpoint: Path, tmp_path: Path, change: str, message: str
) -> None:
    folder = _copy(checkpoint, tmp_path / "changed")
    name = _rewrite_first_shard(folder, change)
    with pytest.raises(CheckpointError, match=message) as raised:
        load_text_encoder(folder)
    assert name in str(raised.value)


def test_a_missing_shard_is_named(checkpoint: Path, tmp_path: Path) -> None:
    folder = _copy(checkpoint, tmp_path / "changed")
    (folder / "model-00002-of-00009.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model-00002-of-00009\.safetensors"):
        load_text_encoder(folder)


def test_the_published_config_builds_the_published_parameter_count() -> None:
    settings = nvembed_config(json.loads(official_files("full")["config.json"]), "config.json")
    with torch.device("meta"):
        encoder = NVEmbedTextEncoder(settings.text_config, settings.pooler)
    decoder = sum(p.numel() for p in encoder.decoder.parameters())
    pooler = sum(p.numel() for p in encoder.pooler.parameters())
    assert (decoder, pooler) == (7_110_660_096, 740_356_096)
    assert decoder + pooler == 7_851_016_192


def test_the_encoder_folder_round_trips_in_the_stored_dtype(checkpoint: Path, tmp_path: Path) -> None:
    encoder = load_text_encoder(checkpoint)
    FAMILY.save_encoder("text", encoder, tmp_path / "tower")
    index = json.loads((tmp_path / "tower" / INDEX_FILE).read_text())
    assert index["metadata"]["total_size"] == 2 * sum(t.numel() for t in encoder.state_dict().values())  # fp16
    loaded = FAMILY.load_encoder("text", tmp_path / "tower")
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
