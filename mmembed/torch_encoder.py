"""One tower run by torch: in the precision asked for, gated against fp32, replayed as CUDA graphs.

This is what the torch runtime's Triton model does at load and per batch, with no Triton in it, so the
same code is tested on the CPU, used by export's gate and timed by the benchmark.

At construction the fp32 tower computes a reference on fresh inputs, is converted in place to the
precision (bf16/fp16 casts; fp8 swaps the blocks' Linear layers for `Fp8Linear`), and must reproduce the
reference within `numeric_gate.MIN_COSINE`, else PrecisionGateError. On CUDA it then captures one graph
per batch-size bucket (a batch is padded up to the next bucket), so a call costs one graph launch instead
of a Python-driven launch per kernel, checks the graphs against eager execution, and keeps them only if
replaying the largest bucket is not slower than running it eagerly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from mmembed.families.base import TowerSpec
from mmembed.fp8 import convert_to_fp8
from mmembed.numeric_gate import MIN_COSINE, GateReport, gate

PRECISION_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp8": torch.bfloat16,  # fp8 matmuls, everything else (and their outputs) in bf16
}


def batch_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two, with the midpoint 1.5x steps from 8 up, and MAX_BATCH_SIZE itself.

    Padding a batch to the next bucket wastes at most a third of its work above 8 items."""
    sizes = {max_batch_size}
    size = 1
    while size < max_batch_size:
        sizes.add(size)
        if size >= 8 and size * 3 // 2 < max_batch_size:
            sizes.add(size * 3 // 2)
        size *= 2
    return tuple(sorted(sizes))


@dataclass(frozen=True, kw_only=True)
class EncoderOptions:
    precision: str = "fp32"
    device: str = "cpu"
    max_batch_size: int = 64
    cuda_graphs: bool = True
    gate_batch: int = 8
    gate_seed: int | None = None  # None: fresh random inputs at every build (a fixed seed is for tests)
    # torch.compile (inductor, dynamic batch): fuses the norms, GELU, bias and residual passes that take
    # 42% of the SO400M vision tower's GPU time in eager mode; costs a compile at load. The gate and the
    # CUDA graphs then use the compiled module.
    compile: bool = False


@dataclass(kw_only=True)
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: torch.Tensor
    outputs: torch.Tensor


@dataclass(kw_only=True)
class TorchEncoder:
    """Call with a batch of tower inputs (any device); returns fp32 embeddings on the encoder's device."""

    name: str
    tower: torch.nn.Module
    spec: TowerSpec
    options: EncoderOptions
    gate_report: GateReport
    graphs: dict[int, _Graph] = field(default_factory=dict)
    graph_error: str = ""  # why CUDA graphs are not used (capture failed, or slower): the encoder runs eager

    @property
    def device(self) -> torch.device:
        return torch.device(self.options.device)

    @property
    def input_dtype(self) -> torch.dtype:
        if self.spec.input_dtype.is_floating_point:
            return PRECISION_DTYPES[self.options.precision]
        return self.spec.input_dtype

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        limit = self.options.max_batch_size
        parts = [self._run(batch[start : start + limit]) for start in range(0, len(batch), limit)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        count = len(batch)
        bucket = next((size for size in self.graphs if size >= count), None)
        if bucket is None:
            inputs = batch.to(self.device, non_blocking=True).to(self.input_dtype)
            outputs: torch.Tensor = self.tower(inputs)
            return outputs.to(torch.float32)
        captured = self.graphs[bucket]
        captured.inputs[:count].copy_(batch, non_blocking=True)
        captured.graph.replay()
        return captured.outputs[:count].to(torch.float32, copy=True)


def build_encoder(
    tower: torch.nn.Module,
    spec: TowerSpec,
    options: EncoderOptions,
    *,
    name: str,
    fp8_scope: str,
    real_inputs: torch.Tensor | None = None,
) -> TorchEncoder:
    """Move the fp32 TOWER to the device, convert it to the precision, gate it, capture its graphs.

    REAL_INPUTS (preprocessed real images or texts) join the fresh random inputs of the gate."""
    if options.precision not in PRECISION_DTYPES:
        raise ValueError(f"precision {options.precision!r}; choose one of {', '.join(PRECISION_DTYPES)}")
    device = torch.device(options.device)
    tower = tower.to(device).eval()
    seed = options.gate_seed if options.gate_seed is not None else int.from_bytes(os.urandom(4), "little")
    inputs = spec.random_input(options.gate_batch, seed=seed)
    if real_inputs is not None:
        inputs = torch.cat([inputs, real_inputs.to(spec.input_dtype)])
    inputs = inputs.to(device)
    with torch.inference_mode():
        reference = tower(inputs).float().cpu().numpy()
    tower = _convert(tower, options.precision, fp8_scope)
    if options.compile:
        tower = torch.compile(tower, dynamic=True)  # type: ignore[assignment]
    encoder = TorchEncoder(
        name=name,
        tower=tower,
        spec=spec,
        options=options,
        gate_report=gate(name, options.precision, _eager(tower, inputs, spec, options), reference),
    )
    if device.type == "cuda" and options.cuda_graphs and spec.variable_length:
        encoder.graph_error = "token ids of varying length run eager (--compile fuses them instead)"
    elif device.type == "cuda" and options.cuda_graphs:
        try:
            _capture_graphs(encoder, inputs)
            encoder.graph_error = _slower_with_graphs(encoder)
        except Exception as e:  # slower, never wrong: eager execution passed the gate above
            encoder.graph_error = f"{type(e).__name__}: {e}"
        if encoder.graph_error:
            encoder.graphs = {}
    return encoder


def _convert(tower: torch.nn.Module, precision: str, fp8_scope: str) -> torch.nn.Module:
    tower = tower.to(PRECISION_DTYPES[precision])
    if precision == "fp8" and convert_to_fp8(tower, fp8_scope) == 0:
        raise ValueError(f"no Linear layer of this tower matches the family's fp8 scope {fp8_scope!r}")
    return tower


def _eager(tower: torch.nn.Module, inputs: torch.Tensor, spec: TowerSpec, options: EncoderOptions) -> np.ndarray:
    dtype = PRECISION_DTYPES[options.precision] if spec.input_dtype.is_floating_point else spec.input_dtype
    with torch.inference_mode():
        result: np.ndarray = tower(inputs.to(dtype)).float().cpu().numpy()
    return result


def _slower_with_graphs(encoder: TorchEncoder, calls: int = 5) -> str:
    """Why to run eager: replay timed against eager at the largest bucket ("" unless replay is slower).

    Graphs are not always faster: on an H100 (torch 2.11) the SO400M text tower replayed at half its
    eager speed (4,299 vs 7,997 texts/s at batch 256) while the vision tower ran equally fast both ways.
    Calls alternate and the fastest of each counts, because other model instances may be loading on
    the same GPU meanwhile; the 10% margin keeps equal speeds from flipping the choice."""
    size = max(encoder.graphs)
    batch = encoder.spec.random_input(size, seed=1).to(encoder.device)
    eager_inputs = batch.to(encoder.input_dtype)

    def milliseconds(run: Callable[[], object]) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1000

    eager_ms, replay_ms = float("inf"), float("inf")
    with torch.inference_mode():
        for _ in range(calls + 1):  # the first pair warms up both ways
            eager_ms = min(eager_ms, milliseconds(lambda: encoder.tower(eager_inputs)))
            replay_ms = min(replay_ms, milliseconds(lambda: encoder(batch)))
    if replay_ms <= eager_ms * 1.1:
        return ""
    return f"CUDA graphs ran slower than eager at batch {size} ({replay_ms:.1f} vs {eager_ms:.1f} ms): running eager"


def _capture_graphs(encoder: TorchEncoder, check_inputs: torch.Tensor) -> None:
    """One CUDA graph per bucket, largest first so all share one memory pool sized by the largest."""
    pool = torch.cuda.graph_pool_handle()
    item_shape = encoder.spec.item_shape
    with torch.inference_mode():
        for size in sorted(batch_buckets(encoder.options.max_batch_size), reverse=True):
            inputs = torch.zeros((size, *item_shape), dtype=encoder.input_dtype, device=encoder.device)
            inputs.copy_(encoder.spec.random_input(size, seed=size))
            stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up: cuBLAS handles, autotuning, lazy compilation
                for _ in range(2):
                    encoder.tower(inputs)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                outputs = encoder.tower(inputs)
            encoder.graphs[size] = _Graph(graph=graph, inputs=inputs, outputs=outputs)
    encoder.graphs = dict(sorted(encoder.graphs.items()))
    eager = torch.as_tensor(_eager(encoder.tower, check_inputs, encoder.spec, encoder.options))
    replayed = encoder(check_inputs).cpu()
    cosine = torch.nn.functional.cosine_similarity(eager.double(), replayed.double()).min().item()
    if not cosine >= MIN_COSINE[encoder.options.precision]:  # same math; kernels may differ by batch size
        raise RuntimeError(f"{encoder.name}: CUDA graph replay differs from eager execution (cosine {cosine:.6f})")
