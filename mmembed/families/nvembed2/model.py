"""NV-Embed-v2 (`nvidia/NV-Embed-v2`, CC-BY-NC-4.0): a 7.85 B text embedder, 4096-d, from Mistral-7B.

Documents are embedded as they are; queries with an instruction in front, `Instruct: {task}\\nQuery: `,
whose task a request may choose (the repository's default otherwise). Every text gets the tokenizer's
EOS appended as text and BOS in front, right padding, truncation at the served length (so a long text
loses its EOS, as in the reference). The pooling leaves out the instruction's positions, counted as the
reference counts them (see TextSettings.pool_mask).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from mmembed.core.contract import CheckpointError, EncoderSpec, EnsembleSpec, ModelFamily, ModelSpec, TextStep
from mmembed.core.contract import text_inputs as encoder_text_inputs
from mmembed.core.preprocessing import TextSettings
from mmembed.families.checkpoint_files import pad_token_id, read_json
from mmembed.families.nvembed2.checkpoint import SIZES, make_checkpoint
from mmembed.families.nvembed2.encoder import NVEmbedTextEncoder
from mmembed.families.nvembed2.layout import (
    NVEmbedConfig,
    load_official,
    official_name,
    read_config,
    save_official,
    state_names,
)

# The decoder blocks' Linear layers: what may run in fp8 (embeddings, norms and the pooler stay wider).
PRECISION_SCOPE = r"^decoder\.layers\.\d+\."
INSTRUCTION_TEMPLATE = "Instruct: {task}\nQuery: "  # the model card's, and the paper's eq. (2)
DEFAULT_TASK = "Given a question, retrieve passages that answer the question"  # the model card's example
# The longest text served, in tokens, where the checkpoint allows more (NV-Embed-v2: 32,768). The
# reference `encode` defaults to 4,096; longer passages cost quadratic attention for little gain.
SERVED_MAX_TOKENS = 4096


def text_settings(checkpoint: Path, config: NVEmbedConfig) -> TextSettings:
    """Documents' settings: EOS appended as text, right padding to the request's longest text."""
    if not config.mask_instruction:
        raise CheckpointError(f"{checkpoint}/config.json: is_mask_instruction false is not supported")
    tokenizer_config = read_json(checkpoint, "tokenizer_config.json")
    eos = tokenizer_config.get("eos_token")
    if isinstance(eos, dict):
        eos = eos.get("content")
    if not isinstance(eos, str) or not eos:
        raise CheckpointError(f"{checkpoint}/tokenizer_config.json names no eos_token")
    return TextSettings(
        max_length=served_length(checkpoint, config),
        pad_token_id=pad_token_id(checkpoint, default=eos),
        lowercase=False,
        suffix=eos,
        pad_to_longest=True,
        attention_mask=True,
        pool_mask=True,
    )


def served_length(checkpoint: Path, config: NVEmbedConfig) -> int:
    """The sentence-transformers length (the model card's), within the positions the decoder has."""
    positions = int(config.text_config.get("max_position_embeddings", SERVED_MAX_TOKENS))
    longest = positions
    if (checkpoint / "sentence_bert_config.json").is_file():
        longest = int(read_json(checkpoint, "sentence_bert_config.json").get("max_seq_length", positions))
    return min(longest, positions, SERVED_MAX_TOKENS)


def describe(checkpoint: Path) -> ModelSpec:
    """One encoder `text`; NAME_text (documents) and NAME_query (instruction chosen per request)."""
    config = read_config(checkpoint)
    documents = text_settings(checkpoint, config)
    default = INSTRUCTION_TEMPLATE.replace("{task}", DEFAULT_TASK)
    queries = replace(documents, prefix=default, instruction_template=INSTRUCTION_TEMPLATE)
    encoder = EncoderSpec(
        name="text",
        inputs=encoder_text_inputs(documents, config.vocab_size),
        dimension=config.hidden_size,
        precision_scope=PRECISION_SCOPE,
    )
    return ModelSpec(
        encoders=(encoder,),
        ensembles=(
            EnsembleSpec(modality="text", steps=(TextStep(settings=documents),), encoder="text"),
            EnsembleSpec(modality="query", steps=(TextStep(settings=queries),), encoder="text"),
        ),
    )


def load_text_encoder(checkpoint: Path, dtype: torch.dtype = torch.float32) -> NVEmbedTextEncoder:
    """The checkpoint's encoder in DTYPE, eval mode, its latent keys and values computed once."""
    config = read_config(checkpoint)
    with torch.device("meta"):
        encoder = NVEmbedTextEncoder(config.text_config, config.pooler)
    load_official(encoder, checkpoint, names=state_names(encoder), dtype=dtype)
    encoder.source = checkpoint
    return finish_loading(encoder, checkpoint)


def finish_loading(encoder: NVEmbedTextEncoder, checkpoint: Path) -> NVEmbedTextEncoder:
    """After the weights are in: what is not a weight (the rotary frequencies, built on the meta device,
    and the latents' keys and values), the stored dtype, eval mode."""
    encoder.decoder.rotary_emb = type(encoder.decoder.rotary_emb)(config=encoder.decoder.config)
    encoder.stored_dtype = stored_dtype(checkpoint)
    encoder.eval()
    encoder.pooler.freeze()
    return encoder


def stored_dtype(checkpoint: Path) -> torch.dtype:
    """The dtype the checkpoint's config says its weights are stored in (the published ones: float16)."""
    name = read_json(checkpoint, "config.json").get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise CheckpointError(f"{checkpoint}/config.json: unknown torch_dtype {name!r}")
    return dtype


def load_encoders(checkpoint: Path) -> dict[str, torch.nn.Module]:
    return {"text": load_text_encoder(checkpoint)}


def save_encoder(name: str, encoder: torch.nn.Module, out: Path) -> None:
    """Encoder NAME into OUT in the official layout (config.json + shards in the config's dtype), which
    `load_encoder` reads with the same strict loader as a downloaded checkpoint."""
    import json

    if not isinstance(encoder, NVEmbedTextEncoder):
        raise TypeError(f"nvembed2 saves its own text encoder, not a {type(encoder).__name__}")
    config: Any = encoder.decoder.config
    # Its weights came from the checkpoint in this dtype: stored so, nothing is lost and 7B is 15.7 GB.
    dtype = encoder.stored_dtype
    pooler = encoder.pooler.config
    out.mkdir(parents=True, exist_ok=True)
    file = {
        "model_type": "nvembed",
        "padding_side": "right",
        "is_mask_instruction": True,
        "hidden_size": pooler.hidden_size,
        "latent_attention_config": {
            "num_latents_value": pooler.latents,
            "num_cross_heads": pooler.heads,
            "hidden_dim": pooler.hidden_size,
            "latent_dim": pooler.latent_size,
            "cross_dim_head": pooler.head_size,
        },
        "text_config": {**config.to_dict(), "model_type": "bidir_mistral"},
        "torch_dtype": str(dtype).removeprefix("torch."),
    }
    (out / "config.json").write_text(json.dumps(file, indent=2))
    state = {official_name(key): value for key, value in encoder.state_dict().items()}
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    save_official(shapes, state.__getitem__, dtype, out, shard_bytes=5 * 10**9)


def load_encoder(name: str, folder: Path) -> torch.nn.Module:
    if name != "text":
        raise CheckpointError(f"nvembed2 has one encoder, 'text', not {name!r}")
    return load_text_encoder(folder)


FAMILY = ModelFamily(
    name="nvembed2",
    sizes=tuple(SIZES),
    make_checkpoint=make_checkpoint,
    describe=describe,
    load_encoders=load_encoders,
    save_encoder=save_encoder,
    load_encoder=load_encoder,
)
