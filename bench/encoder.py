"""The encoder alone, in this process: items/s at the largest batch, and where its GPU time goes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmembed.bench.gpu import wall_time
from mmembed.runtime.torch_encoder import TorchEncoder, as_tensors


@dataclass(frozen=True, kw_only=True)
class EncoderRate:
    items_per_s: float
    batch: int
    cuda_graphs: bool


def device_inputs(encoder: TorchEncoder, batch: int, seed: int) -> list[torch.Tensor]:
    """Random inputs for ENCODER, on its device in the dtypes it runs them in."""
    named = encoder.settings.spec.random_inputs(batch, seed=seed)
    return [
        x.to(encoder.device).to(encoder.input_dtype(spec))
        for x, spec in zip(as_tensors(named, encoder.settings), encoder.settings.spec.inputs, strict=True)
    ]


def encoder_rate(encoder: TorchEncoder, batch: int, seconds: float) -> EncoderRate:
    """Items/s of ENCODER at BATCH, cycling through three different input batches already on the device."""
    inputs = [device_inputs(encoder, batch, seed) for seed in range(3)]
    calls = [0]

    def run() -> int:
        encoder(inputs[calls[0] % len(inputs)])
        calls[0] += 1
        return batch

    run()  # first call: allocator and kernel warm-up outside the timing
    items, elapsed = wall_time(run, seconds)
    return EncoderRate(items_per_s=items / elapsed, batch=batch, cuda_graphs=bool(encoder.graphs))


def kernel_breakdown(encoder: TorchEncoder, batch: int) -> dict[str, float]:
    """Share of GPU kernel time by kind (matmul, attention, other) for one eager forward pass at BATCH."""
    from torch.profiler import ProfilerActivity, profile

    inputs = device_inputs(encoder, batch, seed=5)
    with torch.inference_mode():
        encoder.module(*inputs)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as trace:
            encoder.module(*inputs)
            torch.cuda.synchronize()
    shares = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    for event in trace.key_averages():
        time_us = float(getattr(event, "device_time_total", 0.0) or getattr(event, "cuda_time_total", 0.0))
        name = event.key.lower()
        if event.key.startswith("aten::") or time_us <= 0:
            continue  # operator rows repeat their kernels' time
        if "flash" in name or "fmha" in name or "attention" in name:
            shares["attention"] += time_us
        elif any(k in name for k in ("gemm", "xmma", "cutlass", "nvjet", "matmul", "scaled_mm", "sm90")):
            shares["matmul"] += time_us
        else:
            shares["other"] += time_us
    total = sum(shares.values()) or 1.0
    return {kind: value / total for kind, value in shares.items()}


ATTENTION_OPS = {  # the SDPA operator that ran -> the backend it names
    "aten::_scaled_dot_product_cudnn_attention": "cuDNN",
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_efficient_attention": "memory-efficient",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "aten::_scaled_dot_product_attention_math": "math (unfused)",
}


def attention_backend(module: torch.nn.Module, inputs: list[torch.Tensor]) -> str:
    """Which scaled-dot-product attention kernels one eager forward of MODULE ran (from the profiler's
    operator names), or "matmul + softmax" when it computes attention without SDPA."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as trace:
        module(*inputs)
    ran = {event.key for event in trace.key_averages()}
    found = sorted({backend for op, backend in ATTENTION_OPS.items() if op in ran})
    return ", ".join(found) or "matmul + softmax (no SDPA)"
