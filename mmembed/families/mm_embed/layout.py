"""The official MM-Embed checkpoint layout: a `llava_next` config whose `retriever` names the NV-Embed
checkpoint (nvidia/NV-Embed-v1) whose config builds the decoder and the pooler, and sharded weights named
`vision_tower.*` (CLIP ViT-L/14-336), `multi_modal_projector.*`, `image_newline`, `language_model.*`
(NV-Embed's bidirectional Mistral) and `latent_attention_model.*`.

The reference ignores MM-Embed's own `text_config` (Mistral-7B-Instruct-v0.2, vocabulary 32,064): the
decoder it builds is the retriever's (Mistral-7B-v0.1, vocabulary 32,000), so the retriever's config is
read wherever it is: `retriever` as a folder, a `retriever/` folder inside the checkpoint, or the hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmembed.core.contract import CheckpointError
from mmembed.families.checkpoint_files import read_json
from mmembed.families.nvembed2.layout import NVEmbedConfig, nvembed_config
from mmembed.families.nvembed2.layout import official_name as nvembed_official_name

RETRIEVER_FOLDER = "retriever"
DECODER_PREFIX = "language_model."


@dataclass(frozen=True, kw_only=True)
class MMEmbedConfig:
    retriever: NVEmbedConfig  # the decoder and the pooler
    vision_config: dict[str, Any]  # CLIP's, as the file spells it
    feature_layer: int  # which hidden state of CLIP feeds the projector (-2: the penultimate)
    keep_cls: bool  # vision_feature_select_strategy "full" keeps CLS; "default" drops it
    image_token_index: int
    projector_act: str


def read_config(checkpoint: Path) -> MMEmbedConfig:
    config = read_json(checkpoint, "config.json")
    where = f"{checkpoint}/config.json"
    if config.get("model_type") != "llava_next" or "retriever" not in config:
        raise CheckpointError(f"{where} is not an MM-Embed config (llava_next with a retriever)")
    if not config.get("global_image_patch_only", False):
        raise CheckpointError(f"{where}: only global_image_patch_only (MM-Embed's setting) is supported, not anyres")
    if config.get("padding_side", "right") != "right":
        raise CheckpointError(f"{where}: padding_side {config['padding_side']!r}; MM-Embed pads on the right")
    strategy = config.get("vision_feature_select_strategy", "default")
    if strategy not in ("default", "full"):
        raise CheckpointError(f"{where}: unknown vision_feature_select_strategy {strategy!r}")
    retriever = retriever_config(checkpoint, str(config["retriever"]))
    return MMEmbedConfig(
        retriever=nvembed_config(retriever, f"the retriever config {config['retriever']}"),
        vision_config=config["vision_config"],
        feature_layer=int(config.get("vision_feature_layer", -2)),
        keep_cls=strategy == "full",
        image_token_index=int(config["image_token_index"]),
        projector_act=str(config.get("projector_hidden_act", "gelu")),
    )


def retriever_config(checkpoint: Path, retriever: str) -> dict[str, Any]:
    """The config.json of RETRIEVER: a folder (absolute or relative to CHECKPOINT), CHECKPOINT/retriever/,
    or the hub id's file through huggingface_hub (its cache and offline mode apply)."""
    for folder in (Path(retriever).expanduser(), checkpoint / retriever, checkpoint / RETRIEVER_FOLDER):
        if (folder / "config.json").is_file():
            return read_json(folder, "config.json")
    try:
        from huggingface_hub import hf_hub_download

        return read_json(Path(hf_hub_download(retriever, "config.json")).parent, "config.json")
    except Exception as e:
        raise CheckpointError(
            f"MM-Embed builds its decoder from {retriever}'s config.json, which is neither in "
            f"{checkpoint / RETRIEVER_FOLDER} nor reachable on the hub ({type(e).__name__}); put it there, e.g. "
            f"huggingface-cli download {retriever} config.json --local-dir {checkpoint / RETRIEVER_FOLDER}"
        ) from None


def official_name(name: str) -> str:
    """Our encoders' state-dict names -> the official checkpoint's."""
    part, _, rest = name.partition(".")
    if part == "text":
        return nvembed_official_name(rest, DECODER_PREFIX)
    if part == "vision":  # transformers 5's CLIPVisionModel has no `vision_model` level; 4.42's, saved, has
        return "vision_tower.vision_model." + rest
    if part == "projector":
        index, _, tail = rest.partition(".")
        return f"multi_modal_projector.linear_{1 if index == '0' else 2}.{tail}"
    if part == "image_newline":
        return "image_newline"
    return nvembed_official_name(name, DECODER_PREFIX)  # the text encoder alone: decoder.*, pooler.*
