"""MM-Embed (`nvidia/MM-Embed`, CC-BY-NC-4.0): NV-Embed's decoder and pooling reading an image and a text
together (LLaVA-NeXT's CLIP ViT-L/14-336 and projector), 4096-d, 8.18 B parameters.

Ensembles: NAME_text (text documents) and NAME_query (text queries) on encoder `text`; NAME_image (an
image, with an optional text) and NAME_image_query on encoder `multimodal`. Prompts as the reference
builds them: documents `<image>\\n{text}`, queries `Query: <image>\\n{text}` or, with a task,
`Instruct: {task}\\nQuery: <image>\\n{text}` (`<image>\\n` left out without an image); BOS and EOS added
by the tokenizer; 512 text tokens at most, the image's 577 tokens on top. Images are squashed to 336x336
(the global patch only), bicubic, CLIP mean/std. The pooling leaves out BOS, the instruction and the
newline after it, counted as the reference counts them (TextSettings.pool_mask_split).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from mmembed.core.contract import (
    CheckpointError,
    EncoderSpec,
    EnsembleSpec,
    ImageTextStep,
    ModelFamily,
    ModelSpec,
    TextStep,
    pixel_input,
    text_inputs,
)
from mmembed.core.preprocessing import PILLOW_CONVERT_DECODE, ImageSettings, TextSettings
from mmembed.families.checkpoint_files import image_processor_config, read_json
from mmembed.families.mm_embed.checkpoint import MAX_TEXT_TOKENS, SIZES, make_checkpoint
from mmembed.families.mm_embed.encoder import MMEmbedEncoder
from mmembed.families.mm_embed.layout import (
    RETRIEVER_FOLDER,
    MMEmbedConfig,
    official_name,
    read_config,
    retriever_config,
)
from mmembed.families.nvembed2.encoder import NVEmbedTextEncoder
from mmembed.families.nvembed2.layout import load_official, save_official
from mmembed.families.nvembed2.model import finish_loading

PRECISION_SCOPE = r"(^|\.)decoder\.layers\.\d+\."  # the decoder blocks' Linear layers, in both encoders
INSTRUCTION_TEMPLATE = "Instruct: {task}\nQuery: "
QUERY_PREFIX = "Query: "  # queries without a task, as the reference's instruction=None
IMAGE_TOKEN = "<image>"
IMAGE_PROMPT = IMAGE_TOKEN + "\n"
ENCODERS = ("text", "multimodal")


def _token_id(checkpoint: Path, token: str) -> int:
    from tokenizers import Tokenizer

    found = Tokenizer.from_file(str(checkpoint / "tokenizer.json")).token_to_id(token)
    if found is None:
        raise CheckpointError(f"{checkpoint}/tokenizer.json has no {token!r} token")
    return int(found)


def text_settings(checkpoint: Path) -> TextSettings:
    """Documents' settings; queries add their prefix and template. The tokenizer adds BOS and EOS."""
    tokenizer_config = read_json(checkpoint, "tokenizer_config.json")
    if not tokenizer_config.get("add_eos_token", False):
        raise CheckpointError(f"{checkpoint}/tokenizer_config.json: MM-Embed's tokenizer adds EOS (add_eos_token)")
    pad = tokenizer_config.get("pad_token", "<pad>")
    return TextSettings(
        max_length=MAX_TEXT_TOKENS,
        pad_token_id=_token_id(checkpoint, pad["content"] if isinstance(pad, dict) else pad),
        lowercase=False,
        pad_to_longest=True,
        attention_mask=True,
        pool_mask=True,
        pool_mask_split="\nQuery: ",
    )


def image_settings(checkpoint: Path) -> ImageSettings:
    """The global patch: the whole image squashed to the processor's shortest_edge square (aspect ignored,
    as the reference's global_image_patch_only), rescaled and normalised; decoded as PIL's convert("RGB")."""
    config = image_processor_config(checkpoint)
    try:
        side = int(config["size"]["shortest_edge"])
        return ImageSettings(
            height=side,
            width=side,
            resample=int(config["resample"]),
            rescale_factor=float(config["rescale_factor"]) if config.get("do_rescale", True) else None,
            image_mean=tuple(config["image_mean"]) if config.get("do_normalize", True) else None,
            image_std=tuple(config["image_std"]) if config.get("do_normalize", True) else None,
            decode=PILLOW_CONVERT_DECODE,
        )
    except KeyError as e:
        raise CheckpointError(f"the image processor config of {checkpoint} lacks {e}") from None


def describe(checkpoint: Path) -> ModelSpec:
    config = read_config(checkpoint)
    documents = text_settings(checkpoint)
    queries = replace(documents, prefix=QUERY_PREFIX, instruction_template=INSTRUCTION_TEMPLATE)
    image = image_settings(checkpoint)
    dimension = config.retriever.hidden_size
    tokens = text_inputs(documents, config.retriever.vocab_size + 2)  # with <image> and <pad>
    encoders = (
        EncoderSpec(name="text", inputs=tokens, dimension=dimension, precision_scope=PRECISION_SCOPE),
        EncoderSpec(
            name="multimodal",
            inputs=(pixel_input(image), *tokens),
            dimension=dimension,
            precision_scope=PRECISION_SCOPE,
        ),
    )
    return ModelSpec(
        encoders=encoders,
        ensembles=(
            EnsembleSpec(modality="text", steps=(TextStep(settings=documents),), encoder="text"),
            EnsembleSpec(modality="query", steps=(TextStep(settings=queries),), encoder="text"),
            EnsembleSpec(
                modality="image",
                steps=(ImageTextStep(image=image, text=documents, image_prompt=IMAGE_PROMPT, image_token=IMAGE_TOKEN),),
                encoder="multimodal",
            ),
            EnsembleSpec(
                modality="image_query",
                steps=(ImageTextStep(image=image, text=queries, image_prompt=IMAGE_PROMPT, image_token=IMAGE_TOKEN),),
                encoder="multimodal",
            ),
        ),
    )


def _remap(checkpoint: Path, config: MMEmbedConfig) -> tuple[tuple[int, int], ...]:
    """What the reference looks <image> and <pad> up as: <unk> (0) and EOS (2)."""
    pad = text_settings(checkpoint).pad_token_id
    return ((config.image_token_index, _token_id(checkpoint, "<unk>")), (pad, _token_id(checkpoint, "</s>")))


def load_text_encoder(checkpoint: Path, dtype: torch.dtype = torch.float32) -> NVEmbedTextEncoder:
    config = read_config(checkpoint)
    retriever = config.retriever
    with torch.device("meta"):
        encoder = NVEmbedTextEncoder(retriever.text_config, retriever.pooler, _remap(checkpoint, config))
    names = {name: official_name(name) for name in encoder.state_dict()}
    ignored = ("vision_tower.", "multi_modal_projector.", "image_newline")
    load_official(encoder, checkpoint, names=names, dtype=dtype, ignored_prefixes=ignored)
    return finish_loading(encoder, checkpoint)


def load_multimodal_encoder(
    checkpoint: Path, dtype: torch.dtype = torch.float32, text: NVEmbedTextEncoder | None = None
) -> MMEmbedEncoder:
    """The multimodal encoder; around TEXT (the text encoder already loaded) if given, so that export
    holds one copy of the 7B decoder, not two."""
    config = read_config(checkpoint)
    retriever = config.retriever
    with torch.device("meta"):
        if text is None:
            text = NVEmbedTextEncoder(retriever.text_config, retriever.pooler, _remap(checkpoint, config))
        encoder = MMEmbedEncoder(
            text,
            config.vision_config,
            image_token_index=config.image_token_index,
            feature_layer=config.feature_layer,
            keep_cls=config.keep_cls,
        )
    shared = text.source is not None  # already loaded: fill the image path only
    names = {name: official_name(name) for name in encoder.state_dict() if not (shared and name.startswith("text."))}
    ignored = ("language_model.", "latent_attention_model.") if shared else ()
    load_official(encoder, checkpoint, names=names, dtype=dtype, ignored_prefixes=ignored)
    _rebuild_buffers(encoder.vision)
    if not shared:
        finish_loading(encoder.text, checkpoint)
    encoder.stored_dtype = encoder.text.stored_dtype
    return encoder.eval()


def _rebuild_buffers(vision: Any) -> None:
    """CLIP's position ids are not weights: recompute them off the meta device."""
    embeddings = vision.embeddings
    count = embeddings.position_embedding.weight.shape[0]
    embeddings.register_buffer("position_ids", torch.arange(count).unsqueeze(0), persistent=False)


def load_encoders(checkpoint: Path) -> dict[str, torch.nn.Module]:
    """Both encoders, sharing one decoder and pooler (4 bytes a parameter: 33 GB at full size, not 64)."""
    text = load_encoder("text", checkpoint)
    assert isinstance(text, NVEmbedTextEncoder)
    multimodal = load_multimodal_encoder(checkpoint, text=text)
    multimodal.source = checkpoint
    return {"text": text, "multimodal": multimodal}


def save_encoder(name: str, encoder: torch.nn.Module, out: Path) -> None:
    """Encoder NAME as an MM-Embed checkpoint folder holding only its own weights (in the stored dtype),
    with the checkpoint's config files, which `load_encoder` reads with the same strict loader."""
    if not isinstance(encoder, NVEmbedTextEncoder | MMEmbedEncoder) or encoder.source is None:
        raise TypeError("mm_embed saves the encoders its own loaders made")
    source = encoder.source
    out.mkdir(parents=True, exist_ok=True)
    for file in ("config.json", "tokenizer_config.json", "tokenizer.json", "preprocessor_config.json"):
        (out / file).write_bytes((source / file).read_bytes())
    (out / RETRIEVER_FOLDER).mkdir(exist_ok=True)
    config = read_json(source, "config.json")
    retriever = retriever_config(source, str(config["retriever"]))
    (out / RETRIEVER_FOLDER / "config.json").write_text(json.dumps(retriever, indent=2))
    state = {official_name(key): value for key, value in encoder.state_dict().items()}
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    save_official(shapes, state.__getitem__, encoder.stored_dtype, out, shard_bytes=5 * 10**9)


def load_encoder(name: str, folder: Path) -> torch.nn.Module:
    if name not in ENCODERS:
        raise CheckpointError(f"mm_embed's encoders are {', '.join(ENCODERS)}, not {name!r}")
    encoder = load_text_encoder(folder) if name == "text" else load_multimodal_encoder(folder)
    encoder.source = folder  # where save_encoder finds the config files
    return encoder


FAMILY = ModelFamily(
    name="mm_embed",
    sizes=tuple(SIZES),
    make_checkpoint=make_checkpoint,
    describe=describe,
    load_encoders=load_encoders,
    save_encoder=save_encoder,
    load_encoder=load_encoder,
)
