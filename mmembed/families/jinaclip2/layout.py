"""The official `jinaai/jina-clip-v2` checkpoint layout: its config, its state-dict names, and the loader
that maps them onto the clean-room towers, merging the text tower's default LoRA adapter.

Official names (remote code, transformers 4.47 era): the vision tower is `vision_model.*` (EVA-CLIP names:
`blocks.N.attn.q_proj`, `q_bias`, `inner_attn_ln`, `mlp.w1/w2/ffn_ln/w3`, ...); the text tower is
`text_model.transformer.roberta.*` (flash-attention BERT names: `mixer.Wqkv`, `norm1`, `mlp.fc1`, ...),
where every Linear and Embedding weight is a torch parametrization: `X.parametrizations.weight.original`
plus LoRA factors `...weight.0.lora_A` / `lora_B` with one slice per adapter. Every key must be used and
every tower weight found: anything else is a CheckpointError naming the keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from mmembed.core.contract import CheckpointError
from mmembed.families.checkpoint_files import read_json
from mmembed.families.jinaclip2.eva02 import Eva02Config, Eva02VisionTower, rotary_tables
from mmembed.families.jinaclip2.text_tower import JinaTextTower, text_config

VISION_PREFIX = "vision_model."
TEXT_PREFIX = "text_model.transformer.roberta."
_TOP_LEVEL_KEYS = {"logit_scale"}  # the contrastive loss temperature: not needed to embed
_LORA_ORIGINAL = ".parametrizations.weight.original"
_LORA_A = ".parametrizations.weight.0.lora_A"
_LORA_B = ".parametrizations.weight.0.lora_B"

DEFAULT_QUERY_INSTRUCTION = "Represent the query for retrieving evidence documents: "

# Official vision names -> clean-room names; N is a block index.
_VISION_NAMES: dict[str, str] = {
    "patch_embed.proj.weight": "patch_embedding.weight",
    "patch_embed.proj.bias": "patch_embedding.bias",
    "cls_token": "class_token",
    "pos_embed": "position_embedding",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
    "head.weight": "head.weight",
    "head.bias": "head.bias",
    "blocks.N.norm1.weight": "blocks.N.attention_norm.weight",
    "blocks.N.norm1.bias": "blocks.N.attention_norm.bias",
    "blocks.N.attn.q_proj.weight": "blocks.N.attention.query.weight",
    "blocks.N.attn.q_bias": "blocks.N.attention.query.bias",
    "blocks.N.attn.k_proj.weight": "blocks.N.attention.key.weight",
    "blocks.N.attn.v_proj.weight": "blocks.N.attention.value.weight",
    "blocks.N.attn.v_bias": "blocks.N.attention.value.bias",
    "blocks.N.attn.inner_attn_ln.weight": "blocks.N.attention.output_norm.weight",
    "blocks.N.attn.inner_attn_ln.bias": "blocks.N.attention.output_norm.bias",
    "blocks.N.attn.proj.weight": "blocks.N.attention.output.weight",
    "blocks.N.attn.proj.bias": "blocks.N.attention.output.bias",
    "blocks.N.norm2.weight": "blocks.N.mlp_norm.weight",
    "blocks.N.norm2.bias": "blocks.N.mlp_norm.bias",
    "blocks.N.mlp.w1.weight": "blocks.N.mlp.gate.weight",
    "blocks.N.mlp.w1.bias": "blocks.N.mlp.gate.bias",
    "blocks.N.mlp.w2.weight": "blocks.N.mlp.up.weight",
    "blocks.N.mlp.w2.bias": "blocks.N.mlp.up.bias",
    "blocks.N.mlp.ffn_ln.weight": "blocks.N.mlp.norm.weight",
    "blocks.N.mlp.ffn_ln.bias": "blocks.N.mlp.norm.bias",
    "blocks.N.mlp.w3.weight": "blocks.N.mlp.down.weight",
    "blocks.N.mlp.w3.bias": "blocks.N.mlp.down.bias",
}
# Buffers some EVA-CLIP versions save: recomputed here, and checked against ours when present.
_VISION_ROTARY = re.compile(r"^(blocks\.\d+\.attn\.)?rope\.freqs_(cos|sin)$")

# Official text names (after LoRA merge) -> names in transformers' JinaEmbeddingsV3Model.
_TEXT_NAMES: dict[str, str] = {
    "embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
    "emb_ln.weight": "embeddings.LayerNorm.weight",
    "emb_ln.bias": "embeddings.LayerNorm.bias",
    "encoder.layers.N.mixer.out_proj.weight": "layers.N.self_attn.o_proj.weight",
    "encoder.layers.N.mixer.out_proj.bias": "layers.N.self_attn.o_proj.bias",
    "encoder.layers.N.norm1.weight": "layers.N.post_attention_layernorm.weight",
    "encoder.layers.N.norm1.bias": "layers.N.post_attention_layernorm.bias",
    "encoder.layers.N.mlp.fc1.weight": "layers.N.mlp.fc1.weight",
    "encoder.layers.N.mlp.fc1.bias": "layers.N.mlp.fc1.bias",
    "encoder.layers.N.mlp.fc2.weight": "layers.N.mlp.fc2.weight",
    "encoder.layers.N.mlp.fc2.bias": "layers.N.mlp.fc2.bias",
    "encoder.layers.N.norm2.weight": "layers.N.post_mlp_layernorm.weight",
    "encoder.layers.N.norm2.bias": "layers.N.post_mlp_layernorm.bias",
}
_QKV = re.compile(r"^encoder\.layers\.(\d+)\.mixer\.Wqkv\.(weight|bias)$")


def vision_config(config: dict[str, Any]) -> Eva02Config:
    """The EVA02 settings from config.json's `vision_config`, refusing variants this tower does not build."""
    vision = config.get("vision_config") or {}
    unsupported = {
        "naive_swiglu": True,
        "subln": True,
        "rope_embeddings": True,
        "qkv_bias": True,
        "post_norm": False,
        "ls_init_value": None,
        "proj_type": None,
    }
    for key, wanted in unsupported.items():
        if vision.get(key, wanted) != wanted:
            raise CheckpointError(f"JinaCLIP vision_config {key}={vision[key]!r} is not supported (only {wanted!r})")
    try:
        return Eva02Config(
            image_size=int(vision["image_size"]),
            patch_size=int(vision["patch_size"]),
            width=int(vision["width"]),
            layers=int(vision["layers"]),
            head_width=int(vision["head_width"]),
            mlp_ratio=float(vision["mlp_ratio"]),
            pt_hw_seq_len=int(vision.get("pt_hw_seq_len", 16)),
            intp_freq=bool(vision.get("intp_freq", True)),
        )
    except KeyError as e:
        raise CheckpointError(f"JinaCLIP vision_config lacks {e}") from None


# The official text tower starts from the config of its `hf_model_name_or_path` (jinaai/jina-embeddings-v3,
# fetched from the hub at load) and updates it with `text_config.hf_model_config_kwargs`. These are that
# base config's values, so an official folder needs no second download; every size in them is checked
# against the weights' shapes at load.
JINA_EMBEDDINGS_V3_BASE: dict[str, Any] = {
    "vocab_size": 250002,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "hidden_act": "gelu",
    "max_position_embeddings": 8194,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "position_embedding_type": "rotary",
    "rotary_emb_base": 20000.0,
    "lora_rank": 4,
    "lora_alpha": 1,
}


def text_settings_of(config: dict[str, Any]) -> dict[str, Any]:
    """The XLM-RoBERTa settings: the jina-embeddings-v3 base updated with `hf_model_config_kwargs`."""
    text = config.get("text_config") or {}
    if text.get("pooler_type", "mean_pooler") != "mean_pooler" or text.get("proj_type") is not None:
        raise CheckpointError("only JinaCLIP text towers with mean pooling and no projection are supported")
    base = text.get("hf_model_name_or_path", "jinaai/jina-embeddings-v3")
    if not str(base).rstrip("/").endswith("jina-embeddings-v3"):
        raise CheckpointError(f"text tower base {base!r} is not jina-embeddings-v3, the only one supported")
    settings: dict[str, Any] = {**JINA_EMBEDDINGS_V3_BASE, **(text.get("hf_model_config_kwargs") or {})}
    if settings.get("position_embedding_type", "rotary") != "rotary":
        raise CheckpointError("only the rotary-position Jina XLM-RoBERTa text tower is supported")
    return settings


def query_instruction(config: dict[str, Any]) -> str:
    """The instruction the model expects before a retrieval query (the `retrieval.query` task)."""
    instructions = text_settings_of(config).get("task_instructions") or {}
    return str(instructions.get("retrieval.query", DEFAULT_QUERY_INSTRUCTION))


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder: model.safetensors, its shards, or pytorch_model.bin."""
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        return load_file(str(folder / "model.safetensors"))
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(str(folder / shard)))
        return state
    if (folder / "pytorch_model.bin").is_file():
        weights: dict[str, torch.Tensor] = torch.load(
            folder / "pytorch_model.bin", map_location="cpu", weights_only=True
        )
        return weights
    raise CheckpointError(f"{folder} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _rename(name: str, table: dict[str, str]) -> str | None:
    """NAME through TABLE, where N in a pattern stands for any layer index."""
    if name in table:
        return table[name]
    generic = re.sub(r"\.(\d+)\.", ".N.", name, count=1)
    if generic != name and generic in table:
        index = re.search(r"\.(\d+)\.", name)
        assert index is not None
        return table[generic].replace(".N.", f".{index.group(1)}.", 1)
    return None


def merge_lora(state: dict[str, torch.Tensor], adapter: int, scaling: float) -> dict[str, torch.Tensor]:
    """Fold LoRA slice ADAPTER into each parametrized weight: W + B@A (Linear) or W + A@B (Embedding).

    Returns a copy whose parametrized weights are plain `X.weight` tensors; the LoRA factors are consumed.
    """
    merged = dict(state)
    for key in [k for k in state if k.endswith(_LORA_ORIGINAL)]:
        module = key.removesuffix(_LORA_ORIGINAL)
        weight = merged.pop(key).float()
        try:
            lora_a, lora_b = merged.pop(module + _LORA_A).float(), merged.pop(module + _LORA_B).float()
        except KeyError:
            raise CheckpointError(f"{module} has a parametrized weight but no LoRA factors") from None
        if adapter >= lora_a.shape[0]:
            raise CheckpointError(f"{module} has {lora_a.shape[0]} LoRA adapters, the config asks for #{adapter}")
        is_embedding = module.endswith("_embeddings")
        delta = lora_a[adapter] @ lora_b[adapter] if is_embedding else lora_b[adapter] @ lora_a[adapter]
        if delta.shape != weight.shape:
            raise CheckpointError(f"{module}: LoRA update {tuple(delta.shape)} does not fit {tuple(weight.shape)}")
        merged[module + ".weight"] = weight + delta * scaling
    leftovers = [k for k in merged if ".parametrizations." in k]
    if leftovers:
        raise CheckpointError(f"LoRA factors without a weight: {', '.join(sorted(leftovers)[:5])}")
    return merged


def lora_adapter(config: dict[str, Any], state: dict[str, torch.Tensor]) -> tuple[int, float]:
    """Which adapter the model applies to every text (`default_lora_task`) and its scale (alpha / rank)."""
    settings = text_settings_of(config)
    task = (config.get("text_config") or {}).get("default_lora_task", "retrieval.query")
    adaptations = list(settings.get("lora_adaptations") or ["retrieval.query"])
    if task not in adaptations:
        raise CheckpointError(f"default_lora_task {task!r} is not one of lora_adaptations {adaptations}")
    ranks = {t.shape[-2] for k, t in state.items() if k.endswith(_LORA_A) and "_embeddings" not in k}
    rank = int(settings["lora_rank"])
    if ranks and ranks != {rank}:
        raise CheckpointError(f"lora_rank {rank} does not match the LoRA tensors' rank {sorted(ranks)}")
    return adaptations.index(task), float(settings["lora_alpha"]) / rank


def _map_tower(
    state: dict[str, torch.Tensor],
    rename: Callable[[str], dict[str, torch.Tensor] | None],
    module: torch.nn.Module,
    what: str,
) -> None:
    """Load STATE (official names, prefix stripped) into MODULE through RENAME; strict both ways."""
    mapped: dict[str, torch.Tensor] = {}
    unknown = []
    for name in state:
        result = rename(name)
        if result is None:
            unknown.append(name)
            continue
        mapped.update(result)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unknown += sorted(set(mapped) - set(expected))
    if unknown:
        raise CheckpointError(f"{what}: {len(unknown)} unknown keys, e.g. {', '.join(sorted(unknown)[:5])}")
    if missing:
        raise CheckpointError(f"{what}: {len(missing)} weights missing, e.g. {', '.join(missing[:5])}")
    misfits = [
        f"{name} has shape {tuple(tensor.shape)}, the config implies {tuple(expected[name].shape)}"
        for name, tensor in mapped.items()
        if tuple(tensor.shape) != tuple(expected[name].shape)
    ]
    if misfits:
        raise CheckpointError(f"{what}: {len(misfits)} weights do not fit the config, e.g. {misfits[0]}")
    module.load_state_dict({k: v.float() for k, v in mapped.items()}, strict=True)


def load_vision(config: dict[str, Any], state: dict[str, torch.Tensor]) -> Eva02VisionTower:
    eva = vision_config(config)
    if "head.weight" in state:  # EVA-CLIP builds a Linear head when num_classes > 0; published configs imply none
        eva = replace(eva, head_dim=int(state["head.weight"].shape[0]), head_bias="head.bias" in state)
    tower = Eva02VisionTower(eva)
    cos, sin = rotary_tables(eva)

    def rename(name: str) -> dict[str, torch.Tensor] | None:
        rotary = _VISION_ROTARY.match(name)
        if rotary:
            ours = cos if rotary.group(2) == "cos" else sin
            theirs = state[name].float().reshape(ours.shape) if state[name].numel() == ours.numel() else None
            if theirs is None or not torch.allclose(theirs, ours, atol=1e-3):
                raise CheckpointError(f"vision_model.{name} differs from the rotary table this config implies")
            return {}
        target = _rename(name, _VISION_NAMES)
        return None if target is None else {target: state[name]}

    _map_tower(state, rename, tower, "vision_model")
    return tower.eval()


def load_text(config: dict[str, Any], state: dict[str, torch.Tensor]) -> JinaTextTower:
    tower = JinaTextTower(text_config(text_settings_of(config)))

    def rename(name: str) -> dict[str, torch.Tensor] | None:
        qkv = _QKV.match(name)
        if qkv:
            layer, kind = qkv.groups()
            query, key, value = state[name].chunk(3, dim=0)
            base = f"encoder.layers.{layer}.self_attn."
            return {f"{base}q_proj.{kind}": query, f"{base}k_proj.{kind}": key, f"{base}v_proj.{kind}": value}
        target = _rename(name, _TEXT_NAMES)
        return None if target is None else {"encoder." + target: state[name]}

    _map_tower(state, rename, tower, "text_model")
    return tower.eval()


def load_official_towers(folder: Path) -> tuple[Eva02VisionTower, JinaTextTower, dict[str, Any]]:
    """Both towers of an official-layout checkpoint folder, fp32, LoRA merged; and its config."""
    config = read_json(folder, "config.json")
    if config.get("add_projections"):
        raise CheckpointError("JinaCLIP checkpoints with add_projections: true are not supported")
    state = read_state_dict(folder)
    groups: dict[str, dict[str, torch.Tensor]] = {"vision": {}, "text": {}}
    stray = []
    for key, tensor in state.items():
        if key.startswith(VISION_PREFIX):
            groups["vision"][key.removeprefix(VISION_PREFIX)] = tensor
        elif key.startswith(TEXT_PREFIX):
            groups["text"][key.removeprefix(TEXT_PREFIX)] = tensor
        elif key not in _TOP_LEVEL_KEYS:
            stray.append(key)
    if stray:
        raise CheckpointError(f"{len(stray)} unknown keys in {folder}, e.g. {', '.join(sorted(stray)[:5])}")
    adapter, scaling = lora_adapter(config, groups["text"])
    text_state = merge_lora(groups["text"], adapter, scaling)
    vision, text = load_vision(config, groups["vision"]), load_text(config, text_state)
    if vision.config.output_dim != text.encoder.config.hidden_size:
        raise CheckpointError(
            f"image embeddings are {vision.config.output_dim}-d but text embeddings "
            f"{text.encoder.config.hidden_size}-d: not one embedding space"
        )
    return vision, text, config


def official_state_dict(
    vision: Eva02VisionTower, text: JinaTextTower, *, adapters: int, rank: int, seed: int
) -> dict[str, torch.Tensor]:
    """The towers' weights under the official names, with random LoRA factors on every text Linear and
    Embedding (non-zero, so a loader that skipped the merge would be caught)."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {"logit_scale": torch.tensor(2.6592)}
    vision_names = {v: k for k, v in _VISION_NAMES.items()}
    for name, tensor in vision.state_dict().items():
        state[VISION_PREFIX + str(_rename(name, vision_names))] = tensor.clone()
    text_names = {v: k for k, v in _TEXT_NAMES.items()}
    weights = {k.removeprefix("encoder."): v for k, v in text.state_dict().items()}
    official_text: dict[str, torch.Tensor] = {}
    for layer in range(text.encoder.config.num_hidden_layers):
        base = f"layers.{layer}.self_attn."
        for kind in ("weight", "bias"):
            parts = [weights.pop(f"{base}{p}_proj.{kind}") for p in ("q", "k", "v")]
            official_text[f"encoder.layers.{layer}.mixer.Wqkv.{kind}"] = torch.cat(parts)
    for name, tensor in weights.items():
        official_text[str(_rename(name, text_names))] = tensor.clone()
    for name, tensor in official_text.items():
        module = name.removesuffix(".weight")
        if not name.endswith(".weight") or tensor.dim() != 2:
            state[TEXT_PREFIX + name] = tensor
            continue
        rows, cols = tensor.shape
        if module.endswith("_embeddings"):  # updates about as large as the weights themselves
            lora_a = torch.randn(adapters, rows, rank, generator=generator) * 0.1
            lora_b = torch.randn(adapters, rank, cols, generator=generator) * 0.1
        else:
            lora_a = torch.randn(adapters, rank, cols, generator=generator) / cols**0.5
            lora_b = torch.randn(adapters, rows, rank, generator=generator) * 0.1
        state[TEXT_PREFIX + module + _LORA_ORIGINAL] = tensor
        state[TEXT_PREFIX + module + _LORA_A] = lora_a
        state[TEXT_PREFIX + module + _LORA_B] = lora_b
    return state
