"""Image preprocessing alone, on N worker processes or on the device: can it feed the encoder?"""

from __future__ import annotations

import multiprocessing
import time

from mmembed.core.preprocessing import ImageSettings, image_pixels


def preprocess_rate(jpegs: list[bytes], settings: ImageSettings, workers: int, seconds: float) -> float:
    """Images/s that WORKERS processes decode and preprocess from JPEGS (the served code path)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        counts = pool.starmap(_work, [(jpegs, settings, seconds, index) for index in range(workers)])
    return sum(counts) / seconds


def _work(jpegs: list[bytes], settings: ImageSettings, seconds: float, index: int) -> int:
    done, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        data = jpegs[(index + done) % len(jpegs)]
        image_pixels(data, settings)
        done += 1
    return done


def device_preprocess_rate(jpegs: list[bytes], settings: ImageSettings, device: str, seconds: float) -> float:
    """Images/s that one DevicePreprocessor (nvJPEG + torch resize on a GPU) turns into pixels on DEVICE,
    in requests of 16 images as the load generator sends them."""
    import torch  # here, not above: the spawned CPU workers of preprocess_rate need neither

    from mmembed.runtime.device_preprocessing import DevicePreprocessor

    preprocessor = DevicePreprocessor(settings, device)
    batches = [jpegs[start : start + 16] for start in range(0, len(jpegs), 16)]
    preprocessor(batches[0])  # warm-up: nvJPEG handles, CUDA kernels
    done, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        batch = batches[done % len(batches)]
        preprocessor(batch)
        done += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return sum(len(batches[i % len(batches)]) for i in range(done)) / (time.monotonic() - started)
