"""tritonserver's CUDA memory pools: sized for pixels handed between models on the GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmembed.serving.server import ServerSettings, cuda_memory_pool_flags, visible_gpu_count


def test_one_pool_per_visible_gpu() -> None:
    assert cuda_memory_pool_flags(2, 2048) == [
        "--cuda-memory-pool-byte-size=0:2147483648",
        "--cuda-memory-pool-byte-size=1:2147483648",
    ]
    assert cuda_memory_pool_flags(0, 2048) == []  # a CPU-only machine: Triton's defaults


@pytest.mark.parametrize(("visible", "count"), [("0,1", 2), ("3", 1), ("", 0), ("-1", 0)])
def test_cuda_visible_devices_decides_the_gpu_count(visible: str, count: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert visible_gpu_count() == count


def test_the_default_pool_holds_several_requests_of_pixels(tmp_path: Path) -> None:
    """16 images of 3 x 512 x 512 fp32 per request; Triton's own default (64 MB) holds one."""
    request_mb = 16 * 3 * 512 * 512 * 4 / 2**20
    assert ServerSettings(repository=tmp_path).cuda_memory_pool_mb >= 16 * request_mb
