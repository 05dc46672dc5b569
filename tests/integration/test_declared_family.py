"""A family declared here alone proves the contract: a text-only, mean-pooled BERT that takes `input_ids`
and `attention_mask` (two inputs per item), with a query ensemble. Nothing outside this module names it,
and it is exported, served and gated like the built-in families.

(Runtime torch would also import this module inside tritonserver, which needs it installed in the server's
Python environment; the torch runtime's own tests cover multi-input encoders through `build_encoder`.)
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mmembed.client import EmbeddingClient, InvalidInputError
from mmembed.core.contract import (
    EncoderSpec,
    EnsembleSpec,
    ModelFamily,
    ModelSpec,
    TextStep,
    text_inputs,
)
from mmembed.core.gate_reference import REFERENCE_FILE, GateReference
from mmembed.core.numeric_gate import MIN_COSINE
from mmembed.core.preprocessing import TextSettings
from mmembed.export import ExportRequest, export_model
from mmembed.serving.server import ServeError, ServerSettings, TritonServer

QUERY_PREFIX = "query: "
WORDS = [
    "a",
    "the",
    "photo",
    "of",
    "cat",
    "dog",
    "red",
    "blue",
    "car",
    "street",
    "city",
    "night",
    "house",
    "tree",
    "river",
    "sky",
    "people",
    "running",
    "sitting",
]


def make_checkpoint(size: str, out: Path) -> None:
    """A random-weight BERT in Hugging Face layout with a WordPiece tokenizer trained here."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel

    if size != "tiny":
        raise ValueError(f"size {size!r}: only tiny")
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    rng = random.Random(0)
    corpus = [" ".join(rng.choices(WORDS, k=rng.randint(2, 9))) for _ in range(500)]
    tokenizer.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(out)
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"pad_token": "[PAD]", "model_max_length": 64}))


def describe(checkpoint: Path) -> ModelSpec:
    config = json.loads((checkpoint / "config.json").read_text())
    text = TextSettings(
        max_length=int(config["max_position_embeddings"]),
        pad_token_id=int(config["pad_token_id"]),
        lowercase=False,  # the tokenizer's normaliser lowercases
        pad_to_longest=True,
        attention_mask=True,
    )
    encoder = EncoderSpec(
        name="text",
        inputs=text_inputs(text, int(config["vocab_size"])),
        dimension=int(config["hidden_size"]),
        precision_scope=r"\.encoder\.layer\.\d+\.",
    )
    return ModelSpec(
        encoders=(encoder,),
        ensembles=(
            EnsembleSpec(modality="text", steps=(TextStep(settings=text),), encoder="text"),
            EnsembleSpec(modality="query", steps=(TextStep(settings=_with_prefix(text)),), encoder="text"),
        ),
    )


def _with_prefix(settings: TextSettings) -> TextSettings:
    from dataclasses import replace

    return replace(settings, prefix=QUERY_PREFIX)


class MeanPooled(torch.nn.Module):
    """input_ids, attention_mask -> the mean of the last hidden states over real tokens."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden: torch.Tensor = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def load_encoder(name: str, folder: Path) -> torch.nn.Module:
    from transformers import BertModel

    model = BertModel.from_pretrained(folder, add_pooling_layer=False, attn_implementation="eager")
    return MeanPooled(model.float()).eval()


def load_encoders(checkpoint: Path) -> dict[str, torch.nn.Module]:
    return {"text": load_encoder("text", checkpoint)}


def save_encoder(name: str, encoder: torch.nn.Module, out: Path) -> None:
    encoder.model.save_pretrained(out)


FAMILY = ModelFamily(
    name="meanbert",
    sizes=("tiny",),
    make_checkpoint=make_checkpoint,
    describe=describe,
    load_encoders=load_encoders,
    save_encoder=save_encoder,
    load_encoder=load_encoder,
)

TEXTS = ["a cat", "the red car on a street at night", "people running by the river under a blue sky", "dog"]


def reference(checkpoint: Path, texts: list[str]) -> np.ndarray:
    """The model's own pipeline: transformers' tokenizer (pad to longest, with its mask) and mean pooling."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(checkpoint / "tokenizer.json"), pad_token="[PAD]")
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        raw = load_encoder("text", checkpoint)(batch["input_ids"], batch["attention_mask"])
    return torch.nn.functional.normalize(raw, dim=-1).numpy()


@pytest.fixture(scope="module")
def family_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("meanbert")
    FAMILY.make_checkpoint("tiny", folder)
    return folder


@pytest.fixture(scope="module")
def family_server(
    family_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TritonServer, Path]]:
    repository = tmp_path_factory.mktemp("meanbert-repository")
    export_model(ExportRequest(family=FAMILY, checkpoint=family_checkpoint, repository=repository), log=print)
    with TritonServer(ServerSettings.on_free_ports(repository)) as server:
        yield server, repository


def test_the_declared_family_is_exported_as_it_declares(family_server: tuple[TritonServer, Path]) -> None:
    server, repository = family_server
    assert {"meanbert_text", "meanbert_query", "meanbert_text_encoder"} <= set(server.ready_models())
    assert not (repository / "meanbert_image").exists()
    config = (repository / "meanbert_text_encoder" / "config.pbtxt").read_text()
    assert 'name: "input_ids"' in config and 'name: "attention_mask"' in config


def test_every_ensemble_of_the_declared_family_passed_the_load_gate(family_server: tuple[TritonServer, Path]) -> None:
    server, _ = family_server
    reports = {report.tower: report for report in server.gate_reports}
    assert set(reports) == {"meanbert_text served", "meanbert_query served"}
    for report in reports.values():
        assert report.min_cosine >= MIN_COSINE["fp32"] and report.precision == "fp32", report.line()


def test_served_embeddings_match_the_models_own_pipeline(
    family_server: tuple[TritonServer, Path], family_checkpoint: Path
) -> None:
    server, _ = family_server
    model, precision = "meanbert", "fp32"
    with EmbeddingClient(server.grpc_url) as client:
        (info,) = [info for info in client.list_models() if info.name == model]
        assert info.modalities == ("query", "text") and info.query_instruction == QUERY_PREFIX
        texts = client.embed_texts(model, TEXTS)
        queries = client.embed_texts(model, TEXTS, query=True)
        alone = np.concatenate([client.embed_texts(model, [text]) for text in TEXTS])
    cosines = (texts * reference(family_checkpoint, TEXTS)).sum(axis=1)
    assert cosines.min() >= MIN_COSINE[precision]
    query_cosines = (queries * reference(family_checkpoint, [QUERY_PREFIX + t for t in TEXTS])).sum(axis=1)
    assert query_cosines.min() >= MIN_COSINE[precision]
    # The mask, not the padding length, decides: each text alone equals it in a batch of longer ones.
    assert (alone * texts).sum(axis=1).min() >= MIN_COSINE[precision]


def test_a_bad_item_of_the_declared_family_fails_alone(family_server: tuple[TritonServer, Path]) -> None:
    server, _ = family_server
    with EmbeddingClient(server.grpc_url) as client:
        with pytest.raises(InvalidInputError, match=r"^item 1: text is 2097152 bytes, over the limit") as raised:
            client.embed_texts("meanbert", ["fine", "x" * (2 * 1024 * 1024), "also fine"])
        assert raised.value.index == 1
        partial = client.embed_texts("meanbert", ["fine", "x" * (2 * 1024 * 1024), "also fine"], on_error="skip")
    assert list(partial.indexes) == [0, 2] and set(partial.errors) == {1}


def test_a_declared_family_whose_reference_drifted_is_not_served(
    family_server: tuple[TritonServer, Path], tmp_path: Path
) -> None:
    _, repository = family_server
    copy = tmp_path / "repository"
    shutil.copytree(repository, copy)
    path = copy / "meanbert_query" / REFERENCE_FILE
    stored = GateReference.load(path)
    GateReference(precision=stored.precision, inputs=stored.inputs, embeddings=-stored.embeddings).save(path)
    with pytest.raises(ServeError, match=r"refusing to serve: meanbert_query served fp32: .* under the gate"):
        TritonServer(ServerSettings.on_free_ports(copy)).start()
