"""Image preprocessing on the encoder's device, so the CPUs stop being what limits a GPU.

JPEGs are decoded by nvJPEG on the GPU (`torchvision.io.decode_jpeg(device="cuda")`, one batched call per
request) where torchvision and a GPU are present; other formats, CMYK JPEGs, JPEGs nvJPEG refuses, and
every image on a CPU device take `preprocessing.decode_image` (Pillow), so each input gets exactly the
checks and the error messages of the default path. Resize, crop, rescale and normalise then run as torch
ops on the device, with the checkpoint's settings: antialiased bilinear/bicubic as Pillow computes them,
rounded to 8 bits between resize and rescale as Pillow's 8-bit images are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image

from mmembed.core.preprocessing import (
    MAX_ASPECT_RATIO,
    ImageSettings,
    InvalidInputError,
    decode_image,
    open_image,
)

# Pillow's resampling filter ids -> torch's interpolation modes with the same kernels (antialiased).
_MODES = {Image.Resampling.BILINEAR: "bilinear", Image.Resampling.BICUBIC: "bicubic"}
# EXIF orientation tag (0x0112) -> the transposition that makes the decoded pixels upright, on [3, h, w].
_ORIENTATIONS: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    1: lambda x: x,
    2: lambda x: x.flip(2),  # mirrored left-right
    3: lambda x: x.flip(1, 2),  # rotated 180
    4: lambda x: x.flip(1),  # mirrored top-bottom
    5: lambda x: x.transpose(1, 2),  # transposed
    6: lambda x: x.transpose(1, 2).flip(2),  # rotated 90 clockwise to be upright
    7: lambda x: x.transpose(1, 2).flip(1, 2),  # transversed
    8: lambda x: x.transpose(1, 2).flip(1),  # rotated 90 counter-clockwise to be upright
}


def upright(pixels: torch.Tensor, orientation: int) -> torch.Tensor:
    """PIXELS [3, h, w] as `ImageOps.exif_transpose` would turn an image with this EXIF orientation."""
    return _ORIENTATIONS.get(orientation, _ORIENTATIONS[1])(pixels)


class DevicePreprocessor:
    """Encoded images -> `pixel_values` [n, 3, height, width] float32 on DEVICE, as `preprocess_image`."""

    def __init__(self, settings: ImageSettings, device: str) -> None:
        if settings.resample not in _MODES:
            raise ValueError(
                f"image preprocessing on the device resizes with bilinear or bicubic filters; this checkpoint "
                f"asks for Pillow filter {settings.resample}: use the default (Pillow) preprocessing"
            )
        self.settings = settings
        self.device = torch.device(device)
        self.mode = _MODES[Image.Resampling(settings.resample)]
        self.decode_jpegs = _nvjpeg_decoder() if self.device.type == "cuda" else None
        mean = settings.image_mean or (0.0, 0.0, 0.0)
        std = settings.image_std or (1.0, 1.0, 1.0)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(3, 1, 1)

    def __call__(self, items: list[bytes]) -> torch.Tensor:
        """Pixels for every item, or InvalidInputError naming the first bad item and its problem."""
        pixels = []
        for index, image in enumerate(self.decode(items)):
            with _naming_item(index):
                pixels.append(self.resize_and_normalise(image))
        return torch.stack(pixels)

    def decode(self, items: list[bytes]) -> list[torch.Tensor]:
        """Each item as RGB uint8 [3, h, w] on the device, decoded as the settings' decode policy says."""
        images: dict[int, torch.Tensor] = {}
        for_nvjpeg: dict[int, int] = {}  # item -> its EXIF orientation
        for index, data in enumerate(items):
            with _naming_item(index):
                header = open_image(data, self.settings)
                orientation = self._orientation(header)
                if self.decode_jpegs is not None and orientation is not None and nvjpeg_can_decode(header, data):
                    for_nvjpeg[index] = orientation
                else:
                    images[index] = self._decode_on_cpu(data)
        decoded = self._decode_on_gpu([items[index] for index in for_nvjpeg])
        for (index, orientation), image in zip(for_nvjpeg.items(), decoded, strict=True):
            with _naming_item(index):
                images[index] = self._decode_on_cpu(items[index]) if image is None else upright(image, orientation)
        return [images[index] for index in range(len(items))]

    def _orientation(self, header: Image.Image) -> int | None:
        """The EXIF orientation to apply to nvJPEG's pixels (1 where the decode policy ignores EXIF), or None
        for EXIF Pillow cannot read: the Pillow path then decides, with the default path's message."""
        if not self.settings.decode.exif_orientation:
            return 1
        try:
            return int(header.getexif().get(0x0112, 1))
        except Exception:
            return None

    def _decode_on_gpu(self, jpegs: list[bytes]) -> list[torch.Tensor | None]:
        """nvJPEG's images, or Nones when it refuses the batch: Pillow then decodes them or names the bad one."""
        if not jpegs or self.decode_jpegs is None:
            return [None] * len(jpegs)
        try:
            return list(self.decode_jpegs([_as_tensor(data) for data in jpegs], self.device))
        except RuntimeError:
            return [None] * len(jpegs)

    def resize_and_normalise(self, image: torch.Tensor) -> torch.Tensor:
        """One uint8 [3, h, w] image -> float32 [3, height, width], as `preprocess_image` does it."""
        settings = self.settings
        _, height, width = image.shape
        if settings.shortest_edge is None:
            size = (settings.height, settings.width)
        else:
            short, long = sorted((height, width))
            if long > MAX_ASPECT_RATIO * short:
                raise InvalidInputError(f"image is {width}x{height}: aspect ratio over {MAX_ASPECT_RATIO}:1")
            new_short, new_long = settings.shortest_edge, int(settings.shortest_edge * long / short)
            size = (new_long, new_short) if width <= height else (new_short, new_long)
        pixels = self._resize_as_pillow(image, size)
        if settings.shortest_edge is not None:
            pixels = _center_crop(pixels, settings.height, settings.width)
        if settings.rescale_factor is not None:
            pixels = pixels * settings.rescale_factor
        return ((pixels - self.mean) / self.std).contiguous()

    def _resize_as_pillow(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """uint8 [3, h, w] -> float [3, *size] holding 8-bit values, as Pillow resizes: antialiased, the
        width first, each pass rounded and clipped to 0..255 (a bicubic overshoot at a hard edge is clipped
        before the second pass, which matters for line art and 1-bit images)."""
        pixels = image.unsqueeze(0).float()
        for pass_size in ((image.shape[1], size[1]), size):  # width, then height
            if tuple(pixels.shape[2:]) != pass_size:
                pixels = torch.nn.functional.interpolate(
                    pixels, size=pass_size, mode=self.mode, antialias=True, align_corners=False
                )
                pixels = torch.floor(pixels + 0.5).clamp_(0, 255)  # Pillow rounds half up, into 8 bits
        return pixels[0]

    def _decode_on_cpu(self, data: bytes) -> torch.Tensor:
        rgb = np.asarray(decode_image(data, self.settings))
        return torch.from_numpy(rgb.copy()).permute(2, 0, 1).to(self.device)


@contextmanager
def _naming_item(index: int) -> Iterator[None]:
    """InvalidInputError raised inside, with the item's index in front, as the default path words it."""
    try:
        yield
    except InvalidInputError as e:
        raise InvalidInputError(f"item {index}: {e}") from None


def _center_crop(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The centre height x width of [3, h, w], offsets rounded as torchvision's CenterCrop (half to even)."""
    _, full_height, full_width = pixels.shape
    if full_width < width or full_height < height:
        raise InvalidInputError(f"image resized to {full_width}x{full_height} is smaller than {width}x{height}")
    top, left = round((full_height - height) / 2), round((full_width - width) / 2)
    return pixels[:, top : top + height, left : left + width]


def nvjpeg_can_decode(header: Image.Image, data: bytes) -> bool:
    """A JPEG nvJPEG decodes as Pillow would: RGB or gray (not CMYK), ending in its end-of-image marker (a
    truncated file goes to Pillow, which refuses it with the default path's message)."""
    return header.format == "JPEG" and header.mode in ("RGB", "L") and data.rstrip(b"\0").endswith(b"\xff\xd9")


def _as_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def nvjpeg_available() -> bool:
    """Whether JPEGs can be decoded on the GPU here (torchvision importable; a GPU is checked by the caller)."""
    return _nvjpeg_decoder() is not None


def _nvjpeg_decoder() -> Callable[[list[torch.Tensor], torch.device], list[torch.Tensor]] | None:
    """torchvision's batched GPU JPEG decoder, or None where torchvision is not installed."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except (ImportError, RuntimeError, OSError):  # absent, or built for another torch
        return None

    def decode(jpegs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        decoded: list[torch.Tensor] = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)
        return decoded

    return decode
