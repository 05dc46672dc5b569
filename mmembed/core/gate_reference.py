"""The load gate's reference, stored beside each ensemble's config (`gate_reference.npz`): a few real
items per ensemble input and the fp32 encoder's normalised embeddings of them.

Export writes it; `mmembed serve` sends the items through the served ensemble at every start and
compares (`serving.load_gate`); the watchdog's probes reuse its first item.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFERENCE_FILE = "gate_reference.npz"


@dataclass(frozen=True, kw_only=True)
class GateReference:
    precision: str
    inputs: dict[str, list[bytes]]  # ensemble input name -> items, the same count for every input
    embeddings: np.ndarray  # [items, dimension] float32

    def save(self, path: Path) -> None:
        arrays = {"precision": np.array(self.precision), "names": np.array(sorted(self.inputs))}
        for name, items in self.inputs.items():
            arrays[f"{name}_bytes"] = np.frombuffer(b"".join(items), dtype=np.uint8)
            arrays[f"{name}_sizes"] = np.array([len(item) for item in items], dtype=np.int64)
        np.savez(path, embeddings=self.embeddings.astype(np.float32), **arrays)

    @classmethod
    def load(cls, path: Path) -> GateReference:
        with np.load(path, allow_pickle=False) as stored:
            names = [str(name) for name in stored["names"]]
            return cls(
                precision=str(stored["precision"]),
                inputs={name: _split(stored[f"{name}_bytes"], stored[f"{name}_sizes"]) for name in names},
                embeddings=stored["embeddings"],
            )


def _split(data: np.ndarray, sizes: np.ndarray) -> list[bytes]:
    ends = np.cumsum(sizes)
    return [data[end - size : end].tobytes() for size, end in zip(sizes, ends, strict=True)]
