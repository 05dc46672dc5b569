"""`mmembed loadtest`: a short, bounded headless run against the tiny model on the real server."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import MODEL

from mmembed.client import ModelNotFoundError
from mmembed.loadtest.report import CHART_PNG, SUMMARY_JSON, SUMMARY_MD, KindStats, measurement_notes
from mmembed.loadtest.run import LoadTestError, LoadTestPlan, parse_duration, run_loadtest
from mmembed.serving.server import TritonServer


def test_short_run_writes_a_report_with_no_failures(server: TritonServer, tmp_path: Path) -> None:
    plan = LoadTestPlan(
        url=server.grpc_url,
        model=MODEL,
        report_dir=tmp_path / "report",
        users=2,
        spawn_rate=2,
        duration_s=4,
        mix="pairs",
        batch_size=2,
        corpus_size=6,
        metrics_url=f"http://localhost:{server.settings.metrics_port}/metrics",
        gpu="L40S",
    )
    summary = run_loadtest(plan, log=lambda line: None)
    assert summary.failures_by_error == {}
    assert {kind: stats.failures for kind, stats in summary.kinds.items()} == {"images": 0, "texts": 0}
    assert summary.kinds["images"].items_per_s > 0 and summary.kinds["texts"].items_per_s > 0
    assert summary.pairs_per_hour is not None and summary.pairs_per_hour > 0
    assert summary.triton[f"{MODEL}_image"].requests > 0 and summary.triton[f"{MODEL}_vision_encoder"].avg_batch >= 1
    assert any("per 1M pairs" in line for line in summary.cost)
    folder = plan.report_dir
    saved = json.loads((folder / SUMMARY_JSON).read_text())
    assert saved["kinds"]["images"]["requests"] == summary.kinds["images"].requests
    assert "image-text pairs per hour" in (folder / SUMMARY_MD).read_text()
    assert (folder / CHART_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(folder / "locust_stats.csv", newline="") as handle:
        assert {row["Name"] for row in csv.DictReader(handle)} >= {"images", "texts", "Aggregated"}
    with open(folder / "triton_metrics.csv", newline="") as handle:
        assert any(row["model"] == f"{MODEL}_image" for row in csv.DictReader(handle))
    assert (folder / "locust.html").stat().st_size > 0
    # One set of requests: the summary, Locust's own final table and Triton's metrics count the same ones.
    final_table = (folder / "locust.log").read_text().split("Response time percentiles")[-1]
    for kind, ensemble in (("images", f"{MODEL}_image"), ("texts", f"{MODEL}_text")):
        requests = summary.kinds[kind].requests
        assert summary.triton[ensemble].requests == requests, (kind, requests, summary.triton[ensemble].requests)
        (row,) = [line for line in final_table.splitlines() if line.split()[:2] == ["grpc", kind]]
        assert int(row.split()[-1]) == requests
    assert plan.duration_s / 2 < summary.window_s <= plan.duration_s + 2  # the run time goes to load
    rate = summary.kinds["images"].items_per_s
    assert rate == pytest.approx(summary.kinds["images"].requests * plan.batch_size / summary.window_s)


def test_a_run_that_measures_nothing_fails(server: TritonServer, tmp_path: Path) -> None:
    """Every request fails (a corpus of one broken JPEG): the report says so, and the run is an error."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    plan = LoadTestPlan(
        url=server.grpc_url,
        model=MODEL,
        report_dir=tmp_path / "report",
        users=1,
        duration_s=2,
        mix="images",
        batch_size=1,
        corpus=corpus,
        metrics_url=f"http://localhost:{server.settings.metrics_port}/metrics",
    )
    with pytest.raises(LoadTestError, match="nothing was measured: no request succeeded"):
        run_loadtest(plan, log=lambda line: None)
    summary = json.loads((plan.report_dir / SUMMARY_JSON).read_text())
    assert summary["failures_by_error"] == {"InvalidInputError": summary["kinds"]["images"]["requests"]}


def test_too_short_runs_are_called_so() -> None:
    few = KindStats(requests=5, failures=1, requests_per_s=5, items_per_s=5, p50_ms=1, p95_ms=2, p99_ms=3)
    enough = KindStats(requests=400, failures=0, requests_per_s=40, items_per_s=40, p50_ms=1, p95_ms=2, p99_ms=3)
    assert measurement_notes({"images": enough, "texts": enough}, 10.0) == []
    (note,) = measurement_notes({"images": few, "texts": enough}, 1.0)
    assert note.startswith("only 4 images requests succeeded in 1.0 s: too few")
    assert measurement_notes({}, 0.4) == ["nothing was measured in 0.4 s: no request was answered; run longer"]


def test_unknown_model_fails_before_any_load(server: TritonServer, tmp_path: Path) -> None:
    plan = LoadTestPlan(url=server.grpc_url, model="nope", report_dir=tmp_path / "report", duration_s=1)
    with pytest.raises(ModelNotFoundError, match="nope"):
        run_loadtest(plan, log=lambda line: None)
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize(("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("1h", 3600.0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5s", "0"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(LoadTestError):
        parse_duration(text)
