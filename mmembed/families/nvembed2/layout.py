"""The official NV-Embed checkpoint layout: its config keys, its state-dict names, its weight files.

`config.json` (`model_type: nvembed`) holds the decoder's Mistral config under `text_config` and the
pooler's under `latent_attention_config`, which the official file leaves at its class defaults. Weights
are sharded safetensors with an index file, named `embedding_model.*` (the decoder, no `lm_head`) and
`latent_attention_model.*` (the pooler). Loading streams one tensor at a time onto an empty (meta)
module, so a 7B checkpoint never needs more host memory than one copy of its weights, and refuses a
checkpoint with a missing or an unexpected tensor by name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmembed.core.contract import CheckpointError
from mmembed.families.checkpoint_files import read_json
from mmembed.families.nvembed2.pooler import PoolerConfig

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
DECODER_PREFIX = "embedding_model."  # NV-Embed's name for the decoder; MM-Embed calls it language_model.
POOLER_PREFIX = "latent_attention_model."

# The pooler's tensors: ours (LatentAttentionPooler) -> the official names after POOLER_PREFIX.
POOLER_NAMES: dict[str, str] = {
    "latents": "latents",
    "query_norm": "cross_attend_blocks.0.norm",
    "latent_norm": "cross_attend_blocks.0.norm_context",
    "to_query": "cross_attend_blocks.0.fn.to_q",
    "to_key_value": "cross_attend_blocks.0.fn.to_kv",
    "to_output": "cross_attend_blocks.0.fn.to_out",
    "feed_forward_norm": "cross_attend_blocks.1.norm",
    "feed_forward_in": "cross_attend_blocks.1.fn.net.0",
    "feed_forward_out": "cross_attend_blocks.1.fn.net.2",
}

# `LatentAttentionConfig`'s defaults: the official config.json gives only its model_type.
LATENT_DEFAULTS: dict[str, Any] = {
    "num_latents_value": 512,
    "num_cross_heads": 8,
    "hidden_dim": 4096,
    "latent_dim": 4096,
    "cross_dim_head": 4096,
    "output_normalize": True,
}


@dataclass(frozen=True, kw_only=True)
class NVEmbedConfig:
    """What the encoder and its preprocessing need from config.json."""

    text_config: dict[str, Any]  # the Mistral decoder's, as the file spells it
    pooler: PoolerConfig
    mask_instruction: bool  # `is_mask_instruction`: the pooling leaves the query's instruction out

    @property
    def hidden_size(self) -> int:
        return int(self.text_config["hidden_size"])

    @property
    def vocab_size(self) -> int:
        return int(self.text_config["vocab_size"])


def read_config(checkpoint: Path) -> NVEmbedConfig:
    config = read_json(checkpoint, "config.json")
    if config.get("model_type") != "nvembed":
        raise CheckpointError(f"{checkpoint}/config.json has model_type {config.get('model_type')!r}, not 'nvembed'")
    return nvembed_config(config, f"{checkpoint}/config.json")


def nvembed_config(config: dict[str, Any], where: str) -> NVEmbedConfig:
    """NV-Embed's settings from a config dictionary (NV-Embed's own, or the retriever config MM-Embed names)."""
    if config.get("padding_side", "right") != "right":
        raise CheckpointError(f"{where}: padding_side {config['padding_side']!r}; NV-Embed pads on the right")
    text_config = config.get("text_config")
    if not isinstance(text_config, dict):
        raise CheckpointError(f"{where} has no text_config")
    latent = {**LATENT_DEFAULTS, **(config.get("latent_attention_config") or {})}
    hidden = int(text_config["hidden_size"])
    if int(latent["hidden_dim"]) != hidden:
        raise CheckpointError(f"{where}: latent_attention_config.hidden_dim {latent['hidden_dim']} != {hidden}")
    pooler = PoolerConfig(
        hidden_size=hidden,
        latents=int(latent["num_latents_value"]),
        latent_size=int(latent["latent_dim"]),
        heads=int(latent["num_cross_heads"]),
        head_size=int(latent["cross_dim_head"]),
    )
    return NVEmbedConfig(
        text_config=text_config, pooler=pooler, mask_instruction=bool(config.get("is_mask_instruction", True))
    )


def official_name(name: str, decoder_prefix: str = DECODER_PREFIX) -> str:
    """Our encoder's state-dict name -> the official checkpoint's ("decoder." -> "embedding_model.")."""
    part, _, rest = name.partition(".")
    if part == "decoder":
        return decoder_prefix + rest
    if part == "pooler":
        module, dot, tail = rest.partition(".")
        return POOLER_PREFIX + POOLER_NAMES[module] + dot + tail
    raise ValueError(f"no official name for {name!r}")


def weight_files(checkpoint: Path) -> dict[Path, list[str]]:
    """Each safetensors file of CHECKPOINT with the tensor names the index assigns it (all, unindexed)."""
    from safetensors import safe_open

    index_path = checkpoint / INDEX_FILE
    if index_path.is_file():
        weight_map: dict[str, str] = json.loads(index_path.read_text())["weight_map"]
        files: dict[Path, list[str]] = {}
        for name, file in weight_map.items():
            files.setdefault(checkpoint / file, []).append(name)
        for path in files:
            if not path.is_file():
                raise CheckpointError(f"{INDEX_FILE} names {path.name}, which {checkpoint} does not have")
        return files
    single = checkpoint / SINGLE_FILE
    if not single.is_file():
        raise CheckpointError(f"{checkpoint} has neither {INDEX_FILE} nor {SINGLE_FILE}")
    with safe_open(str(single), framework="pt") as handle:
        return {single: list(handle.keys())}


def load_official(
    module: torch.nn.Module,
    checkpoint: Path,
    *,
    names: dict[str, str],
    dtype: torch.dtype = torch.float32,
    ignored_prefixes: tuple[str, ...] = (),
) -> None:
    """Fill MODULE (built on the meta device) from CHECKPOINT's safetensors, tensor by tensor, in DTYPE.

    NAMES maps each of the module's tensors to its official name. A tensor the checkpoint lacks, or one
    it has that the module does not take (outside IGNORED_PREFIXES), is a CheckpointError naming it."""
    from safetensors import safe_open

    files = weight_files(checkpoint)
    available = {name for listed in files.values() for name in listed}
    wanted = {official: ours for ours, official in names.items()}
    _check_names(checkpoint, set(wanted), {n for n in available if not n.startswith(ignored_prefixes)})
    for path, listed in files.items():
        with safe_open(str(path), framework="pt") as handle:
            for name in listed:
                if name in wanted:
                    tensor = handle.get_tensor(name).to(dtype)
                    _assign(module, wanted[name], tensor, f"{path.name}: tensor {name}")


def _check_names(checkpoint: Path, wanted: set[str], available: set[str]) -> None:
    missing, unexpected = sorted(wanted - available), sorted(available - wanted)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
    if unexpected:
        listed = ", ".join(unexpected[:5]) + (", ..." if len(unexpected) > 5 else "")
        problems.append(f"{len(unexpected)} unexpected ({listed})")
    if problems:
        raise CheckpointError(f"the weights in {checkpoint} do not fit the config: tensors {'; '.join(problems)}")


def _assign(module: torch.nn.Module, name: str, tensor: torch.Tensor, where: str) -> None:
    owner_name, _, attribute = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    current = getattr(owner, attribute)
    if tuple(current.shape) != tuple(tensor.shape):
        raise CheckpointError(f"{where} has shape {tuple(tensor.shape)}; the config implies {tuple(current.shape)}")
    setattr(owner, attribute, torch.nn.Parameter(tensor, requires_grad=False))


def state_names(module: torch.nn.Module, decoder_prefix: str = DECODER_PREFIX) -> dict[str, str]:
    """MODULE's persistent tensors -> their official names."""
    return {name: official_name(name, decoder_prefix) for name in module.state_dict()}


def save_official(
    shapes: dict[str, tuple[int, ...]],
    tensor: Callable[[str], torch.Tensor],
    dtype: torch.dtype,
    out: Path,
    shard_bytes: int,
) -> None:
    """Tensors named as SHAPES says, made one shard at a time by TENSOR(name), as DTYPE in
    `model-0000i-of-0000n.safetensors` files of at most SHARD_BYTES (one tensor alone may be larger),
    and their index file: the host holds one shard, never the whole model."""
    from safetensors.torch import save_file

    itemsize = torch.empty((), dtype=dtype).element_size()
    groups: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = math.prod(shape) * itemsize
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    weight_map: dict[str, str] = {}
    for number, group in enumerate(groups, start=1):
        file = f"model-{number:05d}-of-{len(groups):05d}.safetensors"
        shard = {name: tensor(name).to(dtype).contiguous() for name in group}
        save_file(shard, str(out / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(group, file))
        del shard
    total = sum(math.prod(shape) for shape in shapes.values()) * itemsize
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
