"""Checkpoints load in transformers; exported graphs are gated on parity with the PyTorch towers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModel, AutoProcessor, SiglipConfig, SiglipModel

from mmembed.core.numeric_gate import PrecisionGateError
from mmembed.export.onnx_graph import check_parity, export_encoder
from mmembed.families import get_family
from mmembed.families.siglip2.checkpoint import official_files


def test_checkpoint_loads_with_auto_classes(checkpoint: Path) -> None:
    assert type(AutoModel.from_pretrained(checkpoint)).__name__ == "SiglipModel"
    processor = AutoProcessor.from_pretrained(checkpoint)
    assert type(processor).__name__ == "SiglipProcessor"
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in checkpoint.iterdir()
    }


def test_so400m_size_has_the_published_parameter_count() -> None:
    """1,136,555,698 parameters: the size implied by google/siglip2-so400m-patch16-512's safetensors file."""
    config = json.loads(official_files("so400m-512")["config.json"])
    with torch.device("meta"):
        model = SiglipModel(SiglipConfig.from_dict(config))
    assert sum(p.numel() for p in model.parameters()) == 1_136_555_698


def test_parity_gate_refuses_a_graph_that_differs(checkpoint: Path, tmp_path: Path) -> None:
    family = get_family("siglip2")
    spec = family.describe(checkpoint).encoder("vision")
    vision = family.load_encoders(checkpoint)["vision"]
    graph = export_encoder(vision, spec, tmp_path)
    report = check_parity(vision, spec, graph, name="vision")
    assert report.min_cosine >= 0.9999 and report.max_abs_error < 1e-4
    model: Any = vision
    with torch.no_grad():  # now the PyTorch tower no longer matches the exported graph
        model.model.vision_model.post_layernorm.weight.mul_(-1.0)
        model.model.vision_model.head.mlp.fc2.bias.add_(3.0)
    with pytest.raises(PrecisionGateError, match=r"vision fp32: .* \(gate 0\.9999\): under the gate"):
        check_parity(vision, spec, graph, name="vision")
