"""`mmembed cost`: the rows of Spheron's published cost comparison, the API arithmetic, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmembed.loadtest.cost import CostError, PairShape, api_usd_per_pair, cost_report, load_prices


def test_reproduces_the_published_rows() -> None:
    """Spheron's blog post (the source in prices.json): L40S at $0.96/h doing 50,000 pairs/h: $19.20 per 1M
    at full use, about $32 at 60%, and break-even with a $100-per-1M API at about 7M pairs a month. Every
    line names its source, never "the guide"."""
    full = cost_report(pairs_per_hour=50_000, gpu="L40S")
    assert full.usd_per_million_pairs == pytest.approx(19.20)
    sixty = cost_report(pairs_per_hour=50_000, gpu="L40S", utilization=0.6)
    assert sixty.usd_per_million_pairs == pytest.approx(32.00)
    (spheron,) = [api for api in sixty.apis if api.name == "spheron-cohere-estimate"]
    assert spheron.usd_per_million_pairs == pytest.approx(100.0)
    assert spheron.break_even_pairs_per_month == pytest.approx(7.0e6, rel=0.01)  # $0.96 x 730 h / $100 per 1M
    lines = "\n".join(sixty.lines())
    assert "Spheron" in lines and "guide" not in lines.lower()


def test_api_prices_follow_their_billing_rules() -> None:
    prices = load_prices()["apis"]
    pair = PairShape(text_tokens=20, image_width=512, image_height=512)
    # Voyage: $0.12 per 1M text tokens + $0.60 per 1B pixels
    assert api_usd_per_pair(prices["voyage-multimodal-3"], pair) == pytest.approx(20 * 0.12e-6 + 512 * 512 * 0.60e-9)
    # tiny images are billed as 50,000 pixels, huge ones as 2M
    tiny, huge = PairShape(image_width=100, image_height=100), PairShape(image_width=4000, image_height=4000)
    voyage = prices["voyage-multimodal-3"]
    assert api_usd_per_pair(voyage, tiny) == pytest.approx(20 * 0.12e-6 + 50_000 * 0.60e-9)
    assert api_usd_per_pair(voyage, huge) == pytest.approx(20 * 0.12e-6 + 2_000_000 * 0.60e-9)
    # Cohere: image tokens (about 1,610 for 512x512) at the image-token rate
    assert api_usd_per_pair(prices["cohere-embed-v4"], pair) == pytest.approx(20 * 0.12e-6 + 1610 * 0.47e-6)


def test_every_price_names_its_source() -> None:
    prices = load_prices()
    assert prices["read"] and prices["hours_per_month"] == 730
    for section in ("gpus", "apis"):
        for name, entry in prices[section].items():
            assert entry.get("source"), f"{section}/{name} has no source"


def test_a_prices_file_overrides_any_price(tmp_path: Path) -> None:
    override = tmp_path / "prices.json"
    override.write_text(json.dumps({"gpus": {"H100": {"usd_per_hour": 2.0, "source": "my contract"}}}))
    report = cost_report(pairs_per_hour=100_000, gpu="H100", prices=load_prices(override))
    assert report.usd_per_million_pairs == pytest.approx(20.0)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"pairs_per_hour": 50_000, "usd_per_hour": -1.0}, "GPU price must be positive"),
        ({"pairs_per_hour": 0, "usd_per_hour": 1.0}, "throughput must be positive"),
        ({"pairs_per_hour": 50_000, "gpu": "H9000"}, "unknown GPU 'H9000'; known: L40S"),
        ({"pairs_per_hour": 50_000, "gpu": "L40S", "utilization": 1.5}, r"utilization is a fraction in \(0, 1\]"),
        ({"pairs_per_hour": 50_000}, "give a GPU price"),
    ],
)
def test_bad_inputs_are_clear_errors(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(CostError, match=message):
        cost_report(**arguments)  # type: ignore[arg-type]


def test_cli_prints_the_cost_lines(capsys: pytest.CaptureFixture[str]) -> None:
    from mmembed.cli import main

    assert main(["cost", "--pairs-per-hour", "50000", "--gpu", "L40S", "--utilization", "0.6"]) == 0
    out = capsys.readouterr().out
    assert "$19.20 per 1M pairs at full use; $32.00 at 60% use" in out
    assert "$100.00 per 1M pairs -> 7.0M pairs/month" in out
    assert main(["cost", "--pairs-per-hour", "50000", "--gpu-price-per-hour", "-2"]) == 1
    assert "GPU price must be positive" in capsys.readouterr().err
