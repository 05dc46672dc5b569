"""The load test's report: Locust's CSVs and Triton's metrics, summarised, charted and costed."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmembed.loadtest.triton_metrics import ModelTimes

SUMMARY_JSON, SUMMARY_MD, CHART_PNG, RESULTS_JSON = "summary.json", "summary.md", "chart.png", "locust_results.json"
KINDS = ("images", "texts")


@dataclass(frozen=True, kw_only=True)
class KindStats:
    """One request kind (images or texts) over the whole measured window, from Locust's final statistics."""

    requests: int
    failures: int
    requests_per_s: float  # every request, failed ones too
    items_per_s: float  # items of successful requests only: the throughput that did work
    p50_ms: float
    p95_ms: float
    p99_ms: float


@dataclass(kw_only=True)
class Summary:
    model: str
    mix: str
    users: int
    duration_s: float  # asked for
    window_s: float  # measured: from the test's start to its last answer
    kinds: dict[str, KindStats]
    pairs_per_hour: float | None  # mix "pairs" only: the slower of the two halves sets the pace
    failures_by_error: dict[str, int]
    triton: dict[str, ModelTimes] = field(default_factory=dict)
    gpu_utilization: float | None = None
    cost: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


MIN_REQUESTS = 20  # fewer successful requests of a kind than this and its rate and percentiles mean little


def read_results(path: Path) -> tuple[dict[str, KindStats], float]:
    """Per-kind statistics and the measured window in seconds, from the locustfile's `--results-file`.

    Every rate divides by the same window, which spans every request counted, so the counts here, in
    Locust's own final table and in Triton's metrics agree."""
    if not path.is_file():
        return {}, 0.0
    results = json.loads(path.read_text())
    answers = [kind["last_answer"] for kind in results["kinds"].values() if kind["last_answer"]]
    start = results.get("start")
    window = max([results.get("stop") or start or 0.0, *answers]) - start if start else 0.0
    kinds = {}
    for name, kind in results["kinds"].items():
        kinds[name] = KindStats(
            requests=kind["requests"],
            failures=kind["failures"],
            requests_per_s=kind["requests"] / window if window else 0.0,
            items_per_s=kind["items"] / window if window else 0.0,
            p50_ms=float(kind["p50_ms"]),
            p95_ms=float(kind["p95_ms"]),
            p99_ms=float(kind["p99_ms"]),
        )
    return kinds, window


def measurement_notes(kinds: dict[str, KindStats], window_s: float) -> list[str]:
    """What makes this run's numbers unreliable, said plainly."""
    if not any(stats.requests for stats in kinds.values()):
        return [f"nothing was measured in {window_s:.1f} s: no request was answered; run longer"]
    notes = []
    for name, stats in kinds.items():
        succeeded = stats.requests - stats.failures
        if succeeded < MIN_REQUESTS:
            notes.append(
                f"only {succeeded} {name} requests succeeded in {window_s:.1f} s: too few for a stable rate "
                f"and percentiles (aim for {MIN_REQUESTS} or more); run longer"
            )
    return notes


def read_failures(path: Path) -> dict[str, int]:
    """Failures grouped by error type (the exception class Locust recorded), e.g. ServerOverloadedError,
    from the locustfile's `--results-file`."""
    counts: dict[str, int] = {}
    if not path.is_file():
        return counts
    for error, occurrences in json.loads(path.read_text()).get("errors", []):
        match = re.match(r"\s*(\w+)\(", error)
        kind = match.group(1) if match else error[:80]
        counts[kind] = counts.get(kind, 0) + int(occurrences)
    return counts


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # Locust writes "N/A" when a name has no requests
        return math.nan


def write_chart(prefix: Path, path: Path) -> None:
    """Throughput (items/s per kind) and latency (p50, p95) over the run, from `PREFIX_stats_history.csv`."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    series: dict[str, dict[str, list[float]]] = {}
    with open(f"{prefix}_stats_history.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Name"] not in KINDS:
                continue
            points = series.setdefault(row["Name"], {"t": [], "rps": [], "p50": [], "p95": [], "size": []})
            points["t"].append(float(row["Timestamp"]))
            points["rps"].append(float(row["Requests/s"]))
            points["p50"].append(_number(row["50%"]))
            points["p95"].append(_number(row["95%"]))
            total = float(row["Total Request Count"])
            points["size"].append(float(row["Total Average Content Size"]) if total else 0.0)
    start = min((points["t"][0] for points in series.values() if points["t"]), default=0.0)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for kind, points in series.items():
        seconds = [t - start for t in points["t"]]
        top.plot(seconds, [r * s for r, s in zip(points["rps"], points["size"], strict=True)], label=f"{kind}/s")
        bottom.plot(seconds, points["p50"], label=f"{kind} p50")
        bottom.plot(seconds, points["p95"], linestyle="--", label=f"{kind} p95")
    top.set_ylabel("items per second")
    top.set_title("throughput and latency over the run")
    bottom.set_ylabel("request latency (ms)")
    bottom.set_xlabel("seconds since start")
    for axes in (top, bottom):
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def markdown(summary: Summary) -> str:
    lines = [
        f"# mmembed load test: {summary.model}, mix {summary.mix}, {summary.users} users, {summary.duration_s:.0f} s",
        "",
        f"Measured over {summary.window_s:.1f} s, from the first user's start to the last answer (the rest of "
        "the run time went to starting Locust and its users): every count below, Locust's and Triton's, covers "
        "the same requests.",
        "",
        "| kind | requests | failures | requests/s | items/s | p50 ms | p95 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, stats in summary.kinds.items():
        lines.append(
            f"| {kind} | {stats.requests} | {stats.failures} | {stats.requests_per_s:.1f} | {stats.items_per_s:.1f} "
            f"| {stats.p50_ms:.0f} | {stats.p95_ms:.0f} | {stats.p99_ms:.0f} |"
        )
    if summary.pairs_per_hour is not None:
        lines += ["", f"**{summary.pairs_per_hour:,.0f} image-text pairs per hour**"]
    lines += ["", f"failures by error type: {summary.failures_by_error or 'none'}"]
    if summary.triton:
        lines += [
            "",
            "Where the time goes, inside Triton (from its metrics endpoint, differences over the run):",
            "",
            "| model | requests | avg batch | queue ms/request | compute ms/batch | in Triton ms/request |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for model, times in sorted(summary.triton.items()):
            lines.append(
                f"| {model} | {times.requests} | {times.avg_batch:.1f} | {times.queue_ms_per_request:.1f} "
                f"| {times.compute_ms_per_execution:.1f} | {times.request_ms:.1f} |"
            )
    if summary.gpu_utilization is not None:
        lines += ["", f"GPU utilisation (Triton's nv_gpu_utilization, mean): {summary.gpu_utilization:.0%}"]
    if summary.cost:
        lines += ["", "Cost at this throughput:", "", "```", *summary.cost, "```"]
    if summary.notes:
        lines += ["", *[f"- {note}" for note in summary.notes]]
    return "\n".join(lines) + "\n"


def write_summary(summary: Summary, folder: Path) -> None:
    data: dict[str, Any] = asdict(summary)
    (folder / SUMMARY_JSON).write_text(json.dumps(data, indent=2, default=str))
    (folder / SUMMARY_MD).write_text(markdown(summary))
