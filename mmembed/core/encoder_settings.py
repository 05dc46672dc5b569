"""An encoder's settings as one typed file beside it (`encoder.json`), written by export and read by the
encoder's Triton model with the same dataclass: nothing travels as strings in config parameters."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from mmembed.core.contract import EncoderSpec
from mmembed.core.types import Precision, Runtime

ENCODER_SETTINGS_FILE = "encoder.json"


@dataclass(frozen=True, kw_only=True)
class EncoderSettings:
    spec: EncoderSpec
    runtime: Runtime
    precision: Precision
    max_batch_size: int
    # Runtime torch: the module that defines the family's `load_encoder` (imported inside tritonserver),
    # where the encoder runs ("cuda": each instance's own GPU, or "cpu"), torch.compile at load, and
    # CUDA graphs per batch-size bucket (kept only where they are not slower than eager).
    family_module: str = ""
    device: str = "cpu"
    compile: bool = False
    cuda_graphs: bool = True

    def to_json(self) -> str:
        fields = asdict(self)
        fields.update(runtime=self.runtime.value, precision=self.precision.value)
        return json.dumps({"encoder": fields}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> EncoderSettings:
        fields = json.loads(text)["encoder"]
        fields.update(
            spec=EncoderSpec.from_dict(fields["spec"]),
            runtime=Runtime(fields["runtime"]),
            precision=Precision(fields["precision"]),
        )
        return cls(**fields)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ENCODER_SETTINGS_FILE).write_text(self.to_json())

    @classmethod
    def load(cls, folder: Path) -> EncoderSettings:
        return cls.from_json((folder / ENCODER_SETTINGS_FILE).read_text())
