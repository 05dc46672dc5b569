"""Image preprocessing alone, on N worker processes: can the CPUs feed the encoder?"""

from __future__ import annotations

import multiprocessing
import time

from mmembed.preprocessing import ImageSettings, decode_image, preprocess_image


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
        preprocess_image(decode_image(data, settings), settings)
        done += 1
    return done
