"""Runtime torch through a real tritonserver: described to clients, and gated again when it loads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import TORCH_MODEL, overflowing_checkpoint

from mmembed.client import EmbeddingClient
from mmembed.core.encoder_settings import EncoderSettings
from mmembed.core.types import Precision, Runtime
from mmembed.export import ExportRequest, export_model
from mmembed.families import get_family
from mmembed.serving.server import ServeError, ServerSettings, TritonServer


def test_torch_model_describes_its_runtime_and_precision(client: EmbeddingClient) -> None:
    (info,) = [model for model in client.list_models() if model.name == TORCH_MODEL]
    assert (info.runtime, info.precision, info.dimension) == ("torch", "bf16", 64)


def test_a_model_that_fails_the_gate_at_load_is_not_served(checkpoint: Path, tmp_path: Path) -> None:
    """Exported in fp32, then set to fp16 (as a hand-edited config or another machine might): at load the
    fp16 tower overflows, the gate refuses it, and the server names the model and the reason."""
    tampered = overflowing_checkpoint(checkpoint, tmp_path / "checkpoint")
    repository = tmp_path / "repository"
    request = ExportRequest(
        family=get_family("siglip2"),
        checkpoint=tampered,
        repository=repository,
        name="overflow",
        runtime=Runtime.TORCH,
        device="cpu",
    )
    export_model(request, log=lambda line: None)
    version = repository / "overflow_vision_encoder" / "1"
    replace(EncoderSettings.load(version), precision=Precision.FP16).save(version)
    settings = ServerSettings.on_free_ports(repository)
    with pytest.raises(ServeError, match=r"overflow_vision_encoder(.|\n)*fp16: \d+ of \d+ outputs hold NaN or Inf"):
        TritonServer(settings).start()
