"""Image files as users hold them, not as our own code writes them.

- `odd_files()`: valid files whose decoding differs between pipelines (transparency, EXIF orientation,
  16-bit and float samples, CMYK, layers and frames): the decode-policy parity tests use them.
- `format_corpus()`: every format Pillow registers on this machine. Formats Pillow writes are written
  by Pillow, in the modes each writer takes; formats it only reads are put together here byte by byte
  from their specifications. Each valid file also comes truncated and with bytes broken in the middle;
  then oversized headers, multi-frame files whose frames do not start at 0, and bytes that only look
  like an image. `test_every_format_*` assert: a unit vector or a clean INVALID_ARGUMENT, never more.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

PHOTO_SIZE = (96, 72)  # the odd files' size: not square, so rotations and crops show


def photo(width: int = 160, height: int = 120, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: smooth gradients plus noise, so resizing and JPEG both matter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _rgba_with_hidden_colour() -> Image.Image:
    """Transparent where the colour underneath is vivid: dropping alpha and compositing differ a lot."""
    rgba = photo(*PHOTO_SIZE, seed=11).convert("RGBA")
    alpha = np.zeros(PHOTO_SIZE[::-1], dtype=np.uint8)
    alpha[:, PHOTO_SIZE[0] // 2 :] = 255
    alpha[: PHOTO_SIZE[1] // 3] = 128
    rgba.putalpha(Image.fromarray(alpha))
    return rgba


def _sixteen_bit() -> Image.Image:
    """A 16-bit grayscale ramp over the whole 0..65535 range (Pillow's convert clips it at 255)."""
    ramp = np.linspace(0, 65535, PHOTO_SIZE[0] * PHOTO_SIZE[1]).reshape(PHOTO_SIZE[::-1])
    return Image.fromarray(ramp.astype(np.uint16))


def _frames(fmt: str, **options: object) -> bytes:
    first, second = photo(*PHOTO_SIZE, seed=21), photo(*PHOTO_SIZE, seed=22).rotate(180)
    if fmt == "GIF":
        first, second = first.quantize(64), second.quantize(64)
    return encode(first, fmt, save_all=True, append_images=[second], **options)


def odd_files() -> dict[str, bytes]:
    """Valid files that the reference pipelines decode differently from a photo viewer."""
    palette = photo(*PHOTO_SIZE, seed=12).quantize(32)
    palette.info["transparency"] = 0
    return {
        "rgba-png": encode(_rgba_with_hidden_colour(), "PNG"),
        "rgba-webp": encode(_rgba_with_hidden_colour(), "WEBP", lossless=True),
        "palette-transparency-png": encode(palette, "PNG", transparency=0),
        "gray-alpha-png": encode(_rgba_with_hidden_colour().convert("LA"), "PNG"),
        "exif-rotated-jpeg": encode(photo(*PHOTO_SIZE, seed=13), "JPEG", quality=95, exif=_exif(6)),
        "exif-transposed-jpeg": encode(photo(*PHOTO_SIZE, seed=14), "JPEG", quality=95, exif=_exif(5)),
        "16bit-png": encode(_sixteen_bit(), "PNG"),
        "16bit-tiff": encode(_sixteen_bit(), "TIFF"),
        "float-tiff": encode(_sixteen_bit().convert("F"), "TIFF"),
        "cmyk-jpeg": encode(photo(*PHOTO_SIZE, seed=15).convert("CMYK"), "JPEG", quality=95),
        "cmyk-tiff": encode(photo(*PHOTO_SIZE, seed=16).convert("CMYK"), "TIFF"),
        "gray-jpeg": encode(photo(*PHOTO_SIZE, seed=17).convert("L"), "JPEG", quality=95),
        "1bit-png": encode(photo(*PHOTO_SIZE, seed=18).convert("1"), "PNG"),
        "animated-gif": _frames("GIF"),
        "animated-webp": _frames("WEBP", lossless=True),
        "animated-png": _frames("PNG"),
        "multipage-tiff": _frames("TIFF"),
        "mpo": _frames("MPO"),
        "layered-psd": psd_with_layers(),
    }


# --- formats Pillow only reads, put together from their specifications ------------------------------


def psd_with_layers() -> bytes:
    """An RGB Photoshop file: a merged image plus two layers. Pillow numbers a PSD's layers from 1."""
    width, height = 8, 6
    colours = [(200, 30, 30), (30, 30, 200)]
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    records, channel_data = b"", b""
    for index, colour in enumerate(colours):
        records += struct.pack(">iiiiH", 0, 0, height, width, 3)
        for channel in range(3):
            records += struct.pack(">hI", channel, 2 + width * height)
        name = f"layer {index}".encode()
        pascal = bytes([len(name)]) + name
        pascal += b"\0" * (-len(pascal) % 4)
        extra = struct.pack(">II", 0, 0) + pascal
        records += b"8BIMnorm" + bytes([255, 0, 0, 0]) + struct.pack(">I", len(extra)) + extra
        for value in colour:
            channel_data += struct.pack(">H", 0) + bytes([value]) * (width * height)
    layer_info = struct.pack(">h", len(colours)) + records + channel_data
    layer_info += b"\0" * (len(layer_info) % 2)
    layers = struct.pack(">I", len(layer_info)) + layer_info + struct.pack(">I", 0)
    merged = struct.pack(">H", 0) + b"".join(bytes([v]) * (width * height) for v in (120, 60, 90))
    return header + struct.pack(">I", 0) + struct.pack(">I", 0) + struct.pack(">I", len(layers)) + layers + merged


def _xpm() -> bytes:
    rows = ["abab", "baba", "abab"]
    lines = ["4 3 2 1", "a c #FF0000", "b c #0000FF", *rows]
    return ("/* XPM */\nstatic char *image[] = {\n" + ",\n".join(f'"{line}"' for line in lines) + "\n};\n").encode()


def _sun() -> bytes:
    width, height = 4, 3
    row = bytes(range(3 * width))  # 24-bit BGR, rows padded to 16 bits (12 bytes: already even)
    return struct.pack(">8I", 0x59A66A95, width, height, 24, len(row) * height, 1, 0, 0) + row * height


def _imt() -> bytes:
    return b"width 4\nheight 3\npixel n8\n\x0c" + bytes(range(12))


def _gbr() -> bytes:
    name = b"brush\0"
    header = struct.pack(">IIIII", 28 + len(name), 2, 4, 3, 1) + b"GIMP" + struct.pack(">I", 10) + name
    return header + bytes(range(0, 240, 20))


def _fits() -> bytes:
    cards = ["SIMPLE  =                    T", "BITPIX  =                    8", "NAXIS   =                    2"]
    cards += ["NAXIS1  =                    4", "NAXIS2  =                    3", "END"]
    header = "".join(card.ljust(80) for card in cards).ljust(2880).encode()
    return header + bytes(range(12)).ljust(2880, b"\0")


def _dcx() -> bytes:
    pages = [encode(photo(16, 12, seed=s), "PCX") for s in (1, 2)]
    offsets = [8 + 4 * len(pages)]
    offsets.append(offsets[0] + len(pages[0]))
    return struct.pack("<I", 0x3ADE68B1) + struct.pack(f"<{len(pages)}II", *offsets, 0) + b"".join(pages)


def _cur() -> bytes:
    """A Windows cursor: an icon file with type 2 (Pillow writes icons, not cursors)."""
    icon = encode(photo(32, 32, seed=3), "ICO", sizes=[(32, 32)], bitmap_format="bmp")
    return icon[:2] + struct.pack("<H", 2) + icon[4:]


def _xvthumb() -> bytes:
    return b"P7 332\n#XVVERSION:Version 2.28\n#END_OF_COMMENTS\n4 3 255\n" + bytes(range(0, 240, 20))


def _ftex() -> bytes:
    width, height = 4, 3
    pixels = bytes(range(3 * width * height))
    header = b"FTEX" + struct.pack("<5i", 1, width, height, 1, 1) + struct.pack("<2i", 1, 40)
    return header + b"\0" * (40 - len(header) - 4) + b"\0\0\0\0" + struct.pack("<i", len(pixels)) + pixels


def _pixar() -> bytes:
    header = bytearray(512)
    header[:4] = b"\200\350\000\000"
    struct.pack_into("<HHHH", header, 416, 3, 4, 0, 0)  # height, width
    struct.pack_into("<HH", header, 424, 14, 2)  # RGB
    return bytes(header).ljust(1024, b"\0") + bytes(range(36))


def _mcidas() -> bytes:
    words = [0] * 64  # Pillow numbers these from 1: words[i] is its w[i + 1]
    words[1] = 4  # the format's magic
    words[8], words[9], words[10], words[13] = 3, 4, 1, 1  # height, width, bytes per sample, bands
    words[33] = 256  # where the data starts
    return struct.pack("!64i", *words) + bytes(range(12))


def _fli() -> bytes:
    width, height = 4, 3
    copy = struct.pack("<IH", 6 + width * height, 16) + bytes(range(0, 240, 20))
    frame = struct.pack("<IHH8x", 16 + len(copy), 0xF1FA, 1) + copy
    header = struct.pack("<IHHHHHHI", 128 + len(frame), 0xAF12, 1, width, height, 8, 0, 5).ljust(128, b"\0")
    return header + frame


def _iptc() -> bytes:
    def field(record: int, tag: int, value: bytes) -> bytes:
        return struct.pack(">BBBH", 0x1C, record, tag, len(value)) + value

    pixels = bytes(range(12))
    return (
        field(3, 60, bytes([1, 0]))
        + field(3, 20, struct.pack(">H", 4))
        + field(3, 30, struct.pack(">H", 3))
        + field(3, 120, bytes([1]))  # raw
        + field(8, 10, pixels)
    )


def _pcd() -> bytes:
    data = bytearray(96 * 2048 + 768 * 512 * 3 // 2)
    data[2048 : 2048 + 7] = b"PCD_IPI"
    return bytes(data)


def _mpeg_header_only() -> bytes:
    return b"\x00\x00\x01\xb3" + bytes([0x06, 0x00, 0x48, 0x13]) + b"\0" * 32


def _stub(magic: bytes) -> Callable[[], bytes]:
    """The start of a format Pillow recognises and leaves to a handler an application registers."""
    return lambda: magic + bytes(range(64))


CRAFTED: dict[str, Callable[[], bytes]] = {
    "BUFR": _stub(b"BUFR"),
    "GRIB": _stub(b"GRIB\0\0\0\x01"),
    "HDF5": _stub(b"\x89HDF\r\n\x1a\n"),
    "WMF": _stub(b"\xd7\xcd\xc6\x9a\0\0" + struct.pack("<4hH4xH", 0, 0, 100, 100, 1000, 0) + b"\x01\0\x09\0"),
    "CUR": _cur,
    "DCX": _dcx,
    "FITS": _fits,
    "FLI": _fli,
    "FTEX": _ftex,
    "GBR": _gbr,
    "IMT": _imt,
    "IPTC": _iptc,
    "MCIDAS": _mcidas,
    "MPEG": _mpeg_header_only,
    "PCD": _pcd,
    "PIXAR": _pixar,
    "PSD": psd_with_layers,
    "SUN": _sun,
    "XPM": _xpm,
    "XVTHUMB": _xvthumb,
}

# The modes each writer is given (those it writes and Pillow reads back here); formats not named take RGB.
WRITER_MODES: dict[str, tuple[str, ...]] = {
    "AVIF": ("RGB", "RGBA", "L"),
    "BLP": ("P",),
    "BMP": ("RGB", "RGBA", "L", "P", "1"),
    "DDS": ("RGB", "RGBA", "L", "LA"),
    "DIB": ("RGB", "RGBA", "L", "P", "1"),
    "GIF": ("P", "L", "RGB", "RGBA"),
    "ICNS": ("RGBA", "RGB"),
    "ICO": ("RGBA", "RGB", "P"),
    "IM": ("RGB", "L", "LA", "P", "1", "I;16", "I", "F", "CMYK", "YCbCr"),
    "JPEG": ("RGB", "L", "CMYK", "YCbCr"),
    "JPEG2000": ("RGB", "RGBA", "L", "LA", "I;16", "YCbCr"),
    "MPO": ("RGB", "L", "CMYK"),
    "MSP": ("1",),
    "PALM": ("P", "1"),
    "PCX": ("RGB", "L", "P", "1"),
    "PNG": ("RGB", "RGBA", "L", "LA", "P", "1", "I;16"),
    "PPM": ("RGB", "L", "1", "I;16", "I", "F"),
    "QOI": ("RGB", "RGBA"),
    "SGI": ("RGB", "RGBA", "L"),
    "SPIDER": ("F",),
    "TGA": ("RGB", "RGBA", "L", "LA", "P", "1"),
    "TIFF": ("RGB", "RGBA", "L", "LA", "P", "1", "I;16", "I", "F", "CMYK", "LAB", "YCbCr"),
    "WEBP": ("RGB", "RGBA", "L"),
    "XBM": ("1",),
}
# Stub formats: their writers need a handler an application registers (none here); they are crafted.
STUB_WRITERS = {"BUFR", "GRIB", "HDF5", "WMF"}


def _in_mode(mode: str) -> Image.Image:
    base = photo(48, 36, seed=5)
    if mode == "P":
        return base.quantize(64)
    if mode == "I;16":
        return Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257)
    if mode in ("F", "I"):
        return base.convert("L").convert(mode)
    return base.convert(mode)


def written_files() -> dict[str, bytes]:
    """One file per writer and mode Pillow can write here, keyed FORMAT-mode (PDF and PALM too, which
    Pillow writes but does not read)."""
    Image.init()
    files = {}
    for fmt in sorted(Image.SAVE):
        if fmt in STUB_WRITERS:
            continue
        for mode in WRITER_MODES.get(fmt, ("RGB",)):
            files[f"{fmt}-{mode}"] = encode(_in_mode(mode), fmt)
    files["SPIDER-stack"] = _frames("SPIDER") if "SPIDER" in Image.SAVE_ALL else encode(_in_mode("F"), "SPIDER")
    files["MPO-two-frames"] = _frames("MPO")
    return files


def _broken(data: bytes) -> dict[str, bytes]:
    """Truncated at half, cut right after the header, and with a stretch in the middle overwritten."""
    middle = bytearray(data)
    start = len(data) // 3
    middle[start : start + max(8, len(data) // 10)] = b"\xa5" * max(8, len(data) // 10)
    return {"truncated": data[: len(data) // 2], "header-only": data[:32], "overwritten": bytes(middle[: len(data)])}


def _oversized() -> dict[str, bytes]:
    """Headers that declare far more pixels than the limit, with hardly any data behind them."""
    png = encode(Image.new("L", (4, 4)), "PNG")
    header = b"IHDR" + struct.pack(">II", 30000, 30000) + png[24:29]
    huge_png = png[:12] + header + struct.pack(">I", zlib.crc32(header)) + png[33:]
    bmp = encode(Image.new("RGB", (4, 4)), "BMP")
    huge_bmp = bmp[:18] + struct.pack("<ii", 40000, 40000) + bmp[26:]
    return {"oversized-png": huge_png, "oversized-bmp": huge_bmp, "zero-size-ppm": b"P6 0 0 255\n"}


def _impostors() -> dict[str, bytes]:
    """Bytes that start like an image and are not one, and things that are not images at all."""
    return {
        "jpeg-magic-only": b"\xff\xd8\xff\xe0" + b"\0" * 20,
        "png-magic-only": b"\x89PNG\r\n\x1a\n",
        "gif-magic-and-size": b"GIF89a\x04\x00\x03\x00",
        "pdf": b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n",
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>',
        "text": "not an image at all, just UTF-8 text ✓".encode(),
    }


def format_corpus() -> dict[str, bytes]:
    """Every registered format, valid and broken, plus oversized and impostor files: name -> bytes."""
    valid = {**written_files(), **{f"{fmt}-crafted": make() for fmt, make in CRAFTED.items()}}
    corpus = dict(valid)
    for name, data in valid.items():
        for variant, broken in _broken(data).items():
            corpus[f"{name}-{variant}"] = broken
    return {**corpus, **_oversized(), **_impostors(), **{f"odd-{k}": v for k, v in odd_files().items()}}


def registered_formats() -> set[str]:
    """Every format Pillow can open or write on this machine."""
    Image.init()
    return set(Image.OPEN) | set(Image.SAVE)


BROKEN_VARIANTS = ("-truncated", "-header-only", "-overwritten")
# Files of the corpus that are not broken and still cannot be decoded here, each with what its error says.
UNDECODABLE = {
    "EPS-RGB": "needs Ghostscript",
    "PALM-P": "cannot identify image format",  # Pillow writes Palm and PDF files but does not read them
    "PALM-1": "cannot identify image format",
    "PDF-RGB": "cannot identify image format",
    "BUFR-crafted": "unsupported BUFR file",
    "GRIB-crafted": "unsupported GRIB file",
    "HDF5-crafted": "unsupported HDF5 file",
    "WMF-crafted": "unsupported WMF file",
    "MPEG-crafted": "unsupported MPEG file",  # identified, never decoded: Pillow has no MPEG decoder
    "oversized-png": "too many pixels",
    "oversized-bmp": "too many pixels",
    "zero-size-ppm": "cannot identify image format",
    "jpeg-magic-only": "cannot identify image format",
    "png-magic-only": "cannot identify image format",
    "gif-magic-and-size": "cannot identify image format",
    "pdf": "cannot identify image format",
    "svg": "cannot identify image format",
    "text": "cannot identify image format",
}
