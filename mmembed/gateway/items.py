"""A request's `input` as the texts and images to embed, each with the caller's index.

Image strings are data URIs or plain base64, decoded here, or http(s) URLs, fetched only where the
operator allow-listed their hosts (`fetch.FetchPolicy`). A string is never read as a path.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from mmembed.gateway.errors import ApiError, bad_input
from mmembed.gateway.wire import EmbeddingRequest, ImageItem, TextItem


@dataclass
class Items:
    texts: list[tuple[int, str]] = field(default_factory=list)  # (index in the caller's input, text)
    images: list[tuple[int, bytes]] = field(default_factory=list)  # (index, encoded image)
    urls: list[tuple[int, str]] = field(default_factory=list)  # (index, image URL) still to fetch

    def __len__(self) -> int:
        return len(self.texts) + len(self.images) + len(self.urls)


def parse_items(request: EmbeddingRequest, max_items: int, fetch_urls: bool) -> Items:
    """The request's items; FETCH_URLS: whether image URLs are fetched (else they are refused)."""
    raw = [request.input] if isinstance(request.input, str) else request.input
    if not raw:
        raise bad_input("input must hold at least one item", code="empty_input")
    if len(raw) > max_items:
        raise ApiError(
            400,
            f"input holds {len(raw)} items, over this server's limit of {max_items}",
            param="input",
            code="too_many_items",
        )
    items = Items()
    for index, item in enumerate(raw):
        if isinstance(item, ImageItem) or (isinstance(item, str) and request.modality == "image"):
            value = item.image if isinstance(item, ImageItem) else item
            if value.startswith(("http://", "https://")) and fetch_urls:
                items.urls.append((index, value))
            else:
                items.images.append((index, image_bytes(value, index)))
        else:
            items.texts.append((index, item.text if isinstance(item, TextItem) else item))
    return items


def image_bytes(value: str, index: int) -> bytes:
    """An image item's bytes: a data URI (`data:image/png;base64,...`) or plain base64."""
    if value.startswith(("http://", "https://")):
        raise bad_input(
            f"input[{index}]: image URLs are not fetched by this server; send the image itself as a data URI or base64",
            code="url_not_fetched",
        )
    payload = value
    if value.startswith("data:"):
        header, comma, payload = value.partition(",")
        if not comma or not header.endswith(";base64"):
            raise bad_input(f"input[{index}]: a data URI must look like data:image/...;base64,<payload>")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise bad_input(f"input[{index}]: the image is not valid base64 ({e})") from None
