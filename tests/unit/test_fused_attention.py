"""SigLIP-2's torch-runtime encoders run attention with one fused QKV projection: the same outputs as
transformers' three projections, one wide Linear per layer, which fp8 quantises like the others."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmembed.families import get_family
from mmembed.families.siglip2.fused_attention import FusedSelfAttention
from mmembed.runtime.fp8 import Fp8Linear
from mmembed.runtime.torch_encoder import convert_precision

FAMILY = get_family("siglip2")


@pytest.mark.parametrize("name", ["vision", "text"])
def test_fused_attention_computes_what_transformers_does(checkpoint: Path, tmp_path: Path, name: str) -> None:
    spec = FAMILY.describe(checkpoint).encoder(name)
    unfused = FAMILY.load_encoders(checkpoint)[name]
    FAMILY.save_encoder(name, unfused, tmp_path)
    fused = FAMILY.load_encoder(name, tmp_path)
    attention = [m for m in fused.modules() if isinstance(m, FusedSelfAttention)]
    assert attention and not any(hasattr(m, "q_proj") for m in fused.modules())
    calls: list[int] = []
    for module in attention:
        module.qkv.register_forward_hook(lambda *_: calls.append(1))
    named = spec.random_inputs(3, seed=7)
    inputs = [torch.from_numpy(named[item.name]) for item in spec.inputs]
    with torch.no_grad():
        expected, actual = unfused(*inputs).numpy(), fused(*inputs).numpy()
    assert len(calls) == len(attention)  # the fused projection is what ran, once per layer
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_fp8_quantises_the_fused_projection(checkpoint: Path, tmp_path: Path) -> None:
    FAMILY.save_encoder("vision", FAMILY.load_encoders(checkpoint)["vision"], tmp_path)
    scope = FAMILY.describe(checkpoint).encoder("vision").precision_scope
    module = convert_precision(FAMILY.load_encoder("vision", tmp_path), "fp8", scope)
    attention = [m for m in module.modules() if isinstance(m, FusedSelfAttention)]
    assert attention and all(isinstance(m.qkv, Fp8Linear) for m in attention)
