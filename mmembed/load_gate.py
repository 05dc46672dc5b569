"""The numeric gate at every server start, for every runtime: the served chain must still give the
embeddings export computed with the fp32 towers.

Export runs each tower through its gate, but some engines are only built where they are served: the
onnxruntime runtime's TensorRT execution provider compiles its fp16 engine at model load on the serving
GPU, and a TensorRT plan or the torch runtime meet drivers, kernels and DLPack handoffs export never saw.
So export stores a few photo-like JPEGs and captions with the fp32 towers' normalised embeddings of them
(`gate_reference.npz` beside each image ensemble's config), and `mmembed serve` sends them through the
served ensembles once every model is ready: a model under its precision's gate stops the start, naming
the model, the precision and the cosine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmembed.contract import IMAGE_INPUT, IMAGE_SUFFIX, TEXT_INPUT, TEXT_SUFFIX
from mmembed.numeric_gate import GateReport, gate
from mmembed.probe import http_embed

REFERENCE_FILE = "gate_reference.npz"


@dataclass(frozen=True, kw_only=True)
class GateReference:
    """Inputs a served model is checked with, and the fp32 towers' normalised embeddings of them."""

    precision: str
    images: list[bytes]
    texts: list[str]
    image_embeddings: np.ndarray  # [len(images), dim] float32
    text_embeddings: np.ndarray  # [len(texts), dim] float32

    def save(self, path: Path) -> None:
        encoded = [text.encode() for text in self.texts]
        np.savez(
            path,
            precision=np.array(self.precision),
            image_bytes=np.frombuffer(b"".join(self.images), dtype=np.uint8),
            image_sizes=np.array([len(image) for image in self.images], dtype=np.int64),
            text_bytes=np.frombuffer(b"".join(encoded), dtype=np.uint8),
            text_sizes=np.array([len(text) for text in encoded], dtype=np.int64),
            image_embeddings=self.image_embeddings.astype(np.float32),
            text_embeddings=self.text_embeddings.astype(np.float32),
        )

    @classmethod
    def load(cls, path: Path) -> GateReference:
        with np.load(path, allow_pickle=False) as stored:
            return cls(
                precision=str(stored["precision"]),
                images=_split(stored["image_bytes"], stored["image_sizes"]),
                texts=[text.decode() for text in _split(stored["text_bytes"], stored["text_sizes"])],
                image_embeddings=stored["image_embeddings"],
                text_embeddings=stored["text_embeddings"],
            )


def check_repository(
    repository: Path, http_port: int, api_key: str | None, timeout_s: float = 120.0
) -> list[GateReport]:
    """Gate every served model of REPOSITORY that has a reference; raise PrecisionGateError at the first
    one under its gate. Models exported before references existed are skipped."""
    reports = []
    for path in sorted(repository.glob(f"*{IMAGE_SUFFIX}/{REFERENCE_FILE}")):
        name = path.parent.name.removesuffix(IMAGE_SUFFIX)
        reference = GateReference.load(path)
        checks = (
            (IMAGE_SUFFIX, IMAGE_INPUT, reference.images, reference.image_embeddings, "images"),
            (TEXT_SUFFIX, TEXT_INPUT, [text.encode() for text in reference.texts], reference.text_embeddings, "texts"),
        )
        for suffix, input_name, items, expected, what in checks:
            served = http_embed(http_port, name + suffix, input_name, items, api_key, timeout_s)
            reports.append(gate(f"{name} served {what}", reference.precision, served, expected))
    return reports


def _split(data: np.ndarray, sizes: np.ndarray) -> list[bytes]:
    ends = np.cumsum(sizes)
    return [data[end - size : end].tobytes() for size, end in zip(sizes, ends, strict=True)]
