"""Print the parity table of docs/CORRECTNESS.md for NV-Embed-v2 and MM-Embed: tiny checkpoints exported
as ONNX (fp32) and for the torch runtime (bf16, CPU), served, and compared with tests/nvembed_reference.py.

Run: `.venv/bin/python tests/nvembed_parity.py` (about a minute on two cores; Python puts tests/ on the
path for the reference and image helpers).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from image_files import encode, photo
from nvembed_reference import DEFAULT_INSTRUCTION, ReferenceMMEmbed, ReferenceNVEmbed
from PIL import Image

from mmembed.client import EmbeddingClient
from mmembed.core.types import Precision, Runtime
from mmembed.export import ExportRequest, export_model
from mmembed.families import get_family
from mmembed.serving.server import ServerSettings, TritonServer

TASK = "Retrieve images that match the description"
TEXTS = [
    "are judo throws allowed in wrestling?",
    "a photo of two cats on a red car",
    "the city at night " * 30,
    "é 猫 🐱",
]
PHOTOS = [encode(photo(96, 72, seed=seed), "JPEG") for seed in range(4)]
Row = tuple[str, np.ndarray, np.ndarray]


def nvembed_rows(client: EmbeddingClient, model: str, checkpoint: Path) -> list[Row]:
    reference = ReferenceNVEmbed(checkpoint, max_length=64)
    return [
        ("documents", client.embed_texts(model, TEXTS), reference.embed(TEXTS)),
        (
            "default-task queries",
            client.embed_texts(model, TEXTS, query=True),
            reference.embed(TEXTS, DEFAULT_INSTRUCTION),
        ),
        (
            "own-task queries",
            client.embed_texts(model, TEXTS, query=True, instruction=TASK),
            reference.embed(TEXTS, f"Instruct: {TASK}\nQuery: "),
        ),
    ]


def mm_embed_rows(client: EmbeddingClient, model: str, checkpoint: Path) -> list[Row]:
    reference = ReferenceMMEmbed(checkpoint)
    pictures = [Image.open(io.BytesIO(data)) for data in PHOTOS]
    pairs, picture_pairs = list(zip(PHOTOS, TEXTS, strict=True)), list(zip(pictures, TEXTS, strict=True))
    texts: list[tuple[object | None, str]] = [(None, text) for text in TEXTS]
    return [
        ("texts", client.embed_texts(model, TEXTS), reference.embed_items(texts, False)),
        (
            "tasked queries",
            client.embed_texts(model, TEXTS, query=True, instruction=TASK),
            reference.embed_items(texts, True, TASK),
        ),
        ("images", client.embed_images(model, PHOTOS), reference.embed_items([(p, "") for p in pictures], False)),
        ("images + texts", client.embed_multimodal(model, pairs), reference.embed_items(picture_pairs, False)),
        (
            "tasked image queries",
            client.embed_multimodal(model, pairs, query=True, instruction=TASK),
            reference.embed_items(picture_pairs, True, TASK),
        ),
    ]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="mmembed-parity-"))
    print("| model | what | min cosine | max abs |\n| --- | --- | --- | --- |")
    for name, rows in (("nvembed2", nvembed_rows), ("mm_embed", mm_embed_rows)):
        family, checkpoint, repository = get_family(name), work / name, work / f"{name}-repository"
        family.make_checkpoint("tiny", checkpoint)
        export_model(ExportRequest(family=family, checkpoint=checkpoint, repository=repository), log=lambda _: None)
        torch_model = ExportRequest(
            family=family,
            checkpoint=checkpoint,
            repository=repository,
            name=f"{name}_torch",
            runtime=Runtime.TORCH,
            precision=Precision.BF16,
            device="cpu",
        )
        export_model(torch_model, log=lambda _: None)
        with (
            TritonServer(ServerSettings.on_free_ports(repository)) as server,
            EmbeddingClient(server.grpc_url) as client,
        ):
            for model in (name, f"{name}_torch"):
                for what, served, expected in rows(client, model, checkpoint):
                    cosine, error = (served * expected).sum(axis=1).min(), np.abs(served - expected).max()
                    print(f"| {model} | {what} | {cosine:.8f} | {error:.1e} |")


if __name__ == "__main__":
    main()
