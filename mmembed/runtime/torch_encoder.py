"""One encoder run by torch: in the precision asked for, gated against fp32, replayed as CUDA graphs.

This is what the torch runtime's Triton model does at load and per batch, with no Triton in it, so the
same code is tested on the CPU, used by export's gate and timed by the benchmark.

At construction the fp32 encoder computes a reference on fresh inputs, is converted in place to the
precision (bf16/fp16 casts; fp8 swaps the blocks' Linear layers for `Fp8Linear`), and must reproduce the
reference within `numeric_gate.MIN_COSINE`, else PrecisionGateError. On CUDA it then captures one graph
per batch-size bucket (a batch is padded up to the next bucket), so a call costs one graph launch instead
of a Python-driven launch per kernel, checks the graphs against eager execution, and keeps them only if
replaying the largest bucket is not slower than running it eagerly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mmembed.core.contract import EncoderInput
from mmembed.core.encoder_settings import EncoderSettings
from mmembed.core.numeric_gate import MIN_COSINE, GateReport, gate
from mmembed.runtime.compiled_engine import load_engine
from mmembed.runtime.fp8 import convert_to_fp8

PRECISION_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp8": torch.bfloat16,  # fp8 matmuls, everything else (and their outputs) in bf16
}
GATE_BATCH = 8  # fresh random items per gate, besides the real ones


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


@dataclass(kw_only=True)
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    outputs: torch.Tensor


Batch = Sequence[torch.Tensor]  # one tensor per encoder input, in declared order, batch axis first


@dataclass(kw_only=True)
class TorchEncoder:
    """Call with a batch of encoder inputs (any device); returns fp32 embeddings on the encoder's device."""

    name: str
    module: torch.nn.Module
    settings: EncoderSettings
    gate_report: GateReport
    graphs: dict[int, _Graph] = field(default_factory=dict)
    graph_error: str = ""  # why CUDA graphs are not used (capture failed, or slower): the encoder runs eager

    @property
    def device(self) -> torch.device:
        return torch.device(self.settings.device)

    def input_dtype(self, spec: EncoderInput) -> torch.dtype:
        return input_dtype(spec, self.settings)

    @torch.inference_mode()
    def __call__(self, batch: Batch) -> torch.Tensor:
        limit = self.settings.max_batch_size
        count = len(batch[0])
        parts = [self._run([x[start : start + limit] for x in batch]) for start in range(0, count, limit)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def eager(self, batch: Batch) -> torch.Tensor:
        return run_eager(self.module, self.settings, batch)

    def _run(self, batch: Batch) -> torch.Tensor:
        count = len(batch[0])
        bucket = next((size for size in self.graphs if size >= count), None)
        if bucket is None:
            return self.eager(batch)
        captured = self.graphs[bucket]
        for static, x in zip(captured.inputs, batch, strict=True):
            static[:count].copy_(x, non_blocking=True)
        captured.graph.replay()
        return captured.outputs[:count].to(torch.float32, copy=True)


def input_dtype(spec: EncoderInput, settings: EncoderSettings) -> torch.dtype:
    """Pixels in the precision's dtype; token ids and masks as they are."""
    return PRECISION_DTYPES[settings.precision.value] if spec.kind == "pixels" else torch.int64


def run_eager(module: torch.nn.Module, settings: EncoderSettings, batch: Batch) -> torch.Tensor:
    """BATCH through MODULE itself, each input moved and cast as the encoder takes it; fp32 out."""
    device = torch.device(settings.device)
    inputs = [
        x.to(device, non_blocking=True).to(input_dtype(spec, settings))
        for x, spec in zip(batch, settings.spec.inputs, strict=True)
    ]
    outputs: torch.Tensor = module(*inputs)
    return outputs.to(torch.float32)


def as_tensors(inputs: dict[str, np.ndarray], settings: EncoderSettings) -> list[torch.Tensor]:
    """Named numpy inputs as the tensors an encoder is called with, in its declared order."""
    return [torch.from_numpy(inputs[spec.name]) for spec in settings.spec.inputs]


def build_encoder(
    module: torch.nn.Module,
    settings: EncoderSettings,
    *,
    name: str,
    real_inputs: dict[str, np.ndarray] | None = None,
    gate_seed: int | None = None,
    engine: Path | None = None,
) -> TorchEncoder:
    """Move the fp32 MODULE to the device, convert it to the precision, gate it, capture its graphs.

    The gate's inputs are GATE_BATCH fresh random items (GATE_SEED fixes them, for tests) and REAL_INPUTS
    (preprocessed real images or texts, at the inputs' largest shape). With `settings.compile` the module
    that runs, and is gated, is the package export compiled into ENGINE, given the converted weights."""
    spec, precision = settings.spec, settings.precision.value
    device = torch.device(settings.device)
    module = module.to(device).eval()
    seed = gate_seed if gate_seed is not None else int.from_bytes(os.urandom(4), "little")
    named = spec.random_inputs(GATE_BATCH, seed=seed)
    if real_inputs is not None:
        named = {key: np.concatenate([value, real_inputs[key]]) for key, value in named.items()}
    inputs = [x.to(device) for x in as_tensors(named, settings)]
    with torch.inference_mode():
        reference = module(*inputs).float().cpu().numpy()
    module = convert_precision(module, precision, spec.precision_scope)
    if settings.compile:
        if engine is None:
            raise ValueError(f"{name}: settings say compiled, but no engine folder was given")
        module = load_engine(module, engine, precision)
    with torch.inference_mode():
        report = gate(name, precision, run_eager(module, settings, inputs).cpu().numpy(), reference)
    encoder = TorchEncoder(name=name, module=module, settings=settings, gate_report=report)
    if device.type == "cuda" and settings.cuda_graphs and spec.varies:
        encoder.graph_error = "token ids of varying length run eager (compile fuses them instead)"
    elif device.type == "cuda" and settings.cuda_graphs:
        try:
            capture_graphs(encoder, inputs)
            encoder.graph_error = _slower_with_graphs(encoder)
        except Exception as e:  # slower, never wrong: eager execution passed the gate above
            encoder.graph_error = f"{type(e).__name__}: {e}"
        if encoder.graph_error:
            encoder.graphs = {}
    return encoder


def convert_precision(module: torch.nn.Module, precision: str, scope: str) -> torch.nn.Module:
    """MODULE (in place) with weights in PRECISION's dtype, its Linear layers in SCOPE swapped for fp8."""
    module = module.to(PRECISION_DTYPES[precision])
    if precision == "fp8" and convert_to_fp8(module, scope) == 0:
        raise ValueError(f"no Linear layer of this encoder matches the family's precision scope {scope!r}")
    return module


def _random_batch(encoder: TorchEncoder, size: int, seed: int) -> list[torch.Tensor]:
    named = encoder.settings.spec.random_inputs(size, seed=seed)
    return [x.to(encoder.device) for x in as_tensors(named, encoder.settings)]


def _slower_with_graphs(encoder: TorchEncoder, calls: int = 5) -> str:
    """Why to run eager: replay timed against eager at the largest bucket ("" unless replay is slower).

    Graphs are not always faster: on an H100 (torch 2.11) the SO400M text tower replayed at half its
    eager speed (4,299 vs 7,997 texts/s at batch 256) while the vision tower ran equally fast both ways.
    Calls alternate and the fastest of each counts, because other model instances may be loading on
    the same GPU meanwhile; the 10% margin keeps equal speeds from flipping the choice."""
    size = max(encoder.graphs)
    batch = _random_batch(encoder, size, seed=1)

    def milliseconds(run: Callable[[], object]) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1000

    eager_ms, replay_ms = float("inf"), float("inf")
    with torch.inference_mode():
        for _ in range(calls + 1):  # the first pair warms up both ways
            eager_ms = min(eager_ms, milliseconds(lambda: encoder.eager(batch)))
            replay_ms = min(replay_ms, milliseconds(lambda: encoder(batch)))
    if replay_ms <= eager_ms * 1.1:
        return ""
    return f"CUDA graphs ran slower than eager at batch {size} ({replay_ms:.1f} vs {eager_ms:.1f} ms): running eager"


def capture_graphs(encoder: TorchEncoder, check_inputs: list[torch.Tensor]) -> None:
    """One CUDA graph per bucket, largest first so all share one memory pool sized by the largest."""
    pool = torch.cuda.graph_pool_handle()
    specs = encoder.settings.spec.inputs
    with torch.inference_mode():
        for size in sorted(batch_buckets(encoder.settings.max_batch_size), reverse=True):
            random = _random_batch(encoder, size, seed=size)
            inputs = [x.to(encoder.input_dtype(spec)).clone() for x, spec in zip(random, specs, strict=True)]
            stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up: cuBLAS handles, autotuning, lazy compilation
                for _ in range(2):
                    encoder.module(*inputs)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                outputs = encoder.module(*inputs)
            encoder.graphs[size] = _Graph(graph=graph, inputs=inputs, outputs=outputs)
    encoder.graphs = dict(sorted(encoder.graphs.items()))
    eager = encoder.eager(check_inputs).cpu()
    replayed = encoder(check_inputs).cpu()
    cosine = torch.nn.functional.cosine_similarity(eager.double(), replayed.double()).min().item()
    if not cosine >= MIN_COSINE[encoder.settings.precision.value]:  # same math; kernels may differ by batch
        raise RuntimeError(f"{encoder.name}: CUDA graph replay differs from eager execution (cosine {cosine:.6f})")
