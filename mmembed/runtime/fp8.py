"""FP8 (e4m3) Linear layers through `torch._scaled_mm`, the matmul that runs on Hopper's fp8 tensor cores.

Scales are per row: each output channel of a weight (quantised once) and each token of an activation
(quantised per call, from its own current maximum) gets the scale that maps its largest magnitude to
e4m3's largest finite value (448). So no calibration data is needed, outliers never overflow, and one
large token (SigLIP has some) does not flatten every other token's resolution as one per-tensor scale
would. Only the layers a family names
(its transformer blocks' projections and MLPs) are replaced; patch embeddings, norms and pooling heads
keep the higher precision. `torch._scaled_mm` also runs on the CPU, so the CPU gives the same numbers
as a check, only slowly.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)  # 448.0
_ALIGNMENT = 16  # fp8 matmuls need both weight dimensions to be multiples of 16


def _quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D X in e4m3 and the fp32 scale of each row [rows, 1] that gives X back (x ~= q * scale)."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12)
    scale = amax / E4M3_MAX
    q = (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return q, scale


_fused: dict[str, Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = {}


def _quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`_quantize`, fused into one kernel by torch.compile on CUDA (eager it is five passes over X)."""
    if not x.is_cuda or _fused.get("failed"):
        return _quantize(x)
    try:
        if "quantize" not in _fused:
            _fused["quantize"] = torch.compile(_quantize, dynamic=True)
        return _fused["quantize"](x)
    except Exception:  # no working compiler here: stay correct, only slower
        _fused["failed"] = _quantize
        return _quantize(x)


class Fp8Linear(torch.nn.Module):
    """y = x W^T + b with W and x in e4m3 and the product accumulated in fp32, returned in `out_dtype`."""

    weight: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: torch.nn.Linear, out_dtype: torch.dtype) -> None:
        super().__init__()
        weight, scale = _quantize(linear.weight.detach())
        self.register_buffer("weight", weight)  # [out, in], row-major: its transpose is column-major
        self.register_buffer("weight_scale", scale.t().contiguous())  # [1, out]
        bias = linear.bias.detach().to(out_dtype) if linear.bias is not None else None
        self.register_buffer("bias", bias)
        self.out_dtype = out_dtype
        self.in_features = linear.in_features
        self.out_features = linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        q, scale = _quantize_activations(rows)
        out = torch._scaled_mm(q, self.weight.t(), scale_a=scale, scale_b=self.weight_scale, out_dtype=self.out_dtype)
        if self.bias is not None:  # added here: not every row-wise fp8 kernel takes a bias
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def convert_to_fp8(module: torch.nn.Module, scope: str, out_dtype: torch.dtype = torch.bfloat16) -> int:
    """Replace, in place, every nn.Linear whose qualified name matches the regex SCOPE and whose shape
    fp8 matmuls accept; return how many were replaced. The rest of MODULE is left as it is."""
    pattern = re.compile(scope)
    targets = [
        name
        for name, child in module.named_modules()
        if isinstance(child, torch.nn.Linear)
        and pattern.search("." + name)
        and child.in_features % _ALIGNMENT == 0
        and child.out_features % _ALIGNMENT == 0
    ]
    for name in targets:
        parent_name, _, attribute = name.rpartition(".")
        parent = module.get_submodule(parent_name)
        setattr(parent, attribute, Fp8Linear(getattr(parent, attribute), out_dtype))
    return len(targets)
