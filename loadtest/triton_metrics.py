"""Triton's Prometheus metrics: where the time goes, per model (load-test reports).

Counters are sampled every few seconds; reports use the difference between the first and the last
sample, so a server that was already busy before a run does not skew it.
"""

from __future__ import annotations

import csv
import re
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

# counter name -> the report's name for it
COUNTERS = {
    "nv_inference_request_success": "requests",
    "nv_inference_request_failure": "failures",
    "nv_inference_count": "items",
    "nv_inference_exec_count": "executions",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_infer_duration_us": "compute_us",
    "nv_inference_request_duration_us": "request_us",
}
GPU_UTILIZATION = "nv_gpu_utilization"
_LINE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")
_MODEL = re.compile(r'model="(?P<model>[^"]+)"')


def parse(text: str) -> dict[str, dict[str, float]]:
    """{model: {counter: value}} for the counters above, plus {"gpu": {"utilization": mean}} if present."""
    models: dict[str, dict[str, float]] = {}
    gpu: list[float] = []
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if not match:
            continue
        name, value = match["name"], float(match["value"])
        if name == GPU_UTILIZATION:
            gpu.append(value)
        elif name in COUNTERS and (model := _MODEL.search(match["labels"])):
            counters = models.setdefault(model["model"], {})
            counters[COUNTERS[name]] = counters.get(COUNTERS[name], 0.0) + value
    if gpu:
        models["gpu"] = {"utilization": sum(gpu) / len(gpu)}
    return models


@dataclass(frozen=True, kw_only=True)
class ModelTimes:
    """One model's share of the run, from counter differences."""

    requests: int
    failures: int
    avg_batch: float  # items per execution: what dynamic batching achieved
    queue_ms_per_request: float
    compute_ms_per_execution: float
    request_ms: float  # end to end inside Triton, per request


class MetricsSampler:
    """Scrape URL every INTERVAL_S seconds while the `with` block runs; rows go to CSV_PATH as they come."""

    def __init__(self, url: str, csv_path: Path, interval_s: float = 2.0) -> None:
        self.url, self.csv_path, self.interval_s = url, csv_path, interval_s
        self.samples: list[tuple[float, dict[str, dict[str, float]]]] = []
        self.error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _scrape(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                self.samples.append((time.time(), parse(response.read().decode())))
        except OSError as e:
            self.error = f"cannot read Triton metrics at {self.url}: {e}"

    def _run(self) -> None:
        self._scrape()
        while not self._stop.wait(self.interval_s):
            self._scrape()
        self._scrape()

    def __enter__(self) -> MetricsSampler:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._write_csv()

    def _write_csv(self) -> None:
        with open(self.csv_path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["timestamp", "model", "counter", "value"])
            for timestamp, models in self.samples:
                for model, counters in models.items():
                    for counter, value in counters.items():
                        writer.writerow([f"{timestamp:.3f}", model, counter, value])

    def model_times(self) -> dict[str, ModelTimes]:
        """Per model that served requests during the run, from the first and last samples."""
        if len(self.samples) < 2:
            return {}
        first, last = self.samples[0][1], self.samples[-1][1]
        result = {}
        for model, end in last.items():
            if model == "gpu":
                continue
            start = first.get(model, {})
            delta = {key: end.get(key, 0.0) - start.get(key, 0.0) for key in COUNTERS.values()}
            if delta["requests"] <= 0:
                continue
            executions = max(delta["executions"], 1.0)
            result[model] = ModelTimes(
                requests=int(delta["requests"]),
                failures=int(delta["failures"]),
                avg_batch=delta["items"] / executions,
                queue_ms_per_request=delta["queue_us"] / delta["requests"] / 1000,
                compute_ms_per_execution=delta["compute_us"] / executions / 1000,
                request_ms=delta["request_us"] / delta["requests"] / 1000,
            )
        return result

    def gpu_utilization(self) -> float | None:
        values = [models["gpu"]["utilization"] for _, models in self.samples if "gpu" in models]
        return sum(values) / len(values) if values else None
