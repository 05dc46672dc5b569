"""What the card can do (measured matmul rates), what a model costs (FLOPs), and how busy the card is."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from types import TracebackType

import torch
from torch.utils.flop_counter import FlopCounterMode


def timed_ms(run: Callable[[], object], repeats: int = 10, warmup: int = 3) -> float:
    """Median milliseconds of RUN() on the current CUDA stream, timed with CUDA events."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(float(start.elapsed_time(end)))
    return statistics.median(times)


def matmul_tflops(size: int = 8192) -> dict[str, float]:
    """Dense SIZE^3 matmul rates on random data: bf16 (torch.mm) and fp8 (torch._scaled_mm)."""
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    flops = 2 * size**3
    rates = {"bf16": flops / timed_ms(lambda: torch.mm(a, b)) / 1e9}
    a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn).t()  # b8: column-major, as required
    one = torch.tensor(1.0, device="cuda")

    def fp8() -> torch.Tensor:
        return torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)

    rates["fp8"] = flops / timed_ms(fp8) / 1e9
    return rates


def flops_per_item(module: torch.nn.Module, inputs: list[torch.Tensor]) -> float:
    """FLOPs of one forward pass of MODULE on INPUTS, a batch of one (matmuls, convolutions, attention)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(*inputs)
    return float(counter.get_total_flops())


class GpuSampler:
    """Mean GPU utilisation (nvidia-smi, every 0.5 s) while the `with` block runs; None without nvidia-smi."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._command = shutil.which("nvidia-smi")

    def _poll(self) -> None:
        assert self._command is not None
        query = [self._command, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "--id=0"]
        while not self._stop.wait(0.5):
            result = subprocess.run(query, capture_output=True, text=True, check=False)
            try:
                self.samples.append(float(result.stdout.strip().splitlines()[0]))
            except (ValueError, IndexError):
                return

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None

    def __enter__(self) -> GpuSampler:
        if self._command is not None:
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def wall_time(run: Callable[[], int], seconds: float) -> tuple[int, float]:
    """Call RUN() (returns items done) until SECONDS have passed; (items, elapsed s) after a device sync."""
    items, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        items += run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return items, time.perf_counter() - start
