"""Turn encoded images into pixel tensors and texts into token ids, exactly as the checkpoint's processor does.

This is the one implementation of preprocessing: the Triton Python models are thin glue around it and the
tests compare it with transformers' processor. It imports no Triton and no torch, so it runs in the
Python-backend stub with only numpy, Pillow and tokenizers. Its settings are small frozen dataclasses that
export writes as JSON next to the preprocessing model, read from the checkpoint's own config files.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from mmembed.core.names import ATTENTION_MASK, INPUT_IDS, POOL_MASK

__all__ = [
    "DISPLAY_DECODE",
    "PILLOW_CONVERT_DECODE",
    "SETTINGS_FILE",
    "TRANSFORMERS_DECODE",
    "DecodePolicy",
    "ImageSettings",
    "InputLimits",
    "InvalidInputError",
    "TextSettings",
    "TextTokenizer",
    "check_pooled",
    "decode_image",
    "decode_text",
    "image_pixels",
    "open_image",
    "preprocess_image",
    "task",
]

SETTINGS_FILE = "preprocessing.json"
MIN_TEXT_LENGTH = 16  # the shortest padded length with TextSettings.pad_to_longest
MAX_ASPECT_RATIO = 64  # shortest-edge resizing only: a 1x1,000,000 strip would resize to 512x512,000,000


class InvalidInputError(ValueError):
    """One input item cannot be preprocessed; the message says which problem, never a stack trace."""


@dataclass(frozen=True, kw_only=True)
class InputLimits:
    """Per-item limits, set at export (`mmembed export --max-image-bytes ...`) and enforced per request."""

    max_image_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 64 * 1024 * 1024  # checked from the header, before any pixel is decoded
    max_text_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        if min(self.max_image_bytes, self.max_image_pixels, self.max_text_bytes) < 1:
            raise ValueError("input limits must be positive")


@dataclass(frozen=True, kw_only=True)
class DecodePolicy:
    """How encoded bytes become the RGB image a model sees. Each family takes its reference pipeline's
    policy, so that the same file gives the same embedding as the model's own code, decoding included."""

    exif_orientation: bool  # turn the image upright as its EXIF orientation tag says
    # "drop": Pillow's convert("RGB"), which keeps the colour stored under transparent pixels;
    # "white": composite onto white, as a viewer shows it
    transparency: Literal["drop", "white"]
    # "clip": Pillow's convert("RGB"), which clips 16-bit and float values to 0..255;
    # "scale": map the full range onto 8 bits (65535 -> 255; float from its minimum to its maximum)
    high_bit_depth: Literal["clip", "scale"]


# transformers' `image_utils.load_image` (the SigLIP-2 pipelines): `exif_transpose`, then convert("RGB").
TRANSFORMERS_DECODE = DecodePolicy(exif_orientation=True, transparency="drop", high_bit_depth="clip")
# `Image.open(...).convert("RGB")`, as JinaCLIP-v2's official `encode_image`: EXIF orientation ignored.
PILLOW_CONVERT_DECODE = DecodePolicy(exif_orientation=False, transparency="drop", high_bit_depth="clip")
# `mmembed export --image-decode display`: the image as a viewer shows it, whatever the model's reference
# does. A deviation from the reference for transparent, EXIF-rotated and 16-bit files.
DISPLAY_DECODE = DecodePolicy(exif_orientation=True, transparency="white", high_bit_depth="scale")


@dataclass(frozen=True, kw_only=True)
class ImageSettings:
    """How the checkpoint's image processor turns a decoded image into `pixel_values` [3, height, width].

    Without `shortest_edge` the image is squashed to height x width (SigLIP); with it, the short side is
    resized to `shortest_edge` (aspect kept) and the centre height x width cropped out (CLIP, JinaCLIP).
    """

    height: int
    width: int
    shortest_edge: int | None = None
    resample: int  # PIL resampling filter id, as the processor config stores it
    rescale_factor: float | None  # None when the processor does not rescale
    image_mean: tuple[float, float, float] | None  # None when the processor does not normalise
    image_std: tuple[float, float, float] | None
    decode: DecodePolicy  # the family's reference decoding, unless export was asked for another
    max_image_bytes: int = InputLimits.max_image_bytes
    max_image_pixels: int = InputLimits.max_image_pixels
    # Decode large JPEGs at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling) while still at least the target
    # size: several times faster for photos, a slightly different resize than the processor's.
    fast_jpeg: bool = False

    def to_json(self) -> str:
        return json.dumps({"image": asdict(self)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ImageSettings:
        fields = json.loads(text)["image"]
        for key in ("image_mean", "image_std"):
            if fields[key] is not None:
                fields[key] = tuple(fields[key])
        fields["decode"] = DecodePolicy(**fields["decode"])
        return cls(**fields)


@dataclass(frozen=True, kw_only=True)
class TextSettings:
    """How the checkpoint's tokenizer turns text into `input_ids` [max_length]."""

    max_length: int
    pad_token_id: int
    lowercase: bool  # SigLIP was trained on lowercased text; its Gemma tokenizer does not lowercase itself
    # Put before every text that comes without a task of its own (JinaCLIP's retrieval-query instruction,
    # NV-Embed's default task in its template, MM-Embed's "Query: "); "" for none.
    prefix: str = ""
    # Pad each request only to its longest text, rounded up to a power of two (>= MIN_TEXT_LENGTH, at
    # most max_length), instead of always to max_length: for towers that mask padding out (JinaCLIP).
    # A 10-token caption then costs 16 positions, not 512; the few lengths keep requests batchable.
    pad_to_longest: bool = False
    tokenizer_file: str = "tokenizer.json"
    # Also hand the encoder `attention_mask` (1 for each real token, 0 for padding), for encoders that
    # take one instead of finding the padding in the ids.
    attention_mask: bool = False
    # Text past max_length tokens is truncated, as the model expects; this bounds the tokenizer's work.
    max_text_bytes: int = InputLimits.max_text_bytes
    # Put after every text, before tokenizing (NV-Embed appends its EOS as the text "</s>"); "" for none.
    suffix: str = ""
    # Instructions chosen per request (NV-Embed, MM-Embed queries): a request's task fills `{task}`, and
    # the result goes before its text instead of `prefix`. "" for models whose queries take no task.
    instruction_template: str = ""
    # Also hand the encoder `pool_mask`: the attention mask with the leading positions of the prefix
    # zeroed, so the pooling leaves the instruction out, counted exactly as the model's reference does:
    # - `pool_mask_split` "": the prefix's tokens when tokenized alone without special tokens, masked
    #   from position 0 (NV-Embed: so BOS is masked, and the prefix's trailing lone "▁" merges into the
    #   next word in context: BOS + instruction are hidden);
    # - `pool_mask_split` set (MM-Embed: "\nQuery: "): the tokens, special tokens included, of the part of
    #   the prefix before that separator; nothing for a prefix without it.
    pool_mask: bool = False
    pool_mask_split: str = ""

    def __post_init__(self) -> None:
        if self.instruction_template and "{task}" not in self.instruction_template:
            raise ValueError(f"instruction_template {self.instruction_template!r} has no {{task}} field")

    @property
    def takes_instruction(self) -> bool:
        return bool(self.instruction_template)

    def prefix_for(self, task: str | None) -> str:
        """What goes before a text: the template filled with TASK, or without a task the fixed prefix."""
        if task is None or not self.instruction_template:
            return self.prefix
        return self.instruction_template.replace("{task}", task)

    def to_json(self) -> str:
        return json.dumps({"text": asdict(self)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> TextSettings:
        return cls(**json.loads(text)["text"])


def open_image(data: bytes, settings: ImageSettings) -> Image.Image:
    """Read one encoded image's header (format, size, mode, EXIF), no pixels yet, or raise InvalidInputError
    saying why it cannot be used. The byte and pixel limits are checked here."""
    if not data:
        raise InvalidInputError("image is empty (0 bytes)")
    if len(data) > settings.max_image_bytes:
        raise InvalidInputError(f"image is {len(data)} bytes, over the limit of {settings.max_image_bytes}")
    with _image_errors(data, settings, None):
        image = Image.open(io.BytesIO(data))
        if isinstance(image, ImageFile.StubImageFile):  # BUFR, GRIB, HDF5, WMF: an application's plugin decodes
            raise InvalidInputError(f"unsupported {image.format} file: Pillow has no decoder for it on this server")
        pixels = image.width * image.height
        if pixels > settings.max_image_pixels:
            raise InvalidInputError(
                f"image is {image.width}x{image.height} = {pixels} pixels, over the limit of "
                f"{settings.max_image_pixels}"
            )
        if pixels == 0:
            raise InvalidInputError(f"image is {image.width}x{image.height}: it has no pixels")
        return image


def decode_image(data: bytes, settings: ImageSettings) -> Image.Image:
    """Decode one encoded image to an 8-bit RGB PIL image as `settings.decode` says, or raise
    InvalidInputError saying why it cannot be.

    The image is the one Pillow presents after opening the file, as the reference pipelines use it: the
    first frame of an animation or a multi-page file, a layered file's composite. The pixel count is checked
    from the header, before any pixel is decoded. Any failure inside a decoder is this item's error.
    """
    image = open_image(data, settings)
    with _image_errors(data, settings, image.format):
        if settings.fast_jpeg:
            side = max(settings.width, settings.height)  # either side may end up vertical after EXIF
            image.draft(None, (side, side))
        image.load()
        if settings.decode.exif_orientation:
            image = ImageOps.exif_transpose(image)
        return _to_rgb(image, settings.decode)


def image_pixels(data: bytes, settings: ImageSettings) -> np.ndarray:
    """One encoded image -> float32 [3, height, width], exactly as the checkpoint's pipeline makes it."""
    return preprocess_image(decode_image(data, settings), settings)


# Pillow's messages for formats it recognises but cannot decode on this machine.
_UNSUPPORTED = (
    "cannot find loader",  # stub formats (BUFR, GRIB, HDF5, WMF) without an application's handler
    "cannot load this image",  # formats Pillow identifies but has no decoder for (MPEG)
    "handler",
    "not supported",
    "unsupported",
    "no decoder",
)


@contextmanager
def _image_errors(data: bytes, settings: ImageSettings, image_format: str | None) -> Iterator[None]:
    """Any exception while reading one image, as InvalidInputError with a message a client can act on:
    Pillow's decoders raise many classes (OSError, EOFError, SyntaxError, struct.error, NotImplementedError)."""
    try:
        yield
    except InvalidInputError:
        raise
    except UnidentifiedImageError:
        raise InvalidInputError(f"cannot identify image format ({len(data)} bytes, starts {data[:8]!r})") from None
    except Image.DecompressionBombError as e:  # Pillow's own check, above ours, from the header too
        raise InvalidInputError(
            f"image declares too many pixels, over the limit of {settings.max_image_pixels}: {e}"
        ) from None
    except Exception as e:
        name = image_format or "image"
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if "ghostscript" in str(e).lower():
            raise InvalidInputError(
                f"unsupported {name} file: {name} needs Ghostscript to render, which this server does not have"
            ) from None
        if isinstance(e, NotImplementedError) or any(word in str(e).lower() for word in _UNSUPPORTED):
            raise InvalidInputError(
                f"unsupported {name} file: Pillow cannot decode it on this server ({detail})"
            ) from None
        raise InvalidInputError(f"corrupt or truncated {name} file ({detail})") from None


def _to_rgb(image: Image.Image, policy: DecodePolicy) -> Image.Image:
    if policy.high_bit_depth == "scale" and image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = _high_depth_to_8bit(image)
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    if policy.transparency == "drop" or not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _high_depth_to_8bit(image: Image.Image) -> Image.Image:
    """Scale a 16-bit or float grayscale image to 8 bits (Pillow's own convert would clip it to 255)."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        scale = 255.0 / (high - low) if high > low else 0.0
        values = (np.nan_to_num(values, nan=low) - low) * scale
    else:
        values = values / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def preprocess_image(image: Image.Image, settings: ImageSettings) -> np.ndarray:
    """Resize (and crop), rescale and normalise an RGB image to float32 [3, height, width]."""
    if settings.shortest_edge is None:
        resized = image.resize((settings.width, settings.height), resample=settings.resample)
    else:
        resized = _center_crop(_resize_shortest_edge(image, settings), settings.height, settings.width)
    pixels = np.asarray(resized, dtype=np.float32)
    if settings.rescale_factor is not None:
        pixels = pixels * np.float32(settings.rescale_factor)
    if settings.image_mean is not None and settings.image_std is not None:
        mean = np.asarray(settings.image_mean, dtype=np.float32)
        std = np.asarray(settings.image_std, dtype=np.float32)
        pixels = (pixels - mean) / std
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _resize_shortest_edge(image: Image.Image, settings: ImageSettings) -> Image.Image:
    """Short side to `shortest_edge`, long side scaled and truncated to an integer, as torchvision's Resize."""
    assert settings.shortest_edge is not None
    short, long = sorted(image.size)
    if long > MAX_ASPECT_RATIO * short:  # the resized long side would need gigabytes
        raise InvalidInputError(f"image is {image.width}x{image.height}: aspect ratio over {MAX_ASPECT_RATIO}:1")
    new_short, new_long = settings.shortest_edge, int(settings.shortest_edge * long / short)
    size = (new_short, new_long) if image.width <= image.height else (new_long, new_short)
    return image.resize(size, resample=settings.resample)


def _center_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """The centre height x width, offsets rounded as torchvision's CenterCrop (half to even)."""
    if image.width < width or image.height < height:
        raise InvalidInputError(f"image resized to {image.width}x{image.height} is smaller than {width}x{height}")
    top, left = round((image.height - height) / 2), round((image.width - width) / 2)
    return image.crop((left, top, left + width, top + height))


class TextTokenizer:
    """The checkpoint's tokenizer with the padding and truncation the model was trained with."""

    def __init__(self, settings: TextSettings, folder: Path) -> None:
        from tokenizers import Tokenizer  # imported here: image-only processes need not load it

        self.settings = settings
        self._tokenizer = Tokenizer.from_file(str(folder / settings.tokenizer_file))
        self._tokenizer.enable_truncation(max_length=settings.max_length)
        self._tokenizer.no_padding()

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Token ids [len(texts), length] int64: length is max_length, or with `pad_to_longest` the
        padded length of the longest text; text beyond max_length is truncated."""
        return self.encode(texts)[INPUT_IDS]

    def encode(self, texts: list[str], tasks: list[str | None] | None = None) -> dict[str, np.ndarray]:
        """What the encoder takes: `input_ids`, and `attention_mask` and `pool_mask` where the settings ask
        for them. TASKS: each text's instruction task (None: the default), for settings that take one."""
        settings = self.settings
        prefixes = [settings.prefix_for(task) for task in (tasks or [None] * len(texts))]
        prompts = [prefix + text + settings.suffix for prefix, text in zip(prefixes, texts, strict=True)]
        if settings.lowercase:
            prompts = [prompt.lower() for prompt in prompts]
        encodings = [encoding.ids for encoding in self._tokenizer.encode_batch(prompts)]
        length = padded_length(max(map(len, encodings), default=0), settings)
        ids = np.full((len(encodings), length), settings.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        for row, tokens in enumerate(encodings):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        result = {INPUT_IDS: ids}
        if settings.attention_mask:
            result[ATTENTION_MASK] = mask
        if settings.pool_mask:
            pool = mask.copy()
            hidden = {prefix: self.prefix_tokens(prefix) for prefix in set(prefixes)}  # once per distinct task
            for row, prefix in enumerate(prefixes):
                pool[row, : hidden[prefix]] = 0
            result[POOL_MASK] = pool
        return result

    def token_id(self, token: str) -> int | None:
        found = self._tokenizer.token_to_id(token)
        return None if found is None else int(found)

    def prefix_tokens(self, prefix: str) -> int:
        """How many leading positions the pool mask hides for PREFIX (see TextSettings.pool_mask)."""
        split = self.settings.pool_mask_split
        if not split:
            return len(self._tokenizer.encode(prefix, add_special_tokens=False).ids) if prefix else 0
        if split not in prefix:
            return 0
        return len(self._tokenizer.encode(prefix.split(split)[0], add_special_tokens=True).ids)


def padded_length(longest: int, settings: TextSettings) -> int:
    """The length a request whose longest text has LONGEST tokens is padded to."""
    if not settings.pad_to_longest:
        return settings.max_length
    bucket = MIN_TEXT_LENGTH
    while bucket < longest:
        bucket *= 2
    return min(bucket, settings.max_length)


def decode_text(data: bytes, max_bytes: int) -> str:
    """UTF-8 text from one request item, or InvalidInputError naming the bad byte offset or the size."""
    if len(data) > max_bytes:
        raise InvalidInputError(f"text is {len(data)} bytes, over the limit of {max_bytes}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInputError(f"text is not valid UTF-8 (byte {e.start}: {data[e.start : e.start + 1]!r})") from None


def task(data: bytes, max_bytes: int) -> str | None:
    """One item's instruction task from a request; an empty one means the model's default."""
    return decode_text(data, max_bytes) or None


def check_pooled(encoded: dict[str, np.ndarray]) -> None:
    """Refuse, naming the item, a text whose pool mask keeps no token (an empty text after an instruction
    that hides every position): its embedding would be 0/0."""
    if POOL_MASK not in encoded:
        return
    for row, count in enumerate(encoded[POOL_MASK].sum(axis=1)):
        if count == 0:
            raise InvalidInputError(f"item {row}: no token is left to embed: the instruction hides every token")
