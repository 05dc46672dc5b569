"""The numeric gate: an encoder in a reduced precision must agree with the fp32 tower, or it is not served.

Reduced precision can fail silently: a SigLIP fp16 TensorRT engine was reported at cosine 0.65 against
fp32 (NVIDIA/TensorRT#4373), from activations that overflow fp16's range. Every export and every
model load of the torch runtime compares with fp32 on fresh inputs and refuses below these cosines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Minimum per-row cosine against the fp32 tower, by precision name.
MIN_COSINE: dict[str, float] = {"fp32": 0.9999, "fp16": 0.999, "bf16": 0.999, "fp8": 0.99}


class PrecisionGateError(RuntimeError):
    """An encoder's outputs are too far from the fp32 reference (or not finite) to be served."""


@dataclass(frozen=True, kw_only=True)
class GateReport:
    """How closely one encoder reproduces the fp32 tower on the gate's inputs."""

    tower: str
    precision: str
    batch: int
    max_abs_error: float
    min_cosine: float

    def line(self) -> str:
        return (
            f"{self.tower} {self.precision}: batch {self.batch}, max abs error {self.max_abs_error:.3g}, "
            f"min cosine {self.min_cosine:.7f} (gate {MIN_COSINE[self.precision]})"
        )


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of A with the same row of B, computed in float64."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    result: np.ndarray = (a64 * b64).sum(1) / np.maximum(norms, 1e-300)
    return result


def gate(tower: str, precision: str, actual: np.ndarray, expected: np.ndarray) -> GateReport:
    """Compare ACTUAL with the fp32 EXPECTED; return the report, or raise PrecisionGateError saying why."""
    if actual.shape != expected.shape:
        raise PrecisionGateError(f"{tower} {precision}: output shape {actual.shape}, fp32 reference {expected.shape}")
    if not np.isfinite(actual).all():
        bad = int((~np.isfinite(actual)).any(axis=1).sum())
        raise PrecisionGateError(
            f"{tower} {precision}: {bad} of {len(actual)} outputs hold NaN or Inf (values outside the "
            f"precision's range); refusing to serve it, use a wider precision (bf16 or fp32)"
        )
    report = GateReport(
        tower=tower,
        precision=precision,
        batch=len(actual),
        max_abs_error=float(np.abs(actual.astype(np.float64) - expected).max()),
        min_cosine=float(row_cosines(actual, expected).min()),
    )
    if report.min_cosine < MIN_COSINE[precision]:
        raise PrecisionGateError(
            f"{report.line()}: under the gate, so it is not served; use a wider precision (bf16 or fp32)"
        )
    return report
