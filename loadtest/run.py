"""`mmembed loadtest`: Locust headless against a served model, Triton's metrics beside it, then the report.

Locust runs as child processes (one, or a master and `workers` local workers for more load than one
core can generate), so its gevent monkey-patching never touches this process.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from mmembed.client import ClientOptions, EmbeddingClient, ServerUnavailableError
from mmembed.core.sample_images import photo_corpus
from mmembed.loadtest import LOCUSTFILE, MIXES
from mmembed.loadtest.cost import CostError, cost_report, load_prices
from mmembed.loadtest.report import (
    CHART_PNG,
    RESULTS_JSON,
    KindStats,
    Summary,
    measurement_notes,
    read_failures,
    read_results,
    write_chart,
    write_summary,
)
from mmembed.loadtest.triton_metrics import MetricsSampler
from mmembed.serving.server import free_port

CSV_PREFIX = "locust"


class LoadTestError(ValueError):
    """The load test cannot start (bad option, server or model unreachable) or Locust failed."""


@dataclass(frozen=True, kw_only=True)
class LoadTestPlan:
    url: str  # Triton gRPC host:port
    model: str
    report_dir: Path
    users: int = 8
    spawn_rate: float = 8.0
    duration_s: float = 60.0
    mix: str = "pairs"
    batch_size: int = 8
    corpus: Path | None = None
    corpus_size: int = 32
    workers: int = 0  # 0: one Locust process; N: a master and N local workers
    metrics_url: str | None = None  # default: http://<grpc host>:8002/metrics
    gpu: str | None = None  # for the cost line: a prices.json GPU name ...
    gpu_price_per_hour: float | None = None  # ... or a price
    utilization: float = 1.0

    def check(self) -> None:
        if self.users < 1 or self.spawn_rate <= 0 or self.duration_s <= 0:
            raise LoadTestError("users must be >= 1, spawn rate and duration > 0")
        if self.batch_size < 1 or self.corpus_size < 1 or self.workers < 0:
            raise LoadTestError("batch size and corpus size must be >= 1, workers >= 0")
        if self.mix not in MIXES:
            raise LoadTestError(f"mix {self.mix!r}; choose one of {', '.join(MIXES)}")


def parse_duration(text: str) -> float:
    """Seconds from '90', '90s', '5m' or '1h'."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise LoadTestError(f"duration {text!r}: use seconds, or a number with s, m or h") from None
    if seconds <= 0:
        raise LoadTestError(f"duration {text!r} must be positive")
    return seconds


def run_loadtest(plan: LoadTestPlan, log: Callable[[str], None] = print) -> Summary:
    plan.check()
    _check_model(plan)
    plan.report_dir.mkdir(parents=True, exist_ok=True)
    prefix = plan.report_dir / CSV_PREFIX
    metrics_url = plan.metrics_url or f"http://{plan.url.rsplit(':', 1)[0]}:8002/metrics"
    log(
        f"load test: {plan.users} users on {plan.model} ({plan.mix}, {plan.batch_size} items per request) "
        f"for {plan.duration_s:.0f} s; report in {plan.report_dir}"
    )
    results = plan.report_dir / RESULTS_JSON
    results.unlink(missing_ok=True)
    if plan.corpus is None:  # generated here, not in each Locust process: -t runs from Locust's start
        plan = replace(plan, corpus=_generated_corpus(plan.report_dir / "corpus", plan.corpus_size))
    with MetricsSampler(metrics_url, plan.report_dir / "triton_metrics.csv") as sampler:
        _run_locust(plan, prefix, results)
    kinds, window_s = read_results(results)
    summary = Summary(
        model=plan.model,
        mix=plan.mix,
        users=plan.users,
        duration_s=plan.duration_s,
        window_s=window_s,
        kinds=kinds,
        pairs_per_hour=_pairs_per_hour(plan.mix, kinds),
        failures_by_error=read_failures(results),
        triton=sampler.model_times(),
        gpu_utilization=sampler.gpu_utilization(),
    )
    summary.notes += measurement_notes(kinds, window_s)
    if sampler.error:
        summary.notes.append(sampler.error)
    summary.cost = _cost_lines(plan, summary)
    write_chart(prefix, plan.report_dir / CHART_PNG)
    write_summary(summary, plan.report_dir)
    if not any(stats.requests > stats.failures for stats in kinds.values()):
        raise LoadTestError(
            f"nothing was measured: no request succeeded in {window_s:.1f} s of a {plan.duration_s:.0f} s run "
            f"(report in {plan.report_dir}); run longer, or see its failures"
        )
    return summary


def _generated_corpus(folder: Path, count: int) -> Path:
    """COUNT photo-like JPEGs of realistic sizes in FOLDER."""
    folder.mkdir(exist_ok=True)
    for index, data in enumerate(photo_corpus(count)):
        (folder / f"photo-{index:03d}.jpg").write_bytes(data)
    return folder


def _check_model(plan: LoadTestPlan) -> None:
    """Fail before any load is generated if the server or the model is not there (the message says which)."""
    with EmbeddingClient(plan.url, ClientOptions(timeout_s=10)) as client:
        try:
            client.model_info(plan.model)
        except ServerUnavailableError as e:
            raise LoadTestError(f"cannot reach tritonserver at {plan.url}: {e}") from None


def _run_locust(plan: LoadTestPlan, prefix: Path, results: Path) -> None:
    common = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", plan.url,
        "--model", plan.model, "--mix", plan.mix, "--batch-size", str(plan.batch_size),
        "--corpus", str(plan.corpus or ""), "--corpus-size", str(plan.corpus_size),
        "--results-file", str(results),
    ]  # fmt: skip
    run = [
        "--headless", "-u", str(plan.users), "-r", str(plan.spawn_rate), "-t", f"{plan.duration_s:.0f}s",
        "--csv", str(prefix), "--csv-full-history", "--html", str(plan.report_dir / "locust.html"),
        "--stop-timeout", "30", "--exit-code-on-error", "0", "--loglevel", "WARNING",
    ]  # fmt: skip
    log_path = plan.report_dir / "locust.log"
    with open(log_path, "w") as log:
        if plan.workers == 0:
            result = subprocess.run([*common, *run], stdout=log, stderr=subprocess.STDOUT, check=False)
            returncodes = [result.returncode]
        else:
            port = free_port()
            master = [*common, *run, "--master", "--expect-workers", str(plan.workers), "--master-bind-port", str(port)]
            worker = [*common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
            workers = [subprocess.Popen(worker, stdout=log, stderr=subprocess.STDOUT) for _ in range(plan.workers)]
            result = subprocess.run(master, stdout=log, stderr=subprocess.STDOUT, check=False)
            returncodes = [result.returncode, *(process.wait(60) for process in workers)]
    if any(code != 0 for code in returncodes) or not Path(f"{prefix}_stats.csv").exists():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise LoadTestError(f"locust exited with {returncodes}; last lines of {log_path}:\n{tail}")


def _pairs_per_hour(mix: str, kinds: dict[str, KindStats]) -> float | None:
    if mix != "pairs" or not {"images", "texts"} <= kinds.keys():
        return None
    slower: float = min(kinds["images"].items_per_s, kinds["texts"].items_per_s)
    return slower * 3600


def _cost_lines(plan: LoadTestPlan, summary: Summary) -> list[str]:
    if plan.gpu is None and plan.gpu_price_per_hour is None:
        return []
    if summary.pairs_per_hour is None or summary.pairs_per_hour <= 0:
        return ["(no cost line: it needs --mix pairs and a non-zero measured throughput)"]
    try:
        report = cost_report(
            pairs_per_hour=summary.pairs_per_hour,
            gpu=plan.gpu,
            usd_per_hour=plan.gpu_price_per_hour,
            utilization=plan.utilization,
            prices=load_prices(),
        )
    except CostError as e:
        return [f"(no cost line: {e})"]
    lines: list[str] = report.lines()
    return lines
